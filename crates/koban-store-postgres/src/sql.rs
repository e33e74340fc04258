//! Row mapping and bulk statements of the PostgreSQL backend. Bulk writes bind one array per
//! column and expand them with UNNEST, so a whole group is one statement per table.

use koban_ledger::{Account, Hold, Transfer};
use koban_store::StoreError;
use koban_store::rows::{AccountRow, HoldRow, TransferRow};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

/// One column of `rows` as a vector, to bind as an array parameter.
macro_rules! col {
    ($rows:ident . $field:ident) => {
        $rows.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()
    };
}

/// Maps a database error; races between writers (unique violation, deadlock, serialization
/// failure, lock timeout) become the retryable [`StoreError::Conflict`].
pub fn db_error(error: sqlx::Error) -> StoreError {
    if matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    ) {
        return StoreError::Unavailable;
    }
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    match code.as_deref() {
        Some("23505" | "40P01" | "40001" | "55P03") => StoreError::Conflict,
        // Connection exceptions, and the server shutting down, crashing or still starting.
        Some(code) if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") => {
            StoreError::Unavailable
        }
        _ => StoreError::Database(error.to_string()),
    }
}

pub const ACCOUNT_COLUMNS: &str = "id, currency, code, flags, debits_pending, debits_posted, credits_pending, \
     credits_posted, created_at, last_transfer, last_timestamp";
pub const TRANSFER_COLUMNS: &str = "id, debit, credit, amount, currency, code, kind, pending_id, expires_at, \
     reference, metadata, timestamp, debit_prev, credit_prev, debit_balance, credit_balance";
pub const HOLD_COLUMNS: &str =
    "pending_id, debit, credit, amount, currency, code, expires_at, state";

pub fn account_row(r: &PgRow) -> Result<AccountRow, sqlx::Error> {
    Ok(AccountRow {
        id: r.try_get(0)?,
        currency: r.try_get(1)?,
        code: r.try_get(2)?,
        flags: r.try_get(3)?,
        debits_pending: r.try_get(4)?,
        debits_posted: r.try_get(5)?,
        credits_pending: r.try_get(6)?,
        credits_posted: r.try_get(7)?,
        created_at: r.try_get(8)?,
        last_transfer: r.try_get(9)?,
        last_timestamp: r.try_get(10)?,
    })
}

pub fn transfer_row(r: &PgRow) -> Result<TransferRow, sqlx::Error> {
    Ok(TransferRow {
        id: r.try_get(0)?,
        debit: r.try_get(1)?,
        credit: r.try_get(2)?,
        amount: r.try_get(3)?,
        currency: r.try_get(4)?,
        code: r.try_get(5)?,
        kind: r.try_get(6)?,
        pending_id: r.try_get(7)?,
        expires_at: r.try_get(8)?,
        reference: r.try_get(9)?,
        metadata: r.try_get(10)?,
        timestamp: r.try_get(11)?,
        debit_prev: r.try_get(12)?,
        credit_prev: r.try_get(13)?,
        debit_balance: r.try_get(14)?,
        credit_balance: r.try_get(15)?,
    })
}

pub fn hold_row(r: &PgRow) -> Result<HoldRow, sqlx::Error> {
    Ok(HoldRow {
        pending_id: r.try_get(0)?,
        debit: r.try_get(1)?,
        credit: r.try_get(2)?,
        amount: r.try_get(3)?,
        currency: r.try_get(4)?,
        code: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        state: r.try_get(7)?,
    })
}

pub fn to_account(r: &PgRow) -> Result<Account, StoreError> {
    account_row(r).map_err(db_error)?.into_account()
}

pub fn to_transfer(r: &PgRow) -> Result<Transfer, StoreError> {
    transfer_row(r).map_err(db_error)?.into_transfer()
}

pub fn to_hold(r: &PgRow) -> Result<Hold, StoreError> {
    hold_row(r).map_err(db_error)?.into_hold()
}

