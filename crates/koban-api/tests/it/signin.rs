//! Sign-up, verification, factor enrolment, sign-in, sessions.

use axum::http::StatusCode;
use koban_store::LedgerStore;
use serde_json::json;

use crate::helpers::{TestApp, delete, get, post};
use crate::stories;

stories!(
    newcomer_signs_up_verifies_enrols_and_signs_in,
    a_right_password_does_not_clear_a_run_of_wrong_codes,
    an_enrolment_left_unconfirmed_cannot_be_confirmed_later,
    signup_does_not_reveal_taken_addresses,
    weak_passwords_are_refused,
    totp_code_replayed_is_refused,
    recovery_code_works_once,
    sessions_expire_when_idle_and_after_twelve_hours,
    sessions_can_be_listed_and_revoked,
    password_change_revokes_other_sessions,
    money_needs_second_factor_and_verified_email,
);

async fn newcomer_signs_up_verifies_enrols_and_signs_in<S: LedgerStore>(app: TestApp<S>) {
    let email = "hanako@example.com";
    let password = "lantern pebble orchard";
    assert_eq!(
        app.signup("customer", email, password).await.status,
        StatusCode::ACCEPTED
    );
    let code = app.latest_code(email).await;
    let wrong = app
        .call(post(
            "/v1/signup/verify",
            json!({ "email": email, "code": "000000" }),
        ))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.call(post(
            "/v1/signup/verify",
            json!({ "email": email, "code": code })
        ))
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    // The code is single use.
    assert_eq!(
        app.call(post(
            "/v1/signup/verify",
            json!({ "email": email, "code": code })
        ))
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );

    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": email, "password": password }),
        ))
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.body["next"], "enrol_factor");
    assert_eq!(login.body["session"]["level"], "password");
    let cookies = login.cookies().join("\n");
    assert!(
        cookies.contains("koban_session=")
            && cookies.contains("HttpOnly")
            && cookies.contains("SameSite=Strict"),
        "{cookies}"
    );
    assert!(
        !cookies.contains("koban_device="),
        "no device cookie before the second factor"
    );
    let partial = login.token();
    // A password-only session can do nothing that needs the second factor, not even read the
    // account's personal data.
    assert_eq!(
        app.call(get("/v1/me").bearer(&partial)).await.problem(),
        "enrolment-required"
    );
    assert_eq!(
        app.call(get("/v1/sessions").bearer(&partial))
            .await
            .problem(),
        "enrolment-required"
    );
    let key = app
        .call(
            post(
                "/v1/merchant/api-keys",
                json!({ "name": "x", "environment": "test", "scopes": ["payments:read"] }),
            )
            .bearer(&partial),
        )
        .await;
    assert_eq!(key.problem(), "enrolment-required");

    let (seed, full, codes) = app.enrol_totp(&partial).await;
    assert_eq!(codes.len(), 10);
    assert_eq!(
        app.call(get("/v1/me").bearer(&partial)).await.status,
        StatusCode::UNAUTHORIZED,
        "the old token ended"
    );
    let me = app.call(get("/v1/me").bearer(&full)).await;
    assert_eq!(me.body["can_move_money"], true);
    assert_eq!(me.body["factors"].as_array().unwrap().len(), 1);
    assert_eq!(me.body["recovery_codes_left"], 10);

    // Sign out, sign in again: now the second factor is asked for.
    assert_eq!(
        app.call(post("/v1/logout", json!({})).bearer(&full))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(get("/v1/me").bearer(&full)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = app
        .call(post(
            "/v1/login",
            json!({ "email": email, "password": password }),
        ))
        .await;
    assert_eq!(again.body["next"], "second_factor");
    let bad = app
        .call(post("/v1/login/second-factor", json!({ "code": "123456" })).bearer(&again.token()))
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let good = app
        .call(
            post(
                "/v1/login/second-factor",
                json!({ "code": app.totp(&seed) }),
            )
            .bearer(&again.token()),
        )
        .await;
    assert_eq!(good.status, StatusCode::OK);
    assert_eq!(good.body["session"]["level"], "second_factor");
    assert_ne!(
        good.token(),
        again.token(),
        "a new token after the second factor"
    );
    assert!(
        good.cookies()
            .iter()
            .any(|c| c.starts_with("koban_device=")),
        "a device cookie after the second factor"
    );
    assert_eq!(
        app.call(get("/v1/me").bearer(&again.token())).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn signup_does_not_reveal_taken_addresses<S: LedgerStore>(app: TestApp<S>) {
    let first = app
        .signup("customer", "taken@example.com", "lantern pebble orchard")
        .await;
    let second = app
        .signup("customer", "taken@example.com", "another long passphrase")
        .await;
    assert_eq!(first.status, second.status);
    assert_eq!(first.body, second.body);
    let mail = app.mail("taken@example.com").await;
    assert_eq!(mail.len(), 2);
    assert!(
        mail[0].0.contains("tried to sign up"),
        "the owner is told instead: {mail:?}"
    );
    // The second password was not set.
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": "taken@example.com", "password": "another long passphrase" }),
        ))
        .await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
}

async fn weak_passwords_are_refused<S: LedgerStore>(app: TestApp<S>) {
    for (password, why) in [
        ("short pass!", "at least 12"),
        ("qwertyuiopasdfghjkl", "most common"),
        ("i am sakura.tanaka forever", "e-mail address or name"),
    ] {
        let reply = app
            .signup("customer", "sakura.tanaka@example.com", password)
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{password}");
        assert_eq!(reply.problem(), "weak-password");
        assert!(
            reply.body["detail"].as_str().unwrap().contains(why),
            "{reply:?}"
        );
        assert!(
            !reply.body.to_string().contains(password),
            "the password is not echoed"
        );
    }
    assert!(
        app.mail("sakura.tanaka@example.com").await.is_empty(),
        "nothing was created"
    );
}

async fn totp_code_replayed_is_refused<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("replay@example.com").await;
    let code = app.totp(&user.seed);
    let first = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    let ok = app
        .call(post("/v1/login/second-factor", json!({ "code": code })).bearer(&first.token()))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    // The same code, in the same time step, from another sign-in.
    let second = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    let replay = app
        .call(post("/v1/login/second-factor", json!({ "code": code })).bearer(&second.token()))
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{replay:?}");
    assert_eq!(
        replay.problem(),
        "code-already-used",
        "a right code of a used step says to wait for the next one: {replay:?}"
    );
    // The previous step's code is refused too once a later one was used.
    app.next_step();
    let fresh = app
        .call(
            post(
                "/v1/login/second-factor",
                json!({ "code": app.totp(&user.seed) }),
            )
            .bearer(&second.token()),
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK);
}

