#![doc = include_str!("../README.md")]

mod acks;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod management;
pub mod publisher;
pub mod queue_metrics;
pub mod topology;
pub mod trace_context;

pub use connection::{Connection, connect, redact_url};
pub use consumer::{
    ConsumerHealth, ConsumerOptions, Handler, IncomingMessage, Outcome, dead_letter_headers,
    retry_headers, run_consumer, run_consumer_with,
};
pub use error::{AmqpError, PublishError};
pub use management::queue_depth;
pub use publisher::{OutgoingMessage, PublishOptions, Publisher};
pub use topology::{declare_topology, queue_arguments};
pub use trace_context::{extract_context, inject_current_context};

/// The lapin version this crate is built on, re-exported so callers use the same types.
pub use lapin;
