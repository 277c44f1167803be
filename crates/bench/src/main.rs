//! `wa-bench`: runs the benchmarks (`make bench`) and writes `bench-results/report.{md,json}`.

use std::path::PathBuf;

use clap::Parser;
use wa_bench::report;

/// Command line of the benchmark runner.
#[derive(Parser)]
#[command(about = "Run the benchmarks and write the report")]
struct Args {
    /// Only run these groups (comma-separated); all by default.
    #[arg(long, value_delimiter = ',', value_parser = ["ingress", "sender", "sync", "scheduler", "memory"])]
    only: Vec<String>,
    /// Where to write report.md and report.json.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The services under test log only when asked (`RUST_LOG`): logging would cost the figures.
    let _telemetry = match std::env::var_os("RUST_LOG") {
        Some(_) => Some(wa_service::telemetry::init("wa-bench")?),
        None => None,
    };
    let selected = |group: &str| args.only.is_empty() || args.only.iter().any(|g| g == group);
    let mut figures: Vec<report::Figure> = Vec::new();
    if selected("ingress") {
        figures.extend(wa_bench::ingress::run().await?);
    }
    if selected("sender") {
        figures.extend(wa_bench::sender::run().await?);
    }
    if selected("sync") {
        figures.extend(wa_bench::sync::run().await?);
    }
    if selected("scheduler") {
        figures.extend(wa_bench::scheduler::run().await?);
    }
    if selected("memory") {
        figures.extend(wa_bench::memory::run().await?);
    }
    report::write(&args.out, &figures)?;
    eprintln!("{}", report::markdown(&figures));
    Ok(())
}
