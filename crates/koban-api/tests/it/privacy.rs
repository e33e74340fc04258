//! Personal data at rest: sealed in every column that holds it, found by blind indexes, shown
//! in full only to its owner; data an older version wrote in clear is sealed once.

use axum::http::StatusCode;
use koban_shared::ids::UserId;
use koban_shared::personal::{self, Index};
use koban_store::LedgerStore;
use koban_store::sql::{SqlDb, SqlTx};
use serde_json::json;

use crate::helpers::{TestApp, User, get, post};
use crate::operators::operator;
use crate::payments::idem;
use crate::stories;

const EMAIL: &str = "hanako.yamada@example.jp";
const PHONE: &str = "+819012345678";
const DISPLAY_NAME: &str = "Hanako Y";
const SIGNUP_LEGAL_NAME: &str = "山田花子";
const DATE_OF_BIRTH: &str = "1990-04-01";
/// The name the identity check and the bank account carry.
const VERIFIED_NAME: &str = "Yamada Hanako";

/// Every value of the story that is personal data, as it would appear in clear.
const PERSONAL: [&str; 6] = [
    EMAIL,
    PHONE,
    DISPLAY_NAME,
    SIGNUP_LEGAL_NAME,
    DATE_OF_BIRTH,
    VERIFIED_NAME,
];

/// Where a personal value is found in clear in the database: on SQLite, a search of the
/// database file and its write-ahead log as bytes (as the card tests do for card numbers); on
/// PostgreSQL, every text and bytea column of every table of the app's schema.
async fn found_in_clear<S: LedgerStore>(app: &TestApp<S>, value: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(file) = app.database_file() {
        for path in [file.clone(), file.with_extension("db-wal")] {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes
                .windows(value.len())
                .any(|window| window == value.as_bytes())
            {
                found.push(path.display().to_string());
            }
        }
        return found;
    }
    let db = app.pay.db();
    let columns = db
        .read(
            "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND data_type IN ('text', 'bytea', 'jsonb')",
            vec![],
        )
        .await
        .unwrap();
    for column in columns {
        let (table, name, kind) = (
            column.text(0).unwrap(),
            column.text(1).unwrap(),
            column.text(2).unwrap(),
        );
        let as_text = match kind.as_str() {
            "bytea" => format!("encode({name}, 'escape')"),
            _ => format!("{name}::text"),
        };
        // A test's own query, built from the catalogue: leaked once per column.
        let sql: &'static str = Box::leak(
            format!("SELECT COUNT(*) FROM {table} WHERE strpos({as_text}, $1) > 0")
                .into_boxed_str(),
        );
        let count = db.read(sql, vec![value.into()]).await.unwrap()[0]
            .i64(0)
            .unwrap();
        if count > 0 {
            found.push(format!("{table}.{name}"));
        }
    }
    found
}

async fn personal_data_is_sealed_at_rest_and_shown_in_full_to_its_owner<S: LedgerStore>(
    app: TestApp<S>,
) {
    let admin = operator(&app, "admin@example.com", "admin").await;
    let password = "lantern pebble orchard quay";
    let signed_up = app
        .call(post(
            "/v1/signup",
            json!({
                "kind": "customer", "email": EMAIL, "password": password,
                "display_name": DISPLAY_NAME, "legal_name": SIGNUP_LEGAL_NAME,
                "phone": PHONE, "date_of_birth": DATE_OF_BIRTH,
            }),
        ))
        .await;
    assert_eq!(signed_up.status, StatusCode::ACCEPTED, "{signed_up:?}");
    let code = app.latest_code(EMAIL).await;
    let verified = app
        .call(post(
            "/v1/signup/verify",
            json!({ "email": EMAIL, "code": code }),
        ))
        .await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT, "{verified:?}");
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": "  Hanako.Yamada@Example.JP ", "password": password }),
        ))
        .await;
    assert_eq!(
        login.status,
        StatusCode::OK,
        "signs in by its address: {login:?}"
    );
    let (seed, token, recovery_codes) = app.enrol_totp(&login.token()).await;
    let hanako = User {
        email: EMAIL.into(),
        password: password.into(),
        seed,
        token,
        recovery_codes,
    };
    // Identity checked under her name, a bank account in that name linked, notices sent.
    app.verified(&hanako, &admin, VERIFIED_NAME).await;
    let token = app.login(&hanako).await;
    let hanako = User { token, ..hanako };
    let (_source, token) = app
        .link(&hanako, &hanako.token, VERIFIED_NAME, "normal")
        .await;
    assert!(!app.mail(EMAIL).await.is_empty());

    // She sees all of it.
    let me = app.call(get("/v1/me").bearer(&token)).await;
    assert_eq!(me.status, StatusCode::OK, "{me:?}");
    assert_eq!(
        (
            me.body["email"].as_str(),
            me.body["phone"].as_str(),
            me.body["display_name"].as_str(),
            me.body["date_of_birth"].as_str()
        ),
        (
            Some(EMAIL),
            Some(PHONE),
            Some(DISPLAY_NAME),
            Some(DATE_OF_BIRTH)
        ),
        "{me:?}"
    );
    assert_eq!(me.body["legal_name"], VERIFIED_NAME, "{me:?}");
    // Another customer finds her by phone and by address (the blind indexes), and sees a
    // masked name only.
    let bob = app.user("bob@example.com").await;
    for to in [PHONE, EMAIL] {
        let found = app
            .call(
                get(&format!("/v1/payees/lookup?to={}", to.replace('+', "%2B"))).bearer(&bob.token),
            )
            .await;
        assert_eq!(found.status, StatusCode::OK, "{to}: {found:?}");
        let shown = found.body.to_string();
        assert!(
            PERSONAL.iter().all(|value| !shown.contains(value)),
            "{shown}"
        );
    }

    // None of it is in the database in clear.
    for value in PERSONAL {
        assert_eq!(
            found_in_clear(&app, value).await,
            Vec::<String>::new(),
            "{value} is stored in clear"
        );
    }
    // The search would find a value that is there: the account's id, stored in clear.
    let id = app.auth.authenticate(&token).await.unwrap().user_id;
    assert!(!found_in_clear(&app, id.as_str()).await.is_empty());
}

