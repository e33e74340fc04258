//! Connections, migrations, and the SQL of the SQLite backend: plain synchronous functions
//! used by the writer thread and by the reader pool.

use std::path::Path;

use koban_ledger::{Account, AccountId, Hold, Transfer, TransferId};
use koban_store::StoreError;
use koban_store::audit::{AuditReport, Recompute};
use koban_store::rows::{AccountRow, HoldRow, TransferRow};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// Embedded migrations, applied in order, each once.
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
    // 11 is PostgreSQL's `instance_locks`: one process serves a SQLite file.
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

pub fn db_error(error: rusqlite::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

/// WAL pages past which a committing connection checkpoints by itself (SQLite's default is
/// 1,000): about 40 MB, reached only when the checkpointer thread has fallen behind.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Opens a connection with the durability settings the ledger relies on.
pub fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db_error)?;
    // WAL lets readers run beside the writer; synchronous=FULL fsyncs the WAL on every commit,
    // so an acknowledged transfer survives a crash of the process and of the machine.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(db_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "could not enable WAL mode (got {mode})"
        )));
    }
    // The store's checkpointer thread copies the WAL into the file every 100 ms; a commit
    // checkpoints by itself only past WAL_AUTOCHECKPOINT_PAGES (the checkpointer stalled).
    conn.execute_batch(&format!(
        "PRAGMA synchronous=FULL; PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES};"
    ))
    .map_err(db_error)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Applies every embedded migration not applied yet; returns how many it applied.
pub fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(db_error)?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let mut applied = 0;
    for (version, sql) in MIGRATIONS {
        let done: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_error)?;
        if done.is_none() {
            tx.execute_batch(sql).map_err(db_error)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, unixepoch())",
                [version],
            )
            .map_err(db_error)?;
            applied += 1;
        }
    }
    tx.commit().map_err(db_error)?;
    Ok(applied)
}

// Column lists as macros so every statement is one `&'static str` built at compile time:
// the statement cache is keyed by SQL text, and the writer runs several statements per transfer.
macro_rules! account_columns {
    () => {
        "id, currency, code, flags, debits_pending, debits_posted, credits_pending, \
         credits_posted, created_at, last_transfer, last_timestamp"
    };
}
macro_rules! transfer_columns {
    () => {
        "id, debit, credit, amount, currency, code, kind, pending_id, expires_at, \
         reference, metadata, timestamp, debit_prev, credit_prev, debit_balance, credit_balance"
    };
}
macro_rules! hold_columns {
    () => {
        "pending_id, debit, credit, amount, currency, code, expires_at, state"
    };
}

fn account_row(r: &Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        id: r.get(0)?,
        currency: r.get(1)?,
        code: r.get(2)?,
        flags: r.get(3)?,
        debits_pending: r.get(4)?,
        debits_posted: r.get(5)?,
        credits_pending: r.get(6)?,
        credits_posted: r.get(7)?,
        created_at: r.get(8)?,
        last_transfer: r.get(9)?,
        last_timestamp: r.get(10)?,
    })
}

fn transfer_row(r: &Row<'_>) -> rusqlite::Result<TransferRow> {
    Ok(TransferRow {
        id: r.get(0)?,
        debit: r.get(1)?,
        credit: r.get(2)?,
        amount: r.get(3)?,
        currency: r.get(4)?,
        code: r.get(5)?,
        kind: r.get(6)?,
        pending_id: r.get(7)?,
        expires_at: r.get(8)?,
        reference: r.get(9)?,
        metadata: r.get(10)?,
        timestamp: r.get(11)?,
        debit_prev: r.get(12)?,
        credit_prev: r.get(13)?,
        debit_balance: r.get(14)?,
        credit_balance: r.get(15)?,
    })
}

fn hold_row(r: &Row<'_>) -> rusqlite::Result<HoldRow> {
    Ok(HoldRow {
        pending_id: r.get(0)?,
        debit: r.get(1)?,
        credit: r.get(2)?,
        amount: r.get(3)?,
        currency: r.get(4)?,
        code: r.get(5)?,
        expires_at: r.get(6)?,
        state: r.get(7)?,
    })
}

