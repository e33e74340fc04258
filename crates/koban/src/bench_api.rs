//! `koban bench api`: authenticated P2P transfers over HTTP on loopback. Starts a server on a
//! fresh temporary embedded database (or targets `--url`), signs customers up through the API
//! (sign-up, e-mail code from the development mailbox, TOTP enrolment), funds each from the
//! sandbox faucet, confirms each one's first transfer to its payee with step-up, then drives
//! transfers of 1 minor unit from C concurrent keep-alive connections for a fixed time.
//! Argon2 is paid at sign-in only: each transfer is authenticated by its session token.
//!
//! `invariants_ok` checks that the customers' balances still add up to what the faucet gave
//! them (money moved between them, none created or lost), that every acknowledged transfer
//! moved exactly its amount, and, with the built-in server, the ledger's own audit and the
//! e-money reconciliation.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use koban_api::{ApiConfig, ApiState};
use koban_auth::{Auth, AuthConfig, ServerKeys};
use koban_store::{Clock, LedgerStore};
use koban_store_sqlite::{SqliteConfig, SqliteStore};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;

pub(crate) const PASSWORD: &str = "kettle harbour meadow lantern";
const FUNDING: i64 = 50_000;

#[derive(Args, Debug, Clone)]
pub struct ApiBenchArgs {
    /// Target a running server (started with `--dev --trust-forwarded-for`) instead of
    /// starting one on a fresh temporary SQLite database. Repeat it for several instances on
    /// one database: the clients are spread over them in turn.
    #[arg(long)]
    pub url: Vec<String>,
    /// Customers to create; each sends to the next one.
    #[arg(long, default_value_t = 100)]
    pub customers: u32,
    /// Concurrent clients, each on its own keep-alive connection.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u32,
    /// Seconds of measured transfers.
    #[arg(long, default_value_t = 15)]
    pub duration_s: u64,
    /// Print one JSON object only.
    #[arg(long)]
    pub json: bool,
}

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Conn {
            sender,
            host: addr.to_string(),
        })
    }

    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        self.send_text(method, path, token, headers, text).await
    }

    /// Sends `text` as the body exactly (signed requests sign these bytes).
    pub(crate) async fn send_text(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        text: String,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(text)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}

#[derive(Clone)]
pub(crate) struct Customer {
    pub(crate) email: String,
    pub(crate) token: String,
    pub(crate) forwarded: String,
    pub(crate) recovery: String,
    /// The other nine recovery codes, each good for one more step-up.
    pub(crate) spare_recovery: Vec<String>,
}

pub(crate) fn client_ip(index: u32) -> String {
    // One /24 per customer, so per-network limits on sign-up do not apply across customers.
    IpAddr::V4(Ipv4Addr::new(
        10,
        (index / 250) as u8,
        (index % 250) as u8,
        7,
    ))
    .to_string()
}

pub(crate) async fn expect(
    conn: &mut Conn,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
    want: u16,
) -> anyhow::Result<Value> {
    let (status, reply) = conn.send(method, path, token, headers, body).await?;
    if status != want {
        // The problem's type and detail only: a reply can carry tokens or codes.
        bail!(
            "{path} answered {status} (wanted {want}): {} {}",
            reply["type"].as_str().unwrap_or_default(),
            reply["detail"].as_str().unwrap_or_default()
        );
    }
    Ok(reply)
}

/// Signs a customer up through the API and returns their full session, funded.
pub(crate) async fn enrol(addr: SocketAddr, index: u32, run: &str) -> anyhow::Result<Customer> {
    enrol_as(addr, index, run, "customer").await
}

/// Signs a customer or merchant up through the API, with TOTP enrolled, and returns the full
/// session (a customer's wallet funded from the sandbox faucet).
pub(crate) async fn enrol_as(
    addr: SocketAddr,
    index: u32,
    run: &str,
    kind: &str,
) -> anyhow::Result<Customer> {
    enrol_with(addr, index, run, kind, PASSWORD).await
}