async fn personal_data_an_older_version_wrote_in_clear_is_sealed_once<S: LedgerStore>(
    app: TestApp<S>,
) {
    // A customer, her identity check and a notice to her, as written before sealing.
    let db = app.pay.db();
    let mut tx = db.begin().await.unwrap();
    for (sql, values) in [
        (
            "INSERT INTO users (id, kind, email, email_verified_at, phone, display_name, status, created_at) \
             VALUES ('u-old', 'customer', 'old@example.jp', 1, '+819011112222', 'Old Timer', 'active', 0)",
            vec![],
        ),
        (
            "INSERT INTO kyc (user_id, legal_name, status, submitted_at) VALUES ('u-old', 'Timer Old', 'approved', 0)",
            vec![],
        ),
        (
            "INSERT INTO outbox (id, recipient, subject, body, created_at, attempts, next_attempt_at) \
             VALUES ('n-old', 'old@example.jp', 'Welcome back', 'Hello, Old Timer', 0, 0, 0)",
            vec![],
        ),
        ("DELETE FROM personal_sealing", vec![]),
    ] {
        tx.execute(sql, values).await.unwrap();
    }
    tx.commit().await.unwrap();
    let vault = app.auth.vault();
    let now = app.auth.now_ms();
    let sealed = personal::seal_clear_columns(db, vault, now).await.unwrap();
    assert_eq!(
        sealed, 7,
        "e-mail, phone, name, legal name, and the notice's three"
    );
    assert_eq!(
        personal::seal_clear_columns(db, vault, now).await.unwrap(),
        0,
        "once"
    );

    let stored = db
        .read(
            "SELECT email, phone, display_name, email_index, phone_index FROM users WHERE id = 'u-old'",
            vec![],
        )
        .await
        .unwrap();
    let stored = &stored[0];
    for column in 0..3 {
        assert!(stored.text(column).unwrap().starts_with("pd1."));
    }
    assert_eq!(
        stored.bytes(3).unwrap(),
        vault.index(Index::Email, "old@example.jp")
    );
    assert_eq!(
        stored.bytes(4).unwrap(),
        vault.index(Index::Phone, "+819011112222")
    );
    // The account reads as before, and its notice is delivered to its address.
    let holder = app
        .pay
        .holder(&UserId::from_stored("u-old".into()))
        .await
        .unwrap();
    assert_eq!(
        (
            holder.email.as_str(),
            holder.display_name.as_str(),
            holder.verified_name.as_deref()
        ),
        ("old@example.jp", "Old Timer", Some("Timer Old"))
    );
    assert_eq!(
        app.mail("old@example.jp").await,
        vec![("Welcome back".to_owned(), "Hello, Old Timer".to_owned())]
    );
}

/// A rotated key seals only once active; re-sealing moves every value under it, and
/// everything still reads.
async fn a_rotated_personal_data_key_takes_over_and_old_values_are_resealed<S: LedgerStore>(
    app: TestApp<S>,
) {
    let alice = app.user("alice@example.com").await;
    let vault = app.auth.vault();
    let first = vault.active_key_id();
    let (second, active_from) = vault
        .rotate(app.pay.db(), app.auth.now_ms(), 60_000)
        .await
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(vault.active_key_id(), first, "not before it is active");
    app.clock.advance_secs(61);
    assert!(app.auth.now_ms() >= active_from);
    app.auth.refresh_personal_keys().await.unwrap();
    assert_eq!(vault.active_key_id(), second);
    let resealed = personal::reseal(app.pay.db(), vault).await.unwrap();
    assert!(resealed >= 3, "{resealed}");
    assert_eq!(personal::reseal(app.pay.db(), vault).await.unwrap(), 0);
    let emails = app
        .pay
        .db()
        .read("SELECT email FROM users", vec![])
        .await
        .unwrap();
    for row in emails {
        assert!(
            row.text(0).unwrap().starts_with(&format!("pd1.{second}.")),
            "sealed under the new key"
        );
    }
    // She signs in, and her mail still arrives, after the rotation.
    let token = app.login(&alice).await;
    let me = app.call(get("/v1/me").bearer(&token)).await;
    assert_eq!(me.body["email"], "alice@example.com", "{me:?}");
}

