//! Personal data at rest: every column that holds a person's e-mail address, phone number,
//! name, date of birth or bank account holder, or a notice written to them, is sealed
//! ([`Vault::seal`]) before it is written and opened after it is read. Equality lookups (sign
//! in by e-mail, pay by phone, a mailbox by address) go through a keyed blind index
//! ([`Vault::index`]) instead of the value.
//!
//! Envelope keys: values are sealed with XChaCha20-Poly1305 under a **data key**; data keys
//! live in the database table `personal_keys`, each wrapped (sealed) under a key-encryption
//! key derived from the master key, which the database never holds (its id and activation
//! time are bound to the wrapping). Rotation adds a data key that seals from
//! [`ACTIVATION_MS`] later; every serving instance reloads the keys every [`REFRESH_MS`], so
//! all of them have it by then, and each seal takes the newest key whose time has come.
//! `koban keys rotate-personal` then rewrites every value under it ([`reseal`]). The
//! associated data of a sealed value names its column and key, so a value copied to another
//! column does not open. The blind-index key is derived from the master key and does not
//! rotate.
//!
//! A sealed value is text: `pd1.<key id>.<base64url(nonce ‖ ciphertext)>`.
//!
//! [`COLUMNS`] lists every sealed column. Every start seals what is still in clear in them
//! ([`seal_clear_columns`]: data an older version wrote), and both that and [`reseal`] work in
//! batches that write a row only if it still holds the value read, so they never undo a
//! change made meanwhile.

use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use koban_store::sql::{SqlDb, SqlTx};
use koban_store::{Clock, StoreError, params};
use rand::RngCore;
use sha2::Sha256;

/// How long after its creation a rotated data key starts sealing.
pub const ACTIVATION_MS: i64 = 60_000;
/// How often a serving process reloads the data keys.
pub const REFRESH_MS: i64 = 10_000;

const PREFIX: &str = "pd1";
const NONCE: usize = 24;
/// Rows read and written per transaction by the sealing passes.
const BATCH: i64 = 500;

/// Where a blind index is kept for equality lookups, and the kind of value it hashes (the
/// same address hashes the same in every column of one kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Index {
    Email,
    Phone,
}

impl Index {
    fn label(self) -> &'static [u8] {
        match self {
            Index::Email => b"koban/blind-index/email/v1",
            Index::Phone => b"koban/blind-index/phone/v1",
        }
    }
}

/// One column that holds personal data, sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub table: &'static str,
    pub column: &'static str,
    /// The blind-index column filled beside it, if lookups need one.
    pub index: Option<(&'static str, Index)>,
    /// The next batch of values in clear ($1: after this key, $2: how many).
    clear: &'static str,
    /// The next batch of sealed values not under one key ($1: `pd1.<key>.%`, $2: after this
    /// key, $3: how many).
    stale: &'static str,
    /// Writes one value ($1) and its blind index ($2, if any) by key, only if the row still
    /// holds the value read.
    swap: &'static str,
}

macro_rules! sealed_column {
    (@reads $table:literal, $key:literal, $column:literal) => {
        (
            concat!(
                "SELECT ", $key, ", ", $column, " FROM ", $table, " WHERE ", $column,
                " IS NOT NULL AND ", $column, " <> '' AND ", $column, " NOT LIKE 'pd1.%' AND ", $key,
                " > $1 ORDER BY ", $key, " LIMIT $2"
            ),
            concat!(
                "SELECT ", $key, ", ", $column, " FROM ", $table, " WHERE ", $column,
                " LIKE 'pd1.%' AND ", $column, " NOT LIKE $1 AND ", $key, " > $2 ORDER BY ",
                $key, " LIMIT $3"
            ),
        )
    };
    ($table:literal, $key:literal, $column:literal) => {
        Column {
            table: $table,
            column: $column,
            index: None,
            clear: sealed_column!(@reads $table, $key, $column).0,
            stale: sealed_column!(@reads $table, $key, $column).1,
            swap: concat!(
                "UPDATE ", $table, " SET ", $column, " = $1 WHERE ", $key, " = $2 AND ",
                $column, " = $3"
            ),
        }
    };
    ($table:literal, $key:literal, $column:literal, $index:literal, $kind:expr) => {
        Column {
            table: $table,
            column: $column,
            index: Some(($index, $kind)),
            clear: sealed_column!(@reads $table, $key, $column).0,
            stale: sealed_column!(@reads $table, $key, $column).1,
            swap: concat!(
                "UPDATE ", $table, " SET ", $column, " = $1, ", $index, " = $2 WHERE ", $key,
                " = $3 AND ", $column, " = $4"
            ),
        }
    };
}

