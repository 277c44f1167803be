//! The subcommands of `wactl` and their output.

use std::io::Write as _;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use wa_amqp::{Publisher, declare_topology, queue_depth};
use wa_common::contracts::platform::JamaahErasureRequested;
use wa_common::contracts::send_job::SendJob;
use wa_common::topology::{self, exchange, routing};
use wa_db::models::tenant::{NewTenant, Tenant};

use crate::dlq::{self, Filter};

/// Connection settings shared by every subcommand.
pub struct Urls {
    /// `AMQP_URL`.
    pub amqp: String,
    /// `DATABASE_URL`.
    pub database: String,
}

/// Top-level subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Create the database if missing and apply pending migrations.
    Migrate,
    /// Declare every exchange and queue (idempotent; services do this at start too).
    Declare,
    /// Show every queue of the topology with its depth.
    Queues,
    /// Inspect, count, replay or purge dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Manage tenants stored in the database.
    #[command(subcommand)]
    Tenants(TenantCommand),
    /// Ask every service to forget a jamaah (publishes `jamaah.erasure_requested`).
    Erase {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// The platform's jamaah id.
        #[arg(long)]
        jamaah: String,
    },
    /// Submit the product's templates to Meta, or sync their review status from Meta.
    #[command(subcommand)]
    Templates(TemplateCommand),
    /// Validate a send-job JSON file against the contract and publish it to `whatsapp.commands`/`send`.
    Send {
        /// Path to the send-job JSON (`-` for standard input).
        file: String,
    },
}

