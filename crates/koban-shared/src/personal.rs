//! Personal data at rest: every column that holds a person's e-mail address, phone number,
//! name, date of birth or bank account holder, or a notice written to them, is sealed
//! ([`Vault::seal`]) before it is written and opened after it is read. Equality lookups (sign
//! in by e-mail, pay by phone, a mailbox by address) go through a keyed blind index
//! ([`Vault::index`]) instead of the value.
//!
//! Envelope keys: values are sealed with XChaCha20-Poly1305 under a **data key**; data keys
//! live in the database table `personal_keys`, each wrapped (sealed) under a key-encryption
//! key derived from the master key, which the database never holds. Rotation adds a data key
//! that becomes active [`ACTIVATION_MS`] later, by which time every instance has loaded it
//! ([`REFRESH_MS`]); `koban keys reseal` then rewrites every value under it. The associated
//! data of a sealed value names its column and key, so a value copied to another column does
//! not open. The blind-index key is derived from the master key and does not rotate.
//!
//! A sealed value is text: `pd1.<key id>.<base64url(nonce ‖ ciphertext)>`.
//!
//! [`COLUMNS`] lists every sealed column; data written in clear before sealing existed is
//! sealed once per column by [`seal_clear_columns`].

use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use koban_store::sql::{SqlDb, SqlTx};
use koban_store::{StoreError, params};
use rand::RngCore;
use sha2::Sha256;

/// How long after its creation a rotated data key starts sealing.
pub const ACTIVATION_MS: i64 = 60_000;
/// How often a serving process reloads the data keys.
pub const REFRESH_MS: i64 = 10_000;

const PREFIX: &str = "pd1";
const NONCE: usize = 24;

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
    /// Every value of the column with its row's key.
    select: &'static str,
    /// Writes one value (and its blind index) by key.
    update: &'static str,
}

