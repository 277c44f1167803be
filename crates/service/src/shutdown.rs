//! The one shutdown signal of a process: a token cancelled on SIGTERM or SIGINT.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled when the process receives SIGTERM or SIGINT.
///
/// The handlers are installed before this returns, so a signal sent as soon as the service says it is ready drains it
/// instead of meeting the default action, which would kill the process mid-work.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    let signal = stop_requested();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown signal received; draining");
        trigger.cancel();
    });
    token
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that resolves on either.
///
/// Call it before saying "ready": a signal that arrives before the handlers exist gets the default
/// action and kills the process instead of stopping it gracefully.
#[cfg(unix)]
pub fn stop_requested() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                // Without signal handlers the process can still be stopped by SIGKILL; keep running.
                tracing::warn!("could not install signal handlers");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Resolves on Ctrl-C (the handler is installed when first polled on this platform).
#[cfg(not(unix))]
pub fn stop_requested() -> impl Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
