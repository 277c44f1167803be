//! Integration tests of the reminder scheduler against the real broker and database (one
//! database and one vhost per test), with a hand-driven clock; Meta is graph-mock.

#![expect(
    clippy::expect_used,
    reason = "helpers outside #[test] fns fail the test loudly, which is the point"
)]

mod helpers;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Days;
use serde_json::json;
use wa_amqp::{Outcome, PublishOptions, Publisher};
use wa_common::contracts::send_job::{MessageContent, Priority};
use wa_common::topology::{exchange, routing};
use wa_db::models::scheduler as db;
use wa_scheduler::config::GraphConfig;
use wa_scheduler::{App, templates};

use helpers::*;

#[tokio::test]
async fn unpaid_schedule_plans_one_reminder_per_offset_at_the_window_start_in_the_tenant_time_zone()
{
    let app = spawn_app().await;

    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule_of(PAPUA, "sched-p", "j9", "2026-12-08", 2_000_000, "unpaid"),
    )
    .await;

    let rows = app.reminders(TENANT).await;
    let planned: Vec<(i32, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.offset_days.unwrap_or(99),
                r.due_at.to_rfc3339(),
                r.job_id.clone(),
            )
        })
        .collect();
    assert_eq!(
        planned,
        vec![
            (
                -7,
                "2026-12-01T02:00:00+00:00".into(),
                "rem-sched-1-d-7".into()
            ),
            (
                -3,
                "2026-12-05T02:00:00+00:00".into(),
                "rem-sched-1-d-3".into()
            ),
            (
                -1,
                "2026-12-07T02:00:00+00:00".into(),
                "rem-sched-1-d-1".into()
            ),
            (
                0,
                "2026-12-08T02:00:00+00:00".into(),
                "rem-sched-1-d0".into()
            ),
        ]
    );
    assert_eq!(
        rows[0].not_after,
        Some(at("2026-12-05T02:00:00Z")),
        "superseded by the next offset"
    );
    assert_eq!(
        rows[3].not_after,
        Some(at("2026-12-08T13:00:00Z")),
        "last offset: end of its day's window"
    );
    let papua = app.reminders(PAPUA).await;
    assert_eq!(
        papua[0].due_at,
        at("2026-12-01T00:00:00Z"),
        "09:00 in Jayapura is 00:00 UTC"
    );

    // A replayed event plans nothing new.
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    assert_eq!(app.reminders(TENANT).await.len(), 4);
}

#[tokio::test]
async fn reminders_go_out_only_inside_the_local_window_of_each_tenant() {
    let app = spawn_app().await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah_of(PAPUA, "j9", "0813-9999-0000", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule_of(PAPUA, "sched-p", "j9", "2026-12-08", 2_000_000, "unpaid"),
    )
    .await;

    // 08:59 in Jakarta, 10:59 in Jayapura.
    app.clock.set(at("2026-12-01T01:59:00Z"));
    app.tick().await;
    let jobs = app.take_send_jobs().await;
    assert_eq!(jobs.len(), 1, "only the Jayapura tenant's window is open");
    assert_eq!(jobs[0].tenant_id.as_str(), PAPUA);

    // 09:00 in Jakarta.
    app.clock.set(at("2026-12-01T02:00:00Z"));
    app.tick().await;
    let jobs = app.take_send_jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job_id.as_str(), "rem-sched-1-d-7");
    assert_eq!(jobs[0].priority, Priority::Transactional);
    assert_eq!(
        jobs[0].expires_at.map(|e| e.to_rfc3339()),
        Some("2026-12-01T20:00:00+07:00".to_owned()),
        "a job never goes out after the local window closes"
    );

    // Nothing twice, and nothing outside the window later that day.
    app.tick().await;
    app.clock.set(at("2026-12-01T13:30:00Z"));
    app.tick().await;
    assert!(app.take_send_jobs().await.is_empty());
}

#[tokio::test]
async fn reminder_parameters_use_indonesian_dates_and_rupiah_with_dots() {
    let app = spawn_app_with(Options {
        offsets: vec![0],
        ..Options::default()
    })
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "+62 812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-42", "j1", "2026-12-05", 1_500_000, "unpaid"),
    )
    .await;

    app.clock.set(at("2026-12-05T03:00:00Z"));
    app.tick().await;

    let jobs = app.take_send_jobs().await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.job_id.as_str(), "rem-sched-42-d0");
    assert_eq!(job.to, "+6281211112222");
    let MessageContent::Template { template } = &job.message.content else {
        panic!("a template message");
    };
    assert_eq!(template.name, "payment_reminder");
    assert_eq!(template.language.code, "id");
    assert_eq!(
        params(job),
        vec![
            "Siti j1",
            "Umrah Reguler 12 Hari",
            "05 Des 2026",
            "1.500.000",
            "Ahmad",
            "+62 812-3456-7890"
        ]
    );
    let reference = job.reference.clone().expect("reference");
    assert_eq!(
        (reference.kind.as_str(), reference.id.as_str()),
        ("payment_reminder", "sched-42")
    );
    let row = app.reminder("rem-sched-42-d0").await;
    assert_eq!(row.status, "queued");
    assert_eq!(row.parameters.expect("stored")[2], "05 Des 2026");
}

