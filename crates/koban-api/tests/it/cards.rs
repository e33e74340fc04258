//! Virtual card stories: issuing with unique Luhn-valid numbers shown masked everywhere,
//! activation and reveal only with step-up, the holder's controls, the card network's signed
//! API with the right ISO 8583 codes, holds that clear, refund, reverse and expire, the
//! card-testing defence, key rotation, and no card number or security code in any log line
//! or error. After every money story the ledger's invariants hold.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::StatusCode;
use koban_cards::card_keys::network_signature;
use koban_cards::issuing::luhn_valid;
use koban_store::LedgerStore;
use koban_store::sql::SqlDb;
use serde_json::{Value, json};

use crate::helpers::{Call, Reply, TestApp, User, get, post};
use crate::operators::operator;
use crate::stories;

stories!(
    cards_are_issued_masked_and_work_only_after_step_up_activation,
    declines_carry_the_right_response_codes,
    authorize_capture_refund_and_reverse_keep_the_ledger_whole,
    stale_authorizations_expire_and_release_the_hold,
    card_testing_is_throttled_per_card_and_across_cards,
    network_requests_must_be_signed_fresh_and_unseen,
    key_rotation_keeps_every_card_readable,
    no_card_number_or_security_code_in_logs_or_errors,
);

/// A card's full details, as the reveal shows them to its holder.
#[derive(Clone, Debug)]
pub(crate) struct Card {
    pub(crate) id: String,
    pub(crate) pan: String,
    pub(crate) exp_month: i64,
    pub(crate) exp_year: i64,
    pub(crate) cvc: String,
}

/// A verified customer with a funded wallet.
pub(crate) struct Holder {
    pub(crate) user: User,
    pub(crate) token: String,
}

impl<S: LedgerStore> TestApp<S> {
    /// A request from the card network, signed with its secret at the app's current time.
    pub(crate) async fn network(&self, path: &str, body: Value) -> Reply {
        let keys = self.cards.keys_configured().expect("card keys configured");
        let timestamp = i64::try_from(self.now_s()).unwrap();
        let signature = network_signature(
            keys.network_secret(),
            timestamp,
            "POST",
            path,
            body.to_string().as_bytes(),
        );
        self.call(
            post(path, body)
                .header("koban-network-id", keys.network_id())
                .header("koban-timestamp", &timestamp.to_string())
                .header("koban-signature", &signature),
        )
        .await
    }

    /// An authorization answer (the network API answers 200 for approvals and declines).
    pub(crate) async fn authorize(&self, body: Value) -> Value {
        let reply = self.network("/v1/network/authorizations", body).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply.body
    }

    async fn follow_up(&self, authorization: &str, kind: &str, body: Value) -> Reply {
        self.network(
            &format!("/v1/network/authorizations/{authorization}/{kind}"),
            body,
        )
        .await
    }

    pub(crate) async fn holder(&self, email: &str, admin: &User, funds: i64) -> Holder {
        let user = self.user(email).await;
        self.verified(&user, admin, "Card Holder").await;
        if funds > 0 {
            self.fund(&user.token, funds, &format!("fund-{email}"))
                .await;
        }
        let token = user.token.clone();
        Holder { user, token }
    }