pub const USER_EMAIL: Column = sealed_column!("users", "id", "email", "email_index", Index::Email);
pub const USER_PHONE: Column = sealed_column!("users", "id", "phone", "phone_index", Index::Phone);
pub const USER_DISPLAY_NAME: Column = sealed_column!("users", "id", "display_name");
pub const USER_LEGAL_NAME: Column = sealed_column!("users", "id", "legal_name");
pub const USER_DATE_OF_BIRTH: Column = sealed_column!("users", "id", "date_of_birth");
pub const KYC_LEGAL_NAME: Column = sealed_column!("kyc", "user_id", "legal_name");
/// The new address a change of e-mail sends its code to.
pub const CODE_TARGET: Column = sealed_column!("one_time_codes", "id", "target");
pub const OUTBOX_RECIPIENT: Column =
    sealed_column!("outbox", "id", "recipient", "recipient_index", Index::Email);
pub const OUTBOX_SUBJECT: Column = sealed_column!("outbox", "id", "subject");
pub const OUTBOX_BODY: Column = sealed_column!("outbox", "id", "body");
pub const MAILBOX_RECIPIENT: Column = sealed_column!(
    "mailbox",
    "id",
    "recipient",
    "recipient_index",
    Index::Email
);
pub const MAILBOX_SUBJECT: Column = sealed_column!("mailbox", "id", "subject");
pub const MAILBOX_BODY: Column = sealed_column!("mailbox", "id", "body");
pub const FUNDING_HOLDER: Column = sealed_column!("funding_sources", "id", "holder_name");
pub const SANDBOX_HOLDER: Column = sealed_column!("sandbox_bank_accounts", "number", "holder_name");
pub const INSTRUCTION_HOLDER: Column =
    sealed_column!("bank_instructions", "end_to_end_id", "holder_name");
/// A pain.001 file as made (it names every creditor).
pub const BANK_FILE_CONTENT: Column = sealed_column!("bank_files", "id", "content");
/// The payer or payee a bank statement line names.
pub const STATEMENT_COUNTERPARTY: Column =
    sealed_column!("bank_statement_lines", "id", "counterparty");

/// Every sealed column.
pub const COLUMNS: &[Column] = &[
    USER_EMAIL,
    USER_PHONE,
    USER_DISPLAY_NAME,
    USER_LEGAL_NAME,
    USER_DATE_OF_BIRTH,
    KYC_LEGAL_NAME,
    CODE_TARGET,
    OUTBOX_RECIPIENT,
    OUTBOX_SUBJECT,
    OUTBOX_BODY,
    MAILBOX_RECIPIENT,
    MAILBOX_SUBJECT,
    MAILBOX_BODY,
    FUNDING_HOLDER,
    SANDBOX_HOLDER,
    INSTRUCTION_HOLDER,
    BANK_FILE_CONTENT,
    STATEMENT_COUNTERPARTY,
];

struct DataKey {
    id: String,
    cipher: XChaCha20Poly1305,
    active_from_ms: i64,
}

