//! `graph-mock`: a fake of Meta's WhatsApp Cloud (Graph) API for the demo, tests and benchmarks.
//!
//! Reads `GRAPH_MOCK_*` variables (flags override), serves the Graph paths and the `/_mock` control API, calls the
//! configured webhook back with signed status and inbound payloads, and stops gracefully on SIGTERM or SIGINT.
//! A bad variable ends the process with a non-zero status and a message naming it.

use anyhow::Context;
use clap::Parser;
use wa_graph_mock::{Cli, spawn, telemetry};
use wa_service::shutdown::stop_requested;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let config = Cli::parse()
        .into_config()
        .context("invalid graph-mock configuration")?;
    let mock = spawn(config).await?;
    let stop = stop_requested();
    tracing::info!(base_url = mock.base_url(), "graph-mock ready");
    stop.await;
    tracing::info!("shutting down");
    mock.stop().await;
    Ok(())
}
