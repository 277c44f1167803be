//! `App::build` (connect, declare, bind: no traffic yet) and `App::run_until` (serve until the
//! shutdown token, then drain gracefully and close the broker channel).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{HttpServer, web};
use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use tokio_util::sync::CancellationToken;
use wa_amqp::Publisher;
use wa_service::health::{Readiness, install_metrics};

use crate::config::Config;
use crate::instruments;
use crate::routes::{IngressState, configure};
use crate::signature::Verifier;

/// Name of ingress's publishing connection in the broker's management UI.
pub const CONNECTION_NAME: &str = "ingress-publish";
/// How often `/readyz` re-reads the publisher's channel state.
const READINESS_POLL: Duration = Duration::from_millis(200);

/// A built ingress: connected, topology declared, socket bound.
pub struct App {
    server: actix_web::dev::Server,
    local_addr: SocketAddr,
    publisher: Publisher,
    broker_ready: Arc<AtomicBool>,
}

impl App {
    /// Connects the publisher, declares the topology and binds `INGRESS_ADDR`; fails fast on any
    /// of them so a misconfigured replica never reports ready.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = install_metrics()?;
        instruments::describe();
        let verifier = Verifier::new(&config.app_secrets)
            .context("WHATSAPP_APP_SECRET holds no usable secret")?;

        let publisher = Publisher::connect(config.amqp_url.expose_secret(), CONNECTION_NAME)
            .await
            .context("connecting to the broker (AMQP_URL)")?
            .with_confirm_timeout(config.confirm_timeout);
        declare(&publisher).await?;

        let readiness = Readiness::default();
        let broker_ready = readiness.flag("broker");
        broker_ready.store(publisher.is_ready(), Ordering::Relaxed);
        let state = web::Data::new(IngressState {
            publisher: publisher.clone(),
            verifier,
            verify_token: config.verify_token.clone(),
            max_body_bytes: config.max_body_bytes,
        });

        let server = HttpServer::new(move || {
            let (state, readiness, metrics) = (state.clone(), readiness.clone(), metrics.clone());
            actix_web::App::new().configure(move |cfg| configure(cfg, state, readiness, metrics))
        })
        .workers(config.workers)
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        .bind(&config.addr)
        .with_context(|| format!("INGRESS_ADDR: cannot listen on {}", config.addr))?;
        let local_addr =
            server.addrs().first().copied().with_context(|| {
                format!("INGRESS_ADDR: no address to listen on in {}", config.addr)
            })?;
        tracing::info!(addr = %local_addr, workers = config.workers, "ingress listening");
        Ok(Self {
            server: server.run(),
            local_addr,
            publisher,
            broker_ready,
        })
    }

    /// The bound address (the real port when `INGRESS_ADDR` ends in `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled; then stops accepting, lets in-flight requests finish
    /// (their publishes confirm or fail with 503), and closes the broker channel and connection.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            server,
            publisher,
            broker_ready,
            ..
        } = self;
        let handle = server.handle();
        let watcher = tokio::spawn({
            let (publisher, shutdown) = (publisher.clone(), shutdown.clone());
            async move {
                loop {
                    broker_ready.store(publisher.is_ready(), Ordering::Relaxed);
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(READINESS_POLL) => {}
                    }
                }
                broker_ready.store(false, Ordering::Relaxed);
            }
        });
        let stopper = tokio::spawn(async move {
            shutdown.cancelled().await;
            tracing::info!("ingress draining: no new connections, finishing in-flight requests");
            handle.stop(true).await;
        });

        let served = server.await.context("HTTP server failed");
        stopper.abort();
        watcher.abort();
        publisher.close().await;
        tracing::info!("ingress stopped");
        served
    }
}

async fn declare(publisher: &Publisher) -> anyhow::Result<()> {
    let channel = publisher
        .connection()
        .create_channel()
        .await
        .context("opening a channel to declare the topology")?;
    wa_amqp::declare_topology(&channel, &wa_common::topology::topology())
        .await
        .context("declaring the broker topology")?;
    if let Err(err) = channel.close(200, "topology declared".into()).await {
        tracing::debug!(error = %err, "closing the declare channel failed");
    }
    Ok(())
}
