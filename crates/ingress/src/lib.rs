#![doc = include_str!("../README.md")]

pub mod config;
pub mod error;
pub mod ingest;
pub mod instruments;
pub mod routes;
pub mod signature;
pub mod startup;
pub mod webhook;

pub use config::Config;
pub use startup::App;

/// Service name in logs and traces.
pub const SERVICE: &str = "ingress";
