//! Integration tests of wa_amqp against the local RabbitMQ; every test runs in a vhost of its own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

mod broker_behaviour;
mod consumer;
mod helpers;
mod publisher;
mod recovery;
mod topology;
