//! Batches: applying events together gives exactly what applying them one by one gives, through
//! the edge cases a batch creates (the same wamid twice, a status and its accepted event in one
//! batch, a sender known only by user id, a directory event between message events), and a
//! poison event mid-batch is dead-lettered alone while the rest commit and are acked.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};
use wa_amqp::{Outcome, Publisher};
use wa_common::topology::{queue, routing};
use wa_sync::config::BatchConfig;
use wa_sync::crypto::Cipher;
use wa_sync::event::{SyncEvent, parse};
use wa_sync::ingest::{IngestDeps, SyncHandler};
use wa_sync::media::{FsMediaStore, MediaStore};
use wa_sync::store::{self, Effects, PendingEvent};
use wa_testkit::broker::{TestBroker, get_one};
use wa_testkit::db::TestDb;

use crate::helpers::*;

const P1: &str = "6281200000001";
const P2: &str = "6281200000002";
const P3: &str = "6281200000003";
const P4: &str = "6281200000004";
const P5: &str = "6281200000005";
const P6: &str = "6281200000006";

fn cipher() -> Cipher {
    use base64::Engine;
    Cipher::from_base64(&base64::engine::general_purpose::STANDARD.encode(KEY), "").unwrap()
}

fn events(raw: &[(&str, Value)]) -> Vec<SyncEvent> {
    let tenants = tenant_directory();
    raw.iter()
        .map(|(key, body)| {
            parse(key, &serde_json::to_vec(body).unwrap(), &tenants)
                .unwrap_or_else(|r| panic!("{key} does not parse: {r:?}"))
        })
        .collect()
}

