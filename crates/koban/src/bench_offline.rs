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
    /// Then settle for real through the issuer's path, on a server started here on a
    /// temporary SQLite file: this many customers load purses over HTTP (with step-up), pay
    /// four merchants' tills offline ten times each, and the merchants upload the vouchers.
    /// 0 skips it.
    #[arg(long, default_value_t = 20)]
    pub server_purses: usize,
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
    let sim_usage = meter.per_op(report.payments);
    let server = if args.server_purses > 0 {
        Some(server_phase(args.server_purses).await?)
    } else {
        None
    };
    let seconds = started.elapsed().as_secs_f64();
    // The headline figures are the issuer's real path when it ran, else the simulation's.
    let (rate, p50, p99, errors, server_ok) = match &server {
        Some(server) => (
            server.settlements_per_second,
            server.latency_ms_p50,
            server.latency_ms_p99,
            report.violations.len() + server.errors,
            server.invariants_ok,
        ),
        None => (
            report.settlements_per_second,
            report.settle_us_p50.round() / 1000.0,
            report.settle_us_p99.round() / 1000.0,
            report.violations.len(),
            true,
        ),
    };
    let invariants_ok = report.invariants_ok && server_ok;
    let mut out = json!({
        "bench": "offline",
        "seed": args.seed,
        "devices": args.devices,
        "terminals": args.terminals,
        "hours": args.hours,
        "requests_per_second": (rate * 10.0).round() / 10.0,
        "latency_ms_p50": p50,
        "latency_ms_p99": p99,
        "errors": errors,
        "seconds": (seconds * 10.0).round() / 10.0,
        "safety": "every check of device, terminal and settlement on; vouchers cross as QR text; purses loaded with step-up",
        "simulation_usage": sim_usage,
    });
    let mut figures = serde_json::to_value(&report)?;
    if let (Some(out), Some(figures)) = (out.as_object_mut(), figures.as_object_mut()) {
        out.append(figures);
        // The rate field of the whole report is the headline's.
        out.insert(
            "requests_per_second".into(),
            json!((rate * 10.0).round() / 10.0),
        );
        out.insert("invariants_ok".into(), json!(invariants_ok));
        match &server {
            Some(server) => {
                out.insert("server".into(), serde_json::to_value(server)?);
                if let Some(usage) = server.usage.as_object() {
                    out.append(&mut usage.clone());
                }
                out.insert(
                    "cpu_scope".into(),
                    json!("server: the process minus the load generator's threads, per voucher settled"),
                );
            }
            None => {
                if let Some(usage) = sim_usage.as_object() {
                    out.append(&mut usage.clone());
                }
                out.insert(
                    "cpu_scope".into(),
                    json!("the whole simulation per payment: devices signing, terminals checking, settlement"),
                );
            }
        }
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
            "{} payments, {} settled, {} double spenders of {} found; loss ¥{} against a bound of ¥{}; {rate:.0} settlements/s; invariants {verdict}",
            report.payments,
            report.settled,
            report.double_spends_detected,
            report.cheaters_who_double_spent,
            report.loss_minor,
            report.bound_minor,
        );
    }
    Ok(if invariants_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What the issuer's real path did with the vouchers the merchants uploaded.
#[derive(serde::Serialize)]
struct ServerFigures {
    purses: usize,
    vouchers: usize,
    paid: usize,
    settlements_per_second: f64,
    /// One upload request (a batch of vouchers), median and 99th percentile.
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    vouchers_per_upload: usize,
    errors: usize,
    invariants_ok: bool,
    #[serde(skip)]
    usage: serde_json::Value,
}

const MERCHANTS: usize = 4;
const PAYMENTS_PER_PURSE: usize = 10;
const UPLOAD_BATCH: usize = 50;

/// Starts a server here, loads purses and certifies tills over HTTP, pays offline with the
/// crate, then has each merchant upload its vouchers in batches, timed.
async fn server_phase(purses: usize) -> anyhow::Result<ServerFigures> {
    use crate::bench_api::{Conn, enrol_as, expect, start_server};
    use axum::http::Method;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use koban_offline::{
        IssuerKeys, Purse, PurseCertificate, SigningKey, Terminal, TerminalCertificate,
    };
    use std::sync::Arc;

    let started = start_server(None, koban_pay::koban_risk::RuleSet::default_rules()).await?;
    let addr = started.addr;
    let run = format!("offline{}", std::process::id());
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let issuers = |body: &serde_json::Value| {
        IssuerKeys::new(
            body["issuer_keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| {
                    let key: [u8; 65] = URL_SAFE_NO_PAD
                        .decode(k["public_key"].as_str()?)
                        .ok()?
                        .try_into()
                        .ok()?;
                    Some((u8::try_from(k["number"].as_u64()?).ok()?, key))
                }),
        )
    };
    let bytes_of = |body: &serde_json::Value| {
        URL_SAFE_NO_PAD
            .decode(body["certificate"].as_str().unwrap_or_default())
            .unwrap_or_default()
    };
    let now = || {
        u32::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
        .unwrap_or(u32::MAX)
    };
    // Merchants and their tills.
    let mut tills = Vec::new();
    for m in 0..MERCHANTS {
        let merchant = enrol_as(addr, 9_000 + m as u32, &run, "merchant").await?;
        let key = Arc::new(SigningKey::generate());
        let mut conn = Conn::open(addr).await?;
        let reply = expect(
            &mut conn,
            Method::POST,
            "/v1/offline/terminals",
            Some(&merchant.token),
            &[("x-forwarded-for", merchant.forwarded.as_str())],
            Some(json!({ "terminal_key": b64(&key.public()) })),
            201,
        )
        .await?;
        let cert = TerminalCertificate::decode(&bytes_of(&reply))
            .map_err(|_| anyhow::anyhow!("the terminal certificate does not read"))?;
        let till = Terminal::new(cert, key, issuers(&reply), 86_400, [], now());
        tills.push((merchant, till));
    }
    // Customers load purses (step-up with a recovery code) and pay offline.
    for c in 0..purses {
        let customer = enrol_as(addr, c as u32, &run, "customer").await?;
        let device = Arc::new(SigningKey::generate());
        let body = json!({ "amount": 20_000, "device_key": b64(&device.public()) });
        let headers = [
            ("x-forwarded-for", customer.forwarded.as_str()),
            ("idempotency-key", "bench-purse"),
        ];
        let mut conn = Conn::open(addr).await?;
        let (status, challenge) = conn
            .send(
                Method::POST,
                "/v1/offline/purses",
                Some(&customer.token),
                &headers,
                Some(body.clone()),
            )
            .await?;
        if status != 403 {
            anyhow::bail!("loading a purse answered {status}, not a step-up challenge");
        }
        let mut confirmed = body;
        confirmed["step_up"] =
            json!({ "id": challenge["step_up"]["id"], "code": customer.recovery });
        let loaded = expect(
            &mut conn,
            Method::POST,
            "/v1/offline/purses",
            Some(&customer.token),
            &headers,
            Some(confirmed),
            201,
        )
        .await?;
        let cert = PurseCertificate::decode(&bytes_of(&loaded))
            .map_err(|_| anyhow::anyhow!("the purse certificate does not read"))?;
        let keys = issuers(&loaded);
        let mut purse = Purse::new(cert, device);
        for p in 0..PAYMENTS_PER_PURSE {
            let (_, till) = &mut tills[(c + p) % MERCHANTS];
            let t = now();
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&((c * PAYMENTS_PER_PURSE + p) as u64).to_be_bytes());
            let challenge = till.challenge(1_000 + (p as u64) * 100, nonce, t);
            let voucher = purse
                .pay(&challenge, &keys, t)
                .map_err(|e| anyhow::anyhow!("the device refused to pay: {e}"))?;
            till.accept(&challenge, &voucher, t)
                .map_err(|e| anyhow::anyhow!("the till refused a voucher: {e}"))?;
        }
    }
    // Online again: every merchant uploads, a batch at a time.
    let meter = crate::bench_meter::Meter::server();
    let mut micros = Vec::new();
    let (mut vouchers, mut paid, mut errors) = (0, 0, 0);
    let began = Instant::now();
    for (merchant, till) in &mut tills {
        let texts: Vec<String> = till.take_vouchers().iter().map(|v| v.to_text()).collect();
        let mut conn = Conn::open(addr).await?;
        for batch in texts.chunks(UPLOAD_BATCH) {
            let t = Instant::now();
            let reply = expect(
                &mut conn,
                Method::POST,
                "/v1/offline/vouchers",
                Some(&merchant.token),
                &[("x-forwarded-for", merchant.forwarded.as_str())],
                Some(json!({ "vouchers": batch })),
                200,
            )
            .await?;
            micros.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            vouchers += batch.len();
            for result in reply["results"].as_array().into_iter().flatten() {
                if result["status"] == "paid" && result["repeated"] == false {
                    paid += 1;
                } else {
                    errors += 1;
                }
            }
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let usage = meter.per_op(u64::try_from(vouchers).unwrap_or(u64::MAX));
    micros.sort_unstable();
    let mut invariants_ok = errors == 0 && paid == purses * PAYMENTS_PER_PURSE;
    if let (Some(store), Some(pay)) = (&started.store, &started.pay) {
        use koban_store::LedgerStore;
        invariants_ok &= store.audit().await?.ok();
        for (_, outstanding, wallets) in pay.reconcile().await? {
            invariants_ok &= outstanding == wallets;
        }
    }
    started.stop().await;
    Ok(ServerFigures {
        purses,
        vouchers,
        paid,
        settlements_per_second: if elapsed > 0.0 {
            vouchers as f64 / elapsed
        } else {
            0.0
        },
        latency_ms_p50: crate::bench_api::percentile_ms(&micros, 50.0),
        latency_ms_p99: crate::bench_api::percentile_ms(&micros, 99.0),
        vouchers_per_upload: UPLOAD_BATCH,
        errors,
        invariants_ok,
        usage,
    })
}
