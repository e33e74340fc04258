//! The configuration file and `koban config check`: the file's settings are defaults, the
//! environment overrides them and flags override both; secrets are refused in the file and
//! masked when printed; `serve` runs with the file's settings.

use crate::helpers::{http_get, koban, spawn_serve_with};

fn check(file: &std::path::Path, env: &[(&str, &str)], flags: &[&str]) -> (bool, String, String) {
    let output = koban()
        .args(["config", "check", "--json", "--config"])
        .arg(file)
        .args(flags)
        .envs(env.iter().copied())
        .env_remove("KOBAN_DATABASE_URL")
        .output()
        .expect("koban runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("koban.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_file_sets_defaults_the_environment_and_flags_override_and_secrets_are_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "listen = \"127.0.0.1:9999\"\n\
         mail_from = \"Shop <no-reply@shop.example>\"\n\
         currencies = [\"JPY\", \"USD\"]\n\
         verified-daily-out-max = 400000\n\
         account-lock-after = 8\n\
         fee_bps = 300\n",
    );
    let (ok, out, err) = check(
        &file,
        &[
            ("KOBAN_VERIFIED_DAILY_OUT_MAX", "300000"),
            ("KOBAN_SMTP_URL", "smtps://koban:hunter2@mail.example.com"),
        ],
        &[
            "--step-up-from",
            "5000",
            "--database-url",
            "postgres://u@db/k?sslmode=disable&password=s3cret",
        ],
    );
    assert!(ok, "{out} {err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let setting = |name: &str| {
        let s = &report["settings"][name];
        (
            s["value"].as_str().unwrap().to_owned(),
            s["source"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(setting("listen"), ("127.0.0.1:9999".into(), "file".into()));
    assert_eq!(setting("currencies"), ("JPY,USD".into(), "file".into()));
    assert_eq!(setting("account-lock-after"), ("8".into(), "file".into()));
    assert_eq!(setting("fee-bps"), ("300".into(), "file".into()));
    assert_eq!(
        setting("verified-daily-out-max"),
        ("300000".into(), "environment".into()),
        "the environment overrides the file"
    );
    assert_eq!(setting("step-up-from"), ("5000".into(), "flag".into()));
    assert_eq!(setting("cooling-off-h"), ("24".into(), "default".into()));
    assert_eq!(
        setting("network-failures-max"),
        ("100".into(), "default".into())
    );
    assert_eq!(
        setting("database-url").0,
        "postgres://u@db/k?sslmode=disable&password=[redacted]"
    );
    assert_eq!(
        setting("smtp-url").0,
        "smtps://koban:[redacted]@mail.example.com"
    );
    assert!(!out.contains("hunter2") && !out.contains("s3cret"), "{out}");
    assert_eq!(report["ok"], true);
}

#[test]
fn secrets_unknown_keys_and_invalid_values_are_refused_without_echoing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        ("master_key = \"00ff\"\n", "is a secret"),
        (
            "smtp-url = \"smtps://u:hunter2@mail.example\"\n",
            "holds a password",
        ),
        (
            "database_url = \"postgres://u:hunter2@db/k\"\n",
            "holds a password",
        ),
        (
            "database_url = \"postgres://u@db/k?password=hunter2\"\n",
            "holds a password",
        ),
        (
            "smtp_url = \"smtps://u:hun/ter2@mail.example\"\n",
            "holds a password",
        ),
        ("lisen = \"127.0.0.1:1\"\n", "is not a setting"),
        ("config = \"other.toml\"\n", "is not a setting"),
        ("listen = [\n", "not valid TOML"),
        ("listen = { a = 1 }\n", "a setting is a string"),
    ] {
        let file = write(&dir, text);
        let (ok, out, err) = check(&file, &[], &[]);
        assert!(!ok, "{text}: accepted");
        assert!(err.contains(expected), "{text}: {err}");
        assert!(
            !err.contains("hunter2") && !out.contains("hunter2"),
            "{err}"
        );
    }
    // A value of the right shape but out of range is a problem in the report.
    let file = write(&dir, "card-bin = \"12\"\naccount-lock-after = 0\n");
    let (ok, out, _) = check(&file, &[], &[]);
    assert!(!ok);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("--card-bin") && problems.contains("--account-lock-after"),
        "{problems}"
    );
}

#[test]
fn serve_runs_with_the_file_settings() {
    let dir = tempfile::tempdir().unwrap();
    // Development mode from the file: the development mailbox answers.
    let file = write(&dir, "dev = true\n");
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    let file = file.display().to_string();
    let (_server, addr, _) = spawn_serve_with(&db, &["--config", &file]);
    assert_eq!(
        http_get(addr, "/v1/dev/mailbox?to=a@example.com").status,
        200
    );
    let (_plain, addr, _) = spawn_serve_with(
        &format!("sqlite://{}", dir.path().join("other.db").display()),
        &[],
    );
    assert_eq!(
        http_get(addr, "/v1/dev/mailbox?to=a@example.com").status,
        404
    );
}

#[test]
fn the_example_file_is_valid_and_names_every_setting() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/koban.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let (ok, out, err) = check(&example, &[], &[]);
    assert!(ok, "{out} {err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    for name in report["settings"].as_object().unwrap().keys() {
        if name != "master-key" {
            assert!(
                text.contains(&format!("\n# {name} = ")),
                "deploy/koban.example.toml does not show {name}"
            );
        }
    }
    // Uncommented, the example's values are the defaults and are accepted.
    let dir = tempfile::tempdir().unwrap();
    let uncommented: String = text
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| {
            line.split_once(" = ").is_some_and(|(key, value)| {
                value != "\"\""
                    && key
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let file = write(&dir, &uncommented);
    let (ok, out, err) = check(&file, &[], &[]);
    assert!(ok, "{uncommented}\n{out} {err}");
}
