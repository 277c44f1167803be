//! A strict parser of the Prometheus text exposition format (version 0.0.4, what `/metrics`
//! serves), so a scrape that Prometheus would reject, or accept with a different meaning, fails
//! the test with the line that is wrong. Lenient parsers skip lines they do not understand; this
//! one refuses them.
//!
//! Checked: `# HELP`/`# TYPE` syntax and escapes, one `TYPE` per family and before its samples,
//! known types, metric and label names, quoted label values with their escapes, no reserved
//! (`__`) or repeated label names, values (Go float syntax, `NaN`, `±Inf`) and optional integer
//! timestamps, every family's samples in one group, samples named after their family (the
//! histogram/summary suffixes), no series twice, and histogram/summary structure (`le` buckets
//! ascending and cumulative up to `+Inf`, `_count` equal to the `+Inf` bucket, `_sum` present,
//! `quantile` within 0..=1).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Full sample name (with `_bucket`/`_sum`/`_count` for histograms and summaries).
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// All samples of one family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

impl Family {
    /// The label names of its series (without `le` and `quantile`).
    pub fn label_names(&self) -> BTreeSet<&str> {
        self.samples
            .iter()
            .flat_map(|s| s.labels.keys())
            .map(String::as_str)
            .filter(|l| *l != "le" && *l != "quantile")
            .collect()
    }

    /// Whether a series has every `(label, value)` of `wanted`.
    pub fn has_series(&self, wanted: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|s| {
            wanted
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the plain sample (not a bucket, sum or count) with exactly these labels.
    pub fn value(&self, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == self.name && s.labels == wanted)
            .map(|s| s.value)
    }
}

/// A line that is not valid exposition format, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Parses a whole scrape.
pub fn parse(text: &str) -> Result<Vec<Family>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    // Families whose group of lines has ended: seeing them again is an error.
    let mut closed: HashMap<String, Kind> = HashMap::new();
    let mut series: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let fail = |reason: String| ParseError { line, reason };
        if raw.is_empty() {
            continue;
        }
        if raw.trim().is_empty() {
            return Err(fail("a line of blanks".into()));
        }
        if let Some(comment) = raw.strip_prefix('#') {
            let mut words = comment
                .trim_start_matches([' ', '\t'])
                .splitn(3, [' ', '\t']);
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), rest) => {
                    check_metric_name(name).map_err(fail)?;
                    let help = unescape(rest.unwrap_or_default(), false).map_err(fail)?;
                    let family = open_family(&mut families, &mut closed, name).map_err(fail)?;
                    if family.help.replace(help).is_some() {
                        return Err(fail(format!("second HELP for {name}")));
                    }
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    check_metric_name(name).map_err(fail)?;
                    let kind = match kind.trim_end() {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "histogram" => Kind::Histogram,
                        "summary" => Kind::Summary,
                        "untyped" => Kind::Untyped,
                        other => return Err(fail(format!("unknown type {other:?}"))),
                    };
                    let family = open_family(&mut families, &mut closed, name).map_err(fail)?;
                    if !family.samples.is_empty() {
                        return Err(fail(format!("TYPE of {name} after its samples")));
                    }
                    if family.kind != Kind::Untyped {
                        return Err(fail(format!("second TYPE for {name}")));
                    }
                    family.kind = kind;
                }
                (Some("TYPE"), ..) => return Err(fail("TYPE without a type".into())),
                // Any other comment is allowed and ignored.
                _ => {}
            }
            continue;
        }
        let sample = parse_sample(raw).map_err(fail)?;
        let key = (
            sample.name.clone(),
            sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        if !series.insert(key) {
            return Err(fail(format!("{} repeats a series", sample.name)));
        }
        let current = families
            .last_mut()
            .filter(|f| belongs(&sample.name, &f.name, f.kind));
        match current {
            Some(family) => family.samples.push(sample),
            None => {
                let of_closed = ["_bucket", "_sum", "_count", ""].iter().find_map(|suffix| {
                    let base = sample.name.strip_suffix(suffix)?;
                    let kind = closed.get(base)?;
                    belongs(&sample.name, base, *kind).then_some(base)
                });
                if let Some(base) = of_closed {
                    return Err(fail(format!("the lines of {base} are not in one group")));
                }
                // A sample without TYPE starts an untyped family of its own name.
                let family = open_family(&mut families, &mut closed, &sample.name).map_err(fail)?;
                if !belongs(&sample.name, &family.name, family.kind) {
                    return Err(fail(format!(
                        "{} is not a sample of family {}",
                        sample.name, family.name
                    )));
                }
                family.samples.push(sample);
            }
        }
    }
    for family in &families {
        check_structure(family).map_err(|reason| ParseError { line: 0, reason })?;
    }
    Ok(families)
}

