//! Building and running the service: pools, broker connections, topology, registries, the
//! consume loop, the tick loop and the health server.
//!
//! Shutdown: the consume loop stops taking deliveries and lets in-flight handlers finish (nothing
//! unfinished is acked); the tick loop finishes its current tick (a batch is one transaction: it
//! either commits after its confirms or rolls back); then the publisher closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use diesel_async::RunQueryDsl;
use tokio_util::sync::CancellationToken;
use wa_amqp::Connection;
use wa_amqp::{ConsumerHealth, ConsumerOptions, Publisher, declare_topology, run_consumer_with};
use wa_common::topology::{queue, topology};
use wa_db::PgPool;
use wa_db::models::scheduler as db;
use wa_service::health::{HealthServer, Readiness, install_metrics};

use crate::SERVICE;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::handler::{EventHandler, default_auto_replies};
use crate::scheduler::Scheduler;
use crate::templates;

/// Deliveries the broker sends ahead.
const PREFETCH: u16 = 64;
/// Events handled at once.
const CONCURRENCY: usize = 8;
/// How often readiness is re-checked.
const READINESS_INTERVAL: Duration = Duration::from_secs(1);

/// A built, not yet running scheduler.
pub struct App {
    config: Config,
    scheduler: Arc<Scheduler>,
    consume_connection: Connection,
    health: HealthServer,
    readiness: Readiness,
}

impl App {
    /// Builds the service on the system clock.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Builds the service on `clock` (tests travel in time): connects, declares the topology,
    /// seeds the template registry and the default auto-replies, syncs template statuses (best
    /// effort) and binds the health server. Starts no work yet.
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let pool =
            wa_db::build_pool(&config.database_url, config.db_pool_size).context("DATABASE_URL")?;
        let publisher = Publisher::connect(&config.amqp_url, &format!("{SERVICE}.publish"))
            .await
            .context("connecting to the broker (AMQP_URL)")?;
        let consume_connection = wa_amqp::connect(&config.amqp_url, &format!("{SERVICE}.consume"))
            .await
            .context("connecting to the broker (AMQP_URL)")?;
        let channel = consume_connection
            .create_channel()
            .await
            .context("opening a channel")?;
        declare_topology(&channel, &topology())
            .await
            .context("declaring the topology")?;
        let _ = channel.close(200, "topology declared".into()).await;

        seed(&pool, &config)
            .await
            .context("seeding the template registry and auto-replies")?;

        let readiness = Readiness::default();
        let metrics = install_metrics()?;
        let health = HealthServer::bind(&config.http_addr, readiness.clone(), metrics)
            .with_context(|| format!("SCHEDULER_HTTP_ADDR {}", config.http_addr))?;
        let scheduler = Arc::new(Scheduler::new(
            pool,
            publisher,
            clock,
            config.tenants.clone(),
            config.reminders.clone(),
        ));
        Ok(Self {
            config,
            scheduler,
            consume_connection,
            health,
            readiness,
        })
    }

    /// The scheduler (tests drive ticks and events through it directly).
    pub fn scheduler(&self) -> Arc<Scheduler> {
        self.scheduler.clone()
    }

    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub fn health_addr(&self) -> SocketAddr {
        self.health.local_addr
    }

    /// Runs the consumer, the tick loop and the health server until `shutdown` is cancelled.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            scheduler,
            consume_connection,
            health,
            readiness,
        } = self;
        let consumer_health = ConsumerHealth::new();
        let mut options = ConsumerOptions::new(PREFETCH, CONCURRENCY);
        options.health = consumer_health.clone();

        let consumer = {
            let handler = Arc::new(EventHandler(scheduler.clone()));
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let result = run_consumer_with(
                    &consume_connection,
                    queue::SCHEDULER_EVENTS,
                    options,
                    handler,
                    shutdown,
                )
                .await;
                if consume_connection.status().connected() {
                    let _ = consume_connection.close(200, "shutdown").await;
                }
                result
            })
        };
        let ticker = tokio::spawn(tick_loop(
            scheduler.clone(),
            config.reminders.tick_interval,
            shutdown.clone(),
        ));
        let watcher = tokio::spawn(watch_readiness(
            scheduler.clone(),
            readiness,
            consumer_health,
            shutdown.clone(),
        ));
        let http = tokio::spawn(health.run_until(shutdown.clone()));
        let queue_metrics = wa_amqp::queue_metrics::spawn_sampler(
            config.amqp_url.clone(),
            format!("{SERVICE}.queue-metrics"),
            wa_amqp::queue_metrics::with_dead_letter_queues([queue::SCHEDULER_EVENTS]),
            wa_amqp::queue_metrics::DEFAULT_SAMPLE_INTERVAL,
            shutdown.clone(),
        );
        let syncer = config.sync_templates_on_start.then(|| {
            tokio::spawn(template_sync_loop(
                scheduler.pool().clone(),
                config.clone(),
                shutdown.clone(),
            ))
        });

        let consumed = consumer.await.context("consumer task")?;
        if consumed.is_err() {
            // The broker connection is gone for good: stop everything, the orchestrator restarts us.
            shutdown.cancel();
        }
        ticker.await.context("tick task")?;
        watcher.await.context("readiness task")?;
        http.await.context("health task")??;
        queue_metrics.await.context("queue metrics task")?;
        if let Some(syncer) = syncer {
            syncer.await.context("template sync task")?;
        }
        scheduler.publisher().close().await;
        consumed.context("consuming scheduler.events")?;
        tracing::info!("reminder-scheduler stopped");
        Ok(())
    }
}

