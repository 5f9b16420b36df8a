//! The trackgate daemon: signed tracker telemetry in over HTTPS, verified, batched into SQL,
//! acknowledged only after commit. See `docs/PROTOCOL.md` for the wire contract and
//! `DESIGN.md`-style notes in the crate modules.
//!
//! # Layout
//!
//! In the order a record travels:
//!
//! - [`listener`]: accept TCP, admit each connection under the caps (total and per address),
//!   complete TLS 1.2+ ([`tls`]) within a deadline, close idle connections. Shared by every
//!   listener.
//! - [`sources`]: where records come in. [`sources::http`] serves `POST /v1/records` (request
//!   signature, the key's rate ([`ratelimit`]), a body deadline and a budget of unverified bytes);
//!   [`sources::mqtt`] is trackgate's own MQTT endpoint (devices log in and publish directly) and
//!   the client for an external broker. Failed authentications are throttled per address
//!   ([`throttle`]).
//! - [`verify`]: every envelope parsed and checked against its device's keys from the [`keys`]
//!   cache; what passes becomes a row.
//! - [`pipeline`]: the bounded queue, the one writer that batches rows into transactions and
//!   releases acknowledgements (a 200, a PUBACK) after commit, and the store's health, which
//!   refuses new work while the database stalls, fails or runs out of disk.
//! - the store (crate `trackgate-store`): SQL.
//! - [`ops`] and [`metrics`]: `/metrics`, `/healthz`, `/readyz` on their own listener.
//!
//! Beside them, for operators: [`auth`] (OpenID Connect sign-in), [`api`] (the location and admin
//! API, fed live by [`feed`]), [`web`] (the map page at `/`), [`export`] (an organization's
//! data as an archive), [`events`] (stored records turned into events, after commit) and
//! [`alerts`] (events delivered to organizations' webhooks, from a durable outbox).
//!
//! Around them: [`config`] (TOML + environment, validated), [`app`] (wiring and graceful
//! shutdown) and [`cli`] (serve and provisioning).
#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod events;
pub mod export;
pub mod feed;
pub(crate) mod fsutil;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod mosquitto;
pub mod ops;
pub mod pipeline;
pub mod ratelimit;
pub mod simplify;
pub mod sources;
pub mod throttle;
pub mod tls;
pub mod verify;
pub mod web;
