//! `wactl`, the ops CLI: everything an SRE does by hand goes through here instead of ad-hoc AMQP
//! or SQL scripts. The logic lives in this library so tests drive it against the real broker and
//! database; `main.rs` only parses arguments and prints.

pub mod commands;
pub mod dlq;
