//! Starting, probing, restarting and stopping the real binaries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use tokio::process::{Child, Command};

/// Credentials and ids of the demo tenant (fake: they only ever reach graph-mock).
pub mod demo_tenant {
    /// Tenant id.
    pub const TENANT_ID: &str = "default";
    /// Business phone number id.
    pub const PHONE_NUMBER_ID: &str = "106540352242922";
    /// WhatsApp Business Account id.
    pub const WABA_ID: &str = "102290129340398";
    /// Access token graph-mock accepts.
    pub const ACCESS_TOKEN: &str = "demo-access-token";
    /// App secret both graph-mock (signing) and ingress (verifying) use.
    pub const APP_SECRET: &str = "demo-app-secret";
    /// Verify token of the GET handshake.
    pub const VERIFY_TOKEN: &str = "demo-verify-token";
    /// Bearer token of the conversation-sync read API.
    pub const SYNC_API_TOKEN: &str = "demo-sync-token";
    /// base64 of 32 bytes (0x00..0x1f): a demo key, never a production one.
    pub const ENCRYPTION_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
}

/// One program of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Program {
    /// The fake Graph API.
    GraphMock,
    /// Webhook ingress.
    Ingress,
    /// Graph API sender.
    Sender,
    /// Conversation history.
    ConversationSync,
    /// Reminders.
    ReminderScheduler,
}

impl Program {
    /// Binary name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::GraphMock => "graph-mock",
            Self::Ingress => "ingress",
            Self::Sender => "sender",
            Self::ConversationSync => "conversation-sync",
            Self::ReminderScheduler => "reminder-scheduler",
        }
    }

    /// Every program, graph-mock first.
    pub const ALL: [Program; 5] = [
        Self::GraphMock,
        Self::Ingress,
        Self::Sender,
        Self::ConversationSync,
        Self::ReminderScheduler,
    ];
}

/// Where the stack's broker and database listen (the machine's own by default; `wa-chaos` runs
/// private ones it can restart without disturbing anything else).
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// RabbitMQ AMQP port on 127.0.0.1.
    pub amqp_port: u16,
    /// PostgreSQL port on 127.0.0.1.
    pub postgres_port: u16,
    /// Base URL of the RabbitMQ management API (vhosts are created through it).
    pub management_api: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            amqp_port: 5672,
            postgres_port: 5432,
            management_api: "http://127.0.0.1:15672/api".to_owned(),
        }
    }
}

/// Ports and isolation of one stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Base port; graph-mock +0, ingress +1, sender +2, sync +3, scheduler +4.
    pub base_port: u16,
    /// RabbitMQ vhost (created fresh).
    pub vhost: String,
    /// PostgreSQL database (created fresh and migrated).
    pub database: String,
    /// Directory for logs and media.
    pub work_dir: PathBuf,
    /// Extra environment for every program (overrides the defaults).
    pub extra_env: BTreeMap<String, String>,
    /// Broker and database to use.
    pub endpoints: Endpoints,
}

impl StackConfig {
    /// Port of `program`.
    pub fn port(&self, program: Program) -> u16 {
        self.base_port + program as u16
    }

    /// `http://127.0.0.1:<port>` of `program`.
    pub fn url(&self, program: Program) -> String {
        format!("http://127.0.0.1:{}", self.port(program))
    }

