//! Column lists of the measurement fields, all from their one list, [`Measurement::NAMES`]:
//! the schema's columns carry the fields' names.

use trackgate_proto::Measurement;

/// The measurement columns, comma-separated, each qualified by `table` (`l` gives `l.lat`) and
/// renamed with the prefix `alias` (`l_` gives `l.lat AS l_lat`) when those are not empty.
pub(crate) fn measurement_columns(table: &str, alias: &str) -> String {
    let column = |name: &str| {
        let qualified = if table.is_empty() {
            name.to_owned()
        } else {
            format!("{table}.{name}")
        };
        if alias.is_empty() {
            qualified
        } else {
            format!("{qualified} AS {alias}{name}")
        }
    };
    Measurement::NAMES.map(column).join(", ")
}

/// `lat = excluded.lat, ...`: an upsert's update of every measurement column.
pub(crate) fn measurement_from_excluded() -> String {
    Measurement::NAMES.map(|n| format!("{n} = excluded.{n}")).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_follow_the_names() {
        assert_eq!(measurement_columns("", ""), "lat, lon, alt, spd, hdg, acc, bat, tmp");
        assert!(measurement_columns("l", "l_").starts_with("l.lat AS l_lat, l.lon AS l_lon, "));
        assert!(measurement_from_excluded().ends_with("bat = excluded.bat, tmp = excluded.tmp"));
    }
}
