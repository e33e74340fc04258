//! Payment stories: bank linking and top-ups, payouts, P2P with confirmation of payee and
//! step-up, review holds, both QR directions with fees, refunds, idempotency, limits, and a
//! table of malformed requests. After every story the ledger's invariants hold and e-money
//! outstanding equals the sum of customer wallets.

use axum::http::StatusCode;
use koban_store::LedgerStore;
use serde_json::{Value, json};

use crate::helpers::{Call, Reply, TestApp, User, get, post};
use crate::operators::operator;
use crate::stories;

stories!(
    bank_linked_by_micro_deposits_tops_up_and_pays_out_with_success_and_failure,
    p2p_confirms_the_payee_steps_up_for_new_payees_and_keeps_limits_and_idempotency,
    held_transfers_are_released_or_voided_by_an_analyst,
    merchant_qr_both_directions_with_fees_and_partial_refunds,
    malformed_payment_requests_get_problems_and_change_nothing,
    merchant_webhooks_are_signed_retried_rotated_and_redelivered,
    handles_and_pay_links_are_paid_once_like_any_transfer,
    card_topups_are_challenged_for_new_cards_and_devices,
    guessing_payment_codes_at_a_till_is_limited_and_raises_an_alert,
    a_payment_code_confirmed_with_step_up_can_be_charged,
    a_payment_answers_once_its_notices_and_decision_are_written_and_a_retry_restores_them,
    a_balance_changed_behind_the_ledger_shows_as_a_reconciliation_gap,
    testing_which_addresses_belong_to_customers_is_throttled_and_alerted,
);

async fn testing_which_addresses_belong_to_customers_is_throttled_and_alerted<S: LedgerStore>(
    app: TestApp<S>,
) {
    use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
    let alice = app.user("alice@example.com").await;
    app.user("bob@example.com").await;
    app.user_of("merchant", "shop@example.com").await;
    let lookup =
        |to: &str| app.call(get(&format!("/v1/payees/lookup?to={to}")).bearer(&alice.token));
    app.user("carol@example.com").await;
    // What the lookup guards last wrote: their rows, and when.
    let throttle = || async {
        let rows = app
            .auth
            .db()
            .read(
                "SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM throttle",
                vec![],
            )
            .await
            .unwrap();
        (rows[0].i64(0).unwrap(), rows[0].i64(1).unwrap())
    };
    // The first lookup of an address is counted (and, a hit, given back).
    let before = throttle().await;
    app.clock.advance_secs(1);
    assert_eq!(lookup("bob@example.com").await.status, StatusCode::OK);
    let counted = throttle().await;
    assert_ne!(counted, before, "the first lookup is counted");
    app.clock.advance_secs(1);
    // Real payees do not count: looking them up again and again is fine, and so is looking
    // them up many at once (a busy payer, or many customers behind one carrier's network),
    // which must not count as misses while in flight.
    for _ in 0..30 {
        assert_eq!(lookup("bob@example.com").await.status, StatusCode::OK);
    }
    let burst = futures_util::future::join_all((0..40).map(|_| lookup("bob@example.com"))).await;
    assert!(
        burst.iter().all(|reply| reply.status == StatusCode::OK),
        "{:?}",
        burst.iter().map(|reply| reply.status).collect::<Vec<_>>()
    );
    // An address already answered as a hit is looked up again from a read: nothing written.
    assert_eq!(throttle().await, counted);
    // A customer Alice never looked up is counted like any new address, so a burst of new
    // addresses cannot have its hits answered while its misses wait to be counted.
    app.clock.advance_secs(1);
    assert_eq!(lookup("carol@example.com").await.status, StatusCode::OK);
    assert_ne!(throttle().await, counted, "a new address is counted");
    // Nobody, and a merchant (who cannot receive transfers), answer alike.
    let nobody = lookup("nobody0@example.com").await;
    let merchant = lookup("shop@example.com").await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
    assert_eq!(merchant.status, StatusCode::NOT_FOUND);
    assert_eq!(nobody.body, merchant.body, "no way to tell them apart");
    // Twenty misses in the hour in all (these two included), then every lookup is refused.
    for n in 1..19 {
        assert_eq!(
            lookup(&format!("nobody{n}@example.com")).await.status,
            StatusCode::NOT_FOUND,
            "miss {n}"
        );
    }
    let refused = lookup("nobody99@example.com").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{refused:?}");
    assert!(refused.retry_after() > 0);
    let real = lookup("bob@example.com").await;
    assert_eq!(
        real.status,
        StatusCode::TOO_MANY_REQUESTS,
        "refused for the hour"
    );
    // A transfer to a new address is refused the same way.
    let sent = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "nobody100@example.com", "amount": 1 }),
            )
            .bearer(&alice.token),
            "sweep-t1",
        ))
        .await;
    assert_eq!(sent.status, StatusCode::TOO_MANY_REQUESTS, "{sent:?}");
    // The sweep raised one alert on Alice, for analysts.
    let mut tx = app.auth.db().begin().await.unwrap();
    let alerts = tx
        .query_one(
            "SELECT COUNT(*) FROM risk_alerts a JOIN users u ON u.id = a.subject \
             WHERE a.rule = 'payee_lookup_sweep' AND u.email_index = $1",
            vec![
                app.auth
                    .vault()
                    .index(koban_shared::personal::Index::Email, "alice@example.com")
                    .into(),
            ],
        )
        .await
        .unwrap()
        .i64(0)
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(alerts, 1);
    // An hour later (signed in again) Alice may look up again.
    app.clock.advance_secs(3601);
    let token = app.login(&alice).await;
    let again = app
        .call(get("/v1/payees/lookup?to=bob@example.com").bearer(&token))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
}

