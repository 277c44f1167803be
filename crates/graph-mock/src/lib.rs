#![doc = include_str!("../README.md")]

pub mod config;
pub mod error;
pub mod ids;
pub mod limiter;
pub mod multipart;
pub mod phone;
pub mod png;
pub mod recorder;
pub mod routes;
pub mod scripted;
pub mod state;
pub mod telemetry;
pub mod templates;
pub mod validate;
pub mod webhook;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use config::{BusinessNumber, Cli, ConfigError, DEFAULT_TOKEN, EXPIRED_TOKEN, MockConfig};
pub use recorder::{PhoneStats, RecordedRequest, RequestFilter, Stats, WebhookStats};
pub use routes::{InboundOutcome, InboundSpec};
pub use scripted::{Script, number_for};
pub use state::{FaultMode, FaultSpec, Settings, SettingsPatch, Shared};

/// A mock bound to its port and serving; stop it with [`RunningMock::stop`] (dropping it stops it too).
pub struct RunningMock {
    base_url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    handle: ServerHandle,
    server: Option<JoinHandle<std::io::Result<()>>>,
    dispatcher: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

/// Binds `config.addr`, starts the HTTP server and the webhook dispatcher on the current tokio runtime.
pub async fn spawn(config: MockConfig) -> anyhow::Result<RunningMock> {
    config.validate()?;
    let listener = TcpListener::bind(config.addr)
        .with_context(|| format!("binding GRAPH_MOCK_ADDR {}", config.addr))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let workers = config.workers;
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(
        Shared::new(config, tx, tokio::runtime::Handle::current())
            .context("building the webhook HTTP client")?,
    );
    let data = web::Data::from(Arc::clone(&shared));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(routes::configure)
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)
    .context("listening")?
    .run();
    let handle = server.handle();
    let server = tokio::spawn(server);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let dispatcher = tokio::spawn(webhook::run_dispatcher(
        Arc::clone(&shared),
        rx,
        shutdown_rx,
    ));
    tracing::info!(%addr, "graph-mock listening");
    Ok(RunningMock {
        base_url: format!("http://{addr}"),
        addr,
        shared,
        handle,
        server: Some(server),
        dispatcher: Some(dispatcher),
        shutdown,
    })
}

impl RunningMock {
    /// `http://127.0.0.1:<port>`: use it as the Graph base URL (`WHATSAPP_GRAPH_BASE_URL`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state, for in-process inspection and control.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A snapshot of the statistics (the same as `GET /_mock/stats`).
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Recorded requests matching `filter`, oldest first.
    pub fn requests(&self, filter: &RequestFilter) -> Vec<RecordedRequest> {
        self.shared.recorder.query(filter)
    }

    /// Changes run-time settings (webhook URL, delays, rate, ...).
    pub fn update_settings(&self, patch: SettingsPatch) -> Result<Arc<Settings>, String> {
        self.shared.update_settings(patch)
    }

    /// Adds a fault (the same as `POST /_mock/faults`).
    pub fn add_fault(&self, spec: FaultSpec) {
        self.shared.add_fault(spec);
    }

    /// Injects an inbound message (the same as `POST /_mock/inbound`).
    pub async fn inject_inbound(&self, spec: InboundSpec) -> Result<InboundOutcome, String> {
        routes::inject_inbound(&self.shared, spec).await
    }

    /// Stops accepting, finishes in-flight requests (bounded by 5 s) and stops the dispatcher.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.await;
        }
    }
}

impl Drop for RunningMock {
    fn drop(&mut self) {
        // The stop command is sent when `stop` is called; the returned future only waits for completion.
        drop(self.handle.stop(false));
        let _ = self.shutdown.send(true);
    }
}