/// Dead-letter subcommands; `--queue` takes a dead-letter queue name (`sync.events.dlq`), all by default.
#[derive(Subcommand)]
pub enum DlqCommand {
    /// Count dead letters by reason.
    Count {
        /// Only this dead-letter queue.
        #[arg(long)]
        queue: Option<String>,
    },
    /// Show dead letters with their reason, detail and body.
    List {
        /// Only this dead-letter queue.
        #[arg(long)]
        queue: Option<String>,
        /// At most this many per queue.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Move dead letters back to the queue they came from.
    Replay {
        /// Only this dead-letter queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only dead letters with this reason.
        #[arg(long)]
        reason: Option<String>,
        /// Only dead letters of this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many per queue.
        #[arg(long, default_value_t = usize::MAX)]
        limit: usize,
    },
    /// Delete dead letters for good.
    Purge {
        /// Only this dead-letter queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only dead letters with this reason.
        #[arg(long)]
        reason: Option<String>,
        /// Only dead letters of this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// Template subcommands; tenants and tokens come from the environment (`WHATSAPP_*`, `TENANTS_FILE`).
#[derive(Subcommand)]
pub enum TemplateCommand {
    /// Submit every registry template Meta does not have yet (`POST /{waba_id}/message_templates`).
    Submit {
        /// Only this tenant (all configured tenants by default).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Read every template's status from Meta into the registry (`GET /{waba_id}/message_templates`).
    Sync {
        /// Only this tenant (all configured tenants by default).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Tenant subcommands.
#[derive(Subcommand)]
pub enum TenantCommand {
    /// List tenants.
    List,
    /// Add or update a tenant (tokens stay in the environment / TENANTS_FILE, never in the database).
    Add {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Business phone number id.
        #[arg(long)]
        phone_number_id: String,
        /// WhatsApp Business Account id.
        #[arg(long)]
        waba_id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// IANA time zone.
        #[arg(long, default_value = wa_service::tenants::DEFAULT_TIME_ZONE)]
        time_zone: String,
    },
}

fn tenant_json(tenant: &Tenant) -> serde_json::Value {
    serde_json::json!({
        "tenant_id": tenant.tenant_id,
        "phone_number_id": tenant.phone_number_id,
        "waba_id": tenant.waba_id,
        "display_name": tenant.display_name,
        "time_zone": tenant.time_zone,
        "paused_at": tenant.paused_at,
        "pause_reason": tenant.pause_reason,
    })
}

fn queues_or_all(queue: Option<String>) -> Vec<String> {
    queue.map_or_else(dlq::dead_letter_queues, |q| vec![q])
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn say(line: impl std::fmt::Display) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

/// Runs one subcommand.
pub async fn run(command: Command, urls: &Urls) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let created = wa_db::migrate::create_database_if_missing(&urls.database).await?;
            if created {
                say("created the database")?;
            }
            let applied = wa_db::migrate::run_migrations(&urls.database).await?;
            say(format!(
                "applied {} migration(s){}",
                applied.len(),
                if applied.is_empty() {
                    String::new()
                } else {
                    format!(": {}", applied.join(", "))
                }
            ))?;
        }
        Command::Declare => {
            let connection = wa_amqp::connect(&urls.amqp, "wactl").await?;
            let channel = connection.create_channel().await?;
            declare_topology(&channel, &topology::topology()).await?;
            say("topology declared")?;
        }
        Command::Queues => {
            let connection = wa_amqp::connect(&urls.amqp, "wactl").await?;
            let mut channel = connection.create_channel().await?;
            for queue in dlq::known_queues() {
                match queue_depth(&channel, &queue.name).await {
                    Ok(depth) => say(format!("{:<44} {:>8}", queue.name, depth))?,
                    Err(_) => {
                        // A failed passive declare closes the channel; open a fresh one.
                        say(format!("{:<44} {:>8}", queue.name, "missing"))?;
                        channel = connection.create_channel().await?;
                    }
                }
            }
        }
        Command::Dlq(command) => run_dlq(command, urls).await?,
        Command::Tenants(command) => {
            let mut conn = <wa_db::AsyncPgConnection as diesel_async::AsyncConnection>::establish(
                &urls.database,
            )
            .await?;
            match command {
                TenantCommand::List => {
                    for tenant in Tenant::list(&mut conn).await? {
                        print_json(&tenant_json(&tenant))?;
                    }
                }
                TenantCommand::Add {
                    tenant,
                    phone_number_id,
                    waba_id,
                    name,
                    time_zone,
                } => {
                    anyhow::ensure!(
                        time_zone.parse::<chrono_tz::Tz>().is_ok(),
                        "--time-zone {time_zone:?} is not an IANA time zone"
                    );
                    let new = NewTenant {
                        tenant_id: &tenant,
                        phone_number_id: &phone_number_id,
                        waba_id: &waba_id,
                        display_name: name.as_deref(),
                        time_zone: Some(&time_zone),
                    };
                    print_json(&tenant_json(&Tenant::upsert(&mut conn, &new).await?))?;
                }
            }
        }
        Command::Erase { tenant, jamaah } => {
            let event: JamaahErasureRequested = serde_json::from_value(
                serde_json::json!({ "tenant_id": tenant, "jamaah_id": jamaah }),
            )?;
            let publisher = Publisher::connect(&urls.amqp, "wactl").await?;
            publisher
                .publish_json(
                    exchange::PLATFORM_EVENTS,
                    routing::JAMAAH_ERASURE_REQUESTED,
                    &event,
                    Default::default(),
                )
                .await?;
            say("erasure requested")?;
        }
        Command::Templates(command) => run_templates(command, urls).await?,
        Command::Send { file } => {
            let bytes = if file == "-" {
                std::io::read_to_string(std::io::stdin())?.into_bytes()
            } else {
                std::fs::read(&file)?
            };
            let job: SendJob = wa_common::decode(&bytes)?;
            let publisher = Publisher::connect(&urls.amqp, "wactl").await?;
            publisher
                .publish_json(
                    exchange::COMMANDS,
                    routing::SEND,
                    &job,
                    wa_amqp::PublishOptions {
                        tenant_id: Some(job.tenant_id.to_string()),
                        ..Default::default()
                    },
                )
                .await?;
            say(format!("published job {}", job.job_id))?;
        }
    }
    Ok(())
}

async fn run_dlq(command: DlqCommand, urls: &Urls) -> anyhow::Result<()> {
    let connection = wa_amqp::connect(&urls.amqp, "wactl").await?;
    let channel = connection.create_channel().await?;
    match command {
        DlqCommand::Count { queue } => {
            for dlq in queues_or_all(queue) {
                for (reason, count) in dlq::count_by_reason(&channel, &dlq).await? {
                    say(format!("{dlq:<36} {reason:<28} {count:>8}"))?;
                }
            }
        }
        DlqCommand::List { queue, limit } => {
            let mut letters = Vec::new();
            for dlq in queues_or_all(queue) {
                letters.extend(dlq::list(&channel, &dlq, limit).await?);
            }
            print_json(&letters)?;
        }
        DlqCommand::Replay {
            queue,
            reason,
            tenant,
            limit,
        } => {
            let publisher = Publisher::connect(&urls.amqp, "wactl-replay").await?;
            let filter = Filter {
                reason,
                tenant_id: tenant,
            };
            for dlq in queues_or_all(queue) {
                let total = queue_depth(&channel, &dlq).await?;
                if total == 0 {
                    continue;
                }
                let bar = ProgressBar::new(u64::from(total)).with_message(dlq.clone());
                bar.set_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")?
                        .progress_chars("=> "),
                );
                let summary =
                    dlq::replay(&channel, &publisher, &dlq, &filter, limit, |_| bar.inc(1)).await?;
                bar.finish_and_clear();
                say(format!(
                    "{dlq}: replayed {}, kept {}",
                    summary.moved, summary.kept
                ))?;
            }
            publisher.close().await;
        }
        DlqCommand::Purge {
            queue,
            reason,
            tenant,
            yes,
        } => {
            anyhow::ensure!(
                yes,
                "purging deletes dead letters for good; add --yes to confirm"
            );
            let filter = Filter {
                reason,
                tenant_id: tenant,
            };
            for dlq in queues_or_all(queue) {
                let summary = dlq::purge(&channel, &dlq, &filter).await?;
                say(format!(
                    "{dlq}: purged {}, kept {}",
                    summary.moved, summary.kept
                ))?;
            }
        }
    }
    Ok(())
}

async fn run_templates(command: TemplateCommand, urls: &Urls) -> anyhow::Result<()> {
    use wa_scheduler::templates::{submit_templates, sync_templates};
    let directory = wa_service::tenants::TenantDirectory::from_env()?;
    let graph = wa_scheduler::GraphConfig {
        base_url: wa_service::env::var_or("WHATSAPP_GRAPH_BASE_URL", "https://graph.facebook.com")
            .trim_end_matches('/')
            .to_owned(),
        api_version: wa_service::env::var_or(
            "WHATSAPP_API_VERSION",
            wa_scheduler::config::DEFAULT_API_VERSION,
        ),
    };
    let pool = wa_db::build_pool(&urls.database, 2)?;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let only = match &command {
        TemplateCommand::Submit { tenant } | TemplateCommand::Sync { tenant } => tenant.clone(),
    };
    let tenants: Vec<_> = directory
        .iter()
        .filter(|t| only.as_deref().is_none_or(|id| t.tenant_id == id))
        .cloned()
        .collect();
    anyhow::ensure!(
        !tenants.is_empty(),
        "no tenant configured{}",
        only.map(|t| format!(" with id {t}")).unwrap_or_default()
    );
    for tenant in tenants {
        match &command {
            TemplateCommand::Submit { .. } => {
                let report =
                    submit_templates(&http, &graph, &tenant, &pool, chrono::Utc::now()).await?;
                say(format!(
                    "{}: submitted {:?}, already at Meta {:?}, skipped {:?}, refused {:?}",
                    tenant.tenant_id,
                    report.submitted,
                    report.already_present,
                    report.skipped,
                    report.refused
                ))?;
            }
            TemplateCommand::Sync { .. } => {
                let report = sync_templates(&http, &graph, &tenant, &pool).await?;
                say(format!(
                    "{}: statuses {:?}, missing at Meta {:?}",
                    tenant.tenant_id, report.updated, report.missing
                ))?;
            }
        }
    }
    Ok(())
}