/// Seals and opens personal data, and computes blind indexes. Cheap to clone; `Debug` never
/// prints a key.
#[derive(Clone)]
pub struct Vault {
    wrapping: Arc<XChaCha20Poly1305>,
    index_key: Arc<[u8; 32]>,
    /// Every data key loaded, oldest first.
    keys: Arc<RwLock<Vec<DataKey>>>,
    clock: Clock,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault(active {}, [redacted])", self.active_key_id())
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn associated(column: &Column, key_id: &str) -> Vec<u8> {
    format!(
        "koban/personal/v1/{}.{}/{key_id}",
        column.table, column.column
    )
    .into_bytes()
}

/// What a data key's wrapping is bound to: its id and when it starts sealing.
fn wrapping_associated(id: &str, active_from_ms: i64) -> Vec<u8> {
    format!("koban/personal-key/v1/{id}/{active_from_ms}").into_bytes()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn now_ms(clock: &Clock) -> i64 {
    i64::try_from(clock.now().nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The newest key whose time has come (by activation time, then creation order).
fn active_of(keys: &[DataKey], now_ms: i64) -> Option<&DataKey> {
    keys.iter()
        .enumerate()
        .filter(|(_, key)| key.active_from_ms <= now_ms)
        .max_by_key(|(i, key)| (key.active_from_ms, *i))
        .map(|(_, key)| key)
}

impl Vault {
    /// Loads the data keys from `db`, creating the first one on a new database.
    /// `wrapping_key` and `index_key` come from the master key. Fails (as corrupt data) when
    /// the stored keys do not open with `wrapping_key`: the database was set up with another
    /// master key.
    pub async fn load<D: SqlDb>(
        db: &D,
        wrapping_key: [u8; 32],
        index_key: [u8; 32],
        clock: Clock,
    ) -> Result<Vault, StoreError> {
        let wrapping = Arc::new(XChaCha20Poly1305::new(&wrapping_key.into()));
        let mut rows = read_keys(db).await?;
        if rows.is_empty() {
            let mut tx = db.begin().await?;
            let wrapped = wrap(&wrapping, "p1", 0, &random::<32>())?;
            tx.execute(
                "INSERT INTO personal_keys (id, wrapped, active_from, created_at) VALUES ('p1', $1, 0, $2) \
                 ON CONFLICT (id) DO NOTHING",
                params![wrapped, now_ms(&clock)],
            )
            .await?;
            tx.commit().await?;
            rows = read_keys(db).await?;
        }
        let vault = Vault {
            keys: Arc::new(RwLock::new(unwrap_all(&wrapping, rows)?)),
            wrapping,
            index_key: Arc::new(index_key),
            clock,
        };
        // Fails now, not at the first seal, when no key is active.
        vault.active_prefix()?;
        Ok(vault)
    }

    /// Reloads the data keys (a rotation by another instance or by `koban keys`).
    pub async fn refresh<D: SqlDb>(&self, db: &D) -> Result<(), StoreError> {
        let keys = unwrap_all(&self.wrapping, read_keys(db).await?)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }

    /// Adds a new data key that seals from `activation_ms` from now ([`ACTIVATION_MS`] when
    /// instances are serving: longer than they take to load it). Answers its id and when it
    /// starts sealing.
    pub async fn rotate<D: SqlDb>(
        &self,
        db: &D,
        activation_ms: i64,
    ) -> Result<(String, i64), StoreError> {
        for _ in 0..5 {
            let count = db
                .read("SELECT COUNT(*) FROM personal_keys", vec![])
                .await?
                .first()
                .map(|row| row.i64(0))
                .transpose()?
                .unwrap_or(0);
            let id = format!("p{}", count + 1);
            let now = now_ms(&self.clock);
            let active_from = now + activation_ms;
            let wrapped = wrap(&self.wrapping, &id, active_from, &random::<32>())?;
            let mut tx = db.begin().await?;
            let written = tx
                .execute(
                    "INSERT INTO personal_keys (id, wrapped, active_from, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (id) DO NOTHING",
                    params![id.as_str(), wrapped, active_from, now],
                )
                .await?;
            tx.commit().await?;
            if written == 1 {
                self.refresh(db).await?;
                return Ok((id, active_from));
            }
        }
        Err(StoreError::Conflict)
    }

    /// `pd1.<key>.`: how values sealed now begin.
    fn active_prefix(&self) -> Result<String, StoreError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        active_of(&keys, now_ms(&self.clock))
            .map(|key| format!("{PREFIX}.{}.", key.id))
            .ok_or_else(|| corrupt("no personal data key is active yet"))
    }

    /// The id of the data key that seals now.
    pub fn active_key_id(&self) -> String {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        active_of(&keys, now_ms(&self.clock)).map_or_else(String::new, |key| key.id.clone())
    }

    /// Seals `plain` for `column` under the data key that seals now.
    pub fn seal(&self, column: &Column, plain: &str) -> String {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        // `load` refused a vault without an active key, and keys are only ever added.
        let key = active_of(&keys, now_ms(&self.clock))
            .or_else(|| keys.first())
            .unwrap_or_else(|| unreachable!("a loaded vault has a key"));
        let nonce = random::<NONCE>();
        let sealed = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &associated(column, &key.id),
                },
            )
            // Encryption fails only for messages beyond 256 GiB.
            .unwrap_or_else(|_| unreachable!("XChaCha20-Poly1305 seals any text we store"));
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        format!("{PREFIX}.{}.{}", key.id, URL_SAFE_NO_PAD.encode(body))
    }

    /// Whether `sealed` names a data key this vault has loaded (false also for a value not
    /// sealed at all): a value under a key another instance just added opens once the keys
    /// are reloaded.
    pub fn knows_key(&self, sealed: &str) -> bool {
        let mut parts = sealed.splitn(3, '.');
        match (parts.next(), parts.next()) {
            (Some(PREFIX), Some(key_id)) => {
                let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
                keys.iter().any(|key| key.id == key_id)
            }
            _ => false,
        }
    }

    /// [`Vault::seal`] of an optional value.
    pub fn seal_opt(&self, column: &Column, plain: Option<&str>) -> Option<String> {
        plain.map(|plain| self.seal(column, plain))
    }

    /// Opens a value sealed for `column`.
    pub fn open(&self, column: &Column, sealed: &str) -> Result<String, StoreError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(PREFIX), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt("a personal data value is not sealed"));
        };
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| corrupt("a sealed personal data value is not base64"))?;
        if body.len() < NONCE {
            return Err(corrupt("a sealed personal data value is too short"));
        }
        let (nonce, ciphertext) = body.split_at(NONCE);
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = keys
            .iter()
            .find(|key| key.id == key_id)
            .ok_or_else(|| corrupt("a personal data value is sealed under a key not loaded"))?;
        let plain = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &associated(column, key_id),
                },
            )
            .map_err(|_| corrupt("a sealed personal data value does not open"))?;
        String::from_utf8(plain).map_err(|_| corrupt("an opened personal data value is not text"))
    }

    /// [`Vault::open`] of an optional value.
    pub fn open_opt(
        &self,
        column: &Column,
        sealed: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        sealed.map(|sealed| self.open(column, sealed)).transpose()
    }

    /// The blind index of `value` (already normalised: a lower-case address, an E.164 number).
    pub fn index(&self, kind: Index, value: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.index_key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(kind.label());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

fn wrap(
    wrapping: &XChaCha20Poly1305,
    id: &str,
    active_from_ms: i64,
    key: &[u8; 32],
) -> Result<Vec<u8>, StoreError> {
    let nonce = random::<NONCE>();
    let sealed = wrapping
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: key,
                aad: &wrapping_associated(id, active_from_ms),
            },
        )
        .map_err(|_| corrupt("a data key could not be wrapped"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

async fn read_keys<D: SqlDb>(db: &D) -> Result<Vec<(String, Vec<u8>, i64)>, StoreError> {
    db.read(
        "SELECT id, wrapped, active_from FROM personal_keys ORDER BY created_at, id",
        vec![],
    )
    .await?
    .iter()
    .map(|row| Ok((row.text(0)?, row.bytes(1)?, row.i64(2)?)))
    .collect()
}

fn unwrap_all(
    wrapping: &XChaCha20Poly1305,
    rows: Vec<(String, Vec<u8>, i64)>,
) -> Result<Vec<DataKey>, StoreError> {
    let mut all = Vec::with_capacity(rows.len());
    for (id, wrapped, active_from_ms) in rows {
        if wrapped.len() < NONCE {
            return Err(corrupt("a wrapped data key is too short"));
        }
        let (nonce, body) = wrapped.split_at(NONCE);
        let key = wrapping
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &wrapping_associated(&id, active_from_ms),
                },
            )
            .map_err(|_| {
                corrupt("the personal data keys do not open with this master key: give every instance the same key")
            })?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| corrupt("a data key is not 32 bytes"))?;
        all.push(DataKey {
            id,
            cipher: XChaCha20Poly1305::new(&key.into()),
            active_from_ms,
        });
    }
    Ok(all)
}

