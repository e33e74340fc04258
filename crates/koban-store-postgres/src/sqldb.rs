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
const TAKE_LOCKS: &str = "INSERT INTO instance_locks (key, instance, token, expires_at) \
     SELECT k, $2, $3, clock_timestamp() + make_interval(secs => $4) FROM UNNEST($1::bytea[]) AS k \
     ON CONFLICT (key) DO UPDATE SET instance = EXCLUDED.instance, token = EXCLUDED.token, \
     expires_at = EXCLUDED.expires_at \
     WHERE instance_locks.expires_at < clock_timestamp() OR instance_locks.instance = EXCLUDED.instance";
/// Gives back what one holder took (a key another holder took over since is not touched).
const GIVE_LOCKS: &str = "DELETE FROM instance_locks WHERE key = ANY($1) AND token = $2";

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

    async fn begin_read(&self) -> Result<PgTx, StoreError> {
        self.begin().await
    }

    async fn try_hold(&self, mut keys: Vec<Vec<u8>>) -> Result<Option<Held>, StoreError> {
        keys.sort_unstable();
        keys.dedup();
        let token: [u8; 16] = rand::random();
        let taken = sqlx::query(TAKE_LOCKS)
            .bind(&keys)
            .bind(self.instance.as_slice())
            .bind(token.as_slice())
            .bind(HOLD_LEASE_S as f64)
            .execute(&self.pool)
            .await
            .map_err(db_error)?
            .rows_affected();
        let pool = self.pool.clone();
        let count = keys.len();
        // Given back in a task of its own, since a drop cannot wait; without a runtime (the
        // process is ending) the lease runs out instead.
        let held = Held::releasing(move || {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let given = sqlx::query(GIVE_LOCKS)
                        .bind(&keys)
                        .bind(token.as_slice())
                        .execute(&pool)
                        .await;
                    if let Err(error) = given {
                        tracing::warn!(%error, "a lock was not given back; its lease will run out");
                    }
                });
            }
        });
        Ok((usize::try_from(taken).ok() == Some(count)).then_some(held))
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
