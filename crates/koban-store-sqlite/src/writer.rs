//! The single writer thread: takes jobs from the queue, decides groups of batches in one
//! working set, and commits each group in one transaction (one fsync).
//!
//! The writer keeps the accounts it last committed in memory ([`AccountCache`]) and reads them
//! from the database only when another connection may have written since: SQLite's
//! `data_version` tells, read inside the writer's own IMMEDIATE transaction (which no other
//! writer can interleave with).

use std::collections::HashMap;
use std::time::Instant;

use koban_ledger::{Account, AccountId, Needs, WorkingSet};
use koban_store::queue::{Job, JobReceiver, Submission, Work, answer_group};
use koban_store::rows::ts_to_i64;
use koban_store::{Clock, StoreError, generated_transfer_id, metrics};
use rusqlite::{Connection, TransactionBehavior};

use crate::db::{self, db_error};

/// Accounts the cache holds at most; past this it starts over (a wallet's row is small, so
/// this bounds it to a few megabytes).
const CACHED_ACCOUNTS_MAX: usize = 65_536;

pub struct Writer {
    pub conn: Connection,
    pub clock: Clock,
    pub receiver: JobReceiver,
    pub accounts: AccountCache,
}

/// The accounts as this writer's last commits left them, valid while the database's
/// `data_version` is the one seen in the transaction that wrote them: any commit by another
/// connection (the `SqlDb` connection of this process, another process, an operator's tool)
/// changes it, and the whole cache is dropped. After a failed transaction (even a commit that
/// reports an error) the cache is dropped too: the writer's own commits do not change it.
#[derive(Default)]
pub struct AccountCache {
    accounts: HashMap<AccountId, Account>,
    data_version: Option<i64>,
}

impl AccountCache {
    /// Called first in every transaction: forgets everything when anyone else has committed
    /// since this writer's last transaction.
    fn validate(&mut self, data_version: i64) {
        if self.data_version != Some(data_version) {
            self.accounts.clear();
        }
        self.data_version = Some(data_version);
    }

    fn forget(&mut self) {
        self.accounts.clear();
        self.data_version = None;
    }

    /// Called after a commit with the accounts it wrote.
    fn committed<'a>(&mut self, written: impl Iterator<Item = &'a Account>) {
        for account in written {
            if self.accounts.len() >= CACHED_ACCOUNTS_MAX {
                self.accounts.clear();
            }
            self.accounts.insert(account.id, account.clone());
        }
    }
}

impl Writer {
    /// Runs until shutdown is requested or every queue handle is dropped.
    pub fn run(mut self) {
        while let Some(work) = self.receiver.blocking_next() {
            match work {
                Work::Group(group) => self.commit_group(group),
                Work::Single(Job::Shutdown { reply }) => {
                    for job in self.receiver.close() {
                        self.run_job(job);
                    }
                    let _ = reply.send(());
                    return;
                }
                Work::Single(job) => self.run_job(job),
            }
        }
    }

