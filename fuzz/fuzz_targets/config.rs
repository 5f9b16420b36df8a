//! A config file: parsed, then validated; errors name their key, nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trackgate::config::RawConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(raw) = RawConfig::parse(text) {
        let _ = raw.validate(Some("00".repeat(32)));
    }
});
