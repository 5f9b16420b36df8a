//! Secrets at rest: AES-256-GCM under a master key that never lives in the database or config.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::fmt;

const NONCE_LEN: usize = 12;

/// The 32-byte master key that seals key secrets, and the key derived from it that hashes the
/// audit log's personal data (`crate::audit`).
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm, [u8; 32]);

/// A sealed value could not be opened: wrong master key, or the row was tampered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed value does not open under this master key")]
pub struct OpenError;

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(bytes).expect("HMAC takes any key length");
        mac.update(b"trackgate audit personal data v1");
        Self(Aes256Gcm::new(bytes.into()), mac.finalize().into_bytes().into())
    }

    /// The key of the audit log's pseudonyms.
    pub(crate) fn audit_key(&self) -> &[u8; 32] {
        &self.1
    }

    /// Parse 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).ok()?;
        Some(Self::from_bytes(&bytes))
    }

    /// 32 fresh random bytes, as hex, for a new master key file.
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        hex::encode(bytes)
    }

    /// `nonce || ciphertext`, with `aad` bound to it.
    /// A new random secret (a webhook's signing key).
    pub fn random_secret() -> trackgate_proto::Secret {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        trackgate_proto::Secret::from_bytes(bytes)
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's random source failed");
        let ct = self
            .0
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .expect("AES-GCM encryption of a short message cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| OpenError)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let k = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        let sealed = k.seal(b"TRK-1/k1", b"secret bytes");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(k.open(b"TRK-1/k1", &sealed).unwrap(), b"secret bytes");
        assert_eq!(k.open(b"TRK-2/k1", &sealed), Err(OpenError));
        let other = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        assert_eq!(other.open(b"TRK-1/k1", &sealed), Err(OpenError));
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
    }
}
