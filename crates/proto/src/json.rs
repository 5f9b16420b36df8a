//! Small serde helpers for the borrowed, duplicate-refusing parse the protocol needs.
//!
//! serde_json keeps the last of two equal member names; PROTOCOL.md §2 makes a member given twice,
//! at any depth, `malformed`. Names are compared after unescaping (`"\u006d"` is `m`).

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A JSON string, borrowed from the input when it has no escapes.
pub(crate) struct Str<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Decode the text of a JSON string value; `None` if the value is not a string.
pub(crate) fn decode_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Str<'_>>(raw.get()).ok().map(|s| s.0)
}

/// The members of one JSON object, in order, each value kept as its exact text.
/// Fails on a repeated name or on anything but an object.
pub(crate) struct Members<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(8);
                while let Some(Str(name)) = map.next_key()? {
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format_args!("member {name:?} given twice")));
                    }
                    out.push((name, map.next_value()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Does this value hold a repeated member name in any object inside it?
/// Walks raw values so that numbers stay tokens: `1e999` in vendor data is not a fault here.
pub(crate) fn has_duplicates(raw: &RawValue) -> bool {
    let text = raw.get();
    if text.starts_with('{') {
        match serde_json::from_str::<Members<'_>>(text) {
            Ok(Members(members)) => members.iter().any(|(_, v)| has_duplicates(v)),
            Err(_) => true,
        }
    } else if text.starts_with('[') {
        match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => items.into_iter().any(has_duplicates),
            Err(_) => true,
        }
    } else {
        false
    }
}

/// The deepest nesting of objects and arrays in `text`, counted outside strings.
/// Well-formedness is checked elsewhere; this only guards the parser.
pub fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_str, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn duplicates_are_found_at_any_depth_and_after_unescaping() {
        assert!(!has_duplicates(raw(r#"{"a":1,"b":{"a":1}}"#)));
        assert!(has_duplicates(raw(r#"{"a":1,"a":2}"#)));
        assert!(has_duplicates(raw(r#"{"x":[{"k":1,"k":1}]}"#)));
        assert!(has_duplicates(raw(r#"{"m":1,"\u006d":2}"#)));
        assert!(!has_duplicates(raw(
            r#"{"big":1e999,"long":1.00000000000000000000000000000000001}"#
        )));
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(r#"[{"a":"[[[{{{"}]"#), 2);
        assert_eq!(nesting_depth(r#"{"a":"\"[["}"#), 1);
        assert_eq!(nesting_depth("1"), 0);
    }
}
