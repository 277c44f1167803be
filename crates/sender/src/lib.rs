#![doc = include_str!("../README.md")]

pub mod batch;
pub mod classify;
pub mod clients;
pub mod config;
pub mod deps;
pub mod dispatch;
pub mod events;
pub mod intake;
pub mod lanes;
pub mod lease;
pub mod limiter;
pub mod sequencer;
pub mod startup;

pub use config::Config;
pub use startup::App;

/// Service name for telemetry.
pub const SERVICE: &str = "sender";
