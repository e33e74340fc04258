//! Attacks on money: a drain with a stolen session, moving it through a chain of accounts,
//! guessing customers' payment codes with a merchant's key, topping up with stolen cards,
//! guessing the deposits that link a victim's bank account, and testing card details through
//! the card network.

use std::time::Duration;

use anyhow::anyhow;
use hyper::Method;
use koban_store::sql::SqlDb;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use super::{DrillArgs, Outcome, People, Target, balance, network, refusal, user_id};
use crate::bench_api::{Conn, Customer, expect};

/// A victim's session token stolen (a cookie lifted from a shared computer): the attacker
/// sends the balance to an account of their own, a new payee, and guesses the step-up code.
pub(super) async fn stolen_session_drain<D: SqlDb>(
    target: &Target<D>,
    victim: &Customer,
    attacker: &Customer,
    args: &DrillArgs,
    rng: &mut StdRng,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        name: "p2p_drain_with_a_stolen_session",
        ..Outcome::default()
    };
    let mut conn = Conn::open(target.addr).await?;
    let before = balance(&mut conn, attacker).await?;
    let started = super::now_ms();
    let from = network(rng);
    let drain = json!({ "to": attacker.email, "amount": 40_000 });
    while outcome.attempts < u64::from(args.attempts) {
        outcome.attempts += 1;
        let key = format!("drain-{}", outcome.attempts);
        let headers = [
            ("x-forwarded-for", from.as_str()),
            ("idempotency-key", &key),
        ];
        let (status, challenge) = conn
            .send(
                Method::POST,
                "/v1/transfers",
                Some(&victim.token),
                &headers,
                Some(drain.clone()),
            )
            .await?;
        if (200..300).contains(&status) {
            // Paid (or held) without any step-up: the stolen session moved money.
            outcome.accounts_taken_over = 1;
            break;
        }
        if status != 403 || challenge["step_up"]["id"].is_null() {
            outcome.stopped(refusal(status, &challenge));
            continue;
        }
        outcome.stopped("step-up-required".into());
        let guess = format!("{:06}", rng.random_range(0..1_000_000u32));
        let mut confirmed = drain.clone();
        confirmed["step_up"] = json!({ "id": challenge["step_up"]["id"], "code": guess });
        outcome.attempts += 1;
        let (status, body) = conn
            .send(
                Method::POST,
                "/v1/transfers",
                Some(&victim.token),
                &headers,
                Some(confirmed),
            )
            .await?;
        if (200..300).contains(&status) {
            outcome.accounts_taken_over = 1;
            break;
        }
        outcome.stopped(format!("guessed code: {}", refusal(status, &body)));
    }
    let attacker_id = user_id(&mut conn, attacker).await?;
    target
        .first_alert(started, &[""], Some(&attacker_id), false, &mut outcome)
        .await?;
    outcome.money_to_attacker_minor = balance(&mut conn, attacker).await? - before;
    Ok(outcome)
}

/// A merchant's key guessing customers' payment codes at the till.
pub(super) async fn code_guessing<D: SqlDb>(
    target: &Target<D>,
    merchant: &Customer,
    args: &DrillArgs,
    rng: &mut StdRng,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        name: "merchant_code_guessing",
        ..Outcome::default()
    };
    let mut conn = Conn::open(target.addr).await?;
    // Before the key is made: making it rotates the merchant's session.
    let merchant_id = user_id(&mut conn, merchant).await?;
    let api_key = api_key(&mut conn, merchant).await?;
    let started = super::now_ms();
    let from = network(rng);
    while outcome.attempts < u64::from(args.attempts) {
        outcome.attempts += 1;
        let code = format!("89{:016}", rng.random_range(0..10_000_000_000_000_000u64));
        let key = format!("guess-{}", outcome.attempts);
        let (status, body) = conn
            .send(
                Method::POST,
                "/v1/merchant/charges",
                Some(&api_key),
                &[
                    ("x-forwarded-for", from.as_str()),
                    ("idempotency-key", &key),
                ],
                Some(json!({ "code": code, "amount": 5_000, "reference": "drill" })),
            )
            .await?;
        if (200..300).contains(&status) {
            outcome.money_to_attacker_minor += body["amount"].as_i64().unwrap_or(5_000);
        } else {
            outcome.stopped(refusal(status, &body));
        }
    }
    target
        .first_alert(started, &[""], Some(&merchant_id), false, &mut outcome)
        .await?;
    Ok(outcome)
}

