//! Attacks on signing in: credential stuffing and a password spray over many accounts, a
//! password reset hijacked by guessing its code, and account recovery asked for by strangers.

use std::time::Duration;

use hyper::Method;
use koban_store::params;
use koban_store::sql::SqlDb;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;

use super::{DrillArgs, Outcome, Target, balance, network, refusal};
use crate::bench_api::{Conn, Customer};

/// Credential stuffing (a breached list: some passwords reused, most not) or a password
/// spray (one password over every account), each attempt from a fresh network. A password
/// that works gives a session at the password level, which then tries to pay the attacker.
pub(super) async fn stuffing<D: SqlDb>(
    target: &Target<D>,
    name: &'static str,
    emails: &[String],
    passwords: &[&str],
    attacker: &Customer,
    args: &DrillArgs,
    rng: &mut StdRng,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        name,
        ..Outcome::default()
    };
    let mut conn = Conn::open(target.addr).await?;
    let before = balance(&mut conn, attacker).await?;
    let started = super::now_ms();
    let mut taken = std::collections::BTreeSet::new();
    'attack: for password in passwords {
        for email in emails {
            if outcome.attempts >= u64::from(args.attempts) {
                break 'attack;
            }
            outcome.attempts += 1;
            let from = network(rng);
            let (status, body) = conn
                .send(
                    Method::POST,
                    "/v1/login",
                    None,
                    &[("x-forwarded-for", from.as_str())],
                    Some(json!({ "email": email, "password": password })),
                )
                .await?;
            if status != 200 {
                outcome.stopped(refusal(status, &body));
                continue;
            }
            let token = body["session"]["token"].as_str().unwrap_or_default();
            let key = format!("{name}-{}", outcome.attempts);
            let (status, body) = conn
                .send(
                    Method::POST,
                    "/v1/transfers",
                    Some(token),
                    &[
                        ("x-forwarded-for", from.as_str()),
                        ("idempotency-key", &key),
                    ],
                    Some(json!({ "to": attacker.email, "amount": 1_000 })),
                )
                .await?;
            // The password worked: the account's password is compromised, whatever follows.
            outcome.passwords_found += 1;
            if (200..300).contains(&status) {
                taken.insert(email.clone());
            } else {
                outcome.stopped(format!("password right, then {}", refusal(status, &body)));
            }
        }
    }
    outcome.accounts_taken_over = u64::try_from(taken.len())?;
    target
        .first_alert(started, &["login."], None, true, &mut outcome)
        .await?;
    outcome.money_to_attacker_minor = balance(&mut conn, attacker).await? - before;
    Ok(outcome)
}

/// A password reset asked for a victim's address, then its e-mailed code guessed, each guess
/// with a guessed second-factor code too (a reset needs both), from a fresh network each time.
/// A new code is asked for whenever the server may send one.
pub(super) async fn reset_hijack<D: SqlDb>(
    target: &Target<D>,
    victim: &Customer,
    args: &DrillArgs,
    rng: &mut StdRng,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        name: "password_reset_hijack",
        ..Outcome::default()
    };
    let mut conn = Conn::open(target.addr).await?;
    let started = super::now_ms();
    let forgot = json!({ "email": victim.email });
    while outcome.attempts < u64::from(args.attempts) {
        if outcome.attempts.is_multiple_of(5) {
            let from = network(rng);
            let (status, body) = conn
                .send(
                    Method::POST,
                    "/v1/password/forgot",
                    None,
                    &[("x-forwarded-for", from.as_str())],
                    Some(forgot.clone()),
                )
                .await?;
            if status != 202 {
                outcome.stopped(format!("asking for a code: {}", refusal(status, &body)));
            }
        }
        outcome.attempts += 1;
        let from = network(rng);
        let guess = json!({
            "email": victim.email,
            "code": format!("{:06}", rng.random_range(0..1_000_000u32)),
            "second_factor_code": format!("{:06}", rng.random_range(0..1_000_000u32)),
            "new_password": "the attacker's own passphrase 2026",
        });
        let (status, body) = conn
            .send(
                Method::POST,
                "/v1/password/reset",
                None,
                &[("x-forwarded-for", from.as_str())],
                Some(guess),
            )
            .await?;
        if status == 204 {
            outcome.accounts_taken_over = 1;
            break;
        }
        outcome.stopped(refusal(status, &body));
    }
    target
        .first_alert(started, &["login."], None, true, &mut outcome)
        .await?;
    Ok(outcome)
}

/// Account recovery asked for every customer's account (it removes the second factor after
/// a waiting period), each request from a fresh network. The attacker gets nothing back; the
/// requests wait for the period and an approver, and each owner is told with a link to
/// cancel. The hold is the request queued for an approver.
pub(super) async fn recovery_hijack<D: SqlDb>(
    target: &Target<D>,
    victims: &[&Customer],
    args: &DrillArgs,
    rng: &mut StdRng,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        name: "account_recovery_hijack",
        ..Outcome::default()
    };
    let mut conn = Conn::open(target.addr).await?;
    let started = super::now_ms();
    let attempts = u64::from(args.attempts).min(u64::try_from(victims.len())? * 2);
    for n in 0..attempts {
        let victim = victims[usize::try_from(n)? % victims.len()];
        outcome.attempts += 1;
        let from = network(rng);
        let (status, body) = conn
            .send(
                Method::POST,
                "/v1/recovery-requests",
                None,
                &[("x-forwarded-for", from.as_str())],
                Some(json!({ "email": victim.email })),
            )
            .await?;
        if status != 202 {
            outcome.stopped(refusal(status, &body));
        }
    }
    // What happened to the requests: queued for an approver, each owner told.
    let deadline = std::time::Instant::now() + target.detect_wait;
    loop {
        let rows = target
            .db
            .read(
                "SELECT COUNT(*), MIN(r.created_at) FROM recovery_requests r \
                 JOIN users u ON u.id = r.user_id WHERE r.created_at >= $1 AND r.status = 'pending'",
                params![started],
            )
            .await?;
        let queued = rows.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0);
        if queued > 0 {
            let first = rows[0].opt_i64(1)?.unwrap_or(started);
            outcome.first_alert_s = Some((first - started).max(0) as f64 / 1000.0);
            outcome.stopped_by.insert(
                "queued for an approver after the waiting period".into(),
                u64::try_from(queued)?,
            );
            break;
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut told = 0u64;
    for victim in victims {
        let mail = super::mailbox(&mut conn, &victim.email).await?;
        let asked = mail.iter().any(|(subject, _)| subject.contains("recovery"));
        told += u64::from(asked);
    }
    outcome
        .stopped_by
        .insert("owner told with a link to cancel".into(), told);
    Ok(outcome)
}