#[tokio::test]
async fn a_reminder_missed_while_down_is_sent_once_and_only_the_latest_relevant_one() {
    let app = spawn_app().await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;

    // Down from before D-7 until D-2 noon: D-7 and D-3 passed, D-3 is still relevant.
    app.clock.set(at("2026-12-06T05:00:00Z"));
    app.tick().await;
    app.tick().await;
    let jobs = app.take_send_jobs().await;
    let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["rem-sched-1-d-3"],
        "sent once, and not together with the superseded D-7"
    );
    let d7 = app.reminder("rem-sched-1-d-7").await;
    assert_eq!(
        (d7.status.as_str(), d7.failure_reason.as_deref()),
        ("cancelled", Some("expired"))
    );

    // Down again until after the last offset's day: nothing is relevant any more.
    app.clock.set(at("2026-12-09T03:00:00Z"));
    app.tick().await;
    assert!(app.take_send_jobs().await.is_empty());
    let statuses: Vec<String> = app
        .reminders(TENANT)
        .await
        .into_iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        vec!["cancelled", "queued", "cancelled", "cancelled"]
    );
}

#[tokio::test]
async fn a_paid_or_cancelled_schedule_gets_no_further_reminders() {
    let app = spawn_app().await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-2", "j1", "2027-01-08", 1_500_000, "unpaid"),
    )
    .await;

    app.clock.set(at("2026-12-01T03:00:00Z"));
    app.tick().await;
    assert_eq!(app.take_send_jobs().await.len(), 1, "D-7 of sched-1");

    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "paid"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-2", "j1", "2027-01-08", 1_500_000, "cancelled"),
    )
    .await;
    for day in [
        "2026-12-05",
        "2026-12-07",
        "2026-12-08",
        "2027-01-01",
        "2027-01-08",
    ] {
        app.clock.set(at(&format!("{day}T03:00:00Z")));
        app.tick().await;
    }
    assert!(app.take_send_jobs().await.is_empty());
    let rows = app.reminders(TENANT).await;
    let reasons: HashSet<Option<String>> = rows
        .iter()
        .filter(|r| r.status == "cancelled")
        .map(|r| r.failure_reason.clone())
        .collect();
    assert_eq!(
        reasons,
        HashSet::from([
            Some("schedule_paid".to_owned()),
            Some("schedule_cancelled".to_owned())
        ])
    );
    assert_eq!(rows.iter().filter(|r| r.status == "cancelled").count(), 7);
}

#[tokio::test]
async fn two_scheduler_replicas_never_publish_the_same_reminder_twice() {
    let app = spawn_app_with(Options {
        offsets: vec![-1, 0],
        ..Options::default()
    })
    .await;
    let second = App::build_with_clock(app.config.clone(), Arc::new(app.clock.clone()))
        .await
        .expect("second replica");
    let replica = second.scheduler();
    let schedules = 120;
    for n in 0..schedules {
        app.ok(
            routing::JAMAAH_UPSERTED,
            jamaah(&format!("j{n}"), "0812-1111-2222", "ready", "pkg-1"),
        )
        .await;
        app.ok(
            routing::PAYMENT_SCHEDULE_UPSERTED,
            schedule(
                &format!("s{n}"),
                &format!("j{n}"),
                "2026-12-08",
                1_000_000 + n,
                "unpaid",
            ),
        )
        .await;
    }

    // Both replicas tick at the same moments, several times over two days.
    for instant in [
        "2026-12-07T02:00:00Z",
        "2026-12-07T05:00:00Z",
        "2026-12-08T02:00:00Z",
        "2026-12-08T02:00:01Z",
    ] {
        app.clock.set(at(instant));
        let (a, b) = tokio::join!(app.scheduler.tick(), replica.tick());
        a.expect("replica a");
        b.expect("replica b");
    }

    let jobs = app.take_send_jobs().await;
    let unique: HashSet<String> = jobs.iter().map(|j| j.job_id.to_string()).collect();
    assert_eq!(unique.len(), jobs.len(), "a job id was published twice");
    assert_eq!(
        jobs.len(),
        2 * schedules as usize,
        "one per (schedule, offset)"
    );
}

#[tokio::test]
async fn a_payment_confirmation_is_sent_once_per_payment_id_whatever_the_hour() {
    let app = spawn_app().await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    // 22:00 in Jakarta: outside the reminder window, a receipt still goes out.
    app.clock.set(at("2026-12-01T15:00:00Z"));
    let payment = json!({
        "tenant_id": TENANT, "payment_id": "pay-7", "jamaah_id": "j1", "package_id": "pkg-1",
        "amount": 1_500_000, "remaining_balance": 10_500_000, "status_label": "Cicilan 2 dari 5"
    });
    app.ok(routing::PAYMENT_RECORDED, payment.clone()).await;
    app.ok(routing::PAYMENT_RECORDED, payment).await;
    app.tick().await;
    app.tick().await;

    let jobs = app.take_send_jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job_id.as_str(), "conf-pay-7");
    assert_eq!(
        params(&jobs[0]),
        vec![
            "Siti j1",
            "1.500.000",
            "Umrah Reguler 12 Hari",
            "10.500.000",
            "Cicilan 2 dari 5"
        ]
    );
}

