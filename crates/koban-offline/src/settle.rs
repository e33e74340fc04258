//! Settlement: what the issuer decides for each voucher of a purse once a terminal's merchant
//! uploads it, in whatever order they come.
//!
//! **The promise.** A voucher a terminal accepted (every check of [`crate::Terminal::accept`]
//! passed) is paid to its merchant when the terminal uploads it: first from the purse's
//! reserve (the customer's money, moved aside when the purse was loaded), then, once the
//! reserve is gone, from the issuer's own fraud-losses account, up to a **guarantee** of
//! `(factor - 1) × limit` per purse. So a purse can never cost the issuer more than its
//! guarantee, whatever its device does: that is the bound. Not paid are: a voucher past the
//! guarantee; one that would bring a merchant's total from the purse above its limit; a second
//! voucher for a challenge already paid (a device that signed twice for one purchase); one a
//! terminal should have refused (a cumulative above the limit, a challenge outside the
//! certificate's validity); and one uploaded after the settlement deadline.
//!
//! Only a terminal's upload is paid: the device's own copy does not show that the terminal
//! took it (it may have refused it), so a device's report is only checked for double
//! spending ([`PurseBook::probe`]). First come, first paid: a customer in league with a
//! merchant can have invented vouchers to that merchant paid before an honest merchant's, up
//! to the cap per merchant and the guarantee; the loss stays within the bound, and the case
//! opened at revocation names every merchant paid.
//!
//! **Double spending** is any pair of vouchers of one purse that one honest device could not
//! have signed: the same counter with other content, cumulative amounts that do not follow
//! from the amounts (an honest device's voucher `j` after `i` has `cumulative_j >=
//! cumulative_i + amount_j`), or amounts adding up past the limit. An honest device's
//! vouchers never look so, in any order of arrival. The first sign revokes the purse.
//!
//! The decision for a content is made once, by its digest: the same content again (a retry,
//! a re-signed copy) gets the first decision back and moves nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{Id, Nonce, VoucherContent};

/// How settlement pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The issuer pays merchants up to `factor × limit` per purse in all: the reserve, and
    /// `(factor - 1) × limit` of its own. 1 means merchants are paid only from the reserve.
    pub guarantee_factor: u64,
    /// Seconds after a certificate's end during which its vouchers may still be uploaded;
    /// then the purse closes and what is left of its reserve goes back to the wallet.
    pub settle_window: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            guarantee_factor: 2,
            settle_window: 72 * 3600,
        }
    }
}

impl Policy {
    /// The most the issuer can lose on one purse of this limit: its guarantee.
    pub fn bound(&self, limit: u64) -> u64 {
        self.guarantee_factor
            .saturating_sub(1)
            .saturating_mul(limit)
    }
}

/// What made a voucher a sign of double spending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoubleSpend {
    /// Another voucher has the same counter and other content.
    CounterReused,
    /// Its cumulative amount does not follow from another voucher's.
    Inconsistent,
    /// The amounts of the purse's vouchers add up past the limit.
    OverLimit,
}

impl DoubleSpend {
    const ALL: [DoubleSpend; 3] = [
        DoubleSpend::CounterReused,
        DoubleSpend::Inconsistent,
        DoubleSpend::OverLimit,
    ];

    pub fn code(self) -> &'static str {
        match self {
            DoubleSpend::CounterReused => "counter_reused",
            DoubleSpend::Inconsistent => "cumulative_inconsistent",
            DoubleSpend::OverLimit => "over_limit",
        }
    }

    /// The value whose `code()` this is.
    pub fn from_code(code: &str) -> Option<DoubleSpend> {
        Self::ALL.into_iter().find(|d| d.code() == code)
    }
}

/// Why a voucher is not paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unpaid {
    /// Its cumulative amount is above the certificate's limit: a terminal refuses that.
    AboveLimit,
    /// The challenge's time is outside the certificate's validity: a terminal with a right
    /// clock refuses that.
    OutsideValidity,
    /// The guarantee is spent.
    GuaranteeExhausted,
    /// Another voucher was already paid for the same challenge (the device signed twice).
    ChallengeAnswered,
    /// The merchant has already been paid the purse's limit from it.
    MerchantCap,
    /// Uploaded after the settlement deadline.
    Late,
}

impl Unpaid {
    const ALL: [Unpaid; 6] = [
        Unpaid::AboveLimit,
        Unpaid::OutsideValidity,
        Unpaid::GuaranteeExhausted,
        Unpaid::ChallengeAnswered,
        Unpaid::MerchantCap,
        Unpaid::Late,
    ];

    /// The value whose `code()` this is.
    pub fn from_code(code: &str) -> Option<Unpaid> {
        Self::ALL.into_iter().find(|u| u.code() == code)
    }

