//! The risk engine through the binary: logins are scored and recorded (written at the latest
//! when the server stops), the decisions show on /metrics, and `koban risk backtest` replays
//! the recorded events through a candidate rules file; `koban bench risk` reports its figures.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{http, koban, send_signal, spawn_serve_with, wait_exit};

const DEFAULT_RULES: &str = include_str!("../../../koban-risk/rules/default.toml");

#[test]
fn recorded_logins_are_replayed_through_a_candidate_rule_set() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("koban.db").display());
    let (mut guard, addr, _) = spawn_serve_with(&url, &[]);
    for i in 0..3 {
        let body = format!(r#"{{"email":"nobody{i}@example.com","password":"guess number {i}"}}"#);
        let reply = http(addr, "POST", "/v1/login", &[], Some(&body));
        assert_eq!(reply.status, 401);
    }
    // Scored off the answer's path, then counted on /metrics.
    let started = Instant::now();
    loop {
        let metrics = http(addr, "GET", "/metrics", &[], None).body;
        let allowed = metrics
            .lines()
            .find(|l| l.starts_with("koban_risk_decisions_total{action=\"allow\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok());
        if allowed == Some(3.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "three decisions on /metrics: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A graceful stop writes what is queued.
    send_signal(&guard.0, "TERM");
    assert!(wait_exit(&mut guard.0, Duration::from_secs(30)).success());

    let candidate = dir.path().join("candidate.toml");
    std::fs::write(
        &candidate,
        format!(
            "{DEFAULT_RULES}\n[[rule]]\nname = \"test.any_failed_login\"\ndescription = \"every failed login\"\nwhen = 'event == \"login\" && failed'\naction = \"alert\"\nscore = 5\nreason = \"failed_login\"\n"
        ),
    )
    .unwrap();
    let output = koban()
        .args(["risk", "backtest", "--database-url", &url, "--rules"])
        .arg(&candidate)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["events"], 3, "{report}");
    assert_eq!(report["live"]["alert"], 0, "{report}");
    assert_eq!(report["candidate"]["alert"], 3, "{report}");
    assert_eq!(report["stricter"], 3);
    assert_eq!(report["looser"], 0);
    // The default rules' features are all recorded: the candidate names none that is not.
    assert_eq!(
        report["unrecorded_features"],
        serde_json::json!([]),
        "{report}"
    );
    let rule = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "test.any_failed_login")
        .unwrap_or_else(|| panic!("the new rule is reported: {report}"))
        .clone();
    assert_eq!(
        (rule["in_live"].as_bool(), rule["in_candidate"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(rule["candidate"]["fired"], 3);
    assert_eq!(rule["live"]["fired"], 0);
    // A day after them, nothing is replayed.
    let later = koban()
        .args([
            "risk",
            "backtest",
            "--database-url",
            &url,
            "--since",
            "2999-01-01",
            "--rules",
        ])
        .arg(&candidate)
        .output()
        .unwrap();
    let later: Value = serde_json::from_slice(&later.stdout).unwrap();
    assert_eq!(later["events"], 0);

    // An invalid candidate is refused, naming the rule and the problem.
    std::fs::write(
        &candidate,
        "[[rule]]\nname = \"bad.rule\"\ndescription = \"d\"\nwhen = 'amount > '\naction = \"deny\"\nreason = \"r\"\n",
    )
    .unwrap();
    let refused = koban()
        .args(["risk", "backtest", "--database-url", &url, "--rules"])
        .arg(&candidate)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("bad.rule") && stderr.contains("does not compile"),
        "{stderr}"
    );
}

#[test]
fn an_invalid_rules_file_refuses_to_start_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("koban.db").display());
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"x.y\"\ndescription = \"d\"\nwhen = 'no_such_feature > 1'\naction = \"deny\"\nreason = \"r\"\n",
    )
    .unwrap();
    let output = koban()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--risk-rules",
        ])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("x.y") && stderr.contains("no_such_feature"),
        "{stderr}"
    );
}

#[test]
fn bench_risk_catches_the_injected_attacks_and_times_the_live_path() {
    let report = crate::bench::bench_json(&["risk", "--customers", "500", "--live-events", "300"]);
    assert_eq!(report["attacks_total"], 20, "{report}");
    assert_eq!(
        report["attacks_caught"], report["attacks_total"],
        "{report}"
    );
    assert!(
        report["false_positive_rate"].as_f64().unwrap() < 0.01,
        "{report}"
    );
    for key in [
        "decisions_per_second",
        "decision_us_p99",
        "time_to_detect_s_max",
    ] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    // Every kind within a minute of its first attempt, with nothing out before a hold.
    for kind in report["by_kind"].as_array().unwrap() {
        assert!(
            kind["time_to_detect_s_max"].as_f64().unwrap() <= 60.0,
            "{kind}"
        );
        assert_eq!(kind["money_out_before_hold"], 0, "{kind}");
    }
    assert_eq!(report["by_kind"].as_array().unwrap().len(), 4);
    assert_eq!(report["live"]["events"], 300);
    assert_eq!(report["live"]["backend"], "sqlite");
    assert_eq!(report["invariants_ok"], true, "{report}");
}
