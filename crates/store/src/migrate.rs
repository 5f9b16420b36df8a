//! Each backend's schema, embedded in the binary: applied in version order, each once, recorded
//! by sqlx (which on PostgreSQL holds an advisory lock meanwhile, so of several nodes starting at
//! once one migrates and the others wait). A database made by an older version is moved forward
//! at open, never by hand.

use sqlx::migrate::{Migration, MigrationSource, MigrationType};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

/// One migration: version, description, SQL.
pub(crate) type Step = (i64, &'static str, &'static str);

pub(crate) const SQLITE: &[Step] = &[
    (1, "init", include_str!("../migrations/sqlite/0001_init.sql")),
    (2, "operators", include_str!("../migrations/sqlite/0002_operators.sql")),
    (
        3,
        "position spans",
        include_str!("../migrations/sqlite/0003_position_spans.sql"),
    ),
    (4, "retention", include_str!("../migrations/sqlite/0004_retention.sql")),
    (
        5,
        "audit chain",
        include_str!("../migrations/sqlite/0005_audit_chain.sql"),
    ),
    (
        6,
        "audit retention",
        include_str!("../migrations/sqlite/0006_audit_retention.sql"),
    ),
    (
        7,
        "span newest fields",
        include_str!("../migrations/sqlite/0007_span_newest_fields.sql"),
    ),
    (8, "geofences", include_str!("../migrations/sqlite/0008_geofences.sql")),
    (9, "events", include_str!("../migrations/sqlite/0009_events.sql")),
    (10, "alerts", include_str!("../migrations/sqlite/0010_alerts.sql")),
    (
        11,
        "share links",
        include_str!("../migrations/sqlite/0011_share_links.sql"),
    ),
];

pub(crate) const POSTGRES: &[Step] = &[
    (1, "init", include_str!("../migrations/postgres/0001_init.sql")),
    (
        2,
        "retention",
        include_str!("../migrations/postgres/0002_retention.sql"),
    ),
    (
        3,
        "audit chain",
        include_str!("../migrations/postgres/0003_audit_chain.sql"),
    ),
    (
        4,
        "audit retention",
        include_str!("../migrations/postgres/0004_audit_retention.sql"),
    ),
    (
        5,
        "span newest fields",
        include_str!("../migrations/postgres/0005_span_newest_fields.sql"),
    ),
    (
        6,
        "mark locks",
        include_str!("../migrations/postgres/0006_mark_locks.sql"),
    ),
    (
        7,
        "geofences",
        include_str!("../migrations/postgres/0007_geofences.sql"),
    ),
    (8, "events", include_str!("../migrations/postgres/0008_events.sql")),
    (9, "alerts", include_str!("../migrations/postgres/0009_alerts.sql")),
    (
        10,
        "share links",
        include_str!("../migrations/postgres/0010_share_links.sql"),
    ),
];

#[derive(Debug)]
pub(crate) struct Embedded {
    pub steps: &'static [Step],
    /// The newest version to apply (tests make older databases with it).
    pub upto: i64,
}

impl Embedded {
    pub(crate) fn all(steps: &'static [Step]) -> Embedded {
        Embedded { steps, upto: i64::MAX }
    }
}

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send + 'static>> {
        Box::pin(async move {
            Ok(self
                .steps
                .iter()
                .filter(|&&(v, _, _)| v <= self.upto)
                .map(|&(v, d, sql)| {
                    Migration::new(v, Cow::Borrowed(d), MigrationType::Simple, Cow::Borrowed(sql), false)
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in a backend's migrations folder is a step of its list, in version order: a
    /// migration written but not listed would never run.
    #[test]
    fn each_backend_lists_every_migration_file() {
        for (folder, steps) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(folder);
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let versions: Vec<i64> = files.iter().map(|f| f[..4].parse().unwrap()).collect();
            let listed: Vec<i64> = steps.iter().map(|s| s.0).collect();
            assert_eq!(versions, listed, "{folder}: {files:?}");
            for ((_, _, sql), file) in steps.iter().zip(&files) {
                assert_eq!(
                    *sql,
                    std::fs::read_to_string(dir.join(file)).unwrap(),
                    "{folder}/{file}"
                );
            }
        }
    }
}
