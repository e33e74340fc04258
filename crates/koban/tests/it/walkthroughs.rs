//! The README's walkthroughs (`docs/walkthroughs/*.sh`) run against a fresh `koban serve --dev`
//! on a free port, all at once, each as a user would run it; and the README shows each script
//! exactly as it is, so what a reader copies is what this test ran.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const WALKTHROUGHS: [&str; 4] = ["sign-in.sh", "payments.sh", "cards.sh", "fraud-ops.sh"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/walkthroughs")
}

#[test]
fn every_walkthrough_runs_against_a_fresh_dev_server() {
    let data = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/koban.db", data.path().display());
    let (_server, addr, _) = crate::helpers::spawn_serve_with(&database, &["--dev"]);
    let running: Vec<_> = WALKTHROUGHS
        .iter()
        .map(|name| {
            let child = Command::new("bash")
                .arg(dir().join(name))
                .current_dir(data.path())
                .env("KOBAN_URL", format!("http://{addr}"))
                .env("KOBAN", env!("CARGO_BIN_EXE_koban"))
                .env("KOBAN_DATABASE_URL", &database)
                .env(
                    "KOBAN_CARD_KEYS_FILE",
                    data.path().join("card-keys.dev.json"),
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("bash runs");
            (name, child)
        })
        .collect();
    let mut failed = Vec::new();
    for (name, child) in running {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !stdout.contains("walkthrough: done") {
            failed.push(format!(
                "{name} ({}):\n{stderr}\n--- its output ---\n{stdout}",
                out.status
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// The README shows each walkthrough in a ```sh block after a `<!-- walkthrough NAME -->`
/// marker; the block must be the script as it is.
#[test]
fn the_readme_shows_each_walkthrough_as_it_is() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    for name in WALKTHROUGHS {
        let marker = format!("<!-- walkthrough {name} -->\n```sh\n");
        let start = readme
            .find(&marker)
            .unwrap_or_else(|| panic!("the README shows {name} after {marker:?}"))
            + marker.len();
        let shown = &readme[start..];
        let shown = &shown[..shown.find("```\n").expect("the block ends")];
        let script = std::fs::read_to_string(dir().join(name)).unwrap();
        assert_eq!(
            shown, script,
            "the README's copy of {name} differs from the script"
        );
    }
}
