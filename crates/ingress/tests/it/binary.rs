//! The `ingress` binary itself: configuration errors exit non-zero with one line naming the variable.

use std::process::Command;

fn run_ingress(env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingress"));
    command.env_clear().env("RUST_LOG", "off");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("ingress runs")
}

fn last_stderr_line(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_binary_exits_non_zero_naming_a_missing_app_secret() {
    let output = run_ingress(&[("WHATSAPP_WEBHOOK_VERIFY_TOKEN", "t")]);

    assert!(!output.status.success());
    assert_eq!(
        last_stderr_line(&output),
        "ingress: WHATSAPP_APP_SECRET is required but not set"
    );
}

#[test]
fn the_binary_exits_non_zero_naming_an_invalid_variable_without_echoing_secrets() {
    let output = run_ingress(&[
        ("WHATSAPP_APP_SECRET", "very-secret-value"),
        ("WHATSAPP_WEBHOOK_VERIFY_TOKEN", "t"),
        ("INGRESS_CONFIRM_TIMEOUT_MS", "soon"),
    ]);

    assert!(!output.status.success());
    let line = last_stderr_line(&output);
    assert!(
        line.starts_with("ingress: INGRESS_CONFIRM_TIMEOUT_MS is invalid"),
        "{line}"
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("very-secret-value"));
}
