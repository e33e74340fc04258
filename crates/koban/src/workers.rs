//! The background work of a serving process, beside `serve`: the hold sweeper, the audit
//! checkpoints, and the workers of identity and payments (outbox, alarm, settlement,
//! notifications, risk records, webhooks). `koban serve` and `koban bench api` start them; both stop them through a
//! `watch` channel.

use std::path::PathBuf;
use std::time::Duration;

use koban_auth::Auth;
use koban_shared::lease::Lease;
use koban_store::LedgerStore;
use tokio::sync::watch;

/// How often the global failure alarm is checked.
pub const ALARM_EVERY_S: u64 = 10;
/// How often the reconciliation gauge is refreshed (it reads every customer wallet).
const RECONCILE_EVERY_S: u64 = 60;
/// How often the retention job runs (one instance at a time, under a lease).
const RETENTION_EVERY_S: u64 = 3600;
/// Holds released per sweep; a backlog larger than this is worked off over several sweeps.
const SWEEP_HOLDS_MAX: usize = 1_000;

/// The anchor file's name beside the database.
pub const ANCHOR_FILE: &str = "audit-anchor.jsonl";
/// Transfers decided less than this long ago are left to the next ledger checkpoint, so a
/// transfer still being committed by another process cannot fall inside a covered range.
const LEDGER_SETTLED_NS: i64 = 30_000_000_000;
/// The most transfers one ledger checkpoint adds (a large backlog is covered over several).
const LEDGER_CHECKPOINT_MAX: i64 = 100_000;

/// Every `interval` and once more when told to stop: adds a ledger checkpoint to the audit
/// chain, then appends a signed checkpoint of the chain's head to the anchor file (when the
/// head moved).
pub async fn checkpoint_audit<D: koban_store::sql::SqlDb>(
    auth: Auth<D>,
    anchor: PathBuf,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    let mut anchored = Anchored::default();
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.changed() => true,
        };
        if let Err(error) = checkpoint_once(&auth, &anchor, &mut anchored).await {
            tracing::warn!(%error, "audit checkpoint failed; will retry");
        }
        if stopping {
            return;
        }
    }
}

/// What this process has anchored: the last entry, and how many entries at the chain's start
/// are unkeyed (found once).
#[derive(Default)]
struct Anchored {
    seq: Option<i64>,
    unkeyed: Option<i64>,
}

async fn checkpoint_once<D: koban_store::sql::SqlDb>(
    auth: &Auth<D>,
    anchor: &std::path::Path,
    anchored: &mut Anchored,
) -> anyhow::Result<()> {
    use koban_shared::audit::{self, Checkpoint};
    let now = auth.now_ms();
    let key = auth.audit_key();
    audit::checkpoint_ledger(
        auth.db(),
        key,
        now,
        LEDGER_SETTLED_NS,
        LEDGER_CHECKPOINT_MAX,
    )
    .await?;
    let Some((seq, hash)) = audit::head(auth.db()).await? else {
        return Ok(());
    };
    if anchored.seq == Some(seq) {
        return Ok(());
    }
    let unkeyed = match anchored.unkeyed {
        Some(unkeyed) => unkeyed,
        None => *anchored
            .unkeyed
            .insert(audit::unkeyed_prefix(auth.db(), key).await?),
    };
    let line = Checkpoint {
        seq,
        hash,
        at_ms: now,
        unkeyed,
    }
    .to_line(key);
    let path = anchor.to_path_buf();
    tokio::task::spawn_blocking(move || append_line(&path, &line)).await??;
    anchored.seq = Some(seq);
    Ok(())
}

/// Appends one line in one write and waits until it is on disk. A line torn by an earlier
/// crash is ended first, so it stays a line of its own (which verification skips).
fn append_line(path: &std::path::Path, line: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::{Read, Seek, SeekFrom, Write};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::with_capacity(line.len() + 2);
    if file.seek(SeekFrom::End(0))? > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            text.push('\n');
        }
    }
    text.push_str(line);
    text.push('\n');
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_data()
        .with_context(|| format!("writing {}", path.display()))
}

