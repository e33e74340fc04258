//! A small, dialect-neutral way to run SQL in a transaction, for the parts of Koban that are
//! ordinary relational data (identity, sessions, throttling, outbox, audit chain) rather than
//! the ledger's hot path.
//!
//! The SQL text is written once, in the subset both SQLite and PostgreSQL accept: parameters
//! are `$1, $2, ...` numbered in order of first appearance, integers are `BIGINT`, booleans are
//! integers 0/1, times are integer milliseconds, `ON CONFLICT` and `RETURNING` are used freely.
//! Each backend crate implements [`SqlDb`] and owns the DDL of these tables in its migrations.

use std::future::Future;

use crate::StoreError;

/// One bound parameter or one column of a result row. Every variant carries its type even when
/// it is NULL, because PostgreSQL needs the type of a NULL parameter.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

// Values may be secret hashes or personal data: a Debug print shows only their shape.
impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "Int({})", if v.is_some() { "…" } else { "null" }),
            Value::Text(v) => write!(f, "Text({})", if v.is_some() { "…" } else { "null" }),
            Value::Bytes(v) => write!(f, "Bytes({})", if v.is_some() { "…" } else { "null" }),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(Some(v))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Value {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(Some(i64::from(v)))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(Some(v.to_owned()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(Some(v))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        Value::Text(v)
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Value {
        Value::Text(v.map(str::to_owned))
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(Some(v))
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Bytes(Some(v.to_vec()))
    }
}
impl<const N: usize> From<[u8; N]> for Value {
    fn from(v: [u8; N]) -> Value {
        Value::Bytes(Some(v.to_vec()))
    }
}
impl From<Option<Vec<u8>>> for Value {
    fn from(v: Option<Vec<u8>>) -> Value {
        Value::Bytes(v)
    }
}

/// Builds a parameter list: `params![a, b, c]`.
#[macro_export]
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        vec![$($crate::sql::Value::from($value)),*]
    };
}

/// One result row, read by column position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

fn shape(column: usize, expected: &'static str) -> StoreError {
    StoreError::Corrupt(format!("column {column} is not {expected}"))
}

impl Row {
    fn at(&self, column: usize) -> Result<&Value, StoreError> {
        self.0
            .get(column)
            .ok_or_else(|| StoreError::Corrupt(format!("row has no column {column}")))
    }

    pub fn opt_i64(&self, column: usize) -> Result<Option<i64>, StoreError> {
        match self.at(column)? {
            Value::Int(v) => Ok(*v),
            Value::Text(None) | Value::Bytes(None) => Ok(None),
            _ => Err(shape(column, "an integer")),
        }
    }

    pub fn i64(&self, column: usize) -> Result<i64, StoreError> {
        self.opt_i64(column)?
            .ok_or_else(|| shape(column, "a non-null integer"))
    }

    pub fn bool(&self, column: usize) -> Result<bool, StoreError> {
        Ok(self.i64(column)? != 0)
    }

    pub fn opt_text(&self, column: usize) -> Result<Option<String>, StoreError> {
        match self.at(column)? {
            Value::Text(v) => Ok(v.clone()),
            Value::Int(None) | Value::Bytes(None) => Ok(None),
            _ => Err(shape(column, "text")),
        }
    }

    pub fn text(&self, column: usize) -> Result<String, StoreError> {
        self.opt_text(column)?
            .ok_or_else(|| shape(column, "non-null text"))
    }

    pub fn opt_bytes(&self, column: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.at(column)? {
            Value::Bytes(v) => Ok(v.clone()),
            Value::Int(None) | Value::Text(None) => Ok(None),
            _ => Err(shape(column, "bytes")),
        }
    }

    pub fn bytes(&self, column: usize) -> Result<Vec<u8>, StoreError> {
        self.opt_bytes(column)?
            .ok_or_else(|| shape(column, "non-null bytes"))
    }
}

/// Named application locks, taken for the rest of a transaction. SQLite serialises every
/// writing transaction anyway; PostgreSQL takes a transaction-scoped advisory lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxLock {
    /// The audit chain: appending reads the last link and writes the next one.
    AuditChain,
}

impl TxLock {
    pub fn key(self) -> i64 {
        match self {
            TxLock::AuditChain => 0x006b_6f62_0a0d,
        }
    }
}

