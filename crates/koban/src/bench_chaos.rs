//! `koban bench chaos`: crashes under load. Starts `koban serve` as a child process on one
//! database (a fresh temporary SQLite file, or `--database-url`), sets up customers who each
//! pay the next, a merchant with a till key, and a card for some customers, then runs cycles:
//! a mixed load (P2P transfers, QR payments, card authorizations, sign-ins) from concurrent
//! clients, a SIGKILL at a random moment, the checks while the service is down, a restart
//! (timed until `/readyz` answers 200), and every request the kill left without an answer
//! sent again with its Idempotency-Key (or network reference) until it has one.
//!
//! After each kill:
//! - the ledger audit (`koban audit ledger --acked`): each currency sums to zero, no balance
//!   below its floor, and every acknowledged transfer is present;
//! - the security audit chain (`koban audit verify`);
//! - every acknowledged P2P transfer has its payer's notice in the outbox and its risk record,
//!   and no more than the transfers that may have committed unacknowledged.
//!
//! After each restart, once every request has its answer: each wallet's balance and pending
//! amount are exactly what the acknowledged operations say (a lost or doubled operation shows
//! here), and a retried operation that had an answer before is answered with the same id.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use hyper::Method;
use koban_shared::personal::{self, Index};
use koban_store::LedgerStore;
use koban_store::sql::SqlDb;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::backend::{BackendOptions, WithStore};
use crate::bench_api::{Conn, Customer, PASSWORD, enrol, enrol_as, first_transfer};
use crate::bench_cards::{Card, issue};
use crate::card_network::NetworkClient;

/// What each customer is given by the faucet at setup.
const FUNDING: i64 = 50_000;
/// How long a restarted server may take to answer ready before the bench gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug, Clone)]
pub struct ChaosBenchArgs {
    /// Kill-and-restart cycles.
    #[arg(long, default_value_t = 5)]
    pub cycles: u32,
    /// The database to serve; by default a fresh SQLite file in a temporary directory. A
    /// PostgreSQL database must be empty: the bench makes the server's master key.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Customers; each pays the next one.
    #[arg(long, default_value_t = 12)]
    pub customers: u32,
    /// Customers who also get a card (the first ones).
    #[arg(long, default_value_t = 4)]
    pub cards: u32,
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u32,
    /// The load of a cycle runs for a random time up to this many milliseconds before the
    /// kill (at least a tenth of it).
    #[arg(long, default_value_t = 3_000)]
    pub max_run_ms: u64,
    /// The fault of each cycle: `kill` the server (SIGKILL, then a restart), or cut its
    /// `connections` to PostgreSQL (every one of them, again and again for a second, while
    /// the server keeps running: it must answer 503, then recover by itself).
    #[arg(long, value_enum, default_value_t = Fault::Kill)]
    pub fault: Fault,
    /// Seed of the random kill moments and operation mix.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print one JSON object on one line.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Connections,
}

/// How long the connections are cut in a cycle of `--fault connections`.
const OUTAGE: Duration = Duration::from_secs(1);

