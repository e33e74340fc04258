//! The ledger's Prometheus metrics, recorded by both backends through these functions so the
//! names stay in one place.

use std::time::Duration;

use koban_ledger::RejectReason;

pub const TRANSFERS_COMMITTED: &str = "koban_ledger_transfers_committed_total";
pub const BATCHES_REJECTED: &str = "koban_ledger_batches_rejected_total";
pub const GROUP_TRANSFERS: &str = "koban_ledger_group_commit_transfers";
pub const COMMIT_SECONDS: &str = "koban_ledger_commit_seconds";
pub const COMMIT_FAILURES: &str = "koban_ledger_commit_failures_total";
pub const QUEUE_BUSY: &str = "koban_ledger_queue_busy_total";
pub const HOLDS_EXPIRED: &str = "koban_ledger_holds_expired_total";

/// Describes every ledger metric and registers the counters at zero, so `/metrics` lists
/// them before the first transfer.
pub fn describe() {
    metrics::describe_counter!(
        TRANSFERS_COMMITTED,
        "Transfers durably committed (idempotent replays excluded)."
    );
    metrics::describe_counter!(BATCHES_REJECTED, "Batches the ledger refused, by reason.");
    metrics::describe_histogram!(
        GROUP_TRANSFERS,
        "Transfers per group commit (one database transaction)."
    );
    metrics::describe_histogram!(
        COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Time to decide and durably commit one group."
    );
    metrics::describe_counter!(
        COMMIT_FAILURES,
        "Group commits that failed in the database; their submitters were told to retry."
    );
    metrics::describe_counter!(
        QUEUE_BUSY,
        "Submissions refused because the queue was full."
    );
    metrics::describe_counter!(
        HOLDS_EXPIRED,
        "Pending transfers released by the expiry sweep."
    );
    for name in [
        TRANSFERS_COMMITTED,
        COMMIT_FAILURES,
        QUEUE_BUSY,
        HOLDS_EXPIRED,
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// Records one durable group commit.
pub fn group_committed(transfers: u64, group_transfers: usize, commit: Duration) {
    metrics::counter!(TRANSFERS_COMMITTED).increment(transfers);
    metrics::histogram!(GROUP_TRANSFERS).record(f64::from(
        u32::try_from(group_transfers).unwrap_or(u32::MAX),
    ));
    metrics::histogram!(COMMIT_SECONDS).record(commit.as_secs_f64());
}

pub fn batch_rejected(reason: RejectReason) {
    metrics::counter!(BATCHES_REJECTED, "reason" => reason.code()).increment(1);
}

pub fn commit_failed() {
    metrics::counter!(COMMIT_FAILURES).increment(1);
}

pub fn queue_busy() {
    metrics::counter!(QUEUE_BUSY).increment(1);
}

pub fn holds_expired(count: usize) {
    metrics::counter!(HOLDS_EXPIRED).increment(u64::try_from(count).unwrap_or(u64::MAX));
}
