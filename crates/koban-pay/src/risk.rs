//! The risk hook: one pure decision function that every money movement calls with the event
//! and its context, and obeys. It ships with the limits and a few obvious rules; the risk
//! engine will replace its internals (rules as data) without changing its callers.
//!
//! Architecture invariant: no IO here; the caller gathers the context.

/// What kind of movement is being decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    P2p,
    MerchantPayment,
    CodeCharge,
    Topup,
    Payout,
    /// An authorization (or increment) on an issued card.
    CardAuthorization,
}

/// Everything the decision may look at. Amounts are minor units; ages seconds.
#[derive(Clone, Debug)]
pub struct RiskEvent {
    pub kind: EventKind,
    pub amount: u64,
    /// The payer's out-flow today before this movement, and the tier's daily cap.
    pub spent_today: u64,
    pub daily_out_max: u64,
    /// The cooling-off cap after a credential or contact change, while it lasts.
    pub cooling_off_max: Option<u64>,
    /// True when the payer has never paid this payee.
    pub payee_new: bool,
    /// Paid to this payee today before this movement, and the per-payee cap.
    pub paid_to_payee_today: u64,
    pub per_payee_daily_max: u64,
    /// How long the payee's account has existed.
    pub payee_account_age_s: Option<i64>,
    /// Distinct senders to the payee within the last hour (only gathered for young payees).
    pub payee_senders_last_hour: usize,
    pub step_up_from: u64,
    pub review_new_payee_from: u64,
    pub fan_in_senders_max: usize,
}

/// The answer. Reason codes name a limit the customer can know, or say only that risk checks
/// declined (`risk_declined`, `held_for_review`): they never reveal which rule fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Go ahead once the customer confirms with step-up bound to amount and payee.
    Challenge,
    /// Move the money into suspense, pending review by an analyst.
    Hold {
        rule: &'static str,
    },
    Deny {
        code: &'static str,
        rule: &'static str,
    },
}

const YOUNG_ACCOUNT_S: i64 = 7 * 24 * 3600;

/// Decides one movement. The strictest applicable answer wins: deny, then hold, then
/// challenge, then allow.
pub fn decide(event: &RiskEvent) -> Decision {
    let after = event.spent_today.saturating_add(event.amount);
    let outgoing = matches!(
        event.kind,
        EventKind::P2p
            | EventKind::MerchantPayment
            | EventKind::CodeCharge
            | EventKind::Payout
            | EventKind::CardAuthorization
    );
    if outgoing && after > event.daily_out_max {
        return Decision::Deny {
            code: "daily_limit",
            rule: "limit.daily_out",
        };
    }
    if outgoing && event.cooling_off_max.is_some_and(|max| after > max) {
        return Decision::Deny {
            code: "cooling_off_limit",
            rule: "limit.cooling_off",
        };
    }
    if event.kind == EventKind::P2p {
        if event.paid_to_payee_today.saturating_add(event.amount) > event.per_payee_daily_max {
            return Decision::Deny {
                code: "payee_limit",
                rule: "limit.per_payee",
            };
        }
        let young_payee = event
            .payee_account_age_s
            .is_some_and(|age| age < YOUNG_ACCOUNT_S);
        // Many senders to one fresh account: the shape of a mule collecting victims' money.
        if young_payee && event.payee_senders_last_hour >= event.fan_in_senders_max {
            return Decision::Hold {
                rule: "fan_in.young_payee",
            };
        }
        if event.payee_new && event.amount >= event.review_new_payee_from {
            return Decision::Hold {
                rule: "new_payee.large_amount",
            };
        }
        // Right after a credential change, a first payment to someone new is what a takeover
        // looks like.
        if event.payee_new && event.cooling_off_max.is_some() {
            return Decision::Hold {
                rule: "new_payee.after_credential_change",
            };
        }
        if event.payee_new {
            return Decision::Challenge;
        }
    }
    if outgoing && event.amount >= event.step_up_from {
        return Decision::Challenge;
    }
    Decision::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p2p(amount: u64) -> RiskEvent {
        RiskEvent {
            kind: EventKind::P2p,
            amount,
            spent_today: 0,
            daily_out_max: 50_000,
            cooling_off_max: None,
            payee_new: false,
            paid_to_payee_today: 0,
            per_payee_daily_max: 30_000,
            payee_account_age_s: Some(365 * 24 * 3600),
            payee_senders_last_hour: 0,
            step_up_from: 10_000,
            review_new_payee_from: 20_000,
            fan_in_senders_max: 5,
        }
    }

    #[test]
    fn a_small_payment_to_a_known_payee_is_allowed() {
        assert_eq!(decide(&p2p(500)), Decision::Allow);
    }

    #[test]
    fn limits_deny_with_a_code_the_customer_can_act_on() {
        let over_day = RiskEvent {
            spent_today: 45_000,
            ..p2p(6_000)
        };
        assert!(matches!(
            decide(&over_day),
            Decision::Deny {
                code: "daily_limit",
                ..
            }
        ));
        let over_payee = RiskEvent {
            paid_to_payee_today: 29_000,
            ..p2p(2_000)
        };
        assert!(matches!(
            decide(&over_payee),
            Decision::Deny {
                code: "payee_limit",
                ..
            }
        ));
        let cooling = RiskEvent {
            cooling_off_max: Some(10_000),
            ..p2p(10_001)
        };
        assert!(matches!(
            decide(&cooling),
            Decision::Deny {
                code: "cooling_off_limit",
                ..
            }
        ));
        // Exactly at the cap is allowed.
        let at_cap = RiskEvent {
            spent_today: 40_000,
            ..p2p(9_999)
        };
        assert_eq!(decide(&at_cap), Decision::Allow);
    }

    #[test]
    fn new_payees_and_large_amounts_need_step_up() {
        let new = RiskEvent {
            payee_new: true,
            ..p2p(100)
        };
        assert_eq!(decide(&new), Decision::Challenge);
        assert_eq!(decide(&p2p(10_000)), Decision::Challenge);
        assert_eq!(decide(&p2p(9_999)), Decision::Allow);
    }

    #[test]
    fn suspicious_shapes_are_held_and_their_look_alikes_are_not() {
        let large_new = RiskEvent {
            payee_new: true,
            ..p2p(20_000)
        };
        assert!(matches!(decide(&large_new), Decision::Hold { .. }));
        let after_change = RiskEvent {
            payee_new: true,
            cooling_off_max: Some(40_000),
            ..p2p(1_000)
        };
        assert!(matches!(decide(&after_change), Decision::Hold { .. }));
        // The same payee known from before the change is only limited, not held.
        let known_after_change = RiskEvent {
            cooling_off_max: Some(40_000),
            ..p2p(1_000)
        };
        assert_eq!(decide(&known_after_change), Decision::Allow);
        let fan_in = RiskEvent {
            payee_account_age_s: Some(3600),
            payee_senders_last_hour: 5,
            ..p2p(1_000)
        };
        assert!(matches!(decide(&fan_in), Decision::Hold { .. }));
        // Many senders to an old account (a shop, a club treasurer) is normal.
        let old_popular = RiskEvent {
            payee_senders_last_hour: 50,
            ..p2p(1_000)
        };
        assert_eq!(decide(&old_popular), Decision::Allow);
    }
}