pub async fn insert_transfers(
    conn: &mut PgConnection,
    transfers: &[&Transfer],
) -> Result<(), StoreError> {
    if transfers.is_empty() {
        return Ok(());
    }
    let rows: Vec<TransferRow> = transfers
        .iter()
        .map(|t| TransferRow::from_transfer(t))
        .collect();
    sqlx::query(&format!(
        "INSERT INTO transfers ({TRANSFER_COLUMNS}) SELECT * FROM UNNEST($1::bytea[], $2::bytea[], \
         $3::bytea[], $4::int8[], $5::text[], $6::int4[], $7::int2[], $8::bytea[], $9::int8[], \
         $10::bytea[], $11::text[], $12::int8[], $13::bytea[], $14::bytea[], $15::bytea[], $16::bytea[])"
    ))
    .bind(col!(rows.id))
    .bind(col!(rows.debit))
    .bind(col!(rows.credit))
    .bind(col!(rows.amount))
    .bind(col!(rows.currency))
    .bind(col!(rows.code))
    .bind(col!(rows.kind))
    .bind(col!(rows.pending_id))
    .bind(col!(rows.expires_at))
    .bind(col!(rows.reference))
    .bind(col!(rows.metadata))
    .bind(col!(rows.timestamp))
    .bind(col!(rows.debit_prev))
    .bind(col!(rows.credit_prev))
    .bind(col!(rows.debit_balance))
    .bind(col!(rows.credit_balance))
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

pub async fn insert_holds(conn: &mut PgConnection, holds: &[&Hold]) -> Result<(), StoreError> {
    if holds.is_empty() {
        return Ok(());
    }
    let rows: Vec<HoldRow> = holds.iter().map(|h| HoldRow::from_hold(h)).collect();
    sqlx::query(&format!(
        "INSERT INTO holds ({HOLD_COLUMNS}) SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], \
         $4::int8[], $5::text[], $6::int4[], $7::int8[], $8::int2[])"
    ))
    .bind(col!(rows.pending_id))
    .bind(col!(rows.debit))
    .bind(col!(rows.credit))
    .bind(col!(rows.amount))
    .bind(col!(rows.currency))
    .bind(col!(rows.code))
    .bind(col!(rows.expires_at))
    .bind(col!(rows.state))
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

pub async fn update_hold_states(
    conn: &mut PgConnection,
    holds: &[&Hold],
) -> Result<(), StoreError> {
    if holds.is_empty() {
        return Ok(());
    }
    let ids: Vec<Vec<u8>> = holds
        .iter()
        .map(|h| h.pending_id.to_bytes().to_vec())
        .collect();
    let states: Vec<i16> = holds.iter().map(|h| h.state.to_code()).collect();
    sqlx::query(
        "UPDATE holds SET state = u.state FROM UNNEST($1::bytea[], $2::int2[]) AS u(id, state) \
         WHERE holds.pending_id = u.id",
    )
    .bind(ids)
    .bind(states)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Inserts new accounts; fails with a retryable error if another process created one first.
pub async fn insert_accounts(
    conn: &mut PgConnection,
    accounts: &[&Account],
) -> Result<(), StoreError> {
    if accounts.is_empty() {
        return Ok(());
    }
    let rows: Vec<AccountRow> = accounts
        .iter()
        .map(|a| AccountRow::from_account(a))
        .collect();
    let inserted = sqlx::query(&format!(
        "INSERT INTO accounts ({ACCOUNT_COLUMNS}) SELECT * FROM UNNEST($1::bytea[], $2::text[], \
         $3::int4[], $4::int4[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], \
         $10::bytea[], $11::int8[]) ON CONFLICT (id) DO NOTHING"
    ))
    .bind(col!(rows.id))
    .bind(col!(rows.currency))
    .bind(col!(rows.code))
    .bind(col!(rows.flags))
    .bind(col!(rows.debits_pending))
    .bind(col!(rows.debits_posted))
    .bind(col!(rows.credits_pending))
    .bind(col!(rows.credits_posted))
    .bind(col!(rows.created_at))
    .bind(col!(rows.last_transfer))
    .bind(col!(rows.last_timestamp))
    .execute(conn)
    .await
    .map_err(db_error)?
    .rows_affected();
    if inserted != u64::try_from(rows.len()).unwrap_or(u64::MAX) {
        return Err(StoreError::Conflict);
    }
    Ok(())
}

/// Writes the new state of accounts this transaction holds locked.
pub async fn update_accounts(
    conn: &mut PgConnection,
    accounts: &[&Account],
) -> Result<(), StoreError> {
    if accounts.is_empty() {
        return Ok(());
    }
    let rows: Vec<AccountRow> = accounts
        .iter()
        .map(|a| AccountRow::from_account(a))
        .collect();
    sqlx::query(
        "UPDATE accounts SET flags = u.flags, debits_pending = u.dp, debits_posted = u.dpo, \
         credits_pending = u.cp, credits_posted = u.cpo, last_transfer = u.lt, last_timestamp = u.lts \
         FROM UNNEST($1::bytea[], $2::int4[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], \
         $7::bytea[], $8::int8[]) AS u(id, flags, dp, dpo, cp, cpo, lt, lts) WHERE accounts.id = u.id",
    )
    .bind(col!(rows.id))
    .bind(col!(rows.flags))
    .bind(col!(rows.debits_pending))
    .bind(col!(rows.debits_posted))
    .bind(col!(rows.credits_pending))
    .bind(col!(rows.credits_posted))
    .bind(col!(rows.last_transfer))
    .bind(col!(rows.last_timestamp))
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}