/// The family `name`, continuing the current group or starting a new one.
fn open_family<'a>(
    families: &'a mut Vec<Family>,
    closed: &mut HashMap<String, Kind>,
    name: &str,
) -> Result<&'a mut Family, String> {
    let continues = families.last().is_some_and(|f| f.name == name);
    if !continues {
        if let Some(previous) = families.last() {
            closed.insert(previous.name.clone(), previous.kind);
        }
        if closed.contains_key(name) {
            return Err(format!("the lines of {name} are not in one group"));
        }
        families.push(Family {
            name: name.to_owned(),
            kind: Kind::Untyped,
            help: None,
            samples: Vec::new(),
        });
    }
    families.last_mut().ok_or_else(|| "no family".to_owned())
}

fn belongs(sample: &str, family: &str, kind: Kind) -> bool {
    let suffixes: &[&str] = match kind {
        Kind::Histogram => &["_bucket", "_sum", "_count"],
        Kind::Summary => &["", "_sum", "_count"],
        _ => &[""],
    };
    suffixes
        .iter()
        .any(|suffix| sample.strip_suffix(suffix) == Some(family))
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if valid {
        Ok(())
    } else {
        Err(format!("invalid metric name {name:?}"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("invalid label name {name:?}"));
    }
    if name.starts_with("__") {
        return Err(format!("label name {name:?} is reserved"));
    }
    Ok(())
}

/// Undoes the escapes of a HELP text (`\\`, `\n`) or a label value (also `\"`).
fn unescape(text: &str, quoted: bool) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quoted => out.push('"'),
            other => return Err(format!("invalid escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' ', '\t'])
        .ok_or_else(|| format!("sample without a value: {line:?}"))?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err(format!("no blank before the value of {name}"));
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("{name} has no value"))?;
    let value = parse_value(value).ok_or_else(|| format!("{name}: invalid value {value:?}"))?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("{name}: invalid timestamp {timestamp:?}"))?;
    }
    if let Some(extra) = fields.next() {
        return Err(format!("{name}: unexpected {extra:?} after the value"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `name="value",...}` (after the `{`); returns the labels and what follows the `}`.
fn parse_labels(mut text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([' ', '\t']);
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = text
            .find('=')
            .ok_or_else(|| format!("label without '=' in {text:?}"))?;
        let name = text[..eq].trim_end_matches([' ', '\t']);
        check_label_name(name)?;
        let after_eq = text[eq + 1..].trim_start_matches([' ', '\t']);
        let quoted = after_eq
            .strip_prefix('"')
            .ok_or_else(|| format!("value of label {name} is not quoted"))?;
        // The closing quote is the first one not escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, '\n') => return Err(format!("raw newline in label {name}")),
                _ => {}
            }
        }
        let end = end.ok_or_else(|| format!("unterminated value of label {name}"))?;
        let value = unescape(&quoted[..end], true)?;
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        text = quoted[end + 1..].trim_start_matches([' ', '\t']);
        if let Some(after_comma) = text.strip_prefix(',') {
            text = after_comma;
        } else if !text.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {name}"));
        }
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        // Rust also accepts "inf", "infinity" and "nan" in any case; the format does not.
        _ if text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            None
        }
        _ => text.parse().ok(),
    }
}

/// The labels of a series without `le`/`quantile`: the key its buckets or quantiles share.
type SeriesKey = Vec<(String, String)>;

