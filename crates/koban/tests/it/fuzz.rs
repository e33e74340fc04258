//! The fuzz targets (`fuzz/`, cargo fuzz with libFuzzer) each run for a bounded time
//! (`KOBAN_FUZZ_SECONDS`, default 30) from their committed seeds: none may fail. `.ci/run`
//! installs cargo-fuzz; elsewhere a machine without it skips with a message. Longer runs:
//! `fuzz/run.sh 600`.

use std::path::Path;
use std::process::Command;

#[test]
fn every_fuzz_target_runs_without_a_failure() {
    let ci = std::env::var_os("CI").is_some();
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        assert!(!ci, "CI must have cargo-fuzz (see .ci/run)");
        eprintln!("skipped: no cargo-fuzz (cargo install cargo-fuzz)");
        return;
    }
    let seconds = std::env::var("KOBAN_FUZZ_SECONDS").unwrap_or_else(|_| "30".to_owned());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/run.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(&seconds)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a fuzz target failed:\n{stdout}\n{stderr}"
    );
    // Eight targets ran, each for its time, and each executed inputs.
    assert_eq!(stdout.matches("== fuzzing ").count(), 8, "{stdout}");
    assert_eq!(
        stderr.matches("stat::number_of_executed_units:").count(),
        8,
        "{stderr}"
    );
}
