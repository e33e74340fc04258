//! This process's committer task: groups queued batches and commits each group in one
//! transaction that holds the row locks of every account it touches.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use koban_ledger::{
    Account, AccountId, AccountRejection, Applied, Needs, NewAccount, Rejection, StateChange,
    StateChangeRejection, TransferId, WorkingSet,
};
use koban_store::queue::{Job, JobReceiver, Submission, Work, answer_group};
use koban_store::rows::ts_to_i64;
use koban_store::{Clock, StoreError, generated_transfer_id, metrics};
use sqlx::{PgConnection, PgPool, Row};

use crate::sql::{self, ACCOUNT_COLUMNS, HOLD_COLUMNS, TRANSFER_COLUMNS, db_error};

/// Attempts of one group before its submitters are told to retry.
const COMMIT_ATTEMPTS_MAX: u32 = 5;

/// Retries an operation that lost a race with another writer (a lost race changed nothing).
/// A macro rather than a function taking an async closure, whose futures are not `Send` yet.
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut tries = 1;
        loop {
            match $attempt.await {
                Err(StoreError::Conflict) if tries < COMMIT_ATTEMPTS_MAX => tries += 1,
                other => break other,
            }
        }
    }};
}

pub struct Committer {
    pub pool: PgPool,
    pub clock: Clock,
    pub receiver: JobReceiver,
}

fn bytes<'a>(ids: impl IntoIterator<Item = &'a [u8; 16]>) -> Vec<Vec<u8>> {
    ids.into_iter().map(|b| b.to_vec()).collect()
}

impl Committer {
    pub async fn run(mut self) {
        while let Some(work) = self.receiver.next().await {
            match work {
                Work::Group(group) => self.commit_group(group).await,
                Work::Single(Job::Shutdown { reply }) => {
                    for job in self.receiver.close() {
                        self.run_job(job).await;
                    }
                    let _ = reply.send(());
                    return;
                }
                Work::Single(job) => self.run_job(job).await,
            }
        }
    }

    async fn run_job(&mut self, job: Job) {
        match job {
            Job::Submit(submission) => self.commit_group(vec![submission]).await,
            Job::CreateAccounts { accounts, reply } => {
                let _ = reply.send(retrying!(self.create_accounts(&accounts)));
            }
            Job::ChangeState { id, change, reply } => {
                let _ = reply.send(retrying!(self.change_state(id, change)));
            }
            Job::ExpireHolds { limit, reply } => {
                let _ = reply.send(retrying!(self.expire_holds(limit)));
            }
            Job::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    async fn commit_group(&mut self, group: Vec<Submission>) {
        let started = Instant::now();
        let outcome = retrying!(self.decide_group(&group));
        answer_group(group, outcome, started);
    }

    async fn decide_group(
        &self,
        group: &[Submission],
    ) -> Result<Vec<Result<Applied, Rejection>>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let needs = Needs::of(group.iter().flat_map(|s| s.batch.iter()));
        let mut ws =
            lock_and_load(&mut tx, &needs.accounts, &needs.holds, &needs.transfers).await?;
        let now = self.clock.now();
        let results = group
            .iter()
            .map(|s| ws.apply_batch(&s.batch, now))
            .collect();
        write_changes(&mut tx, &ws, &HashSet::new()).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(results)
    }

    async fn create_accounts(
        &self,
        accounts: &[NewAccount],
    ) -> Result<Vec<Result<Account, AccountRejection>>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let ids: BTreeSet<AccountId> = accounts.iter().map(|a| a.id).collect();
        let mut ws = lock_and_load(&mut tx, &ids, &BTreeSet::new(), &BTreeSet::new()).await?;
        let now = self.clock.now();
        let mut created = HashSet::new();
        let results = accounts
            .iter()
            .map(|new| {
                ws.open_account(new, now).map(|(account, is_new)| {
                    if is_new {
                        created.insert(account.id);
                    }
                    account
                })
            })
            .collect();
        write_changes(&mut tx, &ws, &created).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(results)
    }

