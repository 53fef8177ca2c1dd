//! A deterministic local embedding: hashed word unigrams and character trigrams in a fixed
//! number of dimensions, L2-normalised, so cosine similarity is a dot product. No model
//! download, the same vector on every machine and in every process.

use crate::caching::fnv1a;

/// Dimensions of an embedding.
pub const DIMENSIONS: usize = 256;

/// An L2-normalised vector (all zeros for text without letters or digits).
pub type Embedding = [f32; DIMENSIONS];

/// Words too common to tell texts apart.
const STOP_WORDS: [&str; 40] = [
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "how", "in", "is", "it",
    "its", "of", "on", "one", "or", "other", "that", "the", "then", "this", "to", "was", "what", "when",
    "where", "which", "who", "why", "with", "you", "your", "we", "our", "they",
];

/// The embedding of `text`: each distinct feature (word, weight 1; character trigram of a
/// word, weight 0.5) counts `1 + ln(occurrences)`, so repetition does not drown rarer terms.
pub fn embed(text: &str) -> Embedding {
    let lower = text.to_lowercase();
    let mut features: Vec<(u64, f32)> = Vec::new();
    for word in
        lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty() && !STOP_WORDS.contains(w))
    {
        features.push((fnv1a(word.as_bytes()), 1.0));
        let padded: Vec<char> = format!(" {word} ").chars().collect();
        for gram in padded.windows(3) {
            let gram: String = gram.iter().collect();
            features.push((fnv1a(gram.as_bytes()) ^ 0x9e37_79b9, 0.5));
        }
    }
    features.sort_unstable_by_key(|f| f.0);
    let mut v = [0f32; DIMENSIONS];
    for same in features.chunk_by(|a, b| a.0 == b.0) {
        let (hash, weight) = same[0];
        add(&mut v, hash, weight * (1.0 + (same.len() as f32).ln()));
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Adds `weight` to the slot of feature `hash`, with a hashed sign (collisions cancel rather
/// than pile up).
fn add(v: &mut Embedding, hash: u64, weight: f32) {
    let slot = (hash % DIMENSIONS as u64) as usize;
    let sign = if (hash >> 63) == 1 { -1.0 } else { 1.0 };
    v[slot] += sign * weight;
}

/// Embeddings of many texts at once (one upload's chunks).
pub fn embed_all(texts: &[String]) -> Vec<Embedding> {
    texts.iter().map(|t| embed(t)).collect()
}

/// The stored form: little-endian `f32`s.
pub fn to_bytes(v: &Embedding) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Cosine similarity of a normalised query and a stored vector; `None` when the stored bytes
/// are not an embedding of this size.
pub fn cosine(query: &Embedding, stored: &[u8]) -> Option<f32> {
    if stored.len() != DIMENSIONS * 4 {
        return None;
    }
    Some(
        stored
            .chunks_exact(4)
            .zip(query)
            .map(|(b, q)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * q)
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_texts_are_closer_than_unrelated_ones() {
        let q = embed("photosynthesis in plants");
        let near = to_bytes(&embed("Plants use photosynthesis to turn light into sugar."));
        let far = to_bytes(&embed("The French revolution began in 1789."));
        let (near, far) = (cosine(&q, &near).unwrap_or(0.0), cosine(&q, &far).unwrap_or(0.0));
        assert!(near > far + 0.2, "near {near} far {far}");
    }

    #[test]
    fn embeddings_are_normalised_and_repeatable() {
        let v = embed("hello world");
        assert_eq!(v, embed("hello world"));
        let norm: f32 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_eq!(cosine(&v, &[0u8; 3]), None);
    }
}
