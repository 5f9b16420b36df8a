//! The event processor: the [`rules`](super::rules) run over committed records, each event
//! stored once.
//!
//! **Once.** A device's cursor (the last record taken, and the rules' state) moves in the same
//! transaction that stores the events of the records it moved over, and only from where it was
//! read (a conditional update): a restart, a redelivery or a second node never takes a record
//! twice. The events table is unique on `(device, ts, seq, kind, subject)` as well.
//!
//! **In `ts` order.** Records are taken in `(ts, seq)` order, and only once they have *settled*:
//! received at least `settle` ago. A backlog that arrives out of order within that time is taken
//! in order; a record that arrives later than that behind its device's cursor is stored but gives
//! no event (the cursor never moves back: events already delivered cannot be taken back).
//!
//! **One node.** On PostgreSQL one node holds the events lock and computes; the others keep only
//! a flag. A node that takes the lock over, and every node now and then, looks at every device
//! (a full pass), so nothing waits on a notification that was lost.

use super::rules::{DeviceState, Event, Fence, Record, Rules};
use crate::metrics::Metrics;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use trackgate_store::{EventCursor, EventInput, JobLock, NewEvent, Outcome, Row, Store, StoreError};

/// How the processor runs (`[events]` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct EventSettings {
    pub enabled: bool,
    /// A record is taken once it was received this long ago.
    pub settle: Duration,
    /// How often dirty devices are looked at.
    pub interval: Duration,
    /// How often every device is looked at, beside the dirty ones.
    pub full_pass_every: Duration,
    /// The geofence margin and the jump speed; the limits come from each organization.
    pub rules: Rules,
}

/// Records read per device and step.
const RECORDS_PER_STEP: u32 = 1000;
/// Steps one device may take in one pass.
const STEPS_PER_PASS: usize = 20;

/// What a device has left after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// Nothing: every record stored is taken.
    Nothing,
    /// Records not settled yet: the next pass looks again.
    Settling,
    /// More than one step reads: the next step goes on.
    More,
}
/// How often devices are checked for silence.
const STALE_EVERY: Duration = Duration::from_secs(5);
/// How long organizations' geofences are kept before they are read again.
const FENCES_FOR: Duration = Duration::from_secs(5);

/// Devices with records committed since the processor last looked.
#[derive(Clone, Default)]
pub struct Dirty {
    inner: Arc<Mutex<DirtyInner>>,
}

#[derive(Default)]
struct DirtyInner {
    devices: BTreeSet<String>,
    /// Look at every device: notifications may have been lost.
    all: bool,
}

impl Dirty {
    fn lock(&self) -> std::sync::MutexGuard<'_, DirtyInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mark the devices of a committed batch that had rows stored.
    pub fn mark_rows(&self, rows: &[Row], outcomes: &[Outcome]) {
        let mut d = self.lock();
        for (r, _) in rows.iter().zip(outcomes).filter(|(_, o)| **o == Outcome::Inserted) {
            if !d.devices.contains(&r.device_id) {
                d.devices.insert(r.device_id.clone());
            }
        }
    }

    /// Mark devices by id.
    pub fn mark<'a>(&self, devices: impl IntoIterator<Item = &'a str>) {
        let mut d = self.lock();
        for id in devices {
            if !d.devices.contains(id) {
                d.devices.insert(id.to_owned());
            }
        }
    }

    /// Notifications may have been lost: look at every device.
    pub fn mark_all(&self) {
        self.lock().all = true;
    }

    fn take(&self) -> (BTreeSet<String>, bool) {
        let mut d = self.lock();
        (std::mem::take(&mut d.devices), std::mem::take(&mut d.all))
    }
}

