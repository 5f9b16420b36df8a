//! MQTT topic names (PROTOCOL.md §3).

/// The topic a device publishes its telemetry to.
pub fn telemetry(dev: &str) -> String {
    format!("devices/{dev}/telemetry")
}

/// The topic trackgate publishes a device's rejections to.
pub fn rejections(dev: &str) -> String {
    format!("devices/{dev}/rejections")
}

/// The `<dev>` of `devices/<dev>/telemetry`, whatever its form; `None` for any other topic.
pub fn telemetry_device(topic: &str) -> Option<&str> {
    let dev = topic.strip_prefix("devices/")?.strip_suffix("/telemetry")?;
    (!dev.is_empty() && !dev.contains('/')).then_some(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_topics_round_trip() {
        assert_eq!(telemetry("TRK-0001"), "devices/TRK-0001/telemetry");
        assert_eq!(telemetry_device("devices/TRK-0001/telemetry"), Some("TRK-0001"));
        assert_eq!(telemetry_device("devices//telemetry"), None);
        assert_eq!(telemetry_device("devices/a/b/telemetry"), None);
        assert_eq!(telemetry_device("devices/TRK-0001/rejections"), None);
        assert_eq!(rejections("TRK-0001"), "devices/TRK-0001/rejections");
    }
}