    async fn issue(&self, holder: &Holder, name: &str, physical: bool) -> Value {
        let reply = self
            .call(
                post("/v1/cards", json!({ "name": name, "physical": physical }))
                    .bearer(&holder.token),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        reply.body
    }

    async fn activate(&self, holder: &mut Holder, id: &str, body: Value) -> Reply {
        let (reply, token) = self
            .stepped(
                &holder.user,
                &holder.token,
                &format!("/v1/cards/{id}/activate"),
                "unused",
                body,
            )
            .await;
        holder.token = token;
        reply
    }

    async fn reveal(&self, holder: &mut Holder, id: &str) -> Card {
        let (reply, token) = self
            .stepped(
                &holder.user,
                &holder.token,
                &format!("/v1/cards/{id}/reveal"),
                "unused",
                json!({}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        holder.token = token;
        Card {
            id: id.to_owned(),
            pan: reply.body["number"].as_str().unwrap().to_owned(),
            exp_month: reply.body["exp_month"].as_i64().unwrap(),
            exp_year: reply.body["exp_year"].as_i64().unwrap(),
            cvc: reply.body["security_code"].as_str().unwrap().to_owned(),
        }
    }

    /// Issues, activates and reveals a virtual card.
    pub(crate) async fn ready_card(&self, holder: &mut Holder, name: &str) -> Card {
        let id = self.issue(holder, name, false).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let activated = self.activate(holder, &id, json!({})).await;
        assert_eq!(activated.status, StatusCode::OK, "{activated:?}");
        self.reveal(holder, &id).await
    }

    /// Unfreezes a card and clears its wrong-code lock (step-up).
    async fn unfreeze(&self, holder: &mut Holder, card: &Card) -> Reply {
        let (reply, token) = self
            .stepped(
                &holder.user,
                &holder.token,
                &format!("/v1/cards/{}/unfreeze", card.id),
                "unused",
                json!({}),
            )
            .await;
        holder.token = token;
        reply
    }

    async fn set_controls(&self, holder: &mut Holder, card: &Card, controls: Value) -> Reply {
        let (reply, token) = self
            .stepped(
                &holder.user,
                &holder.token,
                &format!("/v1/cards/{}/controls", card.id),
                "unused",
                json!({ "controls": controls }),
            )
            .await;
        holder.token = token;
        reply
    }

    async fn audit_actions(&self, admin: &User) -> Vec<(String, String)> {
        let audit = self
            .call(get("/v1/ops/audit?limit=200").bearer(&admin.token))
            .await;
        assert_eq!(audit.status, StatusCode::OK, "{audit:?}");
        audit
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["details"]["card"]
                        .as_str()
                        .or(e["subject"].as_str())
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect()
    }
}

/// An online purchase with the card's true details.
pub(crate) fn purchase(card: &Card, reference: &str, amount: i64) -> Value {
    json!({
        "network_ref": reference,
        "pan": card.pan,
        "exp_month": card.exp_month,
        "exp_year": card.exp_year,
        "security_code": card.cvc,
        "amount": amount,
        "currency": "JPY",
        "merchant_id": "mer-books-001",
        "merchant_name": "Kanda Books",
        "mcc": "5942",
        "country": "JP",
        "channel": "online",
        "client_ip": "198.51.100.7",
    })
}

pub(crate) fn code(answer: &Value) -> &str {
    answer["response_code"].as_str().unwrap_or("")
}

fn controls(patch: Value) -> Value {
    let mut base = json!({
        "channels": { "online": true, "in_store": true, "atm": false },
        "per_transaction_max": null,
        "daily_max": null,
        "blocked_mccs": [],
        "allowed_countries": null,
    });
    for (k, v) in patch.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

/// A number with the issuer's BIN and a valid check digit that was never issued.
pub(crate) fn unissued_pan(seed: u64) -> String {
    let body = format!("499910{:09}", seed % 1_000_000_000);
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|p| luhn_valid(p))
        .unwrap()
}

async fn cards_are_issued_masked_and_work_only_after_step_up_activation<S: LedgerStore>(
    app: TestApp<S>,
) {
    let admin = operator(&app, "admin@example.com", "admin").await;

    // Cards are for verified customers.
    let unverified = app.user("early@example.com").await;
    let early = app
        .call(post("/v1/cards", json!({ "name": "Shop" })).bearer(&unverified.token))
        .await;
    assert_eq!(early.status, StatusCode::UNPROCESSABLE_ENTITY, "{early:?}");
    assert_eq!(early.body["code"], "verification_required");

    let mut alice = app.holder("alice@example.com", &admin, 20_000).await;
    let mut ids = Vec::new();
    for name in ["Books", "Groceries", "Travel"] {
        let card = app.issue(&alice, name, false).await;
        assert_eq!(card["status"], "inactive");
        assert_eq!(card["bin"], "499910");
        let masked = card["masked_number"].as_str().unwrap();
        assert!(
            masked.starts_with("499910") && masked.ends_with(card["last4"].as_str().unwrap()),
            "{masked}"
        );
        assert_eq!(
            masked.chars().filter(char::is_ascii_digit).count(),
            10,
            "BIN and last four at most"
        );
        ids.push(card["id"].as_str().unwrap().to_owned());
    }
    let bad_name = app
        .call(post("/v1/cards", json!({ "name": "" })).bearer(&alice.token))
        .await;
    assert_eq!(bad_name.status, StatusCode::UNPROCESSABLE_ENTITY);

    // The list shows masked numbers only: no full number anywhere in it.
    let list = app.call(get("/v1/cards").bearer(&alice.token)).await;
    assert_eq!(list.body.as_array().unwrap().len(), 3);

    // Reveal needs step-up bound to this card: none, a wrong code, or a confirmation for
    // another card are refused.
    let plain = app
        .call(post(&format!("/v1/cards/{}/reveal", ids[0]), json!({})).bearer(&alice.token))
        .await;
    assert_eq!(plain.status, StatusCode::FORBIDDEN);
    assert_eq!(plain.problem(), "step-up-required");
    assert!(plain.body.get("number").is_none());
    let wrong = app
        .call(
            post(
                &format!("/v1/cards/{}/reveal", ids[0]),
                json!({ "step_up": { "id": plain.body["step_up"]["id"], "code": "000000" } }),
            )
            .bearer(&alice.token),
        )
        .await;
    assert!(
        [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&wrong.status),
        "{wrong:?}"
    );
    assert!(wrong.body.get("number").is_none());
    let challenge = app
        .call(post(&format!("/v1/cards/{}/reveal", ids[0]), json!({})).bearer(&alice.token))
        .await;
    let other_card = app
        .call(
            post(
                &format!("/v1/cards/{}/reveal", ids[1]),
                json!({ "step_up": { "id": challenge.body["step_up"]["id"], "code": app.totp(&alice.user.seed) } }),
            )
            .bearer(&alice.token),
        )
        .await;
    app.next_step();
    assert_eq!(other_card.status, StatusCode::FORBIDDEN, "{other_card:?}");
    assert!(other_card.body.get("number").is_none());

    // With step-up: Luhn-valid, unique numbers under the BIN, 3-digit codes.
    let mut numbers = Vec::new();
    for id in &ids {
        let card = app.reveal(&mut alice, id).await;
        assert!(luhn_valid(&card.pan), "{}", card.pan.len());
        assert!(card.pan.starts_with("499910") && card.pan.len() == 16);
        assert_eq!(card.cvc.len(), 3);
        assert!(card.exp_year >= 2029);
        numbers.push(card);
    }
    let mut distinct: Vec<&str> = numbers.iter().map(|c| c.pan.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "card numbers are unique");

    // The reveal is in the audit chain and the holder is told (masked only).
    let actions = app.audit_actions(&admin).await;
    assert_eq!(
        actions
            .iter()
            .filter(|(a, s)| a == "card.revealed" && ids.contains(s))
            .count(),
        3,
        "{actions:?}"
    );
    let mail = app.mail("alice@example.com").await;
    assert!(
        mail.iter()
            .any(|(s, _)| s == "Your card details were shown")
    );
    for (_, body) in &mail {
        for card in &numbers {
            assert!(!body.contains(&card.pan), "no full number by mail");
        }
    }

    // Rate-limited: five reveals an hour per card.
    for _ in 0..4 {
        app.reveal(&mut alice, &ids[2]).await;
    }
    let sixth = app
        .call(post(&format!("/v1/cards/{}/reveal", ids[2]), json!({})).bearer(&alice.token))
        .await;
    assert_eq!(sixth.status, StatusCode::UNPROCESSABLE_ENTITY, "{sixth:?}");
    assert_eq!(sixth.body["code"], "reveal_limit");

    // An inactive card declines every authorization, even with its true details.
    let inactive = app
        .authorize(purchase(&numbers[0], "net-inactive", 500))
        .await;
    assert_eq!(code(&inactive), "78", "{inactive}");
    assert_eq!(inactive["approved"], false);

    // Activation needs step-up: a session alone (the attacker's password and a stolen
    // session) does not activate it.
    let no_step = app
        .call(post(&format!("/v1/cards/{}/activate", ids[0]), json!({})).bearer(&alice.token))
        .await;
    assert_eq!(no_step.problem(), "step-up-required");
    let guessed = app
        .call(
            post(
                &format!("/v1/cards/{}/activate", ids[0]),
                json!({ "step_up": { "id": no_step.body["step_up"]["id"], "code": "123456" } }),
            )
            .bearer(&alice.token),
        )
        .await;
    assert!(
        [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&guessed.status),
        "{guessed:?}"
    );
    assert_eq!(
        code(
            &app.authorize(purchase(&numbers[0], "net-inactive-2", 500))
                .await
        ),
        "78"
    );
    let activated = app.activate(&mut alice, &ids[0], json!({})).await;
    assert_eq!(activated.status, StatusCode::OK, "{activated:?}");
    assert_eq!(activated.body["status"], "active");
    let approved = app.authorize(purchase(&numbers[0], "net-first", 500)).await;
    assert_eq!(code(&approved), "00", "{approved}");
    assert_eq!(approved["approved"], true);
    assert!(
        approved["authorization_id"]
            .as_str()
            .unwrap()
            .starts_with("ca_")
    );
    assert_eq!(app.wallet(&alice.token).await["available"], 19_500);

    // A physical card: its activation code travels in a (sandbox) letter; a wrong code is
    // refused before any step-up, and the right one with step-up activates it.
    let physical = app.issue(&alice, "Plastic", true).await;
    assert_eq!(physical["physical"], true);
    let physical_id = physical["id"].as_str().unwrap().to_owned();
    let letter = app
        .mail("alice@example.com")
        .await
        .into_iter()
        .find(|(s, _)| s.starts_with("Your card activation letter"))
        .expect("an activation letter");
    let letter_code: String = letter
        .1
        .split_whitespace()
        .map(|w| w.trim_end_matches('.'))
        .find(|w| w.len() == 8 && w.chars().all(|c| c.is_ascii_digit()))
        .expect("an 8-digit code")
        .to_owned();
    let without = app
        .call(post(&format!("/v1/cards/{physical_id}/activate"), json!({})).bearer(&alice.token))
        .await;
    assert_eq!(
        without.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{without:?}"
    );
    let wrong_code = if letter_code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let wrong_letter = app
        .call(
            post(
                &format!("/v1/cards/{physical_id}/activate"),
                json!({ "activation_code": wrong_code }),
            )
            .bearer(&alice.token),
        )
        .await;
    assert_eq!(wrong_letter.status, StatusCode::UNPROCESSABLE_ENTITY);
    let done = app
        .activate(
            &mut alice,
            &physical_id,
            json!({ "activation_code": letter_code }),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{done:?}");
    assert_eq!(done.body["status"], "active");

    // Closing is for good: a closed card answers 14.
    let closed = app
        .call(post(&format!("/v1/cards/{}/close", ids[1]), json!({})).bearer(&alice.token))
        .await;
    assert_eq!(closed.body["status"], "closed");
    assert_eq!(
        code(
            &app.authorize(purchase(&numbers[1], "net-closed", 100))
                .await
        ),
        "14"
    );
    // Another customer cannot see or touch Alice's cards.
    let bob = app.user("bob@example.com").await;
    for path in [
        format!("/v1/cards/{}", ids[0]),
        format!("/v1/cards/{}/activity", ids[0]),
    ] {
        assert_eq!(
            app.call(get(&path).bearer(&bob.token)).await.status,
            StatusCode::NOT_FOUND
        );
    }
    let bob_freeze = app
        .call(post(&format!("/v1/cards/{}/freeze", ids[0]), json!({})).bearer(&bob.token))
        .await;
    assert_eq!(bob_freeze.status, StatusCode::NOT_FOUND);
    app.assert_money_invariants().await;
}

async fn declines_carry_the_right_response_codes<S: LedgerStore>(app: TestApp<S>) {
    let admin = operator(&app, "admin@example.com", "admin").await;
    let mut alice = app.holder("alice@example.com", &admin, 10_000).await;
    let card = app.ready_card(&mut alice, "Everyday").await;

    // A wrong expiry online answers like a wrong code (N7), so neither can be guessed apart;
    // unknown number: 14; wrong currency: 57; insufficient funds: 51.
    let mut wrong_expiry = purchase(&card, "d-expiry", 100);
    wrong_expiry["exp_year"] = json!(card.exp_year + 1);
    assert_eq!(code(&app.authorize(wrong_expiry).await), "N7");
    let mut unknown = purchase(&card, "d-unknown", 100);
    unknown["pan"] = json!(unissued_pan(42));
    assert_eq!(code(&app.authorize(unknown).await), "14");
    let mut dollars = purchase(&card, "d-usd", 100);
    dollars["currency"] = json!("USD");
    assert_eq!(code(&app.authorize(dollars).await), "57");
    assert_eq!(
        code(&app.authorize(purchase(&card, "d-funds", 10_001)).await),
        "51"
    );
    // Online without a security code is a wrong code.
    let mut no_code = purchase(&card, "d-nocode", 100);
    no_code.as_object_mut().unwrap().remove("security_code");
    assert_eq!(code(&app.authorize(no_code).await), "N7");
    // A virtual card starts online only: in store (no chip checked here) is not permitted.
    let mut in_store = purchase(&card, "d-instore", 100);
    in_store["channel"] = json!("in_store");
    in_store.as_object_mut().unwrap().remove("security_code");
    assert_eq!(code(&app.authorize(in_store).await), "57");

    // The holder's controls: per-transaction limit 61, blocked MCC 57, channel 57, country
    // 62, daily limit 61.
    let set = app
        .set_controls(
            &mut alice,
            &card,
            controls(json!({
                "per_transaction_max": 3_000,
                "daily_max": 4_000,
                "blocked_mccs": ["7995"],
                "allowed_countries": ["JP"],
            })),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    assert_eq!(set.body["controls"]["blocked_mccs"], json!(["7995"]));
    assert_eq!(
        code(&app.authorize(purchase(&card, "d-pertx", 3_001)).await),
        "61"
    );
    let mut casino = purchase(&card, "d-mcc", 100);
    casino["mcc"] = json!("7995");
    assert_eq!(code(&app.authorize(casino).await), "57");
    let mut atm = purchase(&card, "d-atm", 100);
    atm["channel"] = json!("atm");
    assert_eq!(code(&app.authorize(atm).await), "57");
    let mut abroad = purchase(&card, "d-country", 100);
    abroad["country"] = json!("US");
    assert_eq!(code(&app.authorize(abroad).await), "62");
    assert_eq!(
        code(&app.authorize(purchase(&card, "d-ok-1", 2_500)).await),
        "00"
    );
    assert_eq!(
        code(&app.authorize(purchase(&card, "d-daily", 2_000)).await),
        "61",
        "2,500 + 2,000 is over the 4,000 daily limit"
    );
    assert_eq!(
        code(&app.authorize(purchase(&card, "d-ok-2", 1_500)).await),
        "00"
    );
    // Invalid controls are refused and change nothing.
    let bad = app
        .call(
            post(
                &format!("/v1/cards/{}/controls", card.id),
                json!({ "controls": controls(json!({ "blocked_mccs": ["79"] })) }),
            )
            .bearer(&alice.token),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
    let shown = app
        .call(get(&format!("/v1/cards/{}", card.id)).bearer(&alice.token))
        .await;
    assert_eq!(shown.body["controls"]["per_transaction_max"], 3_000);

    // Frozen by the holder (no step-up needed to freeze): 62; unfreezing needs step-up.
    let frozen = app
        .call(post(&format!("/v1/cards/{}/freeze", card.id), json!({})).bearer(&alice.token))
        .await;
    assert_eq!(frozen.body["frozen"], true);
    assert_eq!(
        code(&app.authorize(purchase(&card, "d-frozen", 100)).await),
        "62"
    );
    let unfreeze = app
        .call(post(&format!("/v1/cards/{}/unfreeze", card.id), json!({})).bearer(&alice.token))
        .await;
    assert_eq!(unfreeze.problem(), "step-up-required");
    let unfrozen = app.unfreeze(&mut alice, &card).await;
    assert_eq!(unfrozen.body["frozen"], false, "{unfrozen:?}");

    // Frozen by an operator: 62, and the holder cannot unfreeze it.
    let analyst = operator(&app, "analyst@example.com", "analyst").await;
    let op = app
        .call(
            post(
                &format!("/v1/ops/cards/{}/freeze", card.id),
                json!({ "frozen": true, "reason": "suspected compromise" }),
            )
            .bearer(&analyst.token),
        )
        .await;
    assert_eq!(op.status, StatusCode::OK, "{op:?}");
    assert_eq!(op.body["frozen_by_operator"], true);
    assert_eq!(
        code(&app.authorize(purchase(&card, "d-opfrozen", 100)).await),
        "62"
    );
    let customer_try = app
        .call(
            post(
                &format!("/v1/ops/cards/{}/freeze", card.id),
                json!({ "frozen": false, "reason": "mine" }),
            )
            .bearer(&alice.token),
        )
        .await;
    assert_eq!(customer_try.status, StatusCode::FORBIDDEN);
    let lifted = app
        .call(
            post(
                &format!("/v1/ops/cards/{}/freeze", card.id),
                json!({ "frozen": false, "reason": "holder confirmed" }),
            )
            .bearer(&analyst.token),
        )
        .await;
    assert_eq!(lifted.body["frozen_by_operator"], false);
    assert!(
        app.audit_actions(&admin)
            .await
            .iter()
            .any(|(a, s)| a == "card.operator_frozen" && s == &card.id),
        "operator freezes are audited"
    );

    // Expired: the same card, once its expiry month has passed.
    app.clock.advance_secs(4 * 366 * 86_400);
    assert_eq!(
        code(&app.authorize(purchase(&card, "d-expired", 100)).await),
        "54"
    );
    // Declines are in the holder's activity with their codes; nothing was held by them.
    let token = app.login(&alice.user).await;
    let activity = app
        .call(get(&format!("/v1/cards/{}/activity?limit=200", card.id)).bearer(&token))
        .await;
    let codes: Vec<&str> = activity
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["response_code"].as_str().unwrap())
        .collect();
    for expected in ["54", "57", "61", "62", "N7", "00"] {
        assert!(codes.contains(&expected), "{expected} in {codes:?}");
    }
    app.assert_money_invariants().await;
}

async fn authorize_capture_refund_and_reverse_keep_the_ledger_whole<S: LedgerStore>(
    app: TestApp<S>,
) {
    let admin = operator(&app, "admin@example.com", "admin").await;
    let mut alice = app.holder("alice@example.com", &admin, 10_000).await;
    let card = app.ready_card(&mut alice, "Online").await;

    // Authorize 3,000: a hold, available drops, balance does not.
    let auth = app.authorize(purchase(&card, "flow-1", 3_000)).await;
    assert_eq!(code(&auth), "00", "{auth}");
    let id = auth["authorization_id"].as_str().unwrap().to_owned();
    assert_eq!(auth["held"], 3_000);
    let wallet = app.wallet(&alice.token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["available"].as_i64()),
        (Some(10_000), Some(7_000))
    );
    app.assert_money_invariants().await;
    // A retry of the same network message (signed anew) answers the same and holds
    // nothing more.
    app.clock.advance_secs(1);
    let again = app.authorize(purchase(&card, "flow-1", 3_000)).await;
    assert_eq!(again["authorization_id"], auth["authorization_id"]);
    assert_eq!(again["replayed"], true);
    assert_eq!(app.wallet(&alice.token).await["available"], 7_000);
    // The cardholder's notice was written before the approval answered. Lost with a crash
    // (deleted here), the network's retry writes it again, once.
    let notices = async || {
        app.notices_to("alice@example.com", "Card payment")
            .await
            .len()
    };
    assert_eq!(notices().await, 1);
    app.lose_notices("alice@example.com", "Card payment").await;
    for _ in 0..2 {
        app.clock.advance_secs(1);
        let retried = app.authorize(purchase(&card, "flow-1", 3_000)).await;
        assert_eq!(retried["replayed"], true);
        assert_eq!(notices().await, 1, "restored once");
    }

    // Capture above the authorization is refused (13) and changes nothing.
    let over = app
        .follow_up(
            &id,
            "clearings",
            json!({ "clearing_id": "c-over", "amount": 3_001 }),
        )
        .await;
    assert_eq!(over.status, StatusCode::OK, "{over:?}");
    assert_eq!(code(&over.body), "13");
    assert_eq!(app.wallet(&alice.token).await["available"], 7_000);

    // Split shipment: 1,000 now, 1,500 final; the last 500 is released.
    let first = app
        .follow_up(
            &id,
            "clearings",
            json!({ "clearing_id": "c-1", "amount": 1_000 }),
        )
        .await;
    assert_eq!(code(&first.body), "00", "{first:?}");
    assert_eq!(
        (&first.body["captured"], &first.body["held"]),
        (&json!(1_000), &json!(2_000))
    );
    let wallet = app.wallet(&alice.token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["available"].as_i64()),
        (Some(9_000), Some(7_000))
    );
    app.assert_money_invariants().await;
    let last = app
        .follow_up(
            &id,
            "clearings",
            json!({ "clearing_id": "c-2", "amount": 1_500, "final": true }),
        )
        .await;
    assert_eq!(code(&last.body), "00", "{last:?}");
    assert_eq!(last.body["status"], "closed");
    assert_eq!(last.body["captured"], 2_500);
    app.clock.advance_secs(1);
    let retry = app
        .follow_up(
            &id,
            "clearings",
            json!({ "clearing_id": "c-2", "amount": 1_500, "final": true }),
        )
        .await;
    assert_eq!(retry.body["replayed"], true, "{retry:?}");
    let wallet = app.wallet(&alice.token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["available"].as_i64()),
        (Some(7_500), Some(7_500))
    );
    app.assert_money_invariants().await;

    // Refunds: up to what was captured, idempotent.
    let refund = app
        .follow_up(
            &id,
            "refunds",
            json!({ "refund_id": "r-1", "amount": 1_000 }),
        )
        .await;
    assert_eq!(code(&refund.body), "00", "{refund:?}");
    app.clock.advance_secs(1);
    let refund_retry = app
        .follow_up(
            &id,
            "refunds",
            json!({ "refund_id": "r-1", "amount": 1_000 }),
        )
        .await;
    assert_eq!(refund_retry.body["replayed"], true);
    let too_much = app
        .follow_up(
            &id,
            "refunds",
            json!({ "refund_id": "r-2", "amount": 1_501 }),
        )
        .await;
    assert_ne!(code(&too_much.body), "00", "{too_much:?}");
    assert_eq!(app.wallet(&alice.token).await["balance"], 8_500);
    app.assert_money_invariants().await;

    // Operation ids are the network's per authorization: another authorization may use
    // "c-1" again and is captured for real.
    let second = app.authorize(purchase(&card, "flow-2", 400)).await;
    let second_id = second["authorization_id"].as_str().unwrap().to_owned();
    let reused = app
        .follow_up(
            &second_id,
            "clearings",
            json!({ "clearing_id": "c-1", "amount": 400, "final": true }),
        )
        .await;
    assert_eq!(reused.body["replayed"], false, "{reused:?}");
    assert_eq!(reused.body["captured"], 400);
    assert_eq!(app.wallet(&alice.token).await["balance"], 8_100);
    app.assert_money_invariants().await;

    // A hotel: authorize 2,000, increment 1,000, then the stay is cancelled (reversal).
    let hotel = app.authorize(purchase(&card, "flow-hotel", 2_000)).await;
    let hotel_id = hotel["authorization_id"].as_str().unwrap().to_owned();
    let inc = app
        .follow_up(
            &hotel_id,
            "increments",
            json!({ "increment_id": "i-1", "amount": 1_000 }),
        )
        .await;
    assert_eq!(code(&inc.body), "00", "{inc:?}");
    assert_eq!(inc.body["held"], 3_000);
    assert_eq!(app.wallet(&alice.token).await["available"], 5_100);
    let huge = app
        .follow_up(
            &hotel_id,
            "increments",
            json!({ "increment_id": "i-2", "amount": 100_000 }),
        )
        .await;
    assert_eq!(code(&huge.body), "51", "{huge:?}");
    let partial = app
        .follow_up(
            &hotel_id,
            "reversals",
            json!({ "reversal_id": "v-1", "amount": 500 }),
        )
        .await;
    assert_eq!(partial.body["held"], 2_500, "{partial:?}");
    let reversed = app
        .follow_up(&hotel_id, "reversals", json!({ "reversal_id": "v-2" }))
        .await;
    assert_eq!(reversed.body["status"], "reversed", "{reversed:?}");
    let late = app
        .follow_up(
            &hotel_id,
            "clearings",
            json!({ "clearing_id": "c-late", "amount": 100 }),
        )
        .await;
    assert_ne!(
        code(&late.body),
        "00",
        "nothing to capture after a reversal"
    );
    let wallet = app.wallet(&alice.token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["available"].as_i64()),
        (Some(8_100), Some(8_100))
    );
    // Unknown authorizations are not found.
    let unknown = app
        .follow_up(
            "ca_00000000000000000000000000000000",
            "reversals",
            json!({ "reversal_id": "v-x" }),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    app.assert_money_invariants().await;
    app.settle().await;
    app.assert_money_invariants().await;
}

async fn stale_authorizations_expire_and_release_the_hold<S: LedgerStore>(app: TestApp<S>) {
    let admin = operator(&app, "admin@example.com", "admin").await;
    let mut alice = app.holder("alice@example.com", &admin, 5_000).await;
    let card = app.ready_card(&mut alice, "Forgotten").await;
    let auth = app.authorize(purchase(&card, "stale-1", 1_200)).await;
    let id = auth["authorization_id"].as_str().unwrap().to_owned();
    assert_eq!(app.wallet(&alice.token).await["available"], 3_800);

    // Six days on: still held.
    app.clock.advance_secs(6 * 86_400);
    app.store.expire_holds(100).await.unwrap();
    app.cards.tick().await.unwrap();
    app.pay.tick().await.unwrap();
    let token = app.login(&alice.user).await;
    assert_eq!(app.wallet(&token).await["available"], 3_800);

    // Past seven days: the hold is released and the authorization says expired.
    app.clock.advance_secs(86_400 + 60);
    app.store.expire_holds(100).await.unwrap();
    app.cards.tick().await.unwrap();
    app.pay.tick().await.unwrap();
    let token = app.login(&alice.user).await;
    let wallet = app.wallet(&token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["available"].as_i64()),
        (Some(5_000), Some(5_000))
    );
    let activity = app
        .call(get(&format!("/v1/cards/{}/activity", card.id)).bearer(&token))
        .await;
    let entry = activity
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["authorization_id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["status"], "expired");
    assert_eq!(entry["held"], 0);
    // A late clearing of an expired authorization is refused and moves nothing.
    let late = app
        .follow_up(
            &id,
            "clearings",
            json!({ "clearing_id": "late", "amount": 1_200 }),
        )
        .await;
    assert_ne!(code(&late.body), "00", "{late:?}");
    assert_eq!(app.wallet(&token).await["balance"], 5_000);
    app.assert_money_invariants().await;
}

async fn card_testing_is_throttled_per_card_and_across_cards<S: LedgerStore>(app: TestApp<S>) {
    let admin = operator(&app, "admin@example.com", "admin").await;
    let mut alice = app.holder("alice@example.com", &admin, 5_000).await;
    let card = app.ready_card(&mut alice, "Target").await;

    // Per card: three wrong codes lock it; then even the right code is declined (62).
    for (i, wrong) in ["000", "001", "002"].iter().enumerate() {
        let guess = if *wrong == card.cvc { "003" } else { wrong };
        let mut attempt = purchase(&card, &format!("guess-{i}"), 100);
        attempt["security_code"] = json!(guess);
        attempt["merchant_id"] = json!(format!("mer-guess-{i}"));
        attempt["client_ip"] = json!(format!("203.0.113.{i}"));
        assert_eq!(code(&app.authorize(attempt).await), "N7");
    }
    let mut right = purchase(&card, "guess-right", 100);
    right["merchant_id"] = json!("mer-elsewhere");
    right["client_ip"] = json!("192.0.2.200");
    assert_eq!(code(&app.authorize(right.clone()).await), "62");
    let shown = app
        .call(get(&format!("/v1/cards/{}", card.id)).bearer(&alice.token))
        .await;
    assert_eq!(shown.body["locked"], true);
    // The holder clears the lock with step-up.
    let unlocked = app.unfreeze(&mut alice, &card).await;
    assert_eq!(unlocked.body["locked"], false, "{unlocked:?}");
    right["network_ref"] = json!("guess-right-2");
    assert_eq!(code(&app.authorize(right).await), "00");

    // Guesses sent all at once are counted one after the other: three are checked (N7),
    // the rest find the card locked (62).
    let wrong: Vec<String> = (100..120)
        .map(|n| n.to_string())
        .filter(|c| *c != card.cvc)
        .take(6)
        .collect();
    let guess = |i: usize| {
        let mut attempt = purchase(&card, &format!("burst-{i}"), 100);
        attempt["security_code"] = json!(wrong[i]);
        attempt["merchant_id"] = json!(format!("mer-burst-{i}"));
        attempt["client_ip"] = json!(format!("198.51.100.{}", 100 + i));
        attempt
    };
    let burst = tokio::join!(
        app.authorize(guess(0)),
        app.authorize(guess(1)),
        app.authorize(guess(2)),
        app.authorize(guess(3)),
        app.authorize(guess(4)),
        app.authorize(guess(5)),
    );
    let mut codes = vec![
        code(&burst.0).to_owned(),
        code(&burst.1).to_owned(),
        code(&burst.2).to_owned(),
        code(&burst.3).to_owned(),
        code(&burst.4).to_owned(),
        code(&burst.5).to_owned(),
    ];
    codes.sort();
    assert_eq!(codes, ["62", "62", "62", "N7", "N7", "N7"], "{codes:?}");
    let unlocked = app.unfreeze(&mut alice, &card).await;
    assert_eq!(unlocked.body["locked"], false, "{unlocked:?}");

    // Across cards: numbers tried at one merchant, each failing once. From the fifth
    // distinct card the merchant is declined (05), even for a genuine card; an alert is
    // raised and audited.
    let mut answers = Vec::new();
    for i in 0..6u64 {
        let mut attempt = purchase(&card, &format!("test-{i}"), 1);
        attempt["pan"] = json!(unissued_pan(1_000 + i));
        attempt["merchant_id"] = json!("mer-tester");
        attempt["client_ip"] = json!(format!("192.0.2.{i}"));
        answers.push(code(&app.authorize(attempt).await).to_owned());
    }
    assert_eq!(answers[..5], ["14", "14", "14", "14", "14"], "{answers:?}");
    assert_eq!(answers[5], "05", "{answers:?}");
    let mut genuine = purchase(&card, "test-genuine", 100);
    genuine["merchant_id"] = json!("mer-tester");
    assert_eq!(code(&app.authorize(genuine).await), "05");
    // The same from one network address across merchants.
    let mut from_ip = Vec::new();
    for i in 0..6u64 {
        let mut attempt = purchase(&card, &format!("ip-{i}"), 1);
        attempt["pan"] = json!(unissued_pan(2_000 + i));
        attempt["merchant_id"] = json!(format!("mer-ip-{i}"));
        attempt["client_ip"] = json!("198.18.0.9");
        from_ip.push(code(&app.authorize(attempt).await).to_owned());
    }
    assert_eq!(from_ip[5], "05", "{from_ip:?}");
    // A normal shop elsewhere is unaffected.
    let mut normal = purchase(&card, "test-normal", 100);
    normal["client_ip"] = json!("192.0.2.250");
    assert_eq!(code(&app.authorize(normal).await), "00");

    let alerts = app.call(get("/v1/ops/alerts").bearer(&admin.token)).await;
    assert!(
        alerts
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "card_testing"),
        "{alerts:?}"
    );
    let actions = app.audit_actions(&admin).await;
    assert!(
        actions
            .iter()
            .any(|(a, s)| a == "alert.card_testing" && s == "merchant:mer-tester"),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|(a, s)| a == "alert.card_testing" && s == "ip:198.18.0.9"),
        "{actions:?}"
    );

