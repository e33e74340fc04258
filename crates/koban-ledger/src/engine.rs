//! The ledger state machine. Storage loads what a group of batches touches into a
//! [`WorkingSet`], the working set decides every batch against it, and storage writes back
//! what changed. Nothing here does IO or reads a clock.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::model::{
    Account, AccountId, Balance, HOLD_TIMEOUT_S_MAX, Hold, HoldState, Move, NewAccount, Transfer,
    TransferId, TransferKind, TransferRequest,
};
use crate::money::{AMOUNT_MAX, Amount};
use crate::{FlagsError, Metadata};

/// The most transfers one atomic batch may hold.
pub const BATCH_TRANSFERS_MAX: usize = 128;

/// Why a batch was refused. A refused batch changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RejectReason {
    #[error("the batch holds no transfers")]
    BatchEmpty,
    #[error("the batch holds more than 128 transfers")]
    BatchTooLarge,
    #[error("the same transfer id appears twice in the batch")]
    DuplicateIdInBatch,
    #[error("a transfer with this id already exists with different content")]
    IdempotencyConflict,
    #[error("debit and credit account are the same")]
    SameAccount,
    #[error("the debit account does not exist")]
    DebitAccountNotFound,
    #[error("the credit account does not exist")]
    CreditAccountNotFound,
    #[error("the transfer's currency differs from an account's currency")]
    CurrencyMismatch,
    #[error("the debit account is frozen")]
    DebitAccountFrozen,
    #[error("the credit account is frozen")]
    CreditAccountFrozen,
    #[error("the debit account is closed")]
    DebitAccountClosed,
    #[error("the credit account is closed")]
    CreditAccountClosed,
    #[error("insufficient funds: debits would exceed credits on the debit account")]
    ExceedsCredits,
    #[error("credits would exceed debits on the credit account")]
    ExceedsDebits,
    #[error("a balance would exceed the largest representable amount")]
    BalanceOverflow,
    #[error("the hold timeout is longer than 30 days")]
    TimeoutTooLong,
    #[error("the referenced transfer does not exist")]
    ReferenceNotFound,
    #[error("the pending transfer does not exist")]
    PendingNotFound,
    #[error("the pending transfer was already posted")]
    PendingAlreadyPosted,
    #[error("the pending transfer was already voided")]
    PendingAlreadyVoided,
    #[error("the pending transfer has expired")]
    PendingExpired,
    #[error("the posted amount exceeds the pending amount")]
    PostExceedsPending,
}

impl RejectReason {
    /// A stable snake_case name for metrics labels and API error codes.
    pub fn code(self) -> &'static str {
        use RejectReason::*;
        match self {
            BatchEmpty => "batch_empty",
            BatchTooLarge => "batch_too_large",
            DuplicateIdInBatch => "duplicate_id_in_batch",
            IdempotencyConflict => "idempotency_conflict",
            SameAccount => "same_account",
            DebitAccountNotFound => "debit_account_not_found",
            CreditAccountNotFound => "credit_account_not_found",
            CurrencyMismatch => "currency_mismatch",
            DebitAccountFrozen => "debit_account_frozen",
            CreditAccountFrozen => "credit_account_frozen",
            DebitAccountClosed => "debit_account_closed",
            CreditAccountClosed => "credit_account_closed",
            ExceedsCredits => "exceeds_credits",
            ExceedsDebits => "exceeds_debits",
            BalanceOverflow => "balance_overflow",
            TimeoutTooLong => "timeout_too_long",
            ReferenceNotFound => "reference_not_found",
            PendingNotFound => "pending_not_found",
            PendingAlreadyPosted => "pending_already_posted",
            PendingAlreadyVoided => "pending_already_voided",
            PendingExpired => "pending_expired",
            PostExceedsPending => "post_exceeds_pending",
        }
    }
}

/// A refused batch: which transfer (by position) was refused, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("transfer {index} of the batch was rejected: {reason}")]
pub struct Rejection {
    pub index: usize,
    pub reason: RejectReason,
}

