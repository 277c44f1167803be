//! `conversation-sync`: persists the two-way WhatsApp history (see the library docs). Reads its
//! configuration from the environment, exits non-zero with a one-line reason when it is wrong,
//! and shuts down gracefully on SIGTERM/SIGINT (nothing unfinished is acked).

use wa_service::shutdown_token;
use wa_sync::{App, Config, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = wa_service::telemetry::init(SERVICE)?;
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            eprintln!("{SERVICE}: {error}");
            std::process::exit(2);
        }
    };
    let app = App::build(config).await?;
    tracing::info!(addr = %app.http_addr(), "conversation-sync started");
    app.run_until(shutdown_token()).await
}
