//! A TCP proxy a test can break on purpose: point a service at [`TcpProxy::addr`] instead of the
//! real broker (or database), then [`TcpProxy::cut`] to simulate an outage (every open connection
//! is dropped, new ones are closed at once) and [`TcpProxy::restore`] to end it, or
//! [`TcpProxy::set_latency`] to make it slow. Lets one test break *its* service's connection
//! without touching the shared broker other tests use.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy to one target; stops (dropping every connection) when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_loop: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    accepted: AtomicU64,
    /// One-way delay of every chunk forwarded, in µs.
    latency_us: AtomicU64,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn drop_all(&self) {
        let connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for connection in connections {
            connection.abort();
        }
    }
}

impl TcpProxy {
    /// Listens on a random local port and forwards every connection to `target` (`host:port`).
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy port")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let target = target.to_owned();
        let accept_loop = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if shared.cut.load(Ordering::SeqCst) {
                        // Refused: closed before a byte is exchanged.
                        drop(client);
                        continue;
                    }
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    let target = target.clone();
                    let connection = tokio::spawn(pipe(client, target, shared.clone()));
                    let mut connections = shared
                        .connections
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    connections.retain(|c| !c.is_finished());
                    connections.push(connection);
                }
            }
        });
        Ok(Self {
            addr,
            shared,
            accept_loop,
        })
    }

    /// The local address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its `host:port` replaced by the proxy's (credentials, vhost and query kept), e.g.
    /// the `AMQP_URL` to give the service under test.
    pub fn rewrite_url(&self, url: &str) -> String {
        rewrite_authority(url, self.addr)
    }

    /// Starts an outage: drops every open connection and closes new ones as they arrive.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.drop_all();
    }

    /// Ends the outage: new connections are forwarded again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Delays every chunk forwarded in either direction by `one_way` (zero: none), so a request
    /// and its answer take two of them more: a slow network or a starved server.
    pub fn set_latency(&self, one_way: std::time::Duration) {
        let micros = u64::try_from(one_way.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_us.store(micros, Ordering::SeqCst);
    }

    /// How many connections were forwarded so far (a reconnect shows up as one more).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.shared.drop_all();
    }
}

fn rewrite_authority(url: &str, addr: SocketAddr) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let userinfo = authority
        .rsplit_once('@')
        .map(|(userinfo, _)| format!("{userinfo}@"))
        .unwrap_or_default();
    format!("{scheme}://{userinfo}{addr}{tail}")
}

async fn pipe(client: TcpStream, target: String, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    // Either direction ending ends the connection (as `copy_bidirectional` would).
    tokio::select! {
        () = forward(client_read, upstream_write, &shared) => {}
        () = forward(upstream_read, client_write, &shared) => {}
    }
}

/// Copies `from` to `to`, each chunk after the current latency.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let latency = shared.latency_us.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(latency)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"ping").await?;
        let mut buf = [0_u8; 4];
        stream.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn proxy_forwards_until_cut_and_again_after_restore() {
        let target = echo_server().await;
        let proxy = TcpProxy::start(&target.to_string()).await.expect("proxy");
        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        open.write_all(b"hi").await.expect("write");
        let mut buf = [0_u8; 2];
        open.read_exact(&mut buf).await.expect("echo");

        assert_eq!(round_trip(proxy.addr()).await.expect("forwarded"), b"ping");

        proxy.cut();
        let mut rest = Vec::new();
        let read = open.read_to_end(&mut rest).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "open connection was dropped: {read:?}"
        );
        assert!(
            round_trip(proxy.addr()).await.is_err(),
            "new connections are refused"
        );

        proxy.restore();
        assert_eq!(
            round_trip(proxy.addr()).await.expect("forwarded again"),
            b"ping"
        );
        assert_eq!(proxy.accepted(), 3);
    }

    #[test]
    fn urls_keep_credentials_vhost_and_query() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        assert_eq!(
            rewrite_authority(
                "amqp://guest:guest@127.0.0.1:5672/wa-test-1?heartbeat=5",
                addr
            ),
            "amqp://guest:guest@127.0.0.1:4000/wa-test-1?heartbeat=5"
        );
        assert_eq!(
            rewrite_authority("amqp://rabbit", addr),
            "amqp://127.0.0.1:4000"
        );
    }
}
