//! Throttling: per account, per network, per device, per secret across accounts; no
//! enumeration; the global alarm.

use axum::http::StatusCode;
use koban_store::LedgerStore;
use serde_json::json;

use crate::helpers::{TestApp, post};
use crate::stories;

stories!(
    sixth_wrong_password_is_delayed_and_eleventh_attempt_is_locked_and_owner_notified,
    unknown_account_and_wrong_password_answer_alike,
    password_sprayed_across_fifty_accounts_from_rotating_networks_is_blocked,
    one_network_guessing_many_accounts_is_blocked,
    failure_spike_raises_an_alert_for_operators,
    requests_that_send_mail_are_limited_per_network,
    sign_ins_refused_by_throttling_are_scored_as_failed_up_to_a_budget,
    guessing_a_reset_code_is_scored_and_alerts_an_analyst,
);

async fn guessing_a_reset_code_is_scored_and_alerts_an_analyst<S: LedgerStore>(app: TestApp<S>) {
    use koban_store::sql::SqlDb;
    let user = app.user("reset-target@example.com").await;
    let forgot = app
        .call(post("/v1/password/forgot", json!({ "email": user.email })).ip("203.0.113.90"))
        .await;
    assert_eq!(forgot.status, StatusCode::ACCEPTED);
    // Guesses from a different network each time, as a botnet would.
    for i in 0..12 {
        let guess = json!({ "email": user.email, "code": format!("{:06}", 100_000 + i), "second_factor_code": "000000", "new_password": "a passphrase the attacker chose" });
        let reply = app
            .call(post("/v1/password/reset", guess).ip(&format!("198.18.{i}.9")))
            .await;
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&reply.status),
            "guess {i}: {reply:?}"
        );
    }
    let mut rules = Vec::new();
    for _ in 0..200 {
        app.pay.flush_records().await.unwrap();
        let rows = app
            .auth
            .db()
            .read("SELECT rule FROM risk_alerts", vec![])
            .await
            .unwrap();
        rules = rows.iter().map(|r| r.text(0).unwrap()).collect();
        if rules.iter().any(|r| r == "login.account_guessing") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        rules.iter().any(|r| r == "login.account_guessing"),
        "the guessing is an alert: {rules:?}"
    );
}

