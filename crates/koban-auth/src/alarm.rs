//! The global alarm on authentication failures: every instance counts failures per minute in
//! the database; a periodic check compares the last minute with the hour before it and raises
//! a security alert (stored once per minute across instances, logged, counted on `/metrics`).

use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx};

use crate::{Auth, AuthError};
use koban_shared::audit::{AuditEvent, append};
use koban_shared::new_id;

/// Minutes of history that make the baseline.
const BASELINE_MINUTES: i64 = 60;
/// Expired step-ups and codes are deleted this long after they expire.
const STALE_MS: i64 = 3600 * 1000;
/// The local mailbox keeps messages this long (they may hold codes).
const MAILBOX_KEEP_MS: i64 = 24 * 3600 * 1000;

/// Minutes the console's chart of failures covers.
pub const CHART_MINUTES: i64 = 30;

/// Failed sign-ins per minute, oldest first, from `first_minute` (minutes since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureChart {
    pub first_minute: i64,
    pub per_minute: Vec<i64>,
    pub baseline: i64,
    /// More failures than this in a minute raise the alarm.
    pub alarm_above: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityAlert {
    pub id: String,
    pub kind: String,
    pub minute: i64,
    pub observed: i64,
    pub baseline: i64,
    pub raised_at_ms: i64,
}

/// The failures counted per minute from the hour before `minute` (the baseline's) up to it.
async fn failure_minutes<T: SqlTx>(
    tx: &mut T,
    minute: i64,
) -> Result<Vec<koban_store::sql::Row>, AuthError> {
    Ok(tx
        .query(
            "SELECT minute, failures FROM failure_minutes WHERE minute >= $1 AND minute <= $2",
            params![minute - BASELINE_MINUTES - 1, minute],
        )
        .await?)
}

impl<D: SqlDb> Auth<D> {
    /// Checks the failure rate once; returns the alert if this check raised one. Run it at
    /// least every 30 seconds so an attack is flagged within a minute.
    pub async fn check_alarm(&self) -> Result<Option<SecurityAlert>, AuthError> {
        let now = self.now_ms();
        let minute = now / 60_000;
        let mut tx = self.db.begin().await?;
        // Refusals were counted in memory (a refusal must cost no write); they join the
        // shared totals here.
        let refused = self.refused.swap(0, std::sync::atomic::Ordering::Relaxed);
        if refused > 0 {
            crate::throttle::count_for_alarm(&mut tx, now, refused).await?;
        }
        let rows = failure_minutes(&mut tx, minute).await?;
        let (observed, history) = last_sixty_seconds(&rows, minute, now)?;
        let baseline = self.baseline(history);
        metrics::gauge!(crate::metrics::FAILURES_LAST_MINUTE).set(observed as f64);
        self.prune(&mut tx, now, minute).await?;
        let firing = observed > baseline.saturating_mul(self.config.alarm_multiple);
        metrics::gauge!(crate::metrics::ALARM_ACTIVE).set(if firing { 1.0 } else { 0.0 });
        if !firing {
            tx.commit().await?;
            return Ok(None);
        }
        let alert = SecurityAlert {
            id: new_id(),
            kind: "auth_failure_rate".into(),
            minute,
            observed,
            baseline,
            raised_at_ms: now,
        };
        let raised = tx
            .execute(
                "INSERT INTO security_alerts (id, kind, minute, observed, baseline, raised_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (kind, minute) DO NOTHING",
                params![alert.id.as_str(), alert.kind.as_str(), minute, observed, baseline, now],
            )
            .await?;
        if raised == 0 {
            tx.commit().await?;
            return Ok(None);
        }
        append(&mut tx, &self.audit_key, now, AuditEvent {
            actor: "system",
            action: "alert.raised",
            subject: &format!("alert:{}", alert.id),
            details: serde_json::json!({ "kind": alert.kind, "observed": observed, "baseline": baseline }),
        })
        .await?;
        tx.commit().await?;
        metrics::counter!(crate::metrics::SECURITY_ALERTS, "kind" => "auth_failure_rate")
            .increment(1);
        tracing::warn!(
            observed,
            baseline,
            multiple = self.config.alarm_multiple,
            "security alert: authentication failure rate"
        );
        Ok(Some(alert))
    }

