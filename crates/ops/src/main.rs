//! `wactl`: the ops CLI. Reads `AMQP_URL` and `DATABASE_URL` like the services (flags override).

use clap::Parser;
use wa_ops::commands;

/// Operate the WhatsApp integration: migrations, queues, dead letters, tenants, erasure.
#[derive(Parser)]
#[command(name = "wactl", version, about, propagate_version = true)]
struct Cli {
    /// Broker URL.
    #[arg(
        long,
        global = true,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    amqp_url: String,
    /// PostgreSQL URL.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/whatsapp",
        hide_env_values = true
    )]
    database_url: String,
    #[command(subcommand)]
    command: commands::Command,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let _telemetry = wa_service::telemetry::init("wactl");
    let urls = commands::Urls {
        amqp: cli.amqp_url,
        database: cli.database_url,
    };
    if let Err(err) = commands::run(cli.command, &urls).await {
        eprintln!("wactl: {err:#}");
        std::process::exit(1);
    }
}
