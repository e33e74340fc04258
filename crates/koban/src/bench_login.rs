//! `koban bench login`: a credential-stuffing flood against sign-in (many attackers, unknown
//! addresses, a fresh password each time, a different network each time, so every attempt
//! costs a full Argon2id hash) while known customers sign in. Three phases side by side: no
//! flood; flood with customers presenting their device cookie; flood without it. One JSON
//! object reports, per phase, how many customer sign-ins succeeded and how fast.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use clap::Args;
use koban_api::{ApiConfig, ApiState};
use koban_auth::{
    Auth, AuthConfig, Client, DisplayName, Email, NewSignup, Secret, ServerKeys, UserKind,
};
use koban_store::{Clock, LedgerStore};
use koban_store_sqlite::{SqliteConfig, SqliteStore};
use tower::ServiceExt;

const PASSWORD: &str = "lantern pebble orchard breeze";

#[derive(Args, Debug, Clone)]
pub struct LoginBenchArgs {
    /// Attackers sending sign-ins at once, each as fast as it is answered.
    #[arg(long, default_value_t = 64)]
    pub attackers: u32,
    /// Customers signing in during the flood, each every `--customer-pause-ms`.
    #[arg(long, default_value_t = 20)]
    pub customers: u32,
    /// Seconds each phase lasts.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Pause between one customer's sign-ins, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub customer_pause_ms: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub(crate) struct Customer {
    pub(crate) email: String,
    pub(crate) device_cookie: String,
    /// The `koban_session` cookie of the completed sign-in.
    pub(crate) session_cookie: String,
    pub(crate) ip: IpAddr,
}

#[derive(Default)]
struct Tally {
    customer_latencies_us: Vec<u32>,
    customer_ok: u64,
    customer_refused: u64,
    attacker_statuses: Vec<u16>,
}

async fn post_login(
    router: &Router,
    email: &str,
    password: &str,
    ip: IpAddr,
    cookie: Option<&str>,
) -> StatusCode {
    let body = serde_json::json!({ "email": email, "password": password }).to_string();
    let mut request = Request::post("/v1/login").header("content-type", "application/json");
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let Ok(mut request) = request.body(Body::from(body)) else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
    match router.clone().oneshot(request).await {
        Ok(response) => response.status(),
        Err(never) => match never {},
    }
}

/// Signs a customer up, verifies the address, enrols TOTP and completes a sign-in, keeping
/// the device cookie that sign-in set.
pub(crate) async fn enrol<D: koban_store::sql::SqlDb>(
    auth: &Auth<D>,
    index: u32,
) -> anyhow::Result<Customer> {
    let failed = |step: &'static str| {
        move |e: koban_auth::AuthError| anyhow::anyhow!("setting up customer: {step}: {e}")
    };
    let email = format!("customer{index}@bench.example");
    let ip = IpAddr::V4(Ipv4Addr::new(
        172,
        16,
        u8::try_from(index % 250).unwrap_or(0),
        10,
    ));
    let client = Client::from_ip(ip, None, "bench");
    let signup = NewSignup {
        kind: UserKind::Customer,
        email: Email::parse(&email).map_err(failed("e-mail"))?,
        password: Secret::new(PASSWORD.into()),
        display_name: DisplayName::parse("Load Tester").map_err(failed("name"))?,
        legal_name: None,
        date_of_birth: None,
        phone: None,
        lang: koban_shared::lang::Lang::En,
    };
    auth.signup(signup, &client)
        .await
        .map_err(failed("sign-up"))?;
    while auth.deliver_outbox(100).await.map_err(failed("outbox"))? > 0 {}
    let mail = auth.mailbox(&email, 1).await.map_err(failed("mailbox"))?;
    let code: String = mail
        .first()
        .map(|m| {
            m.body
                .chars()
                .filter(char::is_ascii_digit)
                .take(6)
                .collect()
        })
        .unwrap_or_default();
    auth.verify_email(
        &Email::parse(&email).map_err(failed("e-mail"))?,
        &Secret::new(code),
        &client,
    )
    .await
    .map_err(failed("verify"))?;
    let login = auth
        .login(&email, Secret::new(PASSWORD.into()), &client)
        .await
        .map_err(failed("login"))?;
    let me = auth
        .authenticate(login.session.token.expose())
        .await
        .map_err(failed("session"))?;
    let enrolment = auth
        .totp_begin(&me, None, &client)
        .await
        .map_err(failed("enrol"))?;
    let seed = koban_auth::totp::seed_from_uri(enrolment.otpauth_uri.expose()).context("seed")?;
    let now_s = u64::try_from(auth.now_ms() / 1000).unwrap_or(0);
    let code = koban_auth::totp::code_at(&seed, now_s).map_err(failed("code"))?;
    let enrolled = auth
        .totp_confirm(&me, &enrolment.factor_id, &Secret::new(code), &client)
        .await
        .map_err(failed("confirm"))?;
    let session = enrolled
        .session
        .context("the completed sign-in issued no session")?;
    let cookie = session
        .device_cookie
        .as_ref()
        .context("the completed sign-in set no device cookie")?;
    Ok(Customer {
        email,
        device_cookie: format!("koban_device={}", cookie.expose()),
        session_cookie: format!("koban_session={}", session.token.expose()),
        ip,
    })
}

