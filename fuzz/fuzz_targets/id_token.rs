//! An operator's ID token before its signature is checked: only its header and issuer are read,
//! and only to pick whose keys to try. Nothing here may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let _ = trackgate::auth::unverified_parts(token);
});