#[tokio::test]
async fn the_departure_broadcast_goes_only_to_ready_jamaah_as_bulk_jobs() {
    let app = spawn_app().await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-0001", "ready", "pkg-1"),
    )
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j2", "0812-1111-0002", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j3", "0812-1111-0003", "ready", "pkg-1"),
    )
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j4", "0812-1111-0004", "ready", "pkg-other"),
    )
    .await;
    let departure = json!({
        "tenant_id": TENANT, "package_id": "pkg-1", "package_name": "Umrah Reguler 12 Hari",
        "departure_date": "2026-12-20"
    });
    app.ok(routing::DEPARTURE_SCHEDULED, departure.clone())
        .await;
    // j3 drops out, j2 becomes ready after the departure was scheduled; the event is replayed.
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j3", "0812-1111-0003", "cancelled", "pkg-1"),
    )
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j2", "0812-1111-0002", "ready", "pkg-1"),
    )
    .await;
    app.ok(routing::DEPARTURE_SCHEDULED, departure).await;

    app.clock.set(at("2026-12-13T03:00:00Z"));
    app.tick().await;
    let mut jobs = app.take_send_jobs().await;
    jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(ids, vec!["dep-pkg-1-j1-d-7", "dep-pkg-1-j2-d-7"]);
    assert!(jobs.iter().all(|j| j.priority == Priority::Bulk));
    assert_eq!(
        params(&jobs[0]),
        vec!["Siti j1", "20 Des 2026", "Umrah Reguler 12 Hari"]
    );

    app.clock.set(at("2026-12-19T03:00:00Z"));
    app.tick().await;
    assert_eq!(app.take_send_jobs().await.len(), 2, "D-1 to the same two");
    app.tick().await;
    assert!(app.take_send_jobs().await.is_empty());
}

fn inbound(wamid: &str, from: &str, text: &str, timestamp: &str) -> serde_json::Value {
    json!({
        "source": {"waba_id": WABA_ID, "phone_number_id": PHONE_NUMBER_ID, "display_phone_number": "6221555000111"},
        "wa_message_id": wamid, "from": from, "from_user_id": null, "profile_name": "Siti",
        "timestamp": timestamp, "message_type": "text",
        "raw": {"from": from, "id": wamid, "type": "text", "text": {"body": text}},
        "received_at": timestamp
    })
}

#[tokio::test]
async fn auto_replies_answer_keywords_only_while_the_24_hour_window_is_open() {
    let app = spawn_app().await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "ready", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_RECORDED,
        json!({
            "tenant_id": TENANT, "payment_id": "pay-1", "jamaah_id": "j1", "package_id": "pkg-1",
            "amount": 1_500_000, "remaining_balance": 10_500_000, "status_label": "Cicilan"
        }),
    )
    .await;
    app.clock.set(at("2026-12-01T03:00:00Z"));

    app.ok(
        routing::INBOUND_MESSAGE,
        inbound(
            "wamid.1",
            "6281211112222",
            "  Saldo ",
            "2026-12-01T02:59:00Z",
        ),
    )
    .await;
    app.ok(
        routing::INBOUND_MESSAGE,
        inbound(
            "wamid.1",
            "6281211112222",
            "  Saldo ",
            "2026-12-01T02:59:00Z",
        ),
    )
    .await;
    app.ok(
        routing::INBOUND_MESSAGE,
        inbound("wamid.2", "6281211112222", "halo", "2026-12-01T02:59:00Z"),
    )
    .await;
    app.ok(
        routing::INBOUND_MESSAGE,
        inbound("wamid.3", "6281211112222", "JADWAL", "2026-11-30T02:00:00Z"),
    )
    .await;
    app.ok(
        routing::INBOUND_MESSAGE,
        inbound("wamid.4", "6289999999999", "saldo", "2026-12-01T02:59:00Z"),
    )
    .await;

    let jobs = app.take_send_jobs().await;
    assert_eq!(
        jobs.len(),
        1,
        "one reply: duplicate, unknown keyword, closed window and stranger get none"
    );
    let reply = &jobs[0];
    assert_eq!(reply.job_id.as_str(), "auto-wamid.1");
    assert_eq!(reply.priority, Priority::Interactive);
    assert_eq!(reply.to, "+6281211112222");
    let MessageContent::Text { text } = &reply.message.content else {
        panic!("free-form text");
    };
    assert!(text.body.contains("Rp 10.500.000"), "{}", text.body);
    assert_eq!(
        reply.expires_at.map(|e| e.to_rfc3339()),
        Some("2026-12-02T09:59:00+07:00".to_owned()),
        "the reply expires with the window"
    );

    app.ok(
        routing::DEPARTURE_SCHEDULED,
        json!({"tenant_id": TENANT, "package_id": "pkg-1", "package_name": "Umrah Plus", "departure_date": "2027-01-10"}),
    )
    .await;
    app.ok(
        routing::INBOUND_MESSAGE,
        inbound("wamid.5", "6281211112222", "jadwal", "2026-12-01T02:59:30Z"),
    )
    .await;
    let jobs = app.take_send_jobs().await;
    let MessageContent::Text { text } = &jobs[0].message.content else {
        panic!("free-form text");
    };
    assert!(
        text.body.contains("10 Jan 2027") && text.body.contains("Umrah Plus"),
        "{}",
        text.body
    );
}

