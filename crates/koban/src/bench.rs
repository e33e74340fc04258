//! `koban bench ledger`: concurrent submitters drive the ledger through the real storage
//! backend; one JSON object reports throughput, latency to durable acknowledgement, and
//! whether every invariant held when everything was read back.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use koban_ledger::{
    AccountFlags, AccountId, Amount, Code, Currency, Metadata, Move, NewAccount, TransferId,
    TransferRequest,
};
use koban_store::{LedgerStore, StoreError};
use rand::{Rng, SeedableRng};

use crate::backend::{self, Backend, BackendOptions, WithStore};

/// Each wallet's opening balance, in yen: large enough that no transfer is short of funds.
const OPENING_BALANCE: u64 = 1_000_000_000;
/// Attempts per transfer when the store answers "busy" or a writer race; retries reuse the id.
const SUBMIT_ATTEMPTS_MAX: u32 = 5;
/// Share of transfers, in percent, that credit a hot account when `--hot-accounts` is given.
const HOT_SHARE_PERCENT: u32 = 90;

#[derive(Args, Debug, Clone)]
pub struct LedgerBenchArgs {
    /// Database to benchmark: sqlite://PATH (the file must not exist yet) or postgres://...
    /// (a fresh schema is created and dropped afterwards). Default: a temporary SQLite file.
    #[arg(long)]
    pub database_url: Option<crate::backend::DatabaseUrl>,
    /// Wallet accounts to create.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u32,
    /// Transfers to submit, one per request.
    #[arg(long, default_value_t = 200_000)]
    pub transfers: u64,
    /// Submitters running at once, each waiting for its acknowledgement before the next.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Send 90% of transfers to these many accounts (a merchant-like hotspot).
    #[arg(long)]
    pub hot_accounts: Option<u32>,
    /// Seed of the random choice of accounts and amounts.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object (the interface other tools rely on).
    #[arg(long)]
    pub json: bool,
    /// Append the id of every acknowledged transfer to this file, one per line, as soon as it
    /// is acknowledged (used by the crash test to check durability after SIGKILL).
    #[arg(long)]
    pub ack_log: Option<PathBuf>,
    /// PostgreSQL: keep the benchmark's schema instead of dropping it.
    #[arg(long)]
    pub keep_schema: bool,
}

#[derive(Default)]
struct TaskResult {
    latencies_us: Vec<u32>,
    acked: Vec<TransferId>,
    rejected: u64,
    errors: u64,
}

pub async fn ledger(args: LedgerBenchArgs) -> anyhow::Result<ExitCode> {
    if args.accounts < 2 || args.concurrency == 0 || args.transfers == 0 {
        bail!("need at least 2 accounts, 1 transfer and a concurrency of 1");
    }
    if args
        .hot_accounts
        .is_some_and(|k| k == 0 || k >= args.accounts)
    {
        bail!("--hot-accounts must be between 1 and the number of accounts - 1");
    }
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let (url, schema) = match args.database_url.as_ref().map(|u| u.expose()) {
        None => (
            format!("sqlite://{}", temp.path().join("bench.db").display()),
            None,
        ),
        Some(url) => match Backend::of(url)? {
            Backend::Sqlite(path) => {
                if path.exists() {
                    bail!(
                        "{} exists; the benchmark only writes to a fresh file",
                        path.display()
                    );
                }
                (url.to_owned(), None)
            }
            Backend::Postgres(url) => (url.to_owned(), Some(fresh_schema("koban_bench")?)),
        },
    };
    let options = BackendOptions {
        schema: schema.clone(),
        ..BackendOptions::default()
    };
    let outcome = backend::open(&url, options, Bench(args.clone())).await;
    if let Some(schema) = schema.filter(|_| !args.keep_schema) {
        drop_schema(&url, &schema).await?;
    }
    outcome
}

/// A schema name no other run uses (`.ci/run` drops leftovers named `koban_bench_*`).
pub(crate) fn fresh_schema(prefix: &str) -> anyhow::Result<String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    Ok(format!(
        "{prefix}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    ))
}

pub(crate) async fn drop_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    let pool =
        koban_store_postgres::connect_pool(url, &koban_store_postgres::PgConfig::default()).await?;
    koban_store_postgres::drop_schema(&pool, schema).await?;
    Ok(())
}

struct Bench(LedgerBenchArgs);

fn account(n: u32) -> AccountId {
    AccountId::new(u128::from(n) + 1).unwrap_or_else(|_| unreachable!("n + 1 is never zero"))
}

