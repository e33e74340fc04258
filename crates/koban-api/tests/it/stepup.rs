//! Step-up with dynamic linking: a confirmation is bound to one action, once, for five minutes.

use axum::http::StatusCode;
use koban_auth::{AuthError, Client, SensitiveAction, StepUpProof};
use koban_store::LedgerStore;
use serde_json::json;

use crate::helpers::{TestApp, get, post};
use crate::stories;

stories!(
    confirmation_for_amount_x_cannot_authorise_amount_y_or_another_payee,
    changed_email_notifies_the_old_address_and_not_me_freezes,
    step_up_confirmation_for_one_address_cannot_set_another,
    adding_a_second_factor_needs_step_up_and_ends_other_sessions,
    a_token_replaced_by_a_step_up_stops_moving_money_even_in_flight,
);

fn pay(amount_minor: i64, payee: &str) -> SensitiveAction {
    SensitiveAction::Payment {
        amount_minor,
        currency: "JPY".into(),
        payee: payee.into(),
    }
}

fn client() -> Client {
    Client::from_ip("192.0.2.1".parse().unwrap(), None, "test")
}

async fn confirmation_for_amount_x_cannot_authorise_amount_y_or_another_payee<S: LedgerStore>(
    app: TestApp<S>,
) {
    let user = app.user("payer@example.com").await;
    let auth = &app.auth;
    let challenge = |result: Result<koban_auth::StepUpGrant, AuthError>| match result {
        Err(AuthError::StepUpRequired(challenge)) => *challenge,
        other => panic!("expected a challenge, got {other:?}"),
    };
    let mut token = user.token.clone();
    let me = auth.authenticate(&token).await.unwrap();
    let started = challenge(
        auth.require_step_up(&me, &pay(5_000, "bob"), None, &client())
            .await,
    );
    assert_eq!(started.action, "payment");
    assert!(started.summary.contains("5000") && started.summary.contains("bob"));
    let proof = |id: &str, code: String| StepUpProof::code(id, &code);

    // The confirmation of 5,000 to bob does not authorise 6,000 to bob; the refused request
    // leaves it good for what it was made for.
    let other_amount = auth
        .require_step_up(
            &me,
            &pay(6_000, "bob"),
            Some(&proof(&started.id, app.totp(&user.seed))),
            &client(),
        )
        .await;
    assert!(
        matches!(other_amount, Err(AuthError::StepUpInvalid)),
        "{other_amount:?}"
    );
    let original = auth
        .require_step_up(
            &me,
            &pay(5_000, "bob"),
            Some(&proof(&started.id, app.totp(&user.seed))),
            &client(),
        )
        .await
        .expect("a mismatch refuses that request only");
    app.next_step();
    // The grant rotated the session: go on with the new one.
    let me = auth
        .authenticate(original.session.token.expose())
        .await
        .unwrap();

    // Nor another payee.
    let started = challenge(
        auth.require_step_up(&me, &pay(5_000, "bob"), None, &client())
            .await,
    );
    let other_payee = auth
        .require_step_up(
            &me,
            &pay(5_000, "mallory"),
            Some(&proof(&started.id, app.totp(&user.seed))),
            &client(),
        )
        .await;
    assert!(matches!(other_payee, Err(AuthError::StepUpInvalid)));

    // A wrong code does not pass; the right one does, once.
    let started = challenge(
        auth.require_step_up(&me, &pay(5_000, "bob"), None, &client())
            .await,
    );
    let wrong = auth
        .require_step_up(
            &me,
            &pay(5_000, "bob"),
            Some(&proof(&started.id, "000000".into())),
            &client(),
        )
        .await;
    assert!(matches!(wrong, Err(AuthError::BadCredentials)));
    let grant = auth
        .require_step_up(
            &me,
            &pay(5_000, "bob"),
            Some(&proof(&started.id, app.totp(&user.seed))),
            &client(),
        )
        .await
        .expect("confirmed");
    token = grant.session.token.expose().clone();
    assert!(
        auth.authenticate(&user.token).await.is_err(),
        "step-up rotates the session"
    );
    app.next_step();
    let me = auth.authenticate(&token).await.unwrap();
    let again = auth
        .require_step_up(
            &me,
            &pay(5_000, "bob"),
            Some(&proof(&started.id, app.totp(&user.seed))),
            &client(),
        )
        .await;
    assert!(matches!(again, Err(AuthError::StepUpInvalid)), "single use");

    // Five minutes at most.
    let started = challenge(
        auth.require_step_up(&me, &pay(5_000, "bob"), None, &client())
            .await,
    );
    app.clock.advance_secs(5 * 60 + 1);
    let me = auth.authenticate(&token).await.unwrap();
    let late = auth
        .require_step_up(
            &me,
            &pay(5_000, "bob"),
            Some(&proof(&started.id, app.totp(&user.seed))),
            &client(),
        )
        .await;
    assert!(matches!(late, Err(AuthError::StepUpInvalid)));

    // A password-only session cannot even start one.
    let partial = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    let partial = auth.authenticate(&partial.token()).await.unwrap();
    assert!(matches!(
        auth.require_step_up(&partial, &pay(1, "bob"), None, &client())
            .await,
        Err(AuthError::SecondFactorRequired)
    ));
}

