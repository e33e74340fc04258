//! The tamper-evident audit log: append-only, each entry hash-chained to the one before it
//! (SHA-256 over a canonical encoding), so editing, deleting or reordering any stored entry
//! breaks every link after it and [`verify`] reports the first broken one.

use koban_store::sql::{SqlDb, SqlTx, SqlTxExt, TxLock};
use koban_store::{StoreError, params};

use crate::sha256;

/// One audit event, before it is chained.
#[derive(Clone, Debug)]
pub struct AuditEvent<'a> {
    /// Who acted: `user:<id>`, `operator:<id>`, `system`, `cli`, `anonymous`.
    pub actor: &'a str,
    /// What happened, as a stable dotted name (`login.failed`, `factor.totp.enrolled`, ...).
    pub action: &'a str,
    /// What it happened to (`user:<id>`, ...).
    pub subject: &'a str,
    /// A JSON object with the details; never a secret.
    pub details: serde_json::Value,
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The hash of an entry: SHA-256 over every field, each length-prefixed, and the previous hash.
pub fn entry_hash(
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    subject: &str,
    details: &str,
    prev_hash: &[u8],
) -> [u8; 32] {
    let mut canonical = Vec::with_capacity(128 + details.len());
    canonical.extend_from_slice(b"koban-audit-v1");
    canonical.extend_from_slice(&seq.to_be_bytes());
    canonical.extend_from_slice(&at_ms.to_be_bytes());
    for field in [
        actor.as_bytes(),
        action.as_bytes(),
        subject.as_bytes(),
        details.as_bytes(),
        prev_hash,
    ] {
        canonical.extend_from_slice(&u64::try_from(field.len()).unwrap_or(u64::MAX).to_be_bytes());
        canonical.extend_from_slice(field);
    }
    sha256(&canonical)
}

/// The hash before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// Appends `event` inside `tx` (the caller's transaction, so the event and what it records
/// commit together).
pub async fn append<T: SqlTx>(
    tx: &mut T,
    at_ms: i64,
    event: AuditEvent<'_>,
) -> Result<i64, StoreError> {
    tx.lock(TxLock::AuditChain).await?;
    let last = tx
        .query_opt(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            vec![],
        )
        .await?;
    let (seq, prev_hash) = match last {
        Some(row) => (
            row.i64(0)?.checked_add(1).ok_or(StoreError::Corrupt(
                "the audit sequence overflowed".to_owned(),
            ))?,
            row.bytes(1)?,
        ),
        None => (1, GENESIS.to_vec()),
    };
    let details = event.details.to_string();
    let hash = entry_hash(
        seq,
        at_ms,
        event.actor,
        event.action,
        event.subject,
        &details,
        &prev_hash,
    );
    tx.execute(
        "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        params![
            seq,
            at_ms,
            event.actor,
            event.action,
            event.subject,
            details,
            prev_hash,
            hash
        ],
    )
    .await?;
    Ok(seq)
}

/// What a walk of the chain found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    /// The first entry whose link does not hold, and why.
    pub first_broken: Option<(i64, &'static str)>,
}

const VERIFY_PAGE: i64 = 1000;

/// Walks the whole chain from the start.
pub async fn verify<D: SqlDb>(db: &D) -> Result<VerifyReport, StoreError> {
    let mut entries = 0u64;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_vec();
    loop {
        let mut tx = db.begin().await?;
        let rows = tx
            .query(
                "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log \
                 WHERE seq >= $1 ORDER BY seq LIMIT $2",
                params![expected_seq, VERIFY_PAGE],
            )
            .await?;
        drop(tx);
        if rows.is_empty() {
            return Ok(VerifyReport {
                entries,
                first_broken: None,
            });
        }
        for row in rows {
            let entry = entry_from(&row)?;
            let broken = |why| {
                Ok(VerifyReport {
                    entries,
                    first_broken: Some((entry.seq, why)),
                })
            };
            if entry.seq != expected_seq {
                return broken("an entry is missing before this one");
            }
            if entry.prev_hash != prev {
                return broken("its link to the previous entry does not match");
            }
            let hash = entry_hash(
                entry.seq,
                entry.at_ms,
                &entry.actor,
                &entry.action,
                &entry.subject,
                &entry.details,
                &entry.prev_hash,
            );
            if entry.hash != hash {
                return broken("its content does not match its hash");
            }
            entries += 1;
            expected_seq += 1;
            prev = entry.hash;
        }
    }
}

/// The newest entries, newest first (for operators).
pub async fn recent<D: SqlDb>(
    db: &D,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut tx = db.begin().await?;
    let rows = tx
        .query(
            "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log \
             WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
            params![before_seq.unwrap_or(i64::MAX), limit.clamp(1, 200)],
        )
        .await?;
    rows.iter().map(entry_from).collect()
}

/// An entry from the columns `seq, at, actor, action, subject, details, prev_hash, hash`.
fn entry_from(row: &koban_store::sql::Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        seq: row.i64(0)?,
        at_ms: row.i64(1)?,
        actor: row.text(2)?,
        action: row.text(3)?,
        subject: row.text(4)?,
        details: row.text(5)?,
        prev_hash: row.bytes(6)?,
        hash: row.bytes(7)?,
    })
}
