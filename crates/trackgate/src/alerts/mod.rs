//! Alerts: the events organizations subscribed to, delivered. Rules (`trackgate-store`'s
//! `alerts`) say which events go where; a delivery is queued in the database in the transaction
//! that stores its event (the outbox), and one node at a time (a database lock) works the
//! outbox off: at least once, in order per rule and device, retried with exponential backoff
//! until `alerts.retry_for_secs` have passed since the event, then given up on (and counted).
//!
//! - [`destination`]: where a webhook may go (HTTPS; not this machine's networks: SSRF).
//! - [`webhook`]: the signed POST.
//! - [`email`]: a message that says only what kind of thing happened, over SMTP with TLS.

pub mod destination;
pub mod email;
pub mod webhook;

use crate::metrics::Metrics;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use trackgate_store::alerts::{Channel, Delivery, Outcome};
use trackgate_store::{JobLock, Store};

/// How alerts are delivered (`[alerts]` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// Webhooks to loopback, private and reserved addresses (for tests and closed networks).
    pub allow_private_destinations: bool,
    /// A CA trusted for webhook receivers beside the system's roots.
    pub webhook_ca: Option<PathBuf>,
    pub webhook_timeout: Duration,
    /// How long after its event a delivery is still tried.
    pub retry_for: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// How often the outbox is looked at.
    pub interval: Duration,
    /// The SMTP server e-mail alerts go through; `None`: no e-mail alerts.
    pub smtp: Option<email::SmtpSettings>,
    /// The map page, which e-mails link to.
    pub page_url: String,
    /// E-mails one address gets in an hour, at most; the rest are suppressed.
    pub email_per_recipient_per_hour: u32,
}

/// Deliveries read and sent at a time (each the oldest waiting of its rule and device).
const BATCH: u32 = 64;

/// The wait before attempt `attempts + 1`: 1 s, doubling, at most `max`.
pub fn backoff(attempts: i64, max: Duration) -> Duration {
    let secs = 1u64
        .checked_shl(u32::try_from(attempts.clamp(0, 30)).unwrap_or(30))
        .unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(max)
}

/// How an attempt ended.
#[derive(Debug)]
enum Attempt {
    Sent(Result<(), String>),
    /// Not sent, on purpose.
    Suppressed(String),
}

/// What to record after an attempt that ended in `result`, at `now`.
pub fn outcome(d: &Delivery, result: Result<(), String>, now: i64, s: &AlertSettings) -> Outcome {
    let error = match result {
        Ok(()) => return Outcome::Delivered,
        Err(e) => e,
    };
    let next_ms = now + i64::try_from(backoff(d.attempts, s.max_backoff).as_millis()).unwrap_or(i64::MAX);
    let deadline = d.created_ms + i64::try_from(s.retry_for.as_millis()).unwrap_or(i64::MAX);
    if next_ms > deadline {
        Outcome::Failed {
            error: format!("gave up after {} attempts: {error}", d.attempts + 1),
        }
    } else {
        Outcome::Retry { next_ms, error }
    }
}

/// Deliver alerts until `stop`.
pub async fn run(store: Store, metrics: Metrics, settings: AlertSettings, stop: CancellationToken) {
    let client = match webhook::client(
        settings.webhook_ca.as_deref(),
        settings.webhook_timeout,
        settings.allow_private_destinations,
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot make the webhook client; alerts are not delivered");
            return;
        }
    };
    let mailer = match settings
        .smtp
        .as_ref()
        .map(|s| email::Mailer::new(s, &settings.page_url))
        .transpose()
    {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot set up e-mail (`alerts.smtp`); alerts are not delivered");
            return;
        }
    };
    let senders = Senders {
        client,
        mailer,
        store: store.clone(),
    };
    let mut lock: Option<JobLock> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        let held = match lock.as_mut() {
            Some(l) => l.held().await,
            None => false,
        };
        if !held {
            lock = store.take_deliveries_lock().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot take the deliveries lock; trying again");
                None
            });
        }
        metrics.alert_deliverer.set(i64::from(lock.is_some()));
        if lock.is_none() {
            continue;
        }
        // Work the outbox off while anything is due.
        while !stop.is_cancelled() {
            let due = match store.due_deliveries(trackgate_store::now_ms(), BATCH).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the alert outbox; trying again");
                    break;
                }
            };
            if due.is_empty() {
                break;
            }
            // The oldest waiting delivery of each rule and device: sent together.
            let sent = futures_util::future::join_all(due.iter().map(|d| senders.attempt(d, &settings))).await;
            for (d, attempt) in due.iter().zip(sent) {
                let o = match attempt {
                    Attempt::Sent(result) => outcome(d, result, trackgate_store::now_ms(), &settings),
                    Attempt::Suppressed(reason) => Outcome::Suppressed { reason },
                };
                let label = match &o {
                    Outcome::Delivered => "delivered",
                    Outcome::Retry { error, .. } => {
                        tracing::info!(org = %d.org_id, rule = %d.rule_id, delivery = d.id, error = %error, "alert not delivered; it is tried again");
                        "retry"
                    }
                    Outcome::Failed { error } => {
                        tracing::warn!(org = %d.org_id, rule = %d.rule_id, delivery = d.id, error = %error, "alert given up on");
                        "failed"
                    }
                    Outcome::Suppressed { .. } => "suppressed",
                };
                metrics
                    .alert_deliveries
                    .with_label_values(&[d.channel.as_str(), label])
                    .inc();
                if let Err(e) = store.record_delivery(d.id, &o).await {
                    tracing::warn!(error = %e, delivery = d.id, "cannot record a delivery; it may be sent again");
                }
            }
        }
        if let Ok(n) = store.pending_deliveries().await {
            metrics.alert_outbox_pending.set(n);
        }
    }
    metrics.alert_deliverer.set(0);
    if let Some(l) = lock {
        l.release().await;
    }
}

/// What sends deliveries: the webhook client and, when configured, the mailer.
struct Senders {
    client: reqwest::Client,
    mailer: Option<email::Mailer>,
    store: Store,
}

impl Senders {
    async fn attempt(&self, d: &Delivery, s: &AlertSettings) -> Attempt {
        match d.channel {
            Channel::Webhook => Attempt::Sent(webhook::send(&self.client, d, s.allow_private_destinations).await),
            Channel::Email => {
                let Some(mailer) = &self.mailer else {
                    return Attempt::Sent(Err("e-mail is not configured (`alerts.smtp`)".into()));
                };
                let hour_ago = trackgate_store::now_ms() - 3_600_000;
                match self.store.emails_sent_since(&d.target, hour_ago).await {
                    Ok(n) if n >= i64::from(s.email_per_recipient_per_hour) => Attempt::Suppressed(format!(
                        "{n} e-mails to this address in the last hour: over `alerts.email_per_recipient_per_hour`"
                    )),
                    Ok(_) => Attempt::Sent(mailer.send(d).await),
                    Err(e) => Attempt::Sent(Err(format!("counting the recipient's e-mails: {e}"))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let max = Duration::from_secs(600);
        let waits: Vec<u64> = (0..12).map(|a| backoff(a, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(backoff(1000, max), max);
    }
}