async fn sign_ins_refused_by_throttling_are_scored_as_failed_up_to_a_budget<S: LedgerStore>(
    app: TestApp<S>,
) {
    use koban_store::sql::SqlDb;
    // Stuffing from one network: 100 wrong passwords, then 30 more the throttle refuses.
    let (mut wrong, mut refused) = (0, 0);
    for i in 0..130 {
        let body =
            json!({ "email": format!("listed{i}@example.com"), "password": format!("leaked {i}") });
        let reply = app.call(post("/v1/login", body).ip("203.0.113.70")).await;
        match reply.status {
            StatusCode::UNAUTHORIZED => wrong += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("attempt {i}: {other}"),
        }
    }
    assert_eq!((wrong, refused), (100, 30));
    // The test clock stands still, so all 30 fall in one second: the budget scores 20.
    let expected = 100 + i64::from(koban_pay::risk::REFUSALS_SCORED_PER_S);
    let mut scored = 0;
    for _ in 0..200 {
        app.pay.flush_records().await.unwrap();
        let rows = app
            .auth
            .db()
            .read(
                "SELECT COUNT(*) FROM risk_events WHERE kind = 'login' AND failed = 1",
                vec![],
            )
            .await
            .unwrap();
        scored = rows[0].i64(0).unwrap();
        if scored >= expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(scored, expected, "refused sign-ins count as failed ones");
}

async fn requests_that_send_mail_are_limited_per_network<S: LedgerStore>(app: TestApp<S>) {
    // The test configuration allows 1,000 per window from one network.
    for i in 0..1_000 {
        let body = json!({ "email": format!("x{i}@example.com") });
        let reply = app
            .call(post("/v1/password/forgot", body).ip("192.0.2.50"))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    let body = json!({ "email": "victim@example.com" });
    let over = app
        .call(post("/v1/password/forgot", body.clone()).ip("192.0.2.51"))
        .await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    let recovery = app
        .call(post("/v1/recovery-requests", body.clone()).ip("192.0.2.52"))
        .await;
    assert_eq!(
        recovery.status,
        StatusCode::ACCEPTED,
        "each kind of request has its own count"
    );
    let elsewhere = app
        .call(post("/v1/password/forgot", body).ip("203.0.113.50"))
        .await;
    assert_eq!(elsewhere.status, StatusCode::ACCEPTED);
}

async fn wrong(app: &TestApp<impl LedgerStore>, email: &str) -> crate::helpers::Reply {
    app.call(post(
        "/v1/login",
        json!({ "email": email, "password": "not the password at all" }),
    ))
    .await
}

async fn sixth_wrong_password_is_delayed_and_eleventh_attempt_is_locked_and_owner_notified<
    S: LedgerStore,
>(
    app: TestApp<S>,
) {
    let user = app.user("victim@example.com").await;
    for attempt in 1..=5 {
        let reply = wrong(&app, &user.email).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // The sixth attempt, right away, is delayed: refused before the password is checked, even
    // the right password.
    let sixth = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    assert_eq!(sixth.status, StatusCode::TOO_MANY_REQUESTS, "{sixth:?}");
    assert_eq!(sixth.problem(), "throttled");
    let mut delay = sixth.retry_after();
    assert!(delay >= 1);
    // Each further failure doubles the delay, until the tenth locks the account.
    for failures in 6..=10 {
        app.clock.advance_secs(delay);
        let reply = wrong(&app, &user.email).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "failure {failures}");
        let next = wrong(&app, &user.email).await;
        assert_eq!(next.status, StatusCode::TOO_MANY_REQUESTS);
        let next_delay = next.retry_after();
        if failures < 10 {
            assert_eq!(next_delay, delay * 2, "after failure {failures}");
        }
        delay = next_delay;
    }
    // The eleventh attempt, even with the right password, meets a 30-minute lock.
    let eleventh = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    assert_eq!(eleventh.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        eleventh.retry_after() > 29 * 60 && eleventh.retry_after() <= 30 * 60,
        "{}",
        eleventh.retry_after()
    );
    let mail = app.mail(&user.email).await;
    assert!(
        mail.iter().any(|(subject, _)| subject.contains("locked")),
        "the owner is told: {mail:?}"
    );
    // ... and so is an analyst, at once: a lockout is a security alert and a fraud alert.
    {
        use koban_store::sql::SqlDb;
        let db = app.auth.db();
        let sql = "SELECT observed FROM security_alerts WHERE kind = 'account_lockout'";
        let rows = db.read(sql, vec![]).await.unwrap();
        assert_eq!(rows.len(), 1, "one lockout alert");
        assert_eq!(rows[0].i64(0).unwrap(), 1, "one account locked");
        app.pay.import_login_alarms().await.unwrap();
        let sql = "SELECT reason FROM risk_alerts WHERE rule = 'alarm.account_lockout'";
        let rows = db.read(sql, vec![]).await.unwrap();
        assert_eq!(rows.len(), 1, "the lockout is a fraud alert");
    }
    // After the lock, the right password works and the run of failures starts again.
    app.clock.advance_secs(30 * 60);
    let after = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    assert_eq!(after.status, StatusCode::OK, "{after:?}");
}

async fn unknown_account_and_wrong_password_answer_alike<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("known@example.com").await;
    let known = wrong(&app, &user.email).await;
    let unknown = wrong(&app, "nobody-here@example.com").await;
    assert_eq!(known.status, unknown.status);
    assert_eq!(known.body, unknown.body);
    // Unknown addresses are throttled exactly like known ones.
    for _ in 0..4 {
        wrong(&app, "nobody-here@example.com").await;
        wrong(&app, &user.email).await;
    }
    let known = wrong(&app, &user.email).await;
    let unknown = wrong(&app, "nobody-here@example.com").await;
    assert_eq!(known.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        (known.status, known.body.clone()),
        (unknown.status, unknown.body.clone())
    );
    // Forgot-password and recovery answer alike too.
    let a = app
        .call(post("/v1/password/forgot", json!({ "email": user.email })))
        .await;
    let b = app
        .call(post(
            "/v1/password/forgot",
            json!({ "email": "nobody-here@example.com" }),
        ))
        .await;
    assert_eq!((a.status, a.body), (b.status, b.body));
    let a = app
        .call(post(
            "/v1/recovery-requests",
            json!({ "email": user.email }),
        ))
        .await;
    let b = app
        .call(post(
            "/v1/recovery-requests",
            json!({ "email": "nobody-here@example.com" }),
        ))
        .await;
    assert_eq!((a.status, a.body), (b.status, b.body));
}

async fn password_sprayed_across_fifty_accounts_from_rotating_networks_is_blocked<
    S: LedgerStore,
>(
    app: TestApp<S>,
) {
    let sprayed = "Autumn leaves 2026!";
    let mut emails = Vec::new();
    for i in 0..50 {
        let email = format!("member{i}@example.com");
        // One of the fifty really uses the sprayed password.
        let password = if i == 30 {
            sprayed.to_owned()
        } else {
            format!("private passphrase number {i}")
        };
        assert_eq!(
            app.signup("customer", &email, &password).await.status,
            StatusCode::ACCEPTED
        );
        emails.push(email);
    }
    let mut refused_from = None;
    for (i, email) in emails.iter().enumerate() {
        // Each attempt comes from a different /24 and no device cookie.
        let ip = format!("10.{}.{}.7", i / 200, i % 200);
        let reply = app
            .call(post("/v1/login", json!({ "email": email, "password": sprayed })).ip(&ip))
            .await;
        if i == 30 {
            assert_eq!(
                reply.status,
                StatusCode::TOO_MANY_REQUESTS,
                "the spray must not get in even with the right password"
            );
        }
        match reply.status {
            StatusCode::UNAUTHORIZED => {
                assert!(refused_from.is_none(), "once refused, always refused")
            }
            StatusCode::TOO_MANY_REQUESTS => {
                refused_from.get_or_insert(i);
            }
            other => panic!("attempt {i}: unexpected {other}"),
        }
    }
    assert_eq!(refused_from, Some(5), "blocked after five accounts");
    // The spray raised a security alert at once, however many networks it came from; the
    // alarm's import makes it a fraud alert.
    {
        use koban_store::sql::SqlDb;
        let db = app.auth.db();
        let sql = "SELECT observed FROM security_alerts WHERE kind = 'password_spray'";
        let rows = db.read(sql, vec![]).await.unwrap();
        assert_eq!(rows.len(), 1, "one spray alert");
        assert_eq!(rows[0].i64(0).unwrap(), 5);
        app.pay.import_login_alarms().await.unwrap();
        let sql = "SELECT reason FROM risk_alerts WHERE rule = 'alarm.password_spray'";
        let rows = db.read(sql, vec![]).await.unwrap();
        assert_eq!(rows.len(), 1, "the spray is a fraud alert");
        assert_eq!(rows[0].text(0).unwrap(), "password_spray");
    }
    // Other passwords still work for their owners.
    let owner = app.call(post("/v1/login", json!({ "email": "member3@example.com", "password": "private passphrase number 3" })).ip("10.9.9.9")).await;
    assert_eq!(owner.status, StatusCode::OK);
}

async fn one_network_guessing_many_accounts_is_blocked<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("neighbour@example.com").await;
    // The owner signed in from this network before, so their browser holds a device cookie.
    let (_, device) = app.login_from(&user, "198.51.100.99").await;
    let other = app.user("other-neighbour@example.com").await;
    let (_, other_device) = app.login_from(&other, "198.51.100.98").await;
    // Credential stuffing: a different address and password each time, one network.
    for i in 0..100 {
        let reply = app
            .call(post("/v1/login", json!({ "email": format!("stuffed{i}@example.com"), "password": format!("leaked password {i}") })).ip("198.51.100.20"))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let blocked = app
        .call(
            post(
                "/v1/login",
                json!({ "email": user.email, "password": user.password }),
            )
            .ip("198.51.100.99"),
        )
        .await;
    assert_eq!(
        blocked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the whole /24 waits"
    );
    let known_device = app
        .call(
            post(
                "/v1/login",
                json!({ "email": user.email, "password": user.password }),
            )
            .ip("198.51.100.99")
            .header("cookie", &device),
        )
        .await;
    assert_eq!(
        known_device.status,
        StatusCode::OK,
        "a known device still gets in: {known_device:?}"
    );
    let forged = app
        .call(
            post(
                "/v1/login",
                json!({ "email": user.email, "password": user.password }),
            )
            .ip("198.51.100.99")
            .header("cookie", "koban_device=made-up.signature"),
        )
        .await;
    assert_eq!(
        forged.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a forged device cookie does not"
    );
    let borrowed = app
        .call(
            post(
                "/v1/login",
                json!({ "email": user.email, "password": user.password }),
            )
            .ip("198.51.100.99")
            .header("cookie", &other_device),
        )
        .await;
    assert_eq!(
        borrowed.status,
        StatusCode::TOO_MANY_REQUESTS,
        "nor one issued to another account"
    );
    let elsewhere = app
        .call(
            post(
                "/v1/login",
                json!({ "email": user.email, "password": user.password }),
            )
            .ip("203.0.113.5"),
        )
        .await;
    assert_eq!(
        elsewhere.status,
        StatusCode::OK,
        "other networks are not affected"
    );
}

async fn failure_spike_raises_an_alert_for_operators<S: LedgerStore>(app: TestApp<S>) {
    let admin = crate::operators::operator(&app, "alarm-admin@example.com", "admin")
        .await
        .token;
    assert!(
        app.auth.check_alarm().await.unwrap().is_none(),
        "quiet: no alert"
    );
    // Default floor 20 failures a minute, multiple 10: more than 200 in the last minute fire.
    for i in 0..201 {
        let reply = app
            .call(post("/v1/login", json!({ "email": format!("spray{i}@example.com"), "password": format!("guess number {i}") })).ip(&format!("10.1.{}.1", i % 250)))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let alert = app.auth.check_alarm().await.unwrap().expect("an alert");
    assert!(alert.observed > 200, "{alert:?}");
    assert!(
        app.auth.check_alarm().await.unwrap().is_none(),
        "raised once per minute"
    );
    let alerts = app
        .call(crate::helpers::get("/v1/ops/alerts").bearer(&admin))
        .await;
    assert_eq!(alerts.status, StatusCode::OK);
    assert_eq!(alerts.body.as_array().unwrap().len(), 1);
    assert_eq!(alerts.body[0]["kind"], "auth_failure_rate");
    // The fraud operation sees it as an alert in a case of its own, once.
    assert_eq!(app.pay.import_login_alarms().await.unwrap(), 1);
    assert_eq!(app.pay.import_login_alarms().await.unwrap(), 0);
    let cases = app
        .call(crate::helpers::get("/v1/ops/cases").bearer(&admin))
        .await;
    let global: Vec<&serde_json::Value> = cases
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["subject"] == "global")
        .collect();
    assert_eq!(global.len(), 1, "{}", cases.body);
    assert_eq!(global[0]["subject_role"], "global");
    let risk_alerts = app
        .call(crate::helpers::get("/v1/ops/risk/alerts").bearer(&admin))
        .await;
    assert!(
        risk_alerts
            .body
            .to_string()
            .contains("alarm.login_failures"),
        "{}",
        risk_alerts.body
    );
}
