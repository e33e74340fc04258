//! The PostgreSQL backend of the Koban ledger, safe with many `koban` processes writing to the
//! same database.
//!
//! Each process has one committer task that gathers queued batches into a group and commits
//! the group in one transaction: it locks every account the group touches with
//! `SELECT ... ORDER BY id FOR UPDATE` (a fixed order, so writers never deadlock on accounts),
//! reads holds and existing transfers after taking the locks, decides in memory with the ledger
//! core, and writes with one UNNEST statement per table. A race the locks cannot order (the same
//! new transfer id from two processes) aborts the transaction, which is retried.
//!
//! Architecture invariant: balances are only written by a transaction that holds the row locks
//! of every account it writes.

mod committer;
mod sql;
mod sqldb;

pub use sqldb::{PgSql, PgTx};

use std::collections::HashMap;
use std::str::FromStr;

use futures_util::TryStreamExt;
use koban_ledger::{
    Account, AccountId, AccountRejection, Balance, NewAccount, StateChange, StateChangeRejection,
    Timestamp, Transfer, TransferId, TransferRequest,
};
use koban_store::audit::Recompute;
use koban_store::queue::{JobQueue, QueueConfig, job_queue};
use koban_store::rows::ts_to_i64;
use koban_store::{AuditReport, Clock, LedgerStore, Page, PageRequest, StoreError, SubmitResult};
pub use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, Row};

use crate::sql::{ACCOUNT_COLUMNS, TRANSFER_COLUMNS, db_error};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_ledger.sql")),
    (2, include_str!("../migrations/0002_identity.sql")),
    (3, include_str!("../migrations/0003_payments.sql")),
    (4, include_str!("../migrations/0004_cards.sql")),
    (5, include_str!("../migrations/0005_risk.sql")),
    (6, include_str!("../migrations/0006_notices.sql")),
    (7, include_str!("../migrations/0007_languages.sql")),
    (8, include_str!("../migrations/0008_merchant_payments.sql")),
    (9, include_str!("../migrations/0009_loss_claims.sql")),
    (10, include_str!("../migrations/0010_audit_checkpoints.sql")),
    (11, include_str!("../migrations/0011_instance_locks.sql")),
    (12, include_str!("../migrations/0012_risk_rule_sets.sql")),
    (13, include_str!("../migrations/0013_card_testing.sql")),
    (14, include_str!("../migrations/0014_leases.sql")),
    (
        15,
        include_str!("../migrations/0015_webhook_last_error.sql"),
    ),
    (16, include_str!("../migrations/0016_bank_files.sql")),
    (17, include_str!("../migrations/0017_personal_data.sql")),
    (18, include_str!("../migrations/0018_retention.sql")),
    (19, include_str!("../migrations/0019_offline.sql")),
];
/// The advisory lock that serialises migrations across processes.
const MIGRATION_LOCK_KEY: i64 = 0x006b_6f62_616e;
/// Ids per `= ANY($1)` query when counting many transfers.
const IDS_PER_QUERY_MAX: usize = 10_000;

#[derive(Clone, Debug)]
pub struct PgConfig {
    pub queue: QueueConfig,
    pub clock: Clock,
    /// A schema to create (if missing) and use instead of the default search path; tests and
    /// benchmarks use a fresh one each.
    pub schema: Option<String>,
    pub connections_max: u32,
    /// How long a request waits for a connection (the database unreachable, or every
    /// connection busy) before it is answered as unavailable.
    pub acquire_timeout: std::time::Duration,
}

impl Default for PgConfig {
    fn default() -> PgConfig {
        PgConfig {
            queue: QueueConfig::default(),
            clock: Clock::system(),
            schema: None,
            connections_max: 16,
            acquire_timeout: std::time::Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    queue: JobQueue,
    /// This process's name in `instance_locks` (see [`SqlDb::try_hold`]).
    instance: [u8; 16],
}

fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "schema names are 1-63 of a-z, 0-9, _ and start with a letter",
        ))
    }
}

