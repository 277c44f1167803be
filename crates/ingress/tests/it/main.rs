//! Integration tests of ingress against the real broker (a vhost per test); one binary.
#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a failing test should panic with context"
)]

mod binary;
mod helpers;
mod parser_fuzz;
mod payloads;
mod trace_propagation;
mod webhook;
