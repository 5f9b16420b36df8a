//! `positions` is partitioned by calendar month (UTC) of `ts`, so that retention can drop a whole
//! month instead of deleting rows. Partitions are named `positions_pYYYYMMDD` after their first
//! day, as pg_partman names monthly partitions, and each carries its own unique index on
//! `(device_id, seq)`.
//!
//! A partition is made ahead of time (this month and the next two, at open and by the daemon's
//! maintenance) and on demand, before a batch whose rows fall in a month without one. It is made
//! as a plain table with its index and then attached, which takes only a SHARE UPDATE EXCLUSIVE
//! lock on `positions`: writers to other months are not blocked meanwhile. Nodes making the same
//! partition at once take turns on an advisory lock and skip what already exists.

use super::retention::RowsByOrg;
use crate::StoreError;
use crate::retention::DroppedPartition;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The advisory lock partition changes hold (see `JOB_LOCKS`).
const LOCK: (i32, i32) = (super::JOB_LOCKS, 1);

/// Days since the epoch of the first day of month `m` (1-12) of year `y` (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year and month (1-12) of a day since the epoch.
fn civil_from_days(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m)
}

const DAY_MS: i64 = 86_400_000;

/// One month of `ts`: `[start, end)` in epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Month {
    pub start: i64,
    pub end: i64,
}

impl Month {
    pub(crate) fn of(ts: i64) -> Month {
        let (y, m) = civil_from_days(ts.div_euclid(DAY_MS));
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Month {
            start: days_from_civil(y, m) * DAY_MS,
            end: days_from_civil(ny, nm) * DAY_MS,
        }
    }

    pub(crate) fn next(self) -> Month {
        Month::of(self.end)
    }

    /// `positions_pYYYYMMDD`.
    pub(crate) fn table(self) -> String {
        let (y, m) = civil_from_days(self.start.div_euclid(DAY_MS));
        format!("positions_p{y:04}{m:02}01")
    }
}

/// The partitions this node knows to exist, by start.
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    known: Mutex<BTreeMap<i64, i64>>,
}

impl Partitions {
    fn covers(known: &BTreeMap<i64, i64>, ts: i64) -> bool {
        known.range(..=ts).next_back().is_some_and(|(_, &end)| ts < end)
    }

    /// The months of `ts` values not known to have a partition.
    pub(crate) fn missing(&self, ts: impl Iterator<Item = i64>) -> Vec<Month> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut months: Vec<Month> = Vec::new();
        for t in ts {
            if !Self::covers(&known, t) && !months.iter().any(|m| m.start <= t && t < m.end) {
                months.push(Month::of(t));
            }
        }
        months
    }

    /// Read the attached partitions' bounds from the catalog.
    pub(crate) async fn load(&self, pool: &PgPool) -> Result<(), StoreError> {
        let bounds: Vec<(String,)> = sqlx::query_as(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'positions'::regclass",
        )
        .fetch_all(pool)
        .await?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.clear();
        known.extend(bounds.iter().filter_map(|(b,)| parse_bound(b)));
        Ok(())
    }

    /// Make the partitions of `months` that do not exist yet.
    pub(crate) async fn create(&self, pool: &PgPool, months: &[Month]) -> Result<(), StoreError> {
        if months.is_empty() {
            return Ok(());
        }
        let mut tx = pool.begin().await?;
        // Wait for a partition change of another node rather than block ingest behind a lock
        // queue on `positions`: a batch that times out here is retried.
        sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK.0)
            .bind(LOCK.1)
            .execute(&mut *tx)
            .await?;
        for m in months {
            let table = m.table();
            if is_attached(&mut tx, &table).await? {
                continue;
            }
            // Names and bounds come from integers, never from input text.
            for ddl in [
                format!("CREATE TABLE IF NOT EXISTS {table} (LIKE positions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"),
                format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_device_seq ON {table} (device_id, seq)"),
                format!(
                    "ALTER TABLE positions ATTACH PARTITION {table} FOR VALUES FROM ({}) TO ({})",
                    m.start, m.end
                ),
            ] {
                sqlx::query(&ddl).execute(&mut *tx).await?;
            }
            tracing::info!(partition = %table, "created a positions partition");
        }
        tx.commit().await?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(months.iter().map(|m| (m.start, m.end)));
        Ok(())
    }
}

