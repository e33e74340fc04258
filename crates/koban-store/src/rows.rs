//! Ledger values as plain column values, and back. Both backends store exactly these columns;
//! this is the one place that converts between rows and domain types.

use koban_ledger::{
    Account, AccountFlags, AccountId, Amount, Balance, Code, Currency, Hold, HoldState, Metadata,
    Timestamp, Transfer, TransferId, TransferKind,
};

use crate::StoreError;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

pub fn ts_to_i64(ts: Timestamp) -> i64 {
    i64::try_from(ts.nanos()).unwrap_or(i64::MAX)
}

pub fn ts_from_i64(value: i64) -> Result<Timestamp, StoreError> {
    u64::try_from(value)
        .map(Timestamp::from_nanos)
        .map_err(|_| corrupt("negative timestamp"))
}

pub fn units_to_i64(units: u64) -> i64 {
    // The ledger keeps every amount and balance at most AMOUNT_MAX = i64::MAX.
    i64::try_from(units).unwrap_or(i64::MAX)
}

fn account_id(bytes: &[u8]) -> Result<AccountId, StoreError> {
    AccountId::from_bytes(bytes).map_err(|_| corrupt("account id"))
}

fn transfer_id(bytes: &[u8]) -> Result<TransferId, StoreError> {
    TransferId::from_bytes(bytes).map_err(|_| corrupt("transfer id"))
}

fn opt_transfer_id(bytes: Option<&[u8]>) -> Result<Option<TransferId>, StoreError> {
    bytes.map(transfer_id).transpose()
}

fn currency(code: &str) -> Result<Currency, StoreError> {
    Currency::parse(code).map_err(|_| corrupt("currency"))
}

fn code(value: i32) -> Result<Code, StoreError> {
    u16::try_from(value).map(Code).map_err(|_| corrupt("code"))
}

fn balance(bytes: &[u8]) -> Result<Balance, StoreError> {
    Balance::from_bytes(bytes).ok_or_else(|| corrupt("balance snapshot"))
}

fn units(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt("negative balance"))
}

/// The `accounts` table.
#[derive(Clone, Debug)]
pub struct AccountRow {
    pub id: Vec<u8>,
    pub currency: String,
    pub code: i32,
    pub flags: i32,
    pub debits_pending: i64,
    pub debits_posted: i64,
    pub credits_pending: i64,
    pub credits_posted: i64,
    pub created_at: i64,
    pub last_transfer: Option<Vec<u8>>,
    pub last_timestamp: i64,
}

impl AccountRow {
    pub fn from_account(a: &Account) -> AccountRow {
        AccountRow {
            id: a.id.to_bytes().to_vec(),
            currency: a.currency.code().to_owned(),
            code: i32::from(a.code.0),
            flags: i32::from(a.flags.to_bits()),
            debits_pending: units_to_i64(a.balance.debits_pending),
            debits_posted: units_to_i64(a.balance.debits_posted),
            credits_pending: units_to_i64(a.balance.credits_pending),
            credits_posted: units_to_i64(a.balance.credits_posted),
            created_at: ts_to_i64(a.created_at),
            last_transfer: a.last_transfer.map(|t| t.to_bytes().to_vec()),
            last_timestamp: ts_to_i64(a.last_timestamp),
        }
    }

    pub fn into_account(self) -> Result<Account, StoreError> {
        let flags = u16::try_from(self.flags).map_err(|_| corrupt("flags"))?;
        Ok(Account {
            id: account_id(&self.id)?,
            currency: currency(&self.currency)?,
            code: code(self.code)?,
            flags: AccountFlags::from_bits(flags).map_err(|_| corrupt("flags"))?,
            balance: Balance {
                debits_pending: units(self.debits_pending)?,
                debits_posted: units(self.debits_posted)?,
                credits_pending: units(self.credits_pending)?,
                credits_posted: units(self.credits_posted)?,
            },
            created_at: ts_from_i64(self.created_at)?,
            last_transfer: opt_transfer_id(self.last_transfer.as_deref())?,
            last_timestamp: ts_from_i64(self.last_timestamp)?,
        })
    }
}

/// Kind codes of the `transfers.kind` column.
const KIND_POSTED: i16 = 0;
const KIND_PENDING: i16 = 1;
const KIND_POST: i16 = 2;
const KIND_VOID: i16 = 3;
const KIND_EXPIRE: i16 = 4;

/// The `transfers` table (without its commit-order `seq` key, which the database assigns).
#[derive(Clone, Debug)]
pub struct TransferRow {
    pub id: Vec<u8>,
    pub debit: Vec<u8>,
    pub credit: Vec<u8>,
    pub amount: i64,
    pub currency: String,
    pub code: i32,
    pub kind: i16,
    pub pending_id: Option<Vec<u8>>,
    pub expires_at: Option<i64>,
    pub reference: Option<Vec<u8>>,
    pub metadata: Option<String>,
    pub timestamp: i64,
    pub debit_prev: Option<Vec<u8>>,
    pub credit_prev: Option<Vec<u8>>,
    pub debit_balance: Vec<u8>,
    pub credit_balance: Vec<u8>,
}

