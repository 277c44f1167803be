//! `App::build` (connections, topology, pool, tenants, health server; no work yet) and
//! `App::run_until` (consumers, limiter pumps, tenant supervisors, settler) until shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wa_amqp::{ConsumerHealth, ConsumerOptions, Publisher, run_consumer_with};
use wa_common::topology::{queue, sender_dispatch_queue, sender_dispatch_topology, topology};
use wa_db::models::tenant::{NewTenant, Tenant as TenantRow};
use wa_service::health::{HealthServer, Readiness, install_metrics};

use crate::clients::graph::GraphClient;
use crate::config::Config;
use crate::deps::{Deps, TenantCtx, WindowCache, Writes};
use crate::dispatch::Dispatcher;
use crate::events::{StatusSettler, WindowTracker, run_settler};
use crate::intake::Intake;
use crate::lanes::Lanes;
use crate::lease::LeaseKeeper;
use crate::limiter::RateLimiter;

/// Connections reserved for the rate limiters' slot reservations (shared by every number).
const LIMITER_POOL_SIZE: usize = 2;

/// Pool connections opened at start: the hot path's batched writes use a few at a time.
const WARM_CONNECTIONS: usize = 4;

/// A built sender, ready to run.
pub struct App {
    config: Config,
    deps: Arc<Deps>,
    leases: LeaseKeeper,
    consume_conn: Arc<wa_amqp::Connection>,
    health: HealthServer,
    readiness: Readiness,
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub http_addr: std::net::SocketAddr,
}

impl App {
    /// Connects to the broker and the database, declares the topology (shared queues and every
    /// tenant's dispatch queues), records the tenants, and binds the health server.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = install_metrics()?;
        let publisher = Publisher::connect(&config.amqp_url, "sender-publish").await?;
        let consume_conn = Arc::new(wa_amqp::connect(&config.amqp_url, "sender-consume").await?);
        let channel = publisher.connection().create_channel().await?;
        wa_amqp::declare_topology(&channel, &topology()).await?;
        for tenant in config.tenants.iter() {
            wa_amqp::declare_topology(&channel, &sender_dispatch_topology(&tenant.tenant_id))
                .await?;
        }
        let _ = channel.close(200, "declared".into()).await;

