//! Field rules of a record (PROTOCOL.md §1), applied only after the signature holds.

use crate::envelope::Clock;
use crate::{MAX_FUTURE_MS, MAX_SAFE_INTEGER, Reason};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A record's measurements (PROTOCOL.md §1), each optional; `lat` and `lon` come together.
///
/// The one list of them: validation, storage columns and API fields all follow
/// [`Measurement::NAMES`] and [`Measurement::values`].
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Measurement {
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub alt: Option<f64>,
    pub spd: Option<f64>,
    pub hdg: Option<f64>,
    pub acc: Option<f64>,
    pub bat: Option<f64>,
    pub tmp: Option<f64>,
}

impl Measurement {
    /// The fields' names on the wire, in the API and as storage columns, in this order.
    pub const NAMES: [&'static str; 8] = ["lat", "lon", "alt", "spd", "hdg", "acc", "bat", "tmp"];

    /// The values in the order of [`Measurement::NAMES`].
    pub fn values(&self) -> [Option<f64>; 8] {
        [
            self.lat, self.lon, self.alt, self.spd, self.hdg, self.acc, self.bat, self.tmp,
        ]
    }

    /// From values in the order of [`Measurement::NAMES`].
    pub fn from_values(values: [Option<f64>; 8]) -> Measurement {
        let [lat, lon, alt, spd, hdg, acc, bat, tmp] = values;
        Measurement {
            lat,
            lon,
            alt,
            spd,
            hdg,
            acc,
            bat,
            tmp,
        }
    }

    /// `(lat, lon)`, when the record has a position.
    pub fn position(&self) -> Option<(f64, f64)> {
        self.lat.zip(self.lon)
    }

    /// Every value within its range (PROTOCOL.md §1), and `lat` and `lon` both or neither.
    fn in_range(&self) -> bool {
        let ok = |v: Option<f64>, ok: fn(f64) -> bool| v.is_none_or(ok);
        self.lat.is_some() == self.lon.is_some()
            && ok(self.lat, |v| (-90.0..=90.0).contains(&v))
            && ok(self.lon, |v| (-180.0..=180.0).contains(&v))
            && ok(self.spd, |v| v >= 0.0)
            && ok(self.hdg, |v| (0.0..360.0).contains(&v))
            && ok(self.acc, |v| v >= 0.0)
            && ok(self.bat, |v| (0.0..=100.0).contains(&v))
    }
}

/// A verified, validated record, borrowing from the envelope it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    pub dev: &'a str,
    pub seq: u64,
    /// Unix epoch milliseconds, UTC.
    pub ts: u64,
    pub measurement: Measurement,
    /// Vendor object, byte for byte as transmitted.
    pub ext: Option<&'a str>,
    /// The whole record, byte for byte as signed: the ground truth kept with the row.
    pub text: &'a str,
}

/// A member a record may have.
fn known(name: &str) -> bool {
    matches!(name, "dev" | "seq" | "ts" | "ext") || Measurement::NAMES.contains(&name)
}

pub(crate) fn validate<'a>(
    text: &'a str,
    dev: &'a str,
    members: &[(Cow<'a, str>, &'a RawValue)],
    clock: Clock,
) -> Result<Record<'a>, Reason> {
    if members.iter().any(|(name, _)| !known(name)) {
        return Err(Reason::UnknownField);
    }
    let get = |name: &str| members.iter().find(|(n, _)| n == name).map(|(_, v)| v.get());
    let number = |name: &str| get(name).map(number).transpose();

    let seq = integer(get("seq").ok_or(Reason::BadValue)?)?;
    let ts = integer(get("ts").ok_or(Reason::BadValue)?)?;
    let mut values = [None; 8];
    for (value, name) in values.iter_mut().zip(Measurement::NAMES) {
        *value = number(name)?;
    }
    let measurement = Measurement::from_values(values);
    if !measurement.in_range() {
        return Err(Reason::BadValue);
    }
    let rec = Record {
        dev,
        seq,
        ts,
        measurement,
        ext: get("ext")
            .map(|e| {
                if e.starts_with('{') {
                    Ok(e)
                } else {
                    Err(Reason::BadValue)
                }
            })
            .transpose()?,
        text,
    };
    let oldest = clock.now_ms.saturating_sub(clock.retention_ms);
    if ts > clock.now_ms.saturating_add(MAX_FUTURE_MS) || ts < oldest {
        return Err(Reason::TsOutOfRange);
    }
    Ok(rec)
}

/// `seq` and `ts`: a plain integer token, `0` or `[1-9][0-9]*`, at most 2^53 - 1.
fn integer(token: &str) -> Result<u64, Reason> {
    let b = token.as_bytes();
    let plain = token == "0" || (matches!(b.first(), Some(b'1'..=b'9')) && b.iter().all(u8::is_ascii_digit));
    if !plain || token.len() > 16 {
        return Err(Reason::BadValue);
    }
    let v: u64 = token.parse().map_err(|_| Reason::BadValue)?;
    if v > MAX_SAFE_INTEGER {
        return Err(Reason::BadValue);
    }
    Ok(v)
}

/// Any other number: a JSON number token of at most 32 characters, finite as an IEEE double.
/// `-0` is stored as `0`.
fn number(token: &str) -> Result<f64, Reason> {
    let is_number = matches!(token.as_bytes().first(), Some(b'-' | b'0'..=b'9'));
    if !is_number || token.len() > 32 {
        return Err(Reason::BadValue);
    }
    let v: f64 = token.parse().map_err(|_| Reason::BadValue)?;
    if !v.is_finite() {
        return Err(Reason::BadValue);
    }
    Ok(v + 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_plain_tokens() {
        assert_eq!(integer("0"), Ok(0));
        assert_eq!(integer("42"), Ok(42));
        assert_eq!(integer("9007199254740991"), Ok(MAX_SAFE_INTEGER));
        for bad in [
            "9007199254740992",
            "42.0",
            "4.2e1",
            "-1",
            "-0",
            "\"42\"",
            "null",
            "true",
            "99999999999999999999",
        ] {
            assert_eq!(integer(bad), Err(Reason::BadValue), "{bad}");
        }
    }

    #[test]
    fn numbers_are_short_and_finite() {
        assert_eq!(number("3.2"), Ok(3.2));
        assert_eq!(number("-0").map(f64::to_bits), Ok(0f64.to_bits()));
        assert_eq!(number("1e2"), Ok(100.0));
        assert_eq!(number(&format!("1.{}", "0".repeat(30))), Ok(1.0));
        assert_eq!(number(&format!("1.{}", "0".repeat(31))), Err(Reason::BadValue));
        assert_eq!(number("1e999"), Err(Reason::BadValue));
        assert_eq!(number("\"1\""), Err(Reason::BadValue));
        assert_eq!(number("null"), Err(Reason::BadValue));
        assert_eq!(number("[1]"), Err(Reason::BadValue));
    }
}
