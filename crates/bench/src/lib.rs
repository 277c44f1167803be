//! Benchmarks of every service, each measured beside a baseline taken in the same run (these
//! machines are noisy, so only ratios travel between machines), and the report writer.

pub mod ingress;
pub mod memory;
pub mod report;
pub mod scheduler;
pub mod sender;
pub mod sync;