    // After the block window the merchant may try again.
    app.clock.advance_secs(16 * 60);
    let mut later = purchase(&card, "test-later", 100);
    later["merchant_id"] = json!("mer-tester");
    assert_eq!(code(&app.authorize(later).await), "00");
    // The background pruning forgets failures that left the window and blocks that ended.
    app.cards.tick().await.unwrap();
    for count in [
        "SELECT COUNT(*) FROM card_testing_failures",
        "SELECT COUNT(*) FROM card_testing_blocks",
    ] {
        let rows = app.pay.db().read(count, vec![]).await.unwrap();
        assert_eq!(rows[0].i64(0).unwrap(), 0, "{count}");
    }
    app.assert_money_invariants().await;
}

async fn network_requests_must_be_signed_fresh_and_unseen<S: LedgerStore>(app: TestApp<S>) {
    let admin = operator(&app, "admin@example.com", "admin").await;
    let mut alice = app.holder("alice@example.com", &admin, 5_000).await;
    let card = app.ready_card(&mut alice, "Signed").await;
    let keys = app.cards.keys_configured().unwrap().clone();
    let path = "/v1/network/authorizations";
    let body = purchase(&card, "sig-1", 700);
    let now = i64::try_from(app.now_s()).unwrap();
    let signed = |timestamp: i64, body: &Value| {
        network_signature(
            keys.network_secret(),
            timestamp,
            "POST",
            path,
            body.to_string().as_bytes(),
        )
    };
    let send = |network: &str, timestamp: i64, signature: String, body: Value| -> Call {
        post(path, body)
            .header("koban-network-id", network)
            .header("koban-timestamp", &timestamp.to_string())
            .header("koban-signature", &signature)
    };

    // No credential, a session instead of a signature, a wrong secret, another body.
    let bare = app.call(post(path, body.clone())).await;
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED, "{bare:?}");
    let with_session = app
        .call(post(path, body.clone()).bearer(&alice.token))
        .await;
    assert_eq!(with_session.status, StatusCode::UNAUTHORIZED);
    let forged = network_signature(
        b"not the secret",
        now,
        "POST",
        path,
        body.to_string().as_bytes(),
    );
    let wrong_secret = app
        .call(send(keys.network_id(), now, forged, body.clone()))
        .await;
    assert_eq!(wrong_secret.status, StatusCode::UNAUTHORIZED);
    let mut tampered = body.clone();
    tampered["amount"] = json!(1);
    let swapped = app
        .call(send(keys.network_id(), now, signed(now, &body), tampered))
        .await;
    assert_eq!(swapped.status, StatusCode::UNAUTHORIZED);
    let other_network = app
        .call(send("net-other", now, signed(now, &body), body.clone()))
        .await;
    assert_eq!(other_network.status, StatusCode::UNAUTHORIZED);
    // Stale timestamps are refused even when correctly signed.
    let stale = app
        .call(send(
            keys.network_id(),
            now - 600,
            signed(now - 600, &body),
            body.clone(),
        ))
        .await;
    assert_eq!(stale.status, StatusCode::UNPROCESSABLE_ENTITY, "{stale:?}");
    assert_eq!(
        app.wallet(&alice.token).await["available"],
        5_000,
        "nothing held"
    );

    // The genuine request is approved once; the identical message again is a replay.
    let genuine = app
        .call(send(
            keys.network_id(),
            now,
            signed(now, &body),
            body.clone(),
        ))
        .await;
    assert_eq!(code(&genuine.body), "00", "{genuine:?}");
    let replay = app
        .call(send(
            keys.network_id(),
            now,
            signed(now, &body),
            body.clone(),
        ))
        .await;
    assert_eq!(replay.status, StatusCode::CONFLICT, "{replay:?}");
    assert_eq!(app.wallet(&alice.token).await["available"], 4_300);
    app.assert_money_invariants().await;
}

