//! `koban bench cards`: card authorizations through the signed card-network API over HTTP on
//! loopback. Starts a server on a fresh temporary SQLite database with fresh card keys, signs
//! cardholders up through the API (as `bench api` does), verifies them (the KYC decision is
//! written straight into the database: the benchmark's only shortcut, standing in for an
//! operator), issues, activates (step-up) and reveals (step-up) one card each through the API,
//! then sends online authorizations of 1 minor unit, security code included, from C
//! concurrent keep-alive connections for a fixed time.
//!
//! `invariants_ok`: every approved authorization is held on its wallet exactly (available =
//! funding - approvals), the ledger's audit passes, and e-money outstanding still equals the
//! wallets.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use clap::Args;
use hyper::Method;
use koban_cards::card_keys::CardKeys;
use koban_store::LedgerStore;
use koban_store::sql::{SqlDb, SqlTx};
use serde_json::{Value, json};

use crate::bench_api::{Conn, Customer, enrol, expect, percentile_ms, start_server};
use crate::card_network::NetworkClient;

const FUNDING: i64 = 50_000;

#[derive(Args, Debug, Clone)]
pub struct CardsBenchArgs {
    /// Cardholders (one card each).
    #[arg(long, default_value_t = 50)]
    pub cards: u32,
    /// Concurrent network clients, each on its own keep-alive connection.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u32,
    /// Seconds of measured authorizations.
    #[arg(long, default_value_t = 15)]
    pub duration_s: u64,
    /// Print one JSON object on one line.
    #[arg(long)]
    pub json: bool,
}

pub(crate) struct Card {
    pub(crate) token: String,
    pub(crate) forwarded: String,
    /// An authorization of 1 minor unit with every detail of the card right.
    pub(crate) request: Value,
}

/// Verifies, issues, activates and reveals one customer's card; returns its request template.
pub(crate) async fn issue<D: SqlDb>(
    addr: std::net::SocketAddr,
    db: &D,
    customer: &Customer,
) -> anyhow::Result<Card> {
    let mut conn = Conn::open(addr).await?;
    let xff = [("x-forwarded-for", customer.forwarded.as_str())];
    verify_identity(&mut conn, db, customer, "Bench Holder").await?;
    let card = expect(
        &mut conn,
        Method::POST,
        "/v1/cards",
        Some(&customer.token),
        &xff,
        Some(json!({ "name": "Bench card" })),
        201,
    )
    .await?;
    let id = card["id"].as_str().unwrap_or_default().to_owned();
    let mut token = customer.token.clone();
    let mut codes = customer.spare_recovery.iter();
    let mut confirmed = Value::Null;
    for path in [
        format!("/v1/cards/{id}/activate"),
        format!("/v1/cards/{id}/reveal"),
    ] {
        let (status, challenge) = conn
            .send(Method::POST, &path, Some(&token), &xff, Some(json!({})))
            .await?;
        if status != 403 {
            bail!("{path} answered {status}, not a step-up challenge: {challenge}");
        }
        let code = codes
            .next()
            .ok_or_else(|| anyhow!("out of recovery codes"))?;
        confirmed = expect(
            &mut conn,
            Method::POST,
            &path,
            Some(&token),
            &xff,
            Some(json!({ "step_up": { "id": challenge["step_up"]["id"], "code": code } })),
            200,
        )
        .await?;
        if let Some(rotated) = confirmed["session"]["token"].as_str() {
            token = rotated.to_owned();
        }
    }
    Ok(Card {
        token,
        forwarded: customer.forwarded.clone(),
        request: json!({
            "pan": confirmed["number"],
            "exp_month": confirmed["exp_month"],
            "exp_year": confirmed["exp_year"],
            "security_code": confirmed["security_code"],
            "amount": 1,
            "currency": "JPY",
            "merchant_id": "bench-merchant",
            "merchant_name": "Bench Shop",
            "mcc": "5732",
            "country": "JP",
            "channel": "online",
        }),
    })
}

