//! The tamper-evident audit log: append-only, each entry chained to the one before it by an
//! HMAC-SHA-256 under a key the database does not hold ([`AuditKey`], derived from the master
//! key), so nobody who can only write the database can edit, delete, reorder or re-link an
//! entry without [`verify`] reporting the first broken one. Two things a key alone cannot
//! show are covered from outside the chain:
//!
//! - **Cutting the tail.** The serving process writes signed [`Checkpoint`]s of the chain's
//!   head to an anchor file outside the database; [`verify`] checks every anchored entry is
//!   still there with the same link.
//! - **The ledger.** [`checkpoint_ledger`] appends a `ledger.checkpoint` entry carrying a
//!   running digest of every ledger transfer up to a sequence number; [`verify`] recomputes
//!   it from the `transfers` table, so an edited, removed or inserted transfer is reported.
//!
//! Entries written before the chain was keyed (plain SHA-256, `koban-audit-v1`) are still
//! checked link by link and counted as unkeyed; none may follow a keyed entry.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use koban_store::sql::{Row, SqlDb, SqlTx, SqlTxExt, TxLock, Value};
use koban_store::{StoreError, params};
use sha2::{Digest, Sha256};

use crate::sha256;

/// The key of the audit chain and of its checkpoints. It is derived from the server's master
/// key and never written to the database.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey([redacted])")
    }
}

impl AuditKey {
    pub fn new(key: [u8; 32]) -> AuditKey {
        AuditKey(key)
    }

    /// HMAC-SHA-256 under this key of `label` and `parts`, each length-prefixed.
    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for part in std::iter::once(label).chain(parts.iter().copied()) {
            mac.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

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

impl AuditEntry {
    /// The entry's fields in the order both link formats cover them.
    fn fields(&self) -> [&[u8]; 5] {
        [
            self.actor.as_bytes(),
            self.action.as_bytes(),
            self.subject.as_bytes(),
            self.details.as_bytes(),
            &self.prev_hash,
        ]
    }

    /// The keyed link: HMAC-SHA-256 under the audit key over every field and the previous link.
    pub fn keyed_hash(&self, key: &AuditKey) -> [u8; 32] {
        let (seq, at) = (self.seq.to_be_bytes(), self.at_ms.to_be_bytes());
        let [actor, action, subject, details, prev] = self.fields();
        key.mac(
            b"koban-audit-v2",
            &[&seq, &at, actor, action, subject, details, prev],
        )
    }

    /// The link of entries written before the chain was keyed: plain SHA-256.
    pub fn unkeyed_hash(&self) -> [u8; 32] {
        let mut canonical = Vec::with_capacity(128 + self.details.len());
        canonical.extend_from_slice(b"koban-audit-v1");
        canonical.extend_from_slice(&self.seq.to_be_bytes());
        canonical.extend_from_slice(&self.at_ms.to_be_bytes());
        for field in self.fields() {
            canonical
                .extend_from_slice(&u64::try_from(field.len()).unwrap_or(u64::MAX).to_be_bytes());
            canonical.extend_from_slice(field);
        }
        sha256(&canonical)
    }
}

/// The link before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// Appends `event` inside `tx` (the caller's transaction, so the event and what it records
/// commit together), linked to the entry before it under `key`.
pub async fn append<T: SqlTx>(
    tx: &mut T,
    key: &AuditKey,
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
    let mut entry = AuditEntry {
        seq,
        at_ms,
        actor: event.actor.to_owned(),
        action: event.action.to_owned(),
        subject: event.subject.to_owned(),
        details: event.details.to_string(),
        prev_hash,
        hash: Vec::new(),
    };
    entry.hash = entry.keyed_hash(key).to_vec();
    tx.execute(
        "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        params![
            entry.seq,
            entry.at_ms,
            entry.actor,
            entry.action,
            entry.subject,
            entry.details,
            entry.prev_hash,
            entry.hash
        ],
    )
    .await?;
    Ok(seq)
}

/// A signed statement, kept outside the database, that the chain's entry `seq` had the link
/// `hash` at `at_ms`, and that its first `unkeyed` entries (written before the chain was
/// keyed) were the only unkeyed ones: a rewrite of later entries in the old format shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: Vec<u8>,
    pub at_ms: i64,
    pub unkeyed: i64,
}

