//! The bounded queue in front of a backend's writer, and group commit.
//!
//! Submitters put jobs on a bounded channel and wait on a one-shot reply. The writer takes the
//! next job; when it is a submission it gathers every submission already waiting, up to
//! `group_transfers_max` transfers, decides them in one working set and commits them in one
//! database transaction (one fsync). Each submitter is answered only after that commit.

use std::time::Instant;

use koban_ledger::{
    Account, AccountId, AccountRejection, Applied, BATCH_TRANSFERS_MAX, NewAccount, RejectReason,
    Rejection, StateChange, StateChangeRejection, TransferRequest,
};
use tokio::sync::{mpsc, oneshot};

use crate::{StoreError, SubmitResult};

/// Sizes of the queue and of one group. Named with the unit last.
#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    /// Jobs waiting for the writer before submitters are told "busy, retry".
    pub queue_jobs_max: usize,
    /// Transfers decided and committed in one database transaction.
    pub group_transfers_max: usize,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            queue_jobs_max: 8192,
            group_transfers_max: 2048,
        }
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A batch waiting for group commit.
pub struct Submission {
    pub batch: Vec<TransferRequest>,
    pub reply: oneshot::Sender<SubmitResult>,
    pub enqueued_at: Instant,
}

/// Work for a backend's writer.
pub enum Job {
    Submit(Submission),
    CreateAccounts {
        accounts: Vec<NewAccount>,
        reply: Reply<Vec<Result<Account, AccountRejection>>>,
    },
    ChangeState {
        id: AccountId,
        change: StateChange,
        reply: Reply<Result<Account, StateChangeRejection>>,
    },
    ExpireHolds {
        limit: usize,
        reply: Reply<usize>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What the writer does next: a group of submissions, or one other job on its own.
pub enum Work {
    Group(Vec<Submission>),
    Single(Job),
}

/// The submitters' end. Cheap to clone.
#[derive(Clone)]
pub struct JobQueue {
    tx: mpsc::Sender<Job>,
}

/// The writer's end.
pub struct JobReceiver {
    rx: mpsc::Receiver<Job>,
    held_back: Option<Job>,
    group_transfers_max: usize,
}

pub fn job_queue(config: QueueConfig) -> (JobQueue, JobReceiver) {
    let (tx, rx) = mpsc::channel(config.queue_jobs_max.max(1));
    let receiver = JobReceiver {
        rx,
        held_back: None,
        group_transfers_max: config.group_transfers_max.max(1),
    };
    (JobQueue { tx }, receiver)
}

impl JobQueue {
    /// Submits a batch and waits until it is decided and durable.
    pub async fn submit(&self, batch: Vec<TransferRequest>) -> SubmitResult {
        // Batches the ledger will refuse anyway are refused here, before they cost the writer
        // any reads.
        if batch.is_empty() {
            return Ok(Err(Rejection {
                index: 0,
                reason: RejectReason::BatchEmpty,
            }));
        }
        if batch.len() > BATCH_TRANSFERS_MAX {
            let reason = RejectReason::BatchTooLarge;
            return Ok(Err(Rejection {
                index: BATCH_TRANSFERS_MAX,
                reason,
            }));
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::Submit(Submission {
            batch,
            reply,
            enqueued_at: Instant::now(),
        });
        self.enqueue(job)?;
        answer.await.map_err(|_| StoreError::ShuttingDown)?
    }

    pub async fn create_accounts(
        &self,
        accounts: Vec<NewAccount>,
    ) -> Result<Vec<Result<Account, AccountRejection>>, StoreError> {
        if accounts.len() > crate::ACCOUNTS_PER_CALL_MAX {
            return Err(StoreError::Invalid("at most 10000 accounts per call"));
        }
        self.call(|reply| Job::CreateAccounts { accounts, reply })
            .await
    }

    pub async fn change_account_state(
        &self,
        id: AccountId,
        change: StateChange,
    ) -> Result<Result<Account, StateChangeRejection>, StoreError> {
        self.call(|reply| Job::ChangeState { id, change, reply })
            .await
    }

    pub async fn expire_holds(&self, limit: usize) -> Result<usize, StoreError> {
        self.call(|reply| Job::ExpireHolds { limit, reply }).await
    }

    /// False once the writer has stopped (shut down, or died): writes cannot succeed.
    pub fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Sends a non-submission job and waits for its answer.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(make(reply))?;
        answer.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Asks the writer to finish what is queued and stop; waits until it has.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        // Waiting for space (rather than failing when full) lets queued work finish first.
        if self.tx.send(Job::Shutdown { reply }).await.is_ok() {
            let _ = done.await;
        }
    }

    fn enqueue(&self, job: Job) -> Result<(), StoreError> {
        self.tx.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                crate::metrics::queue_busy();
                StoreError::Busy
            }
            mpsc::error::TrySendError::Closed(_) => StoreError::ShuttingDown,
        })
    }
}