async fn changed_email_notifies_the_old_address_and_not_me_freezes<S: LedgerStore>(
    app: TestApp<S>,
) {
    let user = app.user("old-address@example.com").await;
    let started = app
        .with_step_up(
            &user,
            &user.token,
            "/v1/me/email",
            json!({ "email": "new-address@example.com" }),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{started:?}");
    let token = started.token();
    let code = app.latest_code("new-address@example.com").await;
    assert_eq!(
        app.call(post("/v1/me/email/confirm", json!({ "code": code })).bearer(&token))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let me = app.call(get("/v1/me").bearer(&token)).await;
    assert_eq!(me.body["email"], "new-address@example.com");
    assert!(me.body["cooling_off_until"].is_i64());
    let old_mail = app.mail("old-address@example.com").await;
    let (subject, body) = &old_mail[0];
    assert!(subject.contains("e-mail address was changed"), "{subject}");
    assert!(
        body.contains("n***@example.com"),
        "the new address is masked: {body}"
    );
    let link = body
        .split_whitespace()
        .find(|w| w.contains("/not-me?token="))
        .expect("a not-me link");
    let not_me_token = link.split("token=").nth(1).unwrap();
    // Opening the link only shows a page; the form's POST freezes the account.
    let page = app
        .call(get(&format!("/not-me?token={not_me_token}")))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        app.call(get("/v1/me").bearer(&token)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.call(post("/v1/not-me", json!({ "token": not_me_token })))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(get("/v1/me").bearer(&token)).await.status,
        StatusCode::UNAUTHORIZED,
        "every session ended"
    );
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": "new-address@example.com", "password": user.password }),
        ))
        .await;
    // The right password for a frozen account is answered like a wrong one; the owner is told.
    assert_eq!(login.problem(), "invalid-credentials");
    assert!(
        app.mail("new-address@example.com")
            .await
            .iter()
            .any(|(subject, _)| subject.contains("frozen"))
    );
    assert_eq!(
        app.call(post("/v1/not-me", json!({ "token": not_me_token })))
            .await
            .status,
        StatusCode::NOT_FOUND,
        "single use"
    );
}

async fn step_up_confirmation_for_one_address_cannot_set_another<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("owner@example.com").await;
    let first = app
        .call(post("/v1/me/email", json!({ "email": "mine@example.com" })).bearer(&user.token))
        .await;
    assert_eq!(first.problem(), "step-up-required");
    let swapped = json!({ "email": "attacker@evil.example", "step_up": { "id": first.body["step_up"]["id"], "code": app.totp(&user.seed) } });
    let reply = app
        .call(post("/v1/me/email", swapped).bearer(&user.token))
        .await;
    assert_eq!(reply.problem(), "step-up-invalid", "{reply:?}");
    assert!(app.mail("attacker@evil.example").await.is_empty());
    assert_eq!(
        app.call(get("/v1/me").bearer(&user.token)).await.body["email"],
        "owner@example.com"
    );
}

