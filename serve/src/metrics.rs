//! Prometheus metrics: the [`MetricsSnapshot`] the daemon fills and its
//! rendering in the text exposition format 0.0.4 (`GET /metrics`).
//!
//! Owns the metric names (`dr_` prefix, units in the names), their HELP/TYPE
//! lines, label escaping and the step-duration buckets. Reads no store and no
//! clock: every value comes in the snapshot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the step-duration histogram: steps last from
/// seconds (a pod restart) to hours (a rebuild).
pub const STEP_DURATION_BUCKETS: [f64; 11] =
    [1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0];

/// Everything `/metrics` shows, taken by the daemon at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// When the daemon started, seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Runs in the store, by workflow and status (`running`, `paused`,
    /// `succeeded`, …): `(workflow, status) → count`.
    pub runs: BTreeMap<(String, String), u64>,
    /// Step durations by workflow.
    pub step_durations: BTreeMap<String, Histogram>,
    /// Every open (not ended) run's RTO.
    pub open_runs: Vec<OpenRun>,
    /// Notifications recorded and not yet delivered.
    pub notifications_pending: u64,
    /// Alerts handled by the webhook since start, by outcome (`started`,
    /// `duplicate`, …); the HTTP listener fills this from its `Alerts`.
    pub alert_outcomes: BTreeMap<String, u64>,
}

/// One open run's recovery-time objective.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenRun {
    pub run: String,
    pub workflow: String,
    /// The failure level (1–4).
    pub level: u8,
    /// Wall time since the incident.
    pub elapsed_seconds: f64,
    /// The RTO target, when the workflow has one.
    pub target_seconds: Option<f64>,
    /// When the run is expected to end, counted from the incident.
    pub projected_seconds: Option<f64>,
    /// The projection is past the target.
    pub at_risk: bool,
}

/// A histogram over [`STEP_DURATION_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is over the largest bound.
    counts: [u64; STEP_DURATION_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one duration in seconds (a negative or non-finite one counts as 0).
    pub fn observe(&mut self, seconds: f64) {
        let seconds = if seconds.is_finite() && seconds > 0.0 { seconds } else { 0.0 };
        let bucket = STEP_DURATION_BUCKETS.iter().position(|le| seconds <= *le).unwrap_or(STEP_DURATION_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// What the daemon provides at scrape time. Called on the runtime: it must
/// be quick (in-memory state, no disk I/O).
pub trait MetricsSource: Send + Sync + 'static {
    fn snapshot(&self) -> MetricsSnapshot;
}

impl<F: Fn() -> MetricsSnapshot + Send + Sync + 'static> MetricsSource for F {
    fn snapshot(&self) -> MetricsSnapshot {
        self()
    }
}

/// The snapshot in the Prometheus text format 0.0.4.
pub fn render(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::new();
    header(&mut out, "dr_up", "gauge", "Whether the dr daemon is running (always 1 when scraped).");
    sample(&mut out, "dr_up", &[], 1.0);

    header(&mut out, "dr_start_time_seconds", "gauge", "When the dr daemon started, in seconds since the Unix epoch.");
    sample(&mut out, "dr_start_time_seconds", &[], snapshot.start_time_seconds);

    header(&mut out, "dr_runs", "gauge", "Runs in the store by workflow and status.");
    for ((workflow, status), count) in &snapshot.runs {
        sample(&mut out, "dr_runs", &[("workflow", workflow), ("status", status)], *count as f64);
    }

    header(&mut out, "dr_step_duration_seconds", "histogram", "Duration of finished step attempts, by workflow.");
    for (workflow, histogram) in &snapshot.step_durations {
        let mut cumulative = 0u64;
        for (le, count) in STEP_DURATION_BUCKETS.iter().zip(&histogram.counts) {
            cumulative += count;
            let le = number(*le);
            sample(&mut out, "dr_step_duration_seconds_bucket", &[("workflow", workflow), ("le", &le)], cumulative as f64);
        }
        sample(&mut out, "dr_step_duration_seconds_bucket", &[("workflow", workflow), ("le", "+Inf")], histogram.count as f64);
        sample(&mut out, "dr_step_duration_seconds_sum", &[("workflow", workflow)], histogram.sum);
        sample(&mut out, "dr_step_duration_seconds_count", &[("workflow", workflow)], histogram.count as f64);
    }

    type Field = fn(&OpenRun) -> Option<f64>;
    let rto: [(&str, &str, Field); 4] = [
        ("dr_run_rto_elapsed_seconds", "Wall time since the incident of an open run.", |r| Some(r.elapsed_seconds)),
        ("dr_run_rto_target_seconds", "The RTO target of an open run.", |r| r.target_seconds),
        ("dr_run_rto_projected_seconds", "When an open run is expected to end, counted from the incident.", |r| {
            r.projected_seconds
        }),
        ("dr_run_rto_at_risk", "1 when an open run's projection is past its RTO target, else 0.", |r| {
            Some(if r.at_risk { 1.0 } else { 0.0 })
        }),
    ];
    for (name, help, value) in rto {
        header(&mut out, name, "gauge", help);
        for run in &snapshot.open_runs {
            if let Some(v) = value(run) {
                let level = run.level.to_string();
                sample(&mut out, name, &[("run", &run.run), ("workflow", &run.workflow), ("level", &level)], v);
            }
        }
    }

    header(&mut out, "dr_notifications_pending", "gauge", "Notifications recorded and not yet delivered.");
    sample(&mut out, "dr_notifications_pending", &[], snapshot.notifications_pending as f64);

    header(&mut out, "dr_alerts_total", "counter", "Alerts received on the Alertmanager webhook, by outcome.");
    for (outcome, count) in &snapshot.alert_outcomes {
        sample(&mut out, "dr_alerts_total", &[("outcome", outcome)], *count as f64);
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(value));
}

/// A value as Prometheus reads it (`+Inf`, `-Inf`, `NaN` spelled its way).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

/// Label values escape `\`, `"` and line feeds.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes `\` and line feeds.
fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let mut h = Histogram::new();
        for s in [0.5, 1.0, 4.0, 100_000.0, f64::NAN] {
            h.observe(s);
        }
        let snapshot = MetricsSnapshot { step_durations: [("wf".to_owned(), h)].into(), ..Default::default() };
        let text = render(&snapshot);
        assert!(text.contains("dr_step_duration_seconds_bucket{workflow=\"wf\",le=\"1\"} 3\n"), "{text}");
        assert!(text.contains("dr_step_duration_seconds_bucket{workflow=\"wf\",le=\"5\"} 4\n"), "{text}");
        assert!(text.contains("dr_step_duration_seconds_bucket{workflow=\"wf\",le=\"14400\"} 4\n"), "{text}");
        assert!(text.contains("dr_step_duration_seconds_bucket{workflow=\"wf\",le=\"+Inf\"} 5\n"), "{text}");
        assert!(text.contains("dr_step_duration_seconds_sum{workflow=\"wf\"} 100005.5\n"), "{text}");
        assert!(text.contains("dr_step_duration_seconds_count{workflow=\"wf\"} 5\n"), "{text}");
    }

    #[test]
    fn numbers_are_spelled_as_prometheus_reads_them() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(3.0), "3");
    }
}