fn transfer(debit: AccountId, credit: AccountId, units: u64) -> anyhow::Result<TransferRequest> {
    let id = TransferId::new(uuid::Uuid::now_v7().as_u128())?;
    Ok(TransferRequest::Move(Move {
        id,
        debit,
        credit,
        amount: Amount::new(units)?,
        currency: Currency::Jpy,
        code: Code(1),
        reference: None,
        metadata: Metadata::empty(),
        pending: None,
    }))
}

impl WithStore for Bench {
    type Output = ExitCode;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<ExitCode> {
        let args = self.0;
        setup_accounts(&store, args.accounts).await?;
        let ack_log = match &args.ack_log {
            Some(path) => Some(Arc::new(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .context("opening the ack log")?,
            ))),
            None => None,
        };
        let progress = ProgressBar::with_draw_target(
            Some(args.transfers),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        progress.set_style(ProgressStyle::with_template(
            "{bar:40} {pos}/{len} transfers {per_sec} eta {eta}",
        )?);
        let next = Arc::new(AtomicU64::new(0));
        let meter = crate::bench_meter::Meter::process();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for task in 0..args.concurrency {
            let (store, next, progress, ack_log) = (
                store.clone(),
                next.clone(),
                progress.clone(),
                ack_log.clone(),
            );
            let args = args.clone();
            tasks.push(tokio::spawn(async move {
                submitter(store, args, task, next, progress, ack_log).await
            }));
        }
        let mut total = TaskResult::default();
        for task in tasks {
            let result = task.await.context("a submitter failed")??;
            total.latencies_us.extend(result.latencies_us);
            total.acked.extend(result.acked);
            total.rejected += result.rejected;
            total.errors += result.errors;
        }
        let elapsed = started.elapsed();
        let usage = meter.per_op(total.acked.len() as u64);
        progress.finish_and_clear();
        report(&store, &args, total, elapsed, usage).await
    }
}

/// Opens the wallets and an issuer account, and funds every wallet (not timed).
async fn setup_accounts<S: LedgerStore>(store: &S, accounts: u32) -> anyhow::Result<()> {
    let wallet_flags = AccountFlags {
        debits_must_not_exceed_credits: true,
        ..AccountFlags::default()
    };
    let issuer = account(0);
    let mut new = vec![NewAccount {
        id: issuer,
        currency: Currency::Jpy,
        code: Code(100),
        flags: AccountFlags::default(),
    }];
    new.extend((1..=accounts).map(|n| NewAccount {
        id: account(n),
        currency: Currency::Jpy,
        code: Code(1),
        flags: wallet_flags,
    }));
    for chunk in new.chunks(koban_store::ACCOUNTS_PER_CALL_MAX) {
        for result in store.create_accounts(chunk.to_vec()).await? {
            result?;
        }
    }
    let wallets: Vec<u32> = (1..=accounts).collect();
    let mut funding = Vec::new();
    for chunk in wallets.chunks(koban_ledger::BATCH_TRANSFERS_MAX) {
        let batch = chunk
            .iter()
            .map(|n| transfer(issuer, account(*n), OPENING_BALANCE))
            .collect::<Result<Vec<_>, _>>()?;
        let store = store.clone();
        funding.push(tokio::spawn(async move { store.submit(batch).await }));
    }
    for handle in funding {
        handle
            .await??
            .map_err(|rejection| anyhow::anyhow!("funding failed: {rejection}"))?;
    }
    Ok(())
}

async fn submitter<S: LedgerStore>(
    store: S,
    args: LedgerBenchArgs,
    task: u32,
    next: Arc<AtomicU64>,
    progress: ProgressBar,
    ack_log: Option<Arc<Mutex<std::fs::File>>>,
) -> anyhow::Result<TaskResult> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        args.seed
            .wrapping_mul(1_000_003)
            .wrapping_add(u64::from(task)),
    );
    let mut result = TaskResult::default();
    while next.fetch_add(1, Ordering::Relaxed) < args.transfers {
        let debit = rng.random_range(1..=args.accounts);
        let credit = match args.hot_accounts {
            Some(hot) if rng.random_range(0..100) < HOT_SHARE_PERCENT => rng.random_range(1..=hot),
            _ => rng.random_range(1..=args.accounts),
        };
        let credit = if credit == debit {
            debit % args.accounts + 1
        } else {
            credit
        };
        let request = transfer(account(debit), account(credit), rng.random_range(1..=1_000))?;
        let id = request.id();
        let submitted = Instant::now();
        match submit_with_retries(&store, request).await {
            Ok(true) => {
                let micros = u32::try_from(submitted.elapsed().as_micros()).unwrap_or(u32::MAX);
                result.latencies_us.push(micros);
                result.acked.push(id);
                if let Some(log) = &ack_log {
                    let mut file = log
                        .lock()
                        .map_err(|_| anyhow::anyhow!("ack log lock poisoned"))?;
                    writeln!(file, "{:032x}", id.get())?;
                }
            }
            Ok(false) => result.rejected += 1,
            Err(_) => result.errors += 1,
        }
        progress.inc(1);
    }
    Ok(result)
}

