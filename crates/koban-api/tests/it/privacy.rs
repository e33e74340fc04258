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

/// Hanako signs up with every personal field, has her identity checked under her name and
/// links a bank account in that name; answers her and her newest session token.
async fn hanako<S: LedgerStore>(app: &TestApp<S>) -> (User, String) {
    let admin = operator(app, "admin@example.com", "admin").await;
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
    app.verified(&hanako, &admin, VERIFIED_NAME).await;
    let token = app.login(&hanako).await;
    let hanako = User { token, ..hanako };
    let (_source, token) = app
        .link(&hanako, &hanako.token, VERIFIED_NAME, "normal")
        .await;
    assert!(!app.mail(EMAIL).await.is_empty());
    (hanako, token)
}

async fn personal_data_is_sealed_at_rest_and_shown_in_full_to_its_owner<S: LedgerStore>(
    app: TestApp<S>,
) {
    let (_hanako, token) = hanako(&app).await;

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

/// The export holds every personal field and what she did, opened; nothing of another
/// customer and no secret; and it needs step-up.
async fn a_customer_exports_everything_koban_holds_about_her<S: LedgerStore>(app: TestApp<S>) {
    let (hanako, token) = hanako(&app).await;
    let bob = app.user("bob@example.com").await;
    app.fund(&token, 5_000, "f1").await;
    let (sent, token) = app
        .stepped(
            &hanako,
            &token,
            "/v1/transfers",
            "t1",
            json!({ "to": "bob@example.com", "amount": 1_234 }),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{sent:?}");
    app.pay.flush_records().await.unwrap();
    app.mail(EMAIL).await;

    let unconfirmed = app
        .call(post("/v1/me/export", json!({})).bearer(&token))
        .await;
    assert_eq!(unconfirmed.problem(), "step-up-required", "{unconfirmed:?}");
    let export = app
        .with_step_up(&hanako, &token, "/v1/me/export", json!({}))
        .await;
    assert_eq!(export.status, StatusCode::OK, "{export:?}");
    let data = &export.body["data"];
    let profile = &data["profile"][0];
    assert_eq!(
        (
            profile["email"].as_str(),
            profile["phone"].as_str(),
            profile["display_name"].as_str(),
            profile["date_of_birth"].as_str(),
            profile["legal_name"].as_str()
        ),
        (
            Some(EMAIL),
            Some(PHONE),
            Some(DISPLAY_NAME),
            Some(DATE_OF_BIRTH),
            Some(VERIFIED_NAME)
        ),
        "{profile}"
    );
    assert_eq!(data["identity_check"][0]["legal_name"], VERIFIED_NAME);
    assert_eq!(data["identity_check"][0]["status"], "approved");
    assert_eq!(data["bank_accounts"][0]["holder_name"], VERIFIED_NAME);
    for section in [
        "profile",
        "factors",
        "recovery_codes",
        "sessions",
        "notices",
        "audit",
        "wallets",
        "identity_check",
        "bank_accounts",
        "risk_decisions",
    ] {
        assert!(
            !data[section].as_array().unwrap().is_empty(),
            "{section} is in the export: {data}"
        );
    }
    for section in [
        "known_devices",
        "bank_operations",
        "recovery_requests",
        "handle",
        "pay_links",
        "top_up_cards",
        "payment_codes",
        "offline_purses",
        "held_transfers",
        "cards",
        "card_payments",
    ] {
        assert!(data[section].is_array(), "{section}: {data}");
    }
    assert!(data["sessions"][0]["network"].is_string());
    assert!(
        data["notices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["subject"] == "You sent money"),
        "{}",
        data["notices"]
    );
    let statement = &data["statements"]["JPY"];
    assert_eq!(statement["balance"], 5_000 - 1_234);
    assert!(
        statement["statement_csv"]
            .as_str()
            .unwrap()
            .lines()
            .any(|line| line.contains(",1234,")),
        "{statement}"
    );
    // Nothing of Bob beyond his wallet's id, nothing sealed, no secret.
    let text = export.body.to_string();
    for absent in [
        "bob@example.com",
        "Test Person",
        "pd1.",
        hanako.password.as_str(),
        hanako.recovery_codes[0].as_str(),
    ] {
        assert!(!text.contains(absent), "{absent} is in the export");
    }
    let _ = bob;
}

async fn personal_data_an_older_version_wrote_in_clear_is_sealed_at_start<S: LedgerStore>(
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
    ] {
        tx.execute(sql, values).await.unwrap();
    }
    tx.commit().await.unwrap();
    let vault = app.auth.vault();
    let sealed = personal::seal_clear_columns(db, vault).await.unwrap();
    assert_eq!(
        sealed, 7,
        "e-mail, phone, name, legal name, and the notice's three"
    );
    assert_eq!(
        personal::seal_clear_columns(db, vault).await.unwrap(),
        0,
        "what is sealed is left alone"
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
    let (second, active_from) = vault.rotate(app.pay.db(), 60_000).await.unwrap();
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

async fn count<S: LedgerStore>(app: &TestApp<S>, sql: &'static str) -> i64 {
    app.pay.db().read(sql, vec![]).await.unwrap()[0]
        .i64(0)
        .unwrap()
}

/// Past their windows, risk decisions are counted per month and deleted (but one an open
/// case points to), ended sessions and delivered notices are deleted, and the money is as it
/// was.
async fn data_past_its_retention_window_is_deleted_and_decisions_counted<S: LedgerStore>(
    app: TestApp<S>,
) {
    let alice = app.user("alice@example.com").await;
    app.fund(&alice.token, 5_000, "f1").await;
    // Two more sign-ins, each a decision.
    app.login(&alice).await;
    let token = app.login(&alice).await;
    let alice = User { token, ..alice };
    assert!(!app.mail("alice@example.com").await.is_empty());
    // Sign-ins are scored off the answer's path (a spawned task): wait, bounded, for the
    // last one to be queued and written.
    let mut decisions = 0;
    for _ in 0..100 {
        app.pay.flush_records().await.unwrap();
        decisions = count(&app, "SELECT COUNT(*) FROM risk_events").await;
        if decisions >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(decisions >= 3, "the sign-ins were decided: {decisions}");
    // An open case points to one of them.
    let kept = app
        .pay
        .db()
        .read("SELECT id FROM risk_events ORDER BY at LIMIT 1", vec![])
        .await
        .unwrap()[0]
        .text(0)
        .unwrap();
    let alice_id = app.auth.authenticate(&alice.token).await.unwrap().user_id;
    let now = app.auth.now_ms();
    let mut tx = app.pay.db().begin().await.unwrap();
    tx.execute(
        "INSERT INTO risk_cases (id, subject, subject_role, status, first_event_at, first_alert_at, opened_at) \
         VALUES ('case-1', 'someone', 'customer', 'open', 0, 0, 0)",
        vec![],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO risk_alerts (id, at, rule, reason, action, score, event_id, subject, case_id) \
         VALUES ('alert-1', 0, 'test', 'kept for the case', 'alert', 0, $1, 'someone', 'case-1')",
        vec![kept.as_str().into()],
    )
    .await
    .unwrap();
    // Enough old sessions that they go in several batches.
    for i in 0..1_100 {
        tx.execute(
            "INSERT INTO sessions (id, token_hash, user_id, level, network, user_agent, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, 2, '198.51.100.0/24', 'old browser', $4, $4, $4)",
            vec![
                format!("old-session-{i}").into(),
                format!("old-token-{i}").into_bytes().into(),
                alice_id.as_str().into(),
                now.into(),
            ],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let before = app.wallet(&alice.token).await["balance"].clone();

    // Within the windows nothing goes.
    app.clock.advance_secs(29 * 86_400);
    let pruned = app.pay.enforce_retention().await.unwrap();
    assert_eq!(
        (pruned.risk_events, pruned.sessions, pruned.notices),
        (0, 0, 0)
    );

    // Thirteen months later, everything does.
    app.clock.advance_secs(367 * 86_400);
    let pruned = app.pay.enforce_retention().await.unwrap();
    assert_eq!(pruned.risk_events as i64, decisions - 1);
    assert!(pruned.sessions > 1_100 && pruned.notices >= 2, "{pruned:?}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM risk_events").await, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM sessions").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM mailbox").await, 0);
    assert_eq!(
        count(
            &app,
            "SELECT CAST(SUM(events) AS BIGINT) FROM risk_event_months"
        )
        .await,
        decisions - 1,
        "every deleted decision is counted"
    );
    assert_eq!(
        app.pay.enforce_retention().await.unwrap(),
        koban_pay::retention::Pruned::default(),
        "a second run finds nothing"
    );
    // The money is untouched, and Alice signs in again.
    let token = app.login(&alice).await;
    assert_eq!(app.wallet(&token).await["balance"], before);
    app.assert_money_invariants().await;
}

/// Closing is refused, with the reason, while money is on the account; once paid out it
/// closes (sessions, sign-in and payments end); seven years later its personal data is erased
/// while the books still balance under its id and the audit chain still verifies.
async fn a_closed_account_is_erased_after_the_legal_retention_period<S: LedgerStore>(
    app: TestApp<S>,
) {
    let (hanako, token) = hanako(&app).await;
    let bob = app.user("bob@example.com").await;
    app.fund(&token, 1_000, "f1").await;
    let refused = app
        .call(post("/v1/me/close", json!({})).bearer(&token))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("pay it out"),
        "{refused:?}"
    );
    let (sent, token) = app
        .stepped(
            &hanako,
            &token,
            "/v1/transfers",
            "t1",
            json!({ "to": "bob@example.com", "amount": 1_000 }),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{sent:?}");
    let id = app.auth.authenticate(&token).await.unwrap().user_id;
    let wallet = koban_pay::wallets::account_id(
        &app.pay
            .db()
            .read(
                "SELECT account_id FROM wallets WHERE user_id = $1",
                vec![id.as_str().into()],
            )
            .await
            .unwrap()[0]
            .bytes(0)
            .unwrap(),
    )
    .unwrap();
    let closed = app
        .with_step_up(&hanako, &token, "/v1/me/close", json!({}))
        .await;
    assert_eq!(closed.status, StatusCode::NO_CONTENT, "{closed:?}");
    // Its wallet is closed in the ledger: no refund, reversal or late payment reaches it.
    assert!(app.pay.ledger_account(wallet).await.unwrap().flags.closed);
    assert!(
        app.mail(EMAIL)
            .await
            .iter()
            .any(|(subject, _)| subject == "Your Koban account is closed")
    );
    // A shop cannot close this way (its customers may still need refunds).
    let shop = app.user_of("merchant", "shop@example.com").await;
    let shop_close = app
        .call(post("/v1/me/close", json!({})).bearer(&shop.token))
        .await;
    assert_eq!(
        shop_close.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{shop_close:?}"
    );
    // Its sessions are gone, it cannot sign in, and nobody can pay it.
    let me = app.call(get("/v1/me").bearer(&token)).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{me:?}");
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": EMAIL, "password": hanako.password }),
        ))
        .await;
    assert_ne!(login.status, StatusCode::OK, "{login:?}");
    let lookup = app
        .call(get(&format!("/v1/payees/lookup?to={EMAIL}")).bearer(&bob.token))
        .await;
    assert_ne!(lookup.status, StatusCode::OK, "{lookup:?}");

    // Kept through the legal retention period, erased after it.
    app.clock.advance_secs(30 * 86_400);
    assert_eq!(
        app.pay.enforce_retention().await.unwrap().erased_accounts,
        0
    );
    app.clock.advance_secs(7 * 366 * 86_400);
    assert_eq!(
        app.pay.enforce_retention().await.unwrap().erased_accounts,
        1
    );
    let db = app.pay.db();
    let user = &db
        .read(
            "SELECT status, email, email_index, phone, phone_index, legal_name, date_of_birth, password_hash, display_name \
             FROM users WHERE id = $1",
            vec![id.as_str().into()],
        )
        .await
        .unwrap()[0];
    assert_eq!(user.text(0).unwrap(), "erased");
    let vault = app.auth.vault();
    assert_eq!(
        vault
            .open(&personal::USER_EMAIL, &user.text(1).unwrap())
            .unwrap(),
        format!("erased-{id}@erased.invalid")
    );
    assert_eq!(user.opt_bytes(2).unwrap(), None);
    for column in [3, 5, 6, 7] {
        assert_eq!(user.opt_text(column).unwrap(), None, "column {column}");
    }
    assert_eq!(user.opt_bytes(4).unwrap(), None);
    let kyc = db
        .read(
            "SELECT legal_name FROM kyc WHERE user_id = $1",
            vec![id.as_str().into()],
        )
        .await
        .unwrap();
    assert_eq!(
        vault
            .open(&personal::KYC_LEGAL_NAME, &kyc[0].text(0).unwrap())
            .unwrap(),
        ""
    );
    for (sql, left) in [
        ("SELECT COUNT(*) FROM factors WHERE user_id = $1", 0),
        ("SELECT COUNT(*) FROM sessions WHERE user_id = $1", 0),
        ("SELECT COUNT(*) FROM known_devices WHERE user_id = $1", 0),
        ("SELECT COUNT(*) FROM risk_events WHERE customer = $1", 0),
        ("SELECT COUNT(*) FROM wallets WHERE user_id = $1", 1),
    ] {
        let count = db.read(sql, vec![id.as_str().into()]).await.unwrap()[0]
            .i64(0)
            .unwrap();
        assert_eq!(count, left, "{sql}");
    }
    let holders = db
        .read(
            "SELECT holder_name FROM funding_sources WHERE user_id = $1",
            vec![id.as_str().into()],
        )
        .await
        .unwrap();
    for holder in holders {
        assert_eq!(
            vault
                .open(&personal::FUNDING_HOLDER, &holder.text(0).unwrap())
                .unwrap(),
            ""
        );
    }
    // The books balance under the account's id; Bob keeps what she paid him; the chain holds.
    app.assert_money_invariants().await;
    let token = app.login(&bob).await;
    assert_eq!(app.wallet(&token).await["balance"], 1_000);
    let report = koban_shared::audit::verify(db, app.auth.audit_key(), &[])
        .await
        .unwrap();
    assert_eq!(report.first_broken, None, "{report:?}");
    assert!(report.entries > 0);
}

/// Operators see a customer's name masked; in full only with a reason, which the audit chain
/// keeps with the operator.
async fn an_operator_sees_a_name_in_full_only_with_a_reason_on_record<S: LedgerStore>(
    app: TestApp<S>,
) {
    let support = operator(&app, "support@example.com", "support").await;
    let alice = app.user("alice@example.com").await;
    let submitted = app
        .call(post("/v1/kyc", json!({ "legal_name": VERIFIED_NAME })).bearer(&alice.token))
        .await;
    assert_eq!(submitted.status, StatusCode::ACCEPTED, "{submitted:?}");
    let queue = app.call(get("/v1/ops/kyc").bearer(&support.token)).await;
    assert_eq!(queue.status, StatusCode::OK, "{queue:?}");
    assert_eq!(
        queue.body[0]["legal_name_masked"], "Y***** H*****",
        "{queue:?}"
    );
    assert!(!queue.body.to_string().contains(VERIFIED_NAME), "{queue:?}");
    let user = queue.body[0]["user_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/ops/kyc/{user}/reveal");
    let no_reason = app
        .call(post(&path, json!({ "reason": "x" })).bearer(&support.token))
        .await;
    assert_eq!(
        no_reason.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{no_reason:?}"
    );
    let reason = "checking the passport scan against the request";
    let revealed = app
        .call(post(&path, json!({ "reason": reason })).bearer(&support.token))
        .await;
    assert_eq!(revealed.status, StatusCode::OK, "{revealed:?}");
    assert_eq!(revealed.body["legal_name"], VERIFIED_NAME);
    let recorded = app
        .pay
        .db()
        .read(
            "SELECT actor, details FROM audit_log WHERE action = 'kyc.name_revealed' AND subject = $1",
            vec![user.as_str().into()],
        )
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].text(0).unwrap().starts_with("operator:"));
    assert!(recorded[0].text(1).unwrap().contains(reason));
    // A customer cannot.
    let customer = app
        .call(post(&path, json!({ "reason": reason })).bearer(&alice.token))
        .await;
    assert_eq!(customer.status, StatusCode::FORBIDDEN, "{customer:?}");
}

stories!(
    an_operator_sees_a_name_in_full_only_with_a_reason_on_record,
    a_closed_account_is_erased_after_the_legal_retention_period,
    a_customer_exports_everything_koban_holds_about_her,
    data_past_its_retention_window_is_deleted_and_decisions_counted,
    a_merchant_knows_each_payer_by_a_pseudonym_of_its_own,
    personal_data_is_sealed_at_rest_and_shown_in_full_to_its_owner,
    personal_data_an_older_version_wrote_in_clear_is_sealed_at_start,
    a_rotated_personal_data_key_takes_over_and_old_values_are_resealed,
);
