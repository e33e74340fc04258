//! `koban drill`: attacks played against a real server while normal customers keep using
//! it. Each scenario reports what the attacker tried, what reached them, whether an alert was
//! raised and how soon, how the customers fared meanwhile, and what stopped the attack.
//!
//! The server is the drill's own: the service in development mode on a fresh temporary
//! database, on a port of 127.0.0.1, with the shipped rules (as `koban bench api` runs it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use hyper::Method;
use koban_store::params;
use koban_store::sql::SqlDb;
use koban_store_sqlite::SqliteStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::bench_api::{Conn, Customer, PASSWORD, enrol, enrol_as, first_transfer};

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// Seed of the attacker's choices (networks, passwords, guessed codes).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Normal customers, who keep paying each other during every attack.
    #[arg(long, default_value_t = 12)]
    pub customers: u32,
    /// Requests per attack.
    #[arg(long, default_value_t = 120)]
    pub attempts: u32,
    /// How long to wait after an attack for its first alert, in seconds.
    #[arg(long, default_value_t = 60)]
    pub detect_wait_s: u64,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What one scenario came to.
#[derive(Default)]
struct Outcome {
    name: &'static str,
    attempts: u64,
    money_to_attacker_minor: i64,
    accounts_taken_over: u64,
    /// Sign-ins the attacker got with a right password (a session at the password level):
    /// compromised passwords, even where the second factor then stopped them.
    passwords_found: u64,
    /// Seconds from the start of the attack to the first alert about it.
    first_alert_s: Option<f64>,
    legit_ok: u64,
    legit_total: u64,
    /// Mechanisms (answers the attacker got) and rules (alerts raised), with counts.
    stopped_by: BTreeMap<String, u64>,
}

impl Outcome {
    /// The customers' payments that went through during the attack; 0 when none was even
    /// tried (the traffic could not run).
    fn legit_success_rate(&self) -> f64 {
        if self.legit_total == 0 {
            0.0
        } else {
            self.legit_ok as f64 / self.legit_total as f64
        }
    }

    fn stopped(&mut self, reason: String) {
        *self.stopped_by.entry(reason).or_default() += 1;
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "attempts": self.attempts,
            "money_to_attacker_minor": self.money_to_attacker_minor,
            "accounts_taken_over": self.accounts_taken_over,
            "passwords_found": self.passwords_found,
            "first_alert_s": self.first_alert_s,
            "legit_success_rate": self.legit_success_rate(),
            "stopped_by": self.stopped_by,
        })
    }
}

/// The problem type of a refusal (`second-factor-required`, `throttled`, ...), or its status.
fn refusal(status: u16, body: &Value) -> String {
    body["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .map_or_else(|| format!("status {status}"), str::to_owned)
}

/// A network the attacker rents: a fresh address in a documentation range.
fn network(rng: &mut StdRng) -> String {
    format!(
        "198.51.{}.{}",
        rng.random_range(0..=255u8),
        rng.random_range(1..=254u8)
    )
}

/// Normal use of the service while an attack runs: each customer pays the friend they paid
/// before, round after round, until told to stop; a payment counts as done when it is
/// completed (201), not held or refused.
struct Legit {
    ok: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Legit {
    fn start(
        addr: SocketAddr,
        customers: Vec<(Customer, String)>,
        pace: Duration,
        round: usize,
    ) -> Legit {
        let ok = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ok2, total2, stop2) = (ok.clone(), total.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let Ok(mut conn) = Conn::open(addr).await else {
                return;
            };
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                for (customer, friend) in &customers {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    n += 1;
                    let key = format!("legit-{round}-{n}");
                    let headers = [
                        ("x-forwarded-for", customer.forwarded.as_str()),
                        ("idempotency-key", key.as_str()),
                    ];
                    let body = json!({ "to": friend, "amount": 1 });
                    let paid = conn
                        .send(
                            Method::POST,
                            "/v1/transfers",
                            Some(&customer.token),
                            &headers,
                            Some(body),
                        )
                        .await;
                    total2.fetch_add(1, Ordering::Relaxed);
                    if paid.is_ok_and(|(status, _)| status == 201) {
                        ok2.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(pace).await;
                }
            }
        });
        Legit {
            ok,
            total,
            stop,
            task,
        }
    }

    async fn finish(self, outcome: &mut Outcome) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        outcome.legit_ok = self.ok.load(Ordering::Relaxed);
        outcome.legit_total = self.total.load(Ordering::Relaxed);
    }
}

