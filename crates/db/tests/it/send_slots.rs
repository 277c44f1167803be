//! `reserve_send_slots`: the sliding-window send limiter shared by every sender replica.

use std::time::{Duration, Instant};

use wa_db::models::sender::{SlotWindow, reserve_send_slots};
use wa_testkit::db::TestDb;

const SHAPE: SlotWindow = SlotWindow {
    cap: 5,
    window: Duration::from_secs(1),
    spacing: Duration::from_millis(10),
};

/// How far apart the callers' readings of the database clock may be (a fraction of a round trip).
const SKEW: Duration = Duration::from_millis(5);

#[tokio::test]
async fn concurrent_callers_share_one_window_and_a_quiet_key_uses_it_at_once() -> anyhow::Result<()>
{
    // Arrange: three callers, as three sender replicas, on connections of their own.
    let db = TestDb::new().await?;
    let mut callers = tokio::task::JoinSet::new();

    // Act: each reserves 5 slots twice, concurrently (30 slots: six windows' worth).
    for _ in 0..3 {
        let mut conn = db.conn().await;
        callers.spawn(async move {
            let mut slots = Vec::new();
            for _ in 0..2 {
                let delays = reserve_send_slots(
                    &mut conn,
                    "sender:106540352242922",
                    SHAPE,
                    5,
                    Duration::ZERO,
                )
                .await?;
                let answered = Instant::now();
                slots.extend(
                    delays
                        .into_iter()
                        .map(|d| answered + Duration::from_secs_f64(d.max(0.0))),
                );
            }
            anyhow::Ok(slots)
        });
    }
    let mut slots = Vec::new();
    while let Some(joined) = callers.join_next().await {
        slots.extend(joined??);
    }
    slots.sort();

    // Assert: never more than the cap in a window, never closer than the spacing, and the first
    // window is used at once (a fixed pace would put the 30th slot 29 × 200 ms = 5.8 s in).
    assert_eq!(slots.len(), 30);
    for pair in slots.windows(2) {
        assert!(
            pair[1] - pair[0] + SKEW >= SHAPE.spacing,
            "{:?}",
            pair[1] - pair[0]
        );
    }
    for run in slots.windows(6) {
        assert!(
            run[5] - run[0] + SKEW >= SHAPE.window,
            "{:?}",
            run[5] - run[0]
        );
    }
    let span = slots[29] - slots[0];
    assert!(span >= SHAPE.window * 5, "{span:?}");
    assert!(span <= SHAPE.span_from_idle(30) + SKEW * 6, "{span:?}");
    assert!(
        slots[4] - slots[0] <= SHAPE.spacing * 4 + SKEW,
        "{:?}",
        slots[4] - slots[0]
    );
    Ok(())
}

#[tokio::test]
async fn slots_older_than_a_window_are_forgotten_and_a_lead_is_kept() -> anyhow::Result<()> {
    // Arrange: a window filled long ago.
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    let shape = SlotWindow {
        cap: 3,
        window: Duration::from_millis(200),
        spacing: Duration::ZERO,
    };
    reserve_send_slots(&mut conn, "k", shape, 3, Duration::ZERO).await?;
    tokio::time::sleep(Duration::from_millis(250)).await;

    // Act
    let delays = reserve_send_slots(&mut conn, "k", shape, 4, Duration::from_millis(50)).await?;

    // Assert: three at the lead, the fourth a window later; the log keeps only the last three.
    assert_eq!(delays.len(), 4);
    for delay in &delays[..3] {
        assert!((delay - 0.05).abs() < 1e-3, "{delays:?}");
    }
    assert!((delays[3] - 0.25).abs() < 1e-3, "{delays:?}");
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let recent: Vec<Option<i64>> = wa_db::schema::rate_limits::table
        .find("k")
        .select(wa_db::schema::rate_limits::recent)
        .first(&mut conn)
        .await?;
    assert_eq!(recent.len(), 3);
    Ok(())
}

#[tokio::test]
async fn invalid_arguments_are_refused_naming_them() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    let shape = SlotWindow { cap: 0, ..SHAPE };

    let error = reserve_send_slots(&mut conn, "k", shape, 1, Duration::ZERO)
        .await
        .unwrap_err();

    assert!(error.to_string().contains("cap 0"), "{error}");
    Ok(())
}