async fn key_rotation_keeps_every_card_readable<S: LedgerStore>(app: TestApp<S>) {
    let admin = operator(&app, "admin@example.com", "admin").await;
    let mut alice = app.holder("alice@example.com", &admin, 0).await;
    let before = [
        app.ready_card(&mut alice, "One").await,
        app.ready_card(&mut alice, "Two").await,
    ];
    let old_keys = app.cards.keys_configured().unwrap().clone();
    let rotated = old_keys.with_new_data_key();
    assert_ne!(rotated.active_id(), old_keys.active_id());
    let rotated_cards = app.cards.clone().with_keys(rotated.clone());
    let app = app.with_cards(rotated_cards);
    // A card issued after rotation is sealed under the new key; the old ones still open.
    let after = app.ready_card(&mut alice, "Three").await;
    assert_eq!(app.cards.reseal_cards().await.unwrap(), 2);
    assert_eq!(
        app.cards.reseal_cards().await.unwrap(),
        0,
        "nothing left to re-seal"
    );
    // Once re-sealed, the old key alone no longer opens them: they moved to the new key.
    let old_only = app.cards.clone().with_keys(old_keys);
    assert_eq!(
        old_only.missing_card_keys().await.unwrap(),
        vec![rotated.active_id().to_owned()]
    );
    // The rotated key file, as written and read back, opens everything.
    let reloaded = app
        .cards
        .clone()
        .with_keys(koban_cards::card_keys::CardKeys::from_json(&rotated.to_json()).unwrap());
    assert!(reloaded.missing_card_keys().await.unwrap().is_empty());
    for card in before.iter().chain([&after]) {
        let shown = app.reveal(&mut alice, &card.id).await;
        assert_eq!(shown.pan, card.pan);
        assert_eq!(shown.cvc, card.cvc, "the security code is derived the same");
    }
}

