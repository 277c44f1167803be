//! conversation-sync: the complete, private, two-way conversation history with every jamaah.
//!
//! Consumes `sync.events` (inbound messages and statuses, the sender's outcomes, the platform's
//! jamaah directory and erasure requests), persists them in batches with per-event acks after the
//! commit, publishes `outbound.status` steps and `agent.notification`s through an outbox, downloads
//! inbound media, encrypts bodies and files at rest, enforces retention and erasure, and serves the
//! read API. See `README.md` of the workspace and `../shared/contracts.md`.

pub mod api;
pub mod config;
pub mod crypto;
pub mod event;
pub mod ingest;
pub mod media;
pub mod outbox;
pub mod retention;
pub mod send_trace;
pub mod startup;
pub mod store;

pub use config::Config;
pub use startup::App;

/// The service name in logs, traces and metrics.
pub const SERVICE: &str = "conversation-sync";
