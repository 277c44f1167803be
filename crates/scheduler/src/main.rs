//! `reminder-scheduler`: plans and sends payment reminders, payment confirmations, departure
//! broadcasts and keyword auto-replies (see the crate docs). Consumes `scheduler.events`, publishes
//! send-jobs to `whatsapp.commands`; stops on SIGTERM/SIGINT after the current tick and the
//! in-flight events.

use wa_scheduler::{App, Config, SERVICE};
use wa_service::{shutdown_token, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init(SERVICE)?;
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("configuration error: {error}");
            eprintln!("reminder-scheduler: {error}");
            std::process::exit(2);
        }
    };
    let app = App::build(config).await?;
    tracing::info!(addr = %app.health_addr(), "reminder-scheduler started");
    app.run_until(shutdown_token()).await
}