/// A test-environment API key that may charge codes, made with step-up.
pub(crate) async fn api_key(conn: &mut Conn, merchant: &Customer) -> anyhow::Result<String> {
    let headers = [("x-forwarded-for", merchant.forwarded.as_str())];
    let asked = json!({ "name": "till", "environment": "test", "scopes": ["payments:write"] });
    let (status, challenge) = conn
        .send(
            Method::POST,
            "/v1/merchant/api-keys",
            Some(&merchant.token),
            &headers,
            Some(asked.clone()),
        )
        .await?;
    if status != 403 {
        return Err(anyhow!(
            "an API key answered {}",
            refusal(status, &challenge)
        ));
    }
    let mut confirmed = asked;
    confirmed["step_up"] = json!({ "id": challenge["step_up"]["id"], "code": merchant.recovery });
    let (status, made) = conn
        .send(
            Method::POST,
            "/v1/merchant/api-keys",
            Some(&merchant.token),
            &headers,
            Some(confirmed),
        )
        .await?;
    if status != 201 {
        return Err(anyhow!("an API key answered {}", refusal(status, &made)));
    }
    made["key"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no key in the answer"))
}

/// Two customers' sessions stolen, where the first already paid the second: the attacker
/// moves the first one's money to the second (a known payee, so no step-up) in amounts under
/// the step-up amount, then tries to move it on from the second to an account of their own, a
/// new payee, guessing the step-up code.
pub(super) async fn mule_chain<D: SqlDb>(
    target: &Target<D>,
    people: &People,
    args: &DrillArgs,
    rng: &mut StdRng,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        name: "mule_chain",
        ..Outcome::default()
    };
    let (first, second) = (&people.victims[2], &people.victims[3]);
    let attacker = &people.mules[1];
    let mut conn = Conn::open(target.addr).await?;
    let before = balance(&mut conn, attacker).await?;
    let attacker_id = user_id(&mut conn, attacker).await?;
    let started = super::now_ms();
    let from = network(rng);
    let mut moved = 0i64;
    for hop in 0..4 {
        outcome.attempts += 1;
        let key = format!("chain-hop-{hop}");
        let (status, body) = conn
            .send(
                Method::POST,
                "/v1/transfers",
                Some(&first.token),
                &[
                    ("x-forwarded-for", from.as_str()),
                    ("idempotency-key", &key),
                ],
                Some(json!({ "to": second.email, "amount": 9_000 })),
            )
            .await?;
        if status == 201 && body["status"] == "completed" {
            moved += 9_000;
        } else {
            outcome.stopped(format!("first hop: {}", refusal(status, &body)));
        }
    }
    if moved > 0 {
        outcome.stopped_by.insert(
            "moved to the victim's known payee (still in Koban)".into(),
            u64::try_from(moved)?,
        );
    }
    let onward = json!({ "to": attacker.email, "amount": moved.max(1_000) });
    while outcome.attempts < u64::from(args.attempts) {
        outcome.attempts += 1;
        let key = format!("chain-out-{}", outcome.attempts);
        let headers = [
            ("x-forwarded-for", from.as_str()),
            ("idempotency-key", key.as_str()),
        ];
        let (status, challenge) = conn
            .send(
                Method::POST,
                "/v1/transfers",
                Some(&second.token),
                &headers,
                Some(onward.clone()),
            )
            .await?;
        if (200..300).contains(&status) {
            outcome.accounts_taken_over = 1;
            break;
        }
        if status != 403 || challenge["step_up"]["id"].is_null() {
            outcome.stopped(format!("second hop: {}", refusal(status, &challenge)));
            continue;
        }
        let mut confirmed = onward.clone();
        let guess = format!("{:06}", rng.random_range(0..1_000_000u32));
        confirmed["step_up"] = json!({ "id": challenge["step_up"]["id"], "code": guess });
        outcome.attempts += 1;
        let (status, body) = conn
            .send(
                Method::POST,
                "/v1/transfers",
                Some(&second.token),
                &headers,
                Some(confirmed),
            )
            .await?;
        if (200..300).contains(&status) {
            outcome.accounts_taken_over = 1;
            break;
        }
        outcome.stopped(format!(
            "second hop, guessed code: {}",
            refusal(status, &body)
        ));
    }
    target
        .first_alert(started, &[""], Some(&attacker_id), true, &mut outcome)
        .await?;
    outcome.money_to_attacker_minor = balance(&mut conn, attacker).await? - before;
    Ok(outcome)
}

