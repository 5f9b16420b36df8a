//! One signed envelope (PROTOCOL.md §2) and the ordered checks that decide its fate.
//!
//! [`Parsed::parse`] does the structural checks (`malformed`, `too_large`) and yields the device id;
//! the caller looks the device up (that is IO, so it is not done here) and hands it to
//! [`Parsed::verify`], which runs the remaining checks in the contract's order. The bytes that are
//! verified and the record that is stored both come from the one parse kept in [`Parsed`].

use crate::json::{Members, Str, decode_str, has_duplicates};
use crate::record::{self, Record};
use crate::sign::{parse_sig_hex, verify_record};
use crate::{MAX_ENVELOPE_BYTES, MAX_EXT_BYTES, MAX_RECORD_BYTES, Reason, Secret, ids};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Who delivered the record, which decides the permission check.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// An HTTPS request signed by this supplier's key: records of its own devices only.
    Supplier(&'a str),
    /// An HTTPS request signed by this device's key: its own records only.
    Device(&'a str),
    /// An MQTT message published on `devices/<dev>/telemetry` with this `<dev>`.
    Topic(&'a str),
}

/// An active key of a device.
#[derive(Debug, Clone)]
pub struct ActiveKey {
    pub kid: String,
    pub secret: Secret,
}

/// What verification needs to know of a provisioned device.
#[derive(Debug, Clone, Copy)]
pub struct DeviceView<'a> {
    pub enabled: bool,
    pub supplier: Option<&'a str>,
    /// The device's active keys (at most two in practice).
    pub keys: &'a [ActiveKey],
}

/// The receiver's clock and retention, for `ts_out_of_range`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now_ms: u64,
    pub retention_ms: u64,
}

/// An envelope that passed the structural checks.
#[derive(Debug)]
pub struct Parsed<'a> {
    record: &'a str,
    kid: Option<Cow<'a, str>>,
    sig: [u8; 32],
    dev: Cow<'a, str>,
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// A record that passed every check, with the key that signed it.
#[derive(Debug)]
pub struct Verified<'a> {
    pub record: Record<'a>,
    pub kid: &'a str,
}

struct Fields<'a> {
    m: &'a RawValue,
    kid: Option<Cow<'a, str>>,
    sig: Cow<'a, str>,
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an envelope object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut m, mut kid, mut sig) = (None, None, None);
                while let Some(Str(name)) = map.next_key()? {
                    let slot_taken = match name.as_ref() {
                        "m" => m.replace(map.next_value::<&RawValue>()?).is_some(),
                        "kid" => kid.replace(map.next_value::<Str>()?.0).is_some(),
                        "sig" => sig.replace(map.next_value::<Str>()?.0).is_some(),
                        other => {
                            return Err(de::Error::custom(format_args!("unknown member {other:?}")));
                        }
                    };
                    if slot_taken {
                        return Err(de::Error::custom(format_args!("member {name:?} given twice")));
                    }
                }
                Ok(Fields {
                    m: m.ok_or_else(|| de::Error::missing_field("m"))?,
                    kid,
                    sig: sig.ok_or_else(|| de::Error::missing_field("sig"))?,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Parsed<'a> {
    /// Structural checks: `malformed`, then `too_large`.
    pub fn parse(envelope: &'a str) -> Result<Self, Reason> {
        let fields: Fields<'a> = serde_json::from_str(envelope).map_err(|_| Reason::Malformed)?;
        let record = fields.m.get();
        if !record.starts_with('{') {
            return Err(Reason::Malformed);
        }
        let sig = parse_sig_hex(&fields.sig).ok_or(Reason::Malformed)?;
        if fields.kid.as_deref().is_some_and(|k| !ids::is_valid_kid(k)) {
            return Err(Reason::Malformed);
        }
        let Members(members) = serde_json::from_str(record).map_err(|_| Reason::Malformed)?;
        if members.iter().any(|(_, v)| has_duplicates(v)) {
            return Err(Reason::Malformed);
        }
        let dev = members
            .iter()
            .find(|(name, _)| name == "dev")
            .and_then(|(_, v)| decode_str(v))
            .ok_or(Reason::Malformed)?;

        let ext_len = members
            .iter()
            .find(|(n, _)| n == "ext")
            .map_or(0, |(_, v)| v.get().len());
        if record.len() > MAX_RECORD_BYTES || envelope.len() > MAX_ENVELOPE_BYTES || ext_len > MAX_EXT_BYTES {
            return Err(Reason::TooLarge);
        }
        Ok(Parsed {
            record,
            kid: fields.kid,
            sig,
            dev,
            members,
        })
    }

    /// The device id the record claims, whatever its form.
    pub fn dev(&self) -> &str {
        &self.dev
    }

    /// The key id the envelope names, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The exact bytes of `m` as transmitted.
    pub fn record_text(&self) -> &'a str {
        self.record
    }

    /// The remaining checks in contract order: `unknown_device`, `not_permitted` or
    /// `topic_mismatch`, `device_disabled`, `unknown_key`, `bad_signature`, then the field rules.
    pub fn verify<'s>(
        &'s self,
        origin: Origin<'_>,
        device: Option<DeviceView<'s>>,
        clock: Clock,
    ) -> Result<Verified<'s>, Reason> {
        let device = device.ok_or(Reason::UnknownDevice)?;
        match origin {
            Origin::Supplier(s) if device.supplier != Some(s) => return Err(Reason::NotPermitted),
            Origin::Device(d) if d != self.dev => return Err(Reason::NotPermitted),
            Origin::Topic(t) if t != self.dev => return Err(Reason::TopicMismatch),
            _ => {}
        }
        if !device.enabled {
            return Err(Reason::DeviceDisabled);
        }
        let signer = self.signer(device.keys)?;
        let record = record::validate(self.record, &self.dev, &self.members, clock)?;
        Ok(Verified {
            record,
            kid: &signer.kid,
        })
    }

    fn signer<'k>(&self, keys: &'k [ActiveKey]) -> Result<&'k ActiveKey, Reason> {
        let candidates: &[ActiveKey] = match self.kid() {
            Some(kid) => {
                let at = keys.iter().position(|k| k.kid == kid).ok_or(Reason::UnknownKey)?;
                &keys[at..=at]
            }
            None if keys.is_empty() => return Err(Reason::UnknownKey),
            None => keys,
        };
        candidates
            .iter()
            .find(|k| verify_record(&k.secret, self.record.as_bytes(), &self.sig))
            .ok_or(Reason::BadSignature)
    }
}

#[cfg(test)]
mod tests;
