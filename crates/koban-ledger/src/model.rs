//! The ledger's values: ids, accounts, balances, transfers, holds, metadata.

use std::collections::BTreeMap;

use crate::money::{AMOUNT_MAX, Amount, Currency};

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of ", $what, ": 128 bits, never zero, chosen by the client.")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u128);

        impl $name {
            pub fn new(value: u128) -> Result<$name, IdError> {
                if value == 0 {
                    Err(IdError::Zero)
                } else {
                    Ok($name(value))
                }
            }

            pub fn get(self) -> u128 {
                self.0
            }

            /// Big-endian bytes, so that byte order equals numeric order (time order for UUIDv7).
            pub fn to_bytes(self) -> [u8; 16] {
                self.0.to_be_bytes()
            }

            pub fn from_bytes(bytes: &[u8]) -> Result<$name, IdError> {
                let array: [u8; 16] = bytes.try_into().map_err(|_| IdError::Length)?;
                $name::new(u128::from_be_bytes(array))
            }
        }
    };
}

id_type!(AccountId, "an account");
id_type!(TransferId, "a transfer");

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id must not be zero")]
    Zero,
    #[error("id must be exactly 16 bytes")]
    Length,
}

/// Nanoseconds since the Unix epoch. The core has no clock: callers pass `now` in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_nanos(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    pub fn nanos(self) -> u64 {
        self.0
    }

    pub fn saturating_add_secs(self, seconds: u32) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::from(seconds).saturating_mul(1_000_000_000)),
        )
    }

    /// The next representable instant; used to keep an account's history strictly ordered.
    pub fn next(self) -> Timestamp {
        Timestamp(self.0.saturating_add(1))
    }
}

/// A free-form classification of an account or transfer chosen by the layer above the ledger
/// (for example "customer wallet" or "merchant fee"). The ledger only stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u16);

/// Flags that the ledger enforces on every transfer touching the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AccountFlags {
    /// Debits (pending and posted) may not exceed posted credits: the account cannot go negative.
    pub debits_must_not_exceed_credits: bool,
    /// Credits (pending and posted) may not exceed posted debits.
    pub credits_must_not_exceed_debits: bool,
    /// Nothing may move in or out; voiding or expiring an existing hold still releases it.
    pub frozen: bool,
    /// Closed for good: only releases of holds are allowed.
    pub closed: bool,
}

impl AccountFlags {
    pub fn to_bits(self) -> u16 {
        u16::from(self.debits_must_not_exceed_credits)
            | (u16::from(self.credits_must_not_exceed_debits) << 1)
            | (u16::from(self.frozen) << 2)
            | (u16::from(self.closed) << 3)
    }

    pub fn from_bits(bits: u16) -> Result<AccountFlags, FlagsError> {
        if bits & !0b1111 != 0 {
            return Err(FlagsError::UnknownBits);
        }
        let flags = AccountFlags {
            debits_must_not_exceed_credits: bits & 1 != 0,
            credits_must_not_exceed_debits: bits & 2 != 0,
            frozen: bits & 4 != 0,
            closed: bits & 8 != 0,
        };
        flags.check()?;
        Ok(flags)
    }

    pub fn check(self) -> Result<(), FlagsError> {
        if self.debits_must_not_exceed_credits && self.credits_must_not_exceed_debits {
            return Err(FlagsError::BothLimits);
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    #[error("an account cannot limit both debits and credits")]
    BothLimits,
    #[error("unknown account flag bits")]
    UnknownBits,
}

/// The four running totals of an account, each at most [`AMOUNT_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Balance {
    pub debits_pending: u64,
    pub debits_posted: u64,
    pub credits_pending: u64,
    pub credits_posted: u64,
}

impl Balance {
    /// Posted credits minus posted debits: what a wallet holder calls "my balance".
    pub fn net_credit_posted(&self) -> i128 {
        i128::from(self.credits_posted) - i128::from(self.debits_posted)
    }

    /// What may still be spent from a `debits_must_not_exceed_credits` account.
    pub fn available_credit(&self) -> i128 {
        i128::from(self.credits_posted)
            - i128::from(self.debits_posted)
            - i128::from(self.debits_pending)
    }

    /// True when the available credit covers `amount` (a spend of it would not overdraw).
    pub fn covers(&self, amount: crate::Amount) -> bool {
        self.available_credit() >= i128::from(amount.minor_units())
    }

