//! `koban risk backtest` (recorded events through candidate rules) and `koban bench risk`
//! (a seeded synthetic population through the decision engine).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use koban_pay::koban_risk::RuleSet;
use koban_pay::koban_risk::sim::{SimConfig, Simulation};
use koban_store::LedgerStore;

use crate::backend::WithStore;
use crate::cli::DatabaseArgs;

#[derive(Args, Debug)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The candidate rules file (TOML).
    #[arg(long)]
    pub rules: std::path::PathBuf,
    /// The live rules to compare with (default: the built-in default set).
    #[arg(long)]
    pub live_rules: Option<std::path::PathBuf>,
    /// Only events from this UTC day on (YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many events, oldest first.
    #[arg(long, default_value_t = 1_000_000)]
    pub limit: i64,
}

/// Milliseconds at the start of a UTC day given as YYYY-MM-DD.
pub fn day_start_ms(text: &str) -> anyhow::Result<i64> {
    let parts: Vec<&str> = text.trim().split('-').collect();
    let bad = || anyhow::anyhow!("--since must be a date as YYYY-MM-DD");
    if parts.len() != 3 || parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
        return Err(bad());
    }
    let y: i64 = parts[0].parse().map_err(|_| bad())?;
    let m: i64 = parts[1].parse().map_err(|_| bad())?;
    let d: i64 = parts[2].parse().map_err(|_| bad())?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return Err(bad());
    }
    // Days from 1970-01-01 (the civil-calendar count of days, shifted to March-based years).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400_000)
}

fn read_rules(path: &std::path::Path) -> anyhow::Result<RuleSet> {
    koban_pay::risk::read_rules(path).map_err(|e| anyhow::anyhow!(e))
}

