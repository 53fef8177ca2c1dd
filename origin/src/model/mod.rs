//! The platform's computations, free of HTTP and SQL: lead detection, the predictive
//! forecast and dynamic pricing.

pub mod forecast;
pub mod price;
pub mod scoring;
