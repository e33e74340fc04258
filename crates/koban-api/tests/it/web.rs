//! The web surface: security headers, CSRF for cookie sessions, problems, limits, OpenAPI.

use axum::http::StatusCode;
use koban_store::LedgerStore;
use serde_json::json;

use crate::helpers::{TestApp, get, post};
use crate::payments::idem;
use crate::stories;

stories!(
    every_response_has_security_headers,
    cookie_sessions_need_the_csrf_token_to_change_state,
    malformed_and_oversized_bodies_get_problems_that_echo_nothing,
    the_openapi_document_describes_the_api,
    the_openapi_document_states_what_the_server_enforces,
    whole_numbers_written_as_floats_are_integers,
    a_step_up_answer_of_the_wrong_shape_is_refused_even_when_unneeded,
    a_malformed_address_is_refused_where_existence_is_not_told,
    the_audit_chain_detects_a_tampered_row,
    a_database_writer_cannot_rewrite_or_cut_the_audit_chain,
    ledger_checkpoints_detect_a_changed_transfer,
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
    // A payment code may be asked for without a body (the wallet's defaults), and the
    // document says so.
    let code = &doc.body["paths"]["/v1/payment-codes"]["post"]["requestBody"];
    assert_ne!(code["required"], true, "{code}");
}

async fn the_audit_chain_detects_a_tampered_row<S: LedgerStore>(app: TestApp<S>) {
    use koban_store::sql::{SqlDb, SqlTx};
    let user = app.user("audited@example.com").await;
    app.call(post("/v1/logout", json!({})).bearer(&user.token))
        .await;
    let key = app.auth.audit_key();
    let report = koban_shared::audit::verify(app.auth.db(), key, &[])
        .await
        .unwrap();
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
    let report = koban_shared::audit::verify(app.auth.db(), key, &[])
        .await
        .unwrap();
    assert_eq!(report.first_broken.map(|(seq, _)| seq), Some(2));
    assert_eq!(report.entries, 1);
}

/// Every entry of the chain, oldest first.
async fn whole_chain<S: LedgerStore>(app: &TestApp<S>) -> Vec<koban_shared::audit::AuditEntry> {
    let mut entries = koban_shared::audit::recent(app.auth.db(), None, 200)
        .await
        .unwrap();
    entries.reverse();
    entries
}

