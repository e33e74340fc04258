//! Offline payments through the API: a purse loaded with step-up, a terminal certified, a
//! payment made with no server involved (the protocol crate plays the phone and the till),
//! then settled from both sides; a cloned phone found at settlement; the purse closing.

use std::sync::Arc;

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use koban_offline::{
    IssuerKeys, Purse, PurseCertificate, SigningKey, Terminal, TerminalCertificate,
};
use koban_store::LedgerStore;
use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use serde_json::{Value, json};

use crate::helpers::{TestApp, get, post};
use crate::payments::idem;
use crate::stories;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn issuer_keys(body: &Value) -> IssuerKeys {
    IssuerKeys::new(body["issuer_keys"].as_array().unwrap().iter().map(|k| {
        let key: [u8; 65] = URL_SAFE_NO_PAD
            .decode(k["public_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        (u8::try_from(k["number"].as_u64().unwrap()).unwrap(), key)
    }))
}

/// The bytes of a base64url field of a reply.
fn bytes_of(body: &Value, field: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(body[field].as_str().unwrap())
        .unwrap()
}

/// Certifies a new till key for a merchant: the till, its key, and the reply.
async fn till<S: LedgerStore>(app: &TestApp<S>, token: &str) -> (Terminal, Value) {
    let key = Arc::new(SigningKey::generate());
    let reply = app
        .call(
            post(
                "/v1/offline/terminals",
                json!({ "terminal_key": b64(&key.public()) }),
            )
            .bearer(token),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let cert = TerminalCertificate::decode(&bytes_of(&reply.body, "certificate")).unwrap();
    let now = u32::try_from(app.now_s()).unwrap();
    let till = Terminal::new(cert, key, issuer_keys(&reply.body), 24 * 3600, [], now);
    (till, reply.body)
}

/// What the wallet holds, in yen.
async fn balance<S: LedgerStore>(app: &TestApp<S>, token: &str) -> i64 {
    app.wallet(token).await["balance"].as_i64().unwrap()
}

async fn upload<S: LedgerStore>(app: &TestApp<S>, token: &str, vouchers: &[String]) -> Value {
    let reply = app
        .call(post("/v1/offline/vouchers", json!({ "vouchers": vouchers })).bearer(token))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.body["results"].clone()
}

async fn a_customer_pays_a_terminal_offline_and_the_merchant_is_paid_once<S: LedgerStore>(
    app: TestApp<S>,
) {
    let hana = app.user("hana@example.com").await;
    app.fund(&hana.token, 30_000, "fund").await;
    let shop = app.user_of("merchant", "kissa@example.com").await;

    // The phone's key; loading a purse always asks for step-up, and the amount is capped.
    let device = Arc::new(SigningKey::generate());
    let too_much = app
        .call(idem(
            post(
                "/v1/offline/purses",
                json!({ "amount": 20_001, "device_key": b64(&device.public()) }),
            )
            .bearer(&hana.token),
            "purse-0",
        ))
        .await;
    assert_eq!(
        too_much.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{too_much:?}"
    );
    let bad_key = app
        .call(idem(
            post(
                "/v1/offline/purses",
                json!({ "amount": 5_000, "device_key": "AAAA" }),
            )
            .bearer(&hana.token),
            "purse-0",
        ))
        .await;
    assert_eq!(
        bad_key.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{bad_key:?}"
    );
    assert_eq!(balance(&app, &hana.token).await, 30_000, "nothing moved");
    let body = json!({ "amount": 10_000, "device_key": b64(&device.public()) });
    let (loaded, token) = app
        .stepped(
            &hana,
            &hana.token,
            "/v1/offline/purses",
            "purse-1",
            body.clone(),
        )
        .await;
    assert_eq!(loaded.status, StatusCode::CREATED, "{loaded:?}");
    assert_eq!(loaded.body["status"], "open");
    assert_eq!(balance(&app, &token).await, 20_000);
    app.assert_money_invariants().await;
    // The same key again: the same purse, nothing moves twice.
    let again = app
        .call(idem(
            post("/v1/offline/purses", body.clone()).bearer(&token),
            "purse-1",
        ))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{again:?}");
    assert_eq!(again.body["id"], loaded.body["id"]);
    assert_eq!(balance(&app, &token).await, 20_000);
    // A first attempt that stopped after writing its row (a crash before it said so): the
    // same request finishes it, and the ledger moves nothing twice.
    let mut tx = app.pay.db().begin().await.unwrap();
    tx.execute("UPDATE offline_purses SET status = 'loading'", params![])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let finished = app
        .call(idem(
            post("/v1/offline/purses", body.clone()).bearer(&token),
            "purse-1",
        ))
        .await;
    assert_eq!(finished.status, StatusCode::CREATED, "{finished:?}");
    assert_eq!(finished.body["status"], "open");
    assert_eq!(finished.body["certificate"], loaded.body["certificate"]);
    assert_eq!(balance(&app, &token).await, 20_000);
    app.assert_money_invariants().await;
    // One purse at a time.
    let second = app
        .call(idem(
            post(
                "/v1/offline/purses",
                json!({ "amount": 1_000, "device_key": b64(&device.public()) }),
            )
            .bearer(&token),
            "purse-2",
        ))
        .await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{second:?}");

    let keys = issuer_keys(&loaded.body);
    let certificate = PurseCertificate::decode(&bytes_of(&loaded.body, "certificate")).unwrap();
    assert_eq!(certificate.limit, 10_000);
    assert_eq!(certificate.device_key, device.public());
    let mut phone = Purse::new(certificate, device.clone());

    // The shop's terminal key, certified under the shop's name; a customer cannot.
    let (mut till, registered) = till(&app, &shop.token).await;
    let till_key = SigningKey::generate();
    let customer_terminal = app
        .call(
            post(
                "/v1/offline/terminals",
                json!({ "terminal_key": b64(&till_key.public()) }),
            )
            .bearer(&token),
        )
        .await;
    assert_eq!(customer_terminal.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(registered["name"], till.certificate.name.as_str());
    let now = u32::try_from(app.now_s()).unwrap();

    // Offline: the till asks for 1,200 yen, the phone pays, the till keeps the voucher.
    let challenge = till.challenge(1_200, [7; 12], now);
    let voucher = phone.pay(&challenge, &keys, now).unwrap();
    till.accept(&challenge, &voucher, now).unwrap();
    let text = voucher.to_text();

    // Online again, the phone first: its copy is checked, not paid.
    let shop_before = balance(&app, &shop.token).await;
    let reported = upload(&app, &token, std::slice::from_ref(&text)).await;
    assert_eq!(reported[0]["status"], "reported", "{reported}");
    assert_eq!(reported[0]["reason"], Value::Null);
    assert_eq!(balance(&app, &shop.token).await, shop_before);
    // The till's upload is paid (less the shop's fee), once however often it is sent.
    let paid = upload(&app, &shop.token, std::slice::from_ref(&text)).await;
    assert_eq!(paid[0]["status"], "paid", "{paid}");
    assert_eq!(paid[0]["amount"], 1_200);
    let shop_after = balance(&app, &shop.token).await;
    assert!(shop_after > shop_before && shop_after <= shop_before + 1_200);
    let again = upload(&app, &shop.token, std::slice::from_ref(&text)).await;
    assert_eq!(again[0]["status"], "paid");
    assert_eq!(again[0]["repeated"], true);
    assert_eq!(balance(&app, &shop.token).await, shop_after);
    // Someone else's voucher, and garbage, are refused and change nothing.
    let stranger = app.user_of("merchant", "other@example.com").await;
    let refused = upload(&app, &stranger.token, &[text.clone(), "KOV1:NOPE".into()]).await;
    assert_eq!(refused[0]["status"], "refused");
    assert_eq!(refused[0]["reason"], "not_yours");
    assert_eq!(refused[1]["reason"], "malformed");
    let purses = app.call(get("/v1/offline/purses").bearer(&token)).await;
    assert_eq!(purses.body[0]["settled"], 1_200, "{purses:?}");
    assert_eq!(purses.body[0]["reserve_left"], 8_800);
    app.assert_money_invariants().await;

    // After the certificate's end and the settlement window, the rest goes back.
    let returns_at = loaded.body["returns_at"].as_u64().unwrap();
    app.clock.advance_secs(returns_at - app.now_s() + 1);
    assert_eq!(app.pay.close_due_purses().await.unwrap(), 1);
    assert_eq!(app.pay.close_due_purses().await.unwrap(), 0);
    // Six days on, both sign in again.
    let token = app.login(&hana).await;
    let shop_token = app.login(&shop).await;
    assert_eq!(balance(&app, &token).await, 20_000 + 8_800);
    let purses = app.call(get("/v1/offline/purses").bearer(&token)).await;
    assert_eq!(purses.body[0]["status"], "closed");
    // A voucher arriving now is not paid.
    let challenge = till.challenge(100, [8; 12], now);
    let late = phone.pay(&challenge, &keys, now).unwrap().to_text();
    let refused = upload(&app, &shop_token, &[late]).await;
    assert_eq!(refused[0]["status"], "unpaid");
    assert_eq!(refused[0]["reason"], "late");
    app.assert_money_invariants().await;
}

async fn a_cloned_phone_is_found_at_settlement_and_costs_at_most_the_guarantee<S: LedgerStore>(
    app: TestApp<S>,
) {
    let hana = app.user("hana@example.com").await;
    app.fund(&hana.token, 30_000, "fund").await;
    let device = Arc::new(SigningKey::generate());
    let (loaded, token) = app
        .stepped(
            &hana,
            &hana.token,
            "/v1/offline/purses",
            "purse-1",
            json!({ "amount": 10_000, "device_key": b64(&device.public()) }),
        )
        .await;
    assert_eq!(loaded.status, StatusCode::CREATED, "{loaded:?}");
    let keys = issuer_keys(&loaded.body);
    let certificate = PurseCertificate::decode(&bytes_of(&loaded.body, "certificate")).unwrap();
    let mut shops = Vec::new();
    for (i, email) in ["a@example.com", "b@example.com", "c@example.com"]
        .iter()
        .enumerate()
    {
        let shop = app.user_of("merchant", email).await;
        let (till, _) = till(&app, &shop.token).await;
        shops.push((shop, till, i));
    }
    // Three copies of the phone, each spending 9,000 yen at another shop, offline.
    let now = u32::try_from(app.now_s()).unwrap();
    let mut texts = Vec::new();
    for (_, till, i) in &mut shops {
        let mut copy = Purse::new(certificate.clone(), device.clone());
        let challenge = till.challenge(9_000, [*i as u8; 12], now);
        let voucher = copy.pay(&challenge, &keys, now).unwrap();
        till.accept(&challenge, &voucher, now).unwrap();
        texts.push(voucher.to_text());
    }
    let first = upload(&app, &shops[0].0.token, &texts[..1]).await;
    assert_eq!(first[0]["status"], "paid", "{first}");
    // The second shop's upload shows the same counter twice: paid (reserve then guarantee),
    // and the purse is revoked, with an alert for operators.
    let second = upload(&app, &shops[1].0.token, &texts[1..2]).await;
    assert_eq!(second[0]["status"], "paid", "{second}");
    let purse_id = loaded.body["id"].as_str().unwrap();
    let revoked = app
        .call(get("/v1/offline/revocations").bearer(&shops[2].0.token))
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    assert_eq!(revoked.body["purses"], json!([purse_id]));
    let customer_list = app
        .call(get("/v1/offline/revocations").bearer(&token))
        .await;
    assert_eq!(customer_list.status, StatusCode::FORBIDDEN);
    let mut tx = app.pay.db().begin_read().await.unwrap();
    let alerts = tx
        .query_one(
            "SELECT COUNT(*) FROM risk_alerts WHERE rule = 'offline.double_spend'",
            params![],
        )
        .await
        .unwrap()
        .i64(0)
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(alerts, 1);
    // The third: the guarantee (one limit, 10,000) has 2,000 left, not enough for 9,000.
    let third = upload(&app, &shops[2].0.token, &texts[2..]).await;
    assert_eq!(third[0]["status"], "unpaid", "{third}");
    assert_eq!(third[0]["reason"], "guarantee_exhausted");
    // The issuer lost 8,000 of its own: within the bound of one limit.
    let losses = app
        .pay
        .issuer_accounts()
        .await
        .unwrap()
        .into_iter()
        .find(|(which, _)| *which == koban_pay::IssuerAccount::FraudLosses)
        .unwrap()
        .1;
    assert_eq!(losses.balance.debits_posted, 8_000);
    app.assert_money_invariants().await;
    // The phone's own copies now add nothing new.
    let reported = upload(&app, &token, &texts).await;
    assert!(
        reported
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "reported")
    );
    // After the window the purse closes (nothing is left: it all went to merchants); a
    // customer whose purse was used twice cannot load another.
    app.clock
        .advance_secs(loaded.body["returns_at"].as_u64().unwrap() - app.now_s() + 1);
    assert_eq!(app.pay.close_due_purses().await.unwrap(), 1);
    let token = app.login(&hana).await;
    let first = app
        .call(idem(
            post(
                "/v1/offline/purses",
                json!({ "amount": 1_000, "device_key": b64(&device.public()) }),
            )
            .bearer(&token),
            "purse-2",
        ))
        .await;
    let again = if first.problem() == "step-up-required" {
        app.stepped(
            &hana,
            &token,
            "/v1/offline/purses",
            "purse-2",
            json!({ "amount": 1_000, "device_key": b64(&device.public()) }),
        )
        .await
        .0
    } else {
        first
    };
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");
    assert!(again.body["detail"].as_str().unwrap().contains("suspended"));
    app.assert_money_invariants().await;
}

stories!(
    a_customer_pays_a_terminal_offline_and_the_merchant_is_paid_once,
    a_cloned_phone_is_found_at_settlement_and_costs_at_most_the_guarantee,
);
