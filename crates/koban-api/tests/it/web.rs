//! The web surface: security headers, CSRF for cookie sessions, problems, limits, OpenAPI.

use axum::http::StatusCode;
use koban_store::LedgerStore;
use serde_json::json;

use crate::helpers::{TestApp, get, post};
use crate::stories;

stories!(
    every_response_has_security_headers,
    cookie_sessions_need_the_csrf_token_to_change_state,
    malformed_and_oversized_bodies_get_problems_that_echo_nothing,
    the_openapi_document_describes_the_api,
    the_audit_chain_detects_a_tampered_row,
);

async fn every_response_has_security_headers<S: LedgerStore>(app: TestApp<S>) {
    for reply in [
        app.call(get("/livez")).await,
        app.call(get("/no/such/path")).await,
        app.call(post(
            "/v1/login",
            json!({ "email": "a@example.com", "password": "x" }),
        ))
        .await,
        app.call(get("/not-me?token=x")).await,
    ] {
        let h = &reply.headers;
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
    }
    let missing = app.call(get("/no/such/path")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.headers["content-type"], "application/problem+json");
}

async fn cookie_sessions_need_the_csrf_token_to_change_state<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("browser@example.com").await;
    let cookie = format!("koban_session={}", user.token);
    // Reading needs no CSRF token.
    assert_eq!(
        app.call(get("/v1/me").header("cookie", &cookie))
            .await
            .status,
        StatusCode::OK
    );
    let forged = app
        .call(post("/v1/logout", json!({})).header("cookie", &cookie))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(forged.problem(), "csrf");
    let wrong = app
        .call(
            post("/v1/logout", json!({}))
                .header("cookie", &cookie)
                .header("x-csrf-token", "guess"),
        )
        .await;
    assert_eq!(wrong.problem(), "csrf");
    assert_eq!(
        app.call(get("/v1/me").header("cookie", &cookie))
            .await
            .status,
        StatusCode::OK,
        "still signed in"
    );
    let csrf = app.auth.csrf_for(&user.token);
    let real = app
        .call(
            post("/v1/logout", json!({}))
                .header("cookie", &cookie)
                .header("x-csrf-token", csrf.expose()),
        )
        .await;
    assert_eq!(real.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.call(get("/v1/me").header("cookie", &cookie))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

async fn malformed_and_oversized_bodies_get_problems_that_echo_nothing<S: LedgerStore>(
    app: TestApp<S>,
) {
    let mistyped = app
        .call(post(
            "/v1/login",
            json!({ "email": "a@example.com", "password": ["my secret pass"] }),
        ))
        .await;
    assert_eq!(mistyped.status, StatusCode::BAD_REQUEST);
    assert!(!mistyped.body.to_string().contains("my secret pass"));
    let mistyped = app
        .call(post(
            "/v1/login",
            json!({ "email": "a@example.com", "password": 12345678901234i64 }),
        ))
        .await;
    assert_eq!(mistyped.status, StatusCode::BAD_REQUEST);
    assert!(
        !mistyped.body.to_string().contains("12345678901234"),
        "{mistyped:?}"
    );
    let missing = app
        .call(post("/v1/login", json!({ "email": "a@example.com" })))
        .await;
    assert!(
        missing.body["detail"]
            .as_str()
            .unwrap()
            .contains("password"),
        "{missing:?}"
    );
    let huge = app.call(post("/v1/signup", json!({ "email": "a@example.com", "password": "x".repeat(100_000), "display_name": "A" }))).await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(huge.headers["content-type"], "application/problem+json");
    assert!(
        app.mail("a@example.com").await.is_empty(),
        "nothing happened"
    );
}

async fn the_openapi_document_describes_the_api<S: LedgerStore>(app: TestApp<S>) {
    let doc = app.call(get("/openapi.json")).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/signup",
        "/v1/login",
        "/v1/login/second-factor",
        "/v1/factors/totp",
        "/v1/me/email",
        "/v1/ops/alerts",
        "/v1/merchant/api-keys",
        "/v1/cards",
        "/v1/cards/{id}/reveal",
        "/v1/cards/{id}/controls",
        "/v1/network/authorizations",
        "/v1/network/authorizations/{id}/clearings",
    ] {
        assert!(doc.body["paths"][path].is_object(), "{path} is documented");
    }
    assert_eq!(
        doc.body["paths"]["/v1/network/authorizations"]["post"]["security"][0]
            .as_object()
            .map(|o| o.contains_key("network_signature")),
        Some(true),
        "the network's endpoints name their signature scheme"
    );
    assert!(doc.body["components"]["securitySchemes"]["network_signature"].is_object());
    assert!(doc.body["components"]["schemas"]["Problem"].is_object());
}

async fn the_audit_chain_detects_a_tampered_row<S: LedgerStore>(app: TestApp<S>) {
    use koban_store::sql::{SqlDb, SqlTx};
    let user = app.user("audited@example.com").await;
    app.call(post("/v1/logout", json!({})).bearer(&user.token))
        .await;
    let report = koban_shared::audit::verify(app.auth.db()).await.unwrap();
    assert!(
        report.entries >= 4 && report.first_broken.is_none(),
        "{report:?}"
    );
    let mut tx = app.auth.db().begin().await.unwrap();
    let changed = tx
        .execute(
            "UPDATE audit_log SET actor = 'someone-else' WHERE seq = $1",
            koban_store::params![2i64],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    tx.commit().await.unwrap();
    let report = koban_shared::audit::verify(app.auth.db()).await.unwrap();
    assert_eq!(report.first_broken.map(|(seq, _)| seq), Some(2));
    assert_eq!(report.entries, 1);
}