/// A Luhn-valid card number: `prefix` followed by random digits and the check digit.
fn card_number(prefix: &str, rng: &mut StdRng) -> String {
    let mut digits: Vec<u32> = prefix.chars().filter_map(|c| c.to_digit(10)).collect();
    while digits.len() < 15 {
        digits.push(rng.random_range(0..10));
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    digits.iter().map(u32::to_string).collect()
}

/// The six-digit code of the first message to `email` after the `seen` it had, waiting (at
/// most 10 s) for the outbox to deliver it.
async fn mailed_code(conn: &mut Conn, email: &str, seen: usize) -> anyhow::Result<Option<String>> {
    for _ in 0..100 {
        let mail = super::mailbox(conn, email).await?;
        if mail.len() > seen {
            return Ok(mail.first().and_then(|(_, body)| {
                body.split(|c: char| !c.is_ascii_digit())
                    .find(|run| run.len() == 6)
                    .map(str::to_owned)
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// Stolen card numbers added to the attacker's wallet and topped up from, then the whole
/// top-up sent at once to an accomplice (a new payee, confirmed with the attacker's own
/// second factor).
pub(super) async fn stolen_card_topup<D: SqlDb>(
    target: &Target<D>,
    people: &People,
    args: &DrillArgs,
    rng: &mut StdRng,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        name: "stolen_card_topup",
        ..Outcome::default()
    };
    let attacker = &people.attacker;
    let accomplice = &people.mules[0];
    let mut conn = Conn::open(target.addr).await?;
    let before = balance(&mut conn, accomplice).await?;
    let wallet_before = balance(&mut conn, attacker).await?;
    let started = super::now_ms();
    let from = network(rng);
    let xff = [("x-forwarded-for", from.as_str())];
    let cards = u64::from(args.attempts).clamp(1, 3);
    let mut topped_up = 0i64;
    for n in 0..cards {
        let number = card_number("4000001", rng);
        outcome.attempts += 1;
        let (status, source) = conn
            .send(
                Method::POST,
                "/v1/funding-sources/cards",
                Some(&attacker.token),
                &xff,
                Some(json!({ "number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123" })),
            )
            .await?;
        if status != 201 {
            outcome.stopped(format!("adding the card: {}", refusal(status, &source)));
            continue;
        }
        for (i, amount) in [(0, 10_000), (1, 10_000)] {
            let key = format!("stolen-{n}-{i}");
            let headers = [
                ("x-forwarded-for", from.as_str()),
                ("idempotency-key", key.as_str()),
            ];
            let ask = json!({ "source_id": source["id"], "amount": amount });
            let seen = super::mailbox(&mut conn, &attacker.email).await?.len();
            outcome.attempts += 1;
            let (status, body) = conn
                .send(
                    Method::POST,
                    "/v1/topups/card",
                    Some(&attacker.token),
                    &headers,
                    Some(ask.clone()),
                )
                .await?;
            let (status, body) = if status == 403 && !body["challenge"]["id"].is_null() {
                outcome.stopped("card-challenge-required".into());
                let Some(code) = mailed_code(&mut conn, &attacker.email, seen).await? else {
                    outcome.stopped("no challenge code".into());
                    continue;
                };
                let mut answered = ask.clone();
                answered["challenge"] = json!({ "id": body["challenge"]["id"], "code": code });
                conn.send(
                    Method::POST,
                    "/v1/topups/card",
                    Some(&attacker.token),
                    &headers,
                    Some(answered),
                )
                .await?
            } else {
                (status, body)
            };
            if (200..300).contains(&status) {
                topped_up += amount;
            } else {
                outcome.stopped(format!("top-up: {}", refusal(status, &body)));
            }
        }
    }
    // The sandbox settles card top-ups after a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while balance(&mut conn, attacker).await? < wallet_before + topped_up
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if topped_up > 0 {
        outcome.stopped_by.insert(
            "topped up, kept in the wallet (the sandbox sends the card challenge to the account holder)".into(),
            u64::try_from(topped_up)?,
        );
        let spend = json!({ "to": accomplice.email, "amount": topped_up });
        let headers = [
            ("x-forwarded-for", from.as_str()),
            ("idempotency-key", "stolen-spend"),
        ];
        outcome.attempts += 1;
        let code = Some(attacker.recovery.as_str());
        let (status, body) = super::with_step_up(
            &mut conn,
            "/v1/transfers",
            &attacker.token,
            &headers,
            spend,
            code,
        )
        .await?;
        match body["status"].as_str() {
            Some(state) if status == 201 => outcome.stopped(format!("the spend: {state}")),
            _ => outcome.stopped(format!("the spend: {}", refusal(status, &body))),
        }
    }
    target
        .first_alert(
            started,
            &["topup.", "p2p.", "device.", "payment."],
            None,
            false,
            &mut outcome,
        )
        .await?;
    outcome.money_to_attacker_minor = balance(&mut conn, accomplice).await? - before;
    Ok(outcome)
}

/// A victim's bank account number and name known to the attacker (from a stolen statement),
/// and accounts of the attacker's verified under the victim's name: each links the victim's
/// account and guesses the two deposits that confirm it, which only the victim can see.
pub(super) async fn bank_link_guessing<D: SqlDb>(
    target: &Target<D>,
    people: &People,
    args: &DrillArgs,
    rng: &mut StdRng,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        name: "bank_link_guessing",
        ..Outcome::default()
    };
    let victim = &people.victims[0];
    let holder = "Drill Victim Holder";
    let mut conn = Conn::open(target.addr).await?;
    let victim_xff = [("x-forwarded-for", victim.forwarded.as_str())];
    let account = expect(
        &mut conn,
        Method::POST,
        "/v1/sandbox/bank/accounts",
        Some(&victim.token),
        &victim_xff,
        Some(json!({ "holder_name": holder })),
        201,
    )
    .await?;
    let number = account["account_number"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The attacker's accounts, verified under the stolen name.
    let mut accounts = Vec::new();
    for _ in 0..3 {
        let account = people.fresh_customer(target.addr).await?;
        crate::bench_cards::verify_identity(&mut conn, &target.db, &account, holder).await?;
        accounts.push(account);
    }
    let started = super::now_ms();
    let peek = conn
        .send(
            Method::GET,
            &format!("/v1/sandbox/bank/accounts/{number}/statement"),
            Some(&accounts[0].token),
            &[],
            None,
        )
        .await?;
    outcome.stopped(format!(
        "reading the victim's statement: {}",
        refusal(peek.0, &peek.1)
    ));
    'attack: for attacker in &mut accounts {
        let mut codes =
            std::iter::once(attacker.recovery.clone()).chain(attacker.spare_recovery.clone());
        let from = network(rng);
        for _link in 0..3 {
            if outcome.attempts >= u64::from(args.attempts) {
                break 'attack;
            }
            let xff = [("x-forwarded-for", from.as_str())];
            let ask = json!({ "bank": "sandbox", "account_number": number });
            let code = codes.next();
            let (status, link) = super::with_step_up(
                &mut conn,
                "/v1/funding-sources/bank",
                &attacker.token,
                &xff,
                ask,
                code.as_deref(),
            )
            .await?;
            if status != 201 {
                outcome.stopped(format!("linking: {}", refusal(status, &link)));
                continue;
            }
            if let Some(token) = link["session"]["token"].as_str() {
                attacker.token = token.to_owned();
            }
            let id = link["id"].as_str().unwrap_or_default().to_owned();
            for _ in 0..3 {
                outcome.attempts += 1;
                let amounts = [rng.random_range(1..100), rng.random_range(1..100)];
                let (status, body) = conn
                    .send(
                        Method::POST,
                        &format!("/v1/funding-sources/{id}/confirm"),
                        Some(&attacker.token),
                        &xff,
                        Some(json!({ "amounts": amounts })),
                    )
                    .await?;
                if status == 200 {
                    outcome.accounts_taken_over += 1;
                    break;
                }
                outcome.stopped(format!("guessed deposits: {}", refusal(status, &body)));
                if status == 410 {
                    break;
                }
            }
        }
    }
    target
        .first_alert(started, &["funding."], None, true, &mut outcome)
        .await?;
    Ok(outcome)
}

/// Card details tested through the card network from one online shop: the victim's card
/// with guessed security codes, then made-up numbers of the same issuer, each an
/// authorization of 1,000.
pub(super) async fn card_testing<D: SqlDb>(
    target: &Target<D>,
    people: &People,
    args: &DrillArgs,
    rng: &mut StdRng,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        name: "card_testing",
        ..Outcome::default()
    };
    let Some(keys) = &target.card_keys else {
        outcome.skipped = Some("no card keys: give --card-keys-file to play the card network");
        return Ok(outcome);
    };
    let holder = people.fresh_customer(target.addr).await?;
    let card = crate::bench_cards::issue(target.addr, &target.db, &holder).await?;
    let mut network = crate::card_network::NetworkClient::open(target.addr, keys).await?;
    let started = super::now_ms();
    let shop_ip = super::network(rng);
    let pan = card.request["pan"].as_str().unwrap_or_default().to_owned();
    let bin: String = pan.chars().take(6).collect();
    while outcome.attempts < u64::from(args.attempts) {
        outcome.attempts += 1;
        let mut request: Value = card.request.clone();
        if outcome.attempts <= 5 {
            request["security_code"] = json!(format!("{:03}", rng.random_range(0..1_000u32)));
        } else {
            request["pan"] = json!(card_number(&bin, rng));
        }
        request["network_ref"] = json!(format!("drill-{}-{}", people.run, outcome.attempts));
        request["amount"] = json!(1_000);
        request["merchant_id"] = json!("drill-testing-shop");
        request["client_ip"] = json!(shop_ip);
        let (status, answer) = network.send("/v1/network/authorizations", &request).await?;
        if status == 200 && answer["approved"] == true {
            outcome.money_to_attacker_minor += 1_000;
        } else if status == 200 {
            outcome.stopped(format!(
                "declined {}",
                answer["response_code"].as_str().unwrap_or("?")
            ));
        } else {
            outcome.stopped(refusal(status, &answer));
        }
    }
    target
        .first_alert(started, &["card."], None, true, &mut outcome)
        .await?;
    Ok(outcome)
}