async fn a_balance_changed_behind_the_ledger_shows_as_a_reconciliation_gap<S: LedgerStore>(
    app: TestApp<S>,
) {
    use koban_store::sql::{SqlDb, SqlTx};
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    app.fund(&alice.token, 7_000, "f1").await;
    app.fund(&bob.token, 3_000, "f1").await;
    let gaps = app.pay.reconciliation_gaps().await.unwrap();
    assert_eq!(gaps, vec![(koban_ledger::Currency::Jpy, 0)]);
    // Someone with the database's password adds 500 yen to a wallet, outside the ledger.
    let mut tx = app.auth.db().begin().await.unwrap();
    tx.execute(
        "UPDATE accounts SET credits_posted = credits_posted + 500 WHERE id = \
         (SELECT w.account_id FROM wallets w JOIN users u ON u.id = w.user_id WHERE u.email_index = $1)",
        vec![
            app.auth
                .vault()
                .index(koban_shared::personal::Index::Email, "bob@example.com")
                .into(),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let gaps = app.pay.reconciliation_gaps().await.unwrap();
    assert_eq!(gaps, vec![(koban_ledger::Currency::Jpy, -500)]);
}

pub(crate) fn idem(call: Call, key: &str) -> Call {
    call.header("idempotency-key", key)
}

impl<S: LedgerStore> TestApp<S> {
    /// A money-moving POST that first answers step-up-required, repeated with a fresh TOTP
    /// code; returns the confirmed reply and the token to use from now on.
    pub(crate) async fn stepped(
        &self,
        user: &User,
        token: &str,
        path: &str,
        key: &str,
        body: Value,
    ) -> (Reply, String) {
        let first = self
            .call(idem(post(path, body.clone()).bearer(token), key))
            .await;
        assert_eq!(first.problem(), "step-up-required", "{first:?}");
        let mut confirmed = body;
        confirmed["step_up"] =
            json!({ "id": first.body["step_up"]["id"], "code": self.totp(&user.seed) });
        let reply = self
            .call(idem(post(path, confirmed).bearer(token), key))
            .await;
        self.next_step();
        let token = reply.body["session"]["token"]
            .as_str()
            .map_or(token.to_owned(), str::to_owned);
        (reply, token)
    }

    pub(crate) async fn wallet(&self, token: &str) -> Value {
        let reply = self.call(get("/v1/wallet").bearer(token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply.body
    }

    pub(crate) async fn fund(&self, token: &str, amount: i64, key: &str) {
        let reply = self
            .call(idem(
                post("/v1/sandbox/faucet", json!({ "amount": amount })).bearer(token),
                key,
            ))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    }

    /// The ledger's own audit and the e-money reconciliation both hold.
    pub(crate) async fn assert_money_invariants(&self) {
        let report = self.store.audit().await.expect("audit runs");
        assert!(report.ok(), "ledger invariants: {report:?}");
        for (currency, outstanding, wallets) in self.pay.reconcile().await.unwrap() {
            assert_eq!(
                outstanding, wallets,
                "e-money outstanding equals the wallets in {currency:?}"
            );
        }
        // The gauge's reading, in one statement, agrees.
        for (currency, gap) in self.pay.reconciliation_gaps().await.unwrap() {
            assert_eq!(gap, 0, "reconciliation gap in {currency:?}");
        }
    }

    /// Settles everything due with the sandbox bank and writes queued notifications.
    pub(crate) async fn settle(&self) {
        self.clock.advance_secs(10);
        self.pay.tick().await.expect("payments tick");
    }

    pub(crate) async fn verified(&self, user: &User, admin: &User, legal_name: &str) {
        let submitted = self
            .call(post("/v1/kyc", json!({ "legal_name": legal_name })).bearer(&user.token))
            .await;
        assert_eq!(submitted.status, StatusCode::ACCEPTED, "{submitted:?}");
        let me = self.auth.authenticate(&user.token).await.unwrap();
        // The operator names what they checked; another name is not approved.
        let other = self
            .call(
                post(
                    &format!("/v1/ops/kyc/{}/approve", me.user_id),
                    json!({ "legal_name": "Someone Else" }),
                )
                .bearer(&admin.token),
            )
            .await;
        assert_eq!(other.status, StatusCode::NOT_FOUND, "{other:?}");
        let approved = self
            .call(
                post(
                    &format!("/v1/ops/kyc/{}/approve", me.user_id),
                    json!({ "legal_name": legal_name }),
                )
                .bearer(&admin.token),
            )
            .await;
        assert_eq!(approved.status, StatusCode::NO_CONTENT, "{approved:?}");
    }

    /// Links a sandbox bank account held by `holder`; returns (source id, token now valid).
    pub(crate) async fn link(
        &self,
        user: &User,
        token: &str,
        holder: &str,
        behaviour: &str,
    ) -> (String, String) {
        let account = self
            .call(
                post(
                    "/v1/sandbox/bank/accounts",
                    json!({ "holder_name": holder, "behaviour": behaviour }),
                )
                .bearer(token),
            )
            .await;
        assert_eq!(account.status, StatusCode::CREATED, "{account:?}");
        assert_eq!(account.body["sandbox"], true);
        let number = account.body["account_number"].as_str().unwrap().to_owned();
        let (started, token) = self
            .stepped(
                user,
                token,
                "/v1/funding-sources/bank",
                "unused",
                json!({ "bank": "sandbox", "account_number": number }),
            )
            .await;
        assert_eq!(started.status, StatusCode::CREATED, "{started:?}");
        assert_eq!(started.body["status"], "pending");
        let id = started.body["id"].as_str().unwrap().to_owned();
        let statement = self
            .call(get(&format!("/v1/sandbox/bank/accounts/{number}/statement")).bearer(&token))
            .await;
        let amounts: Vec<i64> = statement
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["amount"].as_i64().unwrap())
            .collect();
        assert_eq!(amounts.len(), 2, "two micro-deposits: {statement:?}");
        assert!(amounts.iter().all(|a| (1..100).contains(a)));
        let confirmed = self
            .call(
                post(
                    &format!("/v1/funding-sources/{id}/confirm"),
                    json!({ "amounts": [amounts[1], amounts[0]] }),
                )
                .bearer(&token),
            )
            .await;
        assert_eq!(confirmed.status, StatusCode::OK, "{confirmed:?}");
        assert_eq!(confirmed.body["status"], "verified");
        (id, token)
    }
}

async fn bank_linked_by_micro_deposits_tops_up_and_pays_out_with_success_and_failure<
    S: LedgerStore,
>(
    app: TestApp<S>,
) {
    let admin = operator(&app, "admin@example.com", "admin").await;
    let alice = app.user("alice@example.com").await;
    let token = alice.token.clone();

    // Linking needs a verified identity first, and the holder's name must match it.
    let early = app
        .call(
            post(
                "/v1/funding-sources/bank",
                json!({ "bank": "sandbox", "account_number": "1234567" }),
            )
            .bearer(&token),
        )
        .await;
    assert_eq!(early.status, StatusCode::UNPROCESSABLE_ENTITY, "{early:?}");
    app.verified(&alice, &admin, "Alice Example").await;
    let someone_else = app
        .call(
            post(
                "/v1/sandbox/bank/accounts",
                json!({ "holder_name": "Mallory Other" }),
            )
            .bearer(&token),
        )
        .await;
    let number = someone_else.body["account_number"].as_str().unwrap();
    let mismatch = app
        .call(
            post(
                "/v1/funding-sources/bank",
                json!({ "bank": "sandbox", "account_number": number }),
            )
            .bearer(&token),
        )
        .await;
    assert_eq!(
        mismatch.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{mismatch:?}"
    );
    assert!(
        mismatch.body["detail"]
            .as_str()
            .unwrap()
            .contains("name does not match")
    );

    // Wrong micro-deposit amounts count down the tries.
    let account = app
        .call(
            post(
                "/v1/sandbox/bank/accounts",
                json!({ "holder_name": "alice  EXAMPLE" }),
            )
            .bearer(&token),
        )
        .await;
    let number = account.body["account_number"].as_str().unwrap().to_owned();
    let (started, token) = app
        .stepped(
            &alice,
            &token,
            "/v1/funding-sources/bank",
            "x",
            json!({ "bank": "sandbox", "account_number": number }),
        )
        .await;
    let pending_id = started.body["id"].as_str().unwrap().to_owned();
    let wrong = app
        .call(
            post(
                &format!("/v1/funding-sources/{pending_id}/confirm"),
                json!({ "amounts": [0, 100] }),
            )
            .bearer(&token),
        )
        .await;
    assert_eq!(
        wrong.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "out of range: {wrong:?}"
    );
    let statement = app
        .call(get(&format!("/v1/sandbox/bank/accounts/{number}/statement")).bearer(&token))
        .await;
    let right: Vec<i64> = statement
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_i64().unwrap())
        .collect();
    // Another customer's bank account, and one that does not exist, are not found: the
    // micro-deposits never show to anyone but the holder.
    let mallory = app.user("mallory@example.com").await;
    for who in [&mallory.token, &token] {
        let number = if who == &token {
            "9999999"
        } else {
            number.as_str()
        };
        let foreign = app
            .call(get(&format!("/v1/sandbox/bank/accounts/{number}/statement")).bearer(who))
            .await;
        assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{foreign:?}");
        assert_eq!(
            foreign.body["type"],
            "https://koban.example/problems/not-found"
        );
    }
    let guess = [(right[0] % 99) + 1, (right[1] % 99) + 1];
    let wrong = app
        .call(
            post(
                &format!("/v1/funding-sources/{pending_id}/confirm"),
                json!({ "amounts": guess }),
            )
            .bearer(&token),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY, "{wrong:?}");
    let sources = app.call(get("/v1/funding-sources").bearer(&token)).await;
    assert_eq!(sources.body[0]["attempts_left"], 2);
    assert_eq!(
        sources.body[0]["masked_number"],
        format!("****{}", &number[4..])
    );
    let confirmed = app
        .call(
            post(
                &format!("/v1/funding-sources/{pending_id}/confirm"),
                json!({ "amounts": right }),
            )
            .bearer(&token),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{confirmed:?}");
    let source = pending_id;

    // A top-up is pending until the bank settles.
    let topup = app
        .call(idem(
            post(
                "/v1/topups",
                json!({ "source_id": source, "amount": 5_000 }),
            )
            .bearer(&token),
            "t1",
        ))
        .await;
    assert_eq!(topup.status, StatusCode::ACCEPTED, "{topup:?}");
    assert_eq!(topup.body["status"], "pending");
    let wallet = app.wallet(&token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["pending_in"].as_i64()),
        (Some(0), Some(5_000))
    );
    let replay = app
        .call(idem(
            post(
                "/v1/topups",
                json!({ "source_id": source, "amount": 5_000 }),
            )
            .bearer(&token),
            "t1",
        ))
        .await;
    assert_eq!(replay.status, StatusCode::ACCEPTED);
    assert_eq!(
        (replay.body["replayed"].as_bool(), &replay.body["id"]),
        (Some(true), &topup.body["id"])
    );
    let other_body = app
        .call(idem(
            post(
                "/v1/topups",
                json!({ "source_id": source, "amount": 4_000 }),
            )
            .bearer(&token),
            "t1",
        ))
        .await;
    assert_eq!(
        other_body.problem(),
        "idempotency-key-reused",
        "{other_body:?}"
    );
    app.settle().await;
    let wallet = app.wallet(&token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["pending_in"].as_i64()),
        (Some(5_000), Some(0))
    );
    assert!(
        app.mail("alice@example.com")
            .await
            .iter()
            .any(|(s, _)| s == "Top-up received")
    );

    // A new source tops up at most 10,000 a day for 72 hours.
    let capped = app
        .call(idem(
            post(
                "/v1/topups",
                json!({ "source_id": source, "amount": 6_000 }),
            )
            .bearer(&token),
            "t2",
        ))
        .await;
    assert_eq!(
        (capped.problem(), capped.body["code"].as_str()),
        ("limit-exceeded", Some("new_source_limit")),
        "{capped:?}"
    );

    // A payout needs step-up and settles.
    let (payout, token) = app
        .stepped(
            &alice,
            &token,
            "/v1/payouts",
            "p1",
            json!({ "source_id": source, "amount": 1_000 }),
        )
        .await;
    assert_eq!(payout.status, StatusCode::ACCEPTED, "{payout:?}");
    assert_eq!(app.wallet(&token).await["available"], 4_000);
    app.settle().await;
    assert_eq!(app.wallet(&token).await["balance"], 4_000);

    // A payout to an account whose bank refuses it comes back.
    let (failing, token) = app
        .link(&alice, &token, "Alice Example", "fails_settlement")
        .await;
    let (payout, token) = app
        .stepped(
            &alice,
            &token,
            "/v1/payouts",
            "p2",
            json!({ "source_id": failing, "amount": 500 }),
        )
        .await;
    assert_eq!(payout.status, StatusCode::ACCEPTED, "{payout:?}");
    let wallet = app.wallet(&token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["available"].as_i64()),
        (Some(4_000), Some(3_500))
    );
    app.settle().await;
    let wallet = app.wallet(&token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["available"].as_i64()),
        (Some(4_000), Some(4_000))
    );
    let operations = app.call(get("/v1/bank-operations").bearer(&token)).await;
    let statuses: Vec<&str> = operations
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "settled", "settled"]);

    let issuer = app
        .call(get("/v1/ops/issuer-accounts").bearer(&admin.token))
        .await;
    assert_eq!(issuer.status, StatusCode::OK, "{issuer:?}");
    assert_eq!(issuer.body["reconciliation"][0]["balanced"], true);
    assert_eq!(
        issuer.body["reconciliation"][0]["emoney_outstanding"],
        4_000
    );
    app.assert_money_invariants().await;
}

