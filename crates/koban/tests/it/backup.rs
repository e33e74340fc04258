//! Backup of a busy SQLite database and its restore: the copy is consistent while payments
//! go on, a restore keeps what it replaces, and the service starts on the restored file.

use std::time::Duration;

use crate::helpers::{http_get, koban, send_signal, spawn_serve_with, wait_exit};

fn run_json(args: &[&str]) -> (bool, serde_json::Value, String) {
    let output = koban().args(args).output().expect("koban runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (output.status.success(), json, stderr)
}

#[test]
fn a_busy_database_is_backed_up_and_restored_with_its_books_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("koban.db");
    let url = format!("sqlite://{}", db.display());
    let (mut server, addr, _) = spawn_serve_with(&url, &["--dev"]);
    // Payments go on while the backup is taken.
    let load = koban()
        .args(["bench", "api", "--url", &format!("http://{addr}")])
        .args(["--duration-s", "8", "--customers", "8", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the load starts");
    // The backup is taken once the load is past its set-up (sign-ups, funding, first
    // payments) and moving money: 200 transfers committed.
    let committed = || {
        let metrics = crate::helpers::http_get(addr, "/metrics").body;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("koban_ledger_transfers_committed_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let started = std::time::Instant::now();
    while committed() < 200.0 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let backup = dir.path().join("backup.db");
    let backup_s = backup.display().to_string();
    let (ok, taken, stderr) = run_json(&[
        "backup",
        "--database-url",
        &url,
        "--to",
        &backup_s,
        "--json",
    ]);
    assert!(ok, "{taken} {stderr}");
    assert_eq!(
        (
            taken["file_ok"].as_bool(),
            taken["invariants_ok"].as_bool(),
            taken["audit_chain_ok"].as_bool()
        ),
        (Some(true), Some(true), Some(true)),
        "{taken}"
    );
    assert!(taken["transfers"].as_u64().unwrap() > 0, "{taken}");
    assert!(taken["audit_entries"].as_u64().unwrap() > 0, "{taken}");
    // Bounded by its own --duration-s.
    let output = load.wait_with_output().expect("the load's output");
    assert!(
        output.status.success(),
        "the load ran through the backup ({}): {} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the load's JSON report");
    assert_eq!(report["errors"], 0, "{report}");

    // A backup never overwrites a file.
    let (ok, _, stderr) = run_json(&["backup", "--database-url", &url, "--to", &backup_s]);
    assert!(!ok && stderr.contains("exists already"), "{stderr}");

    // A restore is refused while the server runs on the file.
    let (ok, _, stderr) = run_json(&["restore", "--database-url", &url, "--from", &backup_s]);
    assert!(!ok && stderr.contains("already serves"), "{stderr}");
    send_signal(&server.0, "TERM");
    assert!(wait_exit(&mut server.0, Duration::from_secs(30)).success());
    let live_transfers = {
        let (ok, audited, _) = run_json(&["audit", "ledger", "--database-url", &url, "--json"]);
        assert!(ok, "{audited}");
        audited["transfers"].as_u64().unwrap()
    };
    assert!(
        live_transfers > taken["transfers"].as_u64().unwrap(),
        "payments went on after the backup"
    );

    // A damaged backup is refused and the database stays as it was.
    let damaged = dir.path().join("damaged.db");
    let mut bytes = std::fs::read(&backup).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 4096].fill(0xA5);
    std::fs::write(&damaged, bytes).unwrap();
    let (ok, _, stderr) = run_json(&[
        "restore",
        "--database-url",
        &url,
        "--from",
        &damaged.display().to_string(),
    ]);
    assert!(
        !ok && stderr.contains("file damaged"),
        "a damaged backup is refused: {stderr}"
    );
    let (_, audited, _) = run_json(&["audit", "ledger", "--database-url", &url, "--json"]);
    assert_eq!(audited["transfers"].as_u64(), Some(live_transfers));

    // The restore puts the backup's books in place and keeps the replaced files.
    let (ok, restored, stderr) = run_json(&[
        "restore",
        "--database-url",
        &url,
        "--from",
        &backup_s,
        "--json",
    ]);
    assert!(ok, "{restored} {stderr}");
    assert_eq!(restored["transfers"], taken["transfers"], "{restored}");
    assert_eq!(restored["audit_entries"], taken["audit_entries"]);
    let moved = restored["moved_aside"].as_array().unwrap();
    let kept = moved
        .iter()
        .map(|f| f.as_str().unwrap())
        .find(|f| {
            f.contains("koban.db.before-restore-") && !f.ends_with("-wal") && !f.ends_with("-shm")
        })
        .unwrap_or_else(|| panic!("the replaced database is kept: {restored}"))
        .to_owned();
    let (_, before, _) = run_json(&[
        "audit",
        "ledger",
        "--database-url",
        &format!("sqlite://{kept}"),
        "--json",
    ]);
    assert_eq!(
        before["transfers"].as_u64(),
        Some(live_transfers),
        "{before}"
    );

    // The service starts on the restored file, and the chain verifies.
    let (_server, addr, _) = spawn_serve_with(&url, &["--dev"]);
    assert_eq!(http_get(addr, "/readyz").status, 200);
    let (ok, verified, stderr) = run_json(&[
        "audit",
        "verify",
        "--database-url",
        &url,
        "--no-anchor",
        "--json",
    ]);
    assert!(ok && verified["ok"] == true, "{verified} {stderr}");
}
