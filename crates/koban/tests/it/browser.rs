//! The web wallet's browser stories (`web-tests/stories.mjs`): Playwright through
//! `playwright-core` driving Debian's chromium, headless, against this build's binary.
//! `.ci/run` installs chromium and the npm packages; outside CI, a machine without chromium
//! skips with a message, and missing npm packages are installed from the lock file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn web_tests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web-tests")
}

fn chromium() -> PathBuf {
    std::env::var_os("KOBAN_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

#[test]
fn the_web_wallet_stories_pass_in_a_real_browser() {
    let ci = std::env::var_os("CI").is_some();
    if !chromium().exists() {
        assert!(!ci, "CI must have chromium at {}", chromium().display());
        eprintln!(
            "skipped: no chromium at {} (apt-get install chromium)",
            chromium().display()
        );
        return;
    }
    let dir = web_tests();
    if !dir.join("node_modules/playwright-core").exists() {
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status();
        match installed {
            Ok(status) if status.success() => {}
            other => {
                assert!(!ci, "npm ci failed in {}: {other:?}", dir.display());
                eprintln!("skipped: npm ci failed ({other:?})");
                return;
            }
        }
    }
    let screenshots = std::env::var_os("KOBAN_SCREENSHOTS")
        .map_or_else(|| dir.join("screenshots"), PathBuf::from);
    let status = Command::new("node")
        .arg(dir.join("stories.mjs"))
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_koban"))
        .arg("--screenshots")
        .arg(&screenshots)
        .status()
        .expect("node runs");
    assert!(
        status.success(),
        "the browser stories failed (see their output above)"
    );
}
