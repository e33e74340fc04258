//! [`SqlDb`] on PostgreSQL: transactions from the store's pool, parameters bound by type,
//! result columns read back by their PostgreSQL type.

use koban_store::StoreError;
use koban_store::sql::{Row, SqlDb, SqlTx, TxLock, Value};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Column, PgPool, Postgres, Row as _, Transaction, TypeInfo};

use crate::sql::db_error;

#[derive(Clone)]
pub struct PgSql {
    pool: PgPool,
}

impl PgSql {
    pub(crate) fn new(pool: PgPool) -> PgSql {
        PgSql { pool }
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

    async fn begin_read(&self) -> Result<PgTx, StoreError> {
        self.begin().await
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
