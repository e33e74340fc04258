//! Three `koban serve` processes on one PostgreSQL database: P2P load spread over all three
//! leaves every balance exactly as the acknowledged transfers say, and work that must run once
//! (the hold sweep, settlement, card expiry) runs on one of them.

use crate::helpers::{fresh_schema, koban, postgres_available, spawn_serve_with};

#[test]
fn three_instances_on_one_database_keep_every_balance_and_run_each_job_once() {
    if !postgres_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    let (_schema, url) = fresh_schema("three");
    let args = [
        "--dev",
        "--trust-forwarded-for",
        "--master-key-file",
        key.to_str().unwrap(),
        "--hold-sweep-interval-s",
        "1",
    ];
    // The first creates the key; the others start with it.
    let mut servers = vec![spawn_serve_with(&url, &args)];
    for _ in 0..2 {
        servers.push(spawn_serve_with(&url, &args));
    }
    let mut load = koban();
    load.args(["bench", "api", "--customers", "12", "--concurrency", "12"])
        .args(["--duration-s", "4", "--json"]);
    for (_, addr, _) in &servers {
        load.args(["--url", &format!("http://{addr}")]);
    }
    let output = load.output().expect("bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("a JSON report, got {stdout:?}"));
    assert!(output.status.success(), "{report}");
    // Every balance is what the acknowledged transfers add up to, read back after the load.
    assert_eq!(report["invariants_ok"], true, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["transfers"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["server"], "3 urls");

    // Each job's lease went to exactly one of the three.
    for job in ["hold_sweep", "bank_settlement", "card_expiry"] {
        let holders = servers
            .iter()
            .filter(|(_, _, logs)| {
                logs.lock().unwrap().iter().any(|line| {
                    line.contains("this instance runs this work now") && line.contains(job)
                })
            })
            .count();
        assert_eq!(holders, 1, "{job} is run by {holders} instances");
    }

    // The bank's checks once they are stopped: the books balance, the audit chain verifies.
    drop(servers);
    let ledger = koban()
        .args(["audit", "ledger", "--database-url", &url, "--json"])
        .output()
        .unwrap();
    let ledger: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&ledger.stdout).trim()).unwrap();
    assert_eq!(ledger["invariants_ok"], true, "{ledger}");
    let chain = koban()
        .args([
            "audit",
            "verify",
            "--no-anchor",
            "--json",
            "--database-url",
            &url,
        ])
        .args(["--master-key-file", key.to_str().unwrap()])
        .output()
        .unwrap();
    let chain: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&chain.stdout).trim()).unwrap();
    assert_eq!(chain["ok"], true, "{chain}");
}