        let pool = wa_db::build_pool(&config.database_url, config.db_pool_size)?;
        {
            let mut conn = pool.get().await?;
            for tenant in config.tenants.iter() {
                TenantRow::upsert(
                    &mut conn,
                    &NewTenant {
                        tenant_id: &tenant.tenant_id,
                        phone_number_id: &tenant.phone_number_id,
                        waba_id: &tenant.waba_id,
                        display_name: None,
                        time_zone: Some(&tenant.time_zone),
                    },
                )
                .await?;
            }
        }
        // The limiter's reservations get connections of their own: a busy pool must never delay
        // the slot schedule (a late reservation is a gap in the number's sending).
        let limiter_pool = wa_db::build_pool(&config.database_url, LIMITER_POOL_SIZE)?;
        // Connect now, not while the first jobs wait.
        warm_up(&pool, WARM_CONNECTIONS.min(config.db_pool_size)).await?;
        warm_up(&limiter_pool, 1).await?;
        let mut tenants = HashMap::new();
        let mut leases = LeaseKeeper::new(&config.database_url);
        for tenant in config.tenants.iter() {
            // For dashboards and alerts: the cap every replica enforces for this number.
            metrics::gauge!("wa_sender_rate_cap_per_second", "phone_number_id" => tenant.phone_number_id.clone())
                .set(f64::from(config.send.rate_per_second));
            let limiter = RateLimiter::new(
                limiter_pool.clone(),
                &tenant.phone_number_id,
                config.send.rate_per_second,
                config.send.rate_margin_permille,
            );
            tenants.insert(
                tenant.tenant_id.clone(),
                Arc::new(TenantCtx {
                    tenant: tenant.clone(),
                    limiter,
                    lease: leases.lease(&tenant.phone_number_id),
                    lanes: Lanes::default(),
                    paused: AtomicBool::new(false),
                    pause_notify: tokio::sync::Notify::new(),
                    templates: std::sync::Mutex::default(),
                    template_fetch: tokio::sync::Mutex::default(),
                    windows: WindowCache::default(),
                }),
            );
        }
        let deps = Arc::new(Deps {
            writes: Writes::start(&pool),
            pool,
            publisher,
            graph: GraphClient::new(&config.graph)?,
            send: config.send.clone(),
            tenants,
        });
        let readiness = Readiness::default();
        let health = HealthServer::bind(&config.http_addr, readiness.clone(), metrics)?;
        let http_addr = health.local_addr;
        Ok(Self {
            config,
            deps,
            leases,
            consume_conn,
            health,
            readiness,
            http_addr,
        })
    }

    /// Runs until `shutdown` is cancelled: stops taking deliveries, lets in-flight jobs finish and
    /// settle (bounded by the consume loop's drain timeout), acks nothing unfinished, then closes.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            deps,
            leases,
            consume_conn,
            health,
            readiness,
            ..
        } = self;
        let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
        let work = shutdown.child_token();
        // The leases outlive every other task: they are handed on only once nothing is sending.
        let leases_stop = CancellationToken::new();
        let mut keeper = tokio::spawn(leases.run(leases_stop.clone()));

        let mut consumer_health = Vec::new();
        let shared_queues: [(&str, u16, usize); 3] = [
            // Intake handlers mostly wait on two commits (the batched insert and the dispatch
            // publish's confirm), so it needs as many in flight as dispatch to keep up with it.
            (
                queue::SENDER_SEND,
                config.consumer.prefetch,
                config.consumer.concurrency,
            ),
            (queue::SENDER_INBOUND, 100, 16),
            (queue::SENDER_STATUS, 100, 16),
        ];
        for (name, prefetch, concurrency) in shared_queues {
            let mut options = ConsumerOptions::new(prefetch, concurrency);
            options.drain_timeout = Duration::from_secs(20);
            consumer_health.push(options.health.clone());
            let conn = consume_conn.clone();
            let token = work.clone();
            let deps = deps.clone();
            tasks.spawn(async move {
                match name {
                    queue::SENDER_SEND => {
                        run_consumer_with(&conn, name, options, Arc::new(Intake::new(deps)), token)
                            .await?
                    }
                    queue::SENDER_INBOUND => {
                        run_consumer_with(
                            &conn,
                            name,
                            options,
                            Arc::new(WindowTracker::new(deps)),
                            token,
                        )
                        .await?;
                    }
                    _ => {
                        run_consumer_with(
                            &conn,
                            name,
                            options,
                            Arc::new(StatusSettler::new(deps)),
                            token,
                        )
                        .await?
                    }
                }
                Ok(())
            });
        }
        for ctx in deps.tenants.values() {
            tasks.spawn({
                let limiter = ctx.limiter.clone();
                let token = work.clone();
                async move {
                    limiter.run(token).await;
                    Ok(())
                }
            });
            tasks.spawn(supervise_tenant(
                deps.clone(),
                ctx.clone(),
                consume_conn.clone(),
                config.consumer.prefetch,
                config.consumer.concurrency,
                work.clone(),
            ));
        }
        tasks.spawn({
            let deps = deps.clone();
            let token = work.clone();
            let (interval, timeout) = (
                config.send.settle_interval,
                config.send.unknown_outcome_timeout,
            );
            async move {
                run_settler(deps, interval, timeout, token).await;
                Ok(())
            }
        });
        tasks.spawn({
            let flags = (
                readiness.flag("amqp"),
                readiness.flag("consumers"),
                readiness.flag("database"),
            );
            let deps = deps.clone();
            let conn = consume_conn.clone();
            let token = work.clone();
            async move {
                watch_readiness(deps, conn, consumer_health, flags, token).await;
                Ok(())
            }
        });
        let consumed_queues = shared_queues
            .iter()
            .map(|(name, ..)| (*name).to_owned())
            .chain(deps.tenants.keys().flat_map(|tenant| {
                ["interactive", "transactional", "bulk"]
                    .map(|priority| sender_dispatch_queue(tenant, priority).name)
            }));
        let queue_metrics = wa_amqp::queue_metrics::spawn_sampler(
            config.amqp_url.clone(),
            "sender.queue-metrics".to_owned(),
            wa_amqp::queue_metrics::with_dead_letter_queues(consumed_queues),
            wa_amqp::queue_metrics::DEFAULT_SAMPLE_INTERVAL,
            work.clone(),
        );
        let health_token = shutdown.clone();
        let health_task = tokio::spawn(health.run_until(health_token));

        let mut failure = None;
        let mut keeper_ended = false;
        tokio::select! {
            () = shutdown.cancelled() => {}
            Some(result) = tasks.join_next() => {
                if let Ok(Err(error)) | Err(error) = result.map_err(anyhow::Error::from) {
                    failure = Some(error);
                }
                work.cancel();
            }
            result = &mut keeper => {
                // It runs until told to stop: ending earlier is a bug (a panic).
                keeper_ended = true;
                failure = Some(match result {
                    Ok(()) => anyhow::anyhow!("the lease keeper stopped"),
                    Err(error) => anyhow::Error::from(error).context("the lease keeper failed"),
                });
                work.cancel();
            }
        }
        work.cancel();
        while let Some(result) = tasks.join_next().await {
            if let Ok(Err(error)) = result
                && failure.is_none()
            {
                failure = Some(error);
            }
        }
        leases_stop.cancel();
        if !keeper_ended {
            let _ = keeper.await;
        }
        deps.publisher.close().await;
        let _ = consume_conn.close(200, "shutdown").await;
        shutdown.cancel();
        let _ = queue_metrics.await;
        let _ = health_task.await;
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Runs a tenant's dispatch consumers while this process holds the number's sending lease and the
/// tenant is not paused. While paused (by any replica, `tenants.paused_at`), the lease holder
/// consumes nothing (jobs stay queued), raises `wa_sender_tenant_paused`, and probes the
/// credentials every probe interval; a successful probe resumes everyone.
async fn supervise_tenant(
    deps: Arc<Deps>,
    ctx: Arc<TenantCtx>,
    conn: Arc<wa_amqp::Connection>,
    prefetch: u16,
    concurrency: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tenant_id = ctx.tenant.tenant_id.clone();
    let interval = deps.send.probe_interval;
    let paused_gauge = metrics::gauge!("wa_sender_tenant_paused", "tenant" => tenant_id.clone());
    let mut lease = ctx.lease.clone();
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if !lease.is_valid() {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = lease.acquired() => continue,
            }
        }
        let paused = match deps.pool.get().await {
            Ok(mut c) => wa_db::models::sender::is_tenant_paused(&mut c, &tenant_id)
                .await
                .unwrap_or_else(|_| ctx.paused.load(Ordering::Relaxed)),
            Err(_) => ctx.paused.load(Ordering::Relaxed),
        };
        if paused {
            ctx.paused.store(true, Ordering::Relaxed);
            paused_gauge.set(1.0);
            // Wait one interval before each probe: never hammer Meta with a broken token.
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
            match deps
                .graph
                .probe(&ctx.tenant.phone_number_id, &ctx.tenant.access_token)
                .await
            {
                Ok(()) => {
                    if let Ok(mut c) = deps.pool.get().await
                        && wa_db::models::sender::resume_tenant(&mut c, &tenant_id)
                            .await
                            .is_ok()
                    {
                        tracing::info!(tenant_id = %tenant_id, "credentials work again: resuming sending");
                        ctx.paused.store(false, Ordering::Relaxed);
                        paused_gauge.set(0.0);
                        continue;
                    }
                }
                Err(error) => {
                    tracing::warn!(tenant_id = %tenant_id, error = %error, "auth probe failed; staying paused")
                }
            }
            continue;
        }
        ctx.paused.store(false, Ordering::Relaxed);
        paused_gauge.set(0.0);
        let consumers = shutdown.child_token();
        let mut running = JoinSet::new();
        for priority in ["interactive", "transactional", "bulk"] {
            let name = sender_dispatch_queue(&tenant_id, priority).name;
            let mut options = ConsumerOptions::new(prefetch, concurrency);
            options.drain_timeout = Duration::from_secs(20);
            let handler = Arc::new(Dispatcher::new(deps.clone(), ctx.clone()));
            let conn = conn.clone();
            let token = consumers.clone();
            running.spawn(
                async move { run_consumer_with(&conn, &name, options, handler, token).await },
            );
        }
        let mut lost = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = ctx.pause_notify.notified() => break,
                () = lease.lost() => break,
                () = tokio::time::sleep(interval) => {
                    let paused = match deps.pool.get().await {
                        Ok(mut c) => wa_db::models::sender::is_tenant_paused(&mut c, &tenant_id).await.unwrap_or(false),
                        Err(_) => false,
                    };
                    if paused {
                        break;
                    }
                }
                Some(result) = running.join_next() => {
                    if let Ok(Err(error)) = result {
                        lost = Some(error);
                    }
                    break;
                }
            }
        }
        consumers.cancel();
        while let Some(result) = running.join_next().await {
            if let Ok(Err(error)) = result
                && lost.is_none()
            {
                lost = Some(error);
            }
        }
        if let Some(error) = lost {
            return Err(error.into());
        }
    }
}

/// Opens `connections` pooled connections (they stay in the pool).
async fn warm_up(pool: &wa_db::PgPool, connections: usize) -> anyhow::Result<()> {
    let mut held = Vec::with_capacity(connections);
    for _ in 0..connections {
        held.push(pool.get().await?);
    }
    Ok(())
}

async fn watch_readiness(
    deps: Arc<Deps>,
    conn: Arc<wa_amqp::Connection>,
    consumers: Vec<ConsumerHealth>,
    (amqp, consuming, database): (Arc<AtomicBool>, Arc<AtomicBool>, Arc<AtomicBool>),
    shutdown: CancellationToken,
) {
    loop {
        amqp.store(
            deps.publisher.is_ready() && conn.status().connected(),
            Ordering::Relaxed,
        );
        consuming.store(
            consumers.iter().all(ConsumerHealth::is_ready),
            Ordering::Relaxed,
        );
        let db_ok = match tokio::time::timeout(Duration::from_secs(2), deps.pool.get()).await {
            Ok(Ok(mut c)) => {
                use diesel_async::RunQueryDsl;
                diesel::sql_query("SELECT 1").execute(&mut c).await.is_ok()
            }
            _ => false,
        };
        database.store(db_ok, Ordering::Relaxed);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