async fn recovery_code_works_once<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("recovery-code@example.com").await;
    let code = user.recovery_codes[3].clone();
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    let ok = app
        .call(
            post(
                "/v1/login/second-factor",
                json!({ "code": code.to_uppercase() }),
            )
            .bearer(&login.token()),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let me = app.call(get("/v1/me").bearer(&ok.token())).await;
    assert_eq!(me.body["recovery_codes_left"], 9);
    assert!(
        app.mail(&user.email)
            .await
            .iter()
            .any(|(subject, _)| subject.contains("recovery code was used"))
    );
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    let again = app
        .call(post("/v1/login/second-factor", json!({ "code": code })).bearer(&login.token()))
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
}

async fn sessions_expire_when_idle_and_after_twelve_hours<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("idle@example.com").await;
    app.clock.advance_secs(14 * 60);
    assert_eq!(
        app.call(get("/v1/me").bearer(&user.token)).await.status,
        StatusCode::OK
    );
    app.clock.advance_secs(15 * 60 + 1);
    assert_eq!(
        app.call(get("/v1/me").bearer(&user.token)).await.status,
        StatusCode::UNAUTHORIZED,
        "idle for 15 minutes"
    );

    let token = app.login(&user).await;
    // Active every ten minutes for twelve hours: still ends at the absolute limit.
    for _ in 0..71 {
        app.clock.advance_secs(10 * 60);
        assert_eq!(
            app.call(get("/v1/me").bearer(&token)).await.status,
            StatusCode::OK
        );
    }
    app.clock.advance_secs(10 * 60);
    assert_eq!(
        app.call(get("/v1/me").bearer(&token)).await.status,
        StatusCode::UNAUTHORIZED,
        "12 hours at most"
    );
}

async fn sessions_can_be_listed_and_revoked<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("devices@example.com").await;
    let phone = app.login(&user).await;
    let list = app.call(get("/v1/sessions").bearer(&user.token)).await;
    let sessions = list.body.as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let other = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.call(delete(&format!("/v1/sessions/{other}")).bearer(&user.token))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(get("/v1/me").bearer(&phone)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.call(get("/v1/me").bearer(&user.token)).await.status,
        StatusCode::OK
    );
    // Someone else's session cannot be revoked.
    let stranger = app.user("stranger@example.com").await;
    let mine = app.call(get("/v1/sessions").bearer(&user.token)).await.body[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.call(delete(&format!("/v1/sessions/{mine}")).bearer(&stranger.token))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(get("/v1/me").bearer(&user.token)).await.status,
        StatusCode::OK
    );
}

