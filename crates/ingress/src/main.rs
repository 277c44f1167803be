//! `ingress`: Meta's webhook endpoint. Verifies `X-Hub-Signature-256` over the raw body, splits each
//! webhook into one event per item and publishes them to `whatsapp.events` with publisher confirms
//! before answering 200; answers 503 when the broker cannot confirm, so Meta redelivers. Reads only
//! the environment; exits non-zero with a one-line reason on bad configuration. On SIGTERM/SIGINT it
//! stops accepting, finishes in-flight requests and closes its broker connection.

use std::process::ExitCode;

use wa_ingress::{App, Config, SERVICE};

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = match wa_service::telemetry::init(SERVICE) {
        Ok(guard) => guard,
        Err(err) => return fail(&err),
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => return fail(&err.into()),
    };
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(err) => return fail(&err),
    };
    match app.run_until(wa_service::shutdown_token()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    tracing::error!(error = format!("{err:#}"), "ingress failed");
    eprintln!("ingress: {err:#}");
    ExitCode::FAILURE
}
