//! `/metrics` of `dr serve` checked by the real `promtool check metrics`
//! (Debian's `prometheus`): a rendered snapshot with several runs, step
//! histograms and open runs, and the same served over HTTP with the webhook's
//! alert counters.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use dr_serve::metrics::{render, Histogram, MetricsSnapshot, OpenRun, CONTENT_TYPE};
use support::{post_json, request, rule, webhook, ServerOptions};

const PROMTOOL: &str = "/usr/bin/promtool";

/// Runs `promtool check metrics` on `text`; panics with its output on any problem.
fn promtool_check(text: &str) {
    assert!(std::path::Path::new(PROMTOOL).exists(), "{PROMTOOL} is missing: run scripts/setup");
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write metrics");
    let output = child.wait_with_output().expect("promtool output");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool failed ({}):\n{said}\n--- metrics ---\n{text}", output.status);
    assert!(said.trim().is_empty(), "promtool lint:\n{said}\n--- metrics ---\n{text}");
}

fn snapshot() -> MetricsSnapshot {
    let mut runs = BTreeMap::new();
    runs.insert(("synthetic".to_owned(), "running".to_owned()), 2);
    runs.insert(("synthetic".to_owned(), "succeeded".to_owned()), 7);
    runs.insert(("worker-node".to_owned(), "paused".to_owned()), 1);
    // A label value that needs escaping.
    runs.insert(("we\"ird\\wf\nx".to_owned(), "failed".to_owned()), 1);
    let mut fast = Histogram::new();
    for s in [0.2, 0.9, 3.0, 12.0, 45.0] {
        fast.observe(s);
    }
    let mut slow = Histogram::new();
    for s in [250.0, 1200.0, 5000.0, 20_000.0] {
        slow.observe(s);
    }
    MetricsSnapshot {
        start_time_seconds: 1_900_000_000.25,
        runs,
        step_durations: [("synthetic".to_owned(), fast), ("worker-node".to_owned(), slow)].into(),
        open_runs: vec![
            OpenRun {
                run: "0190a1b2-0000-7000-8000-000000000001".into(),
                workflow: "synthetic".into(),
                level: 1,
                elapsed_seconds: 120.5,
                target_seconds: Some(900.0),
                projected_seconds: Some(300.0),
                at_risk: false,
            },
            OpenRun {
                run: "0190a1b2-0000-7000-8000-000000000002".into(),
                workflow: "worker-node".into(),
                level: 4,
                elapsed_seconds: 3000.0,
                target_seconds: Some(3600.0),
                projected_seconds: Some(5400.0),
                at_risk: true,
            },
            OpenRun {
                run: "0190a1b2-0000-7000-8000-000000000003".into(),
                workflow: "synthetic".into(),
                level: 2,
                elapsed_seconds: 5.0,
                target_seconds: None,
                projected_seconds: None,
                at_risk: false,
            },
        ],
        notifications_pending: 3,
        alert_outcomes: [("started".to_owned(), 2), ("duplicate".to_owned(), 5)].into(),
    }
}

#[test]
fn a_rendered_snapshot_passes_promtool_and_says_what_it_holds() {
    let text = render(&snapshot());
    promtool_check(&text);
    for line in [
        "dr_up 1\n",
        "dr_start_time_seconds 1900000000.25\n",
        "dr_runs{workflow=\"synthetic\",status=\"succeeded\"} 7\n",
        "dr_runs{workflow=\"we\\\"ird\\\\wf\\nx\",status=\"failed\"} 1\n",
        "dr_step_duration_seconds_bucket{workflow=\"synthetic\",le=\"1\"} 2\n",
        "dr_step_duration_seconds_bucket{workflow=\"worker-node\",le=\"14400\"} 3\n",
        "dr_step_duration_seconds_bucket{workflow=\"worker-node\",le=\"+Inf\"} 4\n",
        "dr_step_duration_seconds_count{workflow=\"worker-node\"} 4\n",
        "dr_run_rto_at_risk{run=\"0190a1b2-0000-7000-8000-000000000002\",workflow=\"worker-node\",level=\"4\"} 1\n",
        "dr_run_rto_projected_seconds{run=\"0190a1b2-0000-7000-8000-000000000002\",workflow=\"worker-node\",level=\"4\"} 5400\n",
        "dr_run_rto_target_seconds{run=\"0190a1b2-0000-7000-8000-000000000001\",workflow=\"synthetic\",level=\"1\"} 900\n",
        "dr_run_rto_elapsed_seconds{run=\"0190a1b2-0000-7000-8000-000000000003\",workflow=\"synthetic\",level=\"2\"} 5\n",
        "dr_notifications_pending 3\n",
        "dr_alerts_total{outcome=\"duplicate\"} 5\n",
        "# TYPE dr_step_duration_seconds histogram\n",
        "# TYPE dr_alerts_total counter\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // A run without a target has no target or projection sample.
    assert!(!text.contains("dr_run_rto_target_seconds{run=\"0190a1b2-0000-7000-8000-000000000003\""), "{text}");
}

#[test]
fn an_empty_snapshot_passes_promtool() {
    promtool_check(&render(&MetricsSnapshot::default()));
}

#[test]
fn promtool_catches_a_broken_exposition() {
    // The checker itself is live: a counter without `_total` is linted.
    let broken = "# HELP dr_things Things.\n# TYPE dr_things counter\ndr_things 1\n";
    let output = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().expect("stdin").write_all(broken.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("{PROMTOOL}: {e}: run scripts/setup"));
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success() || !said.trim().is_empty(), "promtool accepted a counter without _total");
}

#[tokio::test]
async fn metrics_are_served_over_http_with_the_webhook_counters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = ServerOptions::new(dir.path(), vec![rule("NodeDown", &[])]);
    options.metrics = snapshot();
    options.metrics.alert_outcomes.clear();
    let server = options.start().await;
    let labels: &[(&str, &str)] = &[("alertname", "NodeDown")];
    let body = webhook(&[("firing", "fp1", "2030-01-01T00:00:00Z", labels)]);
    for _ in 0..3 {
        assert_eq!(post_json(server.addr, "/alertmanager", None, &body).await.status, 200);
    }
    let reply = request(server.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.headers.to_ascii_lowercase().contains(&format!("content-type: {CONTENT_TYPE}")), "{reply:?}");
    promtool_check(&reply.body);
    assert!(reply.body.contains("dr_alerts_total{outcome=\"started\"} 1\n"), "{}", reply.body);
    assert!(reply.body.contains("dr_alerts_total{outcome=\"duplicate\"} 2\n"), "{}", reply.body);
    assert!(reply.body.contains("dr_alerts_total{outcome=\"refused\"} 0\n"), "{}", reply.body);
    assert!(reply.body.contains("dr_notifications_pending 3\n"), "{}", reply.body);
    server.stop().await;
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_dr_serve_exposes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dr-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    // The metric families a full snapshot renders (`# TYPE NAME KIND`).
    let exposed: Vec<String> =
        render(&snapshot()).lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("dr_")) {
                let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s)).unwrap_or(word);
                assert!(exposed.iter().any(|e| e == family || e == word), "panel {:?} queries {word}, which /metrics does not have ({exposed:?})", panel["title"]);
                queried += 1;
            }
        }
    }
    assert!(queried >= 8, "the dashboard queries {queried} series");
}
