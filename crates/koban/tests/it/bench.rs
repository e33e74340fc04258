//! The benchmark's interface: flags, JSON keys, and a real invariant check on both backends.

use crate::helpers::{koban, postgres_available, postgres_url};

fn run_bench(extra: &[&str]) -> serde_json::Value {
    let output = koban()
        .args([
            "bench",
            "ledger",
            "--accounts",
            "50",
            "--transfers",
            "3000",
            "--concurrency",
            "16",
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("one JSON object, got {stdout:?}"))
}

/// The fields every bench reports alike (README, "Commands"): rate, latency, errors,
/// invariants, and what each operation cost the server in CPU and in bytes written.
pub(crate) fn uniform(report: &serde_json::Value) {
    let rate = report
        .get("requests_per_second")
        .or_else(|| report.get("transfers_per_second"))
        .and_then(serde_json::Value::as_f64);
    assert!(rate.is_some_and(|r| r > 0.0), "no rate: {report}");
    for key in ["latency_ms_p50", "latency_ms_p99", "errors"] {
        assert!(report[key].is_number(), "{key} missing: {report}");
    }
    assert!(report["invariants_ok"].is_boolean(), "{report}");
    let cpu = report["cpu_us_per_op"].as_f64();
    assert!(
        cpu.is_some_and(|us| us > 0.0),
        "no CPU per operation: {report}"
    );
    assert!(
        report["bytes_written_per_op"].as_f64().is_some(),
        "{report}"
    );
    assert!(report["cpu_scope"].is_string(), "{report}");
}

/// Runs `koban bench ARGS --json`, which must succeed and print one line: its report, with
/// the common fields checked.
pub(crate) fn bench_json(args: &[&str]) -> serde_json::Value {
    let output = koban()
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim().lines().count(), 1, "--json prints one line");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    uniform(&report);
    report
}

fn check(report: &serde_json::Value, backend: &str) {
    uniform(report);
    assert_eq!(report["backend"], backend);
    assert_eq!(report["accounts"], 50);
    assert_eq!(report["transfers_committed"], 3000);
    assert_eq!(report["invariants_ok"], true, "{report}");
    assert!(report["transfers_per_second"].as_f64().unwrap() > 0.0);
    let (p50, p99) = (
        report["latency_ms_p50"].as_f64().unwrap(),
        report["latency_ms_p99"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p99 >= p50, "{report}");
}

#[test]
fn bench_ledger_on_sqlite_reports_json_and_checks_invariants() {
    check(&run_bench(&[]), "sqlite");
    check(
        &run_bench(&["--hot-accounts", "5", "--seed", "7"]),
        "sqlite",
    );
}

#[test]
fn bench_ledger_on_postgres_reports_json_and_checks_invariants() {
    if !postgres_available() {
        return;
    }
    let url = postgres_url();
    check(&run_bench(&["--database-url", &url]), "postgres");
    check(
        &run_bench(&["--database-url", &url, "--hot-accounts", "5"]),
        "postgres",
    );
}

#[test]
fn bench_refuses_an_existing_file_and_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.db");
    std::fs::write(&path, b"precious").unwrap();
    let url = format!("sqlite://{}", path.display());
    let output = koban()
        .args(["bench", "ledger", "--database-url", &url, "--json"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only writes to a fresh file"));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    let output = koban()
        .args([
            "bench",
            "ledger",
            "--accounts",
            "10",
            "--hot-accounts",
            "10",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[test]
fn bench_pages_reports_the_server_time_of_every_main_page() {
    let report = bench_json(&[
        "pages",
        "--customers",
        "2",
        "--history",
        "5",
        "--requests",
        "20",
        "--concurrency",
        "2",
    ]);
    let pages = report["pages"].as_array().unwrap();
    let paths: Vec<&str> = pages.iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/home",
            "/send",
            "/pay",
            "/topup",
            "/security",
            "/",
            "/signin"
        ]
    );
    for page in pages {
        // Every request was answered 200 (the bench fails otherwise) and timed.
        assert_eq!(page["requests"], 20, "{page}");
        let (p50, p99) = (
            page["p50_ms"].as_f64().unwrap(),
            page["p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p99 >= p50, "{page}");
    }
}

#[test]
fn bench_login_reports_customer_sign_ins_during_a_flood() {
    let report = bench_json(&[
        "login",
        "--attackers",
        "4",
        "--customers",
        "2",
        "--duration-s",
        "1",
        "--customer-pause-ms",
        "200",
    ]);
    let phases = report["phases"].as_array().unwrap();
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "no_flood",
            "flood_with_device_cookie",
            "flood_without_device_cookie"
        ]
    );
    // Without a flood every customer sign-in succeeds; with one, the attackers were answered.
    assert_eq!(phases[0]["customer_success_rate"], 1.0);
    assert!(phases[0]["customer_sign_ins"].as_u64().unwrap() > 0);
    assert_eq!(phases[0]["attacker_attempts"], 0);
    for phase in &phases[1..] {
        let attempts = phase["attacker_attempts"].as_u64().unwrap();
        let answered: u64 = [
            "attacker_answered_401",
            "attacker_answered_429",
            "attacker_answered_503",
        ]
        .iter()
        .map(|k| phase[*k].as_u64().unwrap())
        .sum();
        assert!(attempts > 0 && answered == attempts, "{phase}");
    }
}

#[test]
fn bench_api_drives_transfers_over_http_and_checks_invariants() {
    let report = bench_json(&[
        "api",
        "--customers",
        "4",
        "--concurrency",
        "2",
        "--duration-s",
        "1",
    ]);
    for key in [
        "requests_per_second",
        "latency_ms_p50",
        "latency_ms_p99",
        "errors",
        "invariants_ok",
    ] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    assert_eq!(report["invariants_ok"], true);
    assert_eq!(report["errors"], 0);
    assert!(report["transfers"].as_u64().unwrap() > 0);
    // The server's CPU alone: the load generator's is reported beside it.
    assert!(report["cpu_scope"].as_str().unwrap().starts_with("server"));
    assert!(report["load_cpu_us_per_op"].as_f64().is_some(), "{report}");
    assert!(report["safety"]["risk_rules"].is_string(), "{report}");
}

#[test]
fn bench_cards_authorizes_over_http_and_reports_json() {
    let report = bench_json(&[
        "cards",
        "--cards",
        "2",
        "--concurrency",
        "2",
        "--duration-s",
        "1",
    ]);
    assert_eq!(report["bench"], "cards");
    assert_eq!(report["invariants_ok"], true, "{report}");
    assert!(report["authorizations"].as_u64().unwrap() > 0, "{report}");
}