    async fn change_state(
        &self,
        id: AccountId,
        change: StateChange,
    ) -> Result<Result<Account, StateChangeRejection>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let mut ws = lock_and_load(
            &mut tx,
            &BTreeSet::from([id]),
            &BTreeSet::new(),
            &BTreeSet::new(),
        )
        .await?;
        let result = ws.change_state(id, change);
        write_changes(&mut tx, &ws, &HashSet::new()).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(result)
    }

    async fn expire_holds(&self, limit: usize) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let rows = sqlx::query(
            "SELECT pending_id FROM holds WHERE state = 0 AND expires_at IS NOT NULL AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2",
        )
        .bind(ts_to_i64(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let ids = rows
            .iter()
            .map(|r| {
                let b: Vec<u8> = r.try_get(0).map_err(db_error)?;
                TransferId::from_bytes(&b).map_err(|_| StoreError::Corrupt("hold id".into()))
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let mut ws = lock_and_load(&mut tx, &BTreeSet::new(), &ids, &BTreeSet::new()).await?;
        // Another process may have posted, voided or expired some of them meanwhile; those are
        // refused by the core and skipped.
        let expired = ids
            .iter()
            .filter(|id| ws.expire_hold(**id, generated_transfer_id(), now).is_ok())
            .count();
        write_changes(&mut tx, &ws, &HashSet::new()).await?;
        tx.commit().await.map_err(db_error)?;
        metrics::holds_expired(expired);
        Ok(expired)
    }
}

/// The accounts the holds move between. Holds never change their accounts, so reading them
/// before the accounts are locked is safe.
async fn accounts_of_holds(
    conn: &mut PgConnection,
    hold_ids: &[Vec<u8>],
) -> Result<Vec<AccountId>, StoreError> {
    let rows = sqlx::query("SELECT debit, credit FROM holds WHERE pending_id = ANY($1)")
        .bind(hold_ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    let mut ids = Vec::with_capacity(rows.len() * 2);
    for r in rows {
        for column in 0..2 {
            let b: Vec<u8> = r.try_get(column).map_err(db_error)?;
            ids.push(
                AccountId::from_bytes(&b)
                    .map_err(|_| StoreError::Corrupt("hold account".into()))?,
            );
        }
    }
    Ok(ids)
}

/// Locks the accounts (named directly or by the holds) in id order, then reads the holds and
/// transfers: reading after the locks means every writer of these rows has committed.
async fn lock_and_load(
    conn: &mut PgConnection,
    accounts: &BTreeSet<AccountId>,
    holds: &BTreeSet<TransferId>,
    transfers: &BTreeSet<TransferId>,
) -> Result<WorkingSet, StoreError> {
    let mut ws = WorkingSet::new();
    let hold_ids = bytes(
        holds
            .iter()
            .map(|h| h.to_bytes())
            .collect::<Vec<_>>()
            .iter(),
    );
    let mut account_ids = accounts.clone();
    if !hold_ids.is_empty() {
        account_ids.extend(accounts_of_holds(conn, &hold_ids).await?);
    }
    let locked = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    ))
    .bind(bytes(
        account_ids
            .iter()
            .map(|a| a.to_bytes())
            .collect::<Vec<_>>()
            .iter(),
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    for row in &locked {
        ws.load_account(sql::to_account(row)?);
    }
    if !hold_ids.is_empty() {
        let rows = sqlx::query(&format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE pending_id = ANY($1)"
        ))
        .bind(&hold_ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        for row in &rows {
            ws.load_hold(sql::to_hold(row)?);
        }
        // A hold committed by another process between the first read and the locks names
        // accounts this transaction has not locked: start over rather than decide without them.
        if !ws.hold_accounts().is_empty() {
            return Err(StoreError::Conflict);
        }
    }
    if !transfers.is_empty() {
        load_transfers(conn, &mut ws, transfers).await?;
    }
    Ok(ws)
}

/// Reads the transfers a batch names (a retry's earlier answer, a reference) into `ws`.
async fn load_transfers(
    conn: &mut PgConnection,
    ws: &mut WorkingSet,
    transfers: &BTreeSet<TransferId>,
) -> Result<(), StoreError> {
    let ids: Vec<[u8; 16]> = transfers.iter().map(|t| t.to_bytes()).collect();
    let rows = sqlx::query(&format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ANY($1)"
    ))
    .bind(bytes(ids.iter()))
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    for row in &rows {
        ws.load_transfer(sql::to_transfer(row)?);
    }
    Ok(())
}

/// Writes a decided working set, rows sorted by key so concurrent writers meet in one order.
async fn write_changes(
    conn: &mut PgConnection,
    ws: &WorkingSet,
    created: &HashSet<AccountId>,
) -> Result<(), StoreError> {
    let mut transfers: Vec<_> = ws.new_transfers().collect();
    transfers.sort_by_key(|t| t.id);
    sql::insert_transfers(conn, &transfers).await?;
    let mut holds: Vec<_> = ws.new_holds().collect();
    holds.sort_by_key(|h| h.pending_id);
    sql::insert_holds(conn, &holds).await?;
    sql::update_hold_states(conn, &ws.updated_holds().collect::<Vec<_>>()).await?;
    let (new, existing): (Vec<&Account>, Vec<&Account>) =
        ws.dirty_accounts().partition(|a| created.contains(&a.id));
    for account in new.iter().chain(existing.iter()) {
        assert!(
            account.balance.within_limits(account.flags),
            "ledger bug: account beyond its limits"
        );
    }
    sql::insert_accounts(conn, &new).await?;
    sql::update_accounts(conn, &existing).await?;
    Ok(())
}
