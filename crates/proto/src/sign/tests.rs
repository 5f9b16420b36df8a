//! PROTOCOL.md §5 test vectors, byte for byte.

use super::*;

const DEVICE_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const RECORD: &str = r#"{"dev":"TRK-0001","seq":42,"ts":1763800000123,"lat":60.1699,"lon":24.9384,"spd":3.2,"bat":87}"#;
const RECORD_SIG: &str = "58caf992c19b69bd5a4691b36bc7b35e38896385037cf69041a81dd0c0f64017";
const SUPPLIER_KEY: &str = "f0e0d0c0b0a090807060504030201000ffeeddccbbaa99887766554433221100";
const REQUEST_SIG: &str = "e367ed348d706065ae17035e3c70db46cf13e16604febf5d546999a21dd0eddf";

fn key(hex: &str) -> Secret {
    Secret::from_hex(hex).unwrap()
}

#[test]
fn record_signature_vector() {
    let sig = record_signature(&key(DEVICE_KEY), RECORD.as_bytes());
    assert_eq!(hex::encode(sig), RECORD_SIG);
    assert!(verify_record(&key(DEVICE_KEY), RECORD.as_bytes(), &sig));
}

#[test]
fn one_flipped_byte_fails_verification() {
    let sig = parse_sig_hex(RECORD_SIG).unwrap();
    let mut bytes = RECORD.as_bytes().to_vec();
    for i in 0..bytes.len() {
        bytes[i] ^= 0x01;
        assert!(!verify_record(&key(DEVICE_KEY), &bytes, &sig), "flip at {i}");
        bytes[i] ^= 0x01;
    }
    assert!(verify_record(&key(DEVICE_KEY), &bytes, &sig));
}

#[test]
fn compact_envelope_vector() {
    let expected = format!(r#"{{"m":{RECORD},"kid":"k1","sig":"{RECORD_SIG}"}}"#);
    assert_eq!(envelope(&key(DEVICE_KEY), Some("k1"), RECORD), expected);
}

#[test]
fn mqtt_password_vector() {
    let pw = mqtt_password(&key(DEVICE_KEY), "TRK-0001");
    assert_eq!(pw, "bdd7f18f8cedf8cf232df9b46eff78d2effebc16db6bb448b5427e375eaaa620");
    assert!(verify_mqtt_password(&key(DEVICE_KEY), "TRK-0001", pw.as_bytes()));
    assert!(!verify_mqtt_password(&key(DEVICE_KEY), "TRK-0002", pw.as_bytes()));
    assert!(!verify_mqtt_password(
        &key(DEVICE_KEY),
        "TRK-0001",
        pw.to_uppercase().as_bytes()
    ));
}

#[test]
fn request_signature_vector() {
    let body = format!(r#"[{{"m":{RECORD},"kid":"k1","sig":"{RECORD_SIG}"}}]"#);
    let parts = RequestParts {
        timestamp: "1763800030",
        method: "POST",
        path: "/v1/records",
        body: body.as_bytes(),
    };
    let sig = request_signature(&key(SUPPLIER_KEY), &parts);
    assert_eq!(hex::encode(sig), REQUEST_SIG);
    assert!(verify_request(&key(SUPPLIER_KEY), &parts, &sig));
    let other_path = RequestParts {
        path: "/v1/records/",
        ..parts
    };
    assert!(!verify_request(&key(SUPPLIER_KEY), &other_path, &sig));
}

#[test]
fn vectors_file_matches_the_constants() {
    let v: serde_json::Value = serde_json::from_str(include_str!("../../tests/protocol-vectors.json")).unwrap();
    let rec = &v["record"];
    let k = key(rec["device_key_hex"].as_str().unwrap());
    let m = rec["m"].as_str().unwrap();
    assert_eq!(
        hex::encode(record_signature(&k, m.as_bytes())),
        rec["sig"].as_str().unwrap()
    );
    let req = &v["request"];
    let parts = RequestParts {
        timestamp: req["timestamp"].as_str().unwrap(),
        method: req["method"].as_str().unwrap(),
        path: req["path"].as_str().unwrap(),
        body: req["body"].as_str().unwrap().as_bytes(),
    };
    let sk = key(req["supplier_key_hex"].as_str().unwrap());
    assert_eq!(
        hex::encode(request_signature(&sk, &parts)),
        req["signature"].as_str().unwrap()
    );
    let mq = &v["mqtt_password"];
    let mk = key(mq["device_key_hex"].as_str().unwrap());
    assert_eq!(
        mqtt_password(&mk, mq["device"].as_str().unwrap()),
        mq["password"].as_str().unwrap()
    );
}

#[test]
fn signatures_are_64_lowercase_hex_only() {
    assert!(parse_sig_hex(RECORD_SIG).is_some());
    assert!(parse_sig_hex(&RECORD_SIG.to_uppercase()).is_none());
    assert!(parse_sig_hex(&RECORD_SIG[..62]).is_none());
    assert!(parse_sig_hex(&format!("{RECORD_SIG}00")).is_none());
}

#[test]
fn request_timestamps() {
    assert_eq!(parse_request_timestamp("1763800030"), Some(1_763_800_030));
    assert_eq!(parse_request_timestamp("0"), Some(0));
    assert_eq!(parse_request_timestamp("1234567890123"), None);
    assert_eq!(parse_request_timestamp("-1"), None);
    assert_eq!(parse_request_timestamp(" 1"), None);
    assert_eq!(parse_request_timestamp(""), None);
    assert!(request_is_fresh(1000, 1300));
    assert!(request_is_fresh(1300, 1000));
    assert!(!request_is_fresh(1000, 1301));
    assert!(!request_is_fresh(1301, 1000));
}