#[tokio::test]
async fn a_reminder_waits_while_its_template_is_not_approved_and_goes_out_once_it_is() {
    let app = spawn_app_with(Options {
        offsets: vec![0],
        approve_templates: false,
        ..Options::default()
    })
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    app.clock.set(at("2026-12-08T03:00:00Z"));

    let report = app.tick().await;
    assert_eq!(report.waiting_template, 1);
    assert!(app.take_send_jobs().await.is_empty());
    assert_eq!(
        app.reminder("rem-sched-1-d0").await.status,
        "waiting_template"
    );
    let waiting_gauge = |rendered: &str| {
        rendered
            .lines()
            .find(|l| {
                l.starts_with("wa_scheduler_waiting_on_template")
                    && l.contains("tenant=\"default\"")
                    && l.contains("template=\"payment_reminder\"")
            })
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
    };
    let metrics = wa_service::health::install_metrics().expect("recorder");
    assert_eq!(
        waiting_gauge(&metrics.render()).as_deref(),
        Some("1"),
        "visible in metrics"
    );

    let template_status = |event: &str, reason: &str| {
        json!({
            "source": {"waba_id": WABA_ID, "phone_number_id": null, "display_phone_number": null},
            "event": event, "message_template_id": 1_000_000_000_000_001_i64,
            "message_template_name": "payment_reminder", "message_template_language": "id",
            "reason": reason,
            "raw": {"event": event, "reason": reason, "rejection_info": {"reason": "Parameters are adjacent."}},
            "received_at": "2026-12-08T03:00:00Z"
        })
    };
    app.ok(
        routing::INBOUND_TEMPLATE_STATUS,
        template_status("REJECTED", "INVALID_FORMAT"),
    )
    .await;
    app.tick().await;
    assert!(app.take_send_jobs().await.is_empty(), "still not approved");
    let mut conn = app.db.conn().await;
    let registry = db::list_templates(&mut conn, TENANT)
        .await
        .expect("registry");
    let rejected = registry
        .iter()
        .find(|t| t.name == "payment_reminder")
        .expect("row");
    assert_eq!(rejected.status, "REJECTED");
    assert_eq!(
        rejected.rejection_reason.as_deref(),
        Some("Parameters are adjacent.")
    );

    app.ok(
        routing::INBOUND_TEMPLATE_STATUS,
        template_status("APPROVED", "NONE"),
    )
    .await;
    app.clock.advance(Days::minutes(1));
    app.tick().await;
    let jobs = app.take_send_jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job_id.as_str(), "rem-sched-1-d0");
    assert_eq!(waiting_gauge(&metrics.render()).as_deref(), Some("0"));
}

#[tokio::test]
async fn templates_are_submitted_to_and_synced_from_graph_mock() {
    let mock = wa_graph_mock::spawn(wa_graph_mock::MockConfig::for_tests())
        .await
        .expect("graph-mock");
    mock.shared().templates.lock().expect("templates").clear();
    let graph = GraphConfig {
        base_url: mock.base_url().to_owned(),
        api_version: "v24.0".into(),
    };
    let app = spawn_app_with(Options {
        graph: graph.clone(),
        approve_templates: false,
        ..Options::default()
    })
    .await;
    let tenant = tenants().get(TENANT).cloned().expect("tenant");
    let http = reqwest::Client::new();
    let pool = app.scheduler.pool().clone();

    let report = templates::submit_templates(&http, &graph, &tenant, &pool, app.scheduler.now())
        .await
        .expect("submit");
    assert_eq!(report.submitted.len(), 6, "{report:?}");
    let posts = mock.requests(&wa_graph_mock::RequestFilter {
        path_contains: Some(format!("/{WABA_ID}/message_templates")),
        method: Some("POST".into()),
        ..Default::default()
    });
    assert_eq!(posts.len(), 6);

    // graph-mock reviews at once (asynchronously): sync until every template is approved.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let synced = templates::sync_templates(&http, &graph, &tenant, &pool)
            .await
            .expect("sync");
        if synced
            .updated
            .iter()
            .all(|(_, status)| status == "APPROVED")
            && synced.updated.len() == 6
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "templates never approved: {synced:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut conn = app.db.conn().await;
    let registry = db::list_templates(&mut conn, TENANT)
        .await
        .expect("registry");
    assert!(
        registry
            .iter()
            .all(|t| t.status == "APPROVED" && t.meta_template_id.is_some())
    );

    let again = templates::submit_templates(&http, &graph, &tenant, &pool, app.scheduler.now())
        .await
        .expect("submit again");
    assert_eq!(again.skipped.len(), 6, "nothing is submitted twice");
    mock.stop().await;
}