    /// Whether a voucher refused so still counts toward the purse's spending (the terminal
    /// took it as a payment; only the issuer's guarantee ran out).
    fn counts(self) -> bool {
        matches!(
            self,
            Unpaid::GuaranteeExhausted | Unpaid::ChallengeAnswered | Unpaid::MerchantCap
        )
    }

    pub fn code(self) -> &'static str {
        match self {
            Unpaid::AboveLimit => "above_limit",
            Unpaid::OutsideValidity => "outside_validity",
            Unpaid::GuaranteeExhausted => "guarantee_exhausted",
            Unpaid::ChallengeAnswered => "challenge_already_paid",
            Unpaid::MerchantCap => "merchant_cap",
            Unpaid::Late => "late",
        }
    }
}

/// The decision for one voucher content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Paid to the merchant: this much from the reserve, this much from the guarantee.
    Paid {
        from_reserve: u64,
        from_guarantee: u64,
        double_spend: Option<DoubleSpend>,
    },
    Unpaid {
        reason: Unpaid,
        double_spend: Option<DoubleSpend>,
    },
}

impl Decision {
    pub fn double_spend(&self) -> Option<DoubleSpend> {
        match self {
            Decision::Paid { double_spend, .. } | Decision::Unpaid { double_spend, .. } => {
                *double_spend
            }
        }
    }

    /// What the merchant is paid.
    pub fn paid(&self) -> u64 {
        match self {
            Decision::Paid {
                from_reserve,
                from_guarantee,
                ..
            } => from_reserve + from_guarantee,
            Decision::Unpaid { .. } => 0,
        }
    }
}

/// What [`PurseBook::settle`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    pub decision: Decision,
    /// True when this content was decided before: nothing moves now.
    pub repeated: bool,
}

/// One purse's settlement state.
#[derive(Clone, Debug)]
pub struct PurseBook {
    pub purse: Id,
    pub limit: u64,
    pub not_before: u32,
    pub not_after: u32,
    pub policy: Policy,
    pub reserve_left: u64,
    pub guarantee_left: u64,
    pub revoked: bool,
    pub closed: bool,
    /// Every content decided, by digest.
    decided: HashMap<[u8; 32], Decision>,
    /// The contents that count toward the purse's spending, by counter, while it is not
    /// revoked (one honest device's chain: cumulative amounts rise with the counter, so a new
    /// content need only be compared with its neighbours).
    chain: BTreeMap<u32, VoucherContent>,
    spent: u64,
    /// The challenges (terminal, nonce) a voucher was paid for.
    answered: HashSet<(Id, Nonce)>,
    /// What each merchant has been paid from this purse.
    paid_to: HashMap<Id, u64>,
}

impl PurseBook {
    /// A purse loaded with `limit` (its whole reserve) and valid between the two instants.
    pub fn new(
        purse: Id,
        limit: u64,
        not_before: u32,
        not_after: u32,
        policy: Policy,
    ) -> PurseBook {
        PurseBook {
            purse,
            limit,
            not_before,
            not_after,
            policy,
            reserve_left: limit,
            guarantee_left: policy.bound(limit),
            revoked: false,
            closed: false,
            decided: HashMap::new(),
            chain: BTreeMap::new(),
            spent: 0,
            answered: HashSet::new(),
            paid_to: HashMap::new(),
        }
    }

    /// A purse's state as stored: what it was loaded with, whether it is revoked or closed,
    /// and every content decided so far with its merchant and decision, in the order they
    /// were decided. The same as the book that made those decisions, under `policy`.
    pub fn restore(
        book: PurseBook,
        (revoked, closed): (bool, bool),
        decided: impl IntoIterator<Item = (VoucherContent, Id, Decision)>,
    ) -> PurseBook {
        let mut book = book;
        for (content, merchant, decision) in decided {
            let counts = match decision {
                Decision::Paid {
                    from_reserve,
                    from_guarantee,
                    ..
                } => {
                    book.reserve_left = book.reserve_left.saturating_sub(from_reserve);
                    book.guarantee_left = book.guarantee_left.saturating_sub(from_guarantee);
                    book.answered.insert((content.terminal, content.nonce));
                    *book.paid_to.entry(merchant).or_default() += from_reserve + from_guarantee;
                    true
                }
                Decision::Unpaid { reason, .. } => reason.counts(),
            };
            if counts {
                book.count(&content);
            }
            book.decided.insert(content.digest(&book.purse), decision);
        }
        book.revoked |= revoked;
        book.closed = closed;
        book
    }

    /// When the purse closes: the certificate's end and the settlement window.
    pub fn deadline(&self) -> u32 {
        self.not_after.saturating_add(self.policy.settle_window)
    }