/// One operation of the load, and what became of it.
#[derive(Clone, Debug)]
struct Op {
    what: What,
    amount: i64,
    /// The Idempotency-Key (QR: of the payment; the request's is derived from it) or the
    /// network reference.
    key: String,
    /// The answer it has; `None` while the kill left it without one.
    answer: Option<Answer>,
    /// It had an answer before a kill (not a retry's).
    acknowledged: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    P2p { payer: usize },
    Qr { payer: usize },
    Card { payer: usize },
    SignIn { who: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    /// The money moved (a P2P transfer completed or held, a QR payment, an approval).
    applied: bool,
    /// A P2P transfer held for review (the payer's money is reserved, the payee's not yet).
    held: bool,
    /// The transfer's id, when the answer names one.
    id: Option<String>,
}

/// Everything the load needs, shared by its clients.
struct People {
    customers: Vec<Customer>,
    /// Each customer's user id (for the records they leave).
    ids: Vec<String>,
    cards: Vec<Card>,
    merchant: Customer,
    till_key: String,
}

/// The running server: its process and address.
struct Server {
    child: tokio::process::Child,
}

/// Paths and settings every start of the server shares.
struct Setup {
    exe: PathBuf,
    url: String,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Setup {
    fn base_args(&self) -> Vec<String> {
        vec!["--database-url".into(), self.url.clone()]
    }

    fn key_args(&self) -> Vec<String> {
        vec![
            "--master-key-file".into(),
            self.dir.join("master.key").display().to_string(),
        ]
    }

    /// Starts `koban serve` and waits until it answers ready; answers the seconds it took.
    async fn start(&self) -> anyhow::Result<(Server, f64)> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))?;
        let file = |name: &str| self.dir.join(name).display().to_string();
        let began = Instant::now();
        let mut child = tokio::process::Command::new(&self.exe)
            .arg("serve")
            .args(self.base_args())
            .args(self.key_args())
            .args(["--listen", &self.addr.to_string()])
            .args(["--card-keys-file", &file("card-keys.json")])
            .args(["--audit-anchor-file", &file("audit-anchor.jsonl")])
            .args(["--audit-checkpoint-interval-s", "1"])
            .args(["--dev", "--trust-forwarded-for"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting koban serve")?;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "koban serve exited ({status}) before it was ready; see {}",
                    self.dir.join("serve.log").display()
                );
            }
            if ready(self.addr).await {
                return Ok((Server { child }, began.elapsed().as_secs_f64()));
            }
            if began.elapsed() > READY_TIMEOUT {
                bail!("koban serve was not ready within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs a `koban` command on the database (the server is down); answers its JSON report.
    async fn report(&self, args: &[&str]) -> anyhow::Result<Value> {
        let output = tokio::process::Command::new(&self.exe)
            .args(args)
            .args(self.base_args())
            .arg("--json")
            .stdin(Stdio::null())
            .output()
            .await?;
        let text = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(text.trim()).with_context(|| {
            format!(
                "koban {} printed no JSON report: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
    }
}

impl Server {
    async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// Stops it as an operator would (SIGTERM), so it writes what it queued and exits.
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.kill().await?,
        }
        Ok(())
    }
}

async fn ready(addr: SocketAddr) -> bool {
    let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(2), Conn::open(addr)).await
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            conn.send(Method::GET, "/readyz", None, &[], None)
        )
        .await,
        Ok(Ok((200, _)))
    )
}

/// A free port on loopback, kept for every restart.
fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