async fn p2p_confirms_the_payee_steps_up_for_new_payees_and_keeps_limits_and_idempotency<
    S: LedgerStore,
>(
    app: TestApp<S>,
) {
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let token = alice.token.clone();
    app.fund(&token, 50_000, "f1").await;
    app.fund(&token, 10_000, "f2").await;

    let lookup = app
        .call(get("/v1/payees/lookup?to=bob@example.com").bearer(&token))
        .await;
    assert_eq!(lookup.status, StatusCode::OK, "{lookup:?}");
    assert_eq!(
        (
            lookup.body["masked_name"].as_str(),
            lookup.body["known"].as_bool()
        ),
        (Some("T*** P*****"), Some(false))
    );
    let nobody = app
        .call(get("/v1/payees/lookup?to=nobody@example.com").bearer(&token))
        .await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);

    // A new payee needs step-up bound to the amount and payee.
    let body = json!({ "to": "bob@example.com", "amount": 1_000, "message": "lunch" });
    let (sent, token) = app
        .stepped(&alice, &token, "/v1/transfers", "k1", body.clone())
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{sent:?}");
    assert_eq!(sent.body["status"], "completed");
    let replay = app
        .call(idem(post("/v1/transfers", body).bearer(&token), "k1"))
        .await;
    assert_eq!(replay.status, StatusCode::OK, "{replay:?}");
    assert_eq!(
        (replay.body["replayed"].as_bool(), &replay.body["id"]),
        (Some(true), &sent.body["id"])
    );
    let changed = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "bob@example.com", "amount": 2_000 }),
            )
            .bearer(&token),
            "k1",
        ))
        .await;
    assert_eq!(
        (changed.status, changed.problem()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused")
    );

    // A known payee and a small amount: no step-up.
    let small = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "bob@example.com", "amount": 500 }),
            )
            .bearer(&token),
            "k2",
        ))
        .await;
    assert_eq!(small.status, StatusCode::CREATED, "{small:?}");
    // A large amount to a known payee: step-up again.
    let large = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "bob@example.com", "amount": 10_000 }),
            )
            .bearer(&token),
            "k3",
        ))
        .await;
    assert_eq!(large.problem(), "step-up-required", "{large:?}");

    // The daily limit of an unverified wallet (50,000) is refused before any step-up.
    let over = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "bob@example.com", "amount": 48_501 }),
            )
            .bearer(&token),
            "k4",
        ))
        .await;
    assert_eq!(
        (over.problem(), over.body["code"].as_str()),
        ("limit-exceeded", Some("daily_limit")),
        "{over:?}"
    );
    let broke = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "alice@example.com", "amount": 5_000 }),
            )
            .bearer(&bob.token),
            "b1",
        ))
        .await;
    assert_eq!(
        (broke.problem(), broke.body["code"].as_str()),
        ("insufficient-funds", Some("insufficient_funds"))
    );
    let to_self = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "alice@example.com", "amount": 5 }),
            )
            .bearer(&token),
            "k5",
        ))
        .await;
    assert_eq!(to_self.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Two concurrent requests with one key move money once.
    let same = || {
        idem(
            post(
                "/v1/transfers",
                json!({ "to": "bob@example.com", "amount": 100 }),
            )
            .bearer(&token),
            "k6",
        )
    };
    let (first, second) = tokio::join!(app.call(same()), app.call(same()));
    let mut statuses = [first.status.as_u16(), second.status.as_u16()];
    statuses.sort();
    assert!(
        statuses == [200, 201] || statuses == [201, 409],
        "{statuses:?}"
    );
    let wallet = app.wallet(&token).await;
    assert_eq!(wallet["balance"], 60_000 - 1_000 - 500 - 100);
    assert_eq!(app.wallet(&bob.token).await["balance"], 1_600);

    // Both sides are told, and the history shows the message.
    app.pay.flush_records().await.unwrap();
    assert!(
        app.mail("bob@example.com")
            .await
            .iter()
            .any(|(s, b)| s == "You received money" && b.contains("JPY 1,000"))
    );
    assert!(
        app.mail("alice@example.com")
            .await
            .iter()
            .any(|(s, _)| s == "You sent money")
    );
    let page = app
        .call(get("/v1/wallet/transactions?limit=2&type=p2p").bearer(&bob.token))
        .await;
    assert_eq!(page.body["data"].as_array().unwrap().len(), 2, "{page:?}");
    assert_eq!(page.body["has_more"], true);
    let last = page.body["data"][1]["id"].as_str().unwrap();
    let next = app
        .call(
            get(&format!(
                "/v1/wallet/transactions?limit=2&type=p2p&starting_after={last}"
            ))
            .bearer(&bob.token),
        )
        .await;
    assert_eq!(next.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        (
            next.body["data"][0]["message"].as_str(),
            next.body["has_more"].as_bool()
        ),
        (Some("lunch"), Some(false))
    );
    let csv = app
        .call(get("/v1/wallet/statement.csv").bearer(&bob.token))
        .await;
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        csv.body.as_str().unwrap().lines().count(),
        4,
        "a header and three transfers"
    );
    app.assert_money_invariants().await;
}

