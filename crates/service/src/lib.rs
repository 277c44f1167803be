#![doc = include_str!("../README.md")]

pub mod env;
pub mod health;
pub mod shutdown;
pub mod telemetry;
pub mod tenants;

pub use shutdown::shutdown_token;
