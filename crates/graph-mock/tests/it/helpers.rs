//! Test helpers: a mock per test on a random port, a reqwest client, and an in-test webhook receiver that checks the
//! HMAC over the raw bytes it received.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wa_graph_mock::config::{DEFAULT_PHONE_NUMBER_ID, DEFAULT_WABA_ID};
use wa_graph_mock::{DEFAULT_TOKEN, MockConfig, RunningMock};

pub const PNID: &str = DEFAULT_PHONE_NUMBER_ID;
pub const WABA: &str = DEFAULT_WABA_ID;
pub const TOKEN: &str = DEFAULT_TOKEN;
pub const SECRET: &str = "rahasia-aplikasi-uji";
pub const JAMAAH: &str = "+6281234567890";

/// A running mock plus a client pointed at it.
pub struct TestMock {
    pub mock: RunningMock,
    pub http: reqwest::Client,
}

impl TestMock {
    /// A mock with [`MockConfig::for_tests`] adjusted by `adjust`.
    pub async fn with(adjust: impl FnOnce(&mut MockConfig)) -> Self {
        let mut config = MockConfig::for_tests();
        adjust(&mut config);
        let mock = wa_graph_mock::spawn(config).await.expect("mock starts");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self { mock, http }
    }

    /// A mock with the test defaults.
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// A mock that calls `receiver` back.
    pub async fn with_webhook(receiver: &Receiver, adjust: impl FnOnce(&mut MockConfig)) -> Self {
        let url = receiver.url.clone();
        Self::with(move |c| {
            c.webhook_url = Some(url);
            c.app_secret = SECRET.to_owned();
            adjust(c);
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.mock.base_url())
    }

    /// POSTs a send body to `/v24.0/{PNID}/messages` with the default token.
    pub async fn send(&self, body: Value) -> (u16, Value) {
        self.send_as(Some(TOKEN), PNID, body).await
    }

    pub async fn send_as(&self, token: Option<&str>, pnid: &str, body: Value) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url(&format!("/v24.0/{pnid}/messages")))
            .json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        into_json(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        into_json(
            self.http
                .get(self.url(path))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("request sent"),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        into_json(
            self.http
                .post(self.url(path))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .expect("request sent"),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.http
            .delete(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request sent")
            .status()
            .as_u16()
    }

    pub async fn stats(&self) -> Value {
        self.get("/_mock/stats").await.1
    }
}

pub async fn into_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body read");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(json!({"raw": text}))
    };
    (status, value)
}

pub fn text_to(to: &str, body: &str) -> Value {
    json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "text", "text": {"body": body}})
}

pub fn template_to(to: &str, name: &str, params: &[&str]) -> Value {
    let parameters: Vec<Value> = params
        .iter()
        .map(|p| json!({"type": "text", "text": p}))
        .collect();
    json!({
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": {"name": name, "language": {"code": "id"}, "components": [{"type": "body", "parameters": parameters}]}
    })
}

/// Six parameters for the seeded `payment_reminder`.
pub fn reminder_params() -> Vec<&'static str> {
    vec![
        "Siti Aminah",
        "Umrah Reguler 12 Hari",
        "05 Des 2026",
        "1.500.000",
        "Ahmad",
        "+62 812-3456-7890",
    ]
}