/// The [`SeriesKey`] of a sample.
fn series_key(sample: &Sample) -> SeriesKey {
    sample
        .labels
        .iter()
        .filter(|(k, _)| *k != "le" && *k != "quantile")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn check_structure(family: &Family) -> Result<(), String> {
    let name = &family.name;
    match family.kind {
        Kind::Counter => {
            for s in &family.samples {
                if s.value.is_nan() || s.value < 0.0 {
                    return Err(format!("counter {name} has value {}", s.value));
                }
            }
            Ok(())
        }
        Kind::Histogram => check_histogram(family),
        Kind::Summary => {
            for s in family.samples.iter().filter(|s| s.name == *name) {
                let q = s
                    .labels
                    .get("quantile")
                    .and_then(|q| parse_value(q))
                    .ok_or_else(|| format!("summary {name} sample without a quantile"))?;
                if !(0.0..=1.0).contains(&q) {
                    return Err(format!("summary {name} has quantile {q}"));
                }
            }
            check_sum_and_count(family)
        }
        Kind::Gauge | Kind::Untyped => Ok(()),
    }
}

fn check_histogram(family: &Family) -> Result<(), String> {
    let name = &family.name;
    let bucket_name = format!("{name}_bucket");
    let mut buckets: BTreeMap<SeriesKey, Vec<(f64, f64)>> = BTreeMap::new();
    for s in family.samples.iter().filter(|s| s.name == bucket_name) {
        let le = s
            .labels
            .get("le")
            .and_then(|le| parse_value(le))
            .ok_or_else(|| format!("{bucket_name} without a valid le"))?;
        buckets
            .entry(series_key(s))
            .or_default()
            .push((le, s.value));
    }
    if buckets.is_empty() {
        return Err(format!("histogram {name} has no buckets"));
    }
    for (key, mut series) in buckets {
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
        if series.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("{name} {key:?}: bucket counts are not cumulative"));
        }
        let Some(&(le, inf_count)) = series.last() else {
            continue;
        };
        if le != f64::INFINITY {
            return Err(format!("{name} {key:?}: no le=\"+Inf\" bucket"));
        }
        let count = family
            .samples
            .iter()
            .find(|s| s.name == format!("{name}_count") && series_key(s) == key)
            .ok_or_else(|| format!("{name} {key:?}: no _count"))?;
        if count.value != inf_count {
            return Err(format!(
                "{name} {key:?}: _count {} differs from the +Inf bucket {inf_count}",
                count.value
            ));
        }
    }
    check_sum_and_count(family)
}

