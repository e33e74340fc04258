//! The storage boundary of the Koban ledger.
//!
//! [`LedgerStore`] is the one trait every backend implements; [`queue`] is the bounded group
//! commit queue both backends share; [`rows`] converts ledger values to and from plain column
//! values in one place; [`audit`] checks the ledger's invariants from what a backend reads back.
//!
//! Architecture invariant: this crate knows no SQL dialect and no HTTP. Backends own their SQL
//! and migrations.

pub mod audit;
mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod history;
pub mod metrics;
pub mod queue;
pub mod rows;
pub mod sql;

use std::future::Future;

use koban_ledger::{
    Account, AccountId, AccountRejection, Applied, Balance, NewAccount, Rejection, StateChange,
    StateChangeRejection, Timestamp, Transfer, TransferId, TransferRequest,
};

pub use audit::AuditReport;
pub use clock::{Clock, ManualClock};

/// The most accounts one `create_accounts` call may open.
pub const ACCOUNTS_PER_CALL_MAX: usize = 10_000;

/// The largest page of an account's history one query returns.
pub const PAGE_TRANSFERS_MAX: usize = 200;

/// A failure of the storage itself (not a business rejection). Safe to show: it never carries
/// request content.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the ledger is busy; retry shortly")]
    Busy,
    #[error("a concurrent writer raced this request; retry")]
    Conflict,
    #[error("the ledger is shutting down")]
    ShuttingDown,
    /// The database cannot be reached now (connection refused or lost, the server shutting
    /// down or starting): nothing was decided, and the same request may be tried again.
    #[error("the database cannot be reached; retry shortly")]
    Unavailable,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
}

/// The outcome of submitting a batch: `Ok(Ok(_))` applied, `Ok(Err(_))` rejected by the
/// ledger (nothing changed), `Err(_)` not decided (safe to retry with the same ids).
pub type SubmitResult = Result<Result<Applied, Rejection>, StoreError>;

/// One page of an account's history, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub transfers: Vec<Transfer>,
    /// Pass this as the cursor to get the next (older) page; `None` at the end of history.
    pub next_cursor: Option<TransferId>,
}

/// Where to start reading an account's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// The newest transfer to include; `None` starts from the account's latest transfer.
    pub cursor: Option<TransferId>,
    limit: usize,
}

impl PageRequest {
    pub fn new(cursor: Option<TransferId>, limit: usize) -> Result<PageRequest, StoreError> {
        if limit == 0 || limit > PAGE_TRANSFERS_MAX {
            return Err(StoreError::Invalid("page size must be between 1 and 200"));
        }
        Ok(PageRequest { cursor, limit })
    }

    pub fn limit(self) -> usize {
        self.limit
    }
}

/// The ledger's storage. One implementation per backend; the service is generic over it.
///
/// Every method that changes state is atomic and durable when it returns `Ok`.
pub trait LedgerStore: Clone + Send + Sync + 'static {
    /// The same database, for ordinary relational data outside the ledger (identity, sessions,
    /// outbox, audit chain).
    type Sql: sql::SqlDb;

    /// A short name of the backend ("sqlite", "postgres").
    fn backend(&self) -> &'static str;

    /// A handle that runs [`sql::SqlTx`] transactions on this store's database.
    fn sql(&self) -> Self::Sql;

    /// Opens accounts; an account that already exists with the same settings is returned as is.
    fn create_accounts(
        &self,
        accounts: Vec<NewAccount>,
    ) -> impl Future<Output = Result<Vec<Result<Account, AccountRejection>>, StoreError>> + Send;

    fn change_account_state(
        &self,
        id: AccountId,
        change: StateChange,
    ) -> impl Future<Output = Result<Result<Account, StateChangeRejection>, StoreError>> + Send;

    /// Submits one atomic batch through group commit; returns once the outcome is durable.
    fn submit(&self, batch: Vec<TransferRequest>) -> impl Future<Output = SubmitResult> + Send;

    fn account(
        &self,
        id: AccountId,
    ) -> impl Future<Output = Result<Option<Account>, StoreError>> + Send;

    fn transfer(
        &self,
        id: TransferId,
    ) -> impl Future<Output = Result<Option<Transfer>, StoreError>> + Send;

    /// An account's history, newest first; `None` when the account does not exist.
    fn account_transfers(
        &self,
        id: AccountId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Option<Page>, StoreError>> + Send;

    /// The account's balance as it was at `at` (after every transfer stamped at or before it);
    /// `None` when the account does not exist or was opened after `at`.
    fn balance_at(
        &self,
        id: AccountId,
        at: Timestamp,
    ) -> impl Future<Output = Result<Option<Balance>, StoreError>> + Send;

    /// Releases up to `limit` holds whose timeout has passed; returns how many it released.
    fn expire_holds(&self, limit: usize) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// How many of `ids` are recorded (each id is recorded at most once by construction).
    fn count_transfers_present(
        &self,
        ids: Vec<TransferId>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Reads everything back and checks the ledger's invariants.
    fn audit(&self) -> impl Future<Output = Result<AuditReport, StoreError>> + Send;

    /// Checks that the database answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stops taking work, finishes every batch already queued, and returns when all are durable.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}

/// A fresh time-ordered id (UUIDv7) for transfers the service creates itself (hold expiry).
pub fn generated_transfer_id() -> TransferId {
    let value = uuid::Uuid::now_v7().as_u128();
    // A UUIDv7 always has its version bits set, so it is never zero.
    TransferId::new(value).unwrap_or_else(|_| unreachable!("UUIDv7 is never zero"))
}