/// An accepted batch. `replayed` is true when every transfer already existed with the same
/// content: an idempotent retry that moved nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub transfers: Vec<Transfer>,
    pub replayed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountRejection {
    #[error("an account with this id already exists with different settings")]
    Exists,
    #[error(transparent)]
    Flags(#[from] FlagsError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateChangeRejection {
    #[error("the account does not exist")]
    NotFound,
    #[error("the account is closed")]
    Closed,
    #[error("the account still has pending holds")]
    HasPending,
    #[error("the account still holds money")]
    HasBalance,
}

/// A change of an account's state by an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateChange {
    Freeze,
    Unfreeze,
    Close,
    /// Close only an account that holds nothing: no hold pending and posted debits equal to
    /// posted credits (a customer closing their wallet), decided with the ledger's own view so
    /// no credit can slip in between a check and the close.
    CloseEmpty,
}

/// What storage must load before a group of batches can be decided.
#[derive(Debug, Default)]
pub struct Needs {
    pub transfers: BTreeSet<TransferId>,
    pub holds: BTreeSet<TransferId>,
    pub accounts: BTreeSet<AccountId>,
}

impl Needs {
    /// Everything the requests name directly. Accounts of holds come from [`WorkingSet::hold_accounts`].
    pub fn of<'a>(requests: impl IntoIterator<Item = &'a TransferRequest>) -> Needs {
        let mut needs = Needs::default();
        for request in requests {
            needs.transfers.insert(request.id());
            match request {
                TransferRequest::Move(m) => {
                    needs.accounts.insert(m.debit);
                    needs.accounts.insert(m.credit);
                    needs.transfers.extend(m.reference);
                }
                TransferRequest::Post { pending_id, .. }
                | TransferRequest::Void { pending_id, .. } => {
                    needs.holds.insert(*pending_id);
                }
            }
        }
        needs
    }
}

enum Undo {
    Account { previous: Account, was_dirty: bool },
    Hold { previous: Hold, was_updated: bool },
}

/// The part of the ledger that a group of batches touches, and what the group changed.
#[derive(Default)]
pub struct WorkingSet {
    accounts: HashMap<AccountId, Account>,
    transfers: HashMap<TransferId, Transfer>,
    holds: HashMap<TransferId, Hold>,
    new_transfers: Vec<TransferId>,
    new_holds: Vec<TransferId>,
    new_holds_set: HashSet<TransferId>,
    updated_holds: BTreeSet<TransferId>,
    dirty_accounts: BTreeSet<AccountId>,
    undo: Vec<Undo>,
}

impl WorkingSet {
    pub fn new() -> WorkingSet {
        WorkingSet::default()
    }

    pub fn load_account(&mut self, account: Account) {
        self.accounts.insert(account.id, account);
    }

    pub fn load_transfer(&mut self, transfer: Transfer) {
        self.transfers.insert(transfer.id, transfer);
    }

    pub fn load_hold(&mut self, hold: Hold) {
        self.holds.insert(hold.pending_id, hold);
    }

    /// Accounts named by loaded holds that are not loaded yet.
    pub fn hold_accounts(&self) -> BTreeSet<AccountId> {
        self.holds
            .values()
            .flat_map(|h| [h.debit, h.credit])
            .filter(|id| !self.accounts.contains_key(id))
            .collect()
    }

    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    /// Transfers created by this working set, in the order they were decided.
    pub fn new_transfers(&self) -> impl Iterator<Item = &Transfer> {
        self.new_transfers
            .iter()
            .filter_map(|id| self.transfers.get(id))
    }

    /// Holds created by this working set, in their final state.
    pub fn new_holds(&self) -> impl Iterator<Item = &Hold> {
        self.new_holds.iter().filter_map(|id| self.holds.get(id))
    }

    /// Holds that existed before and changed state.
    pub fn updated_holds(&self) -> impl Iterator<Item = &Hold> {
        self.updated_holds
            .iter()
            .filter_map(|id| self.holds.get(id))
    }

    /// Accounts whose balances changed, in id order (the order storage locks and writes them).
    pub fn dirty_accounts(&self) -> impl Iterator<Item = &Account> {
        self.dirty_accounts
            .iter()
            .filter_map(|id| self.accounts.get(id))
    }