impl TransferRow {
    pub fn from_transfer(t: &Transfer) -> TransferRow {
        let (kind, pending_id, expires_at) = match t.kind {
            TransferKind::Posted => (KIND_POSTED, None, None),
            TransferKind::Pending { expires_at } => (KIND_PENDING, None, expires_at.map(ts_to_i64)),
            TransferKind::PostPending { pending_id } => (KIND_POST, Some(pending_id), None),
            TransferKind::VoidPending { pending_id } => (KIND_VOID, Some(pending_id), None),
            TransferKind::ExpirePending { pending_id } => (KIND_EXPIRE, Some(pending_id), None),
        };
        TransferRow {
            id: t.id.to_bytes().to_vec(),
            debit: t.debit.to_bytes().to_vec(),
            credit: t.credit.to_bytes().to_vec(),
            amount: units_to_i64(t.amount.minor_units()),
            currency: t.currency.code().to_owned(),
            code: i32::from(t.code.0),
            kind,
            pending_id: pending_id.map(|p| p.to_bytes().to_vec()),
            expires_at,
            reference: t.reference.map(|r| r.to_bytes().to_vec()),
            metadata: metadata_to_json(&t.metadata),
            timestamp: ts_to_i64(t.timestamp),
            debit_prev: t.debit_prev.map(|p| p.to_bytes().to_vec()),
            credit_prev: t.credit_prev.map(|p| p.to_bytes().to_vec()),
            debit_balance: t.debit_balance.to_bytes().to_vec(),
            credit_balance: t.credit_balance.to_bytes().to_vec(),
        }
    }

    pub fn into_transfer(self) -> Result<Transfer, StoreError> {
        let pending = || {
            transfer_id(
                self.pending_id
                    .as_deref()
                    .ok_or_else(|| corrupt("pending id"))?,
            )
        };
        let kind = match self.kind {
            KIND_POSTED => TransferKind::Posted,
            KIND_PENDING => TransferKind::Pending {
                expires_at: self.expires_at.map(ts_from_i64).transpose()?,
            },
            KIND_POST => TransferKind::PostPending {
                pending_id: pending()?,
            },
            KIND_VOID => TransferKind::VoidPending {
                pending_id: pending()?,
            },
            KIND_EXPIRE => TransferKind::ExpirePending {
                pending_id: pending()?,
            },
            _ => return Err(corrupt("transfer kind")),
        };
        Ok(Transfer {
            id: transfer_id(&self.id)?,
            debit: account_id(&self.debit)?,
            credit: account_id(&self.credit)?,
            amount: Amount::from_i64(self.amount).map_err(|_| corrupt("amount"))?,
            currency: currency(&self.currency)?,
            code: code(self.code)?,
            kind,
            reference: opt_transfer_id(self.reference.as_deref())?,
            metadata: metadata_from_json(self.metadata.as_deref())?,
            timestamp: ts_from_i64(self.timestamp)?,
            debit_prev: opt_transfer_id(self.debit_prev.as_deref())?,
            credit_prev: opt_transfer_id(self.credit_prev.as_deref())?,
            debit_balance: balance(&self.debit_balance)?,
            credit_balance: balance(&self.credit_balance)?,
        })
    }

    /// True for kinds whose amount moved posted money (used by the audit).
    pub fn kind_posts(kind: i16) -> bool {
        kind == KIND_POSTED || kind == KIND_POST
    }
}

/// The `holds` table: one row per pending transfer and what became of it.
#[derive(Clone, Debug)]
pub struct HoldRow {
    pub pending_id: Vec<u8>,
    pub debit: Vec<u8>,
    pub credit: Vec<u8>,
    pub amount: i64,
    pub currency: String,
    pub code: i32,
    pub expires_at: Option<i64>,
    pub state: i16,
}

impl HoldRow {
    pub fn from_hold(h: &Hold) -> HoldRow {
        HoldRow {
            pending_id: h.pending_id.to_bytes().to_vec(),
            debit: h.debit.to_bytes().to_vec(),
            credit: h.credit.to_bytes().to_vec(),
            amount: units_to_i64(h.amount.minor_units()),
            currency: h.currency.code().to_owned(),
            code: i32::from(h.code.0),
            expires_at: h.expires_at.map(ts_to_i64),
            state: h.state.to_code(),
        }
    }

    pub fn into_hold(self) -> Result<Hold, StoreError> {
        Ok(Hold {
            pending_id: transfer_id(&self.pending_id)?,
            debit: account_id(&self.debit)?,
            credit: account_id(&self.credit)?,
            amount: Amount::from_i64(self.amount).map_err(|_| corrupt("hold amount"))?,
            currency: currency(&self.currency)?,
            code: code(self.code)?,
            expires_at: self.expires_at.map(ts_from_i64).transpose()?,
            state: HoldState::from_code(self.state).ok_or_else(|| corrupt("hold state"))?,
        })
    }
}

/// Metadata as a JSON object, or NULL when empty.
pub fn metadata_to_json(metadata: &Metadata) -> Option<String> {
    if metadata.is_empty() {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
        .collect();
    Some(serde_json::Value::Object(map).to_string())
}

pub fn metadata_from_json(text: Option<&str>) -> Result<Metadata, StoreError> {
    let Some(text) = text else {
        return Ok(Metadata::empty());
    };
    let map: std::collections::BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|_| corrupt("metadata"))?;
    Metadata::parse(map).map_err(|_| corrupt("metadata"))
}
