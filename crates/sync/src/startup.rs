//! Wiring: [`App::build`] connects the broker (one consuming and one publishing connection),
//! declares the topology, builds the database pool, the media store and the HTTP server (read
//! API + health), without starting work; [`App::run_until`] runs the consumer, the batcher, the
//! outbox relay, the media downloader and the retention job until the token is cancelled.
//!
//! Shutdown: stop consuming, let in-flight events finish their batch (acked only after commit),
//! stop the batcher, publish what is left in the outbox, stop the background jobs and the HTTP
//! server, close the broker connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use wa_amqp::Connection;
use wa_amqp::{ConsumerOptions, Publisher, declare_topology, run_consumer_with};
use wa_common::topology::{queue, topology};
use wa_db::PgPool;
use wa_service::health::{self, Readiness};
use wa_service::tenants::TenantDirectory;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::ingest::{IngestDeps, SyncHandler};
use crate::media::{FsMediaStore, GraphMediaClient, MediaStore, MediaWorker};
use crate::{outbox, retention};

/// How often the outbox relay looks for events a failed publish left behind.
const OUTBOX_POLL: Duration = Duration::from_secs(2);
/// Age after which the periodic relay takes an outbox row (younger ones are the batcher's).
const OUTBOX_GRACE: Duration = Duration::from_secs(10);
/// How often the database readiness check runs.
const DB_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Longest wait for the batcher to answer in-flight events at shutdown.
const BATCHER_DRAIN: Duration = Duration::from_secs(30);

/// A built, not yet running, conversation-sync.
pub struct App {
    config: Config,
    consume_conn: Connection,
    publisher: Publisher,
    pool: PgPool,
    tenants: Arc<TenantDirectory>,
    media_store: Arc<dyn MediaStore>,
    media_worker: MediaWorker,
    server: actix_web::dev::Server,
    http_addr: SocketAddr,
    readiness: Readiness,
}

impl App {
    /// Connects, declares the topology and binds the HTTP address; fails naming what was wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let consume_conn = wa_amqp::connect(&config.amqp_url, "conversation-sync.consume")
            .await
            .context("connecting to the broker (AMQP_URL)")?;
        let publisher = Publisher::connect(&config.amqp_url, "conversation-sync.publish")
            .await
            .context("connecting the publisher (AMQP_URL)")?;
        let channel = publisher
            .connection()
            .create_channel()
            .await
            .context("opening a channel")?;
        declare_topology(&channel, &topology())
            .await
            .context("declaring the topology")?;
        let _ = channel.close(200, "topology declared".into()).await;

        let pool =
            wa_db::build_pool(&config.database_url, config.db_pool_size).context("DATABASE_URL")?;
        let tenants = Arc::new(config.tenants.clone());
        let media_store: Arc<dyn MediaStore> =
            Arc::new(FsMediaStore::new(config.media.dir.clone()));
        let client = GraphMediaClient::new(&config.graph_base_url, &config.api_version)
            .context("building the Graph API client")?;
        let media_worker = MediaWorker::new(
            pool.clone(),
            config.cipher.clone(),
            tenants.clone(),
            client,
            media_store.clone(),
            config.media.clone(),
        );

