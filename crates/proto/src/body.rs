//! Splitting a request body or MQTT payload into envelope texts (PROTOCOL.md §3, §4).
//!
//! Body-level faults fail the whole body (HTTP 400); an element that is valid JSON but not a valid
//! envelope is left for [`crate::envelope::Parsed::parse`] to reject at its index.

use crate::MAX_NESTING;
use crate::json::nesting_depth;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// Why a body is not a body of envelopes. `Display` is the `detail` sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("body starts with a byte order mark")]
    ByteOrderMark,
    #[error("body is not valid JSON: {0}")]
    Syntax(String),
    #[error("top level of the body must be an object or an array")]
    NotObjectOrArray,
    #[error("body nests deeper than {MAX_NESTING} levels")]
    TooDeep,
}

fn utf8(body: &[u8]) -> Result<&str, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
    if text.starts_with('\u{feff}') {
        return Err(BodyError::ByteOrderMark);
    }
    Ok(text)
}

/// An `application/json` body: one envelope (an object) or an array of them.
pub fn json_envelopes(body: &[u8]) -> Result<Vec<&str>, BodyError> {
    let text = utf8(body)?;
    if nesting_depth(text) > MAX_NESTING {
        return Err(BodyError::TooDeep);
    }
    let first = text.trim_start_matches([' ', '\t', '\n', '\r']).as_bytes().first();
    match first {
        Some(b'{') => {
            let one: &RawValue = serde_json::from_str(text).map_err(syntax)?;
            Ok(vec![one.get()])
        }
        Some(b'[') => {
            let many: Vec<&RawValue> = serde_json::from_str(text).map_err(syntax)?;
            Ok(many.into_iter().map(RawValue::get).collect())
        }
        _ => match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Err(BodyError::NotObjectOrArray),
            Err(e) => Err(syntax(e)),
        },
    }
}

/// An `application/x-ndjson` body: one envelope per LF-terminated line. A CR before the LF is
/// dropped and empty lines are skipped; a line that is not an envelope is left to be rejected at
/// its index.
pub fn ndjson_envelopes(body: &[u8]) -> Result<Vec<&str>, BodyError> {
    let text = utf8(body)?;
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if nesting_depth(line) > MAX_NESTING {
            return Err(BodyError::TooDeep);
        }
        out.push(line);
    }
    Ok(out)
}

fn syntax(e: serde_json::Error) -> BodyError {
    BodyError::Syntax(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_array_and_empty_array() {
        assert_eq!(json_envelopes(br#" {"a":1} "#).unwrap(), vec![r#"{"a":1}"#]);
        assert_eq!(
            json_envelopes(br#"[{"a":1}, 7 ,{"b":[]}]"#).unwrap(),
            vec![r#"{"a":1}"#, "7", r#"{"b":[]}"#]
        );
        assert!(json_envelopes(b"[]").unwrap().is_empty());
    }

    #[test]
    fn body_level_faults() {
        assert_eq!(json_envelopes(b"\xff[]"), Err(BodyError::NotUtf8));
        assert_eq!(json_envelopes("\u{feff}[]".as_bytes()), Err(BodyError::ByteOrderMark));
        assert_eq!(json_envelopes(b"42"), Err(BodyError::NotObjectOrArray));
        assert_eq!(json_envelopes(br#""x""#), Err(BodyError::NotObjectOrArray));
        assert!(matches!(json_envelopes(b"[{]"), Err(BodyError::Syntax(_))));
        assert!(matches!(json_envelopes(b""), Err(BodyError::Syntax(_))));
        assert!(matches!(json_envelopes(b"[] []"), Err(BodyError::Syntax(_))));
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert_eq!(json_envelopes(deep.as_bytes()), Err(BodyError::TooDeep));
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(json_envelopes(ok.as_bytes()).is_ok());
    }

    #[test]
    fn ndjson_lines() {
        let body = b"{\"a\":1}\r\n\n{\"b\":2}\nnot json\n";
        assert_eq!(
            ndjson_envelopes(body).unwrap(),
            vec![r#"{"a":1}"#, r#"{"b":2}"#, "not json"]
        );
        assert!(ndjson_envelopes(b"").unwrap().is_empty());
        assert!(ndjson_envelopes(b"\n\r\n").unwrap().is_empty());
    }
}