async fn password_change_revokes_other_sessions<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("change-password@example.com").await;
    let laptop = app.login(&user).await;
    let changed = app
        .with_step_up(
            &user,
            &user.token,
            "/v1/me/password",
            json!({ "new_password": "a brand new passphrase" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    let current = changed.token();
    assert_eq!(
        app.call(get("/v1/me").bearer(&laptop)).await.status,
        StatusCode::UNAUTHORIZED,
        "other sessions end"
    );
    assert_eq!(
        app.call(get("/v1/me").bearer(&user.token)).await.status,
        StatusCode::UNAUTHORIZED,
        "the step-up rotated this one"
    );
    let me = app.call(get("/v1/me").bearer(&current)).await;
    assert!(
        me.body["cooling_off_until"].is_i64(),
        "cooling-off starts: {me:?}"
    );
    assert_eq!(me.body["cooling_off_limit_minor"], 10_000);
    let old = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": user.password }),
        ))
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = app
        .call(post(
            "/v1/login",
            json!({ "email": user.email, "password": "a brand new passphrase" }),
        ))
        .await;
    assert_eq!(new.status, StatusCode::OK);
    let notice = &app.mail(&user.email).await[0];
    assert!(
        notice.0.contains("password was changed") && notice.1.contains("/not-me?token=knm_"),
        "{notice:?}"
    );
}

async fn money_needs_second_factor_and_verified_email<S: LedgerStore>(app: TestApp<S>) {
    let password = "lantern pebble orchard";
    app.signup("customer", "unverified@example.com", password)
        .await;
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": "unverified@example.com", "password": password }),
        ))
        .await;
    let (_, token, _) = app.enrol_totp(&login.token()).await;
    let principal = app.auth.authenticate(&token).await.unwrap();
    assert!(principal.full().is_ok());
    assert!(matches!(
        principal.can_move_money(),
        Err(koban_auth::AuthError::EmailNotVerified)
    ));
    let partial = app
        .call(post(
            "/v1/login",
            json!({ "email": "unverified@example.com", "password": password }),
        ))
        .await;
    let principal = app.auth.authenticate(&partial.token()).await.unwrap();
    assert!(matches!(
        principal.can_move_money(),
        Err(koban_auth::AuthError::SecondFactorRequired)
    ));
}

async fn a_right_password_does_not_clear_a_run_of_wrong_codes<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("codes@example.com").await;
    let login = json!({ "email": user.email, "password": user.password });
    for round in 0..5 {
        // Someone who knows the password signs in afresh before every wrong code.
        let token = app.call(post("/v1/login", login.clone())).await.token();
        let reply = app
            .call(post("/v1/login/second-factor", json!({ "code": "000000" })).bearer(&token))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "round {round}");
    }
    let token = app.call(post("/v1/login", login)).await.token();
    let sixth = app
        .call(
            post(
                "/v1/login/second-factor",
                json!({ "code": app.totp(&user.seed) }),
            )
            .bearer(&token),
        )
        .await;
    assert_eq!(
        sixth.status,
        StatusCode::TOO_MANY_REQUESTS,
        "five wrong codes delay the next, whatever the password did"
    );
}

async fn an_enrolment_left_unconfirmed_cannot_be_confirmed_later<S: LedgerStore>(app: TestApp<S>) {
    let password = "lantern pebble orchard";
    let login = json!({ "email": "leftover@example.com", "password": password });
    app.signup("customer", "leftover@example.com", password)
        .await;
    // An attacker with the password starts an enrolment and leaves it.
    let attacker = app.call(post("/v1/login", login.clone())).await;
    let begun = app
        .call(post("/v1/factors/totp", json!({})).bearer(&attacker.token()))
        .await;
    let attacker_seed =
        koban_auth::totp::seed_from_uri(begun.body["otpauth_uri"].as_str().unwrap()).unwrap();
    let attacker_factor = begun.body["factor_id"].as_str().unwrap().to_owned();
    // The owner enrols their own factor.
    let owner = app.call(post("/v1/login", login.clone())).await;
    app.enrol_totp(&owner.token()).await;
    // The leftover cannot be confirmed from a password-only session.
    let again = app.call(post("/v1/login", login)).await;
    let confirm = app
        .call(
            post(
                &format!("/v1/factors/totp/{attacker_factor}/confirm"),
                json!({ "code": app.totp(&attacker_seed) }),
            )
            .bearer(&again.token()),
        )
        .await;
    assert_eq!(confirm.problem(), "second-factor-required", "{confirm:?}");
}
