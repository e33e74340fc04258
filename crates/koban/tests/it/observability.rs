//! The operator's kit in `deploy/`: the Prometheus alert rules and the Grafana dashboard name
//! only metrics Koban exports, and the rules parse and pass their own unit tests in promtool.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `koban_...` name written in a string in the crates' sources.
fn known_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for part in text.split("\"koban_").skip(1) {
                    if let Some((name, _)) = part.split_once('"') {
                        found.insert(format!("koban_{name}"));
                    }
                }
            }
        }
    }
    let mut found = BTreeSet::new();
    for krate in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            walk(&src, &mut found);
        }
    }
    found
}

/// The `koban_...` identifiers in a PromQL expression (or any text).
fn names_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("koban_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Whether `name` is a metric Koban exports (a histogram's series carry a suffix).
fn exported(name: &str, known: &BTreeSet<String>) -> bool {
    known.contains(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(|b| known.contains(b)))
}

#[test]
fn alert_rules_and_the_dashboard_name_only_metrics_koban_exports() {
    let known = known_metrics();
    assert!(
        known.contains("koban_ledger_commit_failures_total"),
        "{known:?}"
    );
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/koban-alerts.yml")).unwrap();
    let in_rules = names_in(&rules);
    assert!(in_rules.len() >= 10, "{in_rules:?}");
    for name in &in_rules {
        assert!(
            exported(name, &known),
            "the alert rules name {name}, which Koban does not export"
        );
    }
    for alert in [
        "KobanSecurityAlarm",
        "KobanLedgerCommitFailures",
        "KobanLedgerQueueBusy",
        "KobanWebhookFailures",
        "KobanHoldSweepStalled",
        "KobanMailFailing",
        "KobanReconciliationGap",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}\n")),
            "{alert} is missing"
        );
    }

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/koban-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 12);
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            let names = names_in(expr);
            assert!(!names.is_empty(), "{expr} names no Koban metric");
            for name in names {
                assert!(
                    exported(&name, &known),
                    "panel {} names {name}, which Koban does not export",
                    panel["title"]
                );
            }
        }
    }
}

#[test]
fn the_check_finds_a_misspelt_metric() {
    let known = known_metrics();
    assert!(!exported("koban_ledger_commit_failure_total", &known));
    assert!(exported("koban_ledger_commit_seconds_bucket", &known));
    assert_eq!(
        names_in("sum(rate(koban_a_total[5m])) / x_koban_b + koban_c{l=\"v\"}"),
        vec!["koban_a_total", "koban_c"]
    );
}

/// promtool from `KOBAN_PROMTOOL` or the PATH (CI extracts it from Debian's prometheus
/// package); skipped, loudly, outside CI when there is none.
fn promtool() -> Option<PathBuf> {
    let candidate = std::env::var_os("KOBAN_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("promtool"));
    let works = std::process::Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(candidate);
    }
    assert!(
        std::env::var("CI").is_err(),
        "promtool is needed in CI (set KOBAN_PROMTOOL)"
    );
    eprintln!("SKIPPED: no promtool; set KOBAN_PROMTOOL to check the alert rules");
    None
}

#[test]
fn alert_rules_parse_and_pass_their_unit_tests_in_promtool() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "koban-alerts.yml"],
        ["test", "rules", "koban-alerts.test.yml"],
    ] {
        let output = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
