//! Study materials as text: extraction from uploads, chunking, and the local embedding used
//! for retrieval.

pub mod chunk;
pub mod embedding;
pub mod extract;
