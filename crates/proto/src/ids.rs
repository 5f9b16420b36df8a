//! Principal ids (devices and suppliers share one namespace) and key ids.

/// Is `s` a valid device or supplier id: `[A-Za-z0-9._-]{1,64}`.
pub fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(is_id_byte)
}

/// Is `s` a valid key id: `[A-Za-z0-9._-]{1,32}`.
pub fn is_valid_kid(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(is_id_byte)
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Split a wire key name `<owner id>/<kid>` into its parts, if both are well formed.
pub fn parse_key_name(name: &str) -> Option<(&str, &str)> {
    let (owner, kid) = name.split_once('/')?;
    (is_valid_id(owner) && is_valid_kid(kid)).then_some((owner, kid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_pattern() {
        assert!(is_valid_id("TRK-0001"));
        assert!(is_valid_id("a.b_c-D9"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("TRK 1"));
        assert!(!is_valid_id("TRK/1"));
        assert!(!is_valid_id("trä"));
        assert!(is_valid_kid(&"k".repeat(32)));
        assert!(!is_valid_kid(&"k".repeat(33)));
    }

    #[test]
    fn key_names_split_at_the_slash() {
        assert_eq!(parse_key_name("ACME/k1"), Some(("ACME", "k1")));
        assert_eq!(parse_key_name("ACME"), None);
        assert_eq!(parse_key_name("ACME/k1/x"), None);
        assert_eq!(parse_key_name("/k1"), None);
    }
}