async fn held_transfers_are_released_or_voided_by_an_analyst<S: LedgerStore>(app: TestApp<S>) {
    let analyst = operator(&app, "analyst@example.com", "analyst").await;
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    app.user("carol@example.com").await;
    app.fund(&alice.token, 60_000, "f1").await;

    // A large first payment to a new payee is held: reserved in the payer's wallet.
    let (held, token) = app
        .stepped(
            &alice,
            &alice.token,
            "/v1/transfers",
            "h1",
            json!({ "to": "bob@example.com", "amount": 20_000 }),
        )
        .await;
    assert_eq!(
        (held.status, held.body["status"].as_str()),
        (StatusCode::CREATED, Some("held")),
        "{held:?}"
    );
    let wallet = app.wallet(&token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["available"].as_i64()),
        (Some(60_000), Some(40_000))
    );
    assert_eq!(app.wallet(&bob.token).await["balance"], 0);
    let (voided_one, token) = app
        .stepped(
            &alice,
            &token,
            "/v1/transfers",
            "h2",
            json!({ "to": "carol@example.com", "amount": 20_000 }),
        )
        .await;
    assert_eq!(voided_one.body["status"], "held");

    let queue = app
        .call(get("/v1/ops/held-transfers").bearer(&analyst.token))
        .await;
    assert_eq!(queue.body.as_array().unwrap().len(), 2, "{queue:?}");
    let customer_cannot = app.call(get("/v1/ops/held-transfers").bearer(&token)).await;
    assert_eq!(customer_cannot.status, StatusCode::FORBIDDEN);
    let id = held.body["id"].as_str().unwrap();
    let release = format!("/v1/ops/held-transfers/{id}/release");
    // A hold is a fraud control: the first operator asks, the money stays held ...
    let asked = app
        .call(post(&release, json!({})).bearer(&analyst.token))
        .await;
    assert_eq!(
        (asked.status, asked.body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("held")),
        "{asked:?}"
    );
    assert_eq!(
        asked.body["release_requested_by"],
        app.user_id(&analyst).await
    );
    assert_eq!(app.wallet(&bob.token).await["balance"], 0);
    // ... the same operator asking again is answered the same: it still waits ...
    let twice = app
        .call(post(&release, json!({})).bearer(&analyst.token))
        .await;
    assert_eq!(
        (twice.status, twice.body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("held")),
        "{twice:?}"
    );
    assert_eq!(app.wallet(&bob.token).await["balance"], 0);
    // ... a second operator releases it.
    let second = operator(&app, "second@example.com", "analyst").await;
    let released = app
        .call(post(&release, json!({})).bearer(&second.token))
        .await;
    assert_eq!(
        (released.status, released.body["status"].as_str()),
        (StatusCode::OK, Some("released")),
        "{released:?}"
    );
    let again = app
        .call(post(&format!("/v1/ops/held-transfers/{id}/void"), json!({})).bearer(&analyst.token))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let other = voided_one.body["id"].as_str().unwrap();
    let voided = app
        .call(
            post(&format!("/v1/ops/held-transfers/{other}/void"), json!({})).bearer(&analyst.token),
        )
        .await;
    assert_eq!(voided.body["status"], "voided", "{voided:?}");

    let wallet = app.wallet(&token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["available"].as_i64()),
        (Some(40_000), Some(40_000))
    );
    assert_eq!(app.wallet(&bob.token).await["balance"], 20_000);
    let audit = app.call(get("/v1/ops/audit").bearer(&analyst.token)).await;
    let text = audit.body.to_string();
    assert!(
        text.contains("payment.review_released") && text.contains("payment.review_voided"),
        "{text}"
    );
    app.assert_money_invariants().await;
}

