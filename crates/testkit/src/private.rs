//! A private RabbitMQ node and a private PostgreSQL cluster, for tests that restart them.
//!
//! Restarting the machine's shared broker or database would break every other test running beside
//! it, so the reconnect tests and `wa-chaos` start their own on other ports, restart those, and
//! remove them (data directories included) when dropped. Needs the Debian packages' layout
//! (`/usr/lib/rabbitmq`, the `rabbitmq` and `postgres` users) and root, as on the dev and CI
//! machines.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::process::Command;

/// Home of the Debian package's `rabbitmq` user: its Erlang cookie is the one `rabbitmqctl` uses,
/// so the private node must read the same one.
const RABBITMQ_HOME: &str = "/var/lib/rabbitmq";
/// The RabbitMQ start script that honours `RABBITMQ_*` variables (the `/usr/sbin` wrapper
/// switches user and drops them).
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// A RabbitMQ node of our own (`<name>@localhost`) with the management plugin.
pub struct PrivateBroker {
    node: String,
    dir: PathBuf,
    /// AMQP port on 127.0.0.1.
    pub amqp_port: u16,
    /// Management API port on 127.0.0.1.
    pub management_port: u16,
}

impl PrivateBroker {
    /// Starts node `name` with AMQP on `amqp_port`, management on `amqp_port + 10000` and
    /// distribution on `amqp_port + 20000`, its data under `dir` (wiped first); waits until it
    /// serves. A node of that name left over by an earlier run is stopped first.
    pub async fn start(name: &str, amqp_port: u16, dir: &Path) -> anyhow::Result<Self> {
        let node = format!("{name}@localhost");
        let management_port = amqp_port + 10_000;
        // A node left behind by a killed run would hold the ports.
        let _ = run(rabbitmqctl(&node, &["stop"])).await;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.local = 127.0.0.1:{amqp_port}\n\
                 management.tcp.ip = 127.0.0.1\n\
                 management.tcp.port = {management_port}\n"
            ),
        )?;
        std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_management].\n")?;
        let status = Command::new(RABBITMQ_SERVER)
            .arg("-detached")
            .env("HOME", RABBITMQ_HOME)
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_PORT", amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", (amqp_port + 20_000).to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .with_context(|| format!("starting {RABBITMQ_SERVER}"))?;
        ensure!(status.success(), "{RABBITMQ_SERVER} -detached failed");
        let broker = Self {
            node,
            dir: dir.to_owned(),
            amqp_port,
            management_port,
        };
        // `await_startup` fails until the node has registered with epmd.
        for _ in 0..60 {
            if run(rabbitmqctl(
                &broker.node,
                &["await_startup", "--timeout", "60"],
            ))
            .await
            .is_ok()
            {
                return broker.wait_management().await.map(|()| broker);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!(
            "RabbitMQ node {} did not start; see {}",
            broker.node,
            broker.dir.join("log").display()
        )
    }

    /// AMQP URL of the node's default vhost (`/`), as guest.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// Base URL of the management API.
    pub fn management_api(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.management_port)
    }

    /// `rabbitmqctl stop_app`: the broker stops serving (connections drop), the node stays up.
    pub async fn stop_app(&self) -> anyhow::Result<()> {
        run(rabbitmqctl(&self.node, &["stop_app"])).await
    }

    /// `rabbitmqctl start_app`, then waits until the management API answers again.
    pub async fn start_app(&self) -> anyhow::Result<()> {
        run(rabbitmqctl(&self.node, &["start_app"])).await?;
        run(rabbitmqctl(
            &self.node,
            &["await_startup", "--timeout", "60"],
        ))
        .await?;
        self.wait_management().await
    }

    async fn wait_management(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        for _ in 0..120 {
            let answer = http
                .get(format!("{}/overview", self.management_api()))
                .basic_auth("guest", Some("guest"))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("management API of {} did not come up", self.node)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = quietly(rabbitmqctl(&self.node, &["stop"])).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster of our own (trust auth, user `postgres`), run as the `postgres` user.
pub struct PrivatePostgres {
    dir: PathBuf,
    /// Port on 127.0.0.1.
    pub port: u16,
}

impl PrivatePostgres {
    /// `initdb` under `dir` (wiped first) and starts the server on `port`.
    pub async fn start(port: u16, dir: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let mut chown = std::process::Command::new("chown");
        chown.arg("postgres").arg(dir);
        run(chown).await?;
        let data = dir.join("data");
        run(as_postgres(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        ))
        .await?;
        let cluster = Self {
            dir: dir.to_owned(),
            port,
        };
        cluster.pg_ctl(&["-w", "start"]).await?;
        Ok(cluster)
    }

    /// Stops the server the hard way (`-m immediate`: like a crash, recovery on the next start),
    /// waits `down`, and starts it again.
    pub async fn crash_restart(&self, down: Duration) -> anyhow::Result<()> {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]).await?;
        tokio::time::sleep(down).await;
        self.pg_ctl(&["-w", "start"]).await
    }

    async fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        run(self.pg_ctl_command(args)).await
    }

    /// `pg_ctl` on this cluster's data directory, port and log, as the `postgres` user.
    fn pg_ctl_command(&self, args: &[&str]) -> std::process::Command {
        let data = self.dir.join("data").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        let mut all = vec!["-D", &data, "-o", &options, "-l", &log];
        all.extend_from_slice(args);
        as_postgres("pg_ctl", &all)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = quietly(self.pg_ctl_command(&["-m", "immediate", "-w", "stop"])).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `rabbitmqctl -q -n <node> <args>` with the Erlang cookie the node uses.
fn rabbitmqctl(node: &str, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("rabbitmqctl");
    command
        .args(["-q", "-n", node])
        .args(args)
        .env("HOME", RABBITMQ_HOME);
    command
}

/// `program args` as the `postgres` user (PostgreSQL refuses to run as root).
fn as_postgres(program: &str, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("runuser");
    command.args(["-u", "postgres", "--", program]).args(args);
    command
}

/// `command` with its output discarded (for `Drop`, where nobody can read it).
fn quietly(mut command: std::process::Command) -> std::process::Command {
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command
}

/// Runs `command` to completion, failing with its stderr when it fails.
async fn run(command: std::process::Command) -> anyhow::Result<()> {
    let what = format!("{command:?}");
    let output = Command::from(command)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    ensure!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
