//! 32-byte key secrets. The type never prints its bytes and wipes them on drop.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A device or supplier key: 32 random bytes, written as 64 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Secret([u8; 32]);

/// Why a hex string is not a secret. Never contains the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key secret must be exactly 64 hex characters (32 bytes)")]
pub struct BadSecret;

impl Secret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parse 64 hex characters (either case accepted on import; always written lowercase).
    pub fn from_hex(s: &str) -> Result<Self, BadSecret> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| BadSecret)?;
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The lowercase hex form. Only for showing a new key once, or for writing it to its owner.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let s = Secret::from_hex(&"ab".repeat(32)).unwrap();
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.to_hex(), "ab".repeat(32));
    }

    #[test]
    fn wrong_length_is_refused() {
        assert_eq!(Secret::from_hex("abcd"), Err(BadSecret));
        assert_eq!(Secret::from_hex(&"zz".repeat(32)), Err(BadSecret));
    }
}