    /// True when the balance respects the limit flags of its account.
    pub fn within_limits(&self, flags: AccountFlags) -> bool {
        let debits = u128::from(self.debits_pending) + u128::from(self.debits_posted);
        let credits = u128::from(self.credits_pending) + u128::from(self.credits_posted);
        (!flags.debits_must_not_exceed_credits || debits <= u128::from(self.credits_posted))
            && (!flags.credits_must_not_exceed_debits || credits <= u128::from(self.debits_posted))
    }

    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[0..8].copy_from_slice(&self.debits_pending.to_be_bytes());
        out[8..16].copy_from_slice(&self.debits_posted.to_be_bytes());
        out[16..24].copy_from_slice(&self.credits_pending.to_be_bytes());
        out[24..32].copy_from_slice(&self.credits_posted.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Balance> {
        let array: &[u8; 32] = bytes.try_into().ok()?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&array[i * 8..i * 8 + 8]);
            u64::from_be_bytes(w)
        };
        let balance = Balance {
            debits_pending: word(0),
            debits_posted: word(1),
            credits_pending: word(2),
            credits_posted: word(3),
        };
        let fits = [word(0), word(1), word(2), word(3)]
            .iter()
            .all(|w| *w <= AMOUNT_MAX);
        fits.then_some(balance)
    }
}

/// A request to open an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccount {
    pub id: AccountId,
    pub currency: Currency,
    pub code: Code,
    pub flags: AccountFlags,
}

/// An account as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub currency: Currency,
    pub code: Code,
    pub flags: AccountFlags,
    pub balance: Balance,
    pub created_at: Timestamp,
    /// The newest transfer touching this account: the head of its history chain.
    pub last_transfer: Option<TransferId>,
    /// The timestamp of `last_transfer`; the next transfer is stamped strictly later.
    pub last_timestamp: Timestamp,
}

impl Account {
    pub fn open(new: &NewAccount, now: Timestamp) -> Account {
        Account {
            id: new.id,
            currency: new.currency,
            code: new.code,
            flags: new.flags,
            balance: Balance::default(),
            created_at: now,
            last_transfer: None,
            last_timestamp: now,
        }
    }
}

/// Bounds on transfer metadata. Named with the unit last.
pub const METADATA_ENTRIES_MAX: usize = 16;
pub const METADATA_KEY_BYTES_MAX: usize = 64;
pub const METADATA_VALUE_BYTES_MAX: usize = 256;

/// A small map of strings attached to a transfer (order id, message, case id ...).
/// Keys are `[a-z0-9_.-]`, 1 to 64 bytes; values are up to 256 bytes of UTF-8 without control
/// characters; at most 16 entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    pub fn empty() -> Metadata {
        Metadata(BTreeMap::new())
    }

    pub fn parse<I, K, V>(entries: I) -> Result<Metadata, MetadataError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (key, value) in entries {
            if map.len() == METADATA_ENTRIES_MAX {
                return Err(MetadataError::TooManyEntries);
            }
            let (key, value) = (key.into(), value.into());
            let key_ok = !key.is_empty()
                && key.len() <= METADATA_KEY_BYTES_MAX
                && key
                    .bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'));
            if !key_ok {
                return Err(MetadataError::BadKey);
            }
            if value.len() > METADATA_VALUE_BYTES_MAX || value.chars().any(char::is_control) {
                return Err(MetadataError::BadValue);
            }
            if map.insert(key, value).is_some() {
                return Err(MetadataError::DuplicateKey);
            }
        }
        Ok(Metadata(map))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata has more than 16 entries")]
    TooManyEntries,
    #[error("metadata keys must be 1 to 64 characters of a-z, 0-9, '_', '.', '-'")]
    BadKey,
    #[error("metadata values must be at most 256 bytes with no control characters")]
    BadValue,
    #[error("metadata has the same key twice")]
    DuplicateKey,
}

/// The longest a hold may stay pending before it releases itself: 30 days.
pub const HOLD_TIMEOUT_S_MAX: u32 = 30 * 24 * 3600;

/// One operation on the ledger. Each has a client-chosen id that makes retries safe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferRequest {
    /// Move `amount` from `debit` to `credit`, posted at once or held as pending.
    Move(Move),
    /// Post a pending transfer: all of it (`amount: None`) or part of it; the rest is released.
    Post {
        id: TransferId,
        pending_id: TransferId,
        amount: Option<Amount>,
        metadata: Metadata,
    },
    /// Release a pending transfer without moving anything.
    Void {
        id: TransferId,
        pending_id: TransferId,
        metadata: Metadata,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub id: TransferId,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    pub code: Code,
    /// An earlier transfer this one corrects (reversal, refund, compensation).
    pub reference: Option<TransferId>,
    pub metadata: Metadata,
    /// `Some` makes this a hold: reserved now, posted or voided later.
    pub pending: Option<PendingOptions>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingOptions {
    /// Seconds until the hold releases itself; `None` waits for an explicit post or void.
    pub timeout_s: Option<u32>,
}

impl TransferRequest {
    pub fn id(&self) -> TransferId {
        match self {
            TransferRequest::Move(m) => m.id,
            TransferRequest::Post { id, .. } | TransferRequest::Void { id, .. } => *id,
        }
    }

    pub fn pending_id(&self) -> Option<TransferId> {
        match self {
            TransferRequest::Move(_) => None,
            TransferRequest::Post { pending_id, .. } | TransferRequest::Void { pending_id, .. } => {
                Some(*pending_id)
            }
        }
    }
}

/// What a recorded transfer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferKind {
    /// Moved posted money.
    Posted,
    /// Reserved money; `expires_at` is when it releases itself, if ever.
    Pending { expires_at: Option<Timestamp> },
    /// Posted (part of) a pending transfer; `amount` is what was posted.
    PostPending { pending_id: TransferId },
    /// Released a pending transfer on request; `amount` is what was released.
    VoidPending { pending_id: TransferId },
    /// Released a pending transfer because it timed out.
    ExpirePending { pending_id: TransferId },
}