impl WithStore for BacktestArgs {
    type Output = ExitCode;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<ExitCode> {
        let candidate = read_rules(&self.rules)?;
        let live = match &self.live_rules {
            Some(path) => read_rules(path)?,
            None => RuleSet::default_rules(),
        };
        let since = match &self.since {
            Some(day) => day_start_ms(day)?,
            None => 0,
        };
        let report = koban_pay::backtest::replay_recorded(
            &store.sql(),
            std::sync::Arc::new(live),
            std::sync::Arc::new(candidate),
            since,
            self.limit,
            koban_pay::backtest::Keep::Oldest,
        )
        .await?;
        // The report as printed: the replay's counts, and the features the candidate named
        // that the recorded events do not hold.
        let mut out = serde_json::to_value(&report.report)?;
        out["unrecorded_features"] = report
            .unrecorded_features
            .iter()
            .map(|u| serde_json::json!({"rule": u.rule, "feature": u.feature, "events": u.events}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args, Debug)]
pub struct RiskBenchArgs {
    /// Seed of the synthetic population (the same seed gives the same events).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Normal customers.
    #[arg(long, default_value_t = 5_000)]
    pub customers: usize,
    /// Days of behaviour.
    #[arg(long, default_value_t = 1)]
    pub days: u32,
    /// A rules file instead of the built-in default set.
    #[arg(long)]
    pub rules: Option<std::path::PathBuf>,
    /// Then replay this many of the events (0: none) through the live decision path
    /// (`Payments::assess`: limits, feature windows read from the database, rules, record),
    /// flushing records as the server's worker does, and time each decision.
    #[arg(long, default_value_t = 20_000)]
    pub live_events: usize,
    /// Database for the live replay: a temporary SQLite file unless a PostgreSQL URL is given
    /// (a fresh schema, dropped afterwards).
    #[arg(long)]
    pub database_url: Option<crate::backend::DatabaseUrl>,
    /// Print one JSON object on one line.
    #[arg(long)]
    pub json: bool,
}

/// Runs the simulation's events through the rules, timing each decision; then replays some
/// through the live path.
pub async fn bench(args: RiskBenchArgs) -> anyhow::Result<ExitCode> {
    let rules = match &args.rules {
        Some(path) => read_rules(path)?,
        None => RuleSet::default_rules(),
    };
    let generated = Instant::now();
    let sim = Simulation::new(SimConfig {
        seed: args.seed,
        customers: args.customers.max(1),
        days: args.days.max(1),
    });
    let generate_s = generated.elapsed().as_secs_f64();
    let events = sim.events();
    let mut verdicts = Vec::with_capacity(events.len());
    let mut nanos = Vec::with_capacity(events.len());
    let started = Instant::now();
    for event in events {
        let t = Instant::now();
        let verdict = rules.decide(&event.features);
        nanos.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        verdicts.push(verdict);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let report = sim.report(&verdicts);
    nanos.sort_unstable();
    let pct = |p: usize| -> f64 {
        if nanos.is_empty() {
            return 0.0;
        }
        let rank = (nanos.len() * p).div_ceil(100).max(1);
        nanos[rank - 1] as f64 / 1000.0
    };
    let mut live = if args.live_events > 0 {
        Some(live_replay(&args, &sim, args.live_events).await?)
    } else {
        None
    };
    // The headline figures are the live path's (a decision as a payment pays for it), or the
    // rules alone when no event is replayed live.
    let (per_second, p50_ms, p99_ms, usage) = match &mut live {
        Some(live) => (
            live["decisions_per_second"].clone(),
            live["assess_us_p50"].as_f64().map(|us| us / 1000.0),
            live["assess_us_p99"].as_f64().map(|us| us / 1000.0),
            live.as_object_mut()
                .and_then(|live| live.remove("usage"))
                .unwrap_or_default(),
        ),
        None => (
            serde_json::json!((events.len() as f64 / elapsed.max(1e-9)).round()),
            Some(pct(50) / 1000.0),
            Some(pct(99) / 1000.0),
            serde_json::Value::Null,
        ),
    };
    let invariants_ok = report.attacks_caught == report.attacks_total;
    let mut out = serde_json::json!({
        "bench": "risk",
        "requests_per_second": per_second,
        "latency_ms_p50": p50_ms,
        "latency_ms_p99": p99_ms,
        "latency_of": if live.is_some() { "Payments::assess end to end (live.*)" } else { "the rules alone" },
        "errors": 0,
        "invariants_ok": invariants_ok,
        "invariants": "every injected attack is caught",
        "decisions_per_second": if elapsed > 0.0 { (events.len() as f64 / elapsed).round() } else { 0.0 },
        "decision_us_p50": pct(50),
        "decision_us_p99": pct(99),
        "decision_us_max": nanos.last().map_or(0.0, |n| *n as f64 / 1000.0),
        "attacks_caught": report.attacks_caught,
        "attacks_total": report.attacks_total,
        "false_positive_rate": report.false_positive_rate,
        "time_to_detect_s_p50": report.time_to_detect_s_p50,
        "time_to_detect_s_max": report.time_to_detect_s_max,
        "money_out_before_hold": report.money_out_before_hold,
        "by_kind": report.by_kind,
        "events": report.events,
        "normal_customers": report.normal_customers,
        "normal_customer_days_flagged": report.normal_customer_days_flagged,
        "flagged_by_rule": report.flagged_by_rule,
        "by_attack": report.by_attack,
        "rules": rules.rules().len(),
        "rules_digest": rules.digest(),
        "seed": args.seed,
        "generate_s": generate_s,
        "note": "decision_us_*: the rule set over features from in-memory windows; live.*: Payments::assess end to end (limits, window reads from the database, rules, queueing the record); time_to_detect_*: from an attack's first attempt (its first event other than a successful sign-in) to its first alert, hold or deny; money_out_*: outgoing movements (minor units) an attack got through, counting a step-up challenge as passed",
        "live": live,
    });
    crate::bench::merge_usage(&mut out, usage);
    crate::bench::print(&out, args.json)?;
    Ok(if invariants_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Replays the first `n` simulated events through `Payments::assess` on a real store, with
/// the clock at each event's time, as fast as they are answered, flushing the records every
/// 100 ms as the server's worker does.
async fn live_replay(
    args: &RiskBenchArgs,
    sim: &Simulation,
    n: usize,
) -> anyhow::Result<serde_json::Value> {
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let (url, schema) = match args.database_url.as_ref().map(|u| u.expose()) {
        None => (
            format!("sqlite://{}", temp.path().join("risk.db").display()),
            None,
        ),
        Some(url) => match crate::backend::Backend::of(url)? {
            crate::backend::Backend::Sqlite(_) => {
                anyhow::bail!(
                    "--database-url: give a PostgreSQL URL, or none for a temporary SQLite file"
                )
            }
            crate::backend::Backend::Postgres(url) => (
                url.to_owned(),
                Some(crate::bench::fresh_schema("koban_bench_risk")?),
            ),
        },
    };
    let options = crate::backend::BackendOptions {
        schema: schema.clone(),
        ..crate::backend::BackendOptions::default()
    };
    let events: Vec<_> = sim.events().iter().take(n).cloned().collect();
    let outcome = crate::backend::open(&url, options, Live(events)).await;
    if let Some(schema) = schema {
        crate::bench::drop_schema(&url, &schema).await?;
    }
    outcome
}

struct Live(Vec<koban_pay::koban_risk::sim::SimEvent>);

impl WithStore for Live {
    type Output = serde_json::Value;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<serde_json::Value> {
        use koban_pay::risk::{Parties, RiskEvent};
        let events = self.0;
        let first = events.first().map_or(0, |e| e.at_ms);
        let (clock, hand) = koban_store::Clock::manual(koban_ledger::Timestamp::from_nanos(
            u64::try_from(first).unwrap_or(0) * 1_000_000,
        ));
        let auth = koban_auth::Auth::new(
            store.sql(),
            koban_auth::ServerKeys::from_hex(&koban_auth::ServerKeys::generate_hex())?,
            clock,
            koban_auth::AuthConfig::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let config = koban_pay::PayConfig::default();
        let pay = koban_pay::Payments::new(store.clone(), auth, config.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let key = |prefix: &str, v: Option<u64>| v.map(|v| format!("{prefix}{v}"));
        let mut nanos = Vec::with_capacity(events.len());
        let mut flush_ms = Vec::new();
        let mut last_flush = Instant::now();
        let mut by_kind: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
        let meter = crate::bench_meter::Meter::process();
        let started = Instant::now();
        for event in &events {
            hand.set(koban_ledger::Timestamp::from_nanos(
                u64::try_from(event.at_ms).unwrap_or(0) * 1_000_000,
            ));
            let f = &event.features;
            let int = |name: &str| match f.get(name) {
                Some(koban_pay::koban_risk::Value::Int(v)) => *v,
                _ => 0,
            };
            let flag =
                |name: &str| matches!(f.get(name), Some(koban_pay::koban_risk::Value::Bool(true)));
            let p = &event.parties;
            let risk_event = RiskEvent {
                kind: f.event(),
                amount: u64::try_from(int("amount")).unwrap_or(0),
                spent_today: 0,
                daily_out_max: u64::MAX,
                cooling_off_max: flag("in_cooling_off").then_some(u64::MAX),
                payee_new: flag("payee_new"),
                paid_to_payee_today: 0,
                per_payee_daily_max: u64::MAX,
                payee_account_age_s: p.payee.map(|_| int("payee_age_s")),
                step_up_from: u64::try_from(int("step_up_from")).unwrap_or(u64::MAX),
                review_new_payee_from: config.review_new_payee_from_minor,
                fan_in_senders_max: config.fan_in_senders_max,
            };
            let parties = Parties {
                customer: format!("c{}", p.customer),
                device: key("d", p.device),
                network: key("n", p.network),
                payee: key("c", p.payee),
                source: key("s", p.source),
                source_age_s: p.source.map(|_| int("source_age_s")),
                currency: "JPY".to_owned(),
                failed: p.failed,
                ..Parties::default()
            };
            let t = Instant::now();
            pay.assess(&risk_event, &parties)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let took = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            nanos.push(took);
            by_kind.entry(f.event().as_str()).or_default().push(took);
            if last_flush.elapsed() >= std::time::Duration::from_millis(100) {
                let t = Instant::now();
                pay.flush_records()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                flush_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                last_flush = Instant::now();
            }
        }
        pay.flush_records()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let elapsed = started.elapsed().as_secs_f64();
        let usage = meter.per_op(events.len() as u64);
        nanos.sort_unstable();
        flush_ms.sort_by(f64::total_cmp);
        let pct = |v: &[u64], p: usize| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            v[(v.len() * p).div_ceil(100).max(1) - 1] as f64 / 1000.0
        };
        let flush_p50 = flush_ms.get(flush_ms.len() / 2).copied().unwrap_or(0.0);
        let kinds: serde_json::Map<String, serde_json::Value> = by_kind
            .into_iter()
            .map(|(kind, mut v)| {
                v.sort_unstable();
                let summary = serde_json::json!({ "events": v.len(), "p50": pct(&v, 50), "p99": pct(&v, 99) });
                (kind.to_owned(), summary)
            })
            .collect();
        store.shutdown().await;
        Ok(serde_json::json!({
            "backend": store.backend(),
            "events": events.len(),
            "assess_us_p50": pct(&nanos, 50),
            "assess_us_p99": pct(&nanos, 99),
            "assess_us_max": nanos.last().map_or(0.0, |n| *n as f64 / 1000.0),
            "assess_us_by_kind": kinds,
            "flushes": flush_ms.len(),
            "flush_ms_p50": (flush_p50 * 1000.0).round() / 1000.0,
            "wall_s": (elapsed * 100.0).round() / 100.0,
            "decisions_per_second": (events.len() as f64 / elapsed.max(1e-9)).round(),
            "usage": usage,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_read_as_utc_midnights() {
        assert_eq!(day_start_ms("1970-01-01").unwrap(), 0);
        assert_eq!(day_start_ms("2026-11-25").unwrap(), 1_795_564_800_000);
        assert_eq!(day_start_ms("2024-02-29").unwrap(), 1_709_164_800_000);
        assert!(day_start_ms("2025-02-29").is_err());
        assert!(day_start_ms("2026-13-01").is_err());
        assert!(day_start_ms("yesterday").is_err());
    }
}