    /// Opens an account, or returns the existing one if it was opened with the same settings.
    pub fn open_account(
        &mut self,
        new: &NewAccount,
        now: crate::Timestamp,
    ) -> Result<(Account, bool), AccountRejection> {
        new.flags.check()?;
        if let Some(existing) = self.accounts.get(&new.id) {
            let same = existing.currency == new.currency
                && existing.code == new.code
                && limit_settings(existing.flags) == limit_settings(new.flags);
            return if same {
                Ok((existing.clone(), false))
            } else {
                Err(AccountRejection::Exists)
            };
        }
        let account = Account::open(new, now);
        self.accounts.insert(new.id, account.clone());
        self.dirty_accounts.insert(new.id);
        Ok((account, true))
    }

    /// Freezes, unfreezes or closes a loaded account.
    pub fn change_state(
        &mut self,
        id: AccountId,
        change: StateChange,
    ) -> Result<Account, StateChangeRejection> {
        let account = self
            .accounts
            .get_mut(&id)
            .ok_or(StateChangeRejection::NotFound)?;
        if account.flags.closed {
            return Err(StateChangeRejection::Closed);
        }
        match change {
            StateChange::Freeze => account.flags.frozen = true,
            StateChange::Unfreeze => account.flags.frozen = false,
            StateChange::Close | StateChange::CloseEmpty => {
                if account.balance.debits_pending != 0 || account.balance.credits_pending != 0 {
                    return Err(StateChangeRejection::HasPending);
                }
                if change == StateChange::CloseEmpty
                    && account.balance.debits_posted != account.balance.credits_posted
                {
                    return Err(StateChangeRejection::HasBalance);
                }
                account.flags.closed = true;
            }
        }
        self.dirty_accounts.insert(id);
        Ok(account.clone())
    }

    /// Decides one atomic batch: every transfer applies, or none does.
    pub fn apply_batch(
        &mut self,
        batch: &[TransferRequest],
        now: crate::Timestamp,
    ) -> Result<Applied, Rejection> {
        let reject = |index, reason| Err(Rejection { index, reason });
        if batch.is_empty() {
            return reject(0, RejectReason::BatchEmpty);
        }
        if batch.len() > BATCH_TRANSFERS_MAX {
            return reject(BATCH_TRANSFERS_MAX, RejectReason::BatchTooLarge);
        }
        let mut seen = HashSet::with_capacity(batch.len());
        let mut existing = Vec::new();
        for (index, request) in batch.iter().enumerate() {
            if !seen.insert(request.id()) {
                return reject(index, RejectReason::DuplicateIdInBatch);
            }
            if let Some(transfer) = self.transfers.get(&request.id()) {
                let hold = request.pending_id().and_then(|p| self.holds.get(&p));
                if !transfer.matches(request, hold) {
                    return reject(index, RejectReason::IdempotencyConflict);
                }
                existing.push(transfer.clone());
            }
        }
        if !existing.is_empty() {
            // A retry must repeat the whole batch; a batch that mixes old and new ids is
            // refused rather than half-applied.
            if existing.len() != batch.len() {
                return reject(0, RejectReason::IdempotencyConflict);
            }
            return Ok(Applied {
                transfers: existing,
                replayed: true,
            });
        }
        let new_transfers_before = self.new_transfers.len();
        let new_holds_before = self.new_holds.len();
        for (index, request) in batch.iter().enumerate() {
            if let Err(reason) = self.apply_one(request, now) {
                self.rollback(new_transfers_before, new_holds_before);
                return reject(index, reason);
            }
        }
        self.undo.clear();
        let transfers = self.new_transfers[new_transfers_before..]
            .iter()
            .filter_map(|id| self.transfers.get(id).cloned())
            .collect();
        Ok(Applied {
            transfers,
            replayed: false,
        })
    }

