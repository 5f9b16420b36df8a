//! The request-signature headers and the media type, as an unauthenticated client sends them:
//! each parser answers or refuses, and a signature never verifies against the wrong bytes.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use trackgate::sources::http::body_kind;
use trackgate_proto::sign::{self, RequestParts};
use trackgate_proto::{Secret, ids};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.splitn(4, '\n');
    let (ts, key, sig, ct) = (
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
    );
    if let Some(t) = sign::parse_request_timestamp(ts) {
        let _ = sign::request_is_fresh(t, 1_763_800_000);
    }
    if let Some((owner, kid)) = ids::parse_key_name(key) {
        assert!(ids::is_valid_id(owner) && ids::is_valid_kid(kid));
    }
    if let Some(sig) = sign::parse_sig_hex(sig) {
        let parts = RequestParts {
            timestamp: ts,
            method: "POST",
            path: "/v1/records",
            body: data,
        };
        let secret = Secret::from_bytes([9; 32]);
        let good = sign::request_signature(&secret, &parts);
        assert_eq!(sign::verify_request(&secret, &parts, &sig), sig == good);
    }
    if let Ok(v) = HeaderValue::from_str(ct) {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, v);
        let _ = body_kind(&h);
    }
});
