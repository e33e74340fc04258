//! Password reset and recovery without factors.

use axum::http::StatusCode;
use koban_store::LedgerStore;
use serde_json::json;

use crate::helpers::{TestApp, get, post};
use crate::stories;

stories!(
    reset_never_reaches_an_address_not_on_file,
    second_factor_guesses_through_reset_count_in_the_second_factor_run,
    reset_needs_the_emailed_code_and_a_second_factor,
    lost_factors_recovery_waits_for_an_operator_and_can_be_cancelled,
);

async fn reset_never_reaches_an_address_not_on_file<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("victim2@example.com").await;
    // An extra "send it here" field is refused outright.
    let sneaky = app
        .call(post(
            "/v1/password/forgot",
            json!({ "email": user.email, "notify": "attacker@evil.example" }),
        ))
        .await;
    assert_eq!(sneaky.status, StatusCode::BAD_REQUEST);
    // Knowledge (birth date, phone) is not part of the API at all.
    let kba = app.call(post("/v1/password/forgot", json!({ "email": "attacker@evil.example", "date_of_birth": "1990-04-01", "phone": "+819012345678" }))).await;
    assert_eq!(kba.status, StatusCode::BAD_REQUEST);
    let reply = app
        .call(post(
            "/v1/password/forgot",
            json!({ "email": "  VICTIM2@Example.com " }),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert!(app.mail("attacker@evil.example").await.is_empty());
    let mail = app.mail(&user.email).await;
    assert!(
        mail[0].0.contains("Reset your Koban password"),
        "the code went to the address on file: {mail:?}"
    );
}

async fn reset_needs_the_emailed_code_and_a_second_factor<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("forgetful@example.com").await;
    let other_session = app.login(&user).await;
    app.call(post("/v1/password/forgot", json!({ "email": user.email })))
        .await;
    let code = app.latest_code(&user.email).await;
    let reset = |second: String| json!({ "email": user.email, "code": code, "second_factor_code": second, "new_password": "remembered at last, finally" });
    let no_factor = app
        .call(post("/v1/password/reset", reset("000000".into())))
        .await;
    assert_eq!(
        no_factor.status,
        StatusCode::UNAUTHORIZED,
        "the e-mail code alone is not enough"
    );
    let old = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    assert_eq!(old.status, StatusCode::OK, "nothing changed");
    let done = app
        .call(post("/v1/password/reset", reset(app.totp(&user.seed))))
        .await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{done:?}");
    assert_eq!(
        app.call(get("/v1/me").bearer(&other_session)).await.status,
        StatusCode::UNAUTHORIZED,
        "every session ended"
    );
    let new = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": "remembered at last, finally" }),
        ))
        .await;
    assert_eq!(new.status, StatusCode::OK);
    assert!(
        app.mail(&user.email).await[0]
            .0
            .contains("password was reset")
    );
}

async fn lost_factors_recovery_waits_for_an_operator_and_can_be_cancelled<S: LedgerStore>(
    app: TestApp<S>,
) {
    let approver_user = crate::operators::operator(&app, "approver@example.com", "approver").await;
    let approver = approver_user.token.clone();
    let user = app.user("lost-phone@example.com").await;
    // A request the owner cancels.
    app.call(post(
        "/v1/recovery-requests",
        json!({ "email": user.email }),
    ))
    .await;
    let notice = app.mail(&user.email).await[0].1.clone();
    let cancel = notice
        .split_whitespace()
        .find(|w| w.contains("/recovery/cancel?token="))
        .expect("a cancel link");
    let token = cancel.split("token=").nth(1).unwrap();
    assert_eq!(
        app.call(post(
            "/v1/recovery-requests/cancel",
            json!({ "token": token })
        ))
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    let pending = app
        .call(get("/v1/ops/recovery-requests").bearer(&approver))
        .await;
    assert_eq!(pending.body.as_array().unwrap().len(), 0);

    // A request nobody cancels: not before 72 hours.
    app.call(post(
        "/v1/recovery-requests",
        json!({ "email": user.email }),
    ))
    .await;
    let pending = app
        .call(get("/v1/ops/recovery-requests").bearer(&approver))
        .await;
    let id = pending.body[0]["id"].as_str().unwrap().to_owned();
    let early = app
        .call(
            post(
                &format!("/v1/ops/recovery-requests/{id}/approve"),
                json!({}),
            )
            .bearer(&approver),
        )
        .await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    // Customers cannot approve anything.
    let customer = app
        .call(
            post(
                &format!("/v1/ops/recovery-requests/{id}/approve"),
                json!({}),
            )
            .bearer(&user.token),
        )
        .await;
    assert_eq!(customer.status, StatusCode::FORBIDDEN);
    app.clock.advance_secs(72 * 3600);
    let approver = app.login(&approver_user).await;
    let approved = app
        .call(
            post(
                &format!("/v1/ops/recovery-requests/{id}/approve"),
                json!({}),
            )
            .bearer(&approver),
        )
        .await;
    assert_eq!(approved.status, StatusCode::NO_CONTENT, "{approved:?}");
    // The owner signs in with the password and must enrol a new factor; cooling-off applies.
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    assert_eq!(login.body["next"], "enrol_factor");
    let (_, token, _) = app.enrol_totp(&login.token()).await;
    let me = app.call(get("/v1/me").bearer(&token)).await;
    assert!(me.body["cooling_off_until"].is_i64());
    assert!(
        app.mail(&user.email)
            .await
            .iter()
            .any(|(s, _)| s.contains("recovery request was approved"))
    );
}

async fn second_factor_guesses_through_reset_count_in_the_second_factor_run<S: LedgerStore>(
    app: TestApp<S>,
) {
    let user = app.user("mailbox-stolen@example.com").await;
    app.call(post("/v1/password/forgot", json!({ "email": user.email })))
        .await;
    let code = app.latest_code(&user.email).await;
    for round in 0..5 {
        // Someone with the password and the mailbox signs in (clearing the password run) and
        // guesses the second factor through reset.
        let login = app
            .call(post(
                "/v1/login",
                json!({ "email": user.email, "password": user.password }),
            ))
            .await;
        assert_eq!(login.status, StatusCode::OK, "round {round}");
        let reset = json!({ "email": user.email, "code": code, "second_factor_code": format!("00000{round}"), "new_password": "attacker chosen passphrase" });
        let reply = app.call(post("/v1/password/reset", reset)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "round {round}");
    }
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    let factor = app
        .call(
            post(
                "/v1/login/second-factor",
                json!({ "code": app.totp(&user.seed) }),
            )
            .bearer(&login.token()),
        )
        .await;
    assert_eq!(
        factor.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the guesses counted in the second-factor run"
    );
    // And the e-mailed code is spent after five wrong tries.
    app.clock.advance_secs(60);
    let reset = json!({ "email": user.email, "code": code, "second_factor_code": app.totp(&user.seed), "new_password": "attacker chosen passphrase" });
    assert_eq!(
        app.call(post("/v1/password/reset", reset)).await.status,
        StatusCode::UNAUTHORIZED
    );
}
