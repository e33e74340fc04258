//! `koban drill`: attacks played against a real server while normal customers keep using
//! it. Each scenario reports what the attacker tried, what reached them, whether an alert was
//! raised and how soon, how the customers fared meanwhile, and what stopped the attack.
//!
//! The server is the drill's own (the service in development mode on a fresh temporary
//! database, on a port of 127.0.0.1, with the shipped rules, as `koban bench api` runs it), or
//! with `--url` a running development server on loopback whose database the drill reads the
//! alerts from. The scenarios live by what they attack: `sign_in.rs` (stuffing, spraying,
//! reset and recovery hijacks), `money.rs` (a drain with a stolen session, guessed payment
//! codes, stolen cards, bank-link guessing, card testing), `insider.rs` (an operator alone).

mod insider;
pub(crate) mod money;
mod sign_in;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use hyper::Method;
use koban_cards::card_keys::CardKeys;
use koban_store::LedgerStore;
use koban_store::params;
use koban_store::sql::SqlDb;
use koban_store_sqlite::SqliteStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::backend::{BackendOptions, DatabaseUrl, WithStore};
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
    /// Drill a running server instead (loopback only), started with `--dev
    /// --trust-forwarded-for` (the drill signs its people up through the development mailbox
    /// and gives each attempt its own network). Needs `--database-url`.
    #[arg(long, requires = "database_url")]
    pub url: Option<String>,
    /// The database of the server given by `--url`: the drill reads the alerts it raised, and
    /// approves its attackers' identity checks (as an operator of a development server would).
    #[arg(long, requires = "url")]
    pub database_url: Option<DatabaseUrl>,
    /// The card key file of the server given by `--url`, to play the card network in the card
    /// testing scenario (skipped without it).
    #[arg(long, requires = "url")]
    pub card_keys_file: Option<std::path::PathBuf>,
}

/// What one scenario came to.
#[derive(Default)]
struct Outcome {
    name: &'static str,
    /// Why the scenario could not run against this server, when it could not.
    skipped: Option<&'static str>,
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
    /// Why the customers' payments that did not complete did not, with counts.
    legit_refused: BTreeMap<String, u64>,
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
            "skipped": self.skipped,
            "attempts": self.attempts,
            "money_to_attacker_minor": self.money_to_attacker_minor,
            "accounts_taken_over": self.accounts_taken_over,
            "passwords_found": self.passwords_found,
            "first_alert_s": self.first_alert_s,
            "legit_success_rate": self.legit_success_rate(),
            "legit_refused": self.legit_refused,
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
/// completed (201 with the status `completed`), not held or refused.
struct Legit {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<LegitTally>,
}

/// What the customers' payments came to: completed, tried, and why the others did not
/// complete.
#[derive(Default)]
struct LegitTally {
    ok: u64,
    total: u64,
    refused: BTreeMap<String, u64>,
}

impl Legit {
    fn start(
        addr: SocketAddr,
        customers: Vec<(Customer, String)>,
        pace: Duration,
        round: usize,
    ) -> Legit {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut tally = LegitTally::default();
            let Ok(mut conn) = Conn::open(addr).await else {
                return tally;
            };
            let mut n = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                for (customer, friend) in &customers {
                    if stopping.load(Ordering::Relaxed) {
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
                    tally.total += 1;
                    let why = match paid {
                        Ok((201, body)) if body["status"] == "completed" => None,
                        Ok((201, body)) => Some(body["status"].as_str().unwrap_or("?").to_owned()),
                        Ok((status, body)) => Some(refusal(status, &body)),
                        Err(error) => Some(format!("no answer: {error}")),
                    };
                    match why {
                        None => tally.ok += 1,
                        Some(why) => *tally.refused.entry(why).or_default() += 1,
                    }
                    tokio::time::sleep(pace).await;
                }
            }
            tally
        });
        Legit { stop, task }
    }

    async fn finish(self, outcome: &mut Outcome) {
        self.stop.store(true, Ordering::Relaxed);
        let tally = self.task.await.unwrap_or_default();
        outcome.legit_ok = tally.ok;
        outcome.legit_total = tally.total;
        outcome.legit_refused = tally.refused;
    }
}

/// Milliseconds since the Unix epoch, as the server's clock reads.
fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(i64::MAX)
}

/// The drill's view of the server: its address, its database (for the alerts raised), and
/// what only the drill's own server offers.
struct Target<D: SqlDb> {
    addr: SocketAddr,
    db: D,
    detect_wait: Duration,
    /// The server's card keys, to play the card network.
    card_keys: Option<CardKeys>,
    /// The server's payments (and identity), to make an operator as `koban admin create` does.
    pay: Option<koban_pay::Payments<SqliteStore>>,
}