macro_rules! sealed_column {
    ($table:literal, $key:literal, $column:literal) => {
        Column {
            table: $table,
            column: $column,
            index: None,
            select: concat!(
                "SELECT ",
                $key,
                ", ",
                $column,
                " FROM ",
                $table,
                " WHERE ",
                $column,
                " IS NOT NULL"
            ),
            update: concat!(
                "UPDATE ",
                $table,
                " SET ",
                $column,
                " = $1 WHERE ",
                $key,
                " = $2"
            ),
        }
    };
    ($table:literal, $key:literal, $column:literal, $index:literal, $kind:expr) => {
        Column {
            table: $table,
            column: $column,
            index: Some(($index, $kind)),
            select: concat!(
                "SELECT ",
                $key,
                ", ",
                $column,
                " FROM ",
                $table,
                " WHERE ",
                $column,
                " IS NOT NULL"
            ),
            update: concat!(
                "UPDATE ",
                $table,
                " SET ",
                $column,
                " = $1, ",
                $index,
                " = $2 WHERE ",
                $key,
                " = $3"
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

struct Keys {
    /// Oldest first.
    all: Vec<DataKey>,
    /// Index into `all` of the key that seals.
    active: usize,
}

/// Seals and opens personal data, and computes blind indexes. Cheap to clone; `Debug` never
/// prints a key.
#[derive(Clone)]
pub struct Vault {
    wrapping: Arc<XChaCha20Poly1305>,
    index_key: Arc<[u8; 32]>,
    keys: Arc<RwLock<Keys>>,
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

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
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
        now_ms: i64,
    ) -> Result<Vault, StoreError> {
        let wrapping = Arc::new(XChaCha20Poly1305::new(&wrapping_key.into()));
        let rows = read_keys(db).await?;
        let rows = if rows.is_empty() {
            let mut tx = db.begin().await?;
            let wrapped = wrap(&wrapping, "p1", &random::<32>())?;
            tx.execute(
                "INSERT INTO personal_keys (id, wrapped, active_from, created_at) VALUES ('p1', $1, 0, $2) \
                 ON CONFLICT (id) DO NOTHING",
                params![wrapped, now_ms],
            )
            .await?;
            tx.commit().await?;
            read_keys(db).await?
        } else {
            rows
        };
        let keys = unwrap_all(&wrapping, rows, now_ms)?;
        Ok(Vault {
            wrapping,
            index_key: Arc::new(index_key),
            keys: Arc::new(RwLock::new(keys)),
        })
    }

    /// Reloads the data keys (a rotation by another instance or by `koban keys`), and seals
    /// from then on with the newest key whose activation time has come.
    pub async fn refresh<D: SqlDb>(&self, db: &D, now_ms: i64) -> Result<(), StoreError> {
        let rows = read_keys(db).await?;
        let keys = unwrap_all(&self.wrapping, rows, now_ms)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }

    /// Adds a new data key, active `activation_ms` after `now_ms` ([`ACTIVATION_MS`] when
    /// instances are serving: longer than they take to load it). Answers its id and when it
    /// becomes active.
    pub async fn rotate<D: SqlDb>(
        &self,
        db: &D,
        now_ms: i64,
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
            let wrapped = wrap(&self.wrapping, &id, &random::<32>())?;
            let mut tx = db.begin().await?;
            let written = tx
                .execute(
                    "INSERT INTO personal_keys (id, wrapped, active_from, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (id) DO NOTHING",
                    params![id.as_str(), wrapped, now_ms + activation_ms, now_ms],
                )
                .await?;
            tx.commit().await?;
            if written == 1 {
                self.refresh(db, now_ms).await?;
                return Ok((id, now_ms + activation_ms));
            }
        }
        Err(StoreError::Conflict)
    }

    /// The id of the data key that seals now.
    pub fn active_key_id(&self) -> String {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.all[keys.active].id.clone()
    }

    /// Seals `plain` for `column` under the active data key.
    pub fn seal(&self, column: &Column, plain: &str) -> String {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = &keys.all[keys.active];
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
            .all
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

    /// Whether `stored` is sealed under the active data key.
    fn sealed_under_active(&self, stored: &str) -> bool {
        let active = self.active_key_id();
        stored
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_prefix(active.as_str()))
            .is_some_and(|rest| rest.starts_with('.'))
    }
}

fn wrap(wrapping: &XChaCha20Poly1305, id: &str, key: &[u8; 32]) -> Result<Vec<u8>, StoreError> {
    let nonce = random::<NONCE>();
    let sealed = wrapping
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: key,
                aad: format!("koban/personal-key/v1/{id}").as_bytes(),
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
    now_ms: i64,
) -> Result<Keys, StoreError> {
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
                    aad: format!("koban/personal-key/v1/{id}").as_bytes(),
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
    let active = all
        .iter()
        .enumerate()
        .filter(|(_, key)| key.active_from_ms <= now_ms)
        .max_by_key(|(i, key)| (key.active_from_ms, *i))
        .map(|(i, _)| i)
        .ok_or_else(|| corrupt("no personal data key is active yet"))?;
    Ok(Keys { all, active })
}

/// Seals every value of `column` written in clear before sealing existed, and fills its blind
/// index, once per column and database: the first process to start after the upgrade does
/// it in one transaction per column; later ones find it done. Answers how many values it
/// sealed.
pub async fn seal_clear_columns<D: SqlDb>(
    db: &D,
    vault: &Vault,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let mut sealed = 0;
    for column in COLUMNS {
        let mut tx = db.begin().await?;
        let name = format!("{}.{}", column.table, column.column);
        let first = tx
            .execute(
                "INSERT INTO personal_sealing (name, done_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                params![name.as_str(), now_ms],
            )
            .await?;
        if first == 1 {
            sealed += rewrite_column(&mut tx, vault, column, Stored::Clear).await?;
        }
        tx.commit().await?;
    }
    Ok(sealed)
}

/// Rewrites every sealed value not sealed under the active data key (after a rotation), in
/// one transaction per column. Answers how many values it rewrote.
pub async fn reseal<D: SqlDb>(db: &D, vault: &Vault) -> Result<u64, StoreError> {
    let mut rewritten = 0;
    for column in COLUMNS {
        let mut tx = db.begin().await?;
        rewritten += rewrite_column(&mut tx, vault, column, Stored::Sealed).await?;
        tx.commit().await?;
    }
    Ok(rewritten)
}

/// How the values of a column are stored before [`rewrite_column`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// Written before sealing existed: every value is taken as it is.
    Clear,
    /// Sealed: values not under the active key are opened and sealed again.
    Sealed,
}

/// Seals every value of `column` in clear, or seals again every value not under the active
/// key, and fills the column's blind index.
async fn rewrite_column<T: SqlTx>(
    tx: &mut T,
    vault: &Vault,
    column: &Column,
    stored_as: Stored,
) -> Result<u64, StoreError> {
    let rows = tx.query(column.select, vec![]).await?;
    let mut count = 0;
    for row in rows {
        let id = row.text(0)?;
        let stored = row.text(1)?;
        if stored.is_empty() {
            // A delivered notice's body, emptied: nothing to seal.
            continue;
        }
        let plain = match stored_as {
            Stored::Clear => stored,
            Stored::Sealed if vault.sealed_under_active(&stored) => continue,
            Stored::Sealed => vault.open(column, &stored)?,
        };
        let resealed = vault.seal(column, &plain);
        let mut values = params![resealed];
        if let Some((_, kind)) = column.index {
            values.push(vault.index(kind, &plain).into());
        }
        values.push(id.into());
        tx.execute(column.update, values).await?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault_with(keys: Vec<(&str, i64)>, now_ms: i64) -> Vault {
        let wrapping = XChaCha20Poly1305::new(&[1u8; 32].into());
        let rows = keys
            .into_iter()
            .map(|(id, from)| {
                (
                    id.to_owned(),
                    wrap(&wrapping, id, &random::<32>()).unwrap(),
                    from,
                )
            })
            .collect();
        Vault {
            keys: Arc::new(RwLock::new(unwrap_all(&wrapping, rows, now_ms).unwrap())),
            wrapping: Arc::new(wrapping),
            index_key: Arc::new([2; 32]),
        }
    }

    #[test]
    fn a_sealed_value_opens_in_its_own_column_only() {
        let vault = vault_with(vec![("p1", 0)], 10);
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
    fn a_rotated_key_seals_only_once_active_and_old_values_still_open() {
        let before = vault_with(vec![("p1", 0), ("p2", 1_000)], 999);
        assert_eq!(before.active_key_id(), "p1");
        let old = before.seal(&USER_PHONE, "+819012345678");
        let after = Vault {
            keys: Arc::new(RwLock::new(
                unwrap_all(
                    &before.wrapping,
                    vec![
                        (
                            "p1".into(),
                            wrap(&before.wrapping, "p1", &[0; 32]).unwrap(),
                            0,
                        ),
                        (
                            "p2".into(),
                            wrap(&before.wrapping, "p2", &[0; 32]).unwrap(),
                            1_000,
                        ),
                    ],
                    1_000,
                )
                .unwrap(),
            )),
            ..before.clone()
        };
        assert_eq!(after.active_key_id(), "p2");
        assert!(after.seal(&USER_PHONE, "x").starts_with("pd1.p2."));
        assert!(after.sealed_under_active(&after.seal(&USER_PHONE, "x")));
        assert!(!after.sealed_under_active(&old));
        assert!(before.sealed_under_active(&old));
    }

    #[test]
    fn keys_wrapped_under_another_master_key_are_refused() {
        let wrapping = XChaCha20Poly1305::new(&[1u8; 32].into());
        let other = XChaCha20Poly1305::new(&[3u8; 32].into());
        let rows = vec![("p1".to_owned(), wrap(&wrapping, "p1", &[5; 32]).unwrap(), 0)];
        assert!(unwrap_all(&other, rows.clone(), 0).is_err());
        assert!(unwrap_all(&wrapping, rows, 0).is_ok());
        // A key id moved to another row's wrapping does not open either.
        let moved = vec![("p2".to_owned(), wrap(&wrapping, "p1", &[5; 32]).unwrap(), 0)];
        assert!(unwrap_all(&wrapping, moved, 0).is_err());
    }
}
