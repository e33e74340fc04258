//! The identity service through the real binary: no secret in the logs, `koban admin create`,
//! and `koban audit verify` catching a row edited behind the service's back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{HttpResponse, http, koban, spawn_serve_with};

fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> HttpResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("Authorization", b.as_str()))
        .collect();
    http(addr, "POST", path, &headers, Some(body))
}

fn json(response: &HttpResponse) -> Value {
    serde_json::from_str(&response.body).unwrap_or(Value::Null)
}

/// Reads the newest message for `to` from the dev mailbox, waiting for the outbox worker.
fn newest_mail(addr: SocketAddr, to: &str, count_at_least: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = http(addr, "GET", &format!("/v1/dev/mailbox?to={to}"), &[], None);
        let messages = json(&reply);
        if let Some(list) = messages.as_array().filter(|l| l.len() >= count_at_least) {
            return list[0]["body"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no mail for {to} within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn six_digits(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a six-digit code")
        .to_owned()
}

/// RFC 6238 with SHA-1, computed here independently of the service.
fn totp(uri: &str, at_s: u64) -> String {
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let seed = koban_auth::totp::seed_from_uri(&format!("otpauth://x?secret={secret}")).unwrap();
    koban_auth::totp::code_at(&seed, at_s).unwrap()
}

#[test]
fn logs_never_carry_passwords_codes_tokens_or_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("koban.db").display());
    let (_guard, addr, logs) = spawn_serve_with(&url, &["--dev"]);
    let password = "Zebra-Violin-Quartz-7319";
    let wrong_password = "Wrong-Harpoon-Meadow-4402";
    let signup = post(
        addr,
        "/v1/signup",
        None,
        &format!(
            r#"{{"email":"logs@example.com","password":"{password}","display_name":"Logan"}}"#
        ),
    );
    assert_eq!(signup.status, 202, "{}", signup.body);
    let code = six_digits(&newest_mail(addr, "logs@example.com", 1));
    let verified = post(
        addr,
        "/v1/signup/verify",
        None,
        &format!(r#"{{"email":"logs@example.com","code":"{code}"}}"#),
    );
    assert_eq!(verified.status, 204);
    let failed = post(
        addr,
        "/v1/login",
        None,
        &format!(r#"{{"email":"logs@example.com","password":"{wrong_password}"}}"#),
    );
    assert_eq!(failed.status, 401);
    let login = post(
        addr,
        "/v1/login",
        None,
        &format!(r#"{{"email":"logs@example.com","password":"{password}"}}"#),
    );
    assert_eq!(login.status, 200);
    let token = json(&login)["session"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let enrol = post(addr, "/v1/factors/totp", Some(&token), "{}");
    assert_eq!(enrol.status, 201, "{}", enrol.body);
    let enrol = json(&enrol);
    let uri = enrol["otpauth_uri"].as_str().unwrap().to_owned();
    let seed = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let totp_code = totp(&uri, now);
    let confirm = post(
        addr,
        &format!(
            "/v1/factors/totp/{}/confirm",
            enrol["factor_id"].as_str().unwrap()
        ),
        Some(&token),
        &format!(r#"{{"code":"{totp_code}"}}"#),
    );
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let confirmed = json(&confirm);
    let full = confirmed["session"]["token"].as_str().unwrap().to_owned();
    let recovery = confirmed["recovery_codes"][0].as_str().unwrap().to_owned();
    let mistyped = post(
        addr,
        "/v1/login",
        None,
        &format!(r#"{{"email":"logs@example.com","password":["{wrong_password}"]}}"#),
    );
    assert_eq!(mistyped.status, 400);
    assert!(!mistyped.body.contains(wrong_password));
    let me = http(
        addr,
        "GET",
        "/v1/me",
        &[("Authorization", &format!("Bearer {full}"))],
        None,
    );
    assert_eq!(me.status, 200);

    // Wait until the last request's log line is in, then search every line.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs.lock().unwrap().iter().any(|l| l.contains("/v1/me")) {
        assert!(Instant::now() < deadline, "the request log arrives");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = logs.lock().unwrap().join("\n");
    assert!(
        text.contains("\"route\":\"/v1/login\""),
        "requests are logged"
    );
    for (what, secret) in [
        ("password", password),
        ("wrong password", wrong_password),
        ("e-mail code", code.as_str()),
        ("session token", token.as_str()),
        ("full session token", full.as_str()),
        ("TOTP seed", seed.as_str()),
        ("TOTP code", totp_code.as_str()),
        ("recovery code", recovery.as_str()),
    ] {
        assert!(!text.contains(secret), "the {what} appears in the logs");
    }
}

#[test]
fn links_in_messages_name_the_port_the_server_listens_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("koban.db").display());
    // Port 0: the port is chosen when the server binds, and the links still name it.
    let (_server, addr, _) = spawn_serve_with(&url, &["--dev"]);
    let email = "ports@example.com";
    let signup = format!(
        r#"{{"kind":"customer","email":"{email}","password":"lantern meadow kettle harbour","display_name":"Port"}}"#
    );
    assert_eq!(post(addr, "/v1/signup", None, &signup).status, 202);
    newest_mail(addr, email, 1);
    let asked = post(
        addr,
        "/v1/recovery-requests",
        None,
        &format!(r#"{{"email":"{email}"}}"#),
    );
    assert_eq!(asked.status, 202);
    let mail = newest_mail(addr, email, 2);
    let link = format!("http://localhost:{}/recovery/cancel?token=", addr.port());
    assert!(mail.contains(&link), "{link} in {mail}");
}

#[test]
fn admin_create_prints_a_one_time_link_and_audit_verify_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("koban.db");
    let url = format!("sqlite://{}", db.display());
    let created = koban()
        .args([
            "admin",
            "create",
            "--email",
            "boss@example.com",
            "--database-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8_lossy(&created.stdout);
    assert!(stdout.contains("/operators/enrol?token=kop_"), "{stdout}");
    assert!(
        dir.path().join("master.key").exists(),
        "the master key sits beside the database"
    );
    let again = koban()
        .args([
            "admin",
            "create",
            "--email",
            "boss@example.com",
            "--database-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(!again.status.success(), "the address is taken");

    let verify = || {
        koban()
            .args([
                "audit",
                "verify",
                "--json",
                "--no-anchor",
                "--database-url",
                &url,
            ])
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(ok.status.success());
    let report: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["entries"], 1);

    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            "UPDATE audit_log SET details = '{\"role\":\"support\"}' WHERE seq = 1",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let broken = verify();
    assert_eq!(
        broken.status.code(),
        Some(1),
        "a broken chain fails the command"
    );
    let report: Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_broken"]["seq"], 1);
}

#[test]
fn serve_anchors_the_audit_chain_outside_the_database_and_verify_finds_a_cut_tail() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("koban.db");
    let url = format!("sqlite://{}", db.display());
    let verify = |extra: &[&str]| {
        koban()
            .args(["audit", "verify", "--json", "--database-url", &url])
            .args(extra)
            .output()
            .unwrap()
    };
    let without_key = verify(&[]);
    assert!(
        !without_key.status.success(),
        "no key is invented to verify"
    );
    assert!(
        String::from_utf8_lossy(&without_key.stderr).contains("no master key"),
        "{}",
        String::from_utf8_lossy(&without_key.stderr)
    );
    let created = koban()
        .args(["admin", "create", "--email", "chief@example.com"])
        .args(["--database-url", &url])
        .output()
        .unwrap();
    assert!(created.status.success());
    // The server anchors the chain's head (entry 1) at once, then every second.
    let anchor = dir.path().join("audit-anchor.jsonl");
    {
        let (_server, _, _) = spawn_serve_with(&url, &["--audit-checkpoint-interval-s", "1"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&anchor).is_ok_and(|t| t.contains("\"seq\":1,")) {
            assert!(std::time::Instant::now() < deadline, "no anchor written");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let ok = verify(&[]);
    let report: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(ok.status.success(), "{report}");
    assert_eq!(report["anchors_checked"], 1);
    assert_eq!(report["unkeyed_entries"], 0);

    // Whoever can write the database removes the only entry: no link is left to break, but
    // the anchor outside the database still names it.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM audit_log", []).unwrap();
    drop(conn);
    let cut = verify(&[]);
    assert_eq!(cut.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&cut.stdout).unwrap();
    assert_eq!(report["first_broken"]["seq"], 1, "{report}");
    assert!(
        report["first_broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("cut from its end")
    );
    // An anchor file from elsewhere, signed under another key, is refused outright.
    let forged = dir.path().join("forged.jsonl");
    std::fs::write(
        &forged,
        "{\"seq\":1,\"hash\":\"00\",\"at_ms\":0,\"mac\":\"00\"}\n",
    )
    .unwrap();
    let refused = verify(&["--anchor", forged.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("line 1"));
}

#[test]
fn a_failure_spike_shows_on_metrics_within_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("koban.db").display());
    // A low floor so that a handful of failures is a spike.
    let (_guard, addr, _) = spawn_serve_with(
        &url,
        &["--alarm-floor-per-min", "1", "--alarm-multiple", "2"],
    );
    let started = Instant::now();
    for i in 0..5 {
        let reply = post(
            addr,
            "/v1/login",
            None,
            &format!(r#"{{"email":"nobody{i}@example.com","password":"guess number {i}"}}"#),
        );
        assert_eq!(reply.status, 401);
    }
    loop {
        let metrics = http(addr, "GET", "/metrics", &[], None).body;
        // The gauge turns on before the alert's row commits and its counter counts it: a
        // scrape in between sees one without the other, so both are waited for.
        let active = metrics
            .lines()
            .any(|l| l.starts_with("koban_security_alarm_active") && l.ends_with(" 1"));
        // The counter is on /metrics from the start at 0: an alert is a line above 0.
        let counted = metrics
            .lines()
            .any(|l| l.starts_with("koban_security_alerts_total") && !l.ends_with(" 0"));
        if active && counted {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no alarm and alert count on /metrics within 60 s: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
