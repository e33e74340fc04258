//! [`SqlDb`] on PostgreSQL: transactions from the store's pool, parameters bound by type,
//! result columns read back by their PostgreSQL type.

use koban_store::StoreError;
use koban_store::sql::{HOLD_LEASE_S, Held, Row, SqlDb, SqlTx, TxLock, Value};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Column, PgPool, Postgres, Row as _, Transaction, TypeInfo};

use crate::sql::db_error;

#[derive(Clone)]
pub struct PgSql {
    pool: PgPool,
    instance: [u8; 16],
}

impl PgSql {
    pub(crate) fn new(pool: PgPool, instance: [u8; 16]) -> PgSql {
        PgSql { pool, instance }
    }
}

/// Takes a key that is free, expired, or this process's own (an earlier holder here has not
/// given it back yet; the caller's process lock says it is done with it).
///
/// Every statement here locks rows in key order, or two holders of overlapping keys could each
/// wait for the other (PostgreSQL ends one as a deadlock): the insert goes through its keys in
/// order, and a release or renewal locks its rows in order (`ORDER BY key FOR UPDATE`) before
/// it changes them, where a plain `key = ANY($1)` would visit them in the order they lie on
/// disk.
const TAKE_LOCKS: &str = "INSERT INTO instance_locks (key, instance, token, expires_at) \
     SELECT k, $2, $3, clock_timestamp() + make_interval(secs => $4) FROM UNNEST($1::bytea[]) AS k ORDER BY k \
     ON CONFLICT (key) DO UPDATE SET instance = EXCLUDED.instance, token = EXCLUDED.token, \
     expires_at = EXCLUDED.expires_at \
     WHERE instance_locks.expires_at < clock_timestamp() OR instance_locks.instance = EXCLUDED.instance";
/// Gives back what one holder took (a key another holder took over since is not touched).
const GIVE_LOCKS: &str = "DELETE FROM instance_locks WHERE key IN \
     (SELECT key FROM instance_locks WHERE key = ANY($1) AND token = $2 ORDER BY key FOR UPDATE) \
     AND token = $2";
/// Extends a holder's lease while it still holds its keys.
const RENEW_LOCKS: &str = "UPDATE instance_locks SET expires_at = clock_timestamp() + make_interval(secs => $1) \
     WHERE key IN (SELECT key FROM instance_locks WHERE key = ANY($2) AND token = $3 ORDER BY key FOR UPDATE) \
     AND token = $3";

/// Keys asked for under one holder's `token`.
#[derive(Clone)]
struct Taken {
    pool: PgPool,
    keys: Vec<Vec<u8>>,
    token: [u8; 16],
}

impl Taken {
    /// Gives back what this holder took (a key another holder took over since is untouched).
    async fn give(&self) -> Result<(), sqlx::Error> {
        sqlx::query(GIVE_LOCKS)
            .bind(&self.keys)
            .bind(self.token.as_slice())
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// A guard that gives the keys back in a task of its own when dropped, since a drop
    /// cannot wait (without a runtime, as the process ends, the lease runs out instead), and
    /// stops `renewal` first.
    fn guard(self, renewal: Option<tokio::task::JoinHandle<()>>) -> Held {
        Held::releasing(move || {
            if let Some(renewal) = renewal {
                renewal.abort();
            }
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(error) = self.give().await {
                        tracing::warn!(%error, "a lock was not given back; its lease will run out");
                    }
                });
            }
        })
    }

    /// The guard of keys all taken: while it lives, a task renews their lease every third of
    /// it, so a holder slowed past the lease keeps its keys.
    fn held(self) -> Held {
        let renewal = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let taken = self.clone();
            runtime.spawn(async move {
                let every =
                    std::time::Duration::from_secs(u64::try_from(HOLD_LEASE_S / 3).unwrap_or(10));
                loop {
                    tokio::time::sleep(every).await;
                    let renewed = sqlx::query(RENEW_LOCKS)
                        .bind(HOLD_LEASE_S as f64)
                        .bind(&taken.keys)
                        .bind(taken.token.as_slice())
                        .execute(&taken.pool)
                        .await;
                    if let Err(error) = renewed {
                        tracing::warn!(%error, "a held lock could not be renewed; will retry");
                    }
                }
            })
        });
        self.guard(renewal)
    }
}

