//! Operators and merchants: enrolment, roles, the audit log, API keys.

use axum::http::StatusCode;
use koban_auth::{Email, Role};
use koban_store::LedgerStore;
use serde_json::json;

use crate::helpers::{TestApp, User, delete, get, post};
use crate::stories;

/// An operator made as `koban admin create` does, enrolled, with TOTP, signed in.
pub async fn operator<S: LedgerStore>(app: &TestApp<S>, email: &str, role: &str) -> User {
    let (invite, _) = app
        .auth
        .create_operator(
            &Email::parse(email).unwrap(),
            Role::parse(role).unwrap(),
            None,
        )
        .await
        .unwrap();
    enrolled_operator(app, invite.enrolment_link.expose(), email).await
}

/// The operator an enrolment link invites, enrolled, with TOTP, signed in.
pub async fn enrolled_operator<S: LedgerStore>(app: &TestApp<S>, link: &str, email: &str) -> User {
    let token = link.split("token=").nth(1).unwrap();
    let password = "operator passphrase, long enough";
    let enrolled = app
        .call(post(
            "/v1/operators/enrol",
            json!({ "token": token, "password": password }),
        ))
        .await;
    assert_eq!(enrolled.status, StatusCode::NO_CONTENT, "{enrolled:?}");
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": email, "password": password }),
        ))
        .await;
    assert_eq!(login.body["next"], "enrol_factor");
    let (seed, token, recovery_codes) = app.enrol_totp(&login.token()).await;
    User {
        email: email.into(),
        password: password.into(),
        seed,
        token,
        recovery_codes,
    }
}

stories!(
    operators_enrol_a_second_factor_before_anything_and_roles_are_enforced,
    operators_lock_after_ten_failures,
    merchant_api_keys_are_shown_once_scoped_rotatable_and_revocable,
);