pub async fn chaos(args: ChaosBenchArgs) -> anyhow::Result<ExitCode> {
    if args.cycles == 0 || args.customers < 2 || args.concurrency == 0 || args.max_run_ms < 10 {
        bail!(
            "--cycles and --concurrency must be at least 1, --customers at least 2, --max-run-ms at least 10"
        );
    }
    let dir = tempfile::tempdir()?;
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", dir.path().join("chaos.db").display()),
    };
    let backend = match crate::backend::Backend::of(&url)? {
        crate::backend::Backend::Sqlite(_) => "sqlite",
        crate::backend::Backend::Postgres(_) => "postgres",
    };
    // The server's connections carry a name of their own, so that only they are cut.
    let app_name = format!("koban-chaos-{}", std::process::id());
    let cutter_url = url.clone();
    let url = match (args.fault, backend) {
        (Fault::Kill, _) => url,
        (Fault::Connections, "postgres") => {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}application_name={app_name}")
        }
        (Fault::Connections, _) => bail!("--fault connections needs a PostgreSQL --database-url"),
    };
    let card_keys = crate::keys::load_or_create_dev(&dir.path().join("card-keys.json"))?;
    let setup = Setup {
        exe: std::env::current_exe()?,
        url,
        addr: free_addr()?,
        dir: dir.path().to_path_buf(),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let (mut server, first_ready_s) = setup.start().await?;
    let people = Arc::new(set_up(&setup, &args).await?);
    let mut ops: Vec<Op> = Vec::new();
    let mut ready_s = vec![first_ready_s];
    let mut tally = Tally::default();
    let mut unavailable_answers = 0u64;
    let mut not_ready_seen = 0u64;
    let run = uuid::Uuid::now_v7().simple().to_string()[..8].to_owned();
    for cycle in 0..args.cycles {
        let run_ms = rng.random_range(args.max_run_ms / 10..=args.max_run_ms);
        let run_for = Duration::from_millis(run_ms);
        let tag = (format!("{run}-{cycle}"), rng.random());
        if args.fault == Fault::Connections {
            // The load runs through an outage of the database; the server stays up.
            let cut = async {
                let began = Instant::now();
                let cut = outage(&setup, (&cutter_url, &app_name), run_for / 3).await;
                tokio::time::sleep(run_for.saturating_sub(began.elapsed())).await;
                cut
            };
            let (new_ops, busy, cut) = load(setup.addr, &people, &card_keys, &args, tag, cut).await;
            let (not_ready, recovered_s) = cut?;
            unavailable_answers += busy;
            not_ready_seen += not_ready;
            ready_s.push(recovered_s);
            acknowledge(&mut ops, new_ops);
            let when = format!("cycle {cycle}");
            tally
                .settle_up(&setup, &people, &card_keys, &mut ops, &when)
                .await?;
            tally.down(check_down(&setup, &people, &ops, true).await?, &when);
            continue;
        }
        let kill = async move {
            tokio::time::sleep(run_for).await;
            server.kill().await
        };
        let (new_ops, busy, killed) = load(setup.addr, &people, &card_keys, &args, tag, kill).await;
        killed?;
        unavailable_answers += busy;
        acknowledge(&mut ops, new_ops);
        // Down: the books, the chain, and what the acknowledged transfers left behind.
        let when = format!("cycle {cycle}");
        tally.down(check_down(&setup, &people, &ops, false).await?, &when);
        let (restarted, took) = setup.start().await?;
        server = restarted;
        ready_s.push(took);
        // Up: every request without an answer gets one, then the wallets must add up.
        tally
            .settle_up(&setup, &people, &card_keys, &mut ops, &when)
            .await?;
    }
    server.stop().await?;
    tally.down(check_down(&setup, &people, &ops, true).await?, "at the end");
    let Tally {
        lost,
        duplicates,
        retried,
        settle_s,
        failures,
    } = tally;

    let acknowledged = ops
        .iter()
        .filter(|op| op.acknowledged && op.answer.as_ref().is_some_and(|a| a.applied))
        .count();
    let count = |f: fn(&What) -> bool| ops.iter().filter(|op| f(&op.what)).count();
    ready_s.sort_by(f64::total_cmp);
    let out = json!({
        "bench": "chaos",
        "backend": backend,
        "cycles": args.cycles,
        "operations": ops.len(),
        "operations_acknowledged": acknowledged,
        "operations_retried": retried,
        "operations_lost": lost,
        "duplicates": duplicates,
        "answers_unavailable_or_busy": unavailable_answers,
        "max_time_to_ready_s": round2(ready_s.last().copied().unwrap_or(0.0)),
        "median_time_to_ready_s": round2(ready_s[ready_s.len() / 2]),
        "max_time_to_settle_s": round2(settle_s),
        "fault": match args.fault {
            Fault::Kill => "kill",
            Fault::Connections => "connections",
        },
        "not_ready_answers_during_outages": not_ready_seen,
        "invariants_ok": failures.is_empty(),
        "failures": failures.iter().take(10).collect::<Vec<_>>(),
        "mix": {
            "p2p": count(|w| matches!(w, What::P2p { .. })),
            "qr": count(|w| matches!(w, What::Qr { .. })),
            "card": count(|w| matches!(w, What::Card { .. })),
            "sign_in": count(|w| matches!(w, What::SignIn { .. })),
        },
        "seed": seed,
        "customers": args.customers,
        "concurrency": args.concurrency,
    });
    crate::bench::print(&out, args.json)?;
    Ok(if failures.is_empty() && lost == 0 && duplicates == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What the cycles found, added up.
#[derive(Default)]
struct Tally {
    lost: u64,
    duplicates: u64,
    retried: u64,
    settle_s: f64,
    failures: Vec<String>,
}

impl Tally {
    /// Adds what a check with the service down found (`when`: which cycle).
    fn down(&mut self, check: DownCheck, when: &str) {
        self.lost += check.lost;
        self.duplicates += check.extra;
        self.failures
            .extend(check.failures.into_iter().map(|f| format!("{when}: {f}")));
    }

    /// Sends every unanswered operation again until it has its answer, then checks the
    /// wallets against the answered operations.
    async fn settle_up(
        &mut self,
        setup: &Setup,
        people: &People,
        card_keys: &koban_cards::card_keys::CardKeys,
        ops: &mut [Op],
        when: &str,
    ) -> anyhow::Result<()> {
        let settling = Instant::now();
        let (sent, mismatched) = settle(setup.addr, people, card_keys, ops).await?;
        self.retried += sent;
        self.settle_s = self.settle_s.max(settling.elapsed().as_secs_f64());
        self.duplicates += mismatched;
        if let Err(problem) = check_wallets(setup.addr, people, ops).await {
            self.failures.push(format!("{when}: {problem}"));
        }
        Ok(())
    }
}

/// Adds a cycle's operations to all of them; those answered before the fault are the
/// acknowledged ones.
fn acknowledge(ops: &mut Vec<Op>, mut new_ops: Vec<Op>) {
    for op in &mut new_ops {
        op.acknowledged = op.answer.is_some();
    }
    ops.append(&mut new_ops);
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Customers (funded, each past the step-up of its first payment to the next), their ids, a
/// card for the first ones, and a merchant with a till key.
async fn set_up(setup: &Setup, args: &ChaosBenchArgs) -> anyhow::Result<People> {
    let addr = setup.addr;
    let run = uuid::Uuid::now_v7().simple().to_string()[..8].to_owned();
    let mut customers = Vec::new();
    for index in 0..args.customers {
        customers.push(enrol(addr, index, &run).await?);
    }
    let emails: Vec<String> = customers.iter().map(|c| c.email.clone()).collect();
    for (index, customer) in customers.iter_mut().enumerate() {
        customer.token =
            first_transfer(addr, customer, &emails[(index + 1) % emails.len()]).await?;
    }
    let mut ids = Vec::new();
    let mut conn = Conn::open(addr).await?;
    for customer in &customers {
        let xff = [("x-forwarded-for", customer.forwarded.as_str())];
        let (_, me) = conn
            .send(Method::GET, "/v1/me", Some(&customer.token), &xff, None)
            .await?;
        ids.push(me["id"].as_str().unwrap_or_default().to_owned());
    }
    let holders: Vec<Customer> = customers
        .iter()
        .take(args.cards.min(args.customers) as usize)
        .cloned()
        .collect();
    let cards = crate::backend::open(
        &setup.url,
        BackendOptions::default(),
        IssueCards { addr, holders },
    )
    .await?;
    for (customer, card) in customers.iter_mut().zip(&cards) {
        customer.token = card.token.clone();
    }
    let merchant = enrol_as(addr, args.customers, &run, "merchant").await?;
    let till_key = crate::drill::money::api_key(&mut conn, &merchant).await?;
    Ok(People {
        customers,
        ids,
        cards,
        merchant,
        till_key,
    })
}

/// Issues a card to each holder (the identity check approved in the database, as `bench
/// cards` does).
struct IssueCards {
    addr: SocketAddr,
    holders: Vec<Customer>,
}

impl WithStore for IssueCards {
    type Output = Vec<Card>;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<Vec<Card>> {
        let db = store.sql();
        let mut cards = Vec::new();
        for holder in &self.holders {
            cards.push(issue(self.addr, &db, holder).await?);
        }
        Ok(cards)
    }
}

/// Runs the mixed load for `run`; answers every operation sent (with its answer, if it got
/// one) and how many answers were 503 or 429.
async fn load<F: std::future::Future>(
    addr: SocketAddr,
    people: &Arc<People>,
    card_keys: &koban_cards::card_keys::CardKeys,
    args: &ChaosBenchArgs,
    (tag, seed): (String, u64),
    fault: F,
) -> (Vec<Op>, u64, F::Output) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    let busy = Arc::new(Mutex::new(0u64));
    for worker in 0..args.concurrency {
        let people = people.clone();
        let keys = card_keys.clone();
        let tag = format!("{tag}-{worker}");
        let busy = busy.clone();
        let stop = stop.clone();
        workers.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ u64::from(worker));
            let mut ops = Vec::new();
            let mut client = Client::new(addr, &keys);
            let n = people.customers.len();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let who = rng.random_range(0..n);
                let roll = rng.random_range(0..100);
                let what = match roll {
                    0..65 => What::P2p { payer: who },
                    65..80 => What::Qr { payer: who },
                    80..95 if who < people.cards.len() => What::Card { payer: who },
                    _ => What::SignIn { who },
                };
                let mut op = Op {
                    what,
                    amount: rng.random_range(1..=20),
                    key: format!("chaos-{tag}-{}", ops.len()),
                    answer: None,
                    acknowledged: false,
                };
                match client.send(&people, &op).await {
                    Sent::Answer(answer) => op.answer = Some(answer),
                    Sent::Busy => {
                        *busy.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    }
                    // The server is gone or failing: a moment before the next, so a kill
                    // leaves a few unanswered operations per client, not a flood of refusals.
                    Sent::NoAnswer => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                ops.push(op);
            }
            ops
        });
    }
    // The fault lands while the clients are sending: requests in flight lose their answers.
    let faulted = fault.await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut ops = Vec::new();
    while let Some(done) = workers.join_next().await {
        if let Ok(mut more) = done {
            ops.append(&mut more);
        }
    }
    let busy = *busy.lock().unwrap_or_else(|e| e.into_inner());
    (ops, busy, faulted)
}