/// Submits the customer's identity check under `legal_name` through the API and approves it
/// straight in the database, standing in for an operator.
pub(crate) async fn verify_identity<D: SqlDb>(
    conn: &mut Conn,
    db: &D,
    customer: &Customer,
    legal_name: &str,
) -> anyhow::Result<()> {
    let xff = [("x-forwarded-for", customer.forwarded.as_str())];
    expect(
        conn,
        Method::POST,
        "/v1/kyc",
        Some(&customer.token),
        &xff,
        Some(json!({ "legal_name": legal_name })),
        202,
    )
    .await?;
    let me = expect(
        conn,
        Method::GET,
        "/v1/me",
        Some(&customer.token),
        &xff,
        None,
        200,
    )
    .await?;
    let user_id = me["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("/v1/me answered no id"))?;
    let mut tx = db.begin().await?;
    // The name stays sealed in the request row, as an operator's approval leaves it.
    tx.execute(
        "UPDATE kyc SET status = 'approved', decided_at = 0, decided_by = 'bench' WHERE user_id = $1",
        koban_store::params![user_id],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Default risk rules this bench turns off: they limit one card's rate, and the bench drives
/// each card far faster than a holder could.
const CARD_RULES_OFF: [&str; 2] = ["card.velocity", "card.velocity_hour"];

pub async fn cards(args: CardsBenchArgs) -> anyhow::Result<ExitCode> {
    if args.cards == 0 || args.concurrency == 0 || args.duration_s == 0 {
        bail!("--cards, --concurrency and --duration-s must be at least 1");
    }
    let keys = CardKeys::generate();
    // Each bench card authorizes hundreds of times a minute, far beyond any holder: the
    // per-card velocity rules would decline nearly all of it, so they are off (and said so).
    let rules = koban_pay::koban_risk::RuleSet::default_rules()
        .without(&CARD_RULES_OFF)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = start_server(Some(keys.clone()), rules).await?;
    let addr = started.addr;
    let store = started
        .store
        .clone()
        .ok_or_else(|| anyhow!("no built-in store"))?;
    let run = uuid::Uuid::now_v7().simple().to_string()[..8].to_owned();
    let setup = Instant::now();
    let mut pending = tokio::task::JoinSet::new();
    let mut cards = Vec::new();
    for index in 0..args.cards {
        let run = run.clone();
        let store = store.clone();
        pending.spawn(async move {
            let customer = enrol(addr, index, &run).await?;
            issue(addr, &store.sql(), &customer).await
        });
        while pending.len() >= 4 {
            if let Some(done) = pending.join_next().await {
                cards.push(done??);
            }
        }
    }
    while let Some(done) = pending.join_next().await {
        cards.push(done??);
    }
    let setup_s = setup.elapsed().as_secs_f64();

    let cards = Arc::new(cards);
    let next_ref = Arc::new(AtomicU64::new(0));
    let meter = crate::bench_meter::Meter::server();
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let cards = cards.clone();
        let next_ref = next_ref.clone();
        let keys = keys.clone();
        let run = run.clone();
        workers.spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut approved_by = vec![0u64; cards.len()];
            let Ok(mut client) = NetworkClient::open(addr, &keys).await else {
                return (latencies, 1, approved_by, Some("cannot connect".to_owned()));
            };
            let mut index = worker as usize % cards.len();
            while Instant::now() < deadline {
                let mut request = cards[index].request.clone();
                request["network_ref"] = json!(format!(
                    "bench-{run}-{}",
                    next_ref.fetch_add(1, Ordering::Relaxed)
                ));
                let began = Instant::now();
                let result = client.send("/v1/network/authorizations", &request).await;
                let took = u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX);
                match result {
                    Ok((200, answer)) if answer["approved"] == json!(true) => {
                        latencies.push(took);
                        approved_by[index] += 1;
                    }
                    other => {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(match other {
                                Ok((status, answer)) => format!(
                                    "{status}: {} {}",
                                    answer["response_code"], answer["detail"]
                                ),
                                Err(error) => error.to_string(),
                            });
                        }
                    }
                }
                index = (index + 1) % cards.len();
            }
            (latencies, errors, approved_by, first_error)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut approved = vec![0u64; cards.len()];
    while let Some(done) = workers.join_next().await {
        let (mut l, e, by, first) = done?;
        first_error = first_error.or(first);
        latencies.append(&mut l);
        errors += e;
        for (index, n) in by.into_iter().enumerate() {
            approved[index] += n;
        }
    }
    let usage = meter.per_op(latencies.len() as u64);
    latencies.sort_unstable();
    let seconds = args.duration_s as f64;

    let mut invariants_ok = true;
    let mut conn = Conn::open(addr).await?;
    for (index, card) in cards.iter().enumerate() {
        let (_, wallet) = conn
            .send(
                Method::GET,
                "/v1/wallet",
                Some(&card.token),
                &[("x-forwarded-for", card.forwarded.as_str())],
                None,
            )
            .await?;
        let held = approved[index] as i64;
        if wallet["available"].as_i64() != Some(FUNDING - held)
            || wallet["pending_out"].as_i64() != Some(held)
        {
            invariants_ok = false;
        }
    }
    invariants_ok &= store.audit().await?.ok();
    if let Some(pay) = &started.pay {
        for (_, outstanding, wallets) in pay.reconcile().await.map_err(|e| anyhow!("{e}"))? {
            invariants_ok &= outstanding == wallets;
        }
    }
    started.stop().await;
    let mut out = json!({
        "bench": "cards",
        "requests_per_second": (latencies.len() as f64 / seconds * 10.0).round() / 10.0,
        "latency_ms_p50": percentile_ms(&latencies, 50.0),
        "latency_ms_p99": percentile_ms(&latencies, 99.0),
        "errors": errors,
        "first_error": first_error,
        "invariants_ok": invariants_ok,
        "authorizations": latencies.len(),
        "cards": args.cards,
        "concurrency": args.concurrency,
        "duration_s": args.duration_s,
        "setup_s": (setup_s * 10.0).round() / 10.0,
        "server": "built-in, embedded SQLite",
        "risk_rules_off": CARD_RULES_OFF,
        "safety": {
            "risk_rules": "the default set except the per-card rate rules named in risk_rules_off",
            "checks": "signature, replay cache, card state, expiry and security code on every authorization",
            "limits": "wallet balance and daily card spending checked on every authorization",
            "acknowledged": "after the hold and the authorization record are durable (fsync)",
        },
    });
    crate::bench::merge_usage(&mut out, usage);
    crate::bench::print(&out, args.json)?;
    Ok(if invariants_ok && errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
