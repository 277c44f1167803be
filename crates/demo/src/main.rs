//! `wa-demo` (`make demo`): starts every service and graph-mock as real processes on a fresh vhost
//! and database, plays the travel agency's day, and prints what happened. `--keep-running`
//! (`make run`) starts the same stack and waits for Ctrl-C instead.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use wa_demo::scenario;
use wa_demo::stack::{Endpoints, Program, Stack, StackConfig};

/// Command line of the demo.
#[derive(Parser)]
#[command(about = "Run the end-to-end demo against the fake Graph API")]
struct Args {
    /// Start everything and leave it running until Ctrl-C instead of playing the scenario.
    #[arg(long)]
    keep_running: bool,
    /// First of the five consecutive ports (graph-mock, ingress, sender, sync, scheduler).
    #[arg(long, default_value_t = 18090)]
    base_port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut extra_env = BTreeMap::new();
    // The demo may run at any hour; production uses the tenant's 09:00-20:00.
    extra_env.insert("REMINDER_SEND_WINDOW".to_owned(), "00:00-23:59".to_owned());
    let config = StackConfig {
        base_port: args.base_port,
        vhost: if args.keep_running {
            "whatsapp-run"
        } else {
            "whatsapp-demo"
        }
        .to_owned(),
        database: if args.keep_running {
            "whatsapp_run"
        } else {
            "whatsapp_demo"
        }
        .to_owned(),
        work_dir: PathBuf::from(".demo"),
        extra_env,
        endpoints: Endpoints::default(),
    };
    eprintln!("starting graph-mock and the four services (logs in .demo/*.log) ...");
    let stack = Stack::start(config, &Program::ALL).await?;
    if args.keep_running {
        for program in Program::ALL {
            eprintln!("  {:<20} {}", program.binary(), stack.config.url(program));
        }
        eprintln!(
            "  AMQP {}  DB {}",
            stack.config.amqp_url(),
            stack.config.database_url()
        );
        eprintln!("running; Ctrl-C stops everything");
        tokio::signal::ctrl_c().await?;
        stack.shutdown().await?;
        return Ok(());
    }
    let report = scenario::play(&stack).await;
    stack.shutdown().await?;
    let report = report?;
    // The report is the demo's output, so it goes to stdout (logs go to .demo/*.log).
    std::io::Write::write_all(&mut std::io::stdout().lock(), report.render().as_bytes())?;
    if !report.all_passed() {
        anyhow::bail!("some demo steps did not complete; see above and .demo/*.log");
    }
    Ok(())
}