/// A merchant's API key (payments and webhooks) and a receiver of its webhooks.
async fn shop<S: LedgerStore>(
    app: &TestApp<S>,
    email: &str,
) -> (String, crate::payments::Receiver) {
    let shop = app.user_of("merchant", email).await;
    let key = app
        .with_step_up(
            &shop,
            &shop.token,
            "/v1/merchant/api-keys",
            json!({ "name": "till", "environment": "test",
                    "scopes": ["payments:write", "payments:read", "refunds:write", "webhooks:manage"] }),
        )
        .await;
    let api_key = key.body["key"].as_str().unwrap().to_owned();
    let hooks = crate::payments::receiver().await;
    let created = app
        .call(
            post(
                "/v1/merchant/webhooks",
                json!({ "url": hooks.url, "event_types": ["payment.succeeded", "refund.succeeded"] }),
            )
            .bearer(&api_key),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    (api_key, hooks)
}

/// A customer pays a merchant's QR request of `amount`; the answer's body.
async fn pays<S: LedgerStore>(
    app: &TestApp<S>,
    api_key: &str,
    token: &str,
    amount: i64,
    key: &str,
) -> serde_json::Value {
    let request = app
        .call(idem(
            post(
                "/v1/merchant/payment-requests",
                json!({ "amount": amount, "reference": key }),
            )
            .bearer(api_key),
            key,
        ))
        .await;
    let payload = request.body["qr_payload"].as_str().unwrap().to_owned();
    let paid = app
        .call(idem(
            post("/v1/qr/pay", json!({ "payload": payload })).bearer(token),
            key,
        ))
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    paid.body
}

async fn a_merchant_knows_each_payer_by_a_pseudonym_of_its_own<S: LedgerStore>(app: TestApp<S>) {
    let (first_shop, first_hooks) = shop(&app, "first-shop@example.com").await;
    let (second_shop, _) = shop(&app, "second-shop@example.com").await;
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    app.fund(&alice.token, 20_000, "f1").await;
    app.fund(&bob.token, 20_000, "f1").await;

    let alice_once = pays(&app, &first_shop, &alice.token, 300, "a1").await;
    let alice_again = pays(&app, &first_shop, &alice.token, 400, "a2").await;
    let bob_once = pays(&app, &first_shop, &bob.token, 500, "b1").await;
    let alice_elsewhere = pays(&app, &second_shop, &alice.token, 600, "a3").await;
    let customer = |paid: &serde_json::Value| paid["customer"].as_str().unwrap().to_owned();
    let alice_here = customer(&alice_once);
    assert!(
        alice_here.len() == 28
            && alice_here.starts_with("cus_")
            && alice_here[4..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{alice_here}"
    );
    assert_eq!(customer(&alice_again), alice_here, "stable at one merchant");
    assert_ne!(customer(&bob_once), alice_here, "one per customer");
    assert_ne!(
        customer(&alice_elsewhere),
        alice_here,
        "unrelated across merchants"
    );

    // A refund names the same pseudonym, and the webhooks carry it and nothing personal.
    let payment = alice_once["id"].as_str().unwrap();
    let refunded = app
        .call(idem(
            post(
                &format!("/v1/merchant/payments/{payment}/refunds"),
                json!({ "amount": 100 }),
            )
            .bearer(&first_shop),
            "rf1",
        ))
        .await;
    assert_eq!(refunded.status, StatusCode::CREATED, "{refunded:?}");
    app.pay.tick().await.unwrap();
    let seen: Vec<serde_json::Value> = first_hooks
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| serde_json::from_str(body).unwrap())
        .collect();
    let customers: Vec<(&str, &str)> = seen
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap(),
                event["data"]["customer"].as_str().unwrap(),
            )
        })
        .collect();
    let bob_here = customer(&bob_once);
    assert_eq!(customers.len(), 4, "{seen:?}");
    for expected in [
        ("payment.succeeded", alice_here.as_str()),
        ("payment.succeeded", bob_here.as_str()),
        ("refund.succeeded", alice_here.as_str()),
    ] {
        assert!(
            customers.contains(&expected),
            "{expected:?} in {customers:?}"
        );
    }
    let everything = format!("{seen:?} {alice_once} {bob_once}");
    // (Every account of the story is named "Test Person", the merchants too: the addresses
    // are what tells the payers apart.)
    for personal in ["alice@example.com", "bob@example.com"] {
        assert!(
            !everything.contains(personal),
            "{personal} reached the merchant"
        );
    }
}

stories!(
    a_merchant_knows_each_payer_by_a_pseudonym_of_its_own,
    personal_data_is_sealed_at_rest_and_shown_in_full_to_its_owner,
    personal_data_an_older_version_wrote_in_clear_is_sealed_once,
    a_rotated_personal_data_key_takes_over_and_old_values_are_resealed,
);
