//! The ledger's invariants, checked from everything a backend reads back:
//! every currency sums to zero, every constrained account is within its limit, and every
//! account's balances equal what its recorded transfers and open holds add up to.

use std::collections::{BTreeMap, HashMap, HashSet};

use koban_ledger::{Account, Currency};

use crate::StoreError;
use crate::rows::TransferRow;

/// At most this many problems are listed; the count of problems is always exact.
const PROBLEMS_LISTED_MAX: usize = 50;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    pub accounts: u64,
    pub transfers: u64,
    pub holds_pending: u64,
    pub problems_count: u64,
    pub problems: Vec<String>,
}

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.problems_count == 0
    }

    fn problem(&mut self, text: String) {
        self.problems_count += 1;
        if self.problems.len() < PROBLEMS_LISTED_MAX {
            self.problems.push(text);
        }
    }
}

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Sums {
    debits_pending: u128,
    debits_posted: u128,
    credits_pending: u128,
    credits_posted: u128,
}

/// Accumulates what the recorded transfers and holds say each balance must be.
#[derive(Default)]
pub struct Recompute {
    sums: HashMap<Vec<u8>, Sums>,
    transfers: u64,
    holds_pending: u64,
}

impl Recompute {
    pub fn add_transfer(
        &mut self,
        debit: &[u8],
        credit: &[u8],
        amount: i64,
        kind: i16,
    ) -> Result<(), StoreError> {
        self.transfers += 1;
        if !TransferRow::kind_posts(kind) {
            return Ok(());
        }
        let amount =
            u128::try_from(amount).map_err(|_| StoreError::Corrupt("negative amount".into()))?;
        self.sums.entry(debit.to_vec()).or_default().debits_posted += amount;
        self.sums.entry(credit.to_vec()).or_default().credits_posted += amount;
        Ok(())
    }

    /// Adds a hold that is still pending.
    pub fn add_pending_hold(
        &mut self,
        debit: &[u8],
        credit: &[u8],
        amount: i64,
    ) -> Result<(), StoreError> {
        self.holds_pending += 1;
        let amount =
            u128::try_from(amount).map_err(|_| StoreError::Corrupt("negative amount".into()))?;
        self.sums.entry(debit.to_vec()).or_default().debits_pending += amount;
        self.sums
            .entry(credit.to_vec())
            .or_default()
            .credits_pending += amount;
        Ok(())
    }

    pub fn finish(self, accounts: &[Account]) -> AuditReport {
        let mut report = AuditReport {
            accounts: u64::try_from(accounts.len()).unwrap_or(u64::MAX),
            transfers: self.transfers,
            holds_pending: self.holds_pending,
            ..AuditReport::default()
        };
        let mut per_currency: BTreeMap<Currency, Sums> = BTreeMap::new();
        let mut known: HashSet<Vec<u8>> = HashSet::new();
        for account in accounts {
            known.insert(account.id.to_bytes().to_vec());
            let b = account.balance;
            let total = per_currency.entry(account.currency).or_default();
            total.debits_pending += u128::from(b.debits_pending);
            total.debits_posted += u128::from(b.debits_posted);
            total.credits_pending += u128::from(b.credits_pending);
            total.credits_posted += u128::from(b.credits_posted);
            if !b.within_limits(account.flags) {
                report.problem(format!(
                    "account {:032x} is beyond its limit flags",
                    account.id.get()
                ));
            }
            let expected = self
                .sums
                .get(account.id.to_bytes().as_slice())
                .copied()
                .unwrap_or_default();
            let actual = Sums {
                debits_pending: u128::from(b.debits_pending),
                debits_posted: u128::from(b.debits_posted),
                credits_pending: u128::from(b.credits_pending),
                credits_posted: u128::from(b.credits_posted),
            };
            if expected != actual {
                report.problem(format!(
                    "account {:032x} balances {actual:?} differ from its transfers {expected:?}",
                    account.id.get()
                ));
            }
        }
        for (currency, total) in per_currency {
            if total.debits_posted != total.credits_posted
                || total.debits_pending != total.credits_pending
            {
                report.problem(format!("{currency} does not sum to zero: {total:?}"));
            }
        }
        let orphans = self.sums.keys().filter(|id| !known.contains(*id)).count();
        if orphans > 0 {
            report.problem(format!(
                "{orphans} transfers name accounts that do not exist"
            ));
        }
        report
    }
}
