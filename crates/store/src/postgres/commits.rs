//! Other nodes' commits, for the live streams: each batch that stores positions sends, in its
//! transaction, a notification naming the seq ranges it stored per device (so it is delivered
//! only if the batch commits, and stays far under NOTIFY's 8000-byte payload limit: a batch of
//! many devices sends several). A node with live streams reads those positions back by
//! `(device_id, seq)`. A node's own notifications come back to it too, and are skipped.
//!
//! Payload: `<node id>|<device>,<min seq>,<max seq>;<device>,...` (device ids are
//! `[A-Za-z0-9._-]`, so no separator can occur in one).

use crate::StoreError;
use crate::model::{Outcome, Row};
use sqlx::postgres::{PgListener, PgPool};
use std::collections::HashMap;

pub(crate) const CHANNEL: &str = "trackgate_commits";

/// Well under PostgreSQL's 8000-byte limit on a notification's payload.
const MAX_PAYLOAD: usize = 7000;

/// Positions of one device stored by one commit: `device`, seqs `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRange {
    pub device: String,
    pub first: i64,
    pub last: i64,
}

/// The payloads announcing the rows a batch stored, positioned or not (the live feed reads back
/// the positioned ones, the event processor looks at every device named).
pub(crate) fn payloads(node: &str, rows: &[Row], outcomes: &[Outcome]) -> Vec<String> {
    let mut ranges: HashMap<&str, (i64, i64)> = HashMap::new();
    for (r, _) in rows.iter().zip(outcomes).filter(|(_, o)| **o == Outcome::Inserted) {
        let e = ranges.entry(r.device_id.as_str()).or_insert((r.seq, r.seq));
        e.0 = e.0.min(r.seq);
        e.1 = e.1.max(r.seq);
    }
    let mut out = Vec::new();
    let mut current = String::new();
    for (device, (first, last)) in ranges {
        let item = format!("{device},{first},{last}");
        if !current.is_empty() && current.len() + 1 + item.len() > MAX_PAYLOAD {
            out.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current = format!("{node}|{item}");
        } else {
            current.push(';');
            current.push_str(&item);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The ranges of a payload from another node; `None` for this node's own or a payload not
/// understood.
fn parse(node: &str, payload: &str) -> Option<Vec<SeqRange>> {
    let (from, items) = payload.split_once('|')?;
    if from == node {
        return None;
    }
    items
        .split(';')
        .map(|item| {
            let mut it = item.split(',');
            let (device, first, last) = (it.next()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
            Some(SeqRange {
                device: device.to_owned(),
                first,
                last,
            })
        })
        .collect()
}

/// What following the other nodes' commits yields.
#[derive(Debug)]
pub enum Followed {
    /// Positions another node committed.
    Stored(Vec<SeqRange>),
    /// The connection was lost and made again: notifications in between are lost.
    Gap,
}

/// The other nodes' commits, as they happen.
pub struct CommitFollower {
    listener: PgListener,
    node: String,
}

impl CommitFollower {
    pub(crate) async fn start(pool: &PgPool, node: &str) -> Result<CommitFollower, StoreError> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(CommitFollower {
            listener,
            node: node.to_owned(),
        })
    }

    /// The next commit of another node, or a gap. After a gap (or an error: the database is
    /// unreachable) the next call connects again.
    pub async fn next(&mut self) -> Result<Followed, StoreError> {
        loop {
            match self.listener.try_recv().await? {
                None => return Ok(Followed::Gap),
                Some(n) => {
                    if let Some(ranges) = parse(&self.node, n.payload()) {
                        return Ok(Followed::Stored(ranges));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dev: &str, seq: i64, positioned: bool) -> Row {
        crate::batch::tests::row(dev, seq, 0, positioned)
    }

    #[test]
    fn payloads_name_the_rows_stored_and_stay_under_the_limit() {
        let rows = [
            row("a", 3, true),
            row("a", 9, true),
            row("a", 12, false),
            row("b", 1, true),
        ];
        let out = payloads(
            "n1",
            &rows,
            &[
                Outcome::Inserted,
                Outcome::Inserted,
                Outcome::Inserted,
                Outcome::Duplicate,
            ],
        );
        assert_eq!(out, ["n1|a,3,12"], "positioned or not; not what was a duplicate");
        assert_eq!(parse("n1", &out[0]), None, "a node's own commits are skipped");
        assert_eq!(
            parse("n2", &out[0]),
            Some(vec![SeqRange {
                device: "a".into(),
                first: 3,
                last: 12
            }])
        );

        let many: Vec<Row> = (0..5000).map(|i| row(&format!("device-{i:05}"), i, true)).collect();
        let out = payloads("n1", &many, &vec![Outcome::Inserted; many.len()]);
        assert!(out.len() > 1);
        assert!(
            out.iter().all(|p| p.len() <= MAX_PAYLOAD),
            "{:?}",
            out.iter().map(String::len).max()
        );
        let back: usize = out.iter().map(|p| parse("n2", p).unwrap().len()).sum();
        assert_eq!(back, 5000);
    }
}
