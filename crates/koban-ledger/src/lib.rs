//! The Koban ledger core: a pure double-entry state machine.
//!
//! Architecture invariant: this crate does no IO, reads no clock and draws no randomness.
//! Callers pass `now` and every id in; the same inputs always give the same decisions.

mod engine;
mod model;
mod money;

pub use engine::{
    AccountRejection, Applied, BATCH_TRANSFERS_MAX, Needs, RejectReason, Rejection, StateChange,
    StateChangeRejection, WorkingSet,
};
pub use model::{
    Account, AccountFlags, AccountId, Balance, Code, FlagsError, HOLD_TIMEOUT_S_MAX, Hold,
    HoldState, IdError, METADATA_ENTRIES_MAX, METADATA_KEY_BYTES_MAX, METADATA_VALUE_BYTES_MAX,
    Metadata, MetadataError, Move, NewAccount, PendingOptions, Timestamp, Transfer, TransferId,
    TransferKind, TransferRequest,
};
pub use money::{AMOUNT_MAX, Amount, Currency, Money, MoneyError};