async fn seed(pool: &PgPool, config: &Config) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    for tenant in config.tenants.iter() {
        let rows: Vec<_> = templates::REGISTRY
            .iter()
            .map(|t| t.row(&tenant.tenant_id))
            .collect();
        db::seed_templates(&mut conn, &rows).await?;
        db::seed_auto_replies(&mut conn, &default_auto_replies(&tenant.tenant_id)).await?;
    }
    Ok(())
}

/// Pause before retrying a failed template sync (Graph API not reachable yet, e.g. at start).
const SYNC_RETRY: Duration = Duration::from_secs(5);

/// Syncs template statuses at start (retrying until it works, so a scheduler started before the
/// Graph API is reachable still learns which templates are approved), then periodically.
async fn template_sync_loop(pool: PgPool, config: Config, shutdown: CancellationToken) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("reminder-scheduler/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::warn!(error = %error, "no HTTP client; template statuses come from webhooks only");
            return;
        }
    };
    loop {
        let mut all_ok = true;
        for tenant in config.tenants.iter() {
            if let Err(error) = templates::sync_templates(&http, &config.graph, tenant, &pool).await
            {
                all_ok = false;
                tracing::warn!(tenant = %tenant.tenant_id, error = %error, "template sync failed; retrying");
            }
        }
        let pause = if all_ok {
            config.template_sync_interval
        } else {
            SYNC_RETRY
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

async fn tick_loop(scheduler: Arc<Scheduler>, interval: Duration, shutdown: CancellationToken) {
    loop {
        // The tick itself is not raced against shutdown: the current tick always finishes.
        match scheduler.tick().await {
            Ok(_) => {}
            Err(error) => {
                metrics::counter!(crate::telemetry::TICK_FAILURES).increment(1);
                tracing::warn!(error = %error, "tick failed; retrying next tick");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

async fn watch_readiness(
    scheduler: Arc<Scheduler>,
    readiness: Readiness,
    consumer: ConsumerHealth,
    shutdown: CancellationToken,
) {
    let publishing = readiness.flag("broker_publish");
    let consuming = readiness.flag("broker_consume");
    let database = readiness.flag("database");
    loop {
        publishing.store(scheduler.publisher().is_ready(), Ordering::Relaxed);
        consuming.store(consumer.is_ready(), Ordering::Relaxed);
        let db_ok = tokio::time::timeout(Duration::from_secs(2), async {
            let mut conn = scheduler.pool().get().await.ok()?;
            diesel::sql_query("SELECT 1").execute(&mut conn).await.ok()
        })
        .await
        .ok()
        .flatten()
        .is_some();
        database.store(db_ok, Ordering::Relaxed);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(READINESS_INTERVAL) => {}
        }
    }
    publishing.store(false, Ordering::Relaxed);
    consuming.store(false, Ordering::Relaxed);
}
