//! Integration tests of graph-mock: each test spawns its own mock on a random port and talks HTTP to it.

#![expect(
    clippy::expect_used,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

mod binary;
mod control;
mod helpers;
mod inbound;
mod media;
mod messages;
mod scripted;
mod templates;
mod throughput;
mod webhooks;