/// Compute events until `stop`.
pub async fn run(store: Store, dirty: Dirty, metrics: Metrics, settings: EventSettings, stop: CancellationToken) {
    let mut p = Processor {
        store,
        metrics,
        settings,
        fences: HashMap::new(),
        fences_read: None,
    };
    let mut lock: Option<JobLock> = None;
    let mut last_full: Option<Instant> = None;
    let mut last_stale: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(p.settings.interval) => {}
        }
        let held = match lock.as_mut() {
            Some(l) => l.held().await,
            None => false,
        };
        if !held {
            lock = match p.store.take_events_lock().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the events lock; trying again");
                    p.metrics.event_failures.with_label_values(&["lock"]).inc();
                    None
                }
            };
            // Whoever computed before may have left devices behind: look at all of them.
            last_full = None;
        }
        p.metrics.event_processor.set(i64::from(lock.is_some()));
        let (mut devices, all) = dirty.take();
        if lock.is_none() {
            // Another node computes; this node looks at everything when it takes over.
            continue;
        }
        if all || last_full.is_none_or(|t| t.elapsed() >= p.settings.full_pass_every) {
            match p.store.devices_behind_events().await {
                Ok(behind) => {
                    devices.extend(behind);
                    last_full = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the devices behind on events; trying again");
                    p.metrics.event_failures.with_label_values(&["records"]).inc();
                    dirty.mark_all();
                }
            }
        }
        for device in &devices {
            if stop.is_cancelled() {
                dirty.mark([device.as_str()]);
                continue;
            }
            // A backlog is taken step after step, up to a bound per pass, so that one device's
            // long backlog does not hold up the others.
            for _ in 0..STEPS_PER_PASS {
                match p.step(device).await {
                    Ok(Left::Nothing) => break,
                    Ok(Left::Settling) => {
                        dirty.mark([device.as_str()]);
                        break;
                    }
                    Ok(Left::More) => dirty.mark([device.as_str()]),
                    Err(e) => {
                        tracing::warn!(device = %device, error = %e, "cannot compute a device's events; trying again");
                        p.metrics.event_failures.with_label_values(&["records"]).inc();
                        dirty.mark([device.as_str()]);
                        break;
                    }
                }
            }
        }
        if last_stale.is_none_or(|t| t.elapsed() >= STALE_EVERY) {
            last_stale = Some(Instant::now());
            if let Err(e) = p.stale_pass().await {
                tracing::warn!(error = %e, "cannot look for silent devices; trying again");
                p.metrics.event_failures.with_label_values(&["stale"]).inc();
            }
        }
    }
    p.metrics.event_processor.set(0);
    if let Some(l) = lock {
        l.release().await;
    }
}

struct Processor {
    store: Store,
    metrics: Metrics,
    settings: EventSettings,
    /// Each organization's geofences, read at `fences_read`.
    fences: HashMap<String, Arc<Vec<Fence>>>,
    fences_read: Option<Instant>,
}

impl Processor {
    async fn fences(&mut self, org: &str) -> Result<Arc<Vec<Fence>>, StoreError> {
        if self.fences_read.is_none_or(|t| t.elapsed() >= FENCES_FOR) {
            let mut by_org: HashMap<String, Vec<Fence>> = HashMap::new();
            for g in self.store.geofences(None).await? {
                let shape = g.area.shape();
                by_org.entry(g.org_id).or_default().push(Fence { id: g.id, shape });
            }
            self.fences = by_org.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
            self.fences_read = Some(Instant::now());
        }
        Ok(self.fences.get(org).cloned().unwrap_or_default())
    }