/// Asserts Meta's error envelope with the given HTTP status and code.
#[track_caller]
pub fn assert_meta_error(got: &(u16, Value), status: u16, code: i64) {
    let (got_status, body) = got;
    assert_eq!(*got_status, status, "HTTP status; body: {body}");
    let err = &body["error"];
    assert_eq!(err["code"], code, "error code; body: {body}");
    assert_eq!(err["type"], "OAuthException", "{body}");
    assert_eq!(err["error_data"]["messaging_product"], "whatsapp", "{body}");
    assert!(err["message"].is_string(), "{body}");
    assert!(err["error_data"]["details"].is_string(), "{body}");
    assert!(
        err["fbtrace_id"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
}

/// A unique plausible Indonesian mobile number per call.
pub fn unique_number() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("+62813{:08}", (std::process::id() % 1000) * 100_000 + n)
}

/// One webhook POST the receiver got.
#[derive(Debug, Clone)]
pub struct Post {
    pub raw: Vec<u8>,
    pub signature: Option<String>,
    pub signature_valid: bool,
    pub content_type: Option<String>,
    pub json: Value,
    pub answered: u16,
}

impl Post {
    pub fn statuses(&self) -> Vec<Value> {
        values(&self.json, "statuses")
    }
}

/// Every `value.<key>[]` element of a webhook, over every entry and change.
pub fn values(body: &Value, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for entry in body["entry"].as_array().into_iter().flatten() {
        for change in entry["changes"].as_array().into_iter().flatten() {
            out.extend(
                change["value"][key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
    }
    out
}

struct ReceiverState {
    secret: String,
    posts: Mutex<Vec<Post>>,
    fail_remaining: AtomicU32,
    hold_next_ms: AtomicU64,
}

/// Our webhook, in miniature.
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
    handle: ServerHandle,
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(ReceiverState {
            secret: SECRET.to_owned(),
            posts: Mutex::new(Vec::new()),
            fail_remaining: AtomicU32::new(0),
            hold_next_ms: AtomicU64::new(0),
        });
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/webhook", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("receiver binds");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://{addr}/webhook"),
            state,
            handle,
        }
    }

    /// Answer the next `n` POSTs with 500.
    pub fn fail_next(&self, n: u32) {
        self.state.fail_remaining.store(n, Ordering::SeqCst);
    }

    /// Make the next POST wait `ms` before answering (graph-mock's dispatcher waits for it).
    pub fn hold_next(&self, ms: u64) {
        self.state.hold_next_ms.store(ms, Ordering::SeqCst);
    }

    pub fn posts(&self) -> Vec<Post> {
        self.state.posts.lock().expect("lock").clone()
    }

    /// Posts answered 200, in arrival order.
    pub fn accepted_posts(&self) -> Vec<Post> {
        self.posts()
            .into_iter()
            .filter(|p| p.answered == 200)
            .collect()
    }

    /// Every status of every accepted POST, in arrival order.
    pub fn statuses(&self) -> Vec<Value> {
        self.accepted_posts()
            .iter()
            .flat_map(Post::statuses)
            .collect()
    }

    /// Statuses for one wamid, in arrival order.
    pub fn statuses_of(&self, wamid: &str) -> Vec<Value> {
        self.statuses()
            .into_iter()
            .filter(|s| s["id"] == wamid)
            .collect()
    }

    /// Waits until `done` holds for the accepted posts, or panics after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Post]) -> bool,
    ) -> Vec<Post> {
        let start = Instant::now();
        loop {
            let posts = self.accepted_posts();
            if done(&posts) {
                return posts;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}; got {posts:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `wamid` has `count` statuses.
    pub async fn wait_statuses(&self, wamid: &str, count: usize) -> Vec<Value> {
        self.wait_for(
            Duration::from_secs(5),
            &format!("{count} statuses of {wamid}"),
            |posts| {
                posts
                    .iter()
                    .flat_map(Post::statuses)
                    .filter(|s| s["id"] == wamid)
                    .count()
                    >= count
            },
        )
        .await;
        self.statuses_of(wamid)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let signature = req
        .headers()
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let signature_valid = signature
        .as_deref()
        .and_then(|s| s.strip_prefix("sha256="))
        .is_some_and(|hex_sig| {
            let Ok(expected) = hex::decode(hex_sig) else {
                return false;
            };
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(state.secret.as_bytes())
                .expect("hmac key");
            mac.update(&body);
            mac.verify_slice(&expected).is_ok()
        });
    let hold = state.hold_next_ms.swap(0, Ordering::SeqCst);
    if hold > 0 {
        tokio::time::sleep(Duration::from_millis(hold)).await;
    }
    let failing = state
        .fail_remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let answered = if failing || !signature_valid {
        500
    } else {
        200
    };
    state.posts.lock().expect("lock").push(Post {
        raw: body.to_vec(),
        signature,
        signature_valid,
        content_type: req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered,
    });
    HttpResponse::build(actix_web::http::StatusCode::from_u16(answered).expect("status")).finish()
}
