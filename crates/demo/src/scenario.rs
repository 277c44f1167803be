//! The demo scenario: one travel agency's day, from platform events to Meta and back.
//!
//! Every step waits (bounded) for an observable effect: a request recorded by graph-mock, a row in
//! the read API, an event on the platform's queues. Nothing is assumed; what was seen is printed.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{Days, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use serde_json::{Value, json};
use wa_amqp::{PublishOptions, Publisher};
use wa_common::topology::{exchange, queue, routing};

use crate::stack::{Program, Stack, demo_tenant};

/// Outcome of one step.
pub struct Step {
    /// What the step shows.
    pub title: String,
    /// Whether its effect was observed.
    pub passed: bool,
    /// What was seen.
    pub details: Vec<String>,
}

/// The whole run.
#[derive(Default)]
pub struct Report {
    /// Steps in order.
    pub steps: Vec<Step>,
}

impl Report {
    /// True when every step's effect was observed.
    pub fn all_passed(&self) -> bool {
        self.steps.iter().all(|s| s.passed)
    }

    /// Human-readable summary.
    pub fn render(&self) -> String {
        let mut out = String::from("\n=== WhatsApp integration demo ===\n");
        for (i, step) in self.steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "\n{}. [{}] {}",
                i + 1,
                if step.passed { "ok" } else { "FAILED" },
                step.title
            );
            for line in &step.details {
                let _ = writeln!(out, "     {line}");
            }
        }
        let passed = self.steps.iter().filter(|s| s.passed).count();
        let _ = writeln!(out, "\n{passed} of {} steps completed", self.steps.len());
        out
    }
}

struct Driver<'a> {
    stack: &'a Stack,
    http: reqwest::Client,
    publisher: Publisher,
    channel: lapin::Channel,
    outcomes: Vec<Value>,
    notifications: Vec<Value>,
}

const SITI_PHONE_LOCAL: &str = "0812-3456-7890";
const SITI_WA_ID: &str = "6281234567890";
const BUDI_PHONE_LOCAL: &str = "0813-1111-2222";