enum Sent {
    Answer(Answer),
    /// 503 or 429: not done, to be sent again.
    Busy,
    /// No answer (the connection broke, or the server failed): to be sent again.
    NoAnswer,
}

/// One client's connections: the API and the card network.
struct Client {
    addr: SocketAddr,
    keys: koban_cards::card_keys::CardKeys,
    conn: Option<Conn>,
    network: Option<NetworkClient>,
}

impl Client {
    fn new(addr: SocketAddr, keys: &koban_cards::card_keys::CardKeys) -> Client {
        Client {
            addr,
            keys: keys.clone(),
            conn: None,
            network: None,
        }
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        if self.conn.is_none() {
            self.conn = Conn::open(self.addr).await.ok();
        }
        let conn = self.conn.as_mut()?;
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            conn.send(method, path, token, headers, body),
        )
        .await;
        match sent {
            Ok(Ok(answer)) => Some(answer),
            _ => {
                self.conn = None;
                None
            }
        }
    }

    /// Sends `op` once (a retry sends the same keys); answers what came back.
    async fn send(&mut self, people: &People, op: &Op) -> Sent {
        let outcome = match op.what {
            What::P2p { payer } => {
                let customer = &people.customers[payer];
                let payee = &people.customers[(payer + 1) % people.customers.len()];
                let headers = [
                    ("x-forwarded-for", customer.forwarded.as_str()),
                    ("idempotency-key", op.key.as_str()),
                ];
                self.call(
                    Method::POST,
                    "/v1/transfers",
                    Some(&customer.token),
                    &headers,
                    Some(json!({ "to": payee.email, "amount": op.amount })),
                )
                .await
                .map(|(status, body)| match status {
                    200 | 201 => (
                        status,
                        Some(Answer {
                            applied: true,
                            held: body["status"] == "held",
                            id: body["id"].as_str().map(str::to_owned),
                        }),
                    ),
                    _ => (status, None),
                })
            }
            What::Qr { payer } => self.qr(people, payer, op).await,
            What::Card { payer } => {
                let mut request = people.cards[payer].request.clone();
                request["amount"] = json!(op.amount);
                request["network_ref"] = json!(op.key);
                if self.network.is_none() {
                    self.network = NetworkClient::open(self.addr, &self.keys).await.ok();
                }
                let Some(network) = self.network.as_mut() else {
                    return Sent::NoAnswer;
                };
                let sent = tokio::time::timeout(
                    Duration::from_secs(10),
                    network.send("/v1/network/authorizations", &request),
                )
                .await;
                match sent {
                    Ok(Ok((200, answer))) => Some((
                        200,
                        Some(Answer {
                            applied: answer["approved"] == json!(true),
                            held: false,
                            id: answer["authorization_id"].as_str().map(str::to_owned),
                        }),
                    )),
                    Ok(Ok((status, _))) => Some((status, None)),
                    _ => {
                        self.network = None;
                        None
                    }
                }
            }
            What::SignIn { who } => {
                let customer = &people.customers[who];
                let headers = [("x-forwarded-for", customer.forwarded.as_str())];
                self.call(
                    Method::POST,
                    "/v1/login",
                    None,
                    &headers,
                    Some(json!({ "email": customer.email, "password": PASSWORD })),
                )
                .await
                .map(|(status, _)| (status, None))
            }
        };
        match outcome {
            None => Sent::NoAnswer,
            Some((_, Some(answer))) => Sent::Answer(answer),
            Some((503 | 429 | 409, _)) => Sent::Busy,
            Some((status, _)) if status >= 500 => Sent::NoAnswer,
            // A refusal (funds, limits, risk) or a sign-in's answer: nothing moved.
            Some(_) => Sent::Answer(Answer {
                applied: false,
                held: false,
                id: None,
            }),
        }
    }

    /// The merchant asks (its key derived from the payment's), the customer pays.
    async fn qr(
        &mut self,
        people: &People,
        payer: usize,
        op: &Op,
    ) -> Option<(u16, Option<Answer>)> {
        let merchant = &people.merchant;
        let request_key = format!("{}-request", op.key);
        let (status, request) = self
            .call(
                Method::POST,
                "/v1/merchant/payment-requests",
                Some(&people.till_key),
                &[
                    ("x-forwarded-for", merchant.forwarded.as_str()),
                    ("idempotency-key", request_key.as_str()),
                ],
                Some(json!({ "amount": op.amount, "reference": op.key })),
            )
            .await?;
        if !(200..300).contains(&status) {
            return Some((status, None));
        }
        let payload = request["qr_payload"].as_str()?.to_owned();
        let customer = &people.customers[payer];
        let (status, paid) = self
            .call(
                Method::POST,
                "/v1/qr/pay",
                Some(&customer.token),
                &[
                    ("x-forwarded-for", customer.forwarded.as_str()),
                    ("idempotency-key", op.key.as_str()),
                ],
                Some(json!({ "payload": payload })),
            )
            .await?;
        Some((
            status,
            (status == 200 || status == 201).then(|| Answer {
                applied: true,
                held: false,
                id: paid["id"].as_str().map(str::to_owned),
            }),
        ))
    }
}