pub fn account(conn: &Connection, id: AccountId) -> Result<Option<Account>, StoreError> {
    let sql = concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE id = ?1"
    );
    let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
    let row = stmt
        .query_row([&id.to_bytes()[..]], account_row)
        .optional()
        .map_err(db_error)?;
    row.map(AccountRow::into_account).transpose()
}

pub fn transfer(conn: &Connection, id: TransferId) -> Result<Option<Transfer>, StoreError> {
    let sql = concat!(
        "SELECT ",
        transfer_columns!(),
        " FROM transfers WHERE id = ?1"
    );
    let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
    let row = stmt
        .query_row([&id.to_bytes()[..]], transfer_row)
        .optional()
        .map_err(db_error)?;
    row.map(TransferRow::into_transfer).transpose()
}

pub fn hold(conn: &Connection, pending_id: TransferId) -> Result<Option<Hold>, StoreError> {
    let sql = concat!(
        "SELECT ",
        hold_columns!(),
        " FROM holds WHERE pending_id = ?1"
    );
    let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
    let row = stmt
        .query_row([&pending_id.to_bytes()[..]], hold_row)
        .optional()
        .map_err(db_error)?;
    row.map(HoldRow::into_hold).transpose()
}

pub fn transfer_present(conn: &Connection, id: TransferId) -> Result<bool, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT 1 FROM transfers WHERE id = ?1")
        .map_err(db_error)?;
    stmt.exists([&id.to_bytes()[..]]).map_err(db_error)
}

/// Pending holds whose timeout has passed, oldest first.
pub fn expired_holds(
    conn: &Connection,
    now: i64,
    limit: usize,
) -> Result<Vec<TransferId>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT pending_id FROM holds WHERE state = 0 AND expires_at IS NOT NULL AND expires_at <= ?1 \
             ORDER BY expires_at LIMIT ?2",
        )
        .map_err(db_error)?;
    let ids = stmt
        .query_map(params![now, limit], |r| r.get::<_, Vec<u8>>(0))
        .map_err(db_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_error)?;
    ids.iter()
        .map(|b| TransferId::from_bytes(b).map_err(|_| StoreError::Corrupt("hold id".into())))
        .collect()
}

pub fn upsert_account(conn: &Connection, account: &Account) -> Result<(), StoreError> {
    let r = AccountRow::from_account(account);
    let mut stmt = conn
        .prepare_cached(concat!(
            "INSERT INTO accounts (",
            account_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (id) DO UPDATE SET flags = excluded.flags, \
             debits_pending = excluded.debits_pending, debits_posted = excluded.debits_posted, \
             credits_pending = excluded.credits_pending, credits_posted = excluded.credits_posted, \
             last_transfer = excluded.last_transfer, last_timestamp = excluded.last_timestamp"
        ))
        .map_err(db_error)?;
    stmt.execute(params![
        r.id,
        r.currency,
        r.code,
        r.flags,
        r.debits_pending,
        r.debits_posted,
        r.credits_pending,
        r.credits_posted,
        r.created_at,
        r.last_transfer,
        r.last_timestamp
    ])
    .map_err(db_error)?;
    Ok(())
}

/// Writes an existing account's changing columns; false when there is no such account.
pub fn update_account(conn: &Connection, account: &Account) -> Result<bool, StoreError> {
    let r = AccountRow::from_account(account);
    let mut stmt = conn
        .prepare_cached(
            "UPDATE accounts SET flags = ?2, debits_pending = ?3, debits_posted = ?4, \
             credits_pending = ?5, credits_posted = ?6, last_transfer = ?7, last_timestamp = ?8 \
             WHERE id = ?1",
        )
        .map_err(db_error)?;
    let changed = stmt
        .execute(params![
            r.id,
            r.flags,
            r.debits_pending,
            r.debits_posted,
            r.credits_pending,
            r.credits_posted,
            r.last_transfer,
            r.last_timestamp
        ])
        .map_err(db_error)?;
    Ok(changed == 1)
}

