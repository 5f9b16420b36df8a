//! A request body, as JSON and as NDJSON: split into envelopes, then each envelope's structural
//! checks. Nothing here may panic, and every envelope handed on is a slice of the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trackgate_proto::{Parsed, body};

fuzz_target!(|data: &[u8]| {
    for split in [body::json_envelopes, body::ndjson_envelopes] {
        if let Ok(envelopes) = split(data) {
            for e in envelopes {
                assert!(data.windows(e.len()).any(|w| w == e.as_bytes()) || e.is_empty());
                if let Ok(p) = Parsed::parse(e) {
                    // The record text is a slice of the envelope, kept byte for byte.
                    assert!(e.contains(p.record_text()));
                }
            }
        }
    }
});