/// Connects a pool (creating the configured schema if needed) without migrating.
pub async fn connect_pool(url: &str, config: &PgConfig) -> Result<PgPool, StoreError> {
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::Invalid("malformed PostgreSQL URL"))?;
    if let Some(schema) = &config.schema {
        check_schema_name(schema)?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(db_error)?;
        admin
            .execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
            .await
            .map_err(db_error)?;
        admin.close().await;
        options = options.options([("search_path", schema.as_str())]);
    }
    // Durability must not depend on the server's defaults: every commit waits for its WAL
    // flush. Bounded waits keep a stuck lock or a stalled connection from hanging writers
    // forever; a lock wait that times out is retried as a conflict.
    options = options.options([
        ("synchronous_commit", "on"),
        ("lock_timeout", "5s"),
        ("statement_timeout", "30s"),
        ("idle_in_transaction_session_timeout", "60s"),
    ]);
    PgPoolOptions::new()
        .max_connections(config.connections_max.max(2))
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(db_error)
}

/// Applies every embedded migration not applied yet, under an advisory lock so that several
/// processes starting at once apply each migration exactly once.
pub async fn migrate(pool: &PgPool) -> Result<usize, StoreError> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        .await
        .map_err(db_error)?;
    let mut applied = 0;
    for (version, migration) in MIGRATIONS {
        let done = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if done.is_none() {
            sqlx::raw_sql(migration)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            applied += 1;
        }
    }
    tx.commit().await.map_err(db_error)?;
    Ok(applied)
}

/// Drops a schema made for a test or benchmark, with everything in it.
pub async fn drop_schema(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
    check_schema_name(schema)?;
    pool.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
        .await
        .map_err(db_error)?;
    Ok(())
}