impl<D: SqlDb> Target<D> {
    /// Waits for the next minute when a security alert of `kind` was raised in this one.
    async fn fresh_minute_for(&self, kind: &str) -> anyhow::Result<()> {
        let now = now_ms();
        let rows = self
            .db
            .read(
                "SELECT COUNT(*) FROM security_alerts WHERE kind = $1 AND minute = $2",
                params![kind, now.div_euclid(60_000)],
            )
            .await?;
        if rows.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0) > 0 {
            let wait = 60_000 - now.rem_euclid(60_000) + 50;
            tokio::time::sleep(Duration::from_millis(u64::try_from(wait)?)).await;
        }
        Ok(())
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

/// Sends `body` to `path`, and when the answer asks for step-up, sends it again confirmed
/// with `code` (when there is one); the last answer.
async fn with_step_up(
    conn: &mut Conn,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Value,
    code: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let (status, challenge) = conn
        .send(Method::POST, path, Some(token), headers, Some(body.clone()))
        .await?;
    match code {
        Some(code) if status == 403 && !challenge["step_up"]["id"].is_null() => {
            let mut confirmed = body;
            confirmed["step_up"] = json!({ "id": challenge["step_up"]["id"], "code": code });
            conn.send(Method::POST, path, Some(token), headers, Some(confirmed))
                .await
        }
        _ => Ok((status, challenge)),
    }
}

/// The (subject, body) of each message to `email` in a development server's mailbox, newest
/// first (the drill's own check, or an attacker reading a mailbox they hold).
async fn mailbox(conn: &mut Conn, email: &str) -> anyhow::Result<Vec<(String, String)>> {
    let (_, mail) = conn
        .send(
            Method::GET,
            &format!("/v1/dev/mailbox?to={email}"),
            None,
            &[],
            None,
        )
        .await?;
    Ok(mail
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let text = |key: &str| m[key].as_str().unwrap_or_default().to_owned();
            (text("subject"), text("body"))
        })
        .collect())
}

/// The people of a drill: customers who each paid a friend before (with step-up, as people
/// do) and keep paying through every attack (bystanders: how they fare is the drill's
/// measure of collateral), the victims whose sessions and accounts are attacked (the third
/// one pays the fourth, as friends do), the attacker's own accounts (the main one and two
/// mules), a merchant whose key the attacker holds, and the run's name (addresses the
/// attacker makes are unique to it).
struct People {
    legit: Vec<(Customer, String)>,
    victims: [Customer; 4],
    attacker: Customer,
    mules: [Customer; 2],
    merchant: Customer,
    run: String,
    /// The next free index for accounts a scenario signs up.
    next_index: std::sync::atomic::AtomicU32,
}

async fn people(addr: SocketAddr, population: u32, run: &str) -> anyhow::Result<People> {
    let mut customers = Vec::new();
    for index in 0..population {
        customers.push(enrol(addr, index, run).await?);
    }
    let attacker = enrol(addr, population, run).await?;
    let merchant = enrol_as(addr, population + 1, run, "merchant").await?;
    let mules = [
        enrol(addr, population + 2, run).await?,
        enrol(addr, population + 3, run).await?,
    ];
    let mut victims = [
        enrol(addr, population + 4, run).await?,
        enrol(addr, population + 5, run).await?,
        enrol(addr, population + 6, run).await?,
        enrol(addr, population + 7, run).await?,
    ];
    victims[2].token = first_transfer(addr, &victims[2], &victims[3].email).await?;
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
        victims,
        attacker,
        mules,
        merchant,
        run: run.to_owned(),
        next_index: std::sync::atomic::AtomicU32::new(population + 8),
    })
}

/// The scenarios, in the order they run.
const SCENARIOS: [&str; 11] = [
    "credential_stuffing",
    "password_spray",
    "password_reset_hijack",
    "account_recovery_hijack",
    "p2p_drain_with_a_stolen_session",
    "mule_chain",
    "merchant_code_guessing",
    "stolen_card_topup",
    "bank_link_guessing",
    "card_testing",
    "insider_operator_alone",
];

/// Runs the drill; exits non-zero when money reached an attacker or an account was taken.
pub async fn drill(args: DrillArgs) -> anyhow::Result<ExitCode> {
    let detect_wait = Duration::from_secs(args.detect_wait_s);
    match (&args.url, &args.database_url) {
        (Some(url), Some(database_url)) => {
            let addr = crate::bench_api::loopback(url).await?;
            let card_keys = match &args.card_keys_file {
                Some(path) => Some(crate::keys::load(path)?),
                None => None,
            };
            let database_url = database_url.expose().to_owned();
            let remote = Remote {
                args,
                addr,
                card_keys,
            };
            crate::backend::open(&database_url, BackendOptions::default(), remote).await
        }
        _ => {
            let card_keys = CardKeys::generate();
            let rules = koban_pay::koban_risk::RuleSet::default_rules();
            let started = crate::bench_api::start_server(Some(card_keys.clone()), rules).await?;
            let store = started
                .store
                .clone()
                .ok_or_else(|| anyhow!("the drill's server has no store"))?;
            let target = Target {
                addr: started.addr,
                db: store.sql(),
                detect_wait,
                card_keys: Some(card_keys),
                pay: started.pay.clone(),
            };
            let code = run(&args, &target).await;
            started.stop().await;
            code
        }
    }
}