    /// What the issuer could still lose on this purse.
    pub fn exposure(&self) -> u64 {
        if self.closed { 0 } else { self.guarantee_left }
    }

    /// Decides a voucher of this purse (its signatures checked, its certificate this purse's)
    /// that a terminal of `merchant` took.
    pub fn settle(&mut self, content: &VoucherContent, merchant: Id, now: u32) -> Settled {
        let digest = content.digest(&self.purse);
        if let Some(decision) = self.decided.get(&digest) {
            return Settled {
                decision: *decision,
                repeated: true,
            };
        }
        let decision = self.decide(content, merchant, now);
        if decision.double_spend().is_some() {
            self.revoked = true;
        }
        self.decided.insert(digest, decision);
        Settled {
            decision,
            repeated: false,
        }
    }

    /// Whether `content` (reported by the device, not a terminal) shows double spending
    /// against what was decided; nothing is recorded. The caller revokes the purse if so.
    pub fn probe(&self, content: &VoucherContent) -> Option<DoubleSpend> {
        if self.revoked
            || self.decided.contains_key(&content.digest(&self.purse))
            || !self.plausible(content)
        {
            return None;
        }
        self.double_spend(content)
    }

    /// Revokes the purse (double spending found outside `settle`).
    pub fn revoke(&mut self) {
        self.revoked = true;
    }

    /// A content a terminal with a right clock accepts: within the limit, within validity.
    fn plausible(&self, content: &VoucherContent) -> bool {
        content.cumulative <= self.limit
            && content.time >= self.not_before
            && content.time < self.not_after
    }

    fn decide(&mut self, content: &VoucherContent, merchant: Id, now: u32) -> Decision {
        let unpaid = |reason, double_spend| Decision::Unpaid {
            reason,
            double_spend,
        };
        if self.closed || now >= self.deadline() {
            return unpaid(Unpaid::Late, None);
        }
        if content.cumulative > self.limit {
            return unpaid(Unpaid::AboveLimit, None);
        }
        if !self.plausible(content) {
            return unpaid(Unpaid::OutsideValidity, None);
        }
        let double_spend = self.double_spend(content);
        self.count(content);
        if self.answered.contains(&(content.terminal, content.nonce)) {
            return unpaid(Unpaid::ChallengeAnswered, double_spend);
        }
        let paid = self.paid_to.get(&merchant).copied().unwrap_or(0);
        if paid.saturating_add(content.amount) > self.limit {
            return unpaid(Unpaid::MerchantCap, double_spend);
        }
        let from_reserve = content.amount.min(self.reserve_left);
        let from_guarantee = content.amount - from_reserve;
        if from_guarantee > self.guarantee_left {
            return unpaid(Unpaid::GuaranteeExhausted, double_spend);
        }
        self.reserve_left -= from_reserve;
        self.guarantee_left -= from_guarantee;
        self.answered.insert((content.terminal, content.nonce));
        *self.paid_to.entry(merchant).or_default() += content.amount;
        Decision::Paid {
            from_reserve,
            from_guarantee,
            double_spend,
        }
    }

    /// Adds a content to the purse's spending (and to the chain while not revoked).
    fn count(&mut self, content: &VoucherContent) {
        self.spent = self.spent.saturating_add(content.amount);
        if !self.revoked {
            self.chain.entry(content.counter).or_insert(*content);
        }
    }

    /// Whether `content`, with the chain counted before it, is something one honest device
    /// could not have signed. Once revoked there is nothing more to find.
    fn double_spend(&self, content: &VoucherContent) -> Option<DoubleSpend> {
        if self.revoked {
            return None;
        }
        if self.chain.contains_key(&content.counter) {
            // A different digest (the same one was answered in `settle`).
            return Some(DoubleSpend::CounterReused);
        }
        let follows = |earlier: &VoucherContent, later: &VoucherContent| {
            u128::from(later.cumulative)
                >= u128::from(earlier.cumulative) + u128::from(later.amount)
        };
        let before = self.chain.range(..content.counter).next_back();
        let after = self.chain.range(content.counter..).next();
        if before.is_some_and(|(_, b)| !follows(b, content))
            || after.is_some_and(|(_, a)| !follows(content, a))
        {
            return Some(DoubleSpend::Inconsistent);
        }
        (u128::from(self.spent) + u128::from(content.amount) > u128::from(self.limit))
            .then_some(DoubleSpend::OverLimit)
    }

    /// After the deadline: closes the purse and gives what is left of the reserve (for the
    /// wallet). `None` before the deadline or when already closed.
    pub fn close(&mut self, now: u32) -> Option<u64> {
        if self.closed || now < self.deadline() {
            return None;
        }
        self.closed = true;
        Some(std::mem::take(&mut self.reserve_left))
    }
}