async fn phase(
    router: &Router,
    customers: &Arc<Vec<Customer>>,
    args: &LoginBenchArgs,
    attackers: u32,
    cookies: bool,
) -> Tally {
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let mut tasks = Vec::new();
    for attacker in 0..attackers {
        let router = router.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut n = 0u32;
            while Instant::now() < deadline {
                n += 1;
                let ip = IpAddr::V4(Ipv4Addr::new(
                    10,
                    u8::try_from(attacker % 250).unwrap_or(0),
                    u8::try_from(n % 250).unwrap_or(0),
                    1,
                ));
                let email = format!("victim{attacker}x{n}@stuffing.example");
                let status = post_login(
                    &router,
                    &email,
                    &format!("leaked password {attacker} {n}"),
                    ip,
                    None,
                )
                .await;
                tally.attacker_statuses.push(status.as_u16());
            }
            tally
        }));
    }
    for index in 0..customers.len() {
        let router = router.clone();
        let customers = customers.clone();
        let pause = Duration::from_millis(args.customer_pause_ms);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let customer = &customers[index];
            while Instant::now() < deadline {
                let started = Instant::now();
                let cookie = cookies.then_some(customer.device_cookie.as_str());
                let status =
                    post_login(&router, &customer.email, PASSWORD, customer.ip, cookie).await;
                tally
                    .customer_latencies_us
                    .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                if status == StatusCode::OK {
                    tally.customer_ok += 1;
                } else {
                    tally.customer_refused += 1;
                }
                tokio::time::sleep(pause).await;
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        if let Ok(tally) = task.await {
            total
                .customer_latencies_us
                .extend(tally.customer_latencies_us);
            total.customer_ok += tally.customer_ok;
            total.customer_refused += tally.customer_refused;
            total.attacker_statuses.extend(tally.attacker_statuses);
        }
    }
    total
}

fn report(name: &str, tally: &mut Tally, duration_s: u64) -> serde_json::Value {
    tally.customer_latencies_us.sort_unstable();
    let attempts = tally.customer_ok + tally.customer_refused;
    let count = |code: u16| {
        tally
            .attacker_statuses
            .iter()
            .filter(|s| **s == code)
            .count()
    };
    let attacker_attempts = tally.attacker_statuses.len();
    serde_json::json!({
        "phase": name,
        "customer_sign_ins": attempts,
        "customer_succeeded": tally.customer_ok,
        "customer_success_rate": if attempts == 0 { 0.0 } else { tally.customer_ok as f64 / attempts as f64 },
        "customer_latency_ms_p50": crate::bench::percentile_ms(&tally.customer_latencies_us, 50),
        "customer_latency_ms_p99": crate::bench::percentile_ms(&tally.customer_latencies_us, 99),
        "attacker_attempts": attacker_attempts,
        "attacker_attempts_per_second": attacker_attempts as f64 / duration_s.max(1) as f64,
        "attacker_answered_401": count(401),
        "attacker_answered_429": count(429),
        "attacker_answered_503": count(503),
    })
}

