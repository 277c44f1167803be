//! Outbound HTTP clients.

pub mod graph;