impl Driver<'_> {
    async fn publish(&self, exchange: &str, key: &str, body: Value) -> anyhow::Result<()> {
        let options = PublishOptions {
            tenant_id: Some(demo_tenant::TENANT_ID.into()),
            ..Default::default()
        };
        self.publisher
            .publish_json(exchange, key, &body, options)
            .await?;
        Ok(())
    }

    async fn graph_requests(&self, path_contains: &str) -> Vec<Value> {
        let url = format!(
            "{}/_mock/requests?path_contains={path_contains}",
            self.stack.config.url(Program::GraphMock)
        );
        match self.http.get(url).send().await {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| {
                    v.as_array()
                        .cloned()
                        .or_else(|| v.get("requests").and_then(Value::as_array).cloned())
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    async fn sent_messages_to(&self, wa_id: &str) -> Vec<Value> {
        self.graph_requests("/messages")
            .await
            .into_iter()
            .filter(|r| {
                let to = r
                    .pointer("/body/to")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                to.trim_start_matches('+') == wa_id
            })
            .collect()
    }

    async fn history(&self, jamaah_id: &str) -> Vec<Value> {
        let url = format!(
            "{}/v1/tenants/{}/jamaah/{jamaah_id}/messages?limit=50",
            self.stack.config.url(Program::ConversationSync),
            demo_tenant::TENANT_ID
        );
        match self
            .http
            .get(url)
            .bearer_auth(demo_tenant::SYNC_API_TOKEN)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v.get("messages").and_then(Value::as_array).cloned())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Drains the platform's outcome and notification queues into memory.
    async fn drain_platform_queues(&mut self) -> anyhow::Result<()> {
        for (name, sink) in [
            (queue::PLATFORM_OUTCOMES, &mut self.outcomes),
            (queue::PLATFORM_NOTIFICATIONS, &mut self.notifications),
        ] {
            while let Some(message) = self
                .channel
                .basic_get(name.into(), BasicGetOptions { no_ack: false })
                .await?
            {
                let mut value: Value =
                    serde_json::from_slice(&message.delivery.data).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut value {
                    map.insert(
                        "_routing_key".into(),
                        Value::from(message.delivery.routing_key.as_str()),
                    );
                }
                sink.push(value);
                message
                    .delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await?;
            }
        }
        Ok(())
    }

    /// Polls `check` every 250 ms for up to `secs` seconds.
    async fn wait_for<T>(
        &mut self,
        secs: u64,
        mut check: impl AsyncFnMut(&mut Self) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let _ = self.drain_platform_queues().await;
            if let Some(found) = check(self).await {
                return Some(found);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn describe_history(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .rev()
        .map(|m| {
            format!(
                "{:<8} {:<12} status={:<9} {}",
                m.get("direction").and_then(Value::as_str).unwrap_or("?"),
                m.get("type").and_then(Value::as_str).unwrap_or("?"),
                m.get("status").and_then(Value::as_str).unwrap_or("-"),
                m.get("body")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect::<String>()
            )
        })
        .collect()
}

/// Plays the scenario against a running stack.
pub async fn play(stack: &Stack) -> anyhow::Result<Report> {
    let publisher = Publisher::connect(&stack.config.amqp_url(), "wa-demo").await?;
    let connection = wa_amqp::connect(&stack.config.amqp_url(), "wa-demo-reader").await?;
    let channel = connection.create_channel().await?;
    let mut d = Driver {
        stack,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?,
        publisher,
        channel,
        outcomes: Vec::new(),
        notifications: Vec::new(),
    };
    let mut report = Report::default();
    let today = Utc::now()
        .with_timezone(&chrono_tz::Asia::Jakarta)
        .date_naive();

    // 1. The platform registers two jamaah of the December package.
    for (id, name, phone, status) in [
        ("jmh-1001", "Siti Aminah", SITI_PHONE_LOCAL, "ready"),
        ("jmh-1002", "Budi Santoso", BUDI_PHONE_LOCAL, "registered"),
    ] {
        d.publish(
            exchange::PLATFORM_EVENTS,
            routing::JAMAAH_UPSERTED,
            json!({
                "tenant_id": demo_tenant::TENANT_ID, "jamaah_id": id, "name": name, "phone": phone, "status": status,
                "package": { "id": "pkg-dec-2026", "name": "Umrah Reguler Desember 2026" },
                "agent": { "id": "agent-7", "name": "Ustadz Ahmad", "phone": "+62 811-2233-4455" }
            }),
        )
        .await?;
    }
    report.steps.push(Step {
        title: "platform publishes jamaah.upserted for Siti Aminah (ready) and Budi Santoso (registered)".into(),
        passed: true,
        details: vec![],
    });

    // 2. An instalment due in 3 days: the D-3 reminder is due today.
    let due = today.checked_add_days(Days::new(3)).unwrap_or(today);
    d.publish(
        exchange::PLATFORM_EVENTS,
        routing::PAYMENT_SCHEDULE_UPSERTED,
        json!({ "tenant_id": demo_tenant::TENANT_ID, "schedule_id": "sched-42", "jamaah_id": "jmh-1001",
                "package_id": "pkg-dec-2026", "due_date": due.to_string(), "amount": 1_500_000, "status": "unpaid" }),
    )
    .await?;
    let reminder = d
        .wait_for(45, async |d: &mut Driver<'_>| {
            d.sent_messages_to(SITI_WA_ID).await.into_iter().find(|r| {
                r.pointer("/body/template/name").and_then(Value::as_str) == Some("payment_reminder")
            })
        })
        .await;
    let mut details = Vec::new();
    if let Some(r) = &reminder {
        let params: Vec<String> = r
            .pointer("/body/template/components/0/parameters")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        details.push(format!(
            "graph-mock received template payment_reminder to {}",
            r.pointer("/body/to").and_then(Value::as_str).unwrap_or("?")
        ));
        details.push(format!("parameters: {}", params.join(" | ")));
    }
    report.steps.push(Step {
        title: format!(
            "payment_schedule.upserted (due {due}) → reminder-scheduler → sender → Graph API"
        ),
        passed: reminder.is_some(),
        details,
    });

    // 3. Meta reports sent/delivered/read through the signed webhook; the history shows it read.
    let read = d
        .wait_for(30, async |d: &mut Driver<'_>| {
            let history = d.history("jmh-1001").await;
            history
                .iter()
                .any(|m| {
                    m.get("direction").and_then(Value::as_str) == Some("outbound")
                        && m.get("status").and_then(Value::as_str) == Some("read")
                })
                .then_some(history)
        })
        .await;
    let statuses: Vec<String> = d
        .outcomes
        .iter()
        .filter(|o| o.get("_routing_key").and_then(Value::as_str) == Some(routing::OUTBOUND_STATUS))
        .filter_map(|o| o.get("status").and_then(Value::as_str).map(str::to_owned))
        .collect();
    report.steps.push(Step {
        title: "status webhooks (signed) → ingress → conversation-sync: the reminder is delivered and read".into(),
        passed: read.is_some(),
        details: vec![format!("outbound.status steps seen by the platform: {}", statuses.join(" → "))],
    });

    // 4. Siti writes (Arabic greeting and emoji included): stored, and her agent is notified.
    let inbound = d
        .http
        .post(format!(
            "{}/_mock/inbound",
            stack.config.url(Program::GraphMock)
        ))
        .json(
            &json!({ "from": SITI_WA_ID, "name": "Siti Aminah", "type": "text",
                       "text": "السلام عليكم Ustadz, kapan jadwal manasik? 🕋" }),
        )
        .send()
        .await;
    let notified = d
        .wait_for(30, async |d: &mut Driver<'_>| {
            d.notifications
                .iter()
                .find(|n| n.get("jamaah_id").and_then(Value::as_str) == Some("jmh-1001"))
                .cloned()
        })
        .await;
    report.steps.push(Step {
        title: "jamaah writes → signed webhook → ingress → conversation-sync → agent.notification"
            .into(),
        passed: inbound.is_ok() && notified.is_some(),
        details: notified
            .map(|n| {
                vec![format!(
                    "notification for agent {}: {}",
                    n["agent_id"],
                    n["message"].as_str().unwrap_or("")
                )]
            })
            .unwrap_or_default(),
    });

    // 5. The agent answers inside the 24-hour window.
    d.publish(
        exchange::COMMANDS,
        routing::SEND,
        json!({ "job_id": "agent-reply-1", "tenant_id": demo_tenant::TENANT_ID, "to": SITI_PHONE_LOCAL,
                "priority": "interactive", "reference": { "kind": "agent_reply", "id": "chat-1" },
                "message": { "type": "text", "text": { "body": "Wa'alaikumussalam, manasik hari Sabtu jam 08.00 di kantor." } } }),
    )
    .await?;
    let accepted = d
        .wait_for(30, async |d: &mut Driver<'_>| {
            d.outcomes
                .iter()
                .find(|o| {
                    o.get("job_id").and_then(Value::as_str) == Some("agent-reply-1")
                        && o.get("_routing_key").and_then(Value::as_str)
                            == Some(routing::OUTBOUND_ACCEPTED)
                })
                .cloned()
        })
        .await;
    report.steps.push(Step {
        title: "agent reply inside the window → sender → Graph API → outbound.accepted".into(),
        passed: accepted.is_some(),
        details: accepted
            .map(|a| vec![format!("wamid {}", a["wa_message_id"])])
            .unwrap_or_default(),
    });

    // 6. A free-form message to Budi, who never wrote: refused without calling Meta.
    d.publish(
        exchange::COMMANDS,
        routing::SEND,
        json!({ "job_id": "agent-reply-2", "tenant_id": demo_tenant::TENANT_ID, "to": BUDI_PHONE_LOCAL,
                "priority": "interactive", "message": { "type": "text", "text": { "body": "Halo Pak Budi" } } }),
    )
    .await?;
    let refused = d
        .wait_for(30, async |d: &mut Driver<'_>| {
            d.outcomes
                .iter()
                .find(|o| o.get("job_id").and_then(Value::as_str) == Some("agent-reply-2"))
                .cloned()
        })
        .await;
    let refused_ok = refused
        .as_ref()
        .is_some_and(|o| o.get("reason").and_then(Value::as_str) == Some("window_closed"));
    report.steps.push(Step {
        title: "free-form message outside the 24-hour window → outbound.failed window_closed"
            .into(),
        passed: refused_ok,
        details: refused
            .map(|o| {
                vec![format!(
                    "{} reason={} meta_code={}",
                    o["_routing_key"], o["reason"], o["meta_code"]
                )]
            })
            .unwrap_or_default(),
    });

    // 7. Payment recorded → thank-you confirmation.
    d.publish(
        exchange::PLATFORM_EVENTS,
        routing::PAYMENT_RECORDED,
        json!({ "tenant_id": demo_tenant::TENANT_ID, "payment_id": "pay-9001", "jamaah_id": "jmh-1001",
                "package_id": "pkg-dec-2026", "amount": 1_500_000, "remaining_balance": 12_000_000,
                "status_label": "Cicilan 2 dari 10" }),
    )
    .await?;
    let confirmation = d
        .wait_for(30, async |d: &mut Driver<'_>| {
            d.sent_messages_to(SITI_WA_ID).await.into_iter().find(|r| {
                r.pointer("/body/template/name").and_then(Value::as_str)
                    == Some("payment_confirmation")
            })
        })
        .await;
    report.steps.push(Step {
        title: "payment.recorded → payment_confirmation template".into(),
        passed: confirmation.is_some(),
        details: vec![],
    });

    // 8. Departure in 7 days: only the `ready` jamaah gets the broadcast.
    let departure = today.checked_add_days(Days::new(7)).unwrap_or(today);
    d.publish(
        exchange::PLATFORM_EVENTS,
        routing::DEPARTURE_SCHEDULED,
        json!({ "tenant_id": demo_tenant::TENANT_ID, "package_id": "pkg-dec-2026",
                "package_name": "Umrah Reguler Desember 2026", "departure_date": departure.to_string() }),
    )
    .await?;
    let broadcast = d
        .wait_for(30, async |d: &mut Driver<'_>| {
            d.sent_messages_to(SITI_WA_ID).await.into_iter().find(|r| {
                r.pointer("/body/template/name").and_then(Value::as_str)
                    == Some("departure_reminder")
            })
        })
        .await;
    let budi_templates = d
        .sent_messages_to("6281311112222")
        .await
        .iter()
        .filter(|r| {
            r.pointer("/body/template/name").and_then(Value::as_str) == Some("departure_reminder")
        })
        .count();
    report.steps.push(Step {
        title: format!(
            "departure.scheduled ({departure}) → departure_reminder to ready jamaah only"
        ),
        passed: broadcast.is_some() && budi_templates == 0,
        details: vec![format!(
            "to Siti: {}, to Budi (registered): {budi_templates}",
            u8::from(broadcast.is_some())
        )],
    });

    // 9. What the agent sees, and what Meta saw.
    let history = d.history("jmh-1001").await;
    let stats = d
        .http
        .get(format!(
            "{}/_mock/stats",
            stack.config.url(Program::GraphMock)
        ))
        .send()
        .await
        .ok();
    let stats = match stats {
        Some(r) => r.json::<Value>().await.unwrap_or(Value::Null),
        None => Value::Null,
    };
    let mut details = describe_history(&history);
    details.push(format!("graph-mock stats: {stats}"));
    report.steps.push(Step {
        title: "conversation history of Siti Aminah (oldest first), as the agent's screen shows it"
            .into(),
        passed: !history.is_empty(),
        details,
    });
    d.publisher.close().await;
    Ok(report)
}