/// A routing key with its event.
type Raw = (&'static str, Value);

fn text(wamid: &str, from: &str, body: &str, at: DateTime<Utc>) -> Raw {
    let event = inbound(wamid, from, "text", json!({"body": body}), at);
    (routing::INBOUND_MESSAGE, event)
}

/// An inbound text carrying Meta's user id (`from` empty: the sender hides the number).
fn from_user(wamid: &str, from: &str, user_id: &str, at: DateTime<Utc>) -> Raw {
    let (key, mut event) = text(wamid, from, "salam", at);
    event["from_user_id"] = json!(user_id);
    event["profile_name"] = Value::Null;
    (key, event)
}

fn step(wamid: &str, word: &str, at: DateTime<Utc>) -> Raw {
    (routing::INBOUND_STATUS, status(wamid, word, at, None))
}

fn priced(wamid: &str, word: &str, at: DateTime<Utc>, category: &str) -> Raw {
    let event = status(wamid, word, at, Some((category, true)));
    (routing::INBOUND_STATUS, event)
}

fn register(jamaah_id: &str, phone: &str) -> Raw {
    let event = jamaah(TENANT, jamaah_id, &format!("+{phone}"));
    (routing::JAMAAH_UPSERTED, event)
}

fn accept(job: &str, to: &str, wamid: &str, at: DateTime<Utc>) -> Raw {
    (routing::OUTBOUND_ACCEPTED, accepted(job, to, wamid, at))
}

/// An outbox event as published: the position of its cause, routing key, tenant and body.
type Published = (usize, &'static str, String, Value);

fn published(events: impl IntoIterator<Item = PendingEvent>) -> Vec<Published> {
    events
        .into_iter()
        .map(|e| {
            (
                e.cause,
                e.routing_key,
                e.tenant,
                serde_json::from_slice(&e.body).unwrap(),
            )
        })
        .collect()
}

async fn in_one_transaction(
    conn: &mut AsyncPgConnection,
    events: &[SyncEvent],
) -> Result<Effects, store::StoreError> {
    in_one_transaction_until(conn, events, async {}).await
}

/// [`in_one_transaction`], committing only once `before_commit` is done.
async fn in_one_transaction_until(
    conn: &mut AsyncPgConnection,
    events: &[SyncEvent],
    before_commit: impl Future<Output = ()> + Send,
) -> Result<Effects, store::StoreError> {
    let cipher = cipher();
    let refs: Vec<&SyncEvent> = events.iter().collect();
    conn.transaction::<Effects, store::StoreError, _>(async |conn| {
        let mut effects = Effects::default();
        store::apply_batch(conn, &cipher, &refs, &mut effects).await?;
        before_commit.await;
        Ok(effects)
    })
    .await
}

/// Applies each event in its own transaction; the causes are the events' positions.
async fn one_by_one(conn: &mut AsyncPgConnection, events: &[SyncEvent]) -> Vec<Published> {
    let mut all = Vec::new();
    for (at, event) in events.iter().enumerate() {
        let effects = in_one_transaction(conn, std::slice::from_ref(event))
            .await
            .unwrap();
        all.extend(
            published(effects.outbox)
                .into_iter()
                .map(|(_, key, tenant, body)| (at, key, tenant, body)),
        );
    }
    all
}

/// Everything the store keeps, by natural keys (row ids differ between two databases) and
/// without the ciphertexts (fresh nonces), as JSON.
async fn snapshot(conn: &mut AsyncPgConnection) -> Value {
    #[derive(diesel::QueryableByName)]
    struct J {
        #[diesel(sql_type = diesel::sql_types::Text)]
        j: String,
    }
    const WHO: &str = "format('%s|%s|%s|%s', c.tenant_id, c.wa_id, c.user_id, c.jamaah_id)";
    let sql = format!(
        "SELECT json_build_object(
           'contacts', (SELECT json_agg(json_build_object('who', {WHO}, 'phone', c.phone_e164,
               'name', c.name, 'profile', c.profile_name, 'known', c.is_known, 'agent', c.agent_id,
               'last_inbound_at', c.last_inbound_at) ORDER BY {WHO}) FROM contacts c),
           'conversations', (SELECT json_agg(json_build_object('who', {WHO}, 'tenant', v.tenant_id,
               'last_message_at', v.last_message_at, 'last_inbound_at', v.last_inbound_at,
               'last_outbound_at', v.last_outbound_at) ORDER BY {WHO})
             FROM conversations v JOIN contacts c ON c.id = v.contact_id),
           'messages', (SELECT json_agg(json_build_object('tenant', m.tenant_id,
               'wamid', m.wa_message_id, 'job', m.job_id, 'direction', m.direction,
               'type', m.message_type, 'who', {WHO}, 'conversation_of', cc.id = c.id,
               'status', m.current_status, 'status_at', m.status_at, 'error_code', m.error_code,
               'error_detail', m.error_detail, 'failure_reason', m.failure_reason,
               'pricing', json_build_array(m.pricing_category, m.pricing_type, m.billable),
               'sent_at', m.sent_at, 'reference', json_build_array(m.reference_kind, m.reference_id),
               'body', length(m.body_ciphertext), 'raw', length(m.raw_ciphertext),
               'key', m.body_key_id)
               ORDER BY m.tenant_id, m.wa_message_id NULLS LAST, m.job_id NULLS LAST)
             FROM messages m JOIN contacts c ON c.id = m.contact_id
               JOIN conversations v ON v.id = m.conversation_id JOIN contacts cc ON cc.id = v.contact_id),
           'statuses', (SELECT json_agg(json_build_object('tenant', s.tenant_id,
               'wamid', s.wa_message_id, 'status', s.status, 'applied', s.applied,
               'occurred_at', s.occurred_at, 'meta_code', s.meta_code, 'detail', s.error_detail,
               'pricing', json_build_array(s.pricing_category, s.pricing_type, s.pricing_model, s.billable))
               ORDER BY s.tenant_id, s.wa_message_id, s.status) FROM message_statuses s),
           'media', (SELECT json_agg(json_build_object('wamid', m.wa_message_id, 'media_id', d.media_id,
               'state', d.state, 'sha256', d.sha256, 'mime', d.mime_type) ORDER BY m.wa_message_id)
             FROM media d JOIN messages m ON m.id = d.message_id),
           'outbox_rows', (SELECT count(*) FROM sync_outbox)
         )::text AS j"
    );
    let row: J = diesel::sql_query(sql).get_result(conn).await.unwrap();
    serde_json::from_str(&row.j).unwrap()
}

fn steps_of<'a>(published: &'a [Published], wamid: &str) -> Vec<(usize, &'a str)> {
    published
        .iter()
        .filter(|(_, key, _, body)| {
            *key == routing::OUTBOUND_STATUS && body["wa_message_id"] == wamid
        })
        .map(|(at, _, _, body)| (*at, body["status"].as_str().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gives_exactly_what_applying_its_events_one_by_one_gives() {
    // Arrange: the same history in two databases (a known jamaah, a stored outbound message, and
    // a status still waiting for its message), then one batch with every edge case in it.
    let t = Utc::now() - ChronoDuration::hours(1);
    let s = |seconds: i64| t + ChronoDuration::seconds(seconds);
    let history = events(&[
        register("jm-1", P1),
        accept("job-0", P1, "wamid.0", s(0)),
        priced("wamid.9", "delivered", s(1), "utility"),
    ]);
    let mut no_profile = text("wamid.in.3", P4, "b", s(21));
    no_profile.1["profile_name"] = Value::Null;
    let mut other_status = step("wamid.other", "delivered", s(61));
    other_status.1["source"]["phone_number_id"] = json!(OTHER_PHONE_NUMBER_ID);
    let mut other = text("wamid.in.other", P1, "tenant lain", s(60));
    other.1["source"]["phone_number_id"] = json!(OTHER_PHONE_NUMBER_ID);
    let picture =
        json!({"id": "media-1", "mime_type": "image/jpeg", "sha256": "abc=", "caption": "x"});
    let image = inbound("wamid.in.img", P2, "image", picture, s(50));
    let failure = failed("job-f", P2, "window_closed", s(40));
    let erasure = json!({"tenant_id": TENANT, "jamaah_id": "jm-1"});
    let batch = events(&[
        text("wamid.in.1", P1, "halo", s(10)),            // 0
        text("wamid.in.1", P1, "halo", s(10)),            // 1: the same wamid again
        priced("wamid.1", "sent", s(11), "marketing"),    // 2: before its accepted event
        step("wamid.1", "read", s(13)),                   // 3
        accept("job-1", P2, "wamid.1", s(9)),             // 4: applies 2 and 3
        step("wamid.1", "delivered", s(12)),              // 5: behind read: no step
        priced("wamid.0", "delivered", s(14), "utility"), // 6: a stored message
        priced("wamid.0", "delivered", s(14), "utility"), // 7: the same status again
        accept("job-9", P3, "wamid.9", s(0)),             // 8: applies the stored wait
        step("wamid.9", "read", s(15)),                   // 9
        text("wamid.in.2", P4, "a", s(20)),               // 10: an unknown sender
        no_profile,                                       // 11: keeps 10's profile name
        register("jm-4", P4),                             // 12: links the unknown sender
        text("wamid.in.4", P4, "c", s(22)),               // 13: now jm-4's
        from_user("wamid.in.5", "", "ID.U1", s(30)),      // 14: known by user id only
        from_user("wamid.in.6", P5, "ID.U1", s(31)),      // 15: the same user, a number
        from_user("wamid.in.7", "", "ID.U1", s(32)),      // 16: 14's contact (oldest)
        from_user("wamid.in.8", P6, "ID.U2", s(33)),      // 17
        from_user("wamid.in.9", "", "ID.U2", s(34)),      // 18: 17's contact
        (routing::OUTBOUND_FAILED, failure),              // 19
        accept("job-1", P2, "wamid.1", s(9)),             // 20: a redelivery
        other_status,                                     // 21: another tenant, waits
        other,                                            // 22
        (routing::INBOUND_MESSAGE, image),                // 23: with media
        accept("job-2", P1, "wamid.2", s(51)),            // 24
        step("wamid.2", "failed", s(52)),                 // 25
        step("wamid.2", "delivered", s(53)),              // 26: behind failed
        (routing::JAMAAH_ERASURE_REQUESTED, erasure),     // 27
        text("wamid.in.10", P1, "lagi", s(70)),           // 28: after the erasure
    ]);
    let batched_db = TestDb::new().await.unwrap();
    let single_db = TestDb::new().await.unwrap();
    let mut batched_conn = batched_db.conn().await;
    let mut single_conn = single_db.conn().await;
    one_by_one(&mut batched_conn, &history).await;
    one_by_one(&mut single_conn, &history).await;

    // Act
    let batched = published(
        in_one_transaction(&mut batched_conn, &batch)
            .await
            .unwrap()
            .outbox,
    );
    let single = one_by_one(&mut single_conn, &batch).await;

    // Assert: the same rows and the same events, in the same order, with the same causes.
    assert_eq!(
        snapshot(&mut batched_conn).await,
        snapshot(&mut single_conn).await
    );
    assert_eq!(batched, single);
    // And what that is: one notification for the duplicated inbound, steps only forward and
    // published when the accepted event applies them, the waiting status of an earlier batch
    // applied once, a sender known by user id matched as one-by-one matches it.
    let notifications: Vec<usize> = batched
        .iter()
        .filter(|(_, key, _, _)| *key == routing::AGENT_NOTIFICATION)
        .map(|(at, ..)| *at)
        .collect();
    assert_eq!(
        notifications,
        vec![0, 10, 11, 13, 14, 15, 16, 17, 18, 22, 23, 28]
    );
    assert_eq!(
        steps_of(&batched, "wamid.1"),
        vec![(4, "sent"), (4, "read")]
    );
    assert_eq!(steps_of(&batched, "wamid.0"), vec![(6, "delivered")]);
    assert_eq!(
        steps_of(&batched, "wamid.9"),
        vec![(8, "delivered"), (9, "read")]
    );
    assert_eq!(steps_of(&batched, "wamid.2"), vec![(25, "failed")]);
    let after_link = &batched.iter().find(|(at, ..)| *at == 13).unwrap().3;
    assert_eq!(after_link["agent_id"], "agent-7");
    let before_link = &batched.iter().find(|(at, ..)| *at == 11).unwrap().3;
    assert_eq!(before_link["agent_id"], Value::Null);
    assert_eq!(
        before_link["message"], "Pak Ahmad: b",
        "the profile name of message 10 is kept"
    );
    let snapshot = snapshot(&mut batched_conn).await;
    let whose = |wamid: &str| {
        snapshot["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["wamid"] == wamid)
            .unwrap()["who"]
            .clone()
    };
    assert_eq!(whose("wamid.in.5"), json!(format!("{TENANT}||ID.U1|")));
    assert_eq!(whose("wamid.in.7"), json!(format!("{TENANT}||ID.U1|")));
    assert_eq!(whose("wamid.in.9"), json!(format!("{TENANT}|{P6}|ID.U2|")));
    let statuses = snapshot["statuses"].as_array().unwrap();
    assert_eq!(
        statuses.iter().filter(|s| s["applied"] == false).count(),
        1,
        "only the other tenant's status still waits: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_one_statement_takes_is_written_completely() {
    // Arrange: 1,200 messages, every other one with its status before its accepted event.
    let db = TestDb::new().await.unwrap();
    let mut conn = db.conn().await;
    let at = Utc::now();
    let mut raw = Vec::new();
    for i in 0..1200 {
        let wamid = format!("wamid.big.{i}");
        let sent = step(&wamid, "sent", at);
        let accepted = accept(&format!("job-big-{i}"), &format!("62813{i:08}"), &wamid, at);
        if i % 2 == 0 {
            raw.extend([sent, accepted]);
        } else {
            raw.extend([accepted, sent]);
        }
    }
    let batch = events(&raw);

    // Act
    let effects = in_one_transaction(&mut conn, &batch).await.unwrap();

    // Assert
    let snapshot = snapshot(&mut conn).await;
    let messages = snapshot["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1200);
    assert!(messages.iter().all(|m| m["status"] == "sent"));
    let statuses = snapshot["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 1200);
    assert!(statuses.iter().all(|s| s["applied"] == true));
    assert_eq!(effects.outbox.len(), 1200);
    assert_eq!(snapshot["contacts"].as_array().unwrap().len(), 1200);
}

/// A batcher on its own database and vhost, driven directly like the consume loop drives it.
struct Rig {
    db: TestDb,
    _broker: TestBroker,
    channel: lapin::Channel,
    _conn: wa_amqp::Connection,
    handler: Arc<SyncHandler>,
    batcher: tokio::task::JoinHandle<()>,
}

impl Rig {
    /// Every event goes into one batch: the batch waits long enough for all of them.
    async fn new() -> Rig {
        let db = TestDb::new().await.unwrap();
        let broker = TestBroker::new().await.unwrap();
        let conn = broker.declared().await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        let deps = IngestDeps {
            pool: db.pool().await,
            cipher: cipher(),
            publisher: Publisher::connect(&broker.amqp_url, "sync-batch-test")
                .await
                .unwrap(),
            media_store: Arc::new(FsMediaStore::new(
                std::env::temp_dir()
                    .join(format!("wa-sync-batch-{}", uuid::Uuid::new_v4().simple())),
            )) as Arc<dyn MediaStore>,
        };
        let config = BatchConfig {
            max_events: 100,
            max_wait: Duration::from_millis(500),
        };
        let (handler, batcher) = SyncHandler::start(Arc::new(tenant_directory()), deps, config);
        Rig {
            db,
            _broker: broker,
            channel,
            _conn: conn,
            handler: Arc::new(handler),
            batcher,
        }
    }

    /// Submits the events in order, all at once, and returns their outcomes in order.
    async fn submit(&self, events: &[(&str, Value)]) -> Vec<Outcome> {
        let bodies: Vec<(&str, Vec<u8>)> = events
            .iter()
            .map(|(key, body)| (*key, serde_json::to_vec(body).unwrap()))
            .collect();
        // `join_all` polls the handlers in order, so they reach the batcher in this order.
        futures_util::future::join_all(
            bodies
                .iter()
                .map(|(key, body)| self.handler.handle_message(key, body, 1)),
        )
        .await
    }

    async fn published(&self, queue_name: &str) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some((body, _)) = get_one(&self.channel, queue_name).await.unwrap() {
            out.push(serde_json::from_slice(&body).unwrap());
        }
        out
    }

    async fn count(&self, sql: &str) -> i64 {
        count_in(&mut self.db.conn().await, sql).await
    }

    async fn stop(self) {
        drop(self.handler);
        self.batcher.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_mid_batch_is_dead_lettered_alone_and_the_rest_commit_and_are_acked() {
    // Arrange: the database refuses one message (a constraint only this test has).
    let rig = Rig::new().await;
    diesel::sql_query(
        "ALTER TABLE messages ADD CONSTRAINT refuse_poison \
         CHECK (wa_message_id IS DISTINCT FROM 'wamid.poison')",
    )
    .execute(&mut rig.db.conn().await)
    .await
    .unwrap();
    let at = Utc::now();
    let events: Vec<(&str, Value)> = (0..30)
        .map(|i| {
            let wamid = if i == 17 {
                "wamid.poison".to_owned()
            } else {
                format!("wamid.ok.{i}")
            };
            (
                routing::INBOUND_MESSAGE,
                inbound(
                    &wamid,
                    &format!("62812{i:08}"),
                    "text",
                    json!({"body": "x"}),
                    at,
                ),
            )
        })
        .collect();

    // Act
    let outcomes = rig.submit(&events).await;

    // Assert
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 17 {
            let Outcome::DeadLetter { reason, detail } = outcome else {
                panic!("the poison event was not dead-lettered: {outcome:?}");
            };
            assert_eq!(reason, "store_rejected");
            assert!(
                detail.contains("refuse_poison"),
                "the detail names the constraint: {detail}"
            );
        } else {
            assert_eq!(*outcome, Outcome::Ack, "event {i}");
        }
    }
    assert_eq!(
        rig.count("SELECT count(*)::bigint AS n FROM messages")
            .await,
        29
    );
    assert_eq!(
        rig.count("SELECT count(*)::bigint AS n FROM sync_outbox")
            .await,
        0
    );
    assert_eq!(rig.published(queue::PLATFORM_NOTIFICATIONS).await.len(), 29);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_wamid_twice_and_statuses_around_their_accepted_event_in_one_batch_store_once_and_step_forward()
 {
    // Arrange
    let rig = Rig::new().await;
    let at = Utc::now() - ChronoDuration::minutes(10);
    let s = |seconds: i64| at + ChronoDuration::seconds(seconds);
    let events = [
        text("wamid.twice", P1, "halo", s(0)),
        step("wamid.out", "delivered", s(2)),
        text("wamid.twice", P1, "halo", s(0)),
        accept("job-out", P1, "wamid.out", s(1)),
        step("wamid.out", "sent", s(1)),
        step("wamid.out", "read", s(3)),
        step("wamid.out", "read", s(3)),
    ];

    // Act
    let outcomes = rig.submit(&events).await;

    // Assert
    assert!(outcomes.iter().all(|o| *o == Outcome::Ack), "{outcomes:?}");
    assert_eq!(
        rig.count("SELECT count(*)::bigint AS n FROM messages WHERE direction = 'inbound'")
            .await,
        1
    );
    assert_eq!(
        rig.count("SELECT count(*)::bigint AS n FROM messages WHERE current_status = 'read'")
            .await,
        1
    );
    assert_eq!(
        rig.count("SELECT count(*)::bigint AS n FROM message_statuses WHERE applied")
            .await,
        3
    );
    assert_eq!(rig.published(queue::PLATFORM_NOTIFICATIONS).await.len(), 1);
    let steps: Vec<String> = rig
        .published(queue::PLATFORM_OUTCOMES)
        .await
        .into_iter()
        .filter(|b| b["wa_message_id"] == "wamid.out")
        .map(|b| b["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(steps, vec!["delivered", "read"]);
    rig.stop().await;
}

/// Two replicas: one transaction holds a message's status, another its accepted event, and the
/// second runs while the first is still open. Whichever comes first, the status is applied once
/// and its step published once (without a common lock neither transaction would see the other's
/// row and the status would wait for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_and_its_accepted_event_in_two_concurrent_transactions_meet() {
    for status_first in [true, false] {
        // Arrange
        let db = TestDb::new().await.unwrap();
        let at = Utc::now() - ChronoDuration::minutes(10);
        let status = events(&[step(
            "wamid.c",
            "delivered",
            at + ChronoDuration::seconds(5),
        )]);
        let accepted = events(&[accept("job-c", P1, "wamid.c", at)]);
        let (first, second) = if status_first {
            (status, accepted)
        } else {
            (accepted, status)
        };
        let applied = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let mut first_conn = db.conn().await;
        let open = tokio::spawn({
            let (applied, release) = (applied.clone(), release.clone());
            async move {
                let hold = async move {
                    applied.notify_one();
                    release.notified().await;
                };
                in_one_transaction_until(&mut first_conn, &first, hold).await
            }
        });
        applied.notified().await;

        // Act: the second transaction, then the first commits once the second is done or waits.
        let mut second_conn = db.conn().await;
        let concurrent =
            tokio::spawn(async move { in_one_transaction(&mut second_conn, &second).await });
        let mut observer = db.conn().await;
        let waiting_for_a_lock = "SELECT count(*)::bigint AS n FROM pg_locks WHERE NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !concurrent.is_finished() && count_in(&mut observer, waiting_for_a_lock).await == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the second transaction neither finished nor waited"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        release.notify_one();
        let first_effects = open.await.unwrap().unwrap();
        let second_effects = concurrent.await.unwrap().unwrap();

        // Assert
        let applied_statuses = count_in(
            &mut observer,
            "SELECT count(*)::bigint AS n FROM message_statuses WHERE applied",
        )
        .await;
        let delivered = count_in(
            &mut observer,
            "SELECT count(*)::bigint AS n FROM messages WHERE current_status = 'delivered'",
        )
        .await;
        let steps = steps_of(&published(first_effects.outbox), "wamid.c").len()
            + steps_of(&published(second_effects.outbox), "wamid.c").len();
        assert_eq!(
            (applied_statuses, delivered, steps),
            (1, 1, 1),
            "status first: {status_first}"
        );
    }
}