/// A drill of a running server, with its database open for reading the alerts.
struct Remote {
    args: DrillArgs,
    addr: SocketAddr,
    card_keys: Option<CardKeys>,
}

impl WithStore for Remote {
    type Output = ExitCode;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<ExitCode> {
        let target = Target {
            addr: self.addr,
            db: store.sql(),
            detect_wait: Duration::from_secs(self.args.detect_wait_s),
            card_keys: self.card_keys,
            pay: None,
        };
        let code = run(&self.args, &target).await;
        store.shutdown().await;
        code
    }
}

/// Signs the drill's people up, plays every scenario while the customers keep paying, and
/// reports.
async fn run<D: SqlDb>(args: &DrillArgs, target: &Target<D>) -> anyhow::Result<ExitCode> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let addr = target.addr;
    let population = args.customers.max(2);
    // A running server keeps earlier drills' people: this run's addresses are its own.
    let run_id = format!(
        "drill{}-{}",
        args.seed,
        &uuid::Uuid::now_v7().simple().to_string()[..8]
    );
    let people = people(addr, population, &run_id).await?;
    // About one payment every two seconds per customer, as busy people pay.
    let pace = Duration::from_millis(2_000 / u64::from(population));
    let mut emails: Vec<String> = people.legit.iter().map(|(c, _)| c.email.clone()).collect();
    emails.extend((0..population).map(|i| format!("nobody{i}-{run_id}@breach.example")));
    let mut outcomes = Vec::new();
    for (round, name) in SCENARIOS.into_iter().enumerate() {
        let traffic = Legit::start(addr, people.legit.clone(), pace, round);
        let outcome = play(name, target, &people, &emails, args, &mut rng).await;
        let mut outcome = outcome.with_context(|| format!("scenario {name}"))?;
        traffic.finish(&mut outcome).await;
        outcomes.push(outcome);
    }
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

impl People {
    /// A customer signed up in the middle of the drill, with a password of its own: the
    /// people made at the start share one password, which the stuffing scenario may have got
    /// refused everywhere by then (a password failing on several accounts is).
    async fn fresh_customer(&self, addr: SocketAddr) -> anyhow::Result<Customer> {
        let index = self
            .next_index
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let password = format!("fresh passphrase {} {index}", self.run);
        crate::bench_api::enrol_with(addr, index, &self.run, "customer", &password).await
    }
}

/// Plays scenario `name`.
async fn play<D: SqlDb>(
    name: &'static str,
    target: &Target<D>,
    people: &People,
    emails: &[String],
    args: &DrillArgs,
    rng: &mut StdRng,
) -> anyhow::Result<Outcome> {
    let [victim, other, ..] = &people.victims;
    match name {
        "credential_stuffing" => {
            // A breached list: one of its passwords is reused here.
            let list = ["letmein-2024!", PASSWORD, "correct horse battery"];
            sign_in::stuffing(target, name, emails, &list, &people.attacker, args, rng).await
        }
        "password_spray" => {
            // Alerts of one kind are merged per minute: the spray starts in a minute of its
            // own, so that its alert is not the stuffing's.
            target.fresh_minute_for("password_spray").await?;
            let list = ["Spring2026!spring"];
            sign_in::stuffing(target, name, emails, &list, &people.attacker, args, rng).await
        }
        "password_reset_hijack" => sign_in::reset_hijack(target, other, args, rng).await,
        "account_recovery_hijack" => {
            let victims: Vec<&Customer> = people.legit.iter().map(|(c, _)| c).collect();
            sign_in::recovery_hijack(target, &victims, args, rng).await
        }
        "p2p_drain_with_a_stolen_session" => {
            money::stolen_session_drain(target, victim, &people.attacker, args, rng).await
        }
        "mule_chain" => money::mule_chain(target, people, args, rng).await,
        "merchant_code_guessing" => money::code_guessing(target, &people.merchant, args, rng).await,
        "stolen_card_topup" => money::stolen_card_topup(target, people, args, rng).await,
        "bank_link_guessing" => money::bank_link_guessing(target, people, args, rng).await,
        "card_testing" => money::card_testing(target, people, args, rng).await,
        "insider_operator_alone" => insider::lone_operator(target, people, args).await,
        other => bail!("no scenario {other}"),
    }
}

/// One row per attack.
fn print_table(outcomes: &[Outcome]) {
    println!(
        "{:<34} {:>8} {:>10} {:>6} {:>12} {:>7}  stopped by",
        "scenario", "attempts", "money out", "taken", "first alert", "legit"
    );
    for o in outcomes {
        if let Some(why) = o.skipped {
            println!("{:<34} skipped: {why}", o.name);
            continue;
        }
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
