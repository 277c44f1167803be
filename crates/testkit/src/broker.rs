//! A RabbitMQ virtual host per test on the machine's broker, deleted afterwards.
//!
//! Each [`TestBroker`] creates `wa-test-<uuid>` and grants the URL's user full permissions on it,
//! through the management HTTP API (port 15672) when it answers, else through `rabbitmqctl`. Tests
//! can then declare the real topology with its real names without seeing each other's messages.
//!
//! Broker: `TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672`; any vhost path in it is
//! ignored). Management API: `TEST_RABBITMQ_MANAGEMENT_URL` (default `http://<amqp host>:15672`),
//! with the AMQP URL's credentials. Set `TEST_KEEP_VHOST` to keep the vhost for inspection.

use std::time::Duration;

use anyhow::{Context as _, bail};
use lapin::Channel;
use lapin::options::BasicGetOptions;
use lapin::types::FieldTable;
use wa_amqp::Connection;

/// Broker used when `TEST_AMQP_URL` is not set (the local broker with the default user).
pub const DEFAULT_TEST_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672";

const VHOST_PREFIX: &str = "wa-test-";

/// A fresh vhost of its own for one test; deleted on `Drop`.
#[derive(Debug)]
pub struct TestBroker {
    /// AMQP URL of this test's vhost, for `wa_amqp::connect` or the service under test.
    pub amqp_url: String,
    /// The vhost name, `wa-test-<uuid>`.
    pub vhost: String,
    admin: Admin,
}

/// How vhosts are created and deleted on this machine.
#[derive(Debug, Clone)]
enum Admin {
    Http {
        base_url: String,
        user: String,
        password: String,
    },
    Ctl {
        user: String,
    },
}

/// The pieces of `TEST_AMQP_URL` we need.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BrokerAddress {
    /// `amqp://user:pass@host:port`, without a vhost path.
    base: String,
    host: String,
    user: String,
    password: String,
}