impl Partitions {
    /// Detach and drop the partitions wholly before `before`, each with its rows per
    /// organization (counted once it is detached, so no writer waits on the count); and the start
    /// of the oldest partition left.
    ///
    /// `DETACH ... CONCURRENTLY` takes no lock that blocks writers of other partitions; it cannot
    /// run inside a transaction. A detach cut off halfway is finished first (`FINALIZE`). The
    /// drop then holds the partition-change lock, so a partition a writer attached again
    /// meanwhile (a record from that month) is left for the next run.
    pub(crate) async fn drop_before(
        &self,
        pool: &PgPool,
        before: i64,
    ) -> Result<(Vec<(DroppedPartition, RowsByOrg)>, Option<i64>), StoreError> {
        let listed: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'positions'::regclass",
        )
        .fetch_all(pool)
        .await?;
        let mut dropped = Vec::new();
        let mut floor: Option<i64> = None;
        for (name, bound, pending) in listed {
            let Some((start, end)) = parse_bound(&bound) else {
                continue;
            };
            if end > before {
                floor = Some(floor.map_or(start, |f| f.min(start)));
                continue;
            }
            let table = quoted(&name);
            let detach = if pending { "FINALIZE" } else { "CONCURRENTLY" };
            sqlx::raw_sql(&format!("ALTER TABLE positions DETACH PARTITION {table} {detach}"))
                .execute(pool)
                .await?;
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(LOCK.0)
                .bind(LOCK.1)
                .execute(&mut *tx)
                .await?;
            if is_attached(&mut tx, &name).await? {
                floor = Some(floor.map_or(start, |f| f.min(start)));
                continue;
            }
            let by_org: RowsByOrg = sqlx::query_as(&format!(
                "SELECT da.org_id::text, COUNT(*) FROM {table} p \
                 LEFT JOIN device_assignments da ON da.device_id = p.device_id GROUP BY da.org_id"
            ))
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query(&format!("DROP TABLE {table}")).execute(&mut *tx).await?;
            tx.commit().await?;
            let rows = by_org.iter().map(|(_, n)| u64::try_from(*n).unwrap_or(0)).sum();
            tracing::info!(partition = %name, rows, "dropped a positions partition past the retention");
            dropped.push((DroppedPartition { name, rows }, by_org));
        }
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, &mut end| end > before);
        Ok((dropped, floor))
    }
}

/// Is table `name` a partition of `positions` now?
async fn is_attached(tx: &mut sqlx::PgConnection, name: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'positions'::regclass AND c.relname = $1)",
    )
    .bind(name)
    .fetch_one(tx)
    .await?)
}

/// `name` as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `FOR VALUES FROM ('1764547200000') TO ('1767225600000')` as `(start, end)`.
fn parse_bound(bound: &str) -> Option<(i64, i64)> {
    let digits: Vec<i64> = bound
        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter(|s| !s.is_empty() && s.chars().any(|c| c.is_ascii_digit()))
        .filter_map(|s| s.parse().ok())
        .collect();
    match digits[..] {
        [start, end] => Some((start, end)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months_in_utc() {
        assert_eq!(
            Month::of(0),
            Month {
                start: 0,
                end: 31 * DAY_MS
            }
        );
        // 2024-02-29T23:59:59.999Z: a leap February.
        let feb = Month::of(1_709_251_199_999);
        assert_eq!((feb.start, feb.end), (1_706_745_600_000, 1_709_251_200_000));
        assert_eq!(feb.table(), "positions_p20240201");
        assert_eq!(feb.next().table(), "positions_p20240301");
        // December rolls into the next year.
        let dec = Month::of(1_796_083_200_000);
        assert_eq!(dec.table(), "positions_p20261201");
        assert_eq!(dec.next().start, 1_798_761_600_000);
        // The protocol's largest ts still has a month.
        let last = Month::of((1 << 53) - 1);
        assert!(last.start < (1 << 53) && (1 << 53) - 1 < last.end);
        for ts in [0, 1, 86_399_999, 1_709_251_200_000, 1_798_761_599_999] {
            let m = Month::of(ts);
            assert!(m.start <= ts && ts < m.end, "{ts}");
            assert_eq!(Month::of(m.start), m);
            assert_eq!(Month::of(m.end - 1), m);
        }
    }

    #[test]
    fn jobs_lock_in_one_space() {
        let sql = super::super::TRY_JOB_LOCK.unwrap();
        assert!(sql.contains(&format!("({}, $1)", super::super::JOB_LOCKS)), "{sql}");
    }

    #[test]
    fn bounds_parse_from_the_catalog_text() {
        assert_eq!(
            parse_bound("FOR VALUES FROM ('1764547200000') TO ('1767225600000')"),
            Some((1_764_547_200_000, 1_767_225_600_000))
        );
        assert_eq!(parse_bound("DEFAULT"), None);
    }

    #[test]
    fn missing_months_are_those_without_a_known_partition() {
        let p = Partitions::default();
        let nov = Month::of(1_764_547_200_000);
        p.known.lock().unwrap().insert(nov.start, nov.end);
        let dec = nov.next();
        let got = p.missing([nov.start, nov.end - 1, dec.start, dec.start + 5, 0].into_iter());
        assert_eq!(got, [dec, Month::of(0)]);
    }
}