    /// Releases a pending transfer whose timeout has passed, recording it as `id`.
    pub fn expire_hold(
        &mut self,
        pending_id: TransferId,
        id: TransferId,
        now: crate::Timestamp,
    ) -> Result<Transfer, RejectReason> {
        if self.transfers.contains_key(&id) {
            return Err(RejectReason::IdempotencyConflict);
        }
        let hold = self
            .holds
            .get(&pending_id)
            .ok_or(RejectReason::PendingNotFound)?
            .clone();
        Self::check_open(&hold)?;
        if !hold.is_expired(now) {
            return Err(RejectReason::PendingNotFound);
        }
        let before = (self.new_transfers.len(), self.new_holds.len());
        let result = self.release(
            &hold,
            id,
            Metadata::empty(),
            TransferKind::ExpirePending { pending_id },
            HoldState::Expired,
            now,
        );
        match result {
            Ok(transfer) => {
                self.undo.clear();
                Ok(transfer)
            }
            Err(reason) => {
                self.rollback(before.0, before.1);
                Err(reason)
            }
        }
    }

    fn apply_one(
        &mut self,
        request: &TransferRequest,
        now: crate::Timestamp,
    ) -> Result<(), RejectReason> {
        match request {
            TransferRequest::Move(m) => self.apply_move(m, now),
            TransferRequest::Post {
                id,
                pending_id,
                amount,
                metadata,
            } => self.apply_post(*id, *pending_id, *amount, metadata, now),
            TransferRequest::Void {
                id,
                pending_id,
                metadata,
            } => {
                let hold = self.open_hold(*pending_id, now)?;
                let kind = TransferKind::VoidPending {
                    pending_id: *pending_id,
                };
                self.release(&hold, *id, metadata.clone(), kind, HoldState::Voided, now)
                    .map(|_| ())
            }
        }
    }

    fn apply_move(&mut self, m: &Move, now: crate::Timestamp) -> Result<(), RejectReason> {
        let (debit, credit) = self.check_move(m)?;
        let amount = m.amount.minor_units();
        let (mut debit_balance, mut credit_balance) = (debit.balance, credit.balance);
        if m.pending.is_some() {
            debit_balance.debits_pending = add(debit_balance.debits_pending, amount)?;
            credit_balance.credits_pending = add(credit_balance.credits_pending, amount)?;
        } else {
            debit_balance.debits_posted = add(debit_balance.debits_posted, amount)?;
            credit_balance.credits_posted = add(credit_balance.credits_posted, amount)?;
        }
        check_limits(debit, &debit_balance, credit, &credit_balance)?;
        let timestamp = now
            .max(debit.last_timestamp.next())
            .max(credit.last_timestamp.next());
        let kind = match m.pending {
            None => TransferKind::Posted,
            Some(p) => TransferKind::Pending {
                expires_at: p.timeout_s.map(|t| timestamp.saturating_add_secs(t)),
            },
        };
        let transfer = Transfer {
            id: m.id,
            debit: m.debit,
            credit: m.credit,
            amount: m.amount,
            currency: m.currency,
            code: m.code,
            kind,
            reference: m.reference,
            metadata: m.metadata.clone(),
            timestamp,
            debit_prev: debit.last_transfer,
            credit_prev: credit.last_transfer,
            debit_balance,
            credit_balance,
        };
        if let TransferKind::Pending { expires_at } = kind {
            self.place_hold(m, expires_at);
        }
        self.record(transfer);
        Ok(())
    }

    /// What a move needs before any balance is computed: two distinct, existing accounts in
    /// its currency that may move money, a hold timeout within bounds, and a reference to a
    /// known transfer.
    fn check_move(&self, m: &Move) -> Result<(&Account, &Account), RejectReason> {
        use RejectReason::*;
        if m.debit == m.credit {
            return Err(SameAccount);
        }
        if m.pending
            .and_then(|p| p.timeout_s)
            .is_some_and(|t| t > HOLD_TIMEOUT_S_MAX)
        {
            return Err(TimeoutTooLong);
        }
        let debit = self.accounts.get(&m.debit).ok_or(DebitAccountNotFound)?;
        let credit = self.accounts.get(&m.credit).ok_or(CreditAccountNotFound)?;
        if debit.currency != m.currency || credit.currency != m.currency {
            return Err(CurrencyMismatch);
        }
        check_can_move(debit, credit)?;
        if m.reference
            .is_some_and(|r| !self.transfers.contains_key(&r))
        {
            return Err(ReferenceNotFound);
        }
        Ok((debit, credit))
    }