fn check_sum_and_count(family: &Family) -> Result<(), String> {
    let name = &family.name;
    let keys = |suffix: &str| -> BTreeSet<SeriesKey> {
        let full = format!("{name}{suffix}");
        family
            .samples
            .iter()
            .filter(|s| s.name == full)
            .map(series_key)
            .collect()
    };
    let (sums, counts) = (keys("_sum"), keys("_count"));
    if sums.is_empty() || sums != counts {
        return Err(format!("{name}: _sum and _count do not come in pairs"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"# HELP wa_requests_total Requests \\ by "outcome"\nsecond line
# TYPE wa_requests_total counter
wa_requests_total{outcome="accepted",path="a\"b\\c\nd"} 3
wa_requests_total{outcome="refused",} 0 1700000000000
# a plain comment
# TYPE wa_depth gauge
wa_depth{queue="sync.events"} -1.5e3
wa_depth{queue="other"} NaN
# TYPE wa_latency_seconds histogram
wa_latency_seconds_bucket{le="0.5"} 1
wa_latency_seconds_bucket{le="+Inf"} 2
wa_latency_seconds_sum 0.7
wa_latency_seconds_count 2
# TYPE wa_size summary
wa_size{quantile="0.5"} 3
wa_size{quantile="1"} 9
wa_size_sum 12
wa_size_count 2
wa_untyped 1
"#;

    fn error_of(text: &str) -> String {
        match parse(text) {
            Ok(families) => panic!("accepted: {families:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_valid_scrape_parses_with_types_help_labels_and_escapes() {
        let families = parse(VALID).expect("valid");
        let names: Vec<(&str, Kind)> = families.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            names,
            [
                ("wa_requests_total", Kind::Counter),
                ("wa_depth", Kind::Gauge),
                ("wa_latency_seconds", Kind::Histogram),
                ("wa_size", Kind::Summary),
                ("wa_untyped", Kind::Untyped),
            ]
        );
        let requests = &families[0];
        assert_eq!(
            requests.help.as_deref(),
            Some("Requests \\ by \"outcome\"\nsecond line")
        );
        assert_eq!(
            requests.samples[0].labels.get("path").map(String::as_str),
            Some("a\"b\\c\nd")
        );
        assert_eq!(requests.value(&[("outcome", "refused")]), Some(0.0));
        assert_eq!(
            families[1].value(&[("queue", "sync.events")]),
            Some(-1500.0)
        );
        assert_eq!(requests.label_names(), BTreeSet::from(["outcome", "path"]));
        assert_eq!(families[2].label_names(), BTreeSet::new());
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line_number() {
        assert_eq!(
            error_of("wa_x{a=\"1\" 2\n"),
            "line 1: expected ',' or '}' after label a"
        );
        assert!(error_of("ok 1\nwa_x{a=1} 2\n").starts_with("line 2: value of label a"));
        assert!(error_of("wa_x{a=\"1} 2\n").contains("unterminated"));
        assert!(error_of("wa_x{a=\"\\t\"} 2\n").contains("invalid escape"));
        assert!(error_of("wa_x{__a=\"1\"} 2\n").contains("reserved"));
        assert!(error_of("wa_x{a=\"1\",a=\"2\"} 2\n").contains("given twice"));
        assert!(error_of("9wa 1\n").contains("invalid metric name"));
        assert!(error_of("wa_x one\n").contains("invalid value"));
        assert!(error_of("wa_x inf\n").contains("invalid value"));
        assert!(error_of("wa_x 1 12.5\n").contains("invalid timestamp"));
        assert!(error_of("wa_x 1 2 3\n").contains("unexpected"));
        assert!(error_of("wa_x\n").contains("without a value"));
        assert!(error_of("   \n").contains("blanks"));
    }

    #[test]
    fn type_lines_must_be_known_single_and_first() {
        assert!(error_of("# TYPE wa_x countr\n").contains("unknown type"));
        assert!(error_of("# TYPE wa_x\n").contains("without a type"));
        assert!(error_of("# TYPE wa_x gauge\n# TYPE wa_x gauge\n").contains("second TYPE"));
        assert!(error_of("wa_x 1\n# TYPE wa_x gauge\n").contains("after its samples"));
        assert!(error_of("# HELP wa_x a\n# HELP wa_x b\n").contains("second HELP"));
    }

    #[test]
    fn families_are_one_group_and_series_are_unique() {
        assert!(
            error_of("# TYPE wa_x gauge\nwa_x 1\n# TYPE wa_y gauge\nwa_y 1\nwa_x{a=\"b\"} 2\n")
                .contains("not in one group")
        );
        assert!(error_of("wa_x{a=\"1\"} 1\nwa_x{a=\"1\"} 2\n").contains("repeats a series"));
        // A histogram's samples must follow its TYPE line.
        assert!(
            error_of("# TYPE wa_h histogram\nwa_h_sum 1\nwa_x 1\nwa_h_count 1\n")
                .contains("not in one group")
        );
    }

    #[test]
    fn histograms_and_summaries_must_be_complete_and_consistent() {
        let histogram = |buckets: &str, count: &str| {
            format!("# TYPE wa_h histogram\n{buckets}wa_h_sum 1\nwa_h_count {count}\n")
        };
        assert!(
            parse(&histogram(
                "wa_h_bucket{le=\"1\"} 1\nwa_h_bucket{le=\"+Inf\"} 2\n",
                "2"
            ))
            .is_ok()
        );
        assert!(
            error_of(&histogram(
                "wa_h_bucket{le=\"1\"} 3\nwa_h_bucket{le=\"+Inf\"} 2\n",
                "2"
            ))
            .contains("not cumulative")
        );
        assert!(error_of(&histogram("wa_h_bucket{le=\"1\"} 1\n", "1")).contains("+Inf"));
        assert!(
            error_of(&histogram(
                "wa_h_bucket{le=\"1\"} 1\nwa_h_bucket{le=\"+Inf\"} 2\n",
                "5"
            ))
            .contains("differs")
        );
        assert!(
            error_of("# TYPE wa_h histogram\nwa_h_bucket{le=\"+Inf\"} 1\nwa_h_count 1\n")
                .contains("_sum and _count")
        );
        assert!(
            error_of("# TYPE wa_s summary\nwa_s{quantile=\"2\"} 1\nwa_s_sum 1\nwa_s_count 1\n")
                .contains("quantile 2")
        );
        assert!(error_of("# TYPE wa_c counter\nwa_c -1\n").contains("counter wa_c has value -1"));
    }
}