/// Answers every submitter of a group after its transaction committed (`Ok`) or failed
/// (`Err`: nothing in the group was applied, and each submitter is told to retry), and records
/// the group's metrics.
pub fn answer_group(
    group: Vec<Submission>,
    outcome: Result<Vec<Result<Applied, Rejection>>, StoreError>,
    started: Instant,
) {
    let transfers_in_group: usize = group.iter().map(|s| s.batch.len()).sum();
    match outcome {
        Ok(results) => {
            let committed: usize = results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .filter(|applied| !applied.replayed)
                .map(|applied| applied.transfers.len())
                .sum();
            let committed = u64::try_from(committed).unwrap_or(u64::MAX);
            crate::metrics::group_committed(committed, transfers_in_group, started.elapsed());
            for (submission, result) in group.into_iter().zip(results) {
                if let Err(rejection) = &result {
                    crate::metrics::batch_rejected(rejection.reason);
                }
                let _ = submission.reply.send(Ok(result));
            }
        }
        Err(error) => {
            crate::metrics::commit_failed();
            // Usually nothing was applied; if the connection broke during COMMIT the outcome is
            // unknown. Either way a retry with the same ids is safe: it applies or replays.
            tracing::error!(%error, transfers = transfers_in_group, "group commit failed; submitters told to retry with the same ids");
            let unavailable = matches!(error, StoreError::Unavailable);
            for submission in group {
                let retry = if unavailable {
                    StoreError::Unavailable
                } else {
                    StoreError::Database("commit failed; retry".into())
                };
                let _ = submission.reply.send(Err(retry));
            }
        }
    }
}

impl JobReceiver {
    /// Blocks the current (non-async) thread until there is work; `None` once every sender
    /// is gone.
    pub fn blocking_next(&mut self) -> Option<Work> {
        let first = match self.held_back.take() {
            Some(job) => job,
            None => self.rx.blocking_recv()?,
        };
        Some(self.gather(first))
    }

    /// Waits for work; `None` once every sender is gone.
    pub async fn next(&mut self) -> Option<Work> {
        let first = match self.held_back.take() {
            Some(job) => job,
            None => self.rx.recv().await?,
        };
        Some(self.gather(first))
    }

    /// Refuses new jobs and returns those already queued, for a final drain on shutdown.
    pub fn close(&mut self) -> Vec<Job> {
        self.rx.close();
        let mut rest: Vec<Job> = self.held_back.take().into_iter().collect();
        while let Ok(job) = self.rx.try_recv() {
            rest.push(job);
        }
        rest
    }

    fn gather(&mut self, first: Job) -> Work {
        let Job::Submit(submission) = first else {
            return Work::Single(first);
        };
        let mut transfers = submission.batch.len();
        let mut group = vec![submission];
        while transfers < self.group_transfers_max {
            match self.rx.try_recv() {
                Ok(Job::Submit(next)) => {
                    transfers = transfers.saturating_add(next.batch.len());
                    group.push(next);
                }
                Ok(other) => {
                    self.held_back = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        Work::Group(group)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use koban_ledger::{
        AccountId, Amount, Applied, Code, Currency, Metadata, Move, TransferId, TransferRequest,
    };

    use super::*;

    fn batch(id: u128) -> Vec<TransferRequest> {
        vec![TransferRequest::Move(Move {
            id: TransferId::new(id).unwrap(),
            debit: AccountId::new(1).unwrap(),
            credit: AccountId::new(2).unwrap(),
            amount: Amount::new(5).unwrap(),
            currency: Currency::Jpy,
            code: Code(1),
            reference: None,
            metadata: Metadata::empty(),
            pending: None,
        })]
    }

    #[tokio::test]
    async fn a_full_queue_says_busy_and_waiting_submissions_form_one_group() {
        let config = QueueConfig {
            queue_jobs_max: 2,
            group_transfers_max: 100,
        };
        let (queue, mut receiver) = job_queue(config);
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = pin!(queue.submit(batch(1)));
        let mut second = pin!(queue.submit(batch(2)));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        let third = pin!(queue.submit(batch(3)));
        assert!(matches!(
            third.poll(&mut cx),
            Poll::Ready(Err(StoreError::Busy))
        ));

        let Some(Work::Group(group)) = receiver.next().await else {
            panic!("expected a group")
        };
        assert_eq!(group.len(), 2);
        for submission in group {
            let applied = Applied {
                transfers: Vec::new(),
                replayed: false,
            };
            submission.reply.send(Ok(Ok(applied))).unwrap();
        }
        assert!(first.await.unwrap().is_ok());
        assert!(second.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn groups_stop_at_the_transfer_cap_and_at_other_jobs() {
        let config = QueueConfig {
            queue_jobs_max: 10,
            group_transfers_max: 2,
        };
        let (queue, mut receiver) = job_queue(config);
        let mut cx = Context::from_waker(Waker::noop());
        let mut pending = Vec::new();
        for id in 1..=3 {
            let mut submit = Box::pin(queue.submit(batch(id)));
            assert!(submit.as_mut().poll(&mut cx).is_pending());
            pending.push(submit);
        }
        let mut expire = Box::pin(queue.call(|reply| Job::ExpireHolds { limit: 1, reply }));
        assert!(expire.as_mut().poll(&mut cx).is_pending());
        let Some(Work::Group(group)) = receiver.next().await else {
            panic!("expected a group")
        };
        assert_eq!(group.len(), 2, "capped at two transfers");
        let Some(Work::Group(group)) = receiver.next().await else {
            panic!("expected a group")
        };
        assert_eq!(group.len(), 1, "stops before the expiry job");
        assert!(matches!(
            receiver.next().await,
            Some(Work::Single(Job::ExpireHolds { .. }))
        ));
        // After close, nothing more is accepted.
        assert!(receiver.close().is_empty());
        let refused = pin!(queue.submit(batch(9)));
        assert!(matches!(
            refused.poll(&mut cx),
            Poll::Ready(Err(StoreError::ShuttingDown))
        ));
    }
}
