//! Device credentials for an external Mosquitto broker, in its password-file format.
//!
//! A device's broker password is derived from its key (PROTOCOL.md §3), so a device needs no
//! second secret; Mosquitto stores each as `$7$` (PBKDF2-HMAC-SHA512, 101 iterations, 12-byte
//! salt, base64), the format `mosquitto_passwd` writes.

use base64::Engine;
use sha2::Sha512;
use trackgate_proto::Secret;
use trackgate_proto::sign::mqtt_password;

const ITERATIONS: u32 = 101;

/// One password-file line: `username:$7$101$salt$hash`.
pub fn line(username: &str, password: &str, salt: &[u8; 12]) -> String {
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, ITERATIONS, &mut hash);
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("{username}:$7${ITERATIONS}${}${}", b64.encode(salt), b64.encode(hash))
}

/// The line for a device and one of its keys, with a fresh salt.
pub fn device_line(device: &str, key: &Secret) -> anyhow::Result<String> {
    let mut salt = [0u8; 12];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("random source failed: {e}"))?;
    Ok(line(device, &mqtt_password(key, device), &salt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_what_mosquitto_passwd_writes() {
        // `mosquitto_passwd -c -b pw alice secret` (Mosquitto 2.0.11) wrote this line.
        let salt = base64::engine::general_purpose::STANDARD
            .decode("AE3OFJBL9XB2gqSS")
            .unwrap();
        let expected = "alice:$7$101$AE3OFJBL9XB2gqSS$D5TvNrLlApXCLjliBHONdZqHTnXySsWWeG2nPyYOgCwtZcchpZkPsSmEZN6RENWF8h/dQkMaaWdk3uEHyaCU1g==";
        assert_eq!(line("alice", "secret", &salt.try_into().unwrap()), expected);
    }

    #[test]
    fn device_lines_hold_the_derived_password_not_the_key() {
        let key = Secret::from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").unwrap();
        let l = device_line("TRK-0001", &key).unwrap();
        assert!(l.starts_with("TRK-0001:$7$101$"));
        assert!(!l.contains(&key.to_hex()) && !l.contains("bdd7f18f8ced"));
    }
}