        let readiness = Readiness::default();
        let metrics = health::install_metrics()?;
        let state = ApiState {
            pool: pool.clone(),
            cipher: config.cipher.clone(),
            token: Arc::new(config.api_token.clone()),
            rates: Arc::new(config.pricing_rates_usd.clone()),
        };
        let (server, http_addr) = bind_http(&config.http_addr, readiness.clone(), metrics, state)?;
        Ok(Self {
            config,
            consume_conn,
            publisher,
            pool,
            tenants,
            media_store,
            media_worker,
            server,
            http_addr,
            readiness,
        })
    }

    /// The bound HTTP address (tests bind port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The media downloader, so tests can run a round without waiting for the poll.
    pub fn media_worker(&self) -> MediaWorker {
        self.media_worker.clone()
    }

    /// The media store.
    pub fn media_store(&self) -> Arc<dyn MediaStore> {
        self.media_store.clone()
    }

    /// Runs everything until `shutdown` is cancelled, then drains (see the module docs).
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            consume_conn,
            publisher,
            pool,
            tenants,
            media_store,
            media_worker,
            server,
            readiness,
            ..
        } = self;
        let background = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();

        let broker_flag = readiness.flag("broker");
        let db_flag = readiness.flag("database");
        // Every prefetched delivery gets a handler at once: the batcher, not the consume loop,
        // decides how many are written together.
        let in_flight = config.batch.in_flight();
        let options = ConsumerOptions::new(u16::try_from(in_flight).unwrap_or(u16::MAX), in_flight);
        let consumer_health = options.health.clone();
        tasks.spawn(watch_readiness(
            pool.clone(),
            publisher.clone(),
            consumer_health,
            broker_flag,
            db_flag,
            background.clone(),
        ));
        tasks.spawn(media_worker.run_until(background.clone()));
        tasks.spawn(retention::run_until(
            pool.clone(),
            media_store.clone(),
            config.retention_days,
            config.retention_interval,
            background.clone(),
        ));
        tasks.spawn(relay_periodically(
            pool.clone(),
            config.cipher.clone(),
            publisher.clone(),
            background.clone(),
        ));
        let http = server.handle();
        let server_task = tokio::spawn(server);
        let queue_metrics = wa_amqp::queue_metrics::spawn_sampler(
            config.amqp_url.clone(),
            "conversation-sync.queue-metrics".to_owned(),
            wa_amqp::queue_metrics::with_dead_letter_queues([queue::SYNC_EVENTS]),
            wa_amqp::queue_metrics::DEFAULT_SAMPLE_INTERVAL,
            background.clone(),
        );

        let deps = IngestDeps {
            pool: pool.clone(),
            cipher: config.cipher.clone(),
            publisher: publisher.clone(),
            media_store,
        };
        let (handler, batcher) = SyncHandler::start(tenants, deps, config.batch.clone());
        let handler = Arc::new(handler);
        let consumed = run_consumer_with(
            &consume_conn,
            queue::SYNC_EVENTS,
            options,
            handler.clone(),
            shutdown.clone(),
        )
        .await;
        // Every handler has returned: dropping the last sender lets the batcher finish and stop.
        drop(handler);
        if tokio::time::timeout(BATCHER_DRAIN, batcher).await.is_err() {
            tracing::error!("the batcher did not finish in time; unfinished events stay unacked");
        }
        if let Err(error) = outbox::relay(&pool, &config.cipher, &publisher, None).await {
            tracing::warn!(error = %error, "final outbox relay failed; events stay queued for the next start");
        }
        background.cancel();
        while tasks.join_next().await.is_some() {}
        let _ = queue_metrics.await;
        http.stop(true).await;
        let _ = server_task.await;
        publisher.close().await;
        if consume_conn.status().connected() {
            let _ = consume_conn.close(200, "shutdown").await;
        }
        consumed.context("consuming sync.events")
    }
}

fn bind_http(
    addr: &str,
    readiness: Readiness,
    metrics: PrometheusHandle,
    state: ApiState,
) -> anyhow::Result<(actix_web::dev::Server, SocketAddr)> {
    let server = actix_web::HttpServer::new(move || {
        let state = state.clone();
        let readiness = readiness.clone();
        let metrics = metrics.clone();
        actix_web::App::new()
            .configure(|cfg| health::configure(cfg, readiness, metrics))
            .configure(|cfg| api::configure(cfg, state))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(10)
    .bind(addr)
    .with_context(|| format!("SYNC_HTTP_ADDR: cannot listen on {addr}"))?;
    let local = server
        .addrs()
        .first()
        .copied()
        .with_context(|| format!("SYNC_HTTP_ADDR: no address bound for {addr}"))?;
    Ok((server.run(), local))
}

async fn watch_readiness(
    pool: PgPool,
    publisher: Publisher,
    consumer: wa_amqp::ConsumerHealth,
    broker: Arc<AtomicBool>,
    database: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    loop {
        broker.store(
            consumer.is_ready() && publisher.is_ready(),
            Ordering::Relaxed,
        );
        let db_ok = match tokio::time::timeout(Duration::from_secs(2), pool.get()).await {
            Ok(Ok(mut conn)) => {
                diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), &mut conn)
                    .await
                    .is_ok()
            }
            _ => false,
        };
        database.store(db_ok, Ordering::Relaxed);
        let wait = if db_ok && broker.load(Ordering::Relaxed) {
            DB_CHECK_EVERY
        } else {
            Duration::from_millis(250)
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn relay_periodically(
    pool: PgPool,
    cipher: crate::crypto::Cipher,
    publisher: Publisher,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(OUTBOX_POLL) => {}
        }
        let grace =
            chrono::Duration::from_std(OUTBOX_GRACE).unwrap_or(chrono::Duration::seconds(10));
        if let Err(error) =
            outbox::relay(&pool, &cipher, &publisher, Some(chrono::Utc::now() - grace)).await
        {
            tracing::debug!(error = %error, "periodic outbox relay failed; retrying");
        }
    }
}