/// Stores `entries` in place of the chain, each re-linked by `link` as someone without the
/// server's key can: the whole chain is rewritten in one transaction.
async fn relink<S: LedgerStore>(
    app: &TestApp<S>,
    mut entries: Vec<koban_shared::audit::AuditEntry>,
    link: impl Fn(&koban_shared::audit::AuditEntry) -> [u8; 32],
) {
    use koban_store::sql::{SqlDb, SqlTx};
    let mut prev = koban_shared::audit::GENESIS.to_vec();
    let mut tx = app.auth.db().begin().await.unwrap();
    for entry in &mut entries {
        entry.prev_hash = prev;
        entry.hash = link(entry).to_vec();
        prev = entry.hash.clone();
        tx.execute(
            "UPDATE audit_log SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
            koban_store::params![
                entry.actor.clone(),
                entry.prev_hash.clone(),
                entry.hash.clone(),
                entry.seq
            ],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn a_database_writer_cannot_rewrite_or_cut_the_audit_chain<S: LedgerStore>(app: TestApp<S>) {
    use koban_shared::audit::{self, Checkpoint};
    use koban_store::sql::{SqlDb, SqlTx};
    let key = app.auth.audit_key();
    let user = app.user("chained@example.com").await;
    app.call(post("/v1/logout", json!({})).bearer(&user.token))
        .await;
    // The serving process anchors the head outside the database.
    let (head, hash) = audit::head(app.auth.db()).await.unwrap().unwrap();
    let unkeyed = audit::unkeyed_prefix(app.auth.db(), key).await.unwrap();
    assert_eq!(
        unkeyed, 0,
        "a database created keyed has no unkeyed entries"
    );
    let line = Checkpoint {
        seq: head,
        hash,
        at_ms: app.auth.now_ms(),
        unkeyed,
    }
    .to_line(key);
    // A line torn by a crash is skipped (and counted); the whole ones still count.
    let (anchors, torn) = audit::read_anchor(&format!("{{\"seq\":2,\"ha\n{line}\n"), key).unwrap();
    assert_eq!((anchors.len(), torn), (1, 1));
    let report = audit::verify(app.auth.db(), key, &anchors).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, u64::try_from(head).unwrap());
    assert_eq!((report.anchors, report.unkeyed), (1, 0));
    // An anchor line signed under another key, or edited, is refused.
    let other = koban_auth::ServerKeys::from_master([9; 32]).audit_key();
    assert!(audit::read_anchor(&format!("{line}\n"), &other).is_err());
    let edited = line.replacen("\"seq\":", "\"seq\":1", 1);
    assert!(audit::read_anchor(&format!("{edited}\n"), key).is_err());

    // A writer changes entry 2 and re-links the whole chain under a key of their own: the
    // first re-linked entry breaks.
    let honest = whole_chain(&app).await;
    let mut forged = honest.clone();
    forged[1].actor = "someone-else".into();
    relink(&app, forged.clone(), |entry| entry.keyed_hash(&other)).await;
    let report = audit::verify(app.auth.db(), key, &[]).await.unwrap();
    assert_eq!(report.first_broken.map(|(seq, _)| seq), Some(1));

    // ... or in the format of entries written before the chain was keyed: without the anchor
    // it reads as an old unkeyed chain (and says so); the anchor, which says no entry was
    // unkeyed, shows the rewrite from its first entry.
    relink(&app, forged, audit::AuditEntry::unkeyed_hash).await;
    let report = audit::verify(app.auth.db(), key, &[]).await.unwrap();
    assert_eq!(report.unkeyed, report.entries, "{report:?}");
    let report = audit::verify(app.auth.db(), key, &anchors).await.unwrap();
    assert_eq!(report.first_broken.map(|(seq, _)| seq), Some(1));

    // The honest chain back, then its last two entries cut: every link left holds, but the
    // anchored head is gone.
    relink(&app, honest, |entry| entry.keyed_hash(key)).await;
    assert!(
        audit::verify(app.auth.db(), key, &anchors)
            .await
            .unwrap()
            .ok()
    );
    let mut tx = app.auth.db().begin().await.unwrap();
    tx.execute(
        "DELETE FROM audit_log WHERE seq >= $1",
        koban_store::params![head - 1],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let unanchored = audit::verify(app.auth.db(), key, &[]).await.unwrap();
    assert!(unanchored.ok(), "a key alone cannot show a cut tail");
    let report = audit::verify(app.auth.db(), key, &anchors).await.unwrap();
    assert_eq!(report.first_broken.map(|(seq, _)| seq), Some(head));
}

async fn ledger_checkpoints_detect_a_changed_transfer<S: LedgerStore>(app: TestApp<S>) {
    use koban_shared::audit;
    use koban_store::sql::{SqlDb, SqlTx};
    let (db, key) = (app.auth.db(), app.auth.audit_key());
    let user = app.user("ledgered@example.com").await;
    app.fund(&user.token, 5_000, "fund-ledger-1").await;
    app.fund(&user.token, 700, "fund-ledger-2").await;
    let now = app.auth.now_ms() + 1_000;
    let first = audit::checkpoint_ledger(db, key, now, 0, 10_000)
        .await
        .unwrap();
    assert!(first.is_some());
    assert_eq!(
        audit::checkpoint_ledger(db, key, now, 0, 10_000)
            .await
            .unwrap(),
        None,
        "nothing new to cover"
    );
    let report = audit::verify(db, key, &[]).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.ledger_checkpoints, 1);
    let covered = report.transfers_covered;
    assert!(covered >= 2, "{report:?}");

    // A later checkpoint continues the digest from the first.
    app.fund(&user.token, 300, "fund-ledger-3").await;
    let now = app.auth.now_ms() + 1_000;
    let second = audit::checkpoint_ledger(db, key, now, 0, 10_000)
        .await
        .unwrap();
    assert!(second.is_some());
    let report = audit::verify(db, key, &[]).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.ledger_checkpoints, 2);
    assert!(report.transfers_covered > covered);

    // A database writer raises the newest transfer's amount: the second checkpoint breaks.
    let mut tx = db.begin().await.unwrap();
    let changed = tx
        .execute(
            "UPDATE transfers SET amount = amount + 1 \
             WHERE seq = (SELECT MAX(seq) FROM transfers)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    tx.commit().await.unwrap();
    let report = audit::verify(db, key, &[]).await.unwrap();
    assert_eq!(report.ledger_broken.map(|(seq, _)| seq), second);
    assert!(
        report.first_broken.is_none(),
        "the chain itself still holds"
    );
}

async fn the_openapi_document_states_what_the_server_enforces<S: LedgerStore>(app: TestApp<S>) {
    let doc = app.call(get("/openapi.json")).await.body;
    let mut secured = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for (status, response) in responses {
                if status.starts_with(['4', '5'])
                    && let Some(content) = response["content"].as_object()
                {
                    assert!(
                        !content.contains_key("application/json"),
                        "{method} {path} {status}: errors are problem+json"
                    );
                }
            }
            if operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
            {
                secured += 1;
                assert!(responses.contains_key("401"), "{method} {path}: 401");
                assert!(responses.contains_key("403"), "{method} {path}: 403");
            }
            if operation["requestBody"].is_object() {
                assert!(responses.contains_key("400"), "{method} {path}: 400");
            }
            if path.contains('{') {
                assert!(responses.contains_key("404"), "{method} {path}: 404");
            }
        }
    }
    assert!(secured > 50, "most operations are secured ({secured})");
    let transfer = &doc["paths"]["/v1/transfers"]["post"];
    let key = transfer["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    assert_eq!(key["required"], true);
    assert_eq!(key["schema"]["maxLength"], 255);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["TransferIn"]["properties"]["amount"]["minimum"], 1);
    assert_eq!(
        schemas["TransferIn"]["properties"]["currency"]["enum"],
        json!(["JPY", null]),
        "the currencies this server keeps wallets in"
    );
    assert_eq!(
        schemas["SignupIn"]["properties"]["password"]["minLength"],
        12
    );
    assert!(schemas["ChangePhoneIn"]["properties"]["phone"]["pattern"].is_string());
    assert_eq!(schemas["StepUpIn"]["oneOf"].as_array().unwrap().len(), 2);
    assert_eq!(schemas["FeeIn"]["properties"]["fee_bps"]["maximum"], 10_000);
}

