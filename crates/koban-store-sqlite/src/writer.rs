//! The single writer thread: takes jobs from the queue, decides groups of batches in one
//! working set, and commits each group in one transaction. The writer's connection commits
//! without syncing (`synchronous=NORMAL`); a syncer thread makes the WAL durable with one
//! `fdatasync` for every group committed since its last one, and only then answers those
//! groups' submitters. So the writer decides and writes the next group while the previous
//! one is being synced, and nothing is acknowledged before it is on stable storage.
//!
//! Why that is as safe as an fsync inside every commit: the WAL is appended in commit order,
//! so a sync after group N's commit covers every frame of N and of all groups before it; a
//! group is answered only after a sync that began after its commit returned. A crash of the
//! process loses nothing written (the frames are in the operating system's cache); a loss of
//! power loses at most groups nobody was told about, and always a suffix of them, because a
//! later group's frames are never durable before an earlier one's. SQLite itself syncs the WAL
//! before every checkpoint and the database file after it, in NORMAL mode as in FULL. Every
//! other connection (identity, payments, readers) keeps `synchronous=FULL`, so whatever they
//! commit after reading a ledger change makes that change durable too.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
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
    /// Answers waiting for the WAL to be synced, in commit order.
    pub durable: mpsc::Sender<Answer>,
    /// Set once the syncer has stopped (a sync failed): nothing more is committed.
    pub syncer_gone: bool,
}

/// What a committed job says to its submitters once the WAL holding it is durable.
pub type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The syncer thread: waits for committed work, syncs the WAL once for everything committed
/// so far, then answers it. A failed sync answers every waiting job with an error (retrying
/// with the same ids is safe: it applies or replays) and stops, which stops the writer: after
/// a failed fsync nothing says what reached the disk.
pub fn run_syncer(wal: File, wal_path: PathBuf, committed: mpsc::Receiver<Answer>) {
    while let Ok(first) = committed.recv() {
        let mut answers = vec![first];
        answers.extend(committed.try_iter());
        let outcome = sync(&wal, &wal_path);
        let failed = outcome.is_err();
        for answer in answers {
            answer(match &outcome {
                Ok(()) => Ok(()),
                Err(error) => Err(StoreError::Database(error.to_string())),
            });
        }
        if failed {
            tracing::error!("syncing the ledger's WAL failed; the ledger writer stops");
            return;
        }
    }
}

/// Syncs the WAL's data, and checks that the file synced is still the WAL at `wal_path` (were
/// it ever replaced, syncing the old one would acknowledge nothing durable).
fn sync(wal: &File, wal_path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let failed = |e: std::io::Error| StoreError::Database(format!("syncing the WAL failed: {e}"));
    wal.sync_data().map_err(failed)?;
    let synced = wal.metadata().map_err(failed)?;
    let current = std::fs::metadata(wal_path).map_err(failed)?;
    if (synced.dev(), synced.ino()) != (current.dev(), current.ino()) {
        return Err(StoreError::Database(
            "the WAL file was replaced under the ledger writer".into(),
        ));
    }
    Ok(())
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
                    // Answered after everything before it is durable.
                    self.after_sync(Ok(()), move |_| {
                        let _ = reply.send(());
                    });
                    return;
                }
                Work::Single(job) => self.run_job(job),
            }
            if self.syncer_gone {
                tracing::error!("the ledger writer stops: its commits can no longer be synced");
                return;
            }
        }
    }

    /// Hands `answer` to the syncer with the commit's outcome: a failed commit is answered
    /// at once (nothing was written), a successful one after the WAL is synced.
    fn after_sync<T: Send + 'static>(
        &mut self,
        outcome: Result<T, StoreError>,
        answer: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) {
        match outcome {
            Err(error) => answer(Err(error)),
            Ok(value) => {
                let job: Answer = Box::new(move |synced| answer(synced.map(|()| value)));
                if let Err(mpsc::SendError(job)) = self.durable.send(job) {
                    self.syncer_gone = true;
                    job(Err(StoreError::Database(
                        "the ledger's WAL can no longer be synced".into(),
                    )));
                }
            }
        }
    }

    fn run_job(&mut self, job: Job) {
        match job {
            Job::Submit(submission) => self.commit_group(vec![submission]),
            Job::CreateAccounts { accounts, reply } => {
                let outcome = self.create_accounts(&accounts);
                self.after_sync(outcome, move |r| drop(reply.send(r)));
            }
            Job::ChangeState { id, change, reply } => {
                let outcome = self.in_transaction(|tx, ws, _| {
                    if let Some(account) = db::account(tx, id)? {
                        ws.load_account(account);
                    }
                    Ok(ws.change_state(id, change))
                });
                self.after_sync(outcome, move |r| drop(reply.send(r)));
            }
            Job::ExpireHolds { limit, reply } => {
                let outcome = self.expire_holds(limit);
                self.after_sync(outcome, move |r| drop(reply.send(r)));
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
        self.after_sync(outcome, move |outcome| {
            answer_group(group, outcome, started)
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a syncer over `wal` at `path` with two committed answers and returns what they were
    /// told, and whether a third could still be handed over afterwards.
    fn answers_after(wal: File, path: PathBuf) -> (Vec<Result<(), String>>, bool) {
        let (durable, committed) = mpsc::channel::<Answer>();
        let (told, heard) = mpsc::channel();
        for _ in 0..2 {
            let told = told.clone();
            durable
                .send(Box::new(move |r| {
                    told.send(r.map_err(|e| e.to_string())).unwrap();
                }))
                .unwrap();
        }
        let syncer = std::thread::spawn(move || run_syncer(wal, path, committed));
        let answers = vec![heard.recv().unwrap(), heard.recv().unwrap()];
        // A syncer that failed has stopped: handing it more work fails.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let still_open = durable.send(Box::new(|_| {})).is_ok();
        drop(durable);
        syncer.join().unwrap();
        (answers, still_open)
    }

    #[test]
    fn committed_work_is_answered_after_the_wal_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-wal");
        let wal = File::create(&path).unwrap();
        let (answers, still_open) = answers_after(wal, path);
        assert_eq!(answers, vec![Ok(()), Ok(())]);
        assert!(still_open);
    }

    #[test]
    fn a_replaced_wal_fails_every_waiting_answer_and_stops_the_syncer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-wal");
        let wal = File::create(&path).unwrap();
        // Another file now stands at the path: syncing the old one would make nothing durable.
        let other = dir.path().join("other");
        std::fs::write(&other, b"").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let (answers, still_open) = answers_after(wal, path);
        assert_eq!(answers.len(), 2);
        for answer in answers {
            assert!(answer.unwrap_err().contains("replaced"));
        }
        assert!(!still_open, "the syncer stops after a failed sync");
    }
}