/// Every log line of the test process, captured (once) at TRACE level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the only log subscriber of the test process");
        captured
    })
    .clone()
}

async fn no_card_number_or_security_code_in_logs_or_errors<S: LedgerStore>(app: TestApp<S>) {
    let logs = captured_logs();
    tracing::info!("card leak story starts");
    let admin = operator(&app, "admin@example.com", "admin").await;
    let mut alice = app.holder("alice@example.com", &admin, 5_000).await;
    let card = app.ready_card(&mut alice, "Secret").await;
    let mut replies = Vec::new();

    // Declines of every kind, wrong codes, and hostile bodies that carry the number in
    // wrong places or shapes.
    let mut wrong_code = purchase(&card, "leak-1", 100);
    wrong_code["security_code"] = json!(if card.cvc == "999" { "998" } else { "999" });
    replies.push(app.network("/v1/network/authorizations", wrong_code).await);
    let mut pan_as_number = purchase(&card, "leak-2", 100);
    pan_as_number["pan"] = json!(card.pan.parse::<u64>().unwrap());
    replies.push(
        app.network("/v1/network/authorizations", pan_as_number)
            .await,
    );
    let mut pan_in_name = purchase(&card, "leak-3", 100);
    pan_in_name["merchant_name"] = json!(format!("{} {}", card.pan, "x".repeat(60)));
    replies.push(app.network("/v1/network/authorizations", pan_in_name).await);
    let mut pan_in_ref = purchase(&card, "leak-4", 100);
    pan_in_ref["network_ref"] = json!(format!("{}\u{7}", card.pan));
    replies.push(app.network("/v1/network/authorizations", pan_in_ref).await);
    let mut unknown_field = purchase(&card, "leak-5", 100);
    unknown_field[card.pan.as_str()] = json!(card.cvc);
    replies.push(
        app.network("/v1/network/authorizations", unknown_field)
            .await,
    );
    let mut short = purchase(&card, "leak-6", 100);
    short["pan"] = json!(&card.pan[..15]);
    replies.push(app.network("/v1/network/authorizations", short).await);
    let mut bad_amount = purchase(&card, "leak-7", 100);
    bad_amount["amount"] = json!(-5);
    replies.push(app.network("/v1/network/authorizations", bad_amount).await);
    let unsigned = app
        .call(post(
            "/v1/network/authorizations",
            purchase(&card, "leak-8", 100),
        ))
        .await;
    replies.push(unsigned);
    replies.push(
        app.follow_up(
            &card.pan,
            "clearings",
            json!({ "clearing_id": card.pan, "amount": 1 }),
        )
        .await,
    );
    replies.push(
        app.call(get(&format!("/v1/cards/{}", card.pan)).bearer(&alice.token))
            .await,
    );
    replies.push(
        app.call(post("/v1/cards", json!({ "name": card.pan.repeat(3) })).bearer(&alice.token))
            .await,
    );
    // A clean approval, capture and refund for good measure.
    let approved = app
        .network(
            "/v1/network/authorizations",
            purchase(&card, "leak-ok", 100),
        )
        .await;
    assert_eq!(code(&approved.body), "00", "{approved:?}");
    let id = approved.body["authorization_id"]
        .as_str()
        .unwrap()
        .to_owned();
    replies.push(
        app.follow_up(
            &id,
            "clearings",
            json!({ "clearing_id": "k1", "amount": 100, "final": true }),
        )
        .await,
    );
    replies.push(
        app.call(get(&format!("/v1/cards/{}/activity", card.id)).bearer(&alice.token))
            .await,
    );
    replies.push(approved);
    app.settle().await;

    assert!(replies.len() >= 14);
    for reply in &replies {
        // Every header but the body's length, which is a number of three digits as often as
        // not and would match a security code by chance.
        let mut headers = reply.headers.clone();
        headers.remove(axum::http::header::CONTENT_LENGTH);
        let text = format!("{headers:?} {}", reply.body);
        assert!(
            !text.contains(&card.pan),
            "a card number in a reply: {text}"
        );
        assert!(
            !text.contains(&card.pan[6..]),
            "the hidden digits in a reply: {text}"
        );
        assert!(
            !text.contains(&format!("\"{}\"", card.cvc)),
            "a security code in a reply: {text}"
        );
    }
    // Some of them were refused as malformed: a clear error, no value quoted.
    assert!(replies.iter().any(
        |r| r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::UNPROCESSABLE_ENTITY
    ));
    let mail = app.mail("alice@example.com").await;
    for (_, body) in &mail {
        assert!(!body.contains(&card.pan[6..]), "no hidden digits by mail");
    }

    tracing::info!("card leak story ends");
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("card leak story starts") && text.contains("route="),
        "logs are captured, requests among them"
    );
    assert!(!text.contains(&card.pan[6..]), "a card number in the logs");
    for line in text.lines() {
        let lower = line.to_ascii_lowercase();
        if lower.contains("security") || lower.contains("cvc") || lower.contains("code=") {
            assert!(
                !line.contains(&format!("\"{}\"", card.cvc))
                    && !line.contains(&format!("={} ", card.cvc))
                    && !line.ends_with(&format!("={}", card.cvc)),
                "a security code in the logs: {line}"
            );
        }
    }
}
