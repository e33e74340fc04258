use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::{ChildGuard, http_get, koban, send_signal, spawn_serve, wait_exit};

#[test]
fn serve_answers_health_readiness_and_metrics_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("data/koban.db").display());
    let (mut server, addr) = spawn_serve(&url);

    let live = http_get(addr, "/livez");
    assert_eq!((live.status, live.body.as_str()), (200, "ok"));
    let ready = http_get(addr, "/readyz");
    assert_eq!(ready.status, 200);
    let metrics = http_get(addr, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/plain")
    );
    assert!(
        metrics
            .body
            .contains("koban_ledger_transfers_committed_total 0"),
        "{}",
        metrics.body
    );
    // The series the README documents are there before their first event, at zero.
    for series in [
        "koban_auth_hash_refused_total 0",
        "koban_security_alerts_total{kind=\"auth_failure_rate\"} 0",
        "koban_outbox_failed_attempts_total 0",
        "koban_outbox_delivered_total 0",
        "koban_security_alarm_active 0",
    ] {
        assert!(metrics.body.contains(series), "{series}: {}", metrics.body);
    }
    assert_eq!(http_get(addr, "/nowhere").status, 404);

    // One process serves a SQLite file: a second one refuses to start, and says why.
    let second = koban()
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("koban starts");
    let mut second = ChildGuard(second);
    let refused = wait_exit(&mut second.0, Duration::from_secs(30));
    assert!(!refused.success());
    let mut said = String::new();
    second
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(
        said.contains("another koban process already serves"),
        "{said}"
    );
    assert_eq!(http_get(addr, "/readyz").status, 200);

    assert!(
        dir.path().join("data/koban.db").exists(),
        "the database file is created on first run"
    );

    send_signal(&server.0, "TERM");
    let status = wait_exit(&mut server.0, Duration::from_secs(30));
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
}

#[test]
fn help_is_available_for_every_command() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["bench", "ledger", "--help"],
        vec!["bench", "login", "--help"],
        vec!["audit", "ledger", "--help"],
        vec!["audit", "verify", "--help"],
        vec!["admin", "create", "--help"],
        vec!["bench", "cards", "--help"],
        vec!["bench", "api", "--help"],
        vec!["bench", "risk", "--help"],
        vec!["bench", "pages", "--help"],
        vec!["bench", "offline", "--help"],
        vec!["bench", "all", "--help"],
        vec!["keys", "generate", "--help"],
        vec!["keys", "rotate", "--help"],
        vec!["card-network", "--help"],
    ] {
        let output = crate::helpers::koban().args(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn migrate_applies_once_and_rejects_unknown_urls() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let first = crate::helpers::koban()
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(first.status.success());
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).trim(),
        "{\"migrations_applied\": 18}"
    );
    let second = crate::helpers::koban()
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&second.stdout).trim(),
        "{\"migrations_applied\": 0}"
    );
    let bad = crate::helpers::koban()
        .args(["migrate", "--database-url", "mysql://x"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unsupported database URL"));
}

#[test]
fn every_request_has_an_id_in_its_answer_and_its_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let (_server, addr, logs) = crate::helpers::spawn_serve_with(&url, &[]);
    let header = |response: &crate::helpers::HttpResponse| {
        response
            .head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(": ")?;
                name.eq_ignore_ascii_case("x-request-id")
                    .then(|| value.to_owned())
            })
            .expect("an X-Request-Id answer header")
    };
    let logged_with = |id: &str| {
        // The request line is written as the answer goes out; give the log a moment.
        for _ in 0..100 {
            let found = logs.lock().unwrap().iter().any(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                entry["fields"]["message"] == "request" && entry["span"]["request_id"] == id
            });
            if found {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    // The caller's id is kept.
    let given = crate::helpers::http(
        addr,
        "GET",
        "/livez",
        &[("X-Request-Id", "lb-7f3a.2")],
        None,
    );
    assert_eq!(header(&given), "lb-7f3a.2");
    assert!(logged_with("lb-7f3a.2"), "{:?}", logs.lock().unwrap());
    // Without one, or with one that could forge a log line, a new one is made.
    for headers in [
        vec![],
        vec![("X-Request-Id", "a b\\\"}")],
        vec![("X-Request-Id", "x".repeat(65).leak() as &str)],
    ] {
        let answer = crate::helpers::http(addr, "GET", "/readyz", &headers, None);
        let id = header(&answer);
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(logged_with(&id));
    }
}
