//! The whole system as real processes: a `Stack` starts graph-mock and every service binary with a
//! coherent configuration on its own RabbitMQ vhost and PostgreSQL database, waits until each is
//! ready, and stops them gracefully (SIGTERM). Used by `make demo`, `make run`, the end-to-end
//! tests and the chaos test.

pub mod chaos;
pub mod scenario;
pub mod stack;
