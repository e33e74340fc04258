//! [`SqlDb`] on SQLite for the service's ordinary relational data, on connections separate
//! from the ledger's writer and readers: one connection for read-write transactions (`BEGIN
//! IMMEDIATE`, so they are serialised with each other and with the ledger writer by SQLite's
//! own write lock), and a few for read-only ones, which WAL lets run beside the writers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use koban_store::StoreError;
use koban_store::sql::{Held, Row, SqlDb, SqlTx, TxLock, Value, parameters_in_order};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::db;

/// SQLite's errors as store errors; a database held too long by another writer is `Busy`
/// (retry shortly), not a failure.
fn db_error(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Busy
        }
        _ => db::db_error(error),
    }
}

/// Connections for read-only transactions.
const READERS: usize = 4;

#[derive(Clone)]
pub struct SqliteSql {
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Arc<Mutex<Connection>>>>,
    next_reader: Arc<AtomicUsize>,
}

impl SqliteSql {
    pub(crate) fn open(path: &Path) -> Result<SqliteSql, StoreError> {
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Arc::new(Mutex::new(db::connect(path)?)));
        }
        Ok(SqliteSql {
            conn: Arc::new(Mutex::new(db::connect(path)?)),
            readers: Arc::new(readers),
            next_reader: Arc::new(AtomicUsize::new(0)),
        })
    }
}

/// Runs blocking SQLite work without stalling other tasks on a multi-threaded runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

pub struct SqliteTx {
    conn: OwnedMutexGuard<Connection>,
    open: bool,
    /// Read-only transactions on a reader connection run their statements on the calling
    /// thread: point reads from the page cache cost less than handing the thread over.
    read_only: bool,
    /// Begun by `begin_unsynced`: the connection is set back to `synchronous=FULL` when it ends.
    unsynced: bool,
}

impl SqliteTx {
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.read_only { f() } else { blocking(f) }
    }
}

impl SqlDb for SqliteSql {
    type Tx = SqliteTx;

    async fn begin(&self) -> Result<SqliteTx, StoreError> {
        let conn = self.conn.clone().lock_owned().await;
        blocking(|| conn.execute_batch("BEGIN IMMEDIATE")).map_err(db_error)?;
        Ok(SqliteTx {
            conn,
            open: true,
            read_only: false,
            unsynced: false,
        })
    }

    async fn begin_unsynced(&self) -> Result<SqliteTx, StoreError> {
        let conn = self.conn.clone().lock_owned().await;
        // Per connection, outside a transaction; set back when the transaction ends.
        blocking(|| conn.execute_batch("PRAGMA synchronous=NORMAL; BEGIN IMMEDIATE")).map_err(
            |e| {
                let _ = conn.execute_batch("PRAGMA synchronous=FULL");
                db_error(e)
            },
        )?;
        Ok(SqliteTx {
            conn,
            open: true,
            read_only: false,
            unsynced: true,
        })
    }

    async fn begin_read(&self) -> Result<SqliteTx, StoreError> {
        let conn = self.reader().await;
        // A deferred transaction touches the file only at its first read.
        conn.execute_batch("BEGIN DEFERRED").map_err(db_error)?;
        Ok(SqliteTx {
            conn,
            open: true,
            read_only: true,
            unsynced: false,
        })
    }

    /// One process serves a SQLite database (`koban serve` locks the file for itself), so its
    /// own locks already exclude everyone.
    async fn try_hold(&self, _keys: Vec<Vec<u8>>) -> Result<Option<Held>, StoreError> {
        Ok(Some(Held::default()))
    }

    async fn read(&self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        debug_assert!(parameters_in_order(sql), "parameters out of order: {sql}");
        // One statement in autocommit mode reads one snapshot: no BEGIN and COMMIT needed.
        let conn = self.reader().await;
        rows_of(&conn, sql, params)
    }
}

/// Runs `sql` on `conn` and reads every row.
fn rows_of(conn: &Connection, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
    bind(&mut stmt, params)?;
    let columns = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_error)? {
        out.push(read_row(row, columns)?);
    }
    Ok(out)
}

impl SqliteSql {
    /// An idle reader connection if there is one, else the next in turn.
    async fn reader(&self) -> OwnedMutexGuard<Connection> {
        match self
            .readers
            .iter()
            .find_map(|r| r.clone().try_lock_owned().ok())
        {
            Some(conn) => conn,
            None => {
                let turn = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
                self.readers[turn].clone().lock_owned().await
            }
        }
    }
}

fn bind(stmt: &mut rusqlite::Statement<'_>, params: Vec<Value>) -> Result<(), StoreError> {
    if stmt.parameter_count() != params.len() {
        return Err(StoreError::Invalid(
            "statement parameters do not match the values given",
        ));
    }
    for (index, value) in params.into_iter().enumerate() {
        let position = index + 1;
        let result = match value {
            Value::Int(v) => stmt.raw_bind_parameter(position, v),
            Value::Text(v) => stmt.raw_bind_parameter(position, v),
            Value::Bytes(v) => stmt.raw_bind_parameter(position, v),
        };
        result.map_err(db_error)?;
    }
    Ok(())
}

fn read_row(row: &rusqlite::Row<'_>, columns: usize) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(columns);
    for column in 0..columns {
        values.push(match row.get_ref(column).map_err(db_error)? {
            ValueRef::Null => Value::Int(None),
            ValueRef::Integer(v) => Value::Int(Some(v)),
            ValueRef::Text(v) => {
                Value::Text(Some(String::from_utf8(v.to_vec()).map_err(|_| {
                    StoreError::Corrupt("text column is not UTF-8".into())
                })?))
            }
            ValueRef::Blob(v) => Value::Bytes(Some(v.to_vec())),
            ValueRef::Real(_) => {
                return Err(StoreError::Corrupt(
                    "unexpected floating-point column".into(),
                ));
            }
        });
    }
    Ok(Row(values))
}

impl SqlTx for SqliteTx {
    async fn execute(&mut self, sql: &'static str, params: Vec<Value>) -> Result<u64, StoreError> {
        debug_assert!(parameters_in_order(sql), "parameters out of order: {sql}");
        let conn = &*self.conn;
        self.run(|| {
            let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
            bind(&mut stmt, params)?;
            let changed = stmt.raw_execute().map_err(db_error)?;
            Ok(u64::try_from(changed).unwrap_or(u64::MAX))
        })
    }

    async fn query(
        &mut self,
        sql: &'static str,
        params: Vec<Value>,
    ) -> Result<Vec<Row>, StoreError> {
        debug_assert!(parameters_in_order(sql), "parameters out of order: {sql}");
        let conn = &*self.conn;
        self.run(|| rows_of(conn, sql, params))
    }

    async fn lock(&mut self, _lock: TxLock) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE already holds the database's only write lock.
        Ok(())
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        let conn = &*self.conn;
        self.run(|| conn.execute_batch("COMMIT"))
            .map_err(db_error)?;
        self.open = false;
        Ok(())
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if self.unsynced && self.conn.execute_batch("PRAGMA synchronous=FULL").is_err() {
            tracing::error!("the SQLite connection could not be set back to synchronous=FULL");
        }
    }
}