    /// Deletes what is not needed any more: old per-secret attempts and minute counts,
    /// expired confirmations (their digests) and codes, and old local mail.
    async fn prune<T: SqlTx>(&self, tx: &mut T, now: i64, minute: i64) -> Result<(), AuthError> {
        tx.execute(
            "DELETE FROM secret_attempts WHERE at < $1",
            params![now - self.config.secret_retention_s * 1000],
        )
        .await?;
        tx.execute(
            "DELETE FROM failure_minutes WHERE minute < $1",
            params![minute - 2 * BASELINE_MINUTES],
        )
        .await?;
        tx.execute(
            "DELETE FROM step_ups WHERE expires_at < $1",
            params![now - STALE_MS],
        )
        .await?;
        tx.execute(
            "DELETE FROM one_time_codes WHERE expires_at < $1",
            params![now - STALE_MS],
        )
        .await?;
        tx.execute(
            "DELETE FROM mailbox WHERE delivered_at < $1",
            params![now - MAILBOX_KEEP_MS],
        )
        .await?;
        Ok(())
    }

    /// The expected failures per minute: the mean of the hour before, but at least the floor.
    fn baseline(&self, history: i64) -> i64 {
        (history / BASELINE_MINUTES).max(self.config.alarm_floor_per_min)
    }

    /// Failed sign-ins per minute over the last half hour, with the baseline and the level
    /// that raises the alarm, for the console's chart (analysts and support). Failures
    /// refused without a write join the counts at the next alarm check (every few seconds).
    pub async fn failure_chart(
        &self,
        principal: &crate::Principal,
    ) -> Result<FailureChart, AuthError> {
        principal.operator(&[crate::Role::Analyst, crate::Role::Support])?;
        let minute = self.now_ms() / 60_000;
        let mut tx = self.db.begin_read().await?;
        let rows = failure_minutes(&mut tx, minute).await?;
        tx.commit().await?;
        let first = minute - CHART_MINUTES + 1;
        let mut per_minute: Vec<i64> = (first..=minute).map(|_| 0).collect();
        let mut history = 0;
        for row in rows {
            let (m, failures) = (row.i64(0)?, row.i64(1)?);
            if m < minute - 1 {
                history += failures;
            }
            if let Some(slot) = usize::try_from(m - first)
                .ok()
                .and_then(|i| per_minute.get_mut(i))
            {
                *slot = failures;
            }
        }
        let baseline = self.baseline(history);
        Ok(FailureChart {
            first_minute: first,
            per_minute,
            baseline,
            alarm_above: baseline.saturating_mul(self.config.alarm_multiple),
        })
    }

    /// The newest alerts (operators).
    pub async fn alerts(
        &self,
        principal: &crate::Principal,
    ) -> Result<Vec<SecurityAlert>, AuthError> {
        principal.operator(&[crate::Role::Analyst, crate::Role::Support])?;
        let mut tx = self.db.begin().await?;
        tx.query(
            "SELECT id, kind, minute, observed, baseline, raised_at FROM security_alerts ORDER BY raised_at DESC LIMIT 100",
            vec![],
        )
        .await?
        .into_iter()
        .map(|r| {
            Ok(SecurityAlert {
                id: r.text(0)?,
                kind: r.text(1)?,
                minute: r.i64(2)?,
                observed: r.i64(3)?,
                baseline: r.i64(4)?,
                raised_at_ms: r.i64(5)?,
            })
        })
        .collect()
    }
}

/// Failures in the last sixty seconds (this minute so far plus the share of the previous one
/// that still falls inside the window), and all failures of the minutes before those two.
fn last_sixty_seconds(
    rows: &[koban_store::sql::Row],
    minute: i64,
    now: i64,
) -> Result<(i64, i64), AuthError> {
    let mut current = 0;
    let mut previous = 0;
    let mut history = 0;
    for row in rows {
        let (m, failures) = (row.i64(0)?, row.i64(1)?);
        if m == minute {
            current = failures;
        } else if m == minute - 1 {
            previous = failures;
        } else {
            history += failures;
        }
    }
    let into_minute = now % 60_000;
    Ok((
        current + previous * (60_000 - into_minute) / 60_000,
        history,
    ))
}