    /// Places the hold a pending move makes.
    fn place_hold(&mut self, m: &Move, expires_at: Option<crate::Timestamp>) {
        let hold = Hold {
            pending_id: m.id,
            debit: m.debit,
            credit: m.credit,
            amount: m.amount,
            currency: m.currency,
            code: m.code,
            expires_at,
            state: HoldState::Pending,
        };
        self.new_holds.push(m.id);
        self.new_holds_set.insert(m.id);
        self.holds.insert(m.id, hold);
    }

    fn apply_post(
        &mut self,
        id: TransferId,
        pending_id: TransferId,
        amount: Option<Amount>,
        metadata: &Metadata,
        now: crate::Timestamp,
    ) -> Result<(), RejectReason> {
        use RejectReason::*;
        let hold = self.open_hold(pending_id, now)?;
        let posted = amount.unwrap_or(hold.amount);
        if posted > hold.amount {
            return Err(PostExceedsPending);
        }
        let debit = self.accounts.get(&hold.debit).ok_or(DebitAccountNotFound)?;
        let credit = self
            .accounts
            .get(&hold.credit)
            .ok_or(CreditAccountNotFound)?;
        check_can_move(debit, credit)?;
        let (mut debit_balance, mut credit_balance) = (debit.balance, credit.balance);
        let (held, posted_units) = (hold.amount.minor_units(), posted.minor_units());
        debit_balance.debits_pending = sub(debit_balance.debits_pending, held)?;
        debit_balance.debits_posted = add(debit_balance.debits_posted, posted_units)?;
        credit_balance.credits_pending = sub(credit_balance.credits_pending, held)?;
        credit_balance.credits_posted = add(credit_balance.credits_posted, posted_units)?;
        check_limits(debit, &debit_balance, credit, &credit_balance)?;
        let timestamp = now
            .max(debit.last_timestamp.next())
            .max(credit.last_timestamp.next());
        let transfer = Transfer {
            id,
            debit: hold.debit,
            credit: hold.credit,
            amount: posted,
            currency: hold.currency,
            code: hold.code,
            kind: TransferKind::PostPending { pending_id },
            reference: None,
            metadata: metadata.clone(),
            timestamp,
            debit_prev: debit.last_transfer,
            credit_prev: credit.last_transfer,
            debit_balance,
            credit_balance,
        };
        self.set_hold_state(pending_id, HoldState::Posted);
        self.record(transfer);
        Ok(())
    }

    /// Voids or expires a hold: the pending amounts are released, nothing is posted.
    fn release(
        &mut self,
        hold: &Hold,
        id: TransferId,
        metadata: Metadata,
        kind: TransferKind,
        state: HoldState,
        now: crate::Timestamp,
    ) -> Result<Transfer, RejectReason> {
        use RejectReason::*;
        let debit = self.accounts.get(&hold.debit).ok_or(DebitAccountNotFound)?;
        let credit = self
            .accounts
            .get(&hold.credit)
            .ok_or(CreditAccountNotFound)?;
        let (mut debit_balance, mut credit_balance) = (debit.balance, credit.balance);
        let held = hold.amount.minor_units();
        debit_balance.debits_pending = sub(debit_balance.debits_pending, held)?;
        credit_balance.credits_pending = sub(credit_balance.credits_pending, held)?;
        let timestamp = now
            .max(debit.last_timestamp.next())
            .max(credit.last_timestamp.next());
        let transfer = Transfer {
            id,
            debit: hold.debit,
            credit: hold.credit,
            amount: hold.amount,
            currency: hold.currency,
            code: hold.code,
            kind,
            reference: None,
            metadata,
            timestamp,
            debit_prev: debit.last_transfer,
            credit_prev: credit.last_transfer,
            debit_balance,
            credit_balance,
        };
        self.set_hold_state(hold.pending_id, state);
        self.record(transfer.clone());
        Ok(transfer)
    }

    fn open_hold(
        &self,
        pending_id: TransferId,
        now: crate::Timestamp,
    ) -> Result<Hold, RejectReason> {
        let hold = self
            .holds
            .get(&pending_id)
            .ok_or(RejectReason::PendingNotFound)?;
        Self::check_open(hold)?;
        if hold.is_expired(now) {
            return Err(RejectReason::PendingExpired);
        }
        Ok(hold.clone())
    }

