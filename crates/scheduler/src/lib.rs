#![doc = include_str!("../README.md")]

pub mod clock;
pub mod config;
pub mod error;
pub mod handler;
pub mod planning;
pub mod scheduler;
pub mod startup;
pub mod telemetry;
pub mod templates;

pub use clock::{Clock, SystemClock, TestClock};
pub use config::{Config, GraphConfig, ReminderConfig};
pub use handler::EventHandler;
pub use scheduler::{Scheduler, TickReport};
pub use startup::App;

/// Service name in logs, traces and connection names.
pub const SERVICE: &str = "reminder-scheduler";
