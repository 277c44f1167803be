//! Per-number throughput (130429) and pair rate (131056).

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn sends_beyond_the_cap_within_one_second_get_130429_and_pass_again_after_the_window() {
    let t = TestMock::with(|c| c.rate_per_second = 5).await;
    let started = std::time::Instant::now();

    let mut results = Vec::new();
    for _ in 0..8 {
        results.push(t.send(text_to(&unique_number(), "Pengingat")).await);
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the burst must fit in one second"
    );

    let accepted = results.iter().filter(|r| r.0 == 200).count();
    assert_eq!(accepted, 5);
    for throttled in results.iter().filter(|r| r.0 != 200) {
        assert_meta_error(throttled, 400, 130_429);
        assert_eq!(throttled.1["error"]["message"], "(#130429) Rate limit hit");
    }
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let after = t.send(text_to(&unique_number(), "Pengingat")).await;
    assert_eq!(after.0, 200, "{}", after.1);

    let stats = t.stats().await;
    let phone = &stats["phone_numbers"][PNID];
    assert_eq!(phone["rate_limited_130429"], 3);
    assert_eq!(phone["max_accepted_in_any_second"], 5);
    assert_eq!(phone["max_attempts_in_any_second"], 8);
    assert_eq!(phone["accepted"], 6);
    assert_eq!(phone["errors_by_code"]["130429"], 3);
}

#[tokio::test]
async fn concurrent_sends_never_exceed_the_cap() {
    let t = TestMock::with(|c| {
        c.rate_per_second = 10;
        c.workers = 2;
    })
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let http = t.http.clone();
        let url = t.url(&format!("/v24.0/{PNID}/messages"));
        tasks.spawn(async move {
            http.post(url)
                .bearer_auth(TOKEN)
                .json(&text_to(&unique_number(), "x"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        if result.expect("task").expect("request") == 200 {
            ok += 1;
        }
    }

    let stats = t.stats().await;
    let max = stats["phone_numbers"][PNID]["max_accepted_in_any_second"]
        .as_u64()
        .expect("number");
    assert!(max <= 10, "max {max}");
    assert!(ok >= 10, "at least one full window accepted, got {ok}");
}

#[tokio::test]
async fn second_send_to_the_same_recipient_within_the_pair_interval_gets_131056() {
    let t = TestMock::with(|c| c.pair_interval = Duration::from_millis(400)).await;
    let jamaah = unique_number();

    let first = t.send(text_to(&jamaah, "Pengingat cicilan")).await;
    let second = t.send(text_to(&jamaah, "Invoice")).await;
    let other = t.send(text_to(&unique_number(), "Invoice")).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    let later = t.send(text_to(&jamaah, "Invoice")).await;

    assert_eq!(first.0, 200);
    assert_meta_error(&second, 400, 131_056);
    assert_eq!(
        second.1["error"]["message"],
        "(#131056) (Business Account, Consumer Account) pair rate limit hit"
    );
    assert_eq!(other.0, 200, "other recipients are not affected");
    assert_eq!(later.0, 200, "{}", later.1);
    assert_eq!(
        t.stats().await["phone_numbers"][PNID]["pair_rate_limited_131056"],
        1
    );
}

#[tokio::test]
async fn the_pair_rate_matches_the_recipient_whatever_form_to_has() {
    let t = TestMock::with(|c| c.pair_interval = Duration::from_secs(5)).await;

    let first = t.send(text_to("+6281298765432", "a")).await;
    let second = t.send(text_to("+62 812-9876-5432", "b")).await;

    assert_eq!(first.0, 200);
    assert_meta_error(&second, 400, 131_056);
}

#[tokio::test]
async fn a_zero_pair_interval_disables_the_pair_rate() {
    let t = TestMock::with(|c| c.pair_interval = Duration::ZERO).await;

    let first = t.send(text_to(JAMAAH, "a")).await;
    let second = t.send(text_to(JAMAAH, "b")).await;

    assert_eq!((first.0, second.0), (200, 200));
}
