//! Crash safety: SIGKILL the ledger in the middle of a load, restart on the same file, and
//! check that every transfer acknowledged before the kill is there and the invariants hold.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::helpers::{ChildGuard, count_lines, koban};

/// Acknowledgements to wait for before the kill: enough that the kill lands mid-load.
const ACKS_BEFORE_KILL_MIN: usize = 5_000;

#[test]
fn acknowledged_transfers_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let url = format!("sqlite://{}", db.display());
    let acks = dir.path().join("acks.txt");
    // Far more transfers than can finish before the kill.
    let child = koban()
        .args([
            "bench",
            "ledger",
            "--database-url",
            &url,
            "--accounts",
            "500",
            "--transfers",
            "100000000",
        ])
        .args(["--concurrency", "32", "--json", "--ack-log"])
        .arg(&acks)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bench starts");
    let mut child = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_lines(&acks) < ACKS_BEFORE_KILL_MIN {
        assert!(
            Instant::now() < deadline,
            "the load did not get going within 2 minutes"
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the load ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.0.kill().expect("SIGKILL delivered");
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "the process was killed, not finished");
    let acked = count_lines(&acks);

    // Restart on the same file: open, recover the WAL, and read everything back.
    let output = koban()
        .args([
            "audit",
            "ledger",
            "--database-url",
            &url,
            "--json",
            "--acked",
        ])
        .arg(&acks)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("JSON report, got {stdout:?}"));
    assert_eq!(report["invariants_ok"], true, "{report}");
    let present = report["acked_present"].as_u64().unwrap();
    let listed = report["acked"].as_u64().unwrap();
    assert_eq!(present, listed, "acknowledged transfers lost: {report}");
    // A torn last line is ignored; every complete line was an acknowledged transfer.
    assert!(
        listed + 1 >= u64::try_from(acked).unwrap()
            && listed >= u64::try_from(ACKS_BEFORE_KILL_MIN).unwrap() - 1
    );
    // Committed but unacknowledged transfers may exist too; nothing else may.
    assert!(report["transfers"].as_u64().unwrap() >= listed + 500);
    assert!(output.status.success());

    // And the service starts on the recovered file.
    let (_server, addr) = crate::helpers::spawn_serve(&url);
    assert_eq!(crate::helpers::http_get(addr, "/readyz").status, 200);
}
