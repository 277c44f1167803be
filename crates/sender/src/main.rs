//! `sender`: consumes send-jobs (`whatsapp.commands`/`send`), enforces the per-number cap across
//! replicas, calls the Graph API, classifies errors, retries through delay queues and publishes
//! `outbound.accepted` / `outbound.failed`. Configuration from the environment only (exits
//! non-zero naming the variable when wrong); SIGTERM/SIGINT stops taking work, finishes in-flight
//! jobs and acks nothing unfinished.

use wa_sender::{App, Config, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = wa_service::telemetry::init(SERVICE)?;
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            eprintln!("sender: {error}");
            std::process::exit(2);
        }
    };
    let app = App::build(config).await?;
    app.run_until(wa_service::shutdown::shutdown_token()).await
}