#[tokio::test]
async fn a_template_meta_already_has_counts_as_submitted() {
    let mock = wa_graph_mock::spawn(wa_graph_mock::MockConfig::for_tests())
        .await
        .expect("graph-mock");
    let graph = GraphConfig {
        base_url: mock.base_url().to_owned(),
        api_version: "v24.0".into(),
    };
    let app = spawn_app_with(Options {
        graph: graph.clone(),
        approve_templates: false,
        ..Options::default()
    })
    .await;
    let tenant = tenants().get(TENANT).cloned().expect("tenant");
    let http = reqwest::Client::new();
    let pool = app.scheduler.pool().clone();

    let report = templates::submit_templates(&http, &graph, &tenant, &pool, app.scheduler.now())
        .await
        .expect("submit");
    assert_eq!(report.already_present.len(), 6, "{report:?}");
    let synced = templates::sync_templates(&http, &graph, &tenant, &pool)
        .await
        .expect("sync");
    assert_eq!(synced.updated.len(), 6);
    assert!(synced.missing.is_empty());
    mock.stop().await;
}

#[tokio::test]
async fn a_template_submission_meta_refuses_is_reported_with_its_code() {
    let mock = wa_graph_mock::spawn(wa_graph_mock::MockConfig::for_tests())
        .await
        .expect("graph-mock");
    mock.shared().templates.lock().expect("templates").clear();
    let graph = GraphConfig {
        base_url: mock.base_url().to_owned(),
        api_version: "v24.0".into(),
    };
    let app = spawn_app_with(Options {
        graph: graph.clone(),
        approve_templates: false,
        ..Options::default()
    })
    .await;
    let mut tenant = (**tenants().get(TENANT).expect("tenant")).clone();
    tenant.access_token = secrecy::SecretString::from("wrong-token");
    let error = templates::submit_templates(
        &reqwest::Client::new(),
        &graph,
        &tenant,
        app.scheduler.pool(),
        app.scheduler.now(),
    )
    .await
    .expect_err("bad token");
    let text = error.to_string();
    assert!(text.contains("code Some(190)"), "{text}");
    assert!(
        !text.contains("wrong-token"),
        "the token never appears in errors"
    );
    mock.stop().await;
}

#[tokio::test]
async fn reminder_status_follows_its_job_forward_only_or_fails_with_the_reason() {
    let app = spawn_app_with(Options {
        offsets: vec![-1, 0],
        ..Options::default()
    })
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    app.clock.set(at("2026-12-07T03:00:00Z"));
    app.tick().await;
    app.clock.set(at("2026-12-08T03:00:00Z"));
    app.tick().await;
    assert_eq!(app.take_send_jobs().await.len(), 2);

    let accepted = json!({
        "job_id": "rem-sched-1-d-1", "tenant_id": TENANT, "to": "+6281211112222",
        "wa_message_id": "wamid.A", "accepted_at": "2026-12-07T03:00:01Z", "attempts": 1,
        "reference": {"kind": "payment_reminder", "id": "sched-1"}
    });
    let status = |s: &str| {
        json!({
            "tenant_id": TENANT, "wa_message_id": "wamid.A", "job_id": "rem-sched-1-d-1", "status": s,
            "timestamp": "2026-12-07T03:00:05Z", "meta_code": null, "pricing_category": "utility", "reference": null
        })
    };
    app.ok(routing::OUTBOUND_ACCEPTED, accepted).await;
    assert_eq!(app.reminder("rem-sched-1-d-1").await.status, "sent");
    app.ok(routing::OUTBOUND_STATUS, status("delivered")).await;
    app.ok(routing::OUTBOUND_STATUS, status("sent")).await;
    assert_eq!(
        app.reminder("rem-sched-1-d-1").await.status,
        "delivered",
        "never backwards"
    );
    app.ok(routing::OUTBOUND_STATUS, status("read")).await;
    let read = app.reminder("rem-sched-1-d-1").await;
    assert_eq!(
        (read.status.as_str(), read.wa_message_id.as_deref()),
        ("read", Some("wamid.A"))
    );

    app.ok(
        routing::OUTBOUND_FAILED,
        json!({
            "job_id": "rem-sched-1-d0", "tenant_id": TENANT, "to": "+6281211112222", "reason": "template_invalid",
            "meta_code": 132001, "detail": "template name does not exist", "attempts": 1,
            "failed_at": "2026-12-08T03:00:02Z", "reference": null
        }),
    )
    .await;
    let failed = app.reminder("rem-sched-1-d0").await;
    assert_eq!(
        (failed.status.as_str(), failed.failure_reason.as_deref()),
        ("failed", Some("template_invalid"))
    );

    // Outcomes of jobs that are not reminders are acknowledged and ignored.
    app.ok(
        routing::OUTBOUND_ACCEPTED,
        json!({"job_id": "platform-1", "tenant_id": TENANT, "to": "+62812", "wa_message_id": "wamid.X",
               "accepted_at": "2026-12-08T03:00:01Z", "attempts": 1, "reference": null}),
    )
    .await;
}