/// After `after`, cuts every connection named `app_name` to the database (reached through
/// `url`, under another name) for [`OUTAGE`]
/// (again every 50 ms, so the pool's new ones go too), asking `/readyz` meanwhile; then waits
/// until it answers ready. Answers how many times it said not ready, and the seconds from the
/// end of the outage to ready.
async fn outage(
    setup: &Setup,
    (url, app_name): (&str, &str),
    after: Duration,
) -> anyhow::Result<(u64, f64)> {
    tokio::time::sleep(after).await;
    let cutter = crate::backend::open(
        url,
        BackendOptions::default(),
        CutConnections {
            app_name: app_name.to_owned(),
            addr: setup.addr,
        },
    );
    let not_ready = cutter.await?;
    let ended = Instant::now();
    while !ready(setup.addr).await {
        if ended.elapsed() > READY_TIMEOUT {
            bail!("the server was not ready again within {READY_TIMEOUT:?} of the outage");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((not_ready, ended.elapsed().as_secs_f64()))
}

/// Terminates the server's database connections for [`OUTAGE`]; answers how many times
/// `/readyz` said not ready meanwhile.
struct CutConnections {
    app_name: String,
    addr: SocketAddr,
}

impl WithStore for CutConnections {
    type Output = u64;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<u64> {
        let db = store.sql();
        let began = Instant::now();
        let mut not_ready = 0;
        while began.elapsed() < OUTAGE {
            db.read(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                koban_store::params![self.app_name.as_str()],
            )
            .await?;
            if !ready(self.addr).await {
                not_ready += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(not_ready)
    }
}

/// Sends every operation without an answer again until it has one (a few seconds apart when
/// busy), and an acknowledged one of each kind again to check its replay names the same
/// transfer. Answers how many operations were sent again (each counted once, however often
/// it had to be sent) and how many answered with another id.
async fn settle(
    addr: SocketAddr,
    people: &People,
    keys: &koban_cards::card_keys::CardKeys,
    ops: &mut [Op],
) -> anyhow::Result<(u64, u64)> {
    let mut client = Client::new(addr, keys);
    let mut sent = 0u64;
    let mut mismatched = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    for op in ops.iter_mut().filter(|op| op.answer.is_none()) {
        if matches!(op.what, What::SignIn { .. }) {
            // Nothing to settle: a sign-in moves no money.
            op.answer = Some(Answer {
                applied: false,
                held: false,
                id: None,
            });
            continue;
        }
        sent += 1;
        loop {
            match client.send(people, op).await {
                Sent::Answer(answer) => {
                    op.answer = Some(answer);
                    break;
                }
                Sent::Busy | Sent::NoAnswer if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => bail!("an operation found no answer within 2 minutes of the restart"),
            }
        }
    }
    // Replays of the last acknowledged payment of each kind name what they named before.
    for kind in 0..3 {
        let last = ops.iter().rev().find(|op| {
            op.acknowledged
                && op
                    .answer
                    .as_ref()
                    .is_some_and(|a| a.applied && a.id.is_some())
                && match kind {
                    0 => matches!(op.what, What::P2p { .. }),
                    1 => matches!(op.what, What::Qr { .. }),
                    _ => matches!(op.what, What::Card { .. }),
                }
        });
        let Some(op) = last else {
            continue;
        };
        sent += 1;
        let again = loop {
            match client.send(people, op).await {
                Sent::Answer(again) => break again,
                // A lock of the killed server may still stand for its lease.
                Sent::Busy | Sent::NoAnswer if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => bail!("a replay found no answer within 2 minutes of the restart"),
            }
        };
        if Some(&again) != op.answer.as_ref()
            && again.id != op.answer.as_ref().and_then(|a| a.id.clone())
        {
            mismatched += 1;
        }
    }
    Ok((sent, mismatched))
}

/// Each wallet's balance and pending out-flow against what the answered operations moved.
async fn check_wallets(addr: SocketAddr, people: &People, ops: &[Op]) -> Result<(), String> {
    let n = people.customers.len();
    let mut balance = vec![FUNDING; n];
    let mut pending = vec![0i64; n];
    for op in ops {
        let Some(answer) = op.answer.as_ref().filter(|a| a.applied) else {
            continue;
        };
        match op.what {
            What::P2p { payer } if answer.held => pending[payer] += op.amount,
            What::P2p { payer } => {
                balance[payer] -= op.amount;
                balance[(payer + 1) % n] += op.amount;
            }
            What::Qr { payer } => balance[payer] -= op.amount,
            What::Card { payer } => pending[payer] += op.amount,
            What::SignIn { .. } => {}
        }
    }
    let mut conn = Conn::open(addr).await.map_err(|e| e.to_string())?;
    for (i, customer) in people.customers.iter().enumerate() {
        let (status, wallet) = conn
            .send(
                Method::GET,
                "/v1/wallet",
                Some(&customer.token),
                &[("x-forwarded-for", customer.forwarded.as_str())],
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        let seen = (wallet["balance"].as_i64(), wallet["pending_out"].as_i64());
        if status != 200 || seen != (Some(balance[i]), Some(pending[i])) {
            return Err(format!(
                "customer {i}: balance and pending {seen:?}, the answered operations say ({}, {})",
                balance[i], pending[i]
            ));
        }
    }
    Ok(())
}

/// What the checks with the service down found.
struct DownCheck {
    /// Acknowledged transfers, notices or records missing.
    lost: u64,
    /// Notices beyond what could have been sent.
    extra: u64,
    failures: Vec<String>,
}

/// The ledger audit with every acknowledged transfer, the audit chain, and each customer's
/// notices and records of P2P transfers. `settled`: every operation has its answer, so the
/// counts must be exact.
async fn check_down(
    setup: &Setup,
    people: &Arc<People>,
    ops: &[Op],
    settled: bool,
) -> anyhow::Result<DownCheck> {
    let mut failures = Vec::new();
    let acked_file = setup.dir.join("acked.txt");
    let mut acked = String::new();
    for op in ops {
        if let (
            What::P2p { .. } | What::Qr { .. },
            Some(Answer {
                applied: true,
                id: Some(id),
                ..
            }),
        ) = (op.what, &op.answer)
        {
            let id = uuid::Uuid::parse_str(id)
                .map_err(|_| anyhow!("a transfer id that is not a UUID"))?;
            acked.push_str(&format!("{:032x}\n", id.as_u128()));
        }
    }
    std::fs::write(&acked_file, acked)?;
    let ledger = setup
        .report(&[
            "audit",
            "ledger",
            "--acked",
            &acked_file.display().to_string(),
        ])
        .await?;
    let lost_transfers = ledger["acked"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(ledger["acked_present"].as_u64().unwrap_or(0));
    if ledger["invariants_ok"] != json!(true) {
        failures.push(format!("the ledger audit failed: {ledger}"));
    }
    // Checkpoints are anchored every second; a kill before the first leaves no anchor file.
    let anchor = setup.dir.join("audit-anchor.jsonl");
    let mut verify = vec!["audit".to_owned(), "verify".to_owned()];
    match anchor.exists() {
        true => verify.extend(["--anchor".to_owned(), anchor.display().to_string()]),
        false => verify.push("--no-anchor".to_owned()),
    }
    verify.extend(setup.key_args());
    let verify: Vec<&str> = verify.iter().map(String::as_str).collect();
    let chain = setup.report(&verify).await?;
    if chain["ok"] != json!(true) {
        failures.push(format!("the audit chain does not verify: {chain}"));
    }
    // Per payer: P2P transfers that completed with an answer, and those still without one.
    let n = people.customers.len();
    let mut answered = vec![0i64; n];
    let mut open = vec![0i64; n];
    for op in ops {
        if let What::P2p { payer } = op.what {
            match &op.answer {
                Some(a) if a.applied && !a.held => answered[payer] += 1,
                None => open[payer] += 1,
                _ => {}
            }
        }
    }
    let counts = crate::backend::open(
        &setup.url,
        BackendOptions::default(),
        CountRecords {
            people: people.clone(),
            keys: koban_auth::ServerKeys::from_hex(&std::fs::read_to_string(
                setup.dir.join("master.key"),
            )?)
            .map_err(|e| anyhow::anyhow!("the bench's master key: {e}"))?,
        },
    )
    .await?;
    let (mut lost, mut extra) = (lost_transfers, 0u64);
    for (i, (notices, records)) in counts.into_iter().enumerate() {
        // Each customer's first transfer (at setup) told and recorded once too.
        let least = answered[i] + 1;
        let most = least + if settled { 0 } else { open[i] };
        if notices < least || records < least {
            lost += u64::try_from(least - notices.min(records)).unwrap_or(0);
            failures.push(format!(
                "customer {i}: {notices} notices and {records} records of {least} acknowledged transfers"
            ));
        }
        if notices > most {
            extra += u64::try_from(notices - most).unwrap_or(0);
            failures.push(format!(
                "customer {i}: {notices} notices of at most {most} transfers"
            ));
        }
    }
    if lost_transfers > 0 {
        failures.push(format!(
            "{lost_transfers} acknowledged transfers are not in the ledger"
        ));
    }
    Ok(DownCheck {
        lost,
        extra,
        failures,
    })
}

/// Each customer's "you sent money" notices and P2P risk records.
struct CountRecords {
    people: Arc<People>,
    /// The server's keys: notices are sealed, found by their address's blind index.
    keys: koban_auth::ServerKeys,
}

impl WithStore for CountRecords {
    type Output = Vec<(i64, i64)>;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<Vec<(i64, i64)>> {
        let db = store.sql();
        let vault = self.keys.vault(&db, koban_store::Clock::system()).await?;
        let mut counts = Vec::new();
        for (customer, id) in self.people.customers.iter().zip(&self.people.ids) {
            let subjects = db
                .read(
                    "SELECT subject FROM outbox WHERE recipient_index = $1",
                    koban_store::params![vault.index(Index::Email, customer.email.as_str())],
                )
                .await?;
            let mut sent = 0;
            for row in &subjects {
                if vault.open(&personal::OUTBOX_SUBJECT, &row.text(0)?)? == "You sent money" {
                    sent += 1;
                }
            }
            let records = db
                .read(
                    "SELECT COUNT(*) FROM risk_events WHERE customer = $1 AND kind = 'p2p' AND action <> 'deny'",
                    koban_store::params![id.as_str()],
                )
                .await?;
            counts.push((sent, first_count(&records)?));
        }
        Ok(counts)
    }
}

fn first_count(rows: &[koban_store::sql::Row]) -> anyhow::Result<i64> {
    Ok(rows
        .first()
        .ok_or_else(|| anyhow!("a count answered no row"))?
        .i64(0)?)
}