impl Checkpoint {
    fn mac(&self, key: &AuditKey) -> [u8; 32] {
        key.mac(
            b"koban-audit-anchor-v1",
            &[
                &self.seq.to_be_bytes(),
                &self.hash,
                &self.at_ms.to_be_bytes(),
                &self.unkeyed.to_be_bytes(),
            ],
        )
    }

    /// One line of an anchor file: a JSON object with the checkpoint and its signature.
    pub fn to_line(&self, key: &AuditKey) -> String {
        serde_json::json!({
            "seq": self.seq,
            "hash": hex::encode(&self.hash),
            "at_ms": self.at_ms,
            "unkeyed": self.unkeyed,
            "mac": hex::encode(self.mac(key)),
        })
        .to_string()
    }

    /// Reads one anchor line and checks its signature.
    pub fn from_line(line: &str, key: &AuditKey) -> Result<Checkpoint, &'static str> {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|_| "it is not a JSON object")?;
        let text = |name| value.get(name).and_then(serde_json::Value::as_str);
        let int = |name| value.get(name).and_then(serde_json::Value::as_i64);
        let (Some(seq), Some(hash), Some(at_ms), Some(unkeyed), Some(mac)) = (
            int("seq"),
            text("hash").and_then(|h| hex::decode(h).ok()),
            int("at_ms"),
            int("unkeyed"),
            text("mac").and_then(|h| hex::decode(h).ok()),
        ) else {
            return Err("it lacks seq, hash, at_ms, unkeyed or mac");
        };
        let checkpoint = Checkpoint {
            seq,
            hash,
            at_ms,
            unkeyed,
        };
        if mac != checkpoint.mac(key) {
            return Err("its signature does not match: it was not written under this key");
        }
        Ok(checkpoint)
    }
}

/// An anchor file's checkpoints, and how many of its lines were not JSON (a line torn by a
/// crash while it was appended; each line is signed on its own, so skipping one loses that
/// checkpoint and lets no forged one in). A JSON line whose signature does not check is an
/// error naming the file's line.
pub fn read_anchor(text: &str, key: &AuditKey) -> Result<(Vec<Checkpoint>, u64), String> {
    let mut checkpoints = Vec::new();
    let mut torn = 0u64;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if serde_json::from_str::<serde_json::Value>(line).is_err() {
            torn += 1;
            continue;
        }
        let checkpoint =
            Checkpoint::from_line(line, key).map_err(|why| format!("line {}: {why}", i + 1))?;
        checkpoints.push(checkpoint);
    }
    Ok((checkpoints, torn))
}

/// How many entries at the start of the chain were written before it was keyed (their links
/// are plain SHA-256): 0 unless the database predates the key. Reads until the first keyed
/// entry, which on a database created keyed is the first one.
pub async fn unkeyed_prefix<D: SqlDb>(db: &D, key: &AuditKey) -> Result<i64, StoreError> {
    let mut unkeyed = 0i64;
    loop {
        let rows = db
            .read(
                "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                params![unkeyed, VERIFY_PAGE],
            )
            .await?;
        if rows.is_empty() {
            return Ok(unkeyed);
        }
        for row in &rows {
            let entry = entry_from(row)?;
            if entry.hash == entry.keyed_hash(key) || entry.hash != entry.unkeyed_hash() {
                return Ok(unkeyed);
            }
            unkeyed = entry.seq;
        }
    }
}

/// The chain's newest entry, to anchor: `None` while the log is empty.
pub async fn head<D: SqlDb>(db: &D) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    let rows = db
        .read(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            vec![],
        )
        .await?;
    rows.first()
        .map(|row| Ok((row.i64(0)?, row.bytes(1)?)))
        .transpose()
}

