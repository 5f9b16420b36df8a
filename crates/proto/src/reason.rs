//! Rejection reasons: stable strings, part of the contract (PROTOCOL.md §4).

use serde::Serialize;

/// Why a record was not stored. The variant order is the order checks run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Malformed,
    TooLarge,
    UnknownDevice,
    NotPermitted,
    TopicMismatch,
    DeviceDisabled,
    UnknownKey,
    BadSignature,
    UnknownField,
    BadValue,
    TsOutOfRange,
    Conflict,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::Malformed,
        Reason::TooLarge,
        Reason::UnknownDevice,
        Reason::NotPermitted,
        Reason::TopicMismatch,
        Reason::DeviceDisabled,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::UnknownField,
        Reason::BadValue,
        Reason::TsOutOfRange,
        Reason::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::TooLarge => "too_large",
            Reason::UnknownDevice => "unknown_device",
            Reason::NotPermitted => "not_permitted",
            Reason::TopicMismatch => "topic_mismatch",
            Reason::DeviceDisabled => "device_disabled",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::UnknownField => "unknown_field",
            Reason::BadValue => "bad_value",
            Reason::TsOutOfRange => "ts_out_of_range",
            Reason::Conflict => "conflict",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_and_as_str_agree() {
        for r in Reason::ALL {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{}\"", r.as_str()));
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
    }
}