fn broker_address(url: &str) -> anyhow::Result<BrokerAddress> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("TEST_AMQP_URL is not a URL: {}", wa_amqp::redact_url(url)))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (userinfo, host_port) = authority
        .rsplit_once('@')
        .unwrap_or(("guest:guest", authority));
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(host, _port)| host);
    Ok(BrokerAddress {
        base: format!("{scheme}://{userinfo}@{host_port}"),
        host: host.to_owned(),
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

impl TestBroker {
    /// Creates the vhost and grants permissions; fails with a hint when the broker is unreachable.
    pub async fn new() -> anyhow::Result<TestBroker> {
        let url =
            std::env::var("TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_TEST_AMQP_URL.to_owned());
        let address = broker_address(&url)?;
        let vhost = format!("{VHOST_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let management_url = std::env::var("TEST_RABBITMQ_MANAGEMENT_URL")
            .unwrap_or_else(|_| format!("http://{}:15672", address.host));

        let http = Admin::Http {
            base_url: management_url.trim_end_matches('/').to_owned(),
            user: address.user.clone(),
            password: address.password.clone(),
        };
        let admin = match http.create_vhost(&vhost).await {
            Ok(()) => http,
            Err(http_error) => {
                let ctl = Admin::Ctl {
                    user: address.user.clone(),
                };
                ctl.create_vhost(&vhost).await.with_context(|| {
                    format!(
                        "creating test vhost {vhost}: management API failed ({http_error:#}) and rabbitmqctl failed too; \
                         is RabbitMQ running (TEST_AMQP_URL={})?",
                        wa_amqp::redact_url(&url)
                    )
                })?;
                ctl
            }
        };
        Ok(TestBroker {
            amqp_url: format!("{}/{vhost}", address.base),
            vhost,
            admin,
        })
    }

    /// A new connection to this vhost (reconnects by itself), named `name` in the management UI.
    pub async fn connect(&self, name: &str) -> anyhow::Result<Connection> {
        wa_amqp::connect(&self.amqp_url, name)
            .await
            .with_context(|| format!("connecting to test vhost {}", self.vhost))
    }

    /// A connection with the full `wa_common` topology declared on this vhost.
    pub async fn declared(&self) -> anyhow::Result<Connection> {
        let connection = self.connect("testkit").await?;
        let channel = connection.create_channel().await?;
        wa_amqp::declare_topology(&channel, &wa_common::topology::topology())
            .await
            .context("declaring the topology")?;
        channel.close(200, "declared".into()).await?;
        Ok(connection)
    }

    /// True when vhosts are managed through the management HTTP API (so [`Self::queue_info`] works).
    pub fn has_management_api(&self) -> bool {
        matches!(self.admin, Admin::Http { .. })
    }

    /// The management API's view of `queue` (`type`, `arguments`, …); an error when the management
    /// plugin is not reachable.
    pub async fn queue_info(&self, queue: &str) -> anyhow::Result<serde_json::Value> {
        let Admin::Http {
            base_url,
            user,
            password,
        } = &self.admin
        else {
            bail!("the management API is not reachable (enable rabbitmq_management)");
        };
        let response = reqwest::Client::new()
            .get(format!(
                "{base_url}/api/queues/{}/{}",
                encode(&self.vhost),
                encode(queue)
            ))
            .basic_auth(user, Some(password))
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if std::env::var_os("TEST_KEEP_VHOST").is_some() {
            eprintln!(
                "wa_testkit: keeping test vhost {} (TEST_KEEP_VHOST is set)",
                self.vhost
            );
            return;
        }
        // Drop may run inside a tokio runtime (cannot block_on there) or outside any runtime,
        // so the deletion runs on a thread of its own with its own small runtime.
        let admin = self.admin.clone();
        let vhost = self.vhost.clone();
        let deleted = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(admin.delete_vhost(&vhost))
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!(
                "wa_testkit: could not delete test vhost {}: {err:#}",
                self.vhost
            ),
            Err(_) => eprintln!("wa_testkit: deleting test vhost {} panicked", self.vhost),
        }
    }
}

impl Admin {
    async fn create_vhost(&self, vhost: &str) -> anyhow::Result<()> {
        match self {
            Admin::Http {
                base_url,
                user,
                password,
            } => {
                let client = reqwest::Client::new();
                client
                    .put(format!("{base_url}/api/vhosts/{}", encode(vhost)))
                    .basic_auth(user, Some(password))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await?
                    .error_for_status()?;
                client
                    .put(format!(
                        "{base_url}/api/permissions/{}/{}",
                        encode(vhost),
                        encode(user)
                    ))
                    .basic_auth(user, Some(password))
                    .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await?
                    .error_for_status()?;
                Ok(())
            }
            Admin::Ctl { user } => {
                rabbitmqctl(&["add_vhost", vhost]).await?;
                rabbitmqctl(&["set_permissions", "-p", vhost, user, ".*", ".*", ".*"])
                    .await
                    .map(drop)
            }
        }
    }

    async fn delete_vhost(&self, vhost: &str) -> anyhow::Result<()> {
        match self {
            Admin::Http {
                base_url,
                user,
                password,
            } => {
                reqwest::Client::new()
                    .delete(format!("{base_url}/api/vhosts/{}", encode(vhost)))
                    .basic_auth(user, Some(password))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await?
                    .error_for_status()?;
                Ok(())
            }
            Admin::Ctl { .. } => rabbitmqctl(&["delete_vhost", vhost]).await.map(drop),
        }
    }
}

/// Consumers subscribed to each queue of `vhost`, by queue name, waiting single-active consumers
/// included: read live from the broker by `rabbitmqctl list_consumers` (the management API's
/// consumer list trails by its statistics interval, and a passive declare counts active ones only).
pub async fn consumers_by_queue(
    vhost: &str,
) -> anyhow::Result<std::collections::HashMap<String, usize>> {
    let listed = rabbitmqctl(&[
        "-q",
        "list_consumers",
        "-p",
        vhost,
        "queue_name",
        "--formatter",
        "json",
    ])
    .await?;
    let consumers: Vec<serde_json::Value> =
        serde_json::from_str(&listed).context("rabbitmqctl list_consumers answered JSON")?;
    let mut by_queue = std::collections::HashMap::new();
    for consumer in &consumers {
        let queue = consumer["queue_name"]
            .as_str()
            .context("a consumer without queue_name")?;
        *by_queue.entry(queue.to_owned()).or_default() += 1;
    }
    Ok(by_queue)
}

/// Runs `rabbitmqctl` with `args`; its standard output.
async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .context("running rabbitmqctl")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Percent-encodes a path segment of the management API (vhost and queue names contain `.`/`-`,
/// which are safe, but `/` in the default vhost is not).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Takes one message off `queue` (auto-acked); `None` when the queue is empty.
///
/// The broker refuses `basic.get` on quorum queues with single active consumer (`RESOURCE_LOCKED`,
/// which also closes `channel`): read those with a consumer instead.
pub async fn get_one(
    channel: &Channel,
    queue: &str,
) -> anyhow::Result<Option<(Vec<u8>, FieldTable)>> {
    let message = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .with_context(|| format!("basic.get on {queue}"))?;
    Ok(message.map(|message| {
        let headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        (message.delivery.data, headers)
    }))
}

/// Polls `queue` until a message arrives (taking it) or `timeout` passes (`None`); same
/// single-active-consumer caveat as [`get_one`].
pub async fn wait_for_message(
    channel: &Channel,
    queue: &str,
    timeout: Duration,
) -> anyhow::Result<Option<(Vec<u8>, FieldTable)>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(message) = get_one(channel, queue).await? {
            return Ok(Some(message));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long [`wait_for_len`] waits before giving up.
pub const WAIT_FOR_LEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls until `queue` holds exactly `expected` ready messages (without taking any); an error
/// naming the last length seen after [`WAIT_FOR_LEN_TIMEOUT`].
pub async fn wait_for_len(channel: &Channel, queue: &str, expected: u32) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_LEN_TIMEOUT;
    loop {
        let len = queue_len(channel, queue).await?;
        if len == expected {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{queue} has {len} messages, expected {expected} within {WAIT_FOR_LEN_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Messages ready in `queue` (passive declare; a missing queue closes `channel`).
pub async fn queue_len(channel: &Channel, queue: &str) -> anyhow::Result<u32> {
    wa_amqp::queue_depth(channel, queue)
        .await
        .with_context(|| format!("passive declare of {queue}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_address_drops_the_vhost_and_keeps_credentials() {
        let address = broker_address("amqp://svc:pw@rabbit:5673/%2f?heartbeat=5").ok();
        assert_eq!(
            address,
            Some(BrokerAddress {
                base: "amqp://svc:pw@rabbit:5673".into(),
                host: "rabbit".into(),
                user: "svc".into(),
                password: "pw".into(),
            })
        );
    }

    #[test]
    fn management_path_segments_are_percent_encoded() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("wa-test-1.a_b"), "wa-test-1.a_b");
    }
}
