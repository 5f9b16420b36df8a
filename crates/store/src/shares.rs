//! Share links: one shipment's position and track, shown to whoever holds the link's token, until
//! the link expires or is revoked, or its device leaves the organization that shared it. The
//! store keeps only the SHA-256 of a token ([`token_hash`]); a token is 256 random bits, so the
//! hash needs no salt or stretching.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A share link as its makers see it (never its token or hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShareLink {
    pub id: i64,
    pub org_id: String,
    pub device_id: String,
    pub created_by: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// A link to make.
#[derive(Debug, Clone, PartialEq)]
pub struct NewShareLink {
    pub device_id: String,
    pub created_by: String,
    pub expires_ms: i64,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
