//! Every rejection reason, in the order the contract gives, plus the §5 envelopes.

use super::*;
use crate::Measurement;
use crate::sign::envelope;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const OTHER: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const RECORD: &str = r#"{"dev":"TRK-0001","seq":42,"ts":1763800000123,"lat":60.1699,"lon":24.9384,"spd":3.2,"bat":87}"#;
const SIG: &str = "58caf992c19b69bd5a4691b36bc7b35e38896385037cf69041a81dd0c0f64017";
const NOW_MS: u64 = 1_763_800_000_123 + 60_000;
const CLOCK: Clock = Clock {
    now_ms: NOW_MS,
    retention_ms: 30 * 24 * 3600 * 1000,
};

fn key(kid: &str, hex: &str) -> ActiveKey {
    ActiveKey {
        kid: kid.into(),
        secret: Secret::from_hex(hex).unwrap(),
    }
}

fn keys() -> Vec<ActiveKey> {
    vec![key("k1", KEY)]
}

fn device(keys: &[ActiveKey]) -> Option<DeviceView<'_>> {
    Some(DeviceView {
        enabled: true,
        supplier: Some("ACME"),
        keys,
    })
}

/// The outcome of an envelope sent by supplier ACME for a device with `keys`.
fn outcome(env: &str, keys: &[ActiveKey]) -> Result<u64, Reason> {
    let p = Parsed::parse(env)?;
    p.verify(Origin::Supplier("ACME"), device(keys), CLOCK)
        .map(|v| v.record.seq)
}

fn signed(record: &str) -> String {
    envelope(&Secret::from_hex(KEY).unwrap(), Some("k1"), record)
}

fn reason(env: &str) -> Reason {
    outcome(env, &keys()).unwrap_err()
}

#[test]
fn section_5_envelopes_verify() {
    let v: serde_json::Value = serde_json::from_str(include_str!("../../tests/protocol-vectors.json")).unwrap();
    for env in v["envelopes_valid"].as_array().unwrap() {
        let env = env.as_str().unwrap();
        let p = Parsed::parse(env).unwrap();
        assert_eq!(p.record_text(), RECORD);
        let k = keys();
        let verified = p.verify(Origin::Supplier("ACME"), device(&k), CLOCK).unwrap();
        assert_eq!(verified.kid, "k1");
        let r = verified.record;
        assert_eq!((r.dev, r.seq, r.ts), ("TRK-0001", 42, 1_763_800_000_123));
        assert_eq!(
            r.measurement,
            Measurement {
                lat: Some(60.1699),
                lon: Some(24.9384),
                spd: Some(3.2),
                bat: Some(87.0),
                ..Measurement::default()
            }
        );
        assert_eq!(r.ext, None);
        assert_eq!(r.text, RECORD);
    }
}

