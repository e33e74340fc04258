//! `koban risk backtest` (recorded events through candidate rules) and `koban bench risk`
//! (a seeded synthetic population through the decision engine).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use koban_pay::koban_risk::backtest::{RecordedEvent, backtest};
use koban_pay::koban_risk::sim::{SimConfig, Simulation};
use koban_pay::koban_risk::{Features, RuleSet};
use koban_store::LedgerStore;
use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx};

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
        let db = store.sql();
        let mut tx = db.begin_read().await?;
        let rows = tx
            .query(
                "SELECT id, at, features FROM risk_events WHERE at >= $1 ORDER BY at, id LIMIT $2",
                params![since, self.limit.clamp(1, 10_000_000)],
            )
            .await?;
        tx.commit().await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = row.text(0)?;
            let json: serde_json::Value = serde_json::from_str(&row.text(2)?)
                .with_context(|| format!("event {id}: stored features are not JSON"))?;
            let features =
                Features::from_json(&json).map_err(|e| anyhow::anyhow!("event {id}: {e}"))?;
            events.push(RecordedEvent {
                id,
                at_ms: row.i64(1)?,
                features,
            });
        }
        let report = backtest(&live, &candidate, &events);
        println!("{}", serde_json::to_string_pretty(&report)?);
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
}

/// Runs the simulation's events through the rules, timing each decision.
pub fn bench(args: RiskBenchArgs) -> anyhow::Result<ExitCode> {
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
    let out = serde_json::json!({
        "decisions_per_second": if elapsed > 0.0 { (events.len() as f64 / elapsed).round() } else { 0.0 },
        "decision_us_p50": pct(50),
        "decision_us_p99": pct(99),
        "decision_us_max": nanos.last().map_or(0.0, |n| *n as f64 / 1000.0),
        "attacks_caught": report.attacks_caught,
        "attacks_total": report.attacks_total,
        "false_positive_rate": report.false_positive_rate,
        "time_to_detect_s_p50": report.time_to_detect_s_p50,
        "time_to_detect_s_max": report.time_to_detect_s_max,
        "events": report.events,
        "normal_customers": report.normal_customers,
        "normal_customer_days_flagged": report.normal_customer_days_flagged,
        "flagged_by_rule": report.flagged_by_rule,
        "by_attack": report.by_attack,
        "rules": rules.rules().len(),
        "rules_digest": rules.digest(),
        "seed": args.seed,
        "generate_s": generate_s,
        "note": "decision = the rule set over precomputed features (in-memory windows); the database reads of the live path are not included",
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
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