/// Locks every process serving from one database sees (see [`SqlDb::try_hold`]), released
/// when this is dropped. Holds nothing where one process serves the database.
#[derive(Default)]
pub struct Held {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Held {
    /// Locks that `release` gives back (it runs once, when the `Held` is dropped).
    pub fn releasing(release: impl FnOnce() + Send + Sync + 'static) -> Held {
        Held {
            release: Some(Box::new(release)),
        }
    }
}

impl Held {
    /// Drops this without giving anything back (the caller gave the locks back itself).
    pub fn disarm(mut self) {
        self.release = None;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// How long a lock of [`SqlDb::try_hold`] lasts when its holder never gives it back (its
/// process died): after this, another process may take it. A live holder renews it every
/// third of this. It bounds how long a crashed instance's wallets and idempotency keys stay
/// locked (a retry in the meantime answers 409 or 503 with Retry-After).
pub const HOLD_LEASE_S: i64 = 12;

/// A database that runs [`SqlTx`] transactions.
pub trait SqlDb: Clone + Send + Sync + 'static {
    type Tx: SqlTx;

    /// Takes every lock named in `keys` for all processes serving from this database, or none
    /// of them: `None` when another process holds one (the caller waits and asks again, or
    /// refuses); a set only partly taken is given back before `None` is answered. The caller
    /// must already hold its own process's lock of each key, so that within one process a key
    /// has one holder at a time; a process's later holder may then take over a key its earlier
    /// holder has not given back yet. The lease is renewed while the `Held` lives; a holder
    /// that never gives a key back (its process died) loses it after [`HOLD_LEASE_S`]. Where
    /// one process serves the database (SQLite), that process's own locks already exclude
    /// everyone, and this takes nothing.
    fn try_hold(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<Option<Held>, StoreError>> + Send;

    /// Starts a read-write transaction. Dropping it without `commit` rolls it back.
    fn begin(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;

    /// Starts a read-write transaction whose commit returns before the database has flushed
    /// it to disk (PostgreSQL: `synchronous_commit` off for it; SQLite: `synchronous=NORMAL`
    /// for it, in WAL mode). A commit it answered survives a crash of this process, since the
    /// database server (or the operating system) holds it, but not a crash of the database's
    /// machine before its next flush (PostgreSQL's WAL writer flushes within a fraction of a
    /// second; SQLite's next synchronous commit on the file flushes it). For records whose
    /// loss costs no money and which a retry can write again (notices, risk decisions).
    fn begin_unsynced(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;

    /// Starts a transaction that only reads (it must not write: on SQLite it does not take the
    /// write lock, so readers do not queue behind writers).
    fn begin_read(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;

    /// Runs one query that only reads, outside an explicit transaction where the backend
    /// allows it (one round trip on PostgreSQL instead of three): one statement sees one
    /// consistent snapshot anyway.
    fn read(
        &self,
        sql: &'static str,
        params: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>, StoreError>> + Send {
        async move {
            let mut tx = self.begin_read().await?;
            let rows = tx.query(sql, params).await?;
            tx.commit().await?;
            Ok(rows)
        }
    }
}

/// One open transaction.
pub trait SqlTx: Send {
    /// Runs a statement; returns how many rows it changed.
    fn execute(
        &mut self,
        sql: &'static str,
        params: Vec<Value>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Runs a query (or a statement with `RETURNING`) and returns every row.
    fn query(
        &mut self,
        sql: &'static str,
        params: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Row>, StoreError>> + Send;

    /// Takes `lock` until the transaction ends.
    fn lock(&mut self, lock: TxLock) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Conveniences on top of [`SqlTx`].
pub trait SqlTxExt: SqlTx {
    /// The first row, if any.
    fn query_opt(
        &mut self,
        sql: &'static str,
        params: Vec<Value>,
    ) -> impl Future<Output = Result<Option<Row>, StoreError>> + Send {
        async move { Ok(self.query(sql, params).await?.into_iter().next()) }
    }

    /// Exactly one row.
    fn query_one(
        &mut self,
        sql: &'static str,
        params: Vec<Value>,
    ) -> impl Future<Output = Result<Row, StoreError>> + Send {
        async move {
            self.query_opt(sql, params).await?.ok_or_else(|| {
                StoreError::Corrupt("a query that returns one row returned none".into())
            })
        }
    }
}

impl<T: SqlTx> SqlTxExt for T {}

/// Checks that a statement numbers its parameters `$1, $2, ...` in order of first appearance,
/// which is what lets SQLite (which numbers named parameters that way) and PostgreSQL read the
/// same text. Backends call it in debug builds and tests.
pub fn parameters_in_order(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let mut highest = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if let Ok(n) = sql[start..end].parse::<u32>() {
                if n > highest + 1 {
                    return false;
                }
                highest = highest.max(n);
            }
            i = end;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_order_is_checked() {
        assert!(parameters_in_order("SELECT $1, $2, $1, $3"));
        assert!(!parameters_in_order("SELECT $2, $1"));
        assert!(!parameters_in_order("SELECT $1, $3"));
    }

    #[test]
    fn rows_read_by_type_and_refuse_the_wrong_one() {
        let row = Row(params![
            7i64,
            "secret-value",
            vec![1u8, 2],
            Option::<i64>::None
        ]);
        assert_eq!(row.i64(0).unwrap(), 7);
        assert_eq!(row.text(1).unwrap(), "secret-value");
        assert_eq!(row.bytes(2).unwrap(), vec![1, 2]);
        assert_eq!(row.opt_i64(3).unwrap(), None);
        assert_eq!(row.opt_text(3).unwrap(), None);
        assert!(row.text(0).is_err());
        assert!(row.i64(3).is_err());
        assert!(!format!("{row:?}").contains("secret-value"));
    }
}