impl PgStore {
    /// Connects, applies migrations, and starts this process's committer task.
    pub async fn connect(url: &str, config: PgConfig) -> Result<PgStore, StoreError> {
        let pool = connect_pool(url, &config).await?;
        migrate(&pool).await?;
        let (queue, receiver) = job_queue(config.queue);
        let committer = committer::Committer {
            pool: pool.clone(),
            clock: config.clock,
            receiver,
        };
        tokio::spawn(committer.run());
        Ok(PgStore {
            pool,
            queue,
            instance: rand::random(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Fetches the chain of `account` from `start`, following the account's side of each
    /// transfer, while `more` holds for the transfer just read, in one recursive query.
    async fn chain(
        &self,
        account: AccountId,
        start: TransferId,
        stop_condition: &str,
        bind: i64,
    ) -> Result<HashMap<TransferId, Transfer>, StoreError> {
        let query = format!(
            "WITH RECURSIVE chain(id, n) AS ( \
               SELECT $1::bytea, 1 \
               UNION ALL \
               SELECT CASE WHEN t.debit = $2 THEN t.debit_prev ELSE t.credit_prev END, chain.n + 1 \
               FROM chain JOIN transfers t ON t.id = chain.id \
               WHERE (t.debit = $2 OR t.credit = $2) AND {stop_condition} \
             ) SELECT {} FROM chain JOIN transfers t ON t.id = chain.id",
            TRANSFER_COLUMNS
                .split(", ")
                .map(|c| format!("t.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = sqlx::query(&query)
            .bind(start.to_bytes().to_vec())
            .bind(account.to_bytes().to_vec())
            .bind(bind)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| sql::to_transfer(r).map(|t| (t.id, t)))
            .collect()
    }
}

impl LedgerStore for PgStore {
    type Sql = PgSql;

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn sql(&self) -> PgSql {
        PgSql::new(self.pool.clone(), self.instance)
    }

    async fn create_accounts(
        &self,
        accounts: Vec<NewAccount>,
    ) -> Result<Vec<Result<Account, AccountRejection>>, StoreError> {
        self.queue.create_accounts(accounts).await
    }

    async fn change_account_state(
        &self,
        id: AccountId,
        change: StateChange,
    ) -> Result<Result<Account, StateChangeRejection>, StoreError> {
        self.queue.change_account_state(id, change).await
    }

    async fn submit(&self, batch: Vec<TransferRequest>) -> SubmitResult {
        self.queue.submit(batch).await
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
        ))
        .bind(id.to_bytes().to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(sql::to_account).transpose()
    }

    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = $1"
        ))
        .bind(id.to_bytes().to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(sql::to_transfer).transpose()
    }

    async fn account_transfers(
        &self,
        id: AccountId,
        page: PageRequest,
    ) -> Result<Option<Page>, StoreError> {
        let Some(account) = self.account(id).await? else {
            return Ok(None);
        };
        let Some(start) = page.cursor.or(account.last_transfer) else {
            return Ok(Some(Page {
                transfers: Vec::new(),
                next_cursor: None,
            }));
        };
        let limit = i64::try_from(page.limit()).unwrap_or(i64::MAX);
        let chain = self.chain(id, start, "chain.n < $3", limit).await?;
        koban_store::history::page(id, Some(start), page.limit(), |t| {
            Ok(chain.get(&t).cloned())
        })
        .map(Some)
    }

    async fn balance_at(
        &self,
        id: AccountId,
        at: Timestamp,
    ) -> Result<Option<Balance>, StoreError> {
        let Some(account) = self.account(id).await? else {
            return Ok(None);
        };
        let chain = match account.last_transfer {
            Some(start) => {
                self.chain(id, start, "t.timestamp > $3", ts_to_i64(at))
                    .await?
            }
            None => HashMap::new(),
        };
        koban_store::history::balance_at(&account, at, |t| Ok(chain.get(&t).cloned()))
    }

    async fn expire_holds(&self, limit: usize) -> Result<usize, StoreError> {
        self.queue.expire_holds(limit).await
    }

    async fn count_transfers_present(&self, ids: Vec<TransferId>) -> Result<u64, StoreError> {
        let mut present = 0u64;
        for chunk in ids.chunks(IDS_PER_QUERY_MAX) {
            let bytes: Vec<Vec<u8>> = chunk.iter().map(|id| id.to_bytes().to_vec()).collect();
            let count: i64 = sqlx::query("SELECT count(*) FROM transfers WHERE id = ANY($1)")
                .bind(bytes)
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?
                .try_get(0)
                .map_err(db_error)?;
            present += u64::try_from(count).unwrap_or(0);
        }
        Ok(present)
    }

    async fn audit(&self) -> Result<AuditReport, StoreError> {
        // One REPEATABLE READ snapshot, so accounts, transfers and holds agree with each other.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db_error)?;
        // A full read of a large ledger may take longer than the service's statement timeout.
        tx.execute("SET LOCAL statement_timeout = 0")
            .await
            .map_err(db_error)?;
        let accounts = sqlx::query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts"))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?
            .iter()
            .map(sql::to_account)
            .collect::<Result<Vec<_>, _>>()?;
        let mut recompute = Recompute::default();
        {
            let mut rows =
                sqlx::query("SELECT debit, credit, amount, kind FROM transfers").fetch(&mut *tx);
            while let Some(r) = rows.try_next().await.map_err(db_error)? {
                let (debit, credit): (Vec<u8>, Vec<u8>) = (
                    r.try_get(0).map_err(db_error)?,
                    r.try_get(1).map_err(db_error)?,
                );
                recompute.add_transfer(
                    &debit,
                    &credit,
                    r.try_get(2).map_err(db_error)?,
                    r.try_get(3).map_err(db_error)?,
                )?;
            }
        }
        {
            let mut rows = sqlx::query("SELECT debit, credit, amount FROM holds WHERE state = 0")
                .fetch(&mut *tx);
            while let Some(r) = rows.try_next().await.map_err(db_error)? {
                let (debit, credit): (Vec<u8>, Vec<u8>) = (
                    r.try_get(0).map_err(db_error)?,
                    r.try_get(1).map_err(db_error)?,
                );
                recompute.add_pending_hold(&debit, &credit, r.try_get(2).map_err(db_error)?)?;
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(recompute.finish(&accounts))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if !self.queue.is_open() {
            return Err(StoreError::ShuttingDown);
        }
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn shutdown(&self) {
        self.queue.shutdown().await;
    }
}