async fn merchant_qr_both_directions_with_fees_and_partial_refunds<S: LedgerStore>(
    app: TestApp<S>,
) {
    let shop = app.user_of("merchant", "shop@example.com").await;
    let key = app
        .with_step_up(&shop, &shop.token, "/v1/merchant/api-keys", json!({ "name": "POS", "environment": "test", "scopes": ["payments:write", "payments:read", "refunds:write"] }))
        .await;
    assert_eq!(key.status, StatusCode::CREATED, "{key:?}");
    let api_key = key.body["key"].as_str().unwrap().to_owned();
    let alice = app.user("alice@example.com").await;
    app.fund(&alice.token, 20_000, "f1").await;

    // Merchant-presented: a signed request the customer inspects and pays.
    let request = app
        .call(idem(
            post(
                "/v1/merchant/payment-requests",
                json!({ "amount": 1_200, "reference": "order-42", "expires_in_s": 300 }),
            )
            .bearer(&api_key),
            "r1",
        ))
        .await;
    assert_eq!(request.status, StatusCode::CREATED, "{request:?}");
    let payload = request.body["qr_payload"].as_str().unwrap().to_owned();
    assert!(
        payload.starts_with("KB1.") && payload.len() < 100,
        "{payload}"
    );
    let seen = app
        .call(post("/v1/qr/inspect", json!({ "payload": payload })).bearer(&alice.token))
        .await;
    assert_eq!(
        (
            seen.body["merchant_name"].as_str(),
            seen.body["amount"]["amount"].as_i64()
        ),
        (Some("Test Person"), Some(1_200))
    );
    let tampered = payload.replacen(".1200.", ".12.", 1);
    let refused = app
        .call(idem(
            post("/v1/qr/pay", json!({ "payload": tampered })).bearer(&alice.token),
            "q0",
        ))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{refused:?}"
    );
    let paid = app
        .call(idem(
            post("/v1/qr/pay", json!({ "payload": payload })).bearer(&alice.token),
            "q1",
        ))
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    assert_eq!(paid.body["fee"]["amount"], 30, "2.5% of 1,200");
    let twice = app
        .call(idem(
            post("/v1/qr/pay", json!({ "payload": payload })).bearer(&alice.token),
            "q2",
        ))
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{twice:?}");
    let status = app
        .call(
            get(&format!(
                "/v1/merchant/payment-requests/{}",
                request.body["id"].as_str().unwrap()
            ))
            .bearer(&api_key),
        )
        .await;
    assert_eq!(status.body["status"], "paid");

    // Customer-presented: a one-time code the till charges once.
    let code = app
        .call(post("/v1/payment-codes", json!({})).bearer(&alice.token))
        .await;
    assert_eq!(code.status, StatusCode::CREATED, "{code:?}");
    let digits = code.body["code"].as_str().unwrap().to_owned();
    assert_eq!(digits.len(), 18);
    let charge = |code: &str, amount: i64, key: &str| {
        idem(
            post(
                "/v1/merchant/charges",
                json!({ "code": code, "amount": amount, "reference": "till-3" }),
            )
            .bearer(&api_key),
            key,
        )
    };
    let charged = app.call(charge(&digits, 800, "c1")).await;
    assert_eq!(charged.status, StatusCode::CREATED, "{charged:?}");
    assert_eq!(charged.body["fee"]["amount"], 20);
    let reused = app.call(charge(&digits, 800, "c2")).await;
    assert_eq!(reused.status, StatusCode::GONE, "{reused:?}");
    let replayed = app.call(charge(&digits, 800, "c1")).await;
    assert_eq!(
        (replayed.status, replayed.body["replayed"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    // `null` as the body, as the document allows, asks for the defaults like `{}`.
    let big = app
        .call(post("/v1/payment-codes", serde_json::Value::Null).bearer(&alice.token))
        .await;
    assert_eq!(big.status, StatusCode::CREATED, "{big:?}");
    let too_much = app
        .call(charge(big.body["code"].as_str().unwrap(), 50_001, "c3"))
        .await;
    assert_eq!(
        (too_much.problem(), too_much.body["code"].as_str()),
        ("limit-exceeded", Some("code_limit")),
        "{too_much:?}"
    );
    // A code for more than the step-up threshold is confirmed when it is made.
    let (large, alice_token) = app
        .stepped(
            &alice,
            &alice.token,
            "/v1/payment-codes",
            "-",
            json!({ "limit": 30_000 }),
        )
        .await;
    assert_eq!(
        (large.status, large.body["limit"].as_i64()),
        (StatusCode::CREATED, Some(30_000)),
        "{large:?}"
    );
    let too_large = app
        .call(post("/v1/payment-codes", json!({ "limit": 50_001 })).bearer(&alice_token))
        .await;
    assert_eq!(too_large.body["code"], "code_limit", "{too_large:?}");
    let alice = User {
        token: alice_token,
        ..alice
    };
    let revoked_large = app
        .call(
            crate::helpers::delete(&format!(
                "/v1/payment-codes/{}",
                large.body["id"].as_str().unwrap()
            ))
            .bearer(&alice.token),
        )
        .await;
    assert_eq!(revoked_large.status, StatusCode::NO_CONTENT);
    let live = app
        .call(get("/v1/payment-codes").bearer(&alice.token))
        .await;
    assert_eq!(
        live.body.as_array().unwrap().len(),
        1,
        "the refused charge left the code usable"
    );
    app.clock.advance_secs(61);
    let expired = app
        .call(charge(big.body["code"].as_str().unwrap(), 100, "c4"))
        .await;
    assert_eq!(expired.status, StatusCode::GONE);
    let revocable = app
        .call(post("/v1/payment-codes", json!({})).bearer(&alice.token))
        .await;
    let id = revocable.body["id"].as_str().unwrap();
    let revoked = app
        .call(crate::helpers::delete(&format!("/v1/payment-codes/{id}")).bearer(&alice.token))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.call(charge(revocable.body["code"].as_str().unwrap(), 100, "c5"))
            .await
            .status,
        StatusCode::GONE
    );

    // Partial refunds up to what was captured, idempotent.
    let payment = paid.body["id"].as_str().unwrap();
    let refund = |amount: i64, key: &str| {
        idem(
            post(
                &format!("/v1/merchant/payments/{payment}/refunds"),
                json!({ "amount": amount }),
            )
            .bearer(&api_key),
            key,
        )
    };
    let first = app.call(refund(500, "rf1")).await;
    assert_eq!(
        (first.status, first.body["refunded_total"].as_i64()),
        (StatusCode::CREATED, Some(500)),
        "{first:?}"
    );
    let over = app.call(refund(800, "rf2")).await;
    assert_eq!(over.status, StatusCode::UNPROCESSABLE_ENTITY, "{over:?}");
    let rest = app.call(refund(700, "rf3")).await;
    assert_eq!(rest.body["refunded_total"], 1_200);
    let again = app.call(refund(700, "rf3")).await;
    assert_eq!(
        (again.status, again.body["replayed"].as_bool()),
        (StatusCode::OK, Some(true))
    );

    assert_eq!(app.wallet(&alice.token).await["balance"], 20_000 - 800);
    let balance = app.call(get("/v1/merchant/balance").bearer(&api_key)).await;
    assert_eq!(balance.body["net_credit"], 1_200 - 30 + 800 - 20 - 1_200);

    // The takings go out to the shop's verified bank account with the API key, once per
    // key, never beyond the balance.
    let admin = operator(&app, "admin@example.com", "admin").await;
    // The key's step-up rotated the shop's session: it signs in again.
    app.next_step();
    let shop = User {
        token: app.login(&shop).await,
        ..shop
    };
    app.verified(&shop, &admin, "Test Person").await;
    let (source, _) = app.link(&shop, &shop.token, "Test Person", "normal").await;
    let payout = |amount: i64, key: &str| {
        idem(
            post(
                "/v1/merchant/payouts",
                json!({ "source_id": source, "amount": amount }),
            )
            .bearer(&api_key),
            key,
        )
    };
    let too_much = app.call(payout(751, "po1")).await;
    assert_eq!(
        too_much.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{too_much:?}"
    );
    let paid_out = app.call(payout(500, "po2")).await;
    assert_eq!(paid_out.status, StatusCode::ACCEPTED, "{paid_out:?}");
    let replayed = app.call(payout(500, "po2")).await;
    assert_eq!(replayed.body["replayed"], true, "{replayed:?}");
    app.settle().await;
    let balance = app.call(get("/v1/merchant/balance").bearer(&api_key)).await;
    assert_eq!(balance.body["net_credit"], 750 - 500);
    app.assert_money_invariants().await;
}

async fn malformed_payment_requests_get_problems_and_change_nothing<S: LedgerStore>(
    app: TestApp<S>,
) {
    let alice = app.user("alice@example.com").await;
    app.user("bob@example.com").await;
    app.fund(&alice.token, 10_000, "f1").await;
    let cases: Vec<(Value, &str, u16)> = vec![
        (
            json!({ "to": "bob@example.com", "amount": "100" }),
            "amount as a string",
            400,
        ),
        (
            json!({ "to": "bob@example.com", "amount": 1e30 }),
            "amount too large for an integer",
            400,
        ),
        (
            json!({ "to": "bob@example.com", "amount": 18_446_744_073_709_551_615u64 }),
            "amount above i64",
            400,
        ),
        (
            json!({ "to": "bob@example.com", "amount": -5 }),
            "negative amount",
            422,
        ),
        (
            json!({ "to": "bob@example.com", "amount": 0 }),
            "zero amount",
            422,
        ),
        (
            json!({ "to": "bob@example.com", "amount": 100, "currency": "XXX" }),
            "unknown currency",
            422,
        ),
        (
            json!({ "to": "bob@example.com", "amount": 100, "currency": "USD" }),
            "currency not offered",
            422,
        ),
        (
            json!({ "to": "bob@example.com", "amount": 100, "extra": 1 }),
            "unknown field",
            400,
        ),
        (json!({ "to": "bob@example.com" }), "missing amount", 400),
        (
            json!({ "to": "bob@example.com", "amount": 100, "message": "x".repeat(141) }),
            "message too long",
            422,
        ),
        (
            json!({ "to": "not an address", "amount": 100 }),
            "bad payee",
            422,
        ),
        (
            json!({ "to": "nobody@example.com", "amount": 100 }),
            "unknown payee",
            404,
        ),
        (json!([1, 2, 3]), "not an object", 400),
    ];
    for (body, what, status) in cases {
        let reply = app
            .call(idem(post("/v1/transfers", body).bearer(&alice.token), what))
            .await;
        assert_eq!(reply.status.as_u16(), status, "{what}: {reply:?}");
        assert_eq!(
            reply.headers["content-type"], "application/problem+json",
            "{what}"
        );
    }
    let no_key = app
        .call(
            post(
                "/v1/transfers",
                json!({ "to": "bob@example.com", "amount": 100 }),
            )
            .bearer(&alice.token),
        )
        .await;
    assert_eq!(
        (no_key.status, no_key.problem()),
        (StatusCode::BAD_REQUEST, "idempotency-key-missing")
    );
    let long_key = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "bob@example.com", "amount": 100 }),
            )
            .bearer(&alice.token),
            &"k".repeat(300),
        ))
        .await;
    assert_eq!(long_key.status, StatusCode::UNPROCESSABLE_ENTITY);
    let huge = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "bob@example.com", "amount": 100, "message": "x".repeat(70_000) }),
            )
            .bearer(&alice.token),
            "huge",
        ))
        .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    let bad_utf8 = app
        .call_bytes(
            "/v1/transfers",
            &alice.token,
            b"{\"to\": \"bob@example.com\", \"amount\": 100, \"message\": \"\xff\xfe\"}",
        )
        .await;
    assert_eq!(bad_utf8.status, StatusCode::BAD_REQUEST, "{bad_utf8:?}");
    let forged_payload = app
        .call(idem(post("/v1/qr/pay", json!({ "payload": "KB1.AAAAAAAAAAAAAAAAAAAAAA.100.JPY.9999999999.AAAAAAAAAAAAAAAAAAAAAA" })).bearer(&alice.token), "q"))
        .await;
    assert_eq!(forged_payload.status, StatusCode::UNPROCESSABLE_ENTITY);
    // A query string that does not parse is a problem like any other error, never plain text.
    for path in [
        "/v1/wallet/transactions?limit=abc",
        "/v1/wallet/transactions?limit=-1",
        "/v1/wallet/statement.csv?from=yesterday",
        "/v1/payees/lookup",
    ] {
        let reply = app.call(get(path).bearer(&alice.token)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {reply:?}");
        assert_eq!(
            reply.headers["content-type"], "application/problem+json",
            "{path}"
        );
        assert_eq!(reply.problem(), "bad-request", "{path}");
    }

    // Nothing moved: only the faucet's credit is in the history.
    let wallet = app.wallet(&alice.token).await;
    assert_eq!(wallet["balance"], 10_000);
    let history = app
        .call(get("/v1/wallet/transactions").bearer(&alice.token))
        .await;
    assert_eq!(history.body["data"].as_array().unwrap().len(), 1);
    app.assert_money_invariants().await;
}

/// A merchant's webhook receiver on loopback: records each request and answers with `status`.
pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) seen: std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