#[tokio::test]
async fn an_invalid_event_is_dead_lettered_with_a_reason_naming_the_field() {
    let app = spawn_app().await;

    let mut missing = schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid");
    missing.as_object_mut().expect("object").remove("due_date");
    let Outcome::DeadLetter { reason, detail } =
        app.event(routing::PAYMENT_SCHEDULE_UPSERTED, missing).await
    else {
        panic!("dead-lettered");
    };
    assert_eq!(reason, "invalid_payload");
    assert!(detail.contains("due_date"), "{detail}");

    let negative = schedule("sched-1", "j1", "2026-12-08", -5, "unpaid");
    let Outcome::DeadLetter { detail, .. } = app
        .event(routing::PAYMENT_SCHEDULE_UPSERTED, negative)
        .await
    else {
        panic!("dead-lettered");
    };
    assert!(detail.contains("amount"), "{detail}");

    let stranger = schedule_of("nobody", "sched-1", "j1", "2026-12-08", 5, "unpaid");
    let Outcome::DeadLetter { reason, .. } = app
        .event(routing::PAYMENT_SCHEDULE_UPSERTED, stranger)
        .await
    else {
        panic!("dead-lettered");
    };
    assert_eq!(reason, "unknown_tenant");
    assert!(app.reminders(TENANT).await.is_empty());
}

#[tokio::test]
async fn erasure_removes_everything_the_scheduler_holds_about_the_jamaah() {
    let app = spawn_app().await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "ready", "pkg-1"),
    )
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j2", "0812-1111-3333", "ready", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-2", "j2", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;

    app.ok(
        routing::JAMAAH_ERASURE_REQUESTED,
        json!({"tenant_id": TENANT, "jamaah_id": "j1"}),
    )
    .await;

    let left: HashSet<Option<String>> = app
        .reminders(TENANT)
        .await
        .into_iter()
        .map(|r| r.jamaah_id)
        .collect();
    assert_eq!(left, HashSet::from([Some("j2".to_owned())]));
    let mut conn = app.db.conn().await;
    assert!(
        db::find_jamaah(&mut conn, TENANT, "j1")
            .await
            .expect("query")
            .is_none()
    );
    app.clock.set(at("2026-12-01T03:00:00Z"));
    app.tick().await;
    let jobs = app.take_send_jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job_id.as_str(), "rem-sched-2-d-7");
}

