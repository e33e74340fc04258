//! `koban bench offline`: the seeded simulation of offline payments (`koban_offline::sim`):
//! devices paying terminals by QR with the network coming and going, cheating devices
//! (clones, counter replays, over-spending), late settlement from both sides. It reports what
//! was paid and lost against the stated bound, and how fast uploads are settled.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use koban_offline::settle::Policy;
use koban_offline::sim;
use serde_json::json;

#[derive(Args, Debug, Clone)]
pub struct OfflineBenchArgs {
    /// Honest devices, each with a purse.
    #[arg(long, default_value_t = 500)]
    pub devices: usize,
    /// Merchant terminals.
    #[arg(long, default_value_t = 40)]
    pub terminals: usize,
    /// Hours simulated (then everyone comes online and uploads).
    #[arg(long, default_value_t = 72)]
    pub hours: u32,
    /// Cheating devices, in turn a clone, a counter replay and an over-spender.
    #[arg(long, default_value_t = 12)]
    pub cheaters: usize,
    /// Seed (the same seed gives the same payments and decisions).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Each purse's limit in yen.
    #[arg(long, default_value_t = 20_000)]
    pub limit: u64,
    /// The issuer pays merchants up to this many times a purse's limit; its loss per purse is
    /// at most (factor - 1) × limit.
    #[arg(long, default_value_t = Policy::default().guarantee_factor)]
    pub guarantee_factor: u64,
    /// Print one JSON object on one line.
    #[arg(long)]
    pub json: bool,
}

pub async fn offline(args: OfflineBenchArgs) -> anyhow::Result<ExitCode> {
    let params = sim::Params {
        devices: args.devices,
        terminals: args.terminals.max(1),
        // Within a year, and a limit far from overflowing any sum.
        hours: args.hours.clamp(1, 24 * 366),
        cheaters: args.cheaters,
        seed: args.seed,
        limit: args.limit.clamp(1, 1_000_000_000_000),
        policy: Policy {
            guarantee_factor: args.guarantee_factor.clamp(1, 100),
            ..Policy::default()
        },
        ..sim::Params::default()
    };
    let meter = crate::bench_meter::Meter::process();
    let started = Instant::now();
    let report = tokio::task::spawn_blocking(move || sim::run(&params)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let mut out = json!({
        "bench": "offline",
        "seed": args.seed,
        "devices": args.devices,
        "terminals": args.terminals,
        "hours": args.hours,
        "requests_per_second": (report.settlements_per_second * 10.0).round() / 10.0,
        "latency_ms_p50": (report.settle_us_p50).round() / 1000.0,
        "latency_ms_p99": (report.settle_us_p99).round() / 1000.0,
        "errors": report.violations.len(),
        "seconds": (seconds * 10.0).round() / 10.0,
        "safety": "every check of device, terminal and settlement on; vouchers cross as QR text",
    });
    let mut figures = serde_json::to_value(&report)?;
    if let (Some(out), Some(figures)) = (out.as_object_mut(), figures.as_object_mut()) {
        out.append(figures);
        if let Some(usage) = meter.per_op(report.payments).as_object_mut() {
            out.append(usage);
        }
        out.insert(
            "cpu_scope".into(),
            json!(
                "the whole simulation per payment: devices signing, terminals checking, settlement"
            ),
        );
    }
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
        let verdict = if report.invariants_ok {
            "held"
        } else {
            "FAILED"
        };
        eprintln!(
            "{} payments, {} settled, {} double spenders of {} found; loss ¥{} against a bound of ¥{}; invariants {verdict}",
            report.payments,
            report.settled,
            report.double_spends_detected,
            report.cheaters_who_double_spent,
            report.loss_minor,
            report.bound_minor,
        );
    }
    Ok(if report.invariants_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