/// What a walk of the chain (and of the ledger its checkpoints cover) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries whose link verified.
    pub entries: u64,
    /// Of those, entries at the start written before the chain was keyed: a database writer
    /// could have rewritten these (the anchors still cover them).
    pub unkeyed: u64,
    /// Anchor checkpoints found in place.
    pub anchors: u64,
    /// Ledger checkpoints verified, and the transfers they cover.
    pub ledger_checkpoints: u64,
    pub transfers_covered: u64,
    /// The first entry whose link does not hold, and why.
    pub first_broken: Option<(i64, &'static str)>,
    /// The first ledger checkpoint (its audit entry) the transfers no longer match, and why.
    pub ledger_broken: Option<(i64, &'static str)>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.first_broken.is_none() && self.ledger_broken.is_none()
    }
}

const VERIFY_PAGE: i64 = 1000;

/// The action of a ledger checkpoint entry.
pub const LEDGER_CHECKPOINT: &str = "ledger.checkpoint";

/// A ledger checkpoint as its audit entry records it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LedgerCheckpoint {
    /// The audit entry.
    entry: i64,
    /// The last transfer covered (the `transfers` table's `seq`) and how many are covered in all.
    through_seq: i64,
    transfers: u64,
    digest: [u8; 32],
}

impl LedgerCheckpoint {
    fn from_details(entry: i64, details: &str) -> Option<LedgerCheckpoint> {
        let value: serde_json::Value = serde_json::from_str(details).ok()?;
        let digest = hex::decode(value.get("digest")?.as_str()?)
            .ok()?
            .try_into()
            .ok()?;
        Some(LedgerCheckpoint {
            entry,
            through_seq: value.get("through_seq")?.as_i64()?,
            transfers: value.get("transfers")?.as_u64()?,
            digest,
        })
    }
}

/// Walks the whole chain from the start under `key`, checks every checkpoint of `anchors` is
/// in it, then recomputes the ledger digests its ledger checkpoints recorded.
pub async fn verify<D: SqlDb>(
    db: &D,
    key: &AuditKey,
    anchors: &[Checkpoint],
) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let mut anchored: BTreeMap<i64, Vec<&Checkpoint>> = BTreeMap::new();
    for checkpoint in anchors {
        anchored.entry(checkpoint.seq).or_default().push(checkpoint);
    }
    let mut ledger = Vec::new();
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_vec();
    'walk: loop {
        let rows = db
            .read(
                "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log \
                 WHERE seq >= $1 ORDER BY seq LIMIT $2",
                params![expected_seq, VERIFY_PAGE],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let entry = entry_from(&row)?;
            if let Some(why) = broken_link(&entry, expected_seq, &prev, key, &mut report) {
                report.first_broken = Some((entry.seq, why));
                break 'walk;
            }
            if let Some(anchors) = anchored.get(&entry.seq) {
                if anchors.iter().any(|anchor| anchor.hash != entry.hash) {
                    report.first_broken = Some((entry.seq, "it differs from its anchored link"));
                    break 'walk;
                }
                report.anchors += u64::try_from(anchors.len()).unwrap_or(u64::MAX);
            }
            if entry.action == LEDGER_CHECKPOINT {
                match LedgerCheckpoint::from_details(entry.seq, &entry.details) {
                    Some(checkpoint) => ledger.push(checkpoint),
                    None => {
                        report.first_broken =
                            Some((entry.seq, "its ledger checkpoint is unreadable"));
                        break 'walk;
                    }
                }
            }
            report.entries += 1;
            expected_seq += 1;
            prev = entry.hash;
        }
    }
    // The fewest unkeyed entries any anchor saw: more now means later entries were rewritten
    // in the old format.
    let keyed_from = anchors.iter().map(|c| c.unkeyed).min();
    if let Some(unkeyed) = keyed_from.and_then(|u| u64::try_from(u).ok())
        && report.unkeyed > unkeyed
        && report
            .first_broken
            .is_none_or(|(seq, _)| seq > i64::try_from(unkeyed).unwrap_or(i64::MAX))
    {
        report.first_broken = Some((
            i64::try_from(unkeyed).unwrap_or(i64::MAX).saturating_add(1),
            "it is unkeyed but the anchors say the chain was keyed before it: rewritten",
        ));
    }
    if report.first_broken.is_none()
        && let Some((&last_anchor, _)) = anchored.last_key_value()
        && last_anchor >= expected_seq
    {
        report.first_broken = Some((
            last_anchor,
            "the chain ends before this anchored entry: entries were cut from its end",
        ));
    }
    verify_ledger(db, &ledger, &mut report).await?;
    Ok(report)
}

