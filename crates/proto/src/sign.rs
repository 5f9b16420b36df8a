//! HMAC-SHA256 signatures of PROTOCOL.md §2 (records), §3 (MQTT passwords) and §4 (requests).
//!
//! Every comparison goes through [`Mac::verify_slice`], which is constant-time.

use crate::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const RECORD_DOMAIN: &[u8] = b"tg1-record\n";
const REQUEST_DOMAIN: &[u8] = b"tg1-request\n";
const MQTT_DOMAIN: &[u8] = b"tg1-mqtt\n";

fn mac(key: &Secret) -> HmacSha256 {
    HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length")
}

/// `HMAC-SHA256(key, "tg1-record\n" ++ record)`, where `record` is the exact bytes of `m`.
pub fn record_signature(key: &Secret, record: &[u8]) -> [u8; 32] {
    let mut m = mac(key);
    m.update(RECORD_DOMAIN);
    m.update(record);
    m.finalize().into_bytes().into()
}

/// Does `sig` sign `record` under `key`? Constant-time.
pub fn verify_record(key: &Secret, record: &[u8], sig: &[u8; 32]) -> bool {
    let mut m = mac(key);
    m.update(RECORD_DOMAIN);
    m.update(record);
    m.verify_slice(sig).is_ok()
}

/// Build a signed envelope around record text, as firmware does: the text is embedded unchanged.
pub fn envelope(key: &Secret, kid: Option<&str>, record: &str) -> String {
    let sig = hex::encode(record_signature(key, record.as_bytes()));
    match kid {
        Some(kid) => format!(r#"{{"m":{record},"kid":"{kid}","sig":"{sig}"}}"#),
        None => format!(r#"{{"m":{record},"sig":"{sig}"}}"#),
    }
}

/// The parts of an HTTPS request that its signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// `X-TG-Timestamp` exactly as sent.
    pub timestamp: &'a str,
    /// Upper case, e.g. `POST`.
    pub method: &'a str,
    /// As requested, without the query.
    pub path: &'a str,
    pub body: &'a [u8],
}

fn request_mac(key: &Secret, p: &RequestParts<'_>) -> HmacSha256 {
    let mut m = mac(key);
    for part in [
        REQUEST_DOMAIN,
        p.timestamp.as_bytes(),
        b"\n",
        p.method.as_bytes(),
        b"\n",
        p.path.as_bytes(),
        b"\n",
        p.body,
    ] {
        m.update(part);
    }
    m
}

/// `X-TG-Signature` of a request, as 32 bytes.
pub fn request_signature(key: &Secret, parts: &RequestParts<'_>) -> [u8; 32] {
    request_mac(key, parts).finalize().into_bytes().into()
}

/// Does `sig` sign the request under `key`? Constant-time.
pub fn verify_request(key: &Secret, parts: &RequestParts<'_>, sig: &[u8; 32]) -> bool {
    request_mac(key, parts).verify_slice(sig).is_ok()
}

/// A device's MQTT password: lowercase hex of `HMAC-SHA256(key, "tg1-mqtt\n" ++ device id)`.
pub fn mqtt_password(key: &Secret, device: &str) -> String {
    let mut m = mac(key);
    m.update(MQTT_DOMAIN);
    m.update(device.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Does `password` (as sent by a device) match `key`? Constant-time over the decoded bytes.
pub fn verify_mqtt_password(key: &Secret, device: &str, password: &[u8]) -> bool {
    let Some(sig) = std::str::from_utf8(password).ok().and_then(parse_sig_hex) else {
        return false;
    };
    let mut m = mac(key);
    m.update(MQTT_DOMAIN);
    m.update(device.as_bytes());
    m.verify_slice(&sig).is_ok()
}

/// Decode exactly 64 lowercase hex characters, the only form a signature takes on the wire.
pub fn parse_sig_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Parse `X-TG-Timestamp`: `[0-9]{1,12}` Unix seconds.
pub fn parse_request_timestamp(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Is a request timestamp within the window of `now_secs`?
pub fn request_is_fresh(timestamp_secs: u64, now_secs: u64) -> bool {
    timestamp_secs.abs_diff(now_secs) <= crate::REQUEST_WINDOW_SECS
}

#[cfg(test)]
mod tests;