#[tokio::test]
async fn the_running_service_turns_platform_events_from_the_broker_into_send_jobs_and_reports_health()
 {
    let mut app = spawn_app_with(Options {
        offsets: vec![0],
        now: at("2026-12-08T03:00:00Z"),
        ..Options::default()
    })
    .await;
    let running = app.app.take().expect("app");
    let health = format!("http://{}", running.health_addr());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let service = tokio::spawn(running.run_until(shutdown.clone()));

    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = http
            .get(format!("{health}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if ready.as_ref().is_ok_and(|s| *s == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let publisher = Publisher::connect(&app.broker.amqp_url, "test-platform")
        .await
        .expect("publisher");
    for (key, body) in [
        (
            routing::JAMAAH_UPSERTED,
            jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
        ),
        (
            routing::PAYMENT_SCHEDULE_UPSERTED,
            schedule("sched-1", "j1", "2026-12-08", 2_250_000, "unpaid"),
        ),
    ] {
        publisher
            .publish_json(
                exchange::PLATFORM_EVENTS,
                key,
                &body,
                PublishOptions::default(),
            )
            .await
            .expect("published");
    }
    let jobs = app.wait_for_send_jobs(Duration::from_secs(10)).await;
    let job = &jobs[0];
    assert_eq!(job.job_id.as_str(), "rem-sched-1-d0");
    assert_eq!(params(job)[3], "2.250.000");

    // The gauges are refreshed right after the tick that published: poll for them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = http
            .get(format!("{health}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        if metrics.contains("wa_scheduler_reminders_enqueued_total")
            && metrics.contains("wa_scheduler_reminders_due")
            && metrics.contains("wa_scheduler_waiting_on_template")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics missing: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .expect("stops in time")
        .expect("join")
        .expect("clean shutdown");
    publisher.close().await;
}

#[tokio::test]
async fn the_binary_exits_non_zero_naming_the_variable_when_the_configuration_is_wrong() {
    for (variable, value) in [
        ("REMINDER_SEND_WINDOW", "20:00-09:00"),
        ("REMINDER_OFFSETS_DAYS", "-7,soon"),
        ("SCHEDULER_BATCH_SIZE", "0"),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_reminder-scheduler"))
            .env_clear()
            .env("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID)
            .env("WHATSAPP_BUSINESS_ACCOUNT_ID", WABA_ID)
            .env("WHATSAPP_ACCESS_TOKEN", "secret-token-value")
            .env(variable, value)
            .output()
            .await
            .expect("runs");
        assert!(!output.status.success(), "{variable}={value} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}: {stderr}");
        assert!(
            !stderr.contains("secret-token-value"),
            "secrets never printed"
        );
    }
}

#[tokio::test]
async fn the_running_service_learns_approved_templates_from_the_graph_api_and_then_sends() {
    let mock = wa_graph_mock::spawn(wa_graph_mock::MockConfig::for_tests())
        .await
        .expect("graph-mock");
    let mut app = spawn_app_with(Options {
        offsets: vec![0],
        now: at("2026-12-08T03:00:00Z"),
        approve_templates: false,
        graph: GraphConfig {
            base_url: mock.base_url().to_owned(),
            api_version: "v24.0".into(),
        },
    })
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    assert_eq!(app.tick().await.waiting_template, 1, "not approved yet");

    // A restart with the start-up sync on: graph-mock's templates are approved.
    let mut config = app.config.clone();
    config.sync_templates_on_start = true;
    drop(app.app.take());
    let running = App::build_with_clock(config, Arc::new(app.clock.clone()))
        .await
        .expect("restarted");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let service = tokio::spawn(running.run_until(shutdown.clone()));

    let jobs = app.wait_for_send_jobs(Duration::from_secs(10)).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job_id.as_str(), "rem-sched-1-d0");
    let gets = mock.requests(&wa_graph_mock::RequestFilter {
        path_contains: Some(format!("/{WABA_ID}/message_templates")),
        method: Some("GET".into()),
        ..Default::default()
    });
    assert!(!gets.is_empty(), "statuses were read from the Graph API");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .expect("stops in time")
        .expect("join")
        .expect("clean shutdown");
    mock.stop().await;
}

#[tokio::test]
async fn a_reminder_whose_jamaah_is_not_known_yet_waits_for_the_jamaah_and_goes_out_once() {
    let app = spawn_app_with(Options {
        offsets: vec![0],
        ..Options::default()
    })
    .await;
    // The schedule arrives before its jamaah (platform events come in any order).
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    app.clock.set(at("2026-12-08T03:00:00Z"));
    let report = app.tick().await;
    assert_eq!(report.deferred, 1);
    assert!(app.take_send_jobs().await.is_empty());

    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    // The jamaah's upsert brings the reminder back: the next tick sends it, without waiting out
    // the deferral.
    app.clock.advance(Days::minutes(1));
    app.tick().await;
    let jobs = app.take_send_jobs().await;
    assert_eq!(
        jobs.len(),
        1,
        "sent at the first tick after the jamaah arrived"
    );
    assert_eq!(params(&jobs[0])[0], "Siti j1");
    app.clock.advance(Days::minutes(11));
    app.tick().await;
    assert!(app.take_send_jobs().await.is_empty(), "sent once");
}

#[tokio::test]
async fn a_reminder_is_not_held_back_while_its_jamaah_is_being_recorded() {
    let app = spawn_app_with(Options {
        offsets: vec![0],
        ..Options::default()
    })
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    app.clock.set(at("2026-12-08T03:00:00Z"));
    // The jamaah's upsert is under way in another transaction (it holds the jamaah's lock): once
    // it commits, its release of held reminders may already have run.
    let mut upsert = app.db.conn().await;
    diesel_async::RunQueryDsl::execute(diesel::sql_query("BEGIN"), &mut upsert)
        .await
        .unwrap();
    wa_db::models::scheduler::lock_jamaah(&mut upsert, TENANT, "j1")
        .await
        .unwrap();

    let report = app.tick().await;

    assert_eq!(
        (report.deferred, report.left_due),
        (0, 1),
        "left due, not held back for the deferral"
    );
    diesel_async::RunQueryDsl::execute(diesel::sql_query("COMMIT"), &mut upsert)
        .await
        .unwrap();
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.tick().await;
    assert_eq!(app.take_send_jobs().await.len(), 1, "sent at the next tick");
}

#[tokio::test]
async fn a_jamaah_without_a_usable_phone_number_fails_the_reminder_with_the_reason() {
    let app = spawn_app_with(Options {
        offsets: vec![0],
        ..Options::default()
    })
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "not a number", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    app.clock.set(at("2026-12-08T03:00:00Z"));
    assert_eq!(app.tick().await.failed, 1);
    assert!(app.take_send_jobs().await.is_empty());
    let row = app.reminder("rem-sched-1-d0").await;
    assert_eq!(
        (row.status.as_str(), row.failure_reason.as_deref()),
        ("failed", Some("invalid_recipient"))
    );
}

/// Polls `/readyz` until it answers `want` (200 or 503).
async fn wait_for_readiness(health: &str, want: u16, within: Duration) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status = http
            .get(format!("{health}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if status.as_ref().is_ok_and(|s| *s == want) {
            return;
        }

        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never answered {want}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_service_is_unready_during_a_database_outage_and_sends_again_after_it() {
    let mut app = spawn_app_with(Options {
        offsets: vec![0],
        now: at("2026-12-08T03:00:00Z"),
        ..Options::default()
    })
    .await;
    drop(app.app.take());
    let proxy = wa_testkit::proxy::TcpProxy::start("127.0.0.1:5432")
        .await
        .expect("proxy");
    let mut config = app.config.clone();
    config.database_url = proxy.rewrite_url(&app.db.url);
    let running = App::build_with_clock(config, Arc::new(app.clock.clone()))
        .await
        .expect("app through the proxy");
    let health = format!("http://{}", running.health_addr());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let service = tokio::spawn(running.run_until(shutdown.clone()));
    wait_for_readiness(&health, 200, Duration::from_secs(10)).await;

    proxy.cut();
    wait_for_readiness(&health, 503, Duration::from_secs(10)).await;
    // Meanwhile the platform's events arrive (stored through the test's own connection).
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    proxy.restore();
    wait_for_readiness(&health, 200, Duration::from_secs(10)).await;

    let jobs = app.wait_for_send_jobs(Duration::from_secs(10)).await;
    assert_eq!(jobs.len(), 1, "sent once the database is back, and once");
    assert_eq!(app.reminder("rem-sched-1-d0").await.status, "queued");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .expect("stops in time")
        .expect("join")
        .expect("clean shutdown");
}

#[tokio::test]
async fn the_service_rides_out_a_broker_outage_and_publishes_after_it() {
    let mut app = spawn_app_with(Options {
        offsets: vec![0],
        now: at("2026-12-08T03:00:00Z"),
        ..Options::default()
    })
    .await;
    drop(app.app.take());
    let proxy = wa_testkit::proxy::TcpProxy::start("127.0.0.1:5672")
        .await
        .expect("proxy");
    let mut config = app.config.clone();
    config.amqp_url = proxy.rewrite_url(&app.broker.amqp_url);
    let running = App::build_with_clock(config, Arc::new(app.clock.clone()))
        .await
        .expect("app through the proxy");
    let health = format!("http://{}", running.health_addr());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let service = tokio::spawn(running.run_until(shutdown.clone()));
    wait_for_readiness(&health, 200, Duration::from_secs(10)).await;

    proxy.cut();
    wait_for_readiness(&health, 503, Duration::from_secs(10)).await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    // The reminder is due: ticks now fail against the cut broker (and roll back) until it is back.
    let metrics = wa_service::health::install_metrics().expect("recorder");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !metrics
        .render()
        .lines()
        .any(|l| l.starts_with("wa_scheduler_tick_failures_total") && !l.ends_with(" 0"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no tick failed during the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        app.take_send_jobs().await.is_empty(),
        "nothing published during the outage"
    );
    assert_eq!(
        app.reminder("rem-sched-1-d0").await.status,
        "pending",
        "rolled back, still due"
    );
    proxy.restore();
    // lapin reconnects with exponential backoff (up to 10 s between attempts): allow for a few.
    wait_for_readiness(&health, 200, Duration::from_secs(120)).await;

    let jobs = app.wait_for_send_jobs(Duration::from_secs(15)).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job_id.as_str(), "rem-sched-1-d0");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .expect("stops in time")
        .expect("join")
        .expect("clean shutdown");
}

#[tokio::test]
async fn an_overdue_offset_reminds_after_the_due_date_while_the_instalment_is_unpaid() {
    let app = spawn_app_with(Options {
        offsets: vec![0, 3],
        ..Options::default()
    })
    .await;
    app.ok(
        routing::JAMAAH_UPSERTED,
        jamaah("j1", "0812-1111-2222", "registered", "pkg-1"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-1", "j1", "2026-12-08", 1_500_000, "unpaid"),
    )
    .await;
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-2", "j1", "2026-12-08", 750_000, "unpaid"),
    )
    .await;
    app.clock.set(at("2026-12-08T03:00:00Z"));
    app.tick().await;
    assert_eq!(app.take_send_jobs().await.len(), 2, "due-day reminders");
    app.ok(
        routing::PAYMENT_SCHEDULE_UPSERTED,
        schedule("sched-2", "j1", "2026-12-08", 750_000, "paid"),
    )
    .await;

    app.clock.set(at("2026-12-11T02:00:00Z"));
    app.tick().await;
    let jobs = app.take_send_jobs().await;
    let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["rem-sched-1-d3"],
        "three days overdue, only the unpaid one"
    );
    assert_eq!(
        params(&jobs[0])[2],
        "08 Des 2026",
        "the due date, not today"
    );
}
