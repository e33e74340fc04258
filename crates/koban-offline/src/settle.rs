//! Settlement: what the issuer decides for each voucher of a purse once it reaches the
//! server, from whichever side uploads it, in whatever order.
//!
//! **The promise.** A voucher a terminal accepted (every check of [`crate::Terminal::accept`]
//! passed) is paid to its merchant, first from the purse's reserve (the customer's money,
//! moved aside when the purse was loaded), then, once the reserve is gone, from the issuer's
//! own fraud-losses account, up to a **guarantee** of `(factor - 1) × limit` per purse. So a
//! purse can never cost the issuer more than its guarantee, whatever its device does: that is
//! the bound. The only vouchers not paid are those past the guarantee (a device cloned and
//! spent at more terminals than the factor covers before the revocation reached them), those a
//! terminal should have refused (a cumulative above the limit, a time outside the
//! certificate's validity) and those uploaded after the settlement deadline.
//!
//! **Double spending** is any pair of vouchers of one purse that one honest device could not
//! have signed: the same counter with other content, cumulative amounts that do not follow
//! from the amounts (an honest device's voucher `j` after `i` has `cumulative_j >=
//! cumulative_i + amount_j`), or amounts adding up past the limit. An honest device's
//! vouchers never look so, in any order of arrival. The first sign revokes the purse.
//!
//! The decision for a content is made once: the same content again (a retry, an upload from
//! both sides, a re-signed copy) gets the first decision back and moves nothing.

use std::collections::HashMap;

use crate::VoucherContent;

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
    pub fn code(self) -> &'static str {
        match self {
            DoubleSpend::CounterReused => "counter_reused",
            DoubleSpend::Inconsistent => "cumulative_inconsistent",
            DoubleSpend::OverLimit => "over_limit",
        }
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
    /// Uploaded after the settlement deadline.
    Late,
}

impl Unpaid {
    pub fn code(self) -> &'static str {
        match self {
            Unpaid::AboveLimit => "above_limit",
            Unpaid::OutsideValidity => "outside_validity",
            Unpaid::GuaranteeExhausted => "guarantee_exhausted",
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
    /// The contents that count toward the purse's spending (all but those refused for being
    /// above the limit or out of validity), for the double-spending checks.
    counted: Vec<VoucherContent>,
    spent: u64,
}

impl PurseBook {
    /// A purse loaded with `limit` (its whole reserve) and valid between the two instants.
    pub fn new(limit: u64, not_before: u32, not_after: u32, policy: Policy) -> PurseBook {
        PurseBook {
            limit,
            not_before,
            not_after,
            policy,
            reserve_left: limit,
            guarantee_left: policy.bound(limit),
            revoked: false,
            closed: false,
            decided: HashMap::new(),
            counted: Vec::new(),
            spent: 0,
        }
    }

    /// When the purse closes: the certificate's end and the settlement window.
    pub fn deadline(&self) -> u32 {
        self.not_after.saturating_add(self.policy.settle_window)
    }

    /// What the issuer could still lose on this purse.
    pub fn exposure(&self) -> u64 {
        if self.closed { 0 } else { self.guarantee_left }
    }

    /// Decides a voucher whose signatures have been checked and whose certificate is this
    /// purse's. `digest` is [`VoucherContent::digest`].
    pub fn settle(&mut self, content: &VoucherContent, digest: [u8; 32], now: u32) -> Settled {
        if let Some(decision) = self.decided.get(&digest) {
            return Settled {
                decision: *decision,
                repeated: true,
            };
        }
        let decision = self.decide(content, now);
        if decision.double_spend().is_some() {
            self.revoked = true;
        }
        self.decided.insert(digest, decision);
        Settled {
            decision,
            repeated: false,
        }
    }

    fn decide(&mut self, content: &VoucherContent, now: u32) -> Decision {
        if self.closed || now >= self.deadline() {
            return Decision::Unpaid {
                reason: Unpaid::Late,
                double_spend: None,
            };
        }
        if content.cumulative > self.limit {
            return Decision::Unpaid {
                reason: Unpaid::AboveLimit,
                double_spend: None,
            };
        }
        if content.time < self.not_before || content.time >= self.not_after {
            return Decision::Unpaid {
                reason: Unpaid::OutsideValidity,
                double_spend: None,
            };
        }
        let double_spend = self.double_spend(content);
        self.counted.push(*content);
        self.spent = self.spent.saturating_add(content.amount);
        let from_reserve = content.amount.min(self.reserve_left);
        let from_guarantee = content.amount - from_reserve;
        if from_guarantee > self.guarantee_left {
            return Decision::Unpaid {
                reason: Unpaid::GuaranteeExhausted,
                double_spend,
            };
        }
        self.reserve_left -= from_reserve;
        self.guarantee_left -= from_guarantee;
        Decision::Paid {
            from_reserve,
            from_guarantee,
            double_spend,
        }
    }

    /// Whether `content`, with what was counted before it, is something one honest device
    /// could not have signed.
    fn double_spend(&self, content: &VoucherContent) -> Option<DoubleSpend> {
        for other in &self.counted {
            if other.counter == content.counter {
                // A different digest (the same one was answered in `settle`).
                return Some(DoubleSpend::CounterReused);
            }
            let (earlier, later) = if other.counter < content.counter {
                (other, content)
            } else {
                (content, other)
            };
            if (later.cumulative as u128) < earlier.cumulative as u128 + later.amount as u128 {
                return Some(DoubleSpend::Inconsistent);
            }
        }
        (self.spent as u128 + content.amount as u128 > self.limit as u128)
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