    fn run_job(&mut self, job: Job) {
        match job {
            Job::Submit(submission) => self.commit_group(vec![submission]),
            Job::CreateAccounts { accounts, reply } => {
                let _ = reply.send(self.create_accounts(&accounts));
            }
            Job::ChangeState { id, change, reply } => {
                let _ = reply.send(self.in_transaction(|tx, ws, cache, _| {
                    load_account(tx, ws, cache, id)?;
                    Ok(ws.change_state(id, change))
                }));
            }
            Job::ExpireHolds { limit, reply } => {
                let _ = reply.send(self.expire_holds(limit));
            }
            Job::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Submission>) {
        let started = Instant::now();
        let outcome = self.in_transaction(|tx, ws, cache, now| {
            let needs = Needs::of(group.iter().flat_map(|s| s.batch.iter()));
            for id in &needs.holds {
                if let Some(hold) = db::hold(tx, *id)? {
                    ws.load_hold(hold);
                }
            }
            for id in needs.accounts.iter().chain(ws.hold_accounts().iter()) {
                load_account(tx, ws, cache, *id)?;
            }
            for id in &needs.transfers {
                if let Some(transfer) = db::transfer(tx, *id)? {
                    ws.load_transfer(transfer);
                }
            }
            Ok(group
                .iter()
                .map(|s| ws.apply_batch(&s.batch, now))
                .collect::<Vec<_>>())
        });
        answer_group(group, outcome, started);
    }

    fn create_accounts(
        &mut self,
        accounts: &[koban_ledger::NewAccount],
    ) -> Result<Vec<Result<koban_ledger::Account, koban_ledger::AccountRejection>>, StoreError>
    {
        self.in_transaction(|tx, ws, cache, now| {
            for new in accounts {
                load_account(tx, ws, cache, new.id)?;
            }
            Ok(accounts
                .iter()
                .map(|new| ws.open_account(new, now).map(|(account, _)| account))
                .collect())
        })
    }

    fn expire_holds(&mut self, limit: usize) -> Result<usize, StoreError> {
        self.in_transaction(|tx, ws, cache, now| {
            let ids = db::expired_holds(tx, ts_to_i64(now), limit)?;
            for id in &ids {
                if let Some(hold) = db::hold(tx, *id)? {
                    ws.load_hold(hold);
                }
            }
            for account_id in ws.hold_accounts() {
                load_account(tx, ws, cache, account_id)?;
            }
            let expired = ids
                .iter()
                .filter(|id| ws.expire_hold(**id, generated_transfer_id(), now).is_ok())
                .count();
            metrics::holds_expired(expired);
            Ok(expired)
        })
    }

    /// Runs `decide` on a fresh working set inside one IMMEDIATE transaction, writes back what
    /// changed, and commits. Nothing is written when `decide` or any write fails.
    fn in_transaction<T>(
        &mut self,
        decide: impl FnOnce(
            &Connection,
            &mut WorkingSet,
            &AccountCache,
            koban_ledger::Timestamp,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let outcome = self.try_transaction(decide);
        if outcome.is_err() {
            self.accounts.forget();
        }
        outcome
    }

    fn try_transaction<T>(
        &mut self,
        decide: impl FnOnce(
            &Connection,
            &mut WorkingSet,
            &AccountCache,
            koban_ledger::Timestamp,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        self.accounts.validate(db::data_version(&tx)?);
        let mut ws = WorkingSet::new();
        let now = self.clock.now();
        let result = decide(&tx, &mut ws, &self.accounts, now)?;
        write_changes(&tx, &ws)?;
        tx.commit().map_err(db_error)?;
        self.accounts.committed(ws.dirty_accounts());
        Ok(result)
    }
}

/// Puts an account into the working set: from the cache when it holds it, else from the
/// database (if it exists there).
fn load_account(
    conn: &Connection,
    ws: &mut WorkingSet,
    cache: &AccountCache,
    id: AccountId,
) -> Result<(), StoreError> {
    match cache.accounts.get(&id) {
        Some(account) => ws.load_account(account.clone()),
        None => {
            if let Some(account) = db::account(conn, id)? {
                ws.load_account(account);
            }
        }
    }
    Ok(())
}

/// Writes a decided working set. Every balance is checked against its limits again right
/// before it is written: a violation here is a bug, and stopping beats writing bad money.
fn write_changes(conn: &Connection, ws: &WorkingSet) -> Result<(), StoreError> {
    for transfer in ws.new_transfers() {
        db::insert_transfer(conn, transfer)?;
    }
    for hold in ws.new_holds() {
        db::insert_hold(conn, hold)?;
    }
    for hold in ws.updated_holds() {
        db::update_hold_state(conn, hold)?;
    }
    for account in ws.dirty_accounts() {
        assert!(
            account.balance.within_limits(account.flags),
            "ledger bug: account beyond its limits"
        );
        // Accounts are almost always there already: a plain update, and an insert only for
        // the ones just opened.
        if !db::update_account(conn, account)? {
            db::upsert_account(conn, account)?;
        }
    }
    Ok(())
}
