//! Where records come in. Each source verifies with [`crate::verify::Verifier`] and feeds the one
//! [`crate::pipeline::Queue`]; only the transport differs.

pub mod error;
pub mod http;
pub mod mqtt;
