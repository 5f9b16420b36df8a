//! A record text, signed with the device's key so it passes the signature and reaches every
//! field rule: validation must answer a reason or a record, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trackgate_proto::envelope::{ActiveKey, Clock};
use trackgate_proto::{DeviceView, Origin, Parsed, Secret, sign};

fuzz_target!(|data: &[u8]| {
    let Ok(record) = std::str::from_utf8(data) else { return };
    let secret = Secret::from_bytes([7; 32]);
    let envelope = sign::envelope(&secret, Some("k1"), record);
    let Ok(parsed) = Parsed::parse(&envelope) else { return };
    let keys = [ActiveKey {
        kid: "k1".into(),
        secret,
    }];
    let device = DeviceView {
        enabled: true,
        supplier: Some("ACME"),
        keys: &keys,
    };
    let clock = Clock {
        now_ms: 1_763_800_000_000,
        retention_ms: 365 * 86_400_000,
    };
    let dev = parsed.dev().to_owned();
    for origin in [Origin::Supplier("ACME"), Origin::Device(&dev), Origin::Topic(&dev)] {
        let _ = parsed.verify(origin, Some(device), clock);
    }
});