/// Why `entry` does not follow the entries verified before it, if it does not.
fn broken_link(
    entry: &AuditEntry,
    expected_seq: i64,
    prev: &[u8],
    key: &AuditKey,
    report: &mut VerifyReport,
) -> Option<&'static str> {
    if entry.seq != expected_seq {
        return Some("an entry is missing before this one");
    }
    if entry.prev_hash != prev {
        return Some("its link to the previous entry does not match");
    }
    if entry.hash == entry.keyed_hash(key) {
        return None;
    }
    // Unkeyed links are accepted only before the first keyed one.
    if report.unkeyed == report.entries && entry.hash == entry.unkeyed_hash() {
        report.unkeyed += 1;
        return None;
    }
    Some("its content does not match its link under this key")
}

/// Recomputes the running ledger digest over the `transfers` table and compares it with each
/// ledger checkpoint, in order.
async fn verify_ledger<D: SqlDb>(
    db: &D,
    checkpoints: &[LedgerCheckpoint],
    report: &mut VerifyReport,
) -> Result<(), StoreError> {
    let mut digest = LedgerDigest::default();
    for checkpoint in checkpoints {
        digest.add_through(db, checkpoint.through_seq).await?;
        let (value, count) = digest.seal();
        if count != checkpoint.transfers || value != checkpoint.digest {
            report.ledger_broken = Some((
                checkpoint.entry,
                "the ledger's transfers up to this checkpoint were changed, removed or added",
            ));
            return Ok(());
        }
        report.ledger_checkpoints += 1;
        report.transfers_covered = count;
    }
    Ok(())
}

/// The running digest of the ledger's transfers in `seq` order: each checkpoint's digest is
/// SHA-256 over the one before it and every column of every transfer after it.
#[derive(Clone, Debug, Default)]
struct LedgerDigest {
    sealed: [u8; 32],
    through_seq: i64,
    count: u64,
    open: Option<Sha256>,
}

/// Transfers read per statement while a digest is computed.
const DIGEST_PAGE: i64 = 5_000;

impl LedgerDigest {
    fn hasher(&mut self) -> &mut Sha256 {
        let sealed = self.sealed;
        self.open.get_or_insert_with(|| {
            let mut hasher = Sha256::new();
            hasher.update(b"koban-ledger-v1");
            hasher.update(sealed);
            hasher
        })
    }

    /// Adds every transfer after the last one added, through `through_seq`.
    async fn add_through<D: SqlDb>(&mut self, db: &D, through_seq: i64) -> Result<(), StoreError> {
        loop {
            let rows = db
                .read(
                    "SELECT seq, id, debit, credit, amount, currency, CAST(code AS BIGINT), \
                     CAST(kind AS BIGINT), pending_id, \
                     expires_at, reference, metadata, timestamp, debit_prev, credit_prev, \
                     debit_balance, credit_balance FROM transfers \
                     WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                    params![self.through_seq, through_seq, DIGEST_PAGE],
                )
                .await?;
            let Some(last) = rows.last() else {
                self.through_seq = through_seq;
                return Ok(());
            };
            self.through_seq = last.i64(0)?;
            for row in &rows {
                self.add_row(row);
            }
        }
    }

    fn add_row(&mut self, row: &Row) {
        self.count += 1;
        let hasher = self.hasher();
        for value in &row.0 {
            match value {
                Value::Int(None) | Value::Text(None) | Value::Bytes(None) => hasher.update([0]),
                Value::Int(Some(v)) => {
                    hasher.update([1]);
                    hasher.update(v.to_be_bytes());
                }
                Value::Text(Some(text)) => length_prefixed(hasher, 2, text.as_bytes()),
                Value::Bytes(Some(bytes)) => length_prefixed(hasher, 3, bytes),
            }
        }
    }

    /// Ends the current span: its digest, and how many transfers are covered in all.
    fn seal(&mut self) -> ([u8; 32], u64) {
        self.hasher();
        if let Some(hasher) = self.open.take() {
            self.sealed = hasher.finalize().into();
        }
        (self.sealed, self.count)
    }
}