/// This connection's view of the database's `data_version`: it changes when any other
/// connection commits.
pub fn data_version(conn: &Connection) -> Result<i64, StoreError> {
    let mut stmt = conn
        .prepare_cached("PRAGMA data_version")
        .map_err(db_error)?;
    stmt.query_row([], |r| r.get(0)).map_err(db_error)
}

pub fn insert_transfer(conn: &Connection, transfer: &Transfer) -> Result<(), StoreError> {
    let r = TransferRow::from_transfer(transfer);
    let mut stmt = conn
        .prepare_cached(concat!(
            "INSERT INTO transfers (",
            transfer_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ))
        .map_err(db_error)?;
    stmt.execute(params![
        r.id,
        r.debit,
        r.credit,
        r.amount,
        r.currency,
        r.code,
        r.kind,
        r.pending_id,
        r.expires_at,
        r.reference,
        r.metadata,
        r.timestamp,
        r.debit_prev,
        r.credit_prev,
        r.debit_balance,
        r.credit_balance
    ])
    .map_err(db_error)?;
    Ok(())
}

pub fn insert_hold(conn: &Connection, hold: &Hold) -> Result<(), StoreError> {
    let r = HoldRow::from_hold(hold);
    let mut stmt = conn
        .prepare_cached(concat!(
            "INSERT INTO holds (",
            hold_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))
        .map_err(db_error)?;
    stmt.execute(params![
        r.pending_id,
        r.debit,
        r.credit,
        r.amount,
        r.currency,
        r.code,
        r.expires_at,
        r.state
    ])
    .map_err(db_error)?;
    Ok(())
}

pub fn update_hold_state(conn: &Connection, hold: &Hold) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("UPDATE holds SET state = ?2 WHERE pending_id = ?1")
        .map_err(db_error)?;
    stmt.execute(params![
        &hold.pending_id.to_bytes()[..],
        hold.state.to_code()
    ])
    .map_err(db_error)?;
    Ok(())
}

/// Reads every account, transfer and hold back and checks the ledger's invariants.
pub fn audit(conn: &Connection) -> Result<AuditReport, StoreError> {
    let tx = conn.unchecked_transaction().map_err(db_error)?;
    let mut stmt = tx
        .prepare(concat!("SELECT ", account_columns!(), " FROM accounts"))
        .map_err(db_error)?;
    let accounts = stmt
        .query_map([], account_row)
        .map_err(db_error)?
        .map(|row| row.map_err(db_error).and_then(AccountRow::into_account))
        .collect::<Result<Vec<_>, _>>()?;
    let mut recompute = Recompute::default();
    let mut stmt = tx
        .prepare("SELECT debit, credit, amount, kind FROM transfers")
        .map_err(db_error)?;
    let mut rows = stmt.query([]).map_err(db_error)?;
    while let Some(r) = rows.next().map_err(db_error)? {
        let (debit, credit): (Vec<u8>, Vec<u8>) =
            (r.get(0).map_err(db_error)?, r.get(1).map_err(db_error)?);
        recompute.add_transfer(
            &debit,
            &credit,
            r.get(2).map_err(db_error)?,
            r.get(3).map_err(db_error)?,
        )?;
    }
    let mut stmt = tx
        .prepare("SELECT debit, credit, amount FROM holds WHERE state = 0")
        .map_err(db_error)?;
    let mut rows = stmt.query([]).map_err(db_error)?;
    while let Some(r) = rows.next().map_err(db_error)? {
        let (debit, credit): (Vec<u8>, Vec<u8>) =
            (r.get(0).map_err(db_error)?, r.get(1).map_err(db_error)?);
        recompute.add_pending_hold(&debit, &credit, r.get(2).map_err(db_error)?)?;
    }
    Ok(recompute.finish(&accounts))
}
