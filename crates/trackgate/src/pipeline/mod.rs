//! The write path between the sources and the store:
//!
//! ```text
//! source ──try_submit/submit──> Queue (bounded in rows) ──> Writer: batch (max rows | linger)
//!        <── ack (outcomes) ────────────────────────────── one transaction ── commit
//! ```
//!
//! A [`Submission`] is one request's (or one MQTT message's) verified rows with the handle that
//! answers it. The queue admits a submission whole or not at all, so an HTTPS request that does
//! not fit is answered 503 with nothing of it stored. Submissions are never split: a request's
//! rows commit in one transaction. Acks are released only after the commit, in queue order.

mod health;
mod queue;
mod writer;

pub use health::{DiskWatch, Refusal, StoreHealth};
pub use queue::{Ack, Queue, QueueClosed, Refused, Source, Submission, WriteFailed};
pub use writer::{Writer, WriterSettings};

#[cfg(test)]
mod tests;