pub struct PgTx {
    tx: Transaction<'static, Postgres>,
}

impl SqlDb for PgSql {
    type Tx = PgTx;

    async fn begin(&self) -> Result<PgTx, StoreError> {
        Ok(PgTx {
            tx: self.pool.begin().await.map_err(db_error)?,
        })
    }

    async fn begin_unsynced(&self) -> Result<PgTx, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit TO OFF")
            .execute(&mut *tx.tx)
            .await
            .map_err(db_error)?;
        Ok(tx)
    }

    async fn begin_read(&self) -> Result<PgTx, StoreError> {
        self.begin().await
    }

    async fn try_hold(&self, mut keys: Vec<Vec<u8>>) -> Result<Option<Held>, StoreError> {
        keys.sort_unstable();
        keys.dedup();
        let count = keys.len();
        let taken = Taken {
            pool: self.pool.clone(),
            keys,
            token: rand::random(),
        };
        // A guard exists before the insert is sent, so a request dropped while it waits still
        // gives back whatever the insert took.
        let asking = taken.clone().guard(None);
        let rows = sqlx::query(TAKE_LOCKS)
            .bind(&taken.keys)
            .bind(self.instance.as_slice())
            .bind(taken.token.as_slice())
            .bind(HOLD_LEASE_S as f64)
            .execute(&self.pool)
            .await
            .map_err(db_error)?
            .rows_affected();
        asking.disarm();
        if usize::try_from(rows).ok() == Some(count) {
            return Ok(Some(taken.held()));
        }
        // Some may have been taken: given back now, before the caller asks again.
        taken.give().await.map_err(db_error)?;
        Ok(None)
    }

    async fn read(&self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        let rows = bound(sql, params)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(read_row).collect()
    }
}

fn bound(sql: &'static str, params: Vec<Value>) -> Query<'static, Postgres, PgArguments> {
    let mut query = sqlx::query(sql);
    for value in params {
        query = match value {
            Value::Int(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
            Value::Bytes(v) => query.bind(v),
        };
    }
    query
}

fn read_row(row: &PgRow) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(row.columns().len());
    for (index, column) in row.columns().iter().enumerate() {
        let value = match column.type_info().name() {
            "INT8" => Value::Int(row.try_get::<Option<i64>, _>(index).map_err(db_error)?),
            "INT4" => Value::Int(
                row.try_get::<Option<i32>, _>(index)
                    .map_err(db_error)?
                    .map(i64::from),
            ),
            "BOOL" => Value::Int(
                row.try_get::<Option<bool>, _>(index)
                    .map_err(db_error)?
                    .map(i64::from),
            ),
            "TEXT" | "VARCHAR" => Value::Text(row.try_get(index).map_err(db_error)?),
            "BYTEA" => Value::Bytes(row.try_get(index).map_err(db_error)?),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unexpected column type {other}"
                )));
            }
        };
        values.push(value);
    }
    Ok(Row(values))
}

impl SqlTx for PgTx {
    async fn execute(&mut self, sql: &'static str, params: Vec<Value>) -> Result<u64, StoreError> {
        let done = bound(sql, params)
            .execute(&mut *self.tx)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    async fn query(
        &mut self,
        sql: &'static str,
        params: Vec<Value>,
    ) -> Result<Vec<Row>, StoreError> {
        let rows = bound(sql, params)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(db_error)?;
        rows.iter().map(read_row).collect()
    }

    async fn lock(&mut self, lock: TxLock) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock.key())
            .execute(&mut *self.tx)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(db_error)
    }
}
