//! `wa-chaos` (`make chaos`): the whole system under load while the sender and conversation-sync
//! are killed, the broker and the database restart and the Graph API misbehaves; then a
//! reconciliation that exits non-zero on any loss, duplicate or stuck message.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use wa_demo::chaos::{self, ChaosConfig};

/// Command line of the chaos run.
#[derive(Parser)]
#[command(about = "Fault injection under load, then reconciliation")]
struct Args {
    /// Seconds of load; the faults are spread over it.
    #[arg(long, default_value_t = 100)]
    load_secs: u64,
    /// Send-jobs per second.
    #[arg(long, default_value_t = 20)]
    jobs_per_second: u32,
    /// Inbound webhooks per second.
    #[arg(long, default_value_t = 8)]
    inbound_per_second: u32,
    /// Longest wait, in seconds, for the system to settle after the load.
    #[arg(long, default_value_t = 180)]
    settle_secs: u64,
    /// First of the four service ports.
    #[arg(long, default_value_t = 18190)]
    base_port: u16,
    /// AMQP port of the private RabbitMQ node (management +10000, distribution +20000).
    #[arg(long, default_value_t = 5673)]
    amqp_port: u16,
    /// Port of the private PostgreSQL.
    #[arg(long, default_value_t = 5433)]
    postgres_port: u16,
    /// Logs and broker data.
    #[arg(long, default_value = ".chaos")]
    work_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = ChaosConfig {
        work_dir: args.work_dir,
        base_port: args.base_port,
        amqp_port: args.amqp_port,
        postgres_port: args.postgres_port,
        load: Duration::from_secs(args.load_secs),
        jobs_per_second: args.jobs_per_second.max(1),
        inbound_per_second: args.inbound_per_second.max(1),
        settle: Duration::from_secs(args.settle_secs),
    };
    let report = chaos::run(config).await?;
    // The report is the run's output (service logs go to the work directory).
    std::io::Write::write_all(&mut std::io::stdout().lock(), report.render().as_bytes())?;
    if !report.passed() {
        anyhow::bail!("the chaos run lost, duplicated or stranded messages; see above");
    }
    Ok(())
}
