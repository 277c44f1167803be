//! The `graph-mock` binary: configuration errors name the variable; SIGTERM stops it cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_bad_variable_exits_non_zero_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_graph-mock"))
        .env("GRAPH_MOCK_ADDR", "127.0.0.1:0")
        .env("GRAPH_MOCK_WEBHOOK_URL", "http://127.0.0.1:9/webhook")
        .env_remove("GRAPH_MOCK_APP_SECRET")
        .output()
        .expect("runs");

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("GRAPH_MOCK_APP_SECRET"));
}

#[test]
fn an_unparsable_number_exits_non_zero_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_graph-mock"))
        .env("GRAPH_MOCK_RATE_PER_SECOND", "banyak")
        .output()
        .expect("runs");

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("GRAPH_MOCK_RATE_PER_SECOND"));
}

#[test]
fn sigterm_stops_the_binary_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_graph-mock"))
        .env("GRAPH_MOCK_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("LOG_FORMAT")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("graph-mock ready"));
    assert!(ready, "the binary logs when it is ready");

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
