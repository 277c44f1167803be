//! `/healthz`, `/readyz` and `/metrics`: the same three endpoints on every service.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{HttpResponse, web};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// A named readiness flag.
type Check = (&'static str, Arc<AtomicBool>);

/// Readiness checks a service registers (broker channel open, database reachable, …).
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<std::sync::RwLock<Vec<Check>>>,
}

impl Readiness {
    /// Registers a named flag; the service is ready only while every flag is true.
    pub fn flag(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut checks) = self.checks.write() {
            checks.push((name, flag.clone()));
        }
        flag
    }

    /// Names of the checks currently failing.
    pub fn failing(&self) -> Vec<&'static str> {
        self.checks
            .read()
            .map(|checks| {
                checks
                    .iter()
                    .filter(|(_, flag)| !flag.load(Ordering::Relaxed))
                    .map(|(name, _)| *name)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Bucket bounds of every `*_seconds` histogram: 0.5 ms (a local confirm) to 60 s (a lagging queue).
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Installs the global Prometheus recorder (once per process) and returns its handle.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    // Latencies (`*_seconds`) render as real Prometheus histograms, so dashboards can aggregate
    // quantiles across replicas with `histogram_quantile` (summaries cannot be aggregated).
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            LATENCY_BUCKETS_SECONDS,
        )
        .map_err(|e| anyhow::anyhow!("configuring the metrics buckets failed: {e}"))?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder failed: {e}"))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let failing = readiness.failing();
    if failing.is_empty() {
        HttpResponse::Ok().content_type("text/plain").body("ready")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: {}", failing.join(", ")))
    }
}

async fn metrics_endpoint(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

/// Registers `/healthz`, `/readyz` and `/metrics`; ingress mounts these beside its own routes.
pub fn configure(cfg: &mut web::ServiceConfig, readiness: Readiness, metrics: PrometheusHandle) {
    cfg.app_data(web::Data::new(readiness))
        .app_data(web::Data::new(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics_endpoint));
}

/// A bound health/metrics server for a worker; runs until `shutdown` is cancelled.
pub struct HealthServer {
    server: actix_web::dev::Server,
    /// The address it listens on (useful with port 0 in tests).
    pub local_addr: std::net::SocketAddr,
}

impl HealthServer {
    /// Binds `addr` now (so a bad address fails at start-up), serving the three endpoints.
    pub fn bind(
        addr: &str,
        readiness: Readiness,
        metrics: PrometheusHandle,
    ) -> anyhow::Result<Self> {
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .configure(|cfg| configure(cfg, readiness.clone(), metrics.clone()))
        })
        .workers(1)
        .disable_signals()
        .bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let local_addr = server
            .addrs()
            .first()
            .copied()
            .ok_or_else(|| anyhow::anyhow!("cannot listen on {addr}: no address"))?;
        Ok(Self {
            server: server.run(),
            local_addr,
        })
    }

    /// Serves until `shutdown` is cancelled, then stops gracefully.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let stopper = tokio::spawn(async move {
            shutdown.cancelled().await;
            handle.stop(true).await;
        });
        self.server.await?;
        stopper.abort();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn readyz_reports_failing_checks_until_they_pass() {
        let readiness = Readiness::default();
        let broker = readiness.flag("broker");
        let metrics = install_metrics().expect("recorder");
        let server = HealthServer::bind("127.0.0.1:0", readiness, metrics).expect("bind");
        let base = format!("http://{}", server.local_addr);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(server.run_until(shutdown.clone()));
        let client = reqwest::Client::new();

        let health = client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200);
        let not_ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(not_ready.status(), 503);
        assert!(
            not_ready
                .text()
                .await
                .unwrap_or_default()
                .contains("broker")
        );
        broker.store(true, Ordering::Relaxed);
        let ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200);
        metrics::counter!("wa_test_total").increment(1);
        let scraped = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics");
        assert!(
            scraped
                .text()
                .await
                .unwrap_or_default()
                .contains("wa_test_total")
        );

        shutdown.cancel();
        running
            .await
            .expect("join")
            .expect("server stopped cleanly");
    }
}