/// Seals what is still in clear in every sealed column (what an older version wrote), and
/// fills its blind index. Every start runs it; once everything is sealed it only reads.
/// Answers how many values it sealed.
pub async fn seal_clear_columns<D: SqlDb>(db: &D, vault: &Vault) -> Result<u64, StoreError> {
    let mut sealed = 0;
    for column in COLUMNS {
        sealed += rewrite_column(db, vault, column, Stored::Clear).await?;
    }
    Ok(sealed)
}

/// Seals again, under the key that seals now, every value sealed under an older one (after
/// a rotation). Answers how many values it rewrote.
pub async fn reseal<D: SqlDb>(db: &D, vault: &Vault) -> Result<u64, StoreError> {
    let mut rewritten = 0;
    for column in COLUMNS {
        rewritten += rewrite_column(db, vault, column, Stored::Sealed).await?;
    }
    Ok(rewritten)
}

/// Which values of a column [`rewrite_column`] rewrites.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// Values in clear (not beginning `pd1.`), taken as they are.
    Clear,
    /// Values sealed under another key than the one that seals now: opened first.
    Sealed,
}

/// Seals (again) the values of `column` that `which` picks, and fills the column's blind
/// index, in batches of [`BATCH`] rows per transaction in key order. A row is written only
/// if it still holds the value read, so a change made meanwhile (a new address, a delivered
/// notice) is never undone: it was sealed by whoever made it.
async fn rewrite_column<D: SqlDb>(
    db: &D,
    vault: &Vault,
    column: &Column,
    which: Stored,
) -> Result<u64, StoreError> {
    let mut count = 0;
    let mut after = String::new();
    loop {
        let mut tx = db.begin().await?;
        let rows = match which {
            Stored::Clear => {
                tx.query(column.clear, params![after.as_str(), BATCH])
                    .await?
            }
            Stored::Sealed => {
                let current = format!("{}%", vault.active_prefix()?);
                tx.query(column.stale, params![current, after.as_str(), BATCH])
                    .await?
            }
        };
        for row in &rows {
            let key = row.text(0)?;
            let stored = row.text(1)?;
            after.clone_from(&key);
            if stored.is_empty() {
                // A delivered notice's body, emptied: nothing to seal.
                continue;
            }
            let plain = match which {
                Stored::Clear => stored.clone(),
                Stored::Sealed => vault.open(column, &stored)?,
            };
            let mut values = params![vault.seal(column, &plain)];
            if let Some((_, kind)) = column.index {
                values.push(vault.index(kind, &plain).into());
            }
            values.push(key.into());
            values.push(stored.into());
            count += tx.execute(column.swap, values).await?;
        }
        tx.commit().await?;
        if (rows.len() as i64) < BATCH {
            return Ok(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use koban_store::ManualClock;

    fn vault_with(keys: &[(&str, i64)], now_ms: i64) -> (Vault, ManualClock) {
        let wrapping = XChaCha20Poly1305::new(&[1u8; 32].into());
        let rows = keys
            .iter()
            .map(|(id, from)| {
                (
                    (*id).to_owned(),
                    wrap(&wrapping, id, *from, &random::<32>()).unwrap(),
                    *from,
                )
            })
            .collect();
        let (clock, handle) = Clock::manual(koban_ledger::Timestamp::from_nanos(
            u64::try_from(now_ms).unwrap() * 1_000_000,
        ));
        let vault = Vault {
            keys: Arc::new(RwLock::new(unwrap_all(&wrapping, rows).unwrap())),
            wrapping: Arc::new(wrapping),
            index_key: Arc::new([2; 32]),
            clock,
        };
        (vault, handle)
    }

    #[test]
    fn a_sealed_value_opens_in_its_own_column_only() {
        let (vault, _) = vault_with(&[("p1", 0)], 10);
        let sealed = vault.seal(&USER_EMAIL, "hanako@example.jp");
        assert!(sealed.starts_with("pd1.p1."));
        assert!(!sealed.contains("hanako"));
        assert_eq!(
            vault.open(&USER_EMAIL, &sealed).unwrap(),
            "hanako@example.jp"
        );
        assert!(vault.open(&OUTBOX_RECIPIENT, &sealed).is_err());
        // Two seals of one value differ (random nonce); the blind index does not.
        assert_ne!(sealed, vault.seal(&USER_EMAIL, "hanako@example.jp"));
        assert_eq!(
            vault.index(Index::Email, "hanako@example.jp"),
            vault.index(Index::Email, "hanako@example.jp")
        );
        assert_ne!(
            vault.index(Index::Email, "hanako@example.jp"),
            vault.index(Index::Phone, "hanako@example.jp")
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(vault.open(&USER_EMAIL, &tampered).is_err());
        assert!(vault.open(&USER_EMAIL, "hanako@example.jp").is_err());
    }

    #[test]
    fn a_rotated_key_seals_from_its_time_and_older_values_still_open() {
        let (vault, clock) = vault_with(&[("p1", 0), ("p2", 1_000)], 999);
        assert_eq!(vault.active_key_id(), "p1");
        let old = vault.seal(&USER_PHONE, "+819012345678");
        assert!(old.starts_with("pd1.p1."));
        clock.advance_secs(1);
        assert_eq!(
            vault.active_key_id(),
            "p2",
            "chosen at each seal, by the clock"
        );
        let new = vault.seal(&USER_PHONE, "+819012345678");
        assert!(new.starts_with("pd1.p2."));
        assert_eq!(vault.open(&USER_PHONE, &old).unwrap(), "+819012345678");
        assert_eq!(vault.open(&USER_PHONE, &new).unwrap(), "+819012345678");
    }

    #[test]
    fn keys_wrapped_under_another_master_key_or_moved_are_refused() {
        let wrapping = XChaCha20Poly1305::new(&[1u8; 32].into());
        let other = XChaCha20Poly1305::new(&[3u8; 32].into());
        let rows = vec![(
            "p1".to_owned(),
            wrap(&wrapping, "p1", 0, &[5; 32]).unwrap(),
            0,
        )];
        assert!(unwrap_all(&other, rows.clone()).is_err());
        assert!(unwrap_all(&wrapping, rows).is_ok());
        // A wrapped key under another id, or with its activation time changed, does not open.
        let moved = vec![(
            "p2".to_owned(),
            wrap(&wrapping, "p1", 0, &[5; 32]).unwrap(),
            0,
        )];
        assert!(unwrap_all(&wrapping, moved).is_err());
        let hastened = vec![(
            "p2".to_owned(),
            wrap(&wrapping, "p2", 60_000, &[5; 32]).unwrap(),
            0,
        )];
        assert!(unwrap_all(&wrapping, hastened).is_err());
    }
}