#[test]
fn member_order_whitespace_and_escaped_names_are_free() {
    let spaced = format!("\n\t{{ \"kid\" :\"k1\" ,\r\n \"sig\":\"{SIG}\",\"m\" : {RECORD} }} ");
    assert_eq!(outcome(&spaced, &keys()), Ok(42));
    let escaped = format!(r#"{{"\u006d":{RECORD},"\u0073ig":"{SIG}","k\u0069d":"k\u0031"}}"#);
    assert_eq!(outcome(&escaped, &keys()), Ok(42));
}

#[test]
fn malformed() {
    let m = RECORD;
    for env in [
        "not json".to_string(),
        "[]".into(),
        format!(r#"{{"m":{m}}}"#),
        format!(r#"{{"sig":"{SIG}"}}"#),
        format!(r#"{{"m":{m},"sig":"{SIG}","x":1}}"#),
        format!(r#"{{"m":{m},"sig":"{SIG}","m":{m}}}"#),
        format!(r#"{{"m":{m},"sig":"{SIG}","\u006d":{m}}}"#),
        format!(r#"{{"m":{m},"sig":"{SIG}","kid":"k1","kid":"k1"}}"#),
        format!(r#"{{"m":[{m}],"sig":"{SIG}"}}"#),
        format!(r#"{{"m":"{{}}","sig":"{SIG}"}}"#),
        format!(r#"{{"m":{m},"sig":"{}"}}"#, SIG.to_uppercase()),
        format!(r#"{{"m":{m},"sig":"{}"}}"#, &SIG[..63]),
        format!(r#"{{"m":{m},"sig":42}}"#),
        format!(r#"{{"m":{m},"sig":"{SIG}","kid":7}}"#),
        format!(r#"{{"m":{m},"sig":"{SIG}","kid":"bad kid"}}"#),
        format!(r#"{{"m":{{"seq":1}},"sig":"{SIG}"}}"#),
        format!(r#"{{"m":{{"dev":7,"seq":1}},"sig":"{SIG}"}}"#),
        format!(r#"{{"m":{{"dev":"TRK-0001","dev":"TRK-0001"}},"sig":"{SIG}"}}"#),
        format!(r#"{{"m":{{"dev":"TRK-0001","ext":{{"a":1,"a":2}}}},"sig":"{SIG}"}}"#),
        format!(r#"{{"m":{{"dev":"TRK-0001","x":[{{"a":{{"b":1,"\u0062":2}}}}]}},"sig":"{SIG}"}}"#),
        format!(r#"{{"m":{m},"sig":"{SIG}"}} trailing"#),
    ] {
        assert_eq!(reason(&env), Reason::Malformed, "{env}");
    }
}

#[test]
fn too_large_comes_after_malformed() {
    let pad = "x".repeat(4096);
    let big_record = format!(r#"{{"dev":"TRK-0001","seq":1,"ts":1,"ext":{{"p":"{pad}"}}}}"#);
    assert_eq!(reason(&signed(&big_record)), Reason::TooLarge);
    let ext = format!(r#"{{"p":"{}"}}"#, "x".repeat(1020));
    assert_eq!(ext.len(), 1028);
    assert_eq!(
        reason(&signed(&format!(r#"{{"dev":"TRK-0001","seq":1,"ts":1,"ext":{ext}}}"#))),
        Reason::TooLarge
    );
    let ext_ok = format!(r#"{{"p":"{}"}}"#, "x".repeat(1016));
    assert_eq!(ext_ok.len(), 1024);
    let rec = format!(r#"{{"dev":"TRK-0001","seq":1,"ts":{NOW_MS},"ext":{ext_ok}}}"#);
    assert_eq!(outcome(&signed(&rec), &keys()), Ok(1));
    // A record under 4096 bytes inside an envelope padded with whitespace past 8 KiB.
    let env = format!("{}{}", signed(RECORD), " ".repeat(8192));
    assert_eq!(reason(&env), Reason::TooLarge);
    // Malformed wins over too large.
    let dup = format!(r#"{{"m":{{"dev":"TRK-0001","a":1,"a":1,"p":"{pad}"}},"sig":"{SIG}"}}"#);
    assert_eq!(reason(&dup), Reason::Malformed);
}

#[test]
fn device_and_permission_checks() {
    let env = signed(RECORD);
    let p = Parsed::parse(&env).unwrap();
    assert_eq!(p.dev(), "TRK-0001");
    let k = keys();
    let reject = |origin, dev| p.verify(origin, dev, CLOCK).map(|_| ()).unwrap_err();
    assert_eq!(reject(Origin::Supplier("ACME"), None), Reason::UnknownDevice);
    assert_eq!(reject(Origin::Supplier("OTHER"), device(&k)), Reason::NotPermitted);
    assert_eq!(reject(Origin::Device("TRK-0002"), device(&k)), Reason::NotPermitted);
    assert_eq!(reject(Origin::Topic("TRK-0002"), device(&k)), Reason::TopicMismatch);
    let no_supplier = Some(DeviceView {
        enabled: true,
        supplier: None,
        keys: &k,
    });
    assert_eq!(reject(Origin::Supplier("ACME"), no_supplier), Reason::NotPermitted);
    let disabled = Some(DeviceView {
        enabled: false,
        supplier: Some("ACME"),
        keys: &k,
    });
    assert_eq!(reject(Origin::Supplier("ACME"), disabled), Reason::DeviceDisabled);
    // Unknown device wins over a bad signature; a disabled device over an unknown key.
    let disabled_no_keys = Some(DeviceView {
        enabled: false,
        supplier: Some("ACME"),
        keys: &[],
    });
    assert_eq!(
        reject(Origin::Supplier("ACME"), disabled_no_keys),
        Reason::DeviceDisabled
    );
    assert!(p.verify(Origin::Device("TRK-0001"), device(&k), CLOCK).is_ok());
    assert!(p.verify(Origin::Topic("TRK-0001"), device(&k), CLOCK).is_ok());
}

#[test]
fn keys_rotation_and_revocation() {
    let with_kid = signed(RECORD);
    let without_kid = envelope(&Secret::from_hex(KEY).unwrap(), None, RECORD);
    // Rotation: old and new key both active; either kid, or none, verifies.
    let rotated = vec![key("k2", OTHER), key("k1", KEY)];
    assert_eq!(outcome(&with_kid, &rotated), Ok(42));
    assert_eq!(outcome(&without_kid, &rotated), Ok(42));
    // k1 revoked: only k2 active. Naming k1 is unknown_key; no kid tries k2 and fails.
    let after = vec![key("k2", OTHER)];
    assert_eq!(outcome(&with_kid, &after), Err(Reason::UnknownKey));
    assert_eq!(outcome(&without_kid, &after), Err(Reason::BadSignature));
    assert_eq!(outcome(&without_kid, &[]), Err(Reason::UnknownKey));
    // The kid names a key but the signature was made with another.
    let wrong = envelope(&Secret::from_hex(OTHER).unwrap(), Some("k1"), RECORD);
    assert_eq!(outcome(&wrong, &rotated), Err(Reason::BadSignature));
}

#[test]
fn one_flipped_byte_of_m_is_a_bad_signature() {
    let env = signed(RECORD);
    let start = env.find("{\"dev").unwrap();
    // Flip digits and letters inside values so the text stays a well-formed, valid record.
    let mut flips = 0;
    for (i, b) in RECORD.bytes().enumerate() {
        let flipped = match b {
            b'1'..=b'8' => b + 1,
            b'A'..=b'Z' => b.to_ascii_lowercase(),
            _ => continue,
        };
        let mut bytes = env.clone().into_bytes();
        bytes[start + i] = flipped;
        let text = String::from_utf8(bytes).unwrap();
        let r = outcome(&text, &keys());
        assert!(
            matches!(r, Err(Reason::BadSignature | Reason::UnknownDevice)),
            "flip {i}: {r:?}"
        );
        flips += 1;
    }
    assert!(flips >= 25, "{flips}");
    // Whitespace inside m is part of the signed bytes too.
    let spaced = env.replacen("\"seq\":42", "\"seq\": 42", 1);
    assert_eq!(outcome(&spaced, &keys()), Err(Reason::BadSignature));
}

#[test]
fn unknown_field_comes_before_bad_value() {
    let r = r#"{"dev":"TRK-0001","seq":1,"ts":1763800000123,"colour":"red"}"#;
    assert_eq!(reason(&signed(r)), Reason::UnknownField);
    let r = r#"{"dev":"TRK-0001","seq":-1,"ts":1763800000123,"colour":"red"}"#;
    assert_eq!(reason(&signed(r)), Reason::UnknownField);
}

#[test]
fn bad_values() {
    let base = |extra: &str| format!(r#"{{"dev":"TRK-0001","seq":1,"ts":1763800000123{extra}}}"#);
    for extra in [
        r#","lat":1"#,
        r#","lon":1"#,
        r#","lat":91,"lon":0"#,
        r#","lat":0,"lon":-180.5"#,
        r#","lat":"1","lon":1"#,
        r#","lat":null,"lon":null"#,
        r#","spd":-0.1"#,
        r#","hdg":360"#,
        r#","hdg":-1"#,
        r#","acc":-1"#,
        r#","bat":100.5"#,
        r#","bat":-1"#,
        r#","tmp":true"#,
        r#","alt":1e400"#,
        r#","tmp":1.0000000000000000000000000000001"#,
        r#","ext":[1]"#,
        r#","ext":"x""#,
        r#","ext":null"#,
    ] {
        assert_eq!(reason(&signed(&base(extra))), Reason::BadValue, "{extra}");
    }
    for rec in [
        r#"{"dev":"TRK-0001","ts":1763800000123}"#,
        r#"{"dev":"TRK-0001","seq":1}"#,
        r#"{"dev":"TRK-0001","seq":42.0,"ts":1763800000123}"#,
        r#"{"dev":"TRK-0001","seq":4.2e1,"ts":1763800000123}"#,
        r#"{"dev":"TRK-0001","seq":"1","ts":1763800000123}"#,
        r#"{"dev":"TRK-0001","seq":1,"ts":-0}"#,
        r#"{"dev":"TRK-0001","seq":9007199254740992,"ts":1763800000123}"#,
        r#"{"dev":"TRK-0001","seq":null,"ts":1763800000123}"#,
    ] {
        assert_eq!(reason(&signed(rec)), Reason::BadValue, "{rec}");
    }
    let ok = base(r#","lat":-90,"lon":180,"hdg":-0,"spd":0,"bat":100,"tmp":-40.5,"alt":-12,"ext":{"fw":"1.2"}"#);
    assert_eq!(outcome(&signed(&ok), &keys()), Ok(1));
}

#[test]
fn ts_out_of_range() {
    let at = |ts: u64| signed(&format!(r#"{{"dev":"TRK-0001","seq":1,"ts":{ts}}}"#));
    assert_eq!(outcome(&at(NOW_MS + 5 * 60 * 1000), &keys()), Ok(1));
    assert_eq!(reason(&at(NOW_MS + 5 * 60 * 1000 + 1)), Reason::TsOutOfRange);
    assert_eq!(outcome(&at(NOW_MS - CLOCK.retention_ms), &keys()), Ok(1));
    assert_eq!(reason(&at(NOW_MS - CLOCK.retention_ms - 1)), Reason::TsOutOfRange);
    assert_eq!(reason(&at(0)), Reason::TsOutOfRange);
}

#[test]
fn ext_is_kept_byte_for_byte() {
    let rec = r#"{"dev":"TRK-0001","seq":7,"ts":1763800000123,"ext":{ "fw" : "1.2", "n":[1, 2.50]}}"#;
    let env = signed(rec);
    let p = Parsed::parse(&env).unwrap();
    let k = keys();
    let v = p.verify(Origin::Device("TRK-0001"), device(&k), CLOCK).unwrap();
    assert_eq!(v.record.ext, Some(r#"{ "fw" : "1.2", "n":[1, 2.50]}"#));
}

#[test]
fn escaped_device_ids_are_decoded() {
    let rec = r#"{"dev":"TRK-000\u0031","seq":7,"ts":1763800000123}"#;
    let env = signed(rec);
    let p = Parsed::parse(&env).unwrap();
    assert_eq!(p.dev(), "TRK-0001");
    assert_eq!(
        p.verify(Origin::Device("TRK-0001"), device(&keys()), CLOCK)
            .unwrap()
            .record
            .dev,
        "TRK-0001"
    );
}
