//! Leases: background work that one instance at a time runs (the hold sweep, bank settlement,
//! expiry of card authorizations, the failure alarm), whichever instances serve the database.
//!
//! A lease is a row of `leases`: its holder, a fence that grows each time the lease changes
//! hands, and when it runs out. The holder renews it while it runs the work; another instance
//! takes it over once it has run out, so the work of a dead instance resumes within
//! [`LEASE_MS`] plus [`RETRY_MS`]. A holder runs work only while its own deadline, counted from
//! before it asked, is [`MARGIN_MS`] short of the lease's end, so clocks may differ by that much
//! before two holders could overlap; the work itself is idempotent besides (ledger ids derived
//! from the operation, conditional updates), so an overlap repeats nothing.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use koban_store::StoreError;
use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};

/// How long a lease lasts after its last renewal.
pub const LEASE_MS: i64 = 15_000;
/// How long before its end a holder stops counting on a lease (and renews it sooner).
pub const MARGIN_MS: i64 = 5_000;
/// How often an instance that does not hold a lease asks for it.
pub const RETRY_MS: i64 = 5_000;

/// One named lease as this instance sees it.
pub struct Lease {
    name: &'static str,
    holder: String,
    /// The fence of the lease while this instance holds it.
    fence: Option<i64>,
    /// Until when this instance may count on it (its own clock), or may skip asking again.
    until: Option<Instant>,
}

/// A held lease is renewed once less than this is left of the time it may be counted on.
const HALF: std::time::Duration =
    std::time::Duration::from_millis(((LEASE_MS - MARGIN_MS) / 2) as u64);

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn after(start: Instant, ms: i64) -> Instant {
    start + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl Lease {
    /// The lease `name`, not held yet, for a holder named afresh (one per process and job).
    pub fn new(name: &'static str) -> Lease {
        Lease {
            name,
            holder: crate::new_id(),
            fence: None,
            until: None,
        }
    }

    /// Whether this instance holds the lease now: renewed when it is held and half spent,
    /// taken when it has run out, asked for at most every [`RETRY_MS`] otherwise.
    pub async fn hold<D: SqlDb>(&mut self, db: &D) -> Result<bool, StoreError> {
        let now = Instant::now();
        match (self.fence, self.until) {
            (Some(_), Some(until)) if until > now + HALF => {
                return Ok(true);
            }
            (None, Some(until)) if until > now => return Ok(false),
            _ => {}
        }
        // Counted from before the question, so a slow answer eats into the margin, not past it.
        let asked_at = Instant::now();
        let asked = wall_ms();
        let mut tx = db.begin().await?;
        let row = tx
            .query_opt(
                "INSERT INTO leases (name, holder, fence, expires_at) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at, \
                 fence = CASE WHEN leases.holder = excluded.holder THEN leases.fence ELSE leases.fence + 1 END \
                 WHERE leases.holder = excluded.holder OR leases.expires_at < $4 \
                 RETURNING fence",
                params![self.name, self.holder.as_str(), asked + LEASE_MS, asked],
            )
            .await?;
        tx.commit().await?;
        match row {
            Some(row) => {
                let fence = row.i64(0)?;
                if self.fence != Some(fence) {
                    tracing::info!(lease = self.name, fence, "this instance runs this work now");
                }
                self.fence = Some(fence);
                self.until = Some(after(asked_at, LEASE_MS - MARGIN_MS));
                Ok(true)
            }
            None => {
                if self.fence.take().is_some() {
                    tracing::warn!(lease = self.name, "another instance took over this work");
                }
                self.until = Some(after(Instant::now(), RETRY_MS));
                Ok(false)
            }
        }
    }

    /// Gives the lease up (at shutdown), so another instance takes it at its next ask.
    pub async fn release<D: SqlDb>(&mut self, db: &D) -> Result<(), StoreError> {
        if self.fence.take().is_none() {
            return Ok(());
        }
        self.until = None;
        let mut tx = db.begin().await?;
        tx.execute(
            "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2",
            params![self.name, self.holder.as_str()],
        )
        .await?;
        tx.commit().await
    }

    /// The fence while held (it grows each time the lease changes hands).
    pub fn fence(&self) -> Option<i64> {
        self.fence
    }
}
