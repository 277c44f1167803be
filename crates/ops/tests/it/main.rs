//! wactl against the real broker: dead letters are counted by reason, replayed to their queue
//! (and only the filtered ones), and purged.

#![expect(
    clippy::expect_used,
    reason = "a panic is how a test helper reports failure"
)]
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use wa_amqp::Publisher;
use wa_common::topology::{
    HEADER_DEAD_LETTER_DETAIL, HEADER_DEAD_LETTER_REASON, HEADER_TENANT_ID, exchange, queue,
};
use wa_ops::dlq::{self, Filter};
use wa_testkit::broker::TestBroker;

async fn dead_letter(
    channel: &lapin::Channel,
    source: &str,
    reason: &str,
    tenant: &str,
    body: &str,
) {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from(HEADER_DEAD_LETTER_REASON),
        AMQPValue::LongString(reason.into()),
    );
    headers.insert(
        ShortString::from(HEADER_DEAD_LETTER_DETAIL),
        AMQPValue::LongString(format!("detail of {body}").into()),
    );
    headers.insert(
        ShortString::from(HEADER_TENANT_ID),
        AMQPValue::LongString(tenant.into()),
    );
    channel
        .basic_publish(
            exchange::DEAD_LETTER.into(),
            source.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default()
                .with_headers(headers)
                .with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

#[tokio::test]
async fn replay_moves_only_matching_dead_letters_back_to_their_queue() {
    let broker = TestBroker::new().await.expect("vhost");
    let connection = broker.declared().await.expect("topology");
    let channel = connection.create_channel().await.expect("channel");
    let dlq_name = queue::dead_letter_of(queue::SYNC_EVENTS);
    dead_letter(
        &channel,
        queue::SYNC_EVENTS,
        "db_unavailable",
        "default",
        r#"{"n":1}"#,
    )
    .await;
    dead_letter(
        &channel,
        queue::SYNC_EVENTS,
        "invalid_event",
        "default",
        r#"{"n":2}"#,
    )
    .await;
    dead_letter(
        &channel,
        queue::SYNC_EVENTS,
        "db_unavailable",
        "other",
        r#"{"n":3}"#,
    )
    .await;
    wa_testkit::broker::wait_for_len(&channel, &dlq_name, 3)
        .await
        .expect("three dead letters");

    let counts = dlq::count_by_reason(&channel, &dlq_name)
        .await
        .expect("count");
    assert_eq!(counts.get("db_unavailable"), Some(&2));
    assert_eq!(counts.get("invalid_event"), Some(&1));
    let listed = dlq::list(&channel, &dlq_name, 10).await.expect("list");
    assert_eq!(listed.len(), 3, "listing removes nothing");
    assert!(
        listed
            .iter()
            .any(|l| l.detail.as_deref() == Some(r#"detail of {"n":2}"#))
    );

    let publisher = Publisher::connect(&broker.amqp_url, "test-replay")
        .await
        .expect("publisher");
    let filter = Filter {
        reason: Some("db_unavailable".into()),
        tenant_id: Some("default".into()),
    };
    let mut seen = 0;
    let summary = dlq::replay(&channel, &publisher, &dlq_name, &filter, usize::MAX, |_| {
        seen += 1
    })
    .await
    .expect("replay");
    assert_eq!((summary.moved, summary.kept, seen), (1, 2, 1));

    wa_testkit::broker::wait_for_len(&channel, queue::SYNC_EVENTS, 1)
        .await
        .expect("replayed message back in its queue");
    let (body, headers) = wa_testkit::broker::get_one(&channel, queue::SYNC_EVENTS)
        .await
        .expect("get")
        .expect("a message");
    assert_eq!(body, br#"{"n":1}"#.to_vec());
    assert!(headers.inner().contains_key(dlq::HEADER_REPLAYED_AT));
    assert!(!headers.inner().contains_key(HEADER_DEAD_LETTER_REASON));
    wa_testkit::broker::wait_for_len(&channel, &dlq_name, 2)
        .await
        .expect("the others stay");

    let purged = dlq::purge(
        &channel,
        &dlq_name,
        &Filter {
            reason: Some("invalid_event".into()),
            tenant_id: None,
        },
    )
    .await
    .expect("purge");
    assert_eq!((purged.moved, purged.kept), (1, 1));
    wa_testkit::broker::wait_for_len(&channel, &dlq_name, 1)
        .await
        .expect("one left");
}

fn wactl(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wactl"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("AMQP_URL")
        .output()
        .expect("run wactl")
}

#[tokio::test]
async fn migrate_creates_and_migrates_a_missing_database_once() {
    let db = wa_testkit::db::TestDb::new().await.expect("test db");
    // A database that does not exist yet, on the same server.
    let fresh = format!("{}_fresh", db.name());
    let url = db.url.replace(db.name(), &fresh);
    let first = wactl(&["--database-url", &url, "migrate"]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("created the database"), "{stdout}");
    let second = wactl(&["--database-url", &url, "migrate"]);
    assert!(String::from_utf8_lossy(&second.stdout).contains("applied 0 migration(s)"));
    let admin = db.url.replace(db.name(), "postgres");
    let mut conn = <wa_db::AsyncPgConnection as diesel_async::AsyncConnection>::establish(&admin)
        .await
        .expect("admin");
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut conn,
        &format!("DROP DATABASE \"{fresh}\" WITH (FORCE)"),
    )
    .await
    .expect("drop");
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["migrate", "--help"],
        vec!["queues", "--help"],
        vec!["dlq", "--help"],
        vec!["dlq", "count", "--help"],
        vec!["dlq", "list", "--help"],
        vec!["dlq", "replay", "--help"],
        vec!["dlq", "purge", "--help"],
        vec!["tenants", "add", "--help"],
        vec!["erase", "--help"],
        vec!["send", "--help"],
        vec!["templates", "submit", "--help"],
        vec!["templates", "sync", "--help"],
    ] {
        let out = wactl(&args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn purge_refuses_without_yes() {
    let out = wactl(&[
        "--amqp-url",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "dlq",
        "purge",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn templates_sync_records_meta_statuses_in_the_registry() {
    use wa_graph_mock::config::{
        DEFAULT_PHONE_NUMBER_ID, DEFAULT_TOKEN, DEFAULT_WABA_ID, MockConfig,
    };
    let mock = wa_graph_mock::spawn(MockConfig::for_tests())
        .await
        .expect("graph-mock");
    let db = wa_testkit::db::TestDb::new().await.expect("test db");
    let run = |command: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wactl"))
            .args(["--database-url", &db.url, "templates", command])
            .env("WHATSAPP_PHONE_NUMBER_ID", DEFAULT_PHONE_NUMBER_ID)
            .env("WHATSAPP_BUSINESS_ACCOUNT_ID", DEFAULT_WABA_ID)
            .env("WHATSAPP_ACCESS_TOKEN", DEFAULT_TOKEN)
            .env("WHATSAPP_GRAPH_BASE_URL", mock.base_url())
            .env_remove("TENANTS_FILE")
            .output()
            .expect("run wactl")
    };
    let synced = run("sync");
    let stdout = String::from_utf8_lossy(&synced.stdout);
    assert!(
        synced.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&synced.stderr)
    );
    // graph-mock knows the product's templates as APPROVED; the registry now says so.
    assert!(
        stdout.contains("(\"payment_reminder\", \"APPROVED\")"),
        "{stdout}"
    );
    let submitted = run("submit");
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
}
