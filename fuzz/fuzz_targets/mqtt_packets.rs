//! Bytes an unauthenticated MQTT client sends the endpoint: the CONNECT's protocol level, then
//! packets of either version, read until the buffer runs out. Nothing here may panic, and a read
//! never takes more than the buffer held.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use trackgate::sources::mqtt::codec::{Version, connect_level};

fuzz_target!(|data: &[u8]| {
    let _ = connect_level(data);
    for version in [Version::V311, Version::V5] {
        let mut buf = BytesMut::from(data);
        for _ in 0..64 {
            let before = buf.len();
            if version.read(&mut buf, 64 * 1024).is_err() {
                break;
            }
            assert!(buf.len() < before, "a packet read consumes bytes");
        }
    }
});