/// The drill's view of the server: its address, and its database for the alerts raised.
struct Target {
    addr: SocketAddr,
    db: <SqliteStore as koban_store::LedgerStore>::Sql,
    detect_wait: Duration,
}

impl Target {
    fn now_ms() -> i64 {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
        )
        .unwrap_or(i64::MAX)
    }

    /// Waits (at most the detection wait) for the first alert since `started_ms` whose rule
    /// starts with one of `rules`, raised on an event paid to `payee` when one is named (so
    /// the customers' own traffic is not counted), or with `alarm` a security alarm; records
    /// the rules that fired.
    async fn first_alert(
        &self,
        started_ms: i64,
        rules: &[&str],
        payee: Option<&str>,
        alarm: bool,
        outcome: &mut Outcome,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.detect_wait;
        loop {
            let mut first: Option<i64> = None;
            let rows = self
                .db
                .read(
                    "SELECT a.rule, MIN(a.at), COUNT(*) FROM risk_alerts a \
                     LEFT JOIN risk_events e ON e.id = a.event_id \
                     WHERE a.at >= $1 AND ($2 = '' OR e.payee = $2) GROUP BY a.rule",
                    params![started_ms, payee.unwrap_or("")],
                )
                .await?;
            let mut fired = BTreeMap::new();
            for row in &rows {
                let rule = row.text(0)?;
                if rules.iter().any(|prefix| rule.starts_with(prefix)) {
                    let at = row.i64(1)?;
                    first = Some(first.map_or(at, |f: i64| f.min(at)));
                    fired.insert(format!("rule {rule}"), u64::try_from(row.i64(2)?)?);
                }
            }
            if alarm {
                let rows = self
                    .db
                    .read(
                        "SELECT kind, MIN(raised_at), COUNT(*) FROM security_alerts WHERE raised_at >= $1 GROUP BY kind",
                        params![started_ms],
                    )
                    .await?;
                for row in &rows {
                    let at = row.i64(1)?;
                    first = Some(first.map_or(at, |f: i64| f.min(at)));
                    fired.insert(
                        format!("alarm {}", row.text(0)?),
                        u64::try_from(row.i64(2)?)?,
                    );
                }
            }
            if let Some(at) = first {
                outcome.first_alert_s = Some((at - started_ms).max(0) as f64 / 1000.0);
                outcome.stopped_by.extend(fired);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn user_id(conn: &mut Conn, who: &Customer) -> anyhow::Result<String> {
    let (status, me) = conn
        .send(Method::GET, "/v1/me", Some(&who.token), &[], None)
        .await?;
    match me["id"].as_str() {
        Some(id) if status == 200 => Ok(id.to_owned()),
        _ => Err(anyhow!("/v1/me answered {status}: {me}")),
    }
}

async fn balance(conn: &mut Conn, who: &Customer) -> anyhow::Result<i64> {
    let (status, wallet) = conn
        .send(Method::GET, "/v1/wallet", Some(&who.token), &[], None)
        .await?;
    if status != 200 {
        return Err(anyhow!("the attacker's wallet answered {status}"));
    }
    wallet["balance"]
        .as_i64()
        .ok_or_else(|| anyhow!("no balance in {wallet}"))
}

/// Credential stuffing (a breached list: some passwords reused, most not) or a password
/// spray (one password over every account), each attempt from a fresh network. A password
/// that works gives a session at the password level, which then tries to pay the attacker.
async fn stuffing(
    target: &Target,
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
    let started = Target::now_ms();
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

/// A victim's session token stolen (a cookie lifted from a shared computer): the attacker
/// sends the balance to an account of their own, a new payee, and guesses the step-up code.
async fn stolen_session_drain(
    target: &Target,
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
    let started = Target::now_ms();
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
async fn code_guessing(
    target: &Target,
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
    let started = Target::now_ms();
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
async fn api_key(conn: &mut Conn, merchant: &Customer) -> anyhow::Result<String> {
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
        return Err(anyhow!("an API key answered {status}: {challenge}"));
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
        return Err(anyhow!("an API key answered {status}: {made}"));
    }
    made["key"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no key in {made}"))
}

/// The people of a drill: customers who each paid a friend before (with step-up, as people
/// do), the attacker's own account, and a merchant whose key the attacker holds.
struct People {
    legit: Vec<(Customer, String)>,
    attacker: Customer,
    merchant: Customer,
}

async fn people(addr: SocketAddr, population: u32, run: &str) -> anyhow::Result<People> {
    let mut customers = Vec::new();
    for index in 0..population {
        customers.push(enrol(addr, index, run).await?);
    }
    let attacker = enrol(addr, population, run).await?;
    let merchant = enrol_as(addr, population + 1, run, "merchant").await?;
    let mut legit = Vec::new();
    for (i, customer) in customers.iter().enumerate() {
        let friend = customers[(i + 1) % customers.len()].email.clone();
        let token = first_transfer(addr, customer, &friend).await?;
        legit.push((
            Customer {
                token,
                ..customer.clone()
            },
            friend,
        ));
    }
    Ok(People {
        legit,
        attacker,
        merchant,
    })
}

/// Runs the drill; exits non-zero when money reached an attacker or an account was taken.
pub async fn drill(args: DrillArgs) -> anyhow::Result<ExitCode> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let rules = koban_pay::koban_risk::RuleSet::default_rules();
    let started = crate::bench_api::start_server(None, rules).await?;
    let addr = started.addr;
    let population = args.customers.max(2);
    let People {
        legit,
        attacker,
        merchant,
    } = people(addr, population, &format!("drill{}", args.seed)).await?;
    // About one payment every two seconds per customer, as busy people pay.
    let pace = Duration::from_millis(2_000 / u64::from(population));
    let store = started
        .store
        .clone()
        .ok_or_else(|| anyhow!("the drill's server has no store"))?;
    let target = Target {
        addr,
        db: koban_store::LedgerStore::sql(&store),
        detect_wait: Duration::from_secs(args.detect_wait_s),
    };
    let mut emails: Vec<String> = legit.iter().map(|(c, _)| c.email.clone()).collect();
    emails.extend((0..population).map(|i| format!("nobody{i}@breach.example")));
    let mut outcomes = Vec::new();
    for round in 0..4 {
        let traffic = Legit::start(addr, legit.clone(), pace, round);
        let mut outcome = match round {
            0 => {
                // A breached list: one of its passwords is reused here.
                let list = ["letmein-2024!", PASSWORD, "correct horse battery"];
                let name = "credential_stuffing";
                stuffing(&target, name, &emails, &list, &attacker, &args, &mut rng).await?
            }
            1 => {
                let list = ["Spring2026!spring"];
                let name = "password_spray";
                stuffing(&target, name, &emails, &list, &attacker, &args, &mut rng).await?
            }
            2 => stolen_session_drain(&target, &legit[0].0, &attacker, &args, &mut rng).await?,
            _ => code_guessing(&target, &merchant, &args, &mut rng).await?,
        };
        traffic.finish(&mut outcome).await;
        outcomes.push(outcome);
    }
    started.stop().await;
    let breached = outcomes
        .iter()
        .any(|o| o.money_to_attacker_minor > 0 || o.accounts_taken_over > 0);
    if args.json {
        let scenarios: Vec<Value> = outcomes.iter().map(Outcome::json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "scenarios": scenarios }))?
        );
    } else {
        print_table(&outcomes);
    }
    Ok(if breached {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One row per attack.
fn print_table(outcomes: &[Outcome]) {
    println!(
        "{:<34} {:>8} {:>10} {:>6} {:>12} {:>7}  stopped by",
        "scenario", "attempts", "money out", "taken", "first alert", "legit"
    );
    for o in outcomes {
        let alert = o
            .first_alert_s
            .map_or_else(|| "none".to_owned(), |s| format!("{s:.1} s"));
        let stopped: Vec<String> = o
            .stopped_by
            .iter()
            .map(|(k, n)| format!("{k} ({n})"))
            .collect();
        println!(
            "{:<34} {:>8} {:>10} {:>6} {:>12} {:>6.1}%  {}",
            o.name,
            o.attempts,
            o.money_to_attacker_minor,
            o.accounts_taken_over,
            alert,
            o.legit_success_rate() * 100.0,
            stopped.join(", ")
        );
    }
}
