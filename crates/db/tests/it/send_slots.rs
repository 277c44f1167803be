//! `reserve_send_slots`: the sliding-window send limiter shared by every sender replica.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use wa_db::models::sender::{SlotWindow, reserve_send_slots};
use wa_db::schema::rate_limits;
use wa_testkit::db::TestDb;

const SHAPE: SlotWindow = SlotWindow {
    cap: 5,
    window: Duration::from_secs(1),
    spacing: Duration::from_millis(10),
    tolerance: Duration::from_millis(10),
    loose_allowance: Duration::from_millis(10),
};

/// Rounding of the database's timestamps and of the delays (seconds as doubles) back to µs.
const ROUNDING: Duration = Duration::from_micros(2);

/// Reserves slots and returns them as instants on the database clock (the reading the answer
/// carries plus each delay), plus their allowance.
async fn reserve_on_db_clock(
    conn: &mut AsyncPgConnection,
    key: &str,
    shape: SlotWindow,
    count: u32,
    demand: u32,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let reservation = reserve_send_slots(conn, key, shape, count, demand, Duration::ZERO).await?;
    let slots = reservation
        .delays
        .iter()
        .map(|&d| {
            let at = reservation.clock_us + (d * 1e6).round() as i64;
            Ok(Duration::from_micros(u64::try_from(at)?))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((slots, reservation.allowance))
}

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
                let (reserved, _) =
                    reserve_on_db_clock(&mut conn, "sender:106540352242922", SHAPE, 5, 5).await?;
                slots.extend(reserved);
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
            pair[1] - pair[0] + ROUNDING >= SHAPE.spacing,
            "{:?}",
            pair[1] - pair[0]
        );
    }
    for run in slots.windows(6) {
        assert!(
            run[5] - run[0] + ROUNDING >= SHAPE.window,
            "{:?}",
            run[5] - run[0]
        );
    }
    let span = slots[29] - slots[0];
    assert!(span + ROUNDING >= SHAPE.window * 5, "{span:?}");
    // The callers all ask within a few ms, far less than a window, so only the rules place slots.
    assert!(span <= SHAPE.span_from_idle(30) + ROUNDING, "{span:?}");
    assert!(
        slots[4] - slots[0] <= SHAPE.spacing * 4 + ROUNDING,
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
        tolerance: Duration::ZERO,
        loose_allowance: Duration::ZERO,
    };
    reserve_send_slots(&mut conn, "k", shape, 3, 3, Duration::ZERO).await?;
    tokio::time::sleep(Duration::from_millis(250)).await;

    // Act
    let delays = reserve_send_slots(&mut conn, "k", shape, 4, 4, Duration::from_millis(50))
        .await?
        .delays;

    // Assert: three at the lead, the fourth a window later; the log keeps only the last three.
    assert_eq!(delays.len(), 4);
    for delay in &delays[..3] {
        assert!((delay - 0.05).abs() < 1e-3, "{delays:?}");
    }
    assert!((delays[3] - 0.25).abs() < 1e-3, "{delays:?}");
    let recent: Vec<Option<i64>> = rate_limits::table
        .find("k")
        .select(rate_limits::recent)
        .first(&mut conn)
        .await?;
    assert_eq!(recent.len(), 3);
    Ok(())
}

#[tokio::test]
async fn far_below_the_cap_sends_may_start_late_and_the_next_window_waits_for_their_latest_start()
-> anyhow::Result<()> {
    // Arrange: a cap of 8; slots may start 100 ms late while under a quarter of it is in use.
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    let shape = SlotWindow {
        cap: 8,
        spacing: Duration::ZERO,
        loose_allowance: Duration::from_millis(100),
        ..SHAPE
    };
    let mut slots = Vec::new();
    let mut allowances = Vec::new();

    // Act: one slot and another (a quiet number), then six with six more wanted (near the cap),
    // then the ninth, which the window rule binds.
    for (count, demand) in [(1, 1), (1, 1), (6, 12), (1, 1)] {
        let (reserved, allowance) =
            reserve_on_db_clock(&mut conn, "k", shape, count, demand).await?;
        allowances.push(allowance);
        slots.extend(reserved);
    }

    // Assert: loose allowances while quiet, the tolerance near the cap; the ninth slot is a window
    // minus the tolerance after the latest start allowed to the first (not just after the first).
    let ms = Duration::from_millis;
    assert_eq!(allowances, vec![ms(100), ms(100), ms(10), ms(10)]);
    assert_eq!(slots.len(), 9);
    let ninth = slots[8] - slots[0];
    assert!(ninth + ROUNDING >= ms(1_090), "{ninth:?}");
    assert!(ninth <= ms(1_090) + ROUNDING, "{ninth:?}");
    Ok(())
}

#[tokio::test]
async fn invalid_arguments_are_refused_naming_them() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    let shape = SlotWindow { cap: 0, ..SHAPE };

    let error = reserve_send_slots(&mut conn, "k", shape, 1, 1, Duration::ZERO)
        .await
        .unwrap_err();

    assert!(error.to_string().contains("cap 0"), "{error}");
    Ok(())
}

#[tokio::test]
async fn the_answer_carries_the_database_clock_reading_its_delays_count_from() -> anyhow::Result<()>
{
    // Arrange
    let db = TestDb::new().await?;
    let mut conn = db.conn().await;
    let shape = SlotWindow {
        spacing: Duration::from_millis(20),
        ..SHAPE
    };

    // Act: the reading and `tat` (last slot + spacing) in one transaction, under the row lock.
    let before = chrono::Utc::now().timestamp_micros();
    let (reservation, tat) = conn
        .transaction(async |conn| {
            let reservation =
                reserve_send_slots(conn, "k", shape, 3, 3, Duration::from_millis(30)).await?;
            let tat: chrono::DateTime<chrono::Utc> = rate_limits::table
                .find("k")
                .select(rate_limits::tat)
                .first(conn)
                .await?;
            anyhow::Ok((reservation, tat))
        })
        .await?;
    let after = chrono::Utc::now().timestamp_micros();

    // Assert: read on this host's clock during the call; the last slot is the reading plus its
    // delay, exactly.
    let rounding = i64::try_from(ROUNDING.as_micros())?;
    assert!(
        (before - rounding..=after + rounding).contains(&reservation.clock_us),
        "{before} <= {} <= {after}",
        reservation.clock_us
    );
    let last_delay_us = (reservation.delays[2] * 1e6).round() as i64;
    let last_slot = tat.timestamp_micros() - i64::try_from(shape.spacing.as_micros())?;
    assert!(
        (reservation.clock_us + last_delay_us - last_slot).abs() <= rounding,
        "reading {} + delay {last_delay_us} vs last slot {last_slot}",
        reservation.clock_us
    );
    Ok(())
}