pub(crate) async fn receiver() -> Receiver {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let status = Arc::new(AtomicU16::new(200));
    let (s, c) = (seen.clone(), status.clone());
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (s, c) = (s.clone(), c.clone());
            async move {
                s.lock().unwrap().push((headers, body));
                StatusCode::from_u16(c.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, seen, status }
}

pub(crate) fn verifies(secret: &str, headers: &axum::http::HeaderMap, body: &str) -> usize {
    let id = headers["webhook-id"].to_str().unwrap();
    let timestamp: i64 = headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = koban_pay::webhooks::signatures(
        &[koban_pay::webhooks::secret_key(secret).unwrap()],
        id,
        timestamp,
        body,
    );
    headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .filter(|s| *s == expected)
        .count()
}

async fn merchant_webhooks_are_signed_retried_rotated_and_redelivered<S: LedgerStore>(
    app: TestApp<S>,
) {
    use std::sync::atomic::Ordering;
    let shop = app.user_of("merchant", "shop@example.com").await;
    let key = app
        .with_step_up(&shop, &shop.token, "/v1/merchant/api-keys", json!({ "name": "hooks", "environment": "test", "scopes": ["payments:write", "payments:read", "webhooks:manage"] }))
        .await;
    let api_key = key.body["key"].as_str().unwrap().to_owned();
    let alice = app.user("alice@example.com").await;
    app.fund(&alice.token, 20_000, "f1").await;
    let hooks = receiver().await;

    let refused = app
        .call(
            post(
                "/v1/merchant/webhooks",
                json!({ "url": "http://10.1.2.3/x", "event_types": ["payment.succeeded"] }),
            )
            .bearer(&api_key),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{refused:?}"
    );
    let created = app
        .call(
            post(
                "/v1/merchant/webhooks",
                json!({ "url": hooks.url, "event_types": ["payment.succeeded"] }),
            )
            .bearer(&api_key),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let endpoint = created.body["id"].as_str().unwrap().to_owned();
    let listed = app
        .call(get("/v1/merchant/webhooks").bearer(&api_key))
        .await;
    assert!(
        !listed.body.to_string().contains(&secret),
        "the secret is shown once"
    );

    // A payment is delivered, signed with the endpoint's secret.
    let first = qr_pay(&app, &api_key, &alice.token, 1).await;
    app.pay.tick().await.unwrap();
    {
        let seen = hooks.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (headers, body) = &seen[0];
        assert_eq!(verifies(&secret, headers, body), 1, "{headers:?}");
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (event["type"].as_str(), event["data"]["payment_id"].as_str()),
            (Some("payment.succeeded"), Some(first.as_str()))
        );
    }

    // A failing receiver is retried with backoff, and the log shows each attempt.
    hooks.status.store(500, Ordering::SeqCst);
    // A second later, so the log's newest-first order is the order of the payments.
    app.clock.advance_secs(1);
    qr_pay(&app, &api_key, &alice.token, 2).await;
    app.pay.tick().await.unwrap();
    let log = app
        .call(get(&format!("/v1/merchant/webhooks/{endpoint}/deliveries")).bearer(&api_key))
        .await;
    assert_eq!(
        (
            log.body[0]["status"].as_str(),
            log.body[0]["attempts"].as_i64(),
            log.body[0]["last_status_code"].as_i64()
        ),
        (Some("pending"), Some(1), Some(500)),
        "{log:?}"
    );
    app.pay.tick().await.unwrap();
    assert_eq!(
        hooks.seen.lock().unwrap().len(),
        2,
        "not retried before its time"
    );
    hooks.status.store(200, Ordering::SeqCst);
    app.clock.advance_secs(6);
    app.pay.tick().await.unwrap();
    assert_eq!(hooks.seen.lock().unwrap().len(), 3);
    let log = app
        .call(get(&format!("/v1/merchant/webhooks/{endpoint}/deliveries")).bearer(&api_key))
        .await;
    assert_eq!(
        (
            log.body[0]["status"].as_str(),
            log.body[0]["attempts"].as_i64()
        ),
        (Some("delivered"), Some(2))
    );

    // Another merchant's key cannot read this endpoint's log: not found, as any foreign id.
    let other = app.user_of("merchant", "other-shop@example.com").await;
    let other_key = app
        .with_step_up(
            &other,
            &other.token,
            "/v1/merchant/api-keys",
            json!({ "name": "snoop", "environment": "test", "scopes": ["webhooks:manage"] }),
        )
        .await;
    let other_key = other_key.body["key"].as_str().unwrap().to_owned();
    let foreign = app
        .call(get(&format!("/v1/merchant/webhooks/{endpoint}/deliveries")).bearer(&other_key))
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{foreign:?}");

    // After a rotation both secrets sign, so receivers can switch without losing events.
    let rotated = app
        .call(
            post(
                &format!("/v1/merchant/webhooks/{endpoint}/rotate"),
                json!({}),
            )
            .bearer(&api_key),
        )
        .await;
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    qr_pay(&app, &api_key, &alice.token, 3).await;
    app.pay.tick().await.unwrap();
    {
        let seen = hooks.seen.lock().unwrap();
        let (headers, body) = seen.last().unwrap();
        assert_eq!(
            (
                verifies(&secret, headers, body),
                verifies(&new_secret, headers, body)
            ),
            (1, 1)
        );
    }

    // A manual redelivery sends the same message (same webhook-id) again.
    let id = log.body[0]["id"].as_str().unwrap().to_owned();
    let again = app
        .call(
            post(
                &format!("/v1/merchant/webhook-deliveries/{id}/redeliver"),
                json!({}),
            )
            .bearer(&api_key),
        )
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    app.pay.tick().await.unwrap();
    let last_id = hooks.seen.lock().unwrap().last().unwrap().0["webhook-id"].clone();
    assert_eq!(last_id.to_str().unwrap(), id);
    let other = app
        .call(
            post(
                &format!("/v1/merchant/webhook-deliveries/{id}/redeliver"),
                json!({}),
            )
            .bearer(&alice.token),
        )
        .await;
    assert_eq!(
        other.status,
        StatusCode::UNAUTHORIZED,
        "a session token is not an API key"
    );
    app.assert_money_invariants().await;
}

/// The merchant asks for a small amount and the customer pays it; returns the payment id.
pub(crate) async fn qr_pay<S: LedgerStore>(
    app: &TestApp<S>,
    api_key: &str,
    token: &str,
    n: u32,
) -> String {
    let request = app
        .call(idem(
            post(
                "/v1/merchant/payment-requests",
                json!({ "amount": 100 + n, "reference": format!("o{n}") }),
            )
            .bearer(api_key),
            &format!("r{n}"),
        ))
        .await;
    let payload = request.body["qr_payload"].as_str().unwrap().to_owned();
    let paid = app
        .call(idem(
            post("/v1/qr/pay", json!({ "payload": payload })).bearer(token),
            &format!("q{n}"),
        ))
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    paid.body["id"].as_str().unwrap().to_owned()
}

async fn handles_and_pay_links_are_paid_once_like_any_transfer<S: LedgerStore>(app: TestApp<S>) {
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let carol = app.user("carol@example.com").await;
    app.fund(&alice.token, 5_000, "f1").await;
    app.fund(&carol.token, 5_000, "f1").await;

    let handle = app
        .call(post("/v1/me/handle", json!({ "handle": "Bob_K" })).bearer(&bob.token))
        .await;
    assert_eq!(
        (handle.status, handle.body["handle"].as_str()),
        (StatusCode::OK, Some("@bob_k")),
        "{handle:?}"
    );
    let taken = app
        .call(post("/v1/me/handle", json!({ "handle": "bob_k" })).bearer(&carol.token))
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    let bad = app
        .call(post("/v1/me/handle", json!({ "handle": "no spaces!" })).bearer(&carol.token))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let lookup = app
        .call(get("/v1/payees/lookup?to=@bob_k").bearer(&alice.token))
        .await;
    assert_eq!(lookup.body["masked_name"], "T*** P*****", "{lookup:?}");
    let (sent, alice_token) = app
        .stepped(
            &alice,
            &alice.token,
            "/v1/transfers",
            "h1",
            json!({ "to": "@bob_k", "amount": 300 }),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{sent:?}");

    // A pay link: seen and paid once by whoever holds it, with step-up for a new payee.
    let link = app
        .call(
            post(
                "/v1/pay-links",
                json!({ "amount": 700, "message": "dinner" }),
            )
            .bearer(&bob.token),
        )
        .await;
    assert_eq!(link.status, StatusCode::CREATED, "{link:?}");
    let id = link.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("kpl_") && id.len() > 40, "unguessable: {id}");
    let seen = app
        .call(get(&format!("/v1/pay-links/{id}")).bearer(&carol.token))
        .await;
    assert_eq!(
        (
            seen.body["status"].as_str(),
            seen.body["amount"]["amount"].as_i64()
        ),
        (Some("open"), Some(700))
    );
    let path = format!("/v1/pay-links/{id}/pay");
    let (paid, carol_token) = app
        .stepped(&carol, &carol.token, &path, "l1", json!({}))
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    let replay = app
        .call(idem(post(&path, json!({})).bearer(&carol_token), "l1"))
        .await;
    assert_eq!(
        (replay.status, replay.body["replayed"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{replay:?}"
    );
    let twice = app
        .call(idem(post(&path, json!({})).bearer(&alice_token), "l2"))
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{twice:?}");
    assert_eq!(
        app.call(get(&format!("/v1/pay-links/{id}")).bearer(&bob.token))
            .await
            .body["status"],
        "paid"
    );
    assert_eq!(app.wallet(&bob.token).await["balance"], 1_000);

    let withdrawn = app
        .call(post("/v1/pay-links", json!({ "amount": 50 })).bearer(&bob.token))
        .await;
    let other = withdrawn.body["id"].as_str().unwrap();
    let not_yours = app
        .call(crate::helpers::delete(&format!("/v1/pay-links/{other}")).bearer(&carol_token))
        .await;
    assert_eq!(not_yours.status, StatusCode::NOT_FOUND);
    let cancelled = app
        .call(crate::helpers::delete(&format!("/v1/pay-links/{other}")).bearer(&bob.token))
        .await;
    assert_eq!(cancelled.status, StatusCode::NO_CONTENT);
    let late = app
        .call(idem(
            post(&format!("/v1/pay-links/{other}/pay"), json!({})).bearer(&carol_token),
            "l3",
        ))
        .await;
    assert_eq!(late.status, StatusCode::GONE, "{late:?}");
    let guessed = app
        .call(get("/v1/pay-links/kpl_guess").bearer(&carol_token))
        .await;
    assert_eq!(guessed.status, StatusCode::NOT_FOUND);

    // A link paid into review is "held"; once an analyst stops the payment it is "stopped"
    // and cannot be paid again (the requester asks anew).
    let analyst = operator(&app, "analyst@example.com", "analyst").await;
    app.fund(&alice_token, 30_000, "f2").await;
    let big = app
        .call(post("/v1/pay-links", json!({ "amount": 20_000 })).bearer(&carol_token))
        .await;
    let big_id = big.body["id"].as_str().unwrap().to_owned();
    let big_path = format!("/v1/pay-links/{big_id}/pay");
    let (held, alice_token) = app
        .stepped(&alice, &alice_token, &big_path, "l4", json!({}))
        .await;
    assert_eq!(held.body["status"], "held", "{held:?}");
    let view = app
        .call(get(&format!("/v1/pay-links/{big_id}")).bearer(&carol_token))
        .await;
    assert_eq!(view.body["status"], "held");
    let voided = app
        .call(
            post(
                &format!(
                    "/v1/ops/held-transfers/{}/void",
                    held.body["id"].as_str().unwrap()
                ),
                json!({}),
            )
            .bearer(&analyst.token),
        )
        .await;
    assert_eq!(voided.status, StatusCode::OK, "{voided:?}");
    let view = app
        .call(get(&format!("/v1/pay-links/{big_id}")).bearer(&carol_token))
        .await;
    assert_eq!(view.body["status"], "stopped");
    let again = app
        .call(idem(post(&big_path, json!({})).bearer(&alice_token), "l5"))
        .await;
    assert_eq!(again.status, StatusCode::GONE, "{again:?}");
    app.assert_money_invariants().await;
}

async fn card_topups_are_challenged_for_new_cards_and_devices<S: LedgerStore>(app: TestApp<S>) {
    let alice = app.user("alice@example.com").await;
    // A completed sign-in makes this browser a known device (its cookie).
    app.next_step();
    let (token, device) = app.login_from(&alice, "127.0.0.1").await;
    let device = device.split(';').next().unwrap().to_owned();
    let card = |number: &str, month: i64, year: i64| {
        post(
            "/v1/funding-sources/cards",
            json!({ "number": number, "exp_month": month, "exp_year": year, "cvc": "123" }),
        )
        .bearer(&token)
    };
    for (number, month, year, why) in [
        ("4242424242424241", 12, 2030, "Luhn"),
        ("4242424242424242", 10, 2026, "expired last month"),
        ("4242424242424242", 13, 2030, "no such month"),
        ("42424242", 12, 2030, "too short"),
    ] {
        let refused = app.call(card(number, month, year)).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{why}: {refused:?}"
        );
        assert!(
            !refused.body.to_string().contains(number),
            "{why}: the number is never echoed"
        );
    }
    let added = app.call(card("4242 4242 4242 4242", 11, 2026)).await;
    assert_eq!(
        added.status,
        StatusCode::CREATED,
        "this month still works: {added:?}"
    );
    assert_eq!(
        (
            added.body["last4"].as_str(),
            added.body["verified"].as_bool()
        ),
        (Some("4242"), Some(false))
    );
    assert!(!added.body.to_string().contains("4242424242424242"));
    assert_eq!(
        app.call(card("4242424242424242", 12, 2030)).await.status,
        StatusCode::CONFLICT
    );
    let source = added.body["id"].as_str().unwrap().to_owned();

    // A new card is challenged even on a known device; the code is bound to this top-up.
    let topup = |amount: i64, key: &str, challenge: Option<Value>| {
        let mut body = json!({ "source_id": source, "amount": amount });
        if let Some(challenge) = challenge {
            body["challenge"] = challenge;
        }
        idem(
            post("/v1/topups/card", body)
                .bearer(&token)
                .header("cookie", &device),
            key,
        )
    };
    let first = app.call(topup(3_000, "c1", None)).await;
    assert_eq!(first.problem(), "card-challenge-required", "{first:?}");
    // The answer says how to confirm: the same request, with the same key.
    assert!(
        first.body["detail"]
            .as_str()
            .unwrap()
            .contains("same Idempotency-Key"),
        "{first:?}"
    );
    let challenge = first.body["challenge"]["id"].as_str().unwrap().to_owned();
    let code = app.latest_code("alice@example.com").await;
    let other_amount = app
        .call(topup(
            3_001,
            "c1",
            Some(json!({ "id": challenge, "code": code })),
        ))
        .await;
    assert_eq!(
        other_amount.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{other_amount:?}"
    );
    let confirmed = app
        .call(topup(
            3_000,
            "c1",
            Some(json!({ "id": challenge, "code": code })),
        ))
        .await;
    assert_eq!(
        (confirmed.status, confirmed.body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("pending")),
        "{confirmed:?}"
    );
    assert_eq!(app.wallet(&token).await["pending_in"], 3_000);
    app.settle().await;
    assert_eq!(app.wallet(&token).await["balance"], 3_000);

    // The card is known now; from a known device no challenge, from an unknown one again.
    let known = app.call(topup(2_000, "c2", None)).await;
    assert_eq!(known.status, StatusCode::ACCEPTED, "{known:?}");
    let elsewhere = app
        .call(idem(
            post(
                "/v1/topups/card",
                json!({ "source_id": source, "amount": 1_000 }),
            )
            .bearer(&token),
            "c3",
        ))
        .await;
    assert_eq!(
        elsewhere.problem(),
        "card-challenge-required",
        "no device cookie: {elsewhere:?}"
    );
    let capped = app.call(topup(6_000, "c4", None)).await;
    assert_eq!(capped.body["code"], "new_source_limit", "{capped:?}");

    // The acquirer's decline moves nothing.
    let declining = app.call(card("4000000000000002", 12, 2030)).await;
    let declining = declining.body["id"].as_str().unwrap().to_owned();
    let body = json!({ "source_id": declining, "amount": 500 });
    let asked = app
        .call(idem(
            post("/v1/topups/card", body.clone())
                .bearer(&token)
                .header("cookie", &device),
            "d1",
        ))
        .await;
    let mut answered = body;
    answered["challenge"] = json!({ "id": asked.body["challenge"]["id"], "code": app.latest_code("alice@example.com").await });
    let declined = app
        .call(idem(
            post("/v1/topups/card", answered)
                .bearer(&token)
                .header("cookie", &device),
            "d1",
        ))
        .await;
    assert_eq!(
        (declined.problem(), declined.body["code"].as_str()),
        ("payment-declined", Some("card_declined")),
        "{declined:?}"
    );
    app.settle().await;
    assert_eq!(app.wallet(&token).await["balance"], 5_000);
    app.assert_money_invariants().await;
}

/// A merchant key that submits wrong payment codes is refused after 20 within 15 minutes
/// (429 with Retry-After), even for a right code, until the window ends; one network is
/// refused after 50 across keys; and the guessing raises an alert about the merchant.
async fn guessing_payment_codes_at_a_till_is_limited_and_raises_an_alert<S: LedgerStore>(
    app: TestApp<S>,
) {
    let analyst = operator(&app, "analyst@example.com", "analyst").await;
    let mut keys = Vec::new();
    for i in 0..5 {
        let shop = app
            .user_of("merchant", &format!("shop{i}@example.com"))
            .await;
        let shop_id = app.user_id(&shop).await;
        let key = app
            .with_step_up(
                &shop,
                &shop.token,
                "/v1/merchant/api-keys",
                json!({ "name": "till", "environment": "test", "scopes": ["payments:write"] }),
            )
            .await;
        assert_eq!(key.status, StatusCode::CREATED, "{key:?}");
        keys.push((shop_id, key.body["key"].as_str().unwrap().to_owned()));
    }
    let alice = app.user("alice@example.com").await;
    app.fund(&alice.token, 20_000, "f1").await;
    let new_code = || async {
        let code = app
            .call(post("/v1/payment-codes", json!({})).bearer(&alice.token))
            .await;
        assert_eq!(code.status, StatusCode::CREATED, "{code:?}");
        code.body["code"].as_str().unwrap().to_owned()
    };
    let charge = |api_key: &str, code: &str, key: &str| {
        idem(
            post(
                "/v1/merchant/charges",
                json!({ "code": code, "amount": 100, "reference": "till" }),
            )
            .bearer(api_key),
            key,
        )
    };
    let wrong = |n: usize| format!("89{:016}", 1_000_000 + n);

    // A busy till charging many right codes at once is never taken for guessing, even while
    // more charges are in flight than the limit of wrong ones.
    let bob = app.user("bob@example.com").await;
    app.fund(&bob.token, 5_000, "f1").await;
    let mut codes = Vec::new();
    for _ in 0..25 {
        let code = app
            .call(post("/v1/payment-codes", json!({})).bearer(&bob.token))
            .await;
        assert_eq!(code.status, StatusCode::CREATED, "{code:?}");
        codes.push(code.body["code"].as_str().unwrap().to_owned());
    }
    let busy = futures_util::future::join_all(
        codes
            .iter()
            .enumerate()
            .map(|(i, code)| app.call(charge(&keys[4].1, code, &format!("busy-{i}")))),
    )
    .await;
    assert!(
        busy.iter().all(|reply| reply.status == StatusCode::CREATED),
        "{:?}",
        busy.iter().map(|reply| reply.status).collect::<Vec<_>>()
    );

    // Twenty wrong codes from one key: each answered as an unusable code.
    let (shop0, key0) = &keys[0];
    for n in 0..20 {
        let guessed = app.call(charge(key0, &wrong(n), &format!("g0-{n}"))).await;
        assert_eq!(guessed.status, StatusCode::GONE, "guess {n}: {guessed:?}");
    }
    // Then that key is refused, even with a right code, which stays usable.
    let right = new_code().await;
    let refused = app.call(charge(key0, &right, "g0-right")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{refused:?}");
    assert!(refused.headers.contains_key("retry-after"), "{refused:?}");
    assert_eq!(app.balance(&alice.token).await, 20_000);
    let other = app.call(charge(&keys[1].1, &right, "k1-right")).await;
    assert_eq!(other.status, StatusCode::CREATED, "{other:?}");

    // The guessing raised an alert about the merchant whose key it was.
    app.pay.flush_records().await.unwrap();
    let alerts = app
        .call(get("/v1/ops/risk/alerts").bearer(&analyst.token))
        .await;
    let guessing = alerts
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "code.guessing_merchant")
        .unwrap_or_else(|| panic!("no code-guessing alert in {}", alerts.body))
        .clone();
    assert_eq!(guessing["subject"], shop0.as_str(), "{guessing}");

    // After the window the key may charge again (Alice keeps her session alive meanwhile).
    app.clock.advance_secs(8 * 60);
    assert_eq!(app.balance(&alice.token).await, 19_900);
    app.clock.advance_secs(7 * 60 + 1);
    let later = app.call(charge(key0, &new_code().await, "g0-later")).await;
    assert_eq!(later.status, StatusCode::CREATED, "{later:?}");

    // One network: 50 wrong codes across keys, then every key from it waits.
    for (k, (_, api_key)) in keys.iter().enumerate().skip(1) {
        let tries = if k == 4 { 5 } else { 15 };
        for n in 0..tries {
            let guessed = app
                .call(charge(api_key, &wrong(n), &format!("n{k}-{n}")))
                .await;
            assert_eq!(
                guessed.status,
                StatusCode::GONE,
                "key {k} guess {n}: {guessed:?}"
            );
        }
    }
    let blocked = app
        .call(charge(&keys[4].1, &new_code().await, "n4-right"))
        .await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS, "{blocked:?}");
    app.assert_money_invariants().await;
}

/// A code for more than the step-up amount is confirmed when it is made, which rotates the
/// customer's session: the code belongs to the new session, so the till can charge it.
async fn a_payment_code_confirmed_with_step_up_can_be_charged<S: LedgerStore>(app: TestApp<S>) {
    let shop = app.user_of("merchant", "shop@example.com").await;
    let key = app
        .with_step_up(
            &shop,
            &shop.token,
            "/v1/merchant/api-keys",
            json!({ "name": "till", "environment": "test", "scopes": ["payments:write"] }),
        )
        .await;
    let api_key = key.body["key"].as_str().unwrap().to_owned();
    let alice = app.user("alice@example.com").await;
    app.fund(&alice.token, 20_000, "f1").await;
    let (large, token) = app
        .stepped(
            &alice,
            &alice.token,
            "/v1/payment-codes",
            "-",
            json!({ "limit": 15_000 }),
        )
        .await;
    assert_eq!(large.status, StatusCode::CREATED, "{large:?}");
    assert_ne!(token, alice.token, "the step-up rotated the session");
    let charged = app
        .call(idem(
            post(
                "/v1/merchant/charges",
                json!({ "code": large.body["code"], "amount": 12_000, "reference": "big basket" }),
            )
            .bearer(&api_key),
            "large",
        ))
        .await;
    assert_eq!(charged.status, StatusCode::CREATED, "{charged:?}");
    assert_eq!(app.wallet(&token).await["balance"], 8_000);
    app.assert_money_invariants().await;
}

/// Rows of `sql` (one count, text parameters).
async fn count<S: LedgerStore>(app: &TestApp<S>, sql: &'static str, params: &[&str]) -> i64 {
    use koban_store::sql::SqlDb;
    let params = params
        .iter()
        .map(|p| koban_store::sql::Value::from(*p))
        .collect();
    app.pay.db().read(sql, params).await.unwrap()[0]
        .i64(0)
        .unwrap()
}

/// Nothing acknowledged lives only in memory: a transfer answers once both notices and its
/// risk decision are written (no flush here), and when a crash lost what a first attempt
/// wrote after the ledger's commit (deleted here), its retry writes it again, exactly once.
async fn a_payment_answers_once_its_notices_and_decision_are_written_and_a_retry_restores_them<
    S: LedgerStore,
>(
    app: TestApp<S>,
) {
    let alice = app.user("alice@example.com").await;
    let _bob = app.user("bob@example.com").await;
    app.fund(&alice.token, 20_000, "f1").await;
    let alice_id = app.call(get("/v1/me").bearer(&alice.token)).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({ "to": "bob@example.com", "amount": 1_500 });
    let (sent, token) = app
        .stepped(
            &alice,
            &alice.token,
            "/v1/transfers",
            "crash-1",
            body.clone(),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{sent:?}");
    let decisions = "SELECT COUNT(*) FROM risk_events WHERE customer = $1 AND kind = 'p2p'";
    let recovered = "SELECT COUNT(*) FROM risk_events WHERE customer = $1 AND kind = 'p2p' AND rules_digest = 'recovered'";
    let told = async |app: &TestApp<S>| {
        (
            app.notices_to("alice@example.com", "You sent money")
                .await
                .len(),
            app.notices_to("bob@example.com", "You received money")
                .await
                .len(),
            count(app, decisions, &[&alice_id]).await,
        )
    };
    assert_eq!(told(&app).await, (1, 1, 1), "written before the answer");

    // What a crash between the ledger's commit and the records' write loses.
    app.lose_notices("alice@example.com", "You sent money")
        .await;
    app.lose_notices("bob@example.com", "You received money")
        .await;
    {
        use koban_store::sql::{SqlDb, SqlTx};
        let mut tx = app.pay.db().begin().await.unwrap();
        tx.execute(
            "DELETE FROM risk_events WHERE kind = 'p2p' AND customer = $1",
            vec![koban_store::sql::Value::from(alice_id.as_str())],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(told(&app).await, (0, 0, 0));
    for _ in 0..2 {
        let retry = app
            .call(idem(
                post("/v1/transfers", body.clone()).bearer(&token),
                "crash-1",
            ))
            .await;
        assert_eq!(
            (
                retry.status,
                retry.body["replayed"].as_bool(),
                &retry.body["id"]
            ),
            (StatusCode::OK, Some(true), &sent.body["id"]),
            "{retry:?}"
        );
        assert_eq!(
            told(&app).await,
            (1, 1, 1),
            "restored once, however often retried"
        );
        assert_eq!(count(&app, recovered, &[&alice_id]).await, 1);
    }
    assert_eq!(app.wallet(&token).await["balance"], 20_000 - 1_500);
}