/// [`enrol_as`] with a password of the caller's choosing.
pub(crate) async fn enrol_with(
    addr: SocketAddr,
    index: u32,
    run: &str,
    kind: &str,
    password: &str,
) -> anyhow::Result<Customer> {
    let mut conn = Conn::open(addr).await?;
    let email = format!("bench{index}-{run}@bench.example");
    let forwarded = client_ip(index);
    let xff = [("x-forwarded-for", forwarded.as_str())];
    let signup = json!({ "kind": kind, "email": email, "password": password, "display_name": format!("Bench Customer {index}") });
    expect(
        &mut conn,
        Method::POST,
        "/v1/signup",
        None,
        &xff,
        Some(signup),
        202,
    )
    .await?;
    let mut code = None;
    for _ in 0..100 {
        let (_, mail) = conn
            .send(
                Method::GET,
                &format!("/v1/dev/mailbox?to={email}"),
                None,
                &xff,
                None,
            )
            .await?;
        code = mail
            .as_array()
            .and_then(|m| m.first())
            .and_then(|m| m["body"].as_str())
            .map(|b| {
                b.chars()
                    .filter(char::is_ascii_digit)
                    .take(6)
                    .collect::<String>()
            });
        if code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code = code
        .ok_or_else(|| anyhow!("no verification mail for {email}; is the server in --dev mode?"))?;
    expect(
        &mut conn,
        Method::POST,
        "/v1/signup/verify",
        None,
        &xff,
        Some(json!({ "email": email, "code": code })),
        204,
    )
    .await?;
    let login = expect(
        &mut conn,
        Method::POST,
        "/v1/login",
        None,
        &xff,
        Some(json!({ "email": email, "password": password })),
        200,
    )
    .await?;
    let token = login["session"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (token, mut codes) = enrol_totp(&mut conn, &token, &xff).await?;
    if codes.is_empty() {
        bail!("no recovery codes at enrolment");
    }
    let recovery = codes.remove(0);
    if kind != "customer" {
        return Ok(Customer {
            email,
            token,
            forwarded,
            recovery,
            spare_recovery: codes,
        });
    }
    expect(
        &mut conn,
        Method::POST,
        "/v1/sandbox/faucet",
        Some(&token),
        &[
            ("x-forwarded-for", forwarded.as_str()),
            ("idempotency-key", "bench-funding"),
        ],
        Some(json!({ "amount": FUNDING })),
        201,
    )
    .await?;
    Ok(Customer {
        email,
        token,
        forwarded,
        recovery,
        spare_recovery: codes,
    })
}

/// Enrols an authenticator app on the session `token` (a TOTP code computed here confirms it);
/// the full session's token and the recovery codes.
pub(crate) async fn enrol_totp(
    conn: &mut Conn,
    token: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(String, Vec<String>)> {
    let begun = expect(
        conn,
        Method::POST,
        "/v1/factors/totp",
        Some(token),
        headers,
        Some(json!({})),
        201,
    )
    .await?;
    let seed = koban_auth::totp::seed_from_uri(begun["otpauth_uri"].as_str().unwrap_or_default())
        .ok_or_else(|| anyhow!("no TOTP seed"))?;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let totp = koban_auth::totp::code_at(&seed, now_s).map_err(|e| anyhow!("{e}"))?;
    let factor = begun["factor_id"].as_str().unwrap_or_default();
    let confirmed = expect(
        conn,
        Method::POST,
        &format!("/v1/factors/totp/{factor}/confirm"),
        Some(token),
        headers,
        Some(json!({ "code": totp })),
        200,
    )
    .await?;
    let token = confirmed["session"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let codes = confirmed["recovery_codes"]
        .as_array()
        .map(|codes| {
            codes
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok((token, codes))
}

/// The first transfer to the payee needs step-up; a recovery code answers it (a TOTP code of
/// this 30-second step was just used to enrol). Returns the session token to use afterwards.
pub(crate) async fn first_transfer(
    addr: SocketAddr,
    customer: &Customer,
    payee: &str,
) -> anyhow::Result<String> {
    let mut conn = Conn::open(addr).await?;
    let first = json!({ "to": payee, "amount": 1 });
    let headers = [
        ("x-forwarded-for", customer.forwarded.as_str()),
        ("idempotency-key", "bench-first"),
    ];
    let (status, challenge) = conn
        .send(
            Method::POST,
            "/v1/transfers",
            Some(&customer.token),
            &headers,
            Some(first.clone()),
        )
        .await?;
    if status != 403 {
        bail!("the first transfer answered {status}, not a step-up challenge: {challenge}");
    }
    let mut confirmed = first;
    confirmed["step_up"] = json!({ "id": challenge["step_up"]["id"], "code": customer.recovery });
    let sent = expect(
        &mut conn,
        Method::POST,
        "/v1/transfers",
        Some(&customer.token),
        &headers,
        Some(confirmed),
        201,
    )
    .await?;
    Ok(sent["session"]["token"]
        .as_str()
        .unwrap_or(&customer.token)
        .to_owned())
}

pub(crate) struct Started {
    pub(crate) addr: SocketAddr,
    pub(crate) store: Option<SqliteStore>,
    pub(crate) pay: Option<koban_pay::Payments<SqliteStore>>,
    pub(crate) stop: Option<watch::Sender<bool>>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The built-in server's own runtime, apart from the load generator's threads.
    pub(crate) runtime: Option<tokio::runtime::Runtime>,
    pub(crate) _dir: Option<tempfile::TempDir>,
}

impl Started {
    /// Stops the workers (they finish on the signal), the server outright, then the store.
    pub(crate) async fn stop(self) {
        if let Some(stop) = &self.stop {
            let _ = stop.send(true);
        }
        let mut tasks = self.tasks.into_iter();
        if let Some(workers) = tasks.next() {
            let _ = workers.await;
        }
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        if let Some(store) = &self.store {
            store.shutdown().await;
        }
        if let Some(runtime) = self.runtime {
            runtime.shutdown_background();
        }
    }
}

/// Starts a server on a fresh temporary SQLite database, on a runtime of its own (so the
/// server's CPU can be told apart from the load generator's: see `bench_meter`).
pub(crate) async fn start_server(
    card_keys: Option<koban_cards::card_keys::CardKeys>,
    rules: koban_pay::koban_risk::RuleSet,
) -> anyhow::Result<Started> {
    let runtime = crate::bench_meter::server_runtime()?;
    // Everything the server spawns while starting lands on its runtime.
    let mut started = runtime.spawn(start_server_here(card_keys, rules)).await??;
    started.runtime = Some(runtime);
    Ok(started)
}

async fn start_server_here(
    card_keys: Option<koban_cards::card_keys::CardKeys>,
    rules: koban_pay::koban_risk::RuleSet,
) -> anyhow::Result<Started> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("bench.db"), SqliteConfig::default())?;
    let auth = Auth::new(
        store.sql(),
        ServerKeys::from_hex(&ServerKeys::generate_hex())?,
        Clock::system(),
        AuthConfig {
            dev: true,
            ..AuthConfig::default()
        },
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    let pay = koban_pay::Payments::new(
        store.clone(),
        auth.clone(),
        koban_pay::PayConfig {
            sandbox: true,
            ..koban_pay::PayConfig::default()
        },
    )
    .map_err(|e| anyhow!("{e}"))?;
    let risk = koban_pay::RiskRules::load(None).map_err(|e| anyhow!("{e}"))?;
    risk.replace(rules);
    let pay = pay.with_risk_rules(risk);
    let cards = koban_cards::Cards::new(pay.clone(), koban_cards::CardConfig::default());
    let cards = match card_keys {
        Some(keys) => cards.with_keys(keys),
        None => cards,
    };
    pay.open_issuer_accounts()
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let (stop, stopped) = watch::channel(false);
    let workers = tokio::spawn(crate::workers::run_workers::<SqliteStore>(
        auth.clone(),
        pay.clone(),
        cards.clone(),
        stopped,
    ));
    let router = koban_api::router(ApiState {
        store: store.clone(),
        auth,
        pay: pay.clone(),
        cards,
        metrics: None,
        config: ApiConfig {
            dev: true,
            trust_forwarded_for: true,
        },
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Ok(Started {
        addr,
        store: Some(store),
        pay: Some(pay),
        stop: Some(stop),
        tasks: vec![workers, server],
        runtime: None,
        _dir: Some(dir),
    })
}

/// The address of `url` (`http://host:port`), which must be a loopback address: benchmarks
/// and drills send load and attacks, only ever to this machine.
pub(crate) async fn loopback(url: &str) -> anyhow::Result<SocketAddr> {
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    let addr = tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("resolving {url}"))?
        .next()
        .ok_or_else(|| anyhow!("{url} has no address"))?;
    if !addr.ip().is_loopback() {
        bail!("only loopback addresses are sent benchmark or attack traffic");
    }
    Ok(addr)
}

pub(crate) fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    f64::from(sorted_us[rank.min(sorted_us.len() - 1)]) / 1000.0
}

pub async fn api(args: ApiBenchArgs) -> anyhow::Result<ExitCode> {
    if args.customers < 2 || args.concurrency == 0 || args.duration_s == 0 {
        bail!("--customers must be at least 2, --concurrency and --duration-s at least 1");
    }
    let mut targets = Vec::new();
    for url in &args.url {
        targets.push(loopback(url).await?);
    }
    let started = match targets.first() {
        Some(&addr) => Started {
            addr,
            store: None,
            pay: None,
            stop: None,
            tasks: Vec::new(),
            runtime: None,
            _dir: None,
        },
        None => start_server(None, koban_pay::koban_risk::RuleSet::default_rules()).await?,
    };
    let addr = started.addr;
    let run = uuid::Uuid::now_v7().simple().to_string()[..8].to_owned();
    let setup = Instant::now();
    // Sign-up and sign-in hash passwords: a few customers at a time, as two cores allow.
    let mut customers: Vec<Option<Customer>> = (0..args.customers).map(|_| None).collect();
    let mut pending = tokio::task::JoinSet::new();
    for index in 0..args.customers {
        let run = run.clone();
        pending.spawn(async move { (index, enrol(addr, index, &run).await) });
        while pending.len() >= 4 {
            if let Some(done) = pending.join_next().await {
                let (index, customer) = done?;
                customers[index as usize] = Some(customer?);
            }
        }
    }
    while let Some(done) = pending.join_next().await {
        let (index, customer) = done?;
        customers[index as usize] = Some(customer?);
    }
    let mut customers: Vec<Customer> = customers.into_iter().flatten().collect();
    // Each customer pays the next (the last pays the first): one step-up each, up front.
    let emails: Vec<String> = customers.iter().map(|c| c.email.clone()).collect();
    for (index, customer) in customers.iter_mut().enumerate() {
        let payee = &emails[(index + 1) % emails.len()];
        customer.token = first_transfer(addr, customer, payee).await?;
    }
    let setup_s = setup.elapsed().as_secs_f64();

    let customers = Arc::new(customers);
    let emails = Arc::new(emails);
    let next_key = Arc::new(AtomicU64::new(0));
    let meter = crate::bench_meter::Meter::server();
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let addr = targets
            .get(worker as usize % targets.len().max(1))
            .copied()
            .unwrap_or(addr);
        let customers = customers.clone();
        let emails = emails.clone();
        let next_key = next_key.clone();
        workers.spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            let mut sent_by: Vec<(usize, u64)> = Vec::new();
            let Ok(mut conn) = Conn::open(addr).await else {
                return (latencies, 1, sent_by);
            };
            let mut index = worker as usize % customers.len();
            while Instant::now() < deadline {
                let customer = &customers[index];
                let payee = &emails[(index + 1) % emails.len()];
                let key = format!("bench-{}", next_key.fetch_add(1, Ordering::Relaxed));
                let headers = [
                    ("x-forwarded-for", customer.forwarded.as_str()),
                    ("idempotency-key", key.as_str()),
                ];
                let began = Instant::now();
                let result = conn
                    .send(
                        Method::POST,
                        "/v1/transfers",
                        Some(&customer.token),
                        &headers,
                        Some(json!({ "to": payee, "amount": 1 })),
                    )
                    .await;
                let took = u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX);
                match result {
                    Ok((201, _)) => {
                        latencies.push(took);
                        sent_by.push((index, 1));
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        match Conn::open(addr).await {
                            Ok(fresh) => conn = fresh,
                            Err(_) => break,
                        }
                    }
                }
                index = (index + args_stride(customers.len())) % customers.len();
            }
            (latencies, errors, sent_by)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut sent = vec![0u64; customers.len()];
    while let Some(done) = workers.join_next().await {
        let (mut l, e, by) = done?;
        latencies.append(&mut l);
        errors += e;
        for (index, amount) in by {
            sent[index] += amount;
        }
    }
    let usage = match targets.is_empty() {
        false => crate::bench_meter::Meter::not_measured(),
        true => meter.per_op(latencies.len() as u64),
    };
    let seconds = args.duration_s as f64;
    latencies.sort_unstable();

    // Every customer started with FUNDING, sent 1 to the next at setup, and then `sent[i]`
    // more; each received as much from the one before. Balances must say exactly that.
    let mut invariants_ok = true;
    let mut conn = Conn::open(addr).await?;
    let n = customers.len();
    for (index, customer) in customers.iter().enumerate() {
        let (_, wallet) = conn
            .send(
                Method::GET,
                "/v1/wallet",
                Some(&customer.token),
                &[("x-forwarded-for", customer.forwarded.as_str())],
                None,
            )
            .await?;
        let previous = (index + n - 1) % n;
        let expected = FUNDING - 1 - sent[index] as i64 + 1 + sent[previous] as i64;
        if wallet["balance"].as_i64() != Some(expected) {
            invariants_ok = false;
        }
    }
    if let (Some(store), Some(pay)) = (&started.store, &started.pay) {
        let report = store.audit().await?;
        invariants_ok &= report.ok();
        for (_, outstanding, wallets) in pay.reconcile().await.map_err(|e| anyhow!("{e}"))? {
            invariants_ok &= outstanding == wallets;
        }
    }
    started.stop().await;
    let mut out = json!({
        "bench": "api",
        "requests_per_second": (latencies.len() as f64 / seconds * 10.0).round() / 10.0,
        "latency_ms_p50": percentile_ms(&latencies, 50.0),
        "latency_ms_p99": percentile_ms(&latencies, 99.0),
        "errors": errors,
        "invariants_ok": invariants_ok,
        "transfers": latencies.len(),
        "customers": args.customers,
        "concurrency": args.concurrency,
        "duration_s": args.duration_s,
        "setup_s": (setup_s * 10.0).round() / 10.0,
        "server": match targets.len() {
            0 => "built-in, embedded SQLite".to_owned(),
            1 => "url".to_owned(),
            n => format!("{n} urls"),
        },
        "safety": {
            "risk_rules": "the default set, every rule on",
            "idempotency_key": "a fresh key on every transfer",
            "limits": "tier balance cap, daily and per-payee limits checked on every transfer",
            "step_up": "each customer's first payment to its payee confirmed with a second factor",
            "acknowledged": "after the ledger's group is durable (fsync)",
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

/// Workers step through customers by a stride coprime to their count, so they spread out.
fn args_stride(customers: usize) -> usize {
    (1..customers)
        .rev()
        .find(|s| gcd(*s, customers) == 1 && *s <= 7)
        .unwrap_or(1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