/// `Ok(true)` applied, `Ok(false)` rejected by the ledger, `Err` when retries ran out.
async fn submit_with_retries<S: LedgerStore>(
    store: &S,
    request: TransferRequest,
) -> Result<bool, StoreError> {
    let mut attempt = 1;
    loop {
        match store.submit(vec![request.clone()]).await {
            Ok(Ok(_)) => return Ok(true),
            Ok(Err(_)) => return Ok(false),
            Err(error) if attempt >= SUBMIT_ATTEMPTS_MAX => return Err(error),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(attempt))).await;
            }
        }
    }
}

/// Adds what the server used per operation (`bench_meter`) to a bench's report.
pub(crate) fn merge_usage(out: &mut serde_json::Value, usage: serde_json::Value) {
    if let (Some(out), serde_json::Value::Object(usage)) = (out.as_object_mut(), usage) {
        out.extend(usage);
    }
}

/// Prints a bench's report: one line with `--json`, indented otherwise.
pub(crate) fn print(out: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(out)?);
    }
    Ok(())
}

/// The nearest-rank percentile of sorted microsecond latencies, in milliseconds.
pub(crate) fn percentile_ms(sorted_us: &[u32], percentile: usize) -> f64 {
    let Some(last) = sorted_us.len().checked_sub(1) else {
        return 0.0;
    };
    // Nearest rank: the smallest value with at least `percentile`% of values at or below it.
    let rank = sorted_us
        .len()
        .saturating_mul(percentile.min(100))
        .div_ceil(100);
    f64::from(sorted_us[rank.saturating_sub(1).min(last)]) / 1000.0
}

async fn report<S: LedgerStore>(
    store: &S,
    args: &LedgerBenchArgs,
    mut total: TaskResult,
    elapsed: Duration,
    usage: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    total.latencies_us.sort_unstable();
    let committed = u64::try_from(total.acked.len())?;
    let audit = store.audit().await?;
    let present = store.count_transfers_present(total.acked).await?;
    store.shutdown().await;
    // The funding transfers are recorded too: one per wallet.
    let expected_transfers = committed + u64::from(args.accounts);
    let invariants_ok = audit.ok() && present == committed && audit.transfers == expected_transfers;
    // A count converts to f64 exactly up to 2^53, far beyond any run.
    let per_second =
        f64::from(u32::try_from(committed).unwrap_or(u32::MAX)) / elapsed.as_secs_f64().max(1e-9);
    let mut json = serde_json::json!({
        "bench": "ledger",
        "backend": store.backend(),
        "accounts": args.accounts,
        "transfers_committed": committed,
        "transfers_per_second": per_second.round(),
        "latency_ms_p50": percentile_ms(&total.latencies_us, 50),
        "latency_ms_p99": percentile_ms(&total.latencies_us, 99),
        "invariants_ok": invariants_ok,
        "transfers_rejected": total.rejected,
        "errors": total.errors,
        "concurrency": args.concurrency,
        "hot_accounts": args.hot_accounts,
        "seconds": elapsed.as_secs_f64(),
        "audit_problems": audit.problems,
        "safety": {
            "wallet_limits": "every wallet refuses to go below zero",
            "acknowledged": "after the transfer's group is durable (fsync)",
            "invariants": "everything read back and checked after the run",
        },
    });
    merge_usage(&mut json, usage);
    if store.backend() == "postgres" {
        json["usage_excludes"] = "the PostgreSQL server's own CPU and writes".into();
    }
    print(&json, args.json)?;
    Ok(if invariants_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::percentile_ms;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 50), 50.0);
        assert_eq!(percentile_ms(&sorted, 99), 99.0);
        assert_eq!(percentile_ms(&sorted, 100), 100.0);
        assert_eq!(percentile_ms(&[7000], 99), 7.0);
        assert_eq!(percentile_ms(&[], 99), 0.0);
    }
}
