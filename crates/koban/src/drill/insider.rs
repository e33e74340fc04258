//! An insider: an admin of the operations console acting alone, trying to pay an account of
//! their own. Money moves out of review or to a customer only with a second operator; the
//! insider tries to be both, and to pay someone who lost nothing.

use hyper::Method;
use koban_auth::{Email, Role};
use koban_store::sql::SqlDb;
use serde_json::json;

use super::{DrillArgs, Outcome, People, Target, balance, refusal, user_id};
use crate::bench_api::{Conn, enrol_totp, expect};

/// The operators' password (the customers' one may be refused by then: see
/// `People::fresh_customer`).
const OPERATOR_PASSWORD: &str = "an operator's own long passphrase";

/// An operator signed in with a second factor: the session token and spare recovery codes.
struct Operator {
    token: String,
    codes: Vec<String>,
}

/// Enrols the operator an enrolment link invites, as they would: a password, then an
/// authenticator app at first sign-in.
async fn enrol_operator(conn: &mut Conn, link: &str, email: &str) -> anyhow::Result<Operator> {
    let token = link.split("token=").nth(1).unwrap_or_default();
    expect(
        conn,
        Method::POST,
        "/v1/operators/enrol",
        None,
        &[],
        Some(json!({ "token": token, "password": OPERATOR_PASSWORD })),
        204,
    )
    .await?;
    let login = expect(
        conn,
        Method::POST,
        "/v1/login",
        None,
        &[],
        Some(json!({ "email": email, "password": OPERATOR_PASSWORD })),
        200,
    )
    .await?;
    let token = login["session"]["token"].as_str().unwrap_or_default();
    let (token, codes) = enrol_totp(conn, token, &[]).await?;
    Ok(Operator { token, codes })
}

/// Asks, as the operator of `token`, to release every transfer of `held`; records the answers.
async fn release_all(
    conn: &mut Conn,
    held: &[String],
    token: &str,
    who: &str,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    for id in held {
        outcome.attempts += 1;
        let path = format!("/v1/ops/held-transfers/{id}/release");
        let (status, body) = conn
            .send(Method::POST, &path, Some(token), &[], Some(json!({})))
            .await?;
        let answer = match status {
            200 | 202 => body["status"].as_str().unwrap_or("?").to_owned(),
            _ => refusal(status, &body),
        };
        outcome.stopped(format!("{who}: {answer}"));
    }
    Ok(())
}

/// The enrolment link in the newest mail to `email` that holds one, waiting (at most 10 s)
/// for the outbox to deliver it.
async fn mailed_link(conn: &mut Conn, email: &str) -> anyhow::Result<Option<String>> {
    for _ in 0..100 {
        let link = super::mailbox(conn, email)
            .await?
            .iter()
            .find_map(|(_, body)| {
                body.split_whitespace()
                    .find(|word| word.contains("/operators/enrol?token="))
                    .map(str::to_owned)
            });
        if link.is_some() {
            return Ok(link);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(None)
}

pub(super) async fn lone_operator<D: SqlDb>(
    target: &Target<D>,
    people: &People,
    _args: &DrillArgs,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        name: "insider_operator_alone",
        ..Outcome::default()
    };
    let Some(pay) = &target.pay else {
        outcome.skipped =
            Some("needs the drill's own server, to make an operator as the command line does");
        return Ok(outcome);
    };
    let accomplice = &people.mules[0];
    let mut conn = Conn::open(target.addr).await?;
    // The accounts money is sent to in the drill (the attacker's main account's session was
    // replaced when it confirmed a payment, so the mules are read): released money may be
    // bound for either.
    let theirs = [&people.mules[0], &people.mules[1]];
    let mut before = 0;
    for account in theirs {
        before += balance(&mut conn, account).await?;
    }
    let accomplice_id = user_id(&mut conn, accomplice).await?;
    // The insider: an admin made on the command line, as the first operator is.
    let email = format!("insider-{}@ops.example", people.run);
    let (invite, _) = pay
        .auth()
        .create_operator(&Email::parse(&email)?, Role::Admin, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut insider = enrol_operator(&mut conn, invite.enrolment_link.expose(), &email).await?;
    let started = super::now_ms();

    // 1. Compensate the accomplice, who lost nothing.
    outcome.attempts += 1;
    let compensation = json!({ "customer": accomplice_id, "amount": 50_000, "case_id": "none", "transfers": ["00000000-0000-0000-0000-000000000001"], "note": "goodwill" });
    let (status, body) = conn
        .send(
            Method::POST,
            "/v1/ops/compensations",
            Some(&insider.token),
            &[("idempotency-key", "insider-compensation")],
            Some(compensation),
        )
        .await?;
    outcome.stopped(format!(
        "compensating a customer who lost nothing: {}",
        refusal(status, &body)
    ));

    // 2. Release what the review holds (among it, the accomplice's held money).
    let (_, held) = conn
        .send(
            Method::GET,
            "/v1/ops/held-transfers",
            Some(&insider.token),
            &[],
            None,
        )
        .await?;
    let held: Vec<String> = held
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["id"].as_str().map(str::to_owned))
        .collect();
    release_all(
        &mut conn,
        &held,
        &insider.token,
        "releasing alone",
        &mut outcome,
    )
    .await?;

    // 3. A second operator of the insider's own making approves: invited with step-up, the
    //    enrolment link read from the new operator's mailbox (the insider's own address).
    let puppet_email = format!("second-pair-of-eyes-{}@ops.example", people.run);
    let ask = json!({ "email": puppet_email, "role": "approver" });
    let code = insider.codes.pop();
    let (status, invited) = super::with_step_up(
        &mut conn,
        "/v1/ops/operators",
        &insider.token,
        &[],
        ask,
        code.as_deref(),
    )
    .await?;
    if let Some(token) = invited["session"]["token"].as_str() {
        insider.token = token.to_owned();
    }
    // Development servers show every mailbox; in production the insider would invite an
    // address whose mailbox they hold.
    let link = mailed_link(&mut conn, &puppet_email).await?;
    match (status, link) {
        (201, Some(link)) => {
            let puppet = enrol_operator(&mut conn, &link, &puppet_email).await?;
            let who = "the insider's invitee releasing";
            release_all(&mut conn, &held, &puppet.token, who, &mut outcome).await?;
        }
        (status, _) => outcome.stopped(format!(
            "inviting a second operator: {}",
            refusal(status, &invited)
        )),
    }
    target
        .first_alert(started, &["ops."], None, false, &mut outcome)
        .await?;
    let mut after = 0;
    for account in theirs {
        after += balance(&mut conn, account).await?;
    }
    outcome.money_to_attacker_minor = after - before;
    Ok(outcome)
}