/// Releases expired holds until told to stop.
pub async fn sweep_holds<S: LedgerStore>(
    store: S,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    let db = store.sql();
    let mut lease = Lease::new("hold_sweep");
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {
                let _ = lease.release(&db).await;
                return;
            }
        }
        if !held(&mut lease, &db).await {
            continue;
        }
        match store.expire_holds(SWEEP_HOLDS_MAX).await {
            Ok(released) => {
                if released > 0 {
                    tracing::info!(released, "released expired holds");
                }
                // The alert on a stalled sweep compares this with the time (the instance
                // holding the sweep's lease sets it).
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                metrics::gauge!("koban_hold_sweep_last_success_timestamp_seconds").set(now);
            }
            Err(error) => tracing::warn!(%error, "hold sweep failed; will retry"),
        }
    }
}

/// How often each instance looks for a rule set published by another (a reload reaches every
/// instance within this, plus one query).
const RULES_POLL_S: u64 = 2;

/// Runs the service's background work until told to stop: delivering the outbox (woken at
/// once by new messages, and every second for retries), checking the global failure alarm
/// and turning it into a fraud alert, expiring stale card authorizations, settling bank operations and writing queued
/// notifications and risk records (every 100 ms), taking a rule set another instance published
/// (every [`RULES_POLL_S`]), reloading the personal data keys (every 10 s), deleting what
/// the retention windows no longer keep (hourly), and delivering webhooks (a task of its own).
pub async fn run_workers<S: LedgerStore>(
    auth: Auth<S::Sql>,
    pay: koban_pay::Payments<S>,
    cards: koban_cards::Cards<S>,
    mut stop: watch::Receiver<bool>,
) {
    let mut alarm = tokio::time::interval(Duration::from_secs(ALARM_EVERY_S));
    let mut payments = tokio::time::interval(Duration::from_millis(100));
    let mut rules = tokio::time::interval(Duration::from_secs(RULES_POLL_S));
    // Personal data keys reloaded in a task of their own, so no slow pass of the work below
    // delays it past a rotated key's activation.
    let key_reload = tokio::spawn(reload_personal_keys(auth.clone(), stop.clone()));
    // Webhooks in a task of their own: a slow merchant endpoint never delays settlement,
    // notifications or the outbox.
    let webhooks = tokio::spawn(deliver_webhooks(pay.clone(), stop.clone()));
    // Work that one instance at a time does; the outbox and webhooks claim their rows instead.
    let db = auth.db().clone();
    let mut settlement = Lease::new("bank_settlement");
    let mut card_expiry = Lease::new("card_expiry");
    let mut alarm_import = Lease::new("alarm_import");
    let mut retention_lease = Lease::new("retention");
    let mut retention = tokio::time::interval(Duration::from_secs(RETENTION_EVERY_S));
    let mut reconcile = tokio::time::interval(Duration::from_secs(RECONCILE_EVERY_S));
    loop {
        tokio::select! {
            _ = stop.changed() => {
                for lease in [&mut settlement, &mut card_expiry, &mut alarm_import, &mut retention_lease] {
                    let _ = lease.release(&db).await;
                }
                // Queued risk decisions and notices are written before the process exits.
                if let Err(error) = pay.flush_records().await {
                    tracing::warn!(%error, "could not write the last risk decisions and notices");
                }
                let _ = webhooks.await;
                let _ = key_reload.await;
                return;
            }
            _ = alarm.tick() => {
                if let Err(error) = auth.check_alarm().await {
                    tracing::warn!(%error, "alarm check failed; will retry");
                }
                // The login-failure alarm becomes a fraud alert and case; the fraud gauges
                // on /metrics are refreshed.
                if held(&mut alarm_import, &db).await
                    && let Err(error) = pay.import_login_alarms().await
                {
                    tracing::warn!(%error, "login alarms could not become alerts; will retry");
                }
                if let Err(error) = pay.publish_risk_gauges().await {
                    tracing::warn!(%error, "fraud gauges could not be read; will retry");
                }
            }
            _ = reconcile.tick() => {
                // Offline purses past their settlement window: the rest back to the wallet.
                if held(&mut settlement, &db).await {
                    match pay.close_due_purses().await {
                        Ok(0) => {}
                        Ok(closed) => tracing::info!(closed, "offline purses closed"),
                        Err(error) => tracing::warn!(%error, "offline purses could not close; will retry"),
                    }
                }
                // The books against the wallets, for the reconciliation alert.
                match pay.reconciliation_gaps().await {
                    Ok(gaps) => {
                        for (currency, gap) in gaps {
                            if gap != 0 {
                                tracing::error!(currency = currency.code(), gap, "e-money outstanding differs from the customer wallets");
                            }
                            metrics::gauge!("koban_reconciliation_gap_minor", "currency" => currency.code())
                                .set(gap as f64);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "reconciliation could not be read; will retry"),
                }
                // Bank statement lines waiting for an operator, for their alert.
                if pay.file_bank_connected() {
                    match pay.unmatched_statement_lines().await {
                        Ok(count) => metrics::gauge!("koban_bank_statement_lines_unmatched").set(count as f64),
                        Err(error) => tracing::warn!(%error, "unmatched bank lines could not be counted; will retry"),
                    }
                }
            }
            _ = rules.tick() => {
                match pay.sync_risk_rules().await {
                    Ok(Some(set)) => tracing::info!(
                        published = pay.risk_rules().published(),
                        rules = set.rules().len(),
                        digest = %set.digest(),
                        "risk rules published by an instance are in force here"
                    ),
                    Ok(None) => {}
                    Err(error) => tracing::error!(%error, "risk rules: the published set was not taken"),
                }
            }
            _ = retention.tick() => {
                // Personal data past its retention window (koban-pay `retention.rs`).
                if held(&mut retention_lease, &db).await {
                    match pay.enforce_retention().await {
                        Ok(pruned) => tracing::info!(
                            risk_events = pruned.risk_events,
                            sessions = pruned.sessions,
                            notices = pruned.notices,
                            other = pruned.other,
                            "retention: what is no longer kept was deleted"
                        ),
                        Err(error) => tracing::warn!(%error, "retention could not run; will retry"),
                    }
                }
            }
            _ = payments.tick() => {
                if held(&mut card_expiry, &db).await
                    && let Err(error) = cards.tick().await
                {
                    tracing::warn!(%error, "stale card authorizations could not expire; will retry");
                }
                let settle = held(&mut settlement, &db).await;
                if let Err(error) = pay.settle_and_flush(settle).await {
                    tracing::warn!(%error, "payments work (settlement, notifications, risk records) failed; will retry");
                }
            }
            _ = auth.outbox_wait(Duration::from_secs(1)) => {}
        }
        deliver_outbox(&auth).await;
    }
}

/// Reloads the personal data keys every `REFRESH_MS` until told to stop: a key rotated by
/// `koban keys rotate-personal` or another instance is loaded before it starts sealing.
async fn reload_personal_keys<D: koban_store::sql::SqlDb>(
    auth: Auth<D>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_millis(
        koban_shared::personal::REFRESH_MS.unsigned_abs(),
    ));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = every.tick() => {
                if let Err(error) = auth.refresh_personal_keys().await {
                    tracing::warn!(%error, "personal data keys could not be reloaded; will retry");
                }
            }
        }
    }
}

/// Whether this instance holds `lease` now; a database error counts as not held (logged).
async fn held<D: koban_store::sql::SqlDb>(lease: &mut Lease, db: &D) -> bool {
    match lease.hold(db).await {
        Ok(held) => held,
        Err(error) => {
            tracing::warn!(%error, "a lease could not be asked for; will retry");
            false
        }
    }
}

/// Delivers merchants' webhooks every second until told to stop.
async fn deliver_webhooks<S: LedgerStore>(
    pay: koban_pay::Payments<S>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = every.tick() => {
                if let Err(error) = pay.deliver_webhooks(50).await {
                    tracing::warn!(%error, "webhook delivery failed; will retry");
                }
            }
        }
    }
}

/// Delivers the outbox, 50 messages at a time, until it is empty or delivery fails.
async fn deliver_outbox<D: koban_store::sql::SqlDb>(auth: &Auth<D>) {
    loop {
        match auth.deliver_outbox(50).await {
            Ok(50) => continue,
            Ok(_) => break,
            Err(error) => {
                tracing::warn!(%error, "outbox delivery failed; will retry");
                break;
            }
        }
    }
}
