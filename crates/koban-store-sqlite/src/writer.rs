//! The single writer thread: takes jobs from the queue, decides groups of batches in one
//! working set, and commits each group in one transaction (one fsync).

use std::time::Instant;

use koban_ledger::{Needs, WorkingSet};
use koban_store::queue::{Job, JobReceiver, Submission, Work, answer_group};
use koban_store::rows::ts_to_i64;
use koban_store::{Clock, StoreError, generated_transfer_id, metrics};
use rusqlite::{Connection, TransactionBehavior};

use crate::db::{self, db_error};

pub struct Writer {
    pub conn: Connection,
    pub clock: Clock,
    pub receiver: JobReceiver,
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
                let _ = reply.send(self.in_transaction(|tx, ws, _| {
                    if let Some(account) = db::account(tx, id)? {
                        ws.load_account(account);
                    }
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
        let outcome = self.in_transaction(|tx, ws, now| {
            let needs = Needs::of(group.iter().flat_map(|s| s.batch.iter()));
            for id in &needs.holds {
                if let Some(hold) = db::hold(tx, *id)? {
                    ws.load_hold(hold);
                }
            }
            for id in needs.accounts.iter().chain(ws.hold_accounts().iter()) {
                if let Some(account) = db::account(tx, *id)? {
                    ws.load_account(account);
                }
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
        self.in_transaction(|tx, ws, now| {
            for new in accounts {
                if let Some(existing) = db::account(tx, new.id)? {
                    ws.load_account(existing);
                }
            }
            Ok(accounts
                .iter()
                .map(|new| ws.open_account(new, now).map(|(account, _)| account))
                .collect())
        })
    }

    fn expire_holds(&mut self, limit: usize) -> Result<usize, StoreError> {
        self.in_transaction(|tx, ws, now| {
            let ids = db::expired_holds(tx, ts_to_i64(now), limit)?;
            for id in &ids {
                if let Some(hold) = db::hold(tx, *id)? {
                    ws.load_hold(hold);
                }
            }
            for account_id in ws.hold_accounts() {
                if let Some(account) = db::account(tx, account_id)? {
                    ws.load_account(account);
                }
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
            koban_ledger::Timestamp,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        let mut ws = WorkingSet::new();
        let now = self.clock.now();
        let result = decide(&tx, &mut ws, now)?;
        write_changes(&tx, &ws)?;
        tx.commit().map_err(db_error)?;
        Ok(result)
    }
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
        db::upsert_account(conn, account)?;
    }
    Ok(())
}
