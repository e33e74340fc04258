//! Walking an account's history: each transfer points to the previous transfer of its debit
//! account and of its credit account, and each account to its newest transfer, so history is
//! read newest first by primary-key lookups, with no per-account index on the write path.

use koban_ledger::{Account, AccountId, Balance, Timestamp, Transfer, TransferId};

use crate::{Page, StoreError};

fn broken_chain() -> StoreError {
    StoreError::Corrupt("an account's history chain is broken".into())
}

/// Up to `limit` transfers of `account`, newest first, starting at `start` (inclusive).
pub fn page(
    account: AccountId,
    start: Option<TransferId>,
    limit: usize,
    mut fetch: impl FnMut(TransferId) -> Result<Option<Transfer>, StoreError>,
) -> Result<Page, StoreError> {
    let mut transfers = Vec::with_capacity(limit.min(crate::PAGE_TRANSFERS_MAX));
    let mut next = start;
    while let Some(id) = next {
        if transfers.len() == limit {
            break;
        }
        // A cursor that is not a transfer of this account yields an empty page, not an error,
        // so a cursor cannot be used to probe other accounts' transfers.
        let Some(transfer) = fetch(id)? else {
            if transfers.is_empty() {
                break;
            } else {
                return Err(broken_chain());
            }
        };
        let Some((prev, _)) = transfer.side(account) else {
            if transfers.is_empty() {
                break;
            } else {
                return Err(broken_chain());
            }
        };
        next = prev;
        transfers.push(transfer);
    }
    let next_cursor = if transfers.len() == limit { next } else { None };
    Ok(Page {
        transfers,
        next_cursor,
    })
}

/// The balance of `account` after every transfer stamped at or before `at`; `None` when the
/// account was opened after `at`. Walks back from the newest transfer: cost grows with the
/// number of transfers since `at`.
pub fn balance_at(
    account: &Account,
    at: Timestamp,
    mut fetch: impl FnMut(TransferId) -> Result<Option<Transfer>, StoreError>,
) -> Result<Option<Balance>, StoreError> {
    if account.created_at > at {
        return Ok(None);
    }
    let mut next = account.last_transfer;
    while let Some(id) = next {
        let transfer = fetch(id)?.ok_or_else(broken_chain)?;
        let (prev, balance) = transfer.side(account.id).ok_or_else(broken_chain)?;
        if transfer.timestamp <= at {
            return Ok(Some(balance));
        }
        next = prev;
    }
    Ok(Some(Balance::default()))
}