    fn check_open(hold: &Hold) -> Result<(), RejectReason> {
        match hold.state {
            HoldState::Pending => Ok(()),
            HoldState::Posted => Err(RejectReason::PendingAlreadyPosted),
            HoldState::Voided => Err(RejectReason::PendingAlreadyVoided),
            HoldState::Expired => Err(RejectReason::PendingExpired),
        }
    }

    fn set_hold_state(&mut self, pending_id: TransferId, state: HoldState) {
        let was_updated = self.updated_holds.contains(&pending_id);
        if let Some(hold) = self.holds.get_mut(&pending_id) {
            self.undo.push(Undo::Hold {
                previous: hold.clone(),
                was_updated,
            });
            hold.state = state;
            if !self.new_holds_set.contains(&pending_id) {
                self.updated_holds.insert(pending_id);
            }
        }
    }

    /// Stores a decided transfer and moves both accounts' balances and history heads.
    fn record(&mut self, transfer: Transfer) {
        for (account_id, balance) in [
            (transfer.debit, transfer.debit_balance),
            (transfer.credit, transfer.credit_balance),
        ] {
            let was_dirty = self.dirty_accounts.contains(&account_id);
            if let Some(account) = self.accounts.get_mut(&account_id) {
                self.undo.push(Undo::Account {
                    previous: account.clone(),
                    was_dirty,
                });
                account.balance = balance;
                account.last_transfer = Some(transfer.id);
                account.last_timestamp = transfer.timestamp;
                self.dirty_accounts.insert(account_id);
            }
        }
        self.new_transfers.push(transfer.id);
        self.transfers.insert(transfer.id, transfer);
    }

    fn rollback(&mut self, new_transfers_len: usize, new_holds_len: usize) {
        while let Some(entry) = self.undo.pop() {
            match entry {
                Undo::Account {
                    previous,
                    was_dirty,
                } => {
                    if !was_dirty {
                        self.dirty_accounts.remove(&previous.id);
                    }
                    self.accounts.insert(previous.id, previous);
                }
                Undo::Hold {
                    previous,
                    was_updated,
                } => {
                    if !was_updated {
                        self.updated_holds.remove(&previous.pending_id);
                    }
                    self.holds.insert(previous.pending_id, previous);
                }
            }
        }
        for id in self.new_transfers.drain(new_transfers_len..) {
            self.transfers.remove(&id);
        }
        for id in self.new_holds.drain(new_holds_len..) {
            self.new_holds_set.remove(&id);
            self.holds.remove(&id);
        }
    }
}

/// Account settings compared for idempotent opening; frozen and closed are state, not settings.
fn limit_settings(flags: crate::AccountFlags) -> (bool, bool) {
    (
        flags.debits_must_not_exceed_credits,
        flags.credits_must_not_exceed_debits,
    )
}

fn check_can_move(debit: &Account, credit: &Account) -> Result<(), RejectReason> {
    use RejectReason::*;
    if debit.flags.closed {
        return Err(DebitAccountClosed);
    }
    if credit.flags.closed {
        return Err(CreditAccountClosed);
    }
    if debit.flags.frozen {
        return Err(DebitAccountFrozen);
    }
    if credit.flags.frozen {
        return Err(CreditAccountFrozen);
    }
    Ok(())
}

fn check_limits(
    debit: &Account,
    debit_balance: &Balance,
    credit: &Account,
    credit_balance: &Balance,
) -> Result<(), RejectReason> {
    if !debit_balance.within_limits(debit.flags) {
        return Err(RejectReason::ExceedsCredits);
    }
    if !credit_balance.within_limits(credit.flags) {
        return Err(RejectReason::ExceedsDebits);
    }
    Ok(())
}

fn add(total: u64, amount: u64) -> Result<u64, RejectReason> {
    total
        .checked_add(amount)
        .filter(|sum| *sum <= AMOUNT_MAX)
        .ok_or(RejectReason::BalanceOverflow)
}

fn sub(total: u64, amount: u64) -> Result<u64, RejectReason> {
    // A pending total smaller than the hold it carries would mean corrupted state; refusing
    // the transfer is safer than wrapping, and the audit will flag the account.
    total
        .checked_sub(amount)
        .ok_or(RejectReason::BalanceOverflow)
}
