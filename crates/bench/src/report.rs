//! One row per measured figure, written as markdown and JSON.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

/// One measured figure with its same-run baseline and its target.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Which benchmark (`ingress`, `sender`, `sync`, `scheduler`, `memory`).
    pub group: String,
    /// What was measured, e.g. `webhook requests/s (64 connections)`.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Unit of `value` and `baseline_value`.
    pub unit: String,
    /// What the baseline is, e.g. `raw broker confirmed publishes/s`.
    pub baseline_name: Option<String>,
    /// The baseline measured in the same run.
    pub baseline_value: Option<f64>,
    /// The target as text, e.g. `>= 60 % of baseline`; `-` for a figure shown for reference only.
    pub target: String,
    /// Whether the target was met.
    pub met: bool,
}

impl Figure {
    /// `value / baseline_value`, when there is a baseline.
    pub fn ratio(&self) -> Option<f64> {
        match self.baseline_value {
            Some(base) if base != 0.0 => Some(self.value / base),
            _ => None,
        }
    }
}

/// Renders the markdown table.
pub fn markdown(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| group | figure | value | baseline (same run) | ratio | target | met |\n|---|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let baseline = match (&f.baseline_name, f.baseline_value) {
            (Some(name), Some(value)) => format!("{name}: {value:.1} {}", f.unit),
            _ => "-".to_owned(),
        };
        let ratio = f
            .ratio()
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} {} | {} | {} | {} | {} |",
            f.group,
            f.name,
            f.value,
            f.unit,
            baseline,
            ratio,
            f.target,
            match (f.target.as_str(), f.met) {
                ("-", _) => "-",
                (_, true) => "yes",
                (_, false) => "NO",
            }
        );
    }
    out
}

/// Writes `report.md` and `report.json` into `dir`.
pub fn write(dir: &Path, figures: &[Figure]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), markdown(figures))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(figures)?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_shows_ratio_against_the_same_run_baseline() {
        let figures = vec![Figure {
            group: "ingress".into(),
            name: "webhook requests/s".into(),
            value: 1500.0,
            unit: "req/s".into(),
            baseline_name: Some("raw confirmed publishes/s".into()),
            baseline_value: Some(2000.0),
            target: ">= 0.60".into(),
            met: true,
        }];
        let table = markdown(&figures);
        assert!(table.contains("| ingress | webhook requests/s | 1500.0 req/s |"));
        assert!(table.contains("| 0.75 |"));
        assert!(table.contains("| >= 0.60 | yes |"));
    }

    #[test]
    fn reference_figures_have_no_verdict() {
        let figures = vec![Figure {
            group: "memory".into(),
            name: "graph-mock: peak RSS under load".into(),
            value: 30.0,
            unit: "MiB".into(),
            baseline_name: Some("idle RSS".into()),
            baseline_value: Some(20.0),
            target: "-".into(),
            met: true,
        }];
        assert!(markdown(&figures).ends_with("| 1.50 | - | - |\n"));
    }
}
