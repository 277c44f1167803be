#![doc = include_str!("../README.md")]

pub mod env;
pub mod health;
pub mod shutdown;
pub mod telemetry;
pub mod tenants;

pub use shutdown::shutdown_token;

/// Every binary that links this crate allocates with jemalloc: the services allocate and free many
/// small buffers per message on several threads, where glibc's allocator spent a tenth of the
/// sender's CPU consolidating and unlinking chunks (mimalloc was as fast but kept 20-40 MiB more
/// resident per service).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