async fn adding_a_second_factor_needs_step_up_and_ends_other_sessions<S: LedgerStore>(
    app: TestApp<S>,
) {
    let user = app.user("two-apps@example.com").await;
    let other = app.login(&user).await;
    let begun = app
        .with_step_up(&user, &user.token, "/v1/factors/totp", json!({}))
        .await;
    assert_eq!(begun.status, StatusCode::CREATED, "{begun:?}");
    let token = begun.token();
    let seed =
        koban_auth::totp::seed_from_uri(begun.body["otpauth_uri"].as_str().unwrap()).unwrap();
    let id = begun.body["factor_id"].as_str().unwrap();
    let done = app
        .call(
            post(
                &format!("/v1/factors/totp/{id}/confirm"),
                json!({ "code": app.totp(&seed) }),
            )
            .bearer(&token),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{done:?}");
    assert!(
        done.body["recovery_codes"].is_null(),
        "recovery codes come only with the first factor"
    );
    assert_eq!(
        app.call(get("/v1/me").bearer(&other)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let me = app.call(get("/v1/me").bearer(&token)).await;
    assert_eq!(me.body["factors"].as_array().unwrap().len(), 2);
    assert!(app.mail(&user.email).await[0].1.contains("/not-me?token="));
}

/// A request already authenticated with a token that a step-up then rotates away is refused
/// when it comes to move money: the old token stops at the moment of the rotation.
async fn a_token_replaced_by_a_step_up_stops_moving_money_even_in_flight<S: LedgerStore>(
    app: TestApp<S>,
) {
    let alice = app.user("alice@example.com").await;
    app.user("bob@example.com").await;
    app.user("carol@example.com").await;
    app.fund(&alice.token, 20_000, "fund").await;
    // Bob becomes a known payee (the first transfer to him is confirmed with step-up).
    let (first, token) = app
        .stepped(
            &alice,
            &alice.token,
            "/v1/transfers",
            "to-bob",
            json!({ "to": "bob@example.com", "amount": 100 }),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let known = |amount: i64, key: &str| koban_pay::p2p::P2pRequest {
        to: "bob@example.com".into(),
        amount: koban_pay::parse_amount(amount).unwrap(),
        currency: koban_ledger::Currency::Jpy,
        message: None,
        key: koban_pay::IdempotencyKey::parse(key).unwrap(),
    };
    // A small payment to a known payee needs no step-up: with the live token it goes through.
    let live = app.auth.authenticate(&token).await.unwrap();
    app.pay
        .transfer(&live, &known(100, "live-1"), None, &client())
        .await
        .expect("a live session pays a known payee");
    // A request authenticated with that token is in flight when another request's step-up
    // (a first payment to Carol) rotates the session.
    let in_flight = app.auth.authenticate(&token).await.unwrap();
    let (second, rotated) = app
        .stepped(
            &alice,
            &token,
            "/v1/transfers",
            "to-carol",
            json!({ "to": "carol@example.com", "amount": 100 }),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{second:?}");
    assert_ne!(rotated, token);
    let before = app.wallet(&rotated).await["balance"].as_i64().unwrap();
    let stale = app
        .pay
        .transfer(&in_flight, &known(5_000, "in-flight"), None, &client())
        .await;
    assert!(
        matches!(
            stale,
            Err(koban_pay::PayError::Auth(AuthError::Unauthenticated))
        ),
        "{stale:?}"
    );
    assert_eq!(
        app.wallet(&rotated).await["balance"].as_i64().unwrap(),
        before
    );
    // The same request with the new session goes through.
    let now = app.auth.authenticate(&rotated).await.unwrap();
    app.pay
        .transfer(&now, &known(5_000, "after"), None, &client())
        .await
        .expect("the rotated session pays");
}