    /// Take the settled records of `device` after its cursor, store their events; say what is
    /// left.
    async fn step(&mut self, device: &str) -> Result<Left, StoreError> {
        // A device assigned to no organization has nobody to tell: it is left until it is.
        let Some(subject) = self.store.event_subject(device).await? else {
            return Ok(Left::Nothing);
        };
        let fences = self.fences(&subject.org_id).await?;
        let rules = Rules {
            battery_low: subject.limits.battery_low,
            temperature: subject.limits.temperature,
            ..self.settings.rules.clone()
        };
        let cursor = self.store.event_cursor(device).await?;
        let from = cursor.as_ref().map(|c| (c.ts, c.seq));
        let mut state = restore(device, cursor.as_ref());
        let records = self.store.records_after(device, from, RECORDS_PER_STEP).await?;
        let settled_before =
            trackgate_store::now_ms() - i64::try_from(self.settings.settle.as_millis()).unwrap_or(i64::MAX);
        let mut left = if records.len() == RECORDS_PER_STEP as usize {
            Left::More
        } else {
            Left::Nothing
        };
        let mut events = Vec::new();
        for r in &records {
            if r.received_ms > settled_before {
                left = Left::Settling;
                break;
            }
            for e in state.step(&rules, &fences, &record(r)) {
                events.push(new_event(r.ts, r.seq, r.lat.zip(r.lon), &e));
            }
        }
        let Some((ts, seq)) = state.last().filter(|&l| Some(l) != from) else {
            return Ok(left);
        };
        let to = EventCursor {
            ts,
            seq,
            state: serde_json::to_string(&state).map_err(|e| StoreError::Inconsistent(e.to_string()))?,
            stale: state.is_stale(),
        };
        if !self
            .store
            .save_events(device, &subject.org_id, from, &to, &events)
            .await?
        {
            // Another node moved the cursor meanwhile: look again from where it is now.
            return Ok(Left::More);
        }
        self.count(&events);
        Ok(left)
    }

    /// A `stale` event for every device silent past its limit, once per silence.
    async fn stale_pass(&mut self) -> Result<(), StoreError> {
        let now = trackgate_store::now_ms();
        for device in self.store.devices_gone_stale(now).await? {
            let (Some(subject), Some(cursor)) = (
                self.store.event_subject(&device).await?,
                self.store.event_cursor(&device).await?,
            ) else {
                continue;
            };
            let Some(after_ms) = subject.limits.stale_after_ms else {
                continue;
            };
            // A record stored and not taken yet (still settling) is not silence.
            if !self
                .store
                .records_after(&device, Some((cursor.ts, cursor.seq)), 1)
                .await?
                .is_empty()
            {
                continue;
            }
            let mut state = restore(&device, Some(&cursor));
            let events: Vec<NewEvent> = state
                .check_stale(now, after_ms)
                .map(|e| new_event(cursor.ts, cursor.seq, None, &e))
                .into_iter()
                .collect();
            let to = EventCursor {
                state: serde_json::to_string(&state).map_err(|e| StoreError::Inconsistent(e.to_string()))?,
                stale: true,
                ..cursor.clone()
            };
            if self
                .store
                .save_events(&device, &subject.org_id, Some((cursor.ts, cursor.seq)), &to, &events)
                .await?
            {
                self.count(&events);
            }
        }
        Ok(())
    }

    fn count(&self, events: &[NewEvent]) {
        for e in events {
            self.metrics.events.with_label_values(&[e.kind]).inc();
        }
    }
}

/// The rules' state at a cursor: a state kept in an older form, or none, starts empty there.
fn restore(device: &str, cursor: Option<&EventCursor>) -> DeviceState {
    let Some(c) = cursor else {
        return DeviceState::default();
    };
    let state = serde_json::from_str::<DeviceState>(&c.state).unwrap_or_else(|e| {
        tracing::warn!(device = %device, error = %e, "a device's event state does not parse; starting it afresh");
        DeviceState::default()
    });
    state.resume((c.ts, c.seq))
}

fn record(r: &EventInput) -> Record {
    Record {
        ts: r.ts,
        seq: r.seq,
        position: r.lon.zip(r.lat).map(|(lon, lat)| [lon, lat]),
        bat: r.bat,
        tmp: r.tmp,
    }
}

fn new_event(ts: i64, seq: i64, lat_lon: Option<(f64, f64)>, e: &Event) -> NewEvent {
    NewEvent {
        ts,
        seq,
        kind: e.kind(),
        subject: e.subject().to_owned(),
        detail: serde_json::to_string(e).unwrap_or_else(|_| "{}".to_owned()),
        lat: lat_lon.map(|(lat, _)| lat),
        lon: lat_lon.map(|(_, lon)| lon),
    }
}
