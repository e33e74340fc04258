//! `koban bench chaos` in CI: five SIGKILLs at random moments under mixed load (P2P, QR
//! payments, card authorizations, sign-ins) on each backend. Nothing acknowledged is lost,
//! nothing is done twice, and the books, the audit chain, the notices, the risk records and
//! the wallets agree after every cycle (the bench checks them; this test reads its verdict).

use crate::helpers::{fresh_schema, koban, postgres_available};

fn five_cycles(database_url: Option<&str>) {
    let mut bench = koban();
    bench.args([
        "bench",
        "chaos",
        "--cycles",
        "5",
        "--max-run-ms",
        "1500",
        "--json",
    ]);
    if let Some(url) = database_url {
        bench.args(["--database-url", url]);
    }
    let output = bench.output().expect("the bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "a JSON report, got {stdout:?}; {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(report["cycles"], 5, "{report}");
    assert_eq!(report["operations_lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["invariants_ok"], true, "{report}");
    assert!(
        report["operations_acknowledged"].as_u64().unwrap() >= 50,
        "the load ran: {report}"
    );
    // Each cycle sends at least one acknowledged payment again to check its replay.
    assert!(
        report["operations_retried"].as_u64().unwrap() >= 5,
        "{report}"
    );
    assert!(output.status.success(), "{report}");
}

#[test]
fn five_crashes_under_load_on_sqlite_lose_nothing_and_do_nothing_twice() {
    five_cycles(None);
}

#[test]
fn five_crashes_under_load_on_postgres_lose_nothing_and_do_nothing_twice() {
    if !postgres_available() {
        return;
    }
    let (_schema, url) = fresh_schema("chaos");
    five_cycles(Some(&url));
}

/// The database's connections cut again and again for a second in each of three cycles, under
/// the same load: requests caught in it answer 503 (sent again with their keys, they are done
/// once), and the service recovers by itself, with no restart.
#[test]
fn cut_database_connections_under_load_answer_503_and_the_service_recovers() {
    if !postgres_available() {
        return;
    }
    let (_schema, url) = fresh_schema("outage");
    let output = koban()
        .args(["bench", "chaos", "--fault", "connections", "--cycles", "3"])
        .args(["--max-run-ms", "3000", "--json", "--database-url", &url])
        .output()
        .expect("the bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "a JSON report, got {stdout:?}; {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(
        (&report["fault"], &report["cycles"]),
        (&serde_json::json!("connections"), &serde_json::json!(3)),
        "{report}"
    );
    assert!(
        report["answers_unavailable_or_busy"].as_u64().unwrap() > 0,
        "the outages were felt: {report}"
    );
    assert_eq!(report["operations_lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["invariants_ok"], true, "{report}");
    assert!(output.status.success(), "{report}");
}