async fn whole_numbers_written_as_floats_are_integers<S: LedgerStore>(app: TestApp<S>) {
    let user = app.user("whole@example.com").await;
    let faucet = |amount: serde_json::Value, key: &str| {
        idem(
            post("/v1/sandbox/faucet", json!({ "amount": amount })).bearer(&user.token),
            key,
        )
    };
    let whole = app.call(faucet(json!(2000.0), "whole-1")).await;
    assert_eq!(whole.status, StatusCode::CREATED, "{whole:?}");
    let exponent = app.call(faucet(json!(1e3), "whole-2")).await;
    assert_eq!(exponent.status, StatusCode::CREATED, "{exponent:?}");
    let fraction = app.call(faucet(json!(2000.5), "whole-3")).await;
    assert_eq!(fraction.status, StatusCode::BAD_REQUEST, "{fraction:?}");
    let huge = app.call(faucet(json!(1e19), "whole-4")).await;
    assert_eq!(huge.status, StatusCode::BAD_REQUEST, "{huge:?}");
    // serde reads a struct from an array too; a body is an object.
    let array = app
        .call(idem(
            post("/v1/sandbox/faucet", json!([2000])).bearer(&user.token),
            "whole-5",
        ))
        .await;
    assert_eq!(array.status, StatusCode::BAD_REQUEST, "{array:?}");
    let wallet = app.call(get("/v1/wallet").bearer(&user.token)).await;
    assert_eq!(
        wallet.body["balance"], 3000,
        "the refused ones moved nothing"
    );
}

async fn a_step_up_answer_of_the_wrong_shape_is_refused_even_when_unneeded<S: LedgerStore>(
    app: TestApp<S>,
) {
    let user = app.user("shape@example.com").await;
    for step_up in [
        json!({ "id": "x", "code": "123456", "passkey": {} }),
        json!({ "id": "x" }),
        json!({ "id": "x", "passkey": "not an object" }),
        json!({ "id": "x", "code": "123456", "other": 1 }),
    ] {
        let reply = app
            .call(
                post(
                    "/v1/payment-codes",
                    json!({ "limit": 1000, "step_up": step_up }),
                )
                .bearer(&user.token),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{step_up}: {reply:?}"
        );
    }
    let codes = app.call(get("/v1/payment-codes").bearer(&user.token)).await;
    assert_eq!(codes.body.as_array().map(Vec::len), Some(0), "{codes:?}");
}

async fn a_malformed_address_is_refused_where_existence_is_not_told<S: LedgerStore>(
    app: TestApp<S>,
) {
    for path in ["/v1/password/forgot", "/v1/recovery-requests"] {
        let bad = app
            .call(post(path, json!({ "email": "not an address" })))
            .await;
        assert_eq!(
            bad.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {bad:?}"
        );
        let unknown = app
            .call(post(path, json!({ "email": "nobody@example.com" })))
            .await;
        assert_eq!(unknown.status, StatusCode::ACCEPTED, "{path}: {unknown:?}");
    }
}