pub async fn login(args: LoginBenchArgs) -> anyhow::Result<ExitCode> {
    if args.customers == 0
        || args.duration_s == 0
        || args.customers > 250
        || args.attackers > 10_000
    {
        bail!("need 1 to 250 customers, at most 10000 attackers and a duration of at least 1 s");
    }
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("bench.db"), SqliteConfig::default())?;
    let config = AuthConfig {
        public_url: "http://localhost:8080".into(),
        // Setup signs many customers up; the limit on mail-sending requests is not measured.
        requests_per_network_max: 100_000,
        ..AuthConfig::default()
    };
    let auth = Auth::new(
        store.sql(),
        ServerKeys::from_hex(&ServerKeys::generate_hex())?,
        Clock::system(),
        config,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut customers = Vec::new();
    for index in 0..args.customers {
        customers.push(enrol(&auth, index).await?);
    }
    let customers = Arc::new(customers);
    let pay =
        koban_pay::Payments::new(store.clone(), auth.clone(), koban_pay::PayConfig::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let router = koban_api::router(ApiState {
        store: store.clone(),
        auth,
        cards: koban_cards::Cards::new(pay.clone(), koban_cards::CardConfig::default()),
        pay,
        metrics: None,
        config: ApiConfig {
            dev: true,
            trust_forwarded_for: false,
        },
    });
    let mut phases = Vec::new();
    let meter = crate::bench_meter::Meter::process();
    let mut answered = 0u64;
    let mut known_device_latencies = Vec::new();
    for (name, attackers, cookies) in [
        ("no_flood", 0, true),
        ("flood_with_device_cookie", args.attackers, true),
        ("flood_without_device_cookie", args.attackers, false),
    ] {
        let mut tally = phase(&router, &customers, &args, attackers, cookies).await;
        answered += (tally.customer_latencies_us.len() + tally.attacker_statuses.len()) as u64;
        if cookies {
            known_device_latencies.extend_from_slice(&tally.customer_latencies_us);
        }
        phases.push(report(name, &mut tally, args.duration_s));
    }
    let usage = meter.per_op(answered);
    store.shutdown().await;
    known_device_latencies.sort_unstable();
    // DESIGN's target: at least 99% of sign-ins from a known device succeed, flood or not.
    let known_device_ok = phases
        .iter()
        .filter(|p| p["phase"] != "flood_without_device_cookie")
        .all(|p| p["customer_success_rate"].as_f64().unwrap_or(0.0) >= 0.99);
    let refused: u64 = phases
        .iter()
        .filter(|p| p["phase"] != "flood_without_device_cookie")
        .map(|p| {
            p["customer_sign_ins"].as_u64().unwrap_or(0)
                - p["customer_succeeded"].as_u64().unwrap_or(0)
        })
        .sum();
    let mut out = serde_json::json!({
        "bench": "login",
        "requests_per_second": (answered as f64 / (3 * args.duration_s.max(1)) as f64).round(),
        "latency_ms_p50": crate::bench::percentile_ms(&known_device_latencies, 50),
        "latency_ms_p99": crate::bench::percentile_ms(&known_device_latencies, 99),
        "latency_of": "customers' sign-ins from a known device, with and without the flood",
        "errors": refused,
        "invariants_ok": known_device_ok,
        "invariants": "at least 99% of customers' sign-ins from a known device succeed in the no-flood and flood phases",
        "safety": "every attempt is a full Argon2id password check; throttling, lockout and the hashing pools on",
        "attackers": args.attackers,
        "customers": args.customers,
        "duration_s_per_phase": args.duration_s,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "phases": phases,
    });
    crate::bench::merge_usage(&mut out, usage);
    crate::bench::print(&out, args.json)?;
    Ok(if known_device_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