fn length_prefixed(hasher: &mut Sha256, tag: u8, bytes: &[u8]) {
    hasher.update([tag]);
    hasher.update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
    hasher.update(bytes);
}

/// Extends the ledger's protection: appends a `ledger.checkpoint` entry whose digest covers
/// every transfer decided at least `settled_ns` nanoseconds before `now_ms` (so that a
/// transfer still being committed elsewhere cannot be skipped and then appear inside a
/// covered range), at most `max_transfers` more at a time. Returns the audit entry, or `None`
/// when there was nothing new to cover or another process covered it meanwhile.
pub async fn checkpoint_ledger<D: SqlDb>(
    db: &D,
    key: &AuditKey,
    now_ms: i64,
    settled_ns: i64,
    max_transfers: i64,
) -> Result<Option<i64>, StoreError> {
    let last = last_ledger_checkpoint(db).await?;
    let (mut digest, after) = match &last {
        Some(c) => (
            LedgerDigest {
                sealed: c.digest,
                through_seq: c.through_seq,
                count: c.transfers,
                open: None,
            },
            c.through_seq,
        ),
        None => (LedgerDigest::default(), 0),
    };
    let horizon_ns = now_ms.saturating_mul(1_000_000).saturating_sub(settled_ns);
    let rows = db
        .read(
            "SELECT MAX(seq) FROM (SELECT seq FROM transfers WHERE seq > $1 AND timestamp <= $2 \
             ORDER BY seq LIMIT $3) AS span",
            params![after, horizon_ns, max_transfers.max(1)],
        )
        .await?;
    let Some(through_seq) = rows
        .first()
        .map(|row| row.opt_i64(0))
        .transpose()?
        .flatten()
    else {
        return Ok(None);
    };
    digest.add_through(db, through_seq).await?;
    let (value, count) = digest.seal();
    let mut tx = db.begin().await?;
    tx.lock(TxLock::AuditChain).await?;
    if last_ledger_checkpoint_in(&mut tx).await? != last {
        return Ok(None);
    }
    let entry = append(
        &mut tx,
        key,
        now_ms,
        AuditEvent {
            actor: "system",
            action: LEDGER_CHECKPOINT,
            subject: "ledger",
            details: serde_json::json!({
                "through_seq": through_seq,
                "transfers": count,
                "digest": hex::encode(value),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Some(entry))
}

const LAST_LEDGER_CHECKPOINT: &str =
    "SELECT seq, details FROM audit_log WHERE action = $1 ORDER BY seq DESC LIMIT 1";

async fn last_ledger_checkpoint<D: SqlDb>(db: &D) -> Result<Option<LedgerCheckpoint>, StoreError> {
    let rows = db
        .read(LAST_LEDGER_CHECKPOINT, params![LEDGER_CHECKPOINT])
        .await?;
    rows.first().map(ledger_checkpoint_from).transpose()
}

async fn last_ledger_checkpoint_in<T: SqlTx>(
    tx: &mut T,
) -> Result<Option<LedgerCheckpoint>, StoreError> {
    let row = tx
        .query_opt(LAST_LEDGER_CHECKPOINT, params![LEDGER_CHECKPOINT])
        .await?;
    row.as_ref().map(ledger_checkpoint_from).transpose()
}

fn ledger_checkpoint_from(row: &Row) -> Result<LedgerCheckpoint, StoreError> {
    let entry = row.i64(0)?;
    LedgerCheckpoint::from_details(entry, &row.text(1)?).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "audit entry {entry} is not a readable ledger checkpoint"
        ))
    })
}

/// The newest entries, newest first (for operators).
pub async fn recent<D: SqlDb>(
    db: &D,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = db
        .read(
            "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log \
             WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
            params![before_seq.unwrap_or(i64::MAX), limit.clamp(1, 200)],
        )
        .await?;
    rows.iter().map(entry_from).collect()
}

/// An entry from the columns `seq, at, actor, action, subject, details, prev_hash, hash`.
fn entry_from(row: &Row) -> Result<AuditEntry, StoreError> {
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
