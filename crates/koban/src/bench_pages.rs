//! `koban bench pages`: the server time of the web wallet's main pages under light load,
//! through the real router (API and pages) in-process over a fresh SQLite file. Customers are
//! signed in with a second factor and given a history of movements first, so the home page
//! reads, charts and names a realistic wallet. One JSON object reports each page's latency.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use clap::Args;
use koban_api::{ApiConfig, ApiState};
use koban_auth::{Auth, AuthConfig, ServerKeys};
use koban_ledger::Amount;
use koban_store::{Clock, LedgerStore};
use koban_store_sqlite::{SqliteConfig, SqliteStore};
use tower::ServiceExt;

use crate::bench_login::{Customer, enrol};

#[derive(Args, Debug, Clone)]
pub struct PagesBenchArgs {
    /// Signed-in customers the requests are spread over.
    #[arg(long, default_value_t = 20)]
    pub customers: u32,
    /// Movements in each customer's history before measuring (the home page reads up to 500).
    #[arg(long, default_value_t = 120)]
    pub history: u32,
    /// Requests per page.
    #[arg(long, default_value_t = 2_000)]
    pub requests: u32,
    /// Requests in flight at once (light load: a few customers at the same moment).
    #[arg(long, default_value_t = 4)]
    pub concurrency: u32,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The pages measured: signed in, except the two a visitor sees first.
const PAGES: &[(&str, bool)] = &[
    ("/home", true),
    ("/send", true),
    ("/pay", true),
    ("/topup", true),
    ("/security", true),
    ("/", false),
    ("/signin", false),
];

async fn get(router: &Router, path: &str, cookie: Option<&str>) -> StatusCode {
    let mut request = Request::get(path).header("accept-language", "ja,en;q=0.8");
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let Ok(mut request) = request.body(Body::empty()) else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    match router.clone().oneshot(request).await {
        Ok(response) => {
            let status = response.status();
            // The whole page is produced, as a browser would receive it.
            let _ = axum::body::to_bytes(response.into_body(), 1 << 22).await;
            status
        }
        Err(never) => match never {},
    }
}

async fn measure(
    router: &Router,
    customers: &Arc<Vec<Customer>>,
    path: &'static str,
    signed_in: bool,
    args: &PagesBenchArgs,
) -> anyhow::Result<serde_json::Value> {
    let per_task = args.requests.div_ceil(args.concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..args.concurrency {
        let (router, customers) = (router.clone(), customers.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u32;
            for n in 0..per_task {
                let index = usize::try_from(task.wrapping_mul(7).wrapping_add(n)).unwrap_or(0)
                    % customers.len();
                let cookie = signed_in.then(|| customers[index].session_cookie.as_str());
                let began = Instant::now();
                let status = get(&router, path, cookie).await;
                latencies.push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
                if status != StatusCode::OK {
                    failures += 1;
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (mut some, failed) = task.await?;
        latencies.append(&mut some);
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if failures > 0 {
        bail!("{path}: {failures} requests were not answered 200");
    }
    latencies.sort_unstable();
    let count = latencies.len();
    Ok(serde_json::json!({
        "path": path,
        "signed_in": signed_in,
        "requests": count,
        "per_second": if elapsed > 0.0 { count as f64 / elapsed } else { 0.0 },
        "p50_ms": crate::bench::percentile_ms(&latencies, 50),
        "p99_ms": crate::bench::percentile_ms(&latencies, 99),
        "max_ms": crate::bench::percentile_ms(&latencies, 100),
    }))
}

/// Gives a customer `count` movements: test money from the sandbox faucet.
async fn history<S: LedgerStore>(
    auth: &Auth<S::Sql>,
    pay: &koban_pay::Payments<S>,
    customer: &Customer,
    count: u32,
) -> anyhow::Result<()> {
    let token = customer
        .session_cookie
        .strip_prefix("koban_session=")
        .unwrap_or_default();
    let me = auth
        .authenticate(token)
        .await
        .map_err(|e| anyhow::anyhow!("session: {e}"))?;
    let currency = pay.config().currencies[0];
    for n in 0..count {
        let key = koban_pay::IdempotencyKey::parse(&format!("bench-{}-{n}", customer.email))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let amount = Amount::new(u64::from(n % 9 + 1) * 10).map_err(|e| anyhow::anyhow!("{e}"))?;
        pay.faucet(&me, currency, amount, &key)
            .await
            .map_err(|e| anyhow::anyhow!("faucet: {e}"))?;
    }
    Ok(())
}

pub async fn pages(args: PagesBenchArgs) -> anyhow::Result<ExitCode> {
    if args.customers == 0
        || args.customers > 250
        || args.requests == 0
        || args.concurrency == 0
        || args.concurrency > 256
        || args.history > 900
    {
        bail!(
            "need 1 to 250 customers, at least 1 request, 1 to 256 in flight, at most 900 movements each"
        );
    }
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("bench.db"), SqliteConfig::default())?;
    let config = AuthConfig {
        public_url: "http://localhost:8080".into(),
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
    let pay = koban_pay::Payments::new(
        store.clone(),
        auth.clone(),
        koban_pay::PayConfig {
            sandbox: true,
            ..koban_pay::PayConfig::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    pay.open_issuer_accounts()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut customers = Vec::new();
    for index in 0..args.customers {
        let customer = enrol(&auth, index).await?;
        history(&auth, &pay, &customer, args.history).await?;
        customers.push(customer);
    }
    let customers = Arc::new(customers);
    let router = koban_web::app(ApiState {
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
    let mut pages = Vec::new();
    let meter = crate::bench_meter::Meter::process();
    let started = std::time::Instant::now();
    for (path, signed_in) in PAGES {
        pages.push(measure(&router, &customers, path, *signed_in, &args).await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let requests: u64 = pages.iter().filter_map(|p| p["requests"].as_u64()).sum();
    let usage = meter.per_op(requests);
    store.shutdown().await;
    // The headline figures are the home page's: the page every signed-in visit starts on.
    let home = pages
        .iter()
        .find(|p| p["path"] == "/home")
        .cloned()
        .unwrap_or_default();
    let mut out = serde_json::json!({
        "bench": "pages",
        "requests_per_second": (requests as f64 / seconds.max(1e-9)).round(),
        "latency_ms_p50": home["p50_ms"],
        "latency_ms_p99": home["p99_ms"],
        "latency_of": "/home",
        "errors": 0,
        "invariants_ok": true,
        "invariants": "every page answered 200 (the bench stops at the first that does not)",
        "customers": args.customers,
        "history_per_customer": args.history,
        "concurrency": args.concurrency,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "pages": pages,
    });
    crate::bench::merge_usage(&mut out, usage);
    crate::bench::print(&out, args.json)?;
    Ok(ExitCode::SUCCESS)
}