async fn operators_enrol_a_second_factor_before_anything_and_roles_are_enforced<S: LedgerStore>(
    app: TestApp<S>,
) {
    let (invite, _) = app
        .auth
        .create_operator(
            &Email::parse("first-admin@example.com").unwrap(),
            Role::Admin,
            None,
        )
        .await
        .unwrap();
    let token = invite
        .enrolment_link
        .expose()
        .split("token=")
        .nth(1)
        .unwrap()
        .to_owned();
    let page = app
        .call(get(&format!("/operators/enrol?token={token}")))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .as_str()
            .unwrap()
            .contains("<form method=\"post\"")
    );
    // Before enrolment there is no password at all.
    let early = app
        .call(post(
            "/v1/login",
            json!({ "email": "first-admin@example.com", "password": "anything long enough" }),
        ))
        .await;
    assert_eq!(early.status, StatusCode::UNAUTHORIZED);
    let password = "first admin passphrase here";
    assert_eq!(
        app.call(post(
            "/v1/operators/enrol",
            json!({ "token": token, "password": password })
        ))
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(post(
            "/v1/operators/enrol",
            json!({ "token": token, "password": password })
        ))
        .await
        .status,
        StatusCode::NOT_FOUND,
        "the link works once"
    );
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": "first-admin@example.com", "password": password }),
        ))
        .await;
    let partial = login.token();
    for path in [
        "/v1/ops/alerts",
        "/v1/ops/recovery-requests",
        "/v1/ops/audit",
    ] {
        let reply = app.call(get(path).bearer(&partial)).await;
        assert_eq!(reply.problem(), "enrolment-required", "{path}: {reply:?}");
    }
    let (seed, admin, _) = app.enrol_totp(&partial).await;
    let admin_user = User {
        email: "first-admin@example.com".into(),
        password: password.into(),
        seed,
        token: admin.clone(),
        recovery_codes: vec![],
    };
    assert_eq!(
        app.call(get("/v1/ops/alerts").bearer(&admin)).await.status,
        StatusCode::OK
    );
    let audit = app
        .call(get("/v1/ops/audit?limit=200").bearer(&admin))
        .await;
    let actions: Vec<&str> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"operator.invited")
            && actions.contains(&"operator.enrolled")
            && actions.contains(&"factor.totp.enrolled"),
        "{actions:?}"
    );

    // The admin invites an analyst (step-up); an analyst cannot approve recoveries or invite.
    let invited = app
        .with_step_up(
            &admin_user,
            &admin,
            "/v1/ops/operators",
            json!({ "email": "analyst@example.com", "role": "analyst" }),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{invited:?}");
    // The link goes to the new operator's mailbox, never to the admin who invited them.
    assert!(invited.body.get("enrolment_link").is_none(), "{invited:?}");
    assert_eq!(invited.body["sent_to"], "analyst@example.com");
    let mail = app.mail("analyst@example.com").await;
    assert!(
        mail.iter()
            .any(|(_, body)| body.contains("/operators/enrol?token=kop_")),
        "{mail:?}"
    );
    let analyst = operator(&app, "analyst2@example.com", "analyst").await;
    assert_eq!(
        app.call(get("/v1/ops/alerts").bearer(&analyst.token))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.call(get("/v1/ops/recovery-requests").bearer(&analyst.token))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(
            post(
                "/v1/ops/operators",
                json!({ "email": "x@example.com", "role": "admin" })
            )
            .bearer(&analyst.token)
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let customer = app.user("curious@example.com").await;
    assert_eq!(
        app.call(get("/v1/ops/audit").bearer(&customer.token))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

async fn operators_lock_after_ten_failures<S: LedgerStore>(app: TestApp<S>) {
    let op = operator(&app, "support@example.com", "support").await;
    let mut failures = 0;
    while failures < 10 {
        let reply = app
            .call(post(
                "/v1/login",
                json!({ "email": op.email, "password": "wrong wrong wrong" }),
            ))
            .await;
        match reply.status {
            StatusCode::UNAUTHORIZED => failures += 1,
            StatusCode::TOO_MANY_REQUESTS => app.clock.advance_secs(reply.retry_after()),
            other => panic!("unexpected {other}"),
        }
    }
    let locked = app
        .call(post(
            "/v1/login",
            json!({ "email": op.email, "password": op.password }),
        ))
        .await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        locked.retry_after() >= 29 * 60,
        "locked for at least 30 minutes"
    );
}

async fn merchant_api_keys_are_shown_once_scoped_rotatable_and_revocable<S: LedgerStore>(
    app: TestApp<S>,
) {
    let merchant = app.user_of("merchant", "shop@example.com").await;
    let customer = app.user("buyer@example.com").await;
    let refused = app
        .call(
            post(
                "/v1/merchant/api-keys",
                json!({ "name": "x", "environment": "test", "scopes": ["payments:read"] }),
            )
            .bearer(&customer.token),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "customers have no API keys"
    );
    let bad_scope = app
        .call(
            post(
                "/v1/merchant/api-keys",
                json!({ "name": "pos", "environment": "test", "scopes": ["admin"] }),
            )
            .bearer(&merchant.token),
        )
        .await;
    assert_eq!(bad_scope.status, StatusCode::UNPROCESSABLE_ENTITY);

    let created = app
        .with_step_up(&merchant, &merchant.token, "/v1/merchant/api-keys", json!({ "name": "POS", "environment": "test", "scopes": ["payments:write", "payments:read"] }))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("kbn_sk_test_"));
    let token = created.token();
    let list = app.call(get("/v1/merchant/api-keys").bearer(&token)).await;
    assert!(
        !list.body.to_string().contains(&key),
        "the key is shown only once"
    );
    assert!(key.starts_with(list.body[0]["prefix"].as_str().unwrap()));
    let who = app.call(get("/v1/merchant/whoami").bearer(&key)).await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(who.body["environment"], "test");
    assert_eq!(
        who.body["scopes"],
        json!(["payments:read", "payments:write"])
    );
    // A session token is not an API key, and an API key is not a session.
    assert_eq!(
        app.call(get("/v1/merchant/whoami").bearer(&token))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.call(get("/v1/me").bearer(&key)).await.status,
        StatusCode::UNAUTHORIZED
    );

    let id = created.body["api_key"]["id"].as_str().unwrap();
    let merchant = User { token, ..merchant };
    let rotated = app
        .with_step_up(
            &merchant,
            &merchant.token,
            &format!("/v1/merchant/api-keys/{id}/rotate"),
            json!({ "overlap_s": 3600 }),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{rotated:?}");
    let new_key = rotated.body["key"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call(get("/v1/merchant/whoami").bearer(&key))
            .await
            .status,
        StatusCode::OK,
        "the old key works during the overlap"
    );
    app.clock.advance_secs(3601);
    assert_eq!(
        app.call(get("/v1/merchant/whoami").bearer(&key))
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "and not after"
    );
    assert_eq!(
        app.call(get("/v1/merchant/whoami").bearer(&new_key))
            .await
            .status,
        StatusCode::OK
    );
    let token = app.login(&merchant).await;
    let new_id = rotated.body["api_key"]["id"].as_str().unwrap();
    assert_eq!(
        app.call(delete(&format!("/v1/merchant/api-keys/{new_id}")).bearer(&token))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(get("/v1/merchant/whoami").bearer(&new_key))
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "revoked at once"
    );
}