    /// AMQP URL of the stack's vhost.
    pub fn amqp_url(&self) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/{}",
            self.endpoints.amqp_port, self.vhost
        )
    }

    /// Database URL of the stack's database.
    pub fn database_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.endpoints.postgres_port, self.database
        )
    }

    /// The environment of every program (each reads only the variables it needs).
    pub fn env(&self) -> BTreeMap<String, String> {
        use demo_tenant::*;
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_owned(), v);
        };
        set("AMQP_URL", self.amqp_url());
        set("DATABASE_URL", self.database_url());
        set(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        set("DEFAULT_TENANT_ID", TENANT_ID.into());
        set("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID.into());
        set("WHATSAPP_BUSINESS_ACCOUNT_ID", WABA_ID.into());
        set("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN.into());
        set("WHATSAPP_APP_SECRET", APP_SECRET.into());
        set("WHATSAPP_WEBHOOK_VERIFY_TOKEN", VERIFY_TOKEN.into());
        set("WHATSAPP_API_VERSION", "v24.0".into());
        set("WHATSAPP_GRAPH_BASE_URL", self.url(Program::GraphMock));
        set("MESSAGE_ENCRYPTION_KEY", ENCRYPTION_KEY.into());
        set("SYNC_API_TOKEN", SYNC_API_TOKEN.into());
        set(
            "MEDIA_DIR",
            self.work_dir.join("media").display().to_string(),
        );
        set(
            "INGRESS_ADDR",
            format!("127.0.0.1:{}", self.port(Program::Ingress)),
        );
        set(
            "SENDER_HTTP_ADDR",
            format!("127.0.0.1:{}", self.port(Program::Sender)),
        );
        set(
            "SYNC_HTTP_ADDR",
            format!("127.0.0.1:{}", self.port(Program::ConversationSync)),
        );
        set(
            "SCHEDULER_HTTP_ADDR",
            format!("127.0.0.1:{}", self.port(Program::ReminderScheduler)),
        );
        set(
            "GRAPH_MOCK_ADDR",
            format!("127.0.0.1:{}", self.port(Program::GraphMock)),
        );
        set("GRAPH_MOCK_TOKEN", ACCESS_TOKEN.into());
        set("GRAPH_MOCK_PHONE_NUMBER_IDS", PHONE_NUMBER_ID.into());
        set("GRAPH_MOCK_WABA_ID", WABA_ID.into());
        set("GRAPH_MOCK_APP_SECRET", APP_SECRET.into());
        set(
            "GRAPH_MOCK_WEBHOOK_URL",
            format!("{}/api/v1/whatsapp/webhook", self.url(Program::Ingress)),
        );
        set("GRAPH_MOCK_STATUS_DELAY_MS", "300".into());
        for (k, v) in &self.extra_env {
            env.insert(k.clone(), v.clone());
        }
        env
    }
}

/// Directory holding the workspace's binaries (next to the running executable).
pub fn binary_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("WA_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe
        .parent()
        .map(Path::to_path_buf)
        .context("executable has no directory")?;
    // Test binaries live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// A running stack of real processes.
pub struct Stack {
    /// Its configuration.
    pub config: StackConfig,
    children: BTreeMap<Program, Child>,
    http: reqwest::Client,
}

impl Stack {
    /// Creates the vhost and database fresh, migrates, and starts `programs`, waiting for readiness.
    pub async fn start(config: StackConfig, programs: &[Program]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(config.work_dir.join("media"))?;
        recreate_vhost(&config.endpoints.management_api, &config.vhost).await?;
        recreate_database(&config.database_url()).await?;
        wa_db::migrate::run_migrations(&config.database_url())
            .await
            .context("migrating the stack database")?;
        let mut stack = Self {
            config,
            children: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        for program in programs {
            stack.spawn(*program).await?;
        }
        Ok(stack)
    }

    /// Starts (or restarts) one program and waits until it is ready.
    pub async fn spawn(&mut self, program: Program) -> anyhow::Result<()> {
        let binary = binary_dir()?.join(program.binary());
        if !binary.exists() {
            bail!(
                "{} is not built (run `cargo build --workspace --bins`)",
                binary.display()
            );
        }
        let log_path = self
            .config
            .work_dir
            .join(format!("{}.log", program.binary()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(&binary)
            .envs(self.config.env())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.children.insert(program, child);
        self.wait_ready(program, Duration::from_secs(60))
            .await
            .with_context(|| {
                format!(
                    "{} did not become ready; see {}",
                    program.binary(),
                    log_path.display()
                )
            })
    }

    /// Polls `/readyz` (graph-mock: any answer) until it answers 200.
    pub async fn wait_ready(&mut self, program: Program, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(child) = self.children.get_mut(&program)
                && let Some(status) = child.try_wait()?
            {
                bail!("{} exited with {status}", program.binary());
            }
            if self.is_ready(program).await == Some(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} not ready after {timeout:?}", self.ready_url(program));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where readiness is asked: `/readyz`, or any answer of graph-mock's control API.
    fn ready_url(&self, program: Program) -> String {
        let path = if program == Program::GraphMock {
            "/_mock/stats"
        } else {
            "/readyz"
        };
        format!("{}{path}", self.config.url(program))
    }

    /// Whether `program` says it is ready (`None`: no answer at all).
    pub async fn is_ready(&self, program: Program) -> Option<bool> {
        let response = self
            .http
            .get(self.ready_url(program))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        Some(response.status().is_success())
    }

    /// Process id of `program`, while it runs.
    pub fn pid(&self, program: Program) -> Option<u32> {
        self.children.get(&program).and_then(Child::id)
    }

    /// Stops one program with SIGTERM (graceful) and waits for it to exit.
    pub async fn stop(&mut self, program: Program) -> anyhow::Result<()> {
        if let Some(mut child) = self.children.remove(&program) {
            terminate(&mut child, Duration::from_secs(30)).await?;
        }
        Ok(())
    }

    /// Kills one program with SIGKILL (no drain), as a crash would.
    pub async fn kill(&mut self, program: Program) -> anyhow::Result<()> {
        if let Some(mut child) = self.children.remove(&program) {
            child.kill().await?;
        }
        Ok(())
    }

    /// Stops every program gracefully, services before graph-mock.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for program in Program::ALL.iter().rev() {
            self.stop(*program).await?;
        }
        Ok(())
    }
}

async fn terminate(child: &mut Child, timeout: Duration) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(timeout, child.wait()).await.is_ok() {
            return Ok(());
        }
    }
    child.kill().await?;
    Ok(())
}

/// Runs `rabbitmqctl -q <args>`, failing when it does.
async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .status()
        .await?;
    anyhow::ensure!(status.success(), "rabbitmqctl {} failed", args.join(" "));
    Ok(())
}

/// Deletes a vhost if it exists (management API, else rabbitmqctl); returns whether the API answered.
async fn delete_vhost(http: &reqwest::Client, management_api: &str, vhost: &str) -> bool {
    let deleted = http
        .delete(format!("{management_api}/vhosts/{vhost}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await;
    if deleted.is_err() {
        let _ = rabbitmqctl(&["delete_vhost", vhost]).await;
    }
    deleted.is_ok()
}

/// Deletes and recreates a RabbitMQ vhost with guest permissions (management API, else rabbitmqctl).
pub async fn recreate_vhost(management_api: &str, vhost: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    if !delete_vhost(&http, management_api, vhost).await {
        rabbitmqctl(&["add_vhost", vhost]).await?;
        return rabbitmqctl(&["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]).await;
    }
    let created = http
        .put(format!("{management_api}/vhosts/{vhost}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "creating vhost {vhost}: {}",
        created.status()
    );
    let permissions = http
        .put(format!("{management_api}/permissions/{vhost}/guest"))
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
        .send()
        .await?;
    anyhow::ensure!(
        permissions.status().is_success(),
        "setting permissions on {vhost}"
    );
    Ok(())
}

/// Drops (with FORCE) the database of `database_url`; returns the maintenance connection and the
/// quoted name so the caller can recreate it.
async fn drop_database(database_url: &str) -> anyhow::Result<(wa_db::AsyncPgConnection, String)> {
    let name = wa_db::admin::database_name(database_url)?;
    let maintenance = wa_db::admin::with_database(database_url, "postgres")?;
    let mut conn = wa_db::AsyncPgConnection::establish(&maintenance).await?;
    let quoted = wa_db::admin::quote_identifier(&name);
    conn.batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .await?;
    Ok((conn, quoted))
}

/// Drops (with FORCE) and recreates the database of `database_url`.
pub async fn recreate_database(database_url: &str) -> anyhow::Result<()> {
    let (mut conn, quoted) = drop_database(database_url).await?;
    conn.batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await?;
    Ok(())
}

/// Deletes a stack's vhost and database (tests clean up after themselves).
pub async fn drop_isolation(vhost: &str, database_url: &str) -> anyhow::Result<()> {
    delete_vhost(
        &reqwest::Client::new(),
        &Endpoints::default().management_api,
        vhost,
    )
    .await;
    drop_database(database_url).await?;
    Ok(())
}