impl TransferKind {
    pub fn pending_id(self) -> Option<TransferId> {
        match self {
            TransferKind::Posted | TransferKind::Pending { .. } => None,
            TransferKind::PostPending { pending_id }
            | TransferKind::VoidPending { pending_id }
            | TransferKind::ExpirePending { pending_id } => Some(pending_id),
        }
    }
}

/// A transfer as recorded: immutable once written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: TransferId,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    pub code: Code,
    pub kind: TransferKind,
    pub reference: Option<TransferId>,
    pub metadata: Metadata,
    pub timestamp: Timestamp,
    /// The previous transfer in the debit account's history (a linked list walked by key).
    pub debit_prev: Option<TransferId>,
    /// The previous transfer in the credit account's history.
    pub credit_prev: Option<TransferId>,
    /// Balances of the debit and credit accounts right after this transfer.
    pub debit_balance: Balance,
    pub credit_balance: Balance,
}

impl Transfer {
    /// The previous transfer in `account`'s history and that account's balance after this one.
    pub fn side(&self, account: AccountId) -> Option<(Option<TransferId>, Balance)> {
        if account == self.debit {
            Some((self.debit_prev, self.debit_balance))
        } else if account == self.credit {
            Some((self.credit_prev, self.credit_balance))
        } else {
            None
        }
    }

    /// True when `request`, retried with the same id, asks for exactly what this transfer did.
    /// `hold` is the hold a post names, if known: a post without an amount asks for the whole
    /// hold, so it repeats only a post of the whole hold, not a partial one.
    pub fn matches(&self, request: &TransferRequest, hold: Option<&Hold>) -> bool {
        if let TransferRequest::Post { amount: None, .. } = request
            && hold.is_some_and(|h| h.amount != self.amount)
        {
            return false;
        }
        match (request, self.kind) {
            (TransferRequest::Move(m), kind) => {
                let kind_matches = match (m.pending, kind) {
                    (None, TransferKind::Posted) => true,
                    // A hold retried with another timeout is different content.
                    (Some(p), TransferKind::Pending { expires_at }) => {
                        expires_at == p.timeout_s.map(|t| self.timestamp.saturating_add_secs(t))
                    }
                    _ => false,
                };
                kind_matches
                    && m.debit == self.debit
                    && m.credit == self.credit
                    && m.amount == self.amount
                    && m.currency == self.currency
                    && m.code == self.code
                    && m.reference == self.reference
                    && m.metadata == self.metadata
            }
            (
                TransferRequest::Post {
                    pending_id,
                    amount,
                    metadata,
                    ..
                },
                TransferKind::PostPending { pending_id: done },
            ) => {
                *pending_id == done
                    && amount.is_none_or(|a| a == self.amount)
                    && *metadata == self.metadata
            }
            (
                TransferRequest::Void {
                    pending_id,
                    metadata,
                    ..
                },
                TransferKind::VoidPending { pending_id: done },
            ) => *pending_id == done && *metadata == self.metadata,
            _ => false,
        }
    }
}

/// The state of a pending transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HoldState {
    Pending,
    Posted,
    Voided,
    Expired,
}

impl HoldState {
    pub fn to_code(self) -> i16 {
        match self {
            HoldState::Pending => 0,
            HoldState::Posted => 1,
            HoldState::Voided => 2,
            HoldState::Expired => 3,
        }
    }

    pub fn from_code(code: i16) -> Option<HoldState> {
        match code {
            0 => Some(HoldState::Pending),
            1 => Some(HoldState::Posted),
            2 => Some(HoldState::Voided),
            3 => Some(HoldState::Expired),
            _ => None,
        }
    }
}

/// A pending transfer and what has become of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub pending_id: TransferId,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    pub code: Code,
    pub expires_at: Option<Timestamp>,
    pub state: HoldState,
}

impl Hold {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}
