//! The risk engine: a pure function from an event's features to a verdict, with the rules as
//! data (CEL expressions in a TOML file), a backtest that replays recorded events under a
//! candidate rule set, and a seeded simulation of customers and attacks for `koban bench risk`.
//!
//! Architecture invariant: no IO, no clock, no database, no randomness except the seeded
//! generator of `sim`. Callers gather the features; the same features and rules always give
//! the same verdict.

pub mod backtest;
mod features;
mod rules;
pub mod sim;

pub use features::{FEATURES, FeatureDef, FeatureType, Features, Value};
pub use rules::{CaseBy, DEFAULT_RULES, Fired, Rule, RuleSet, RulesError, Verdict};

/// "Never happened, or unknown": ten years in seconds. The value of an age-like feature with
/// nothing to measure, so that no "younger than" rule fires on it.
pub const NEVER_S: i64 = 315_360_000;

/// What is being decided.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Login,
    FundingLink,
    Topup,
    P2p,
    MerchantPayment,
    CodeCharge,
    Payout,
    CardAuthorization,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::Login,
        EventKind::FundingLink,
        EventKind::Topup,
        EventKind::P2p,
        EventKind::MerchantPayment,
        EventKind::CodeCharge,
        EventKind::Payout,
        EventKind::CardAuthorization,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Login => "login",
            EventKind::FundingLink => "funding_link",
            EventKind::Topup => "topup",
            EventKind::P2p => "p2p",
            EventKind::MerchantPayment => "merchant_payment",
            EventKind::CodeCharge => "code_charge",
            EventKind::Payout => "payout",
            EventKind::CardAuthorization => "card_authorization",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Money leaves the customer's wallet.
    pub fn outgoing(self) -> bool {
        matches!(
            self,
            EventKind::P2p
                | EventKind::MerchantPayment
                | EventKind::CodeCharge
                | EventKind::Payout
                | EventKind::CardAuthorization
        )
    }
}

/// What a rule asks for. Ordered by strictness: `Allow < Alert < Challenge < Hold < Deny`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing to do.
    Allow,
    /// Let it through, and raise an alert for an analyst.
    Alert,
    /// Let it through once the customer confirms with step-up bound to amount and payee.
    Challenge,
    /// Move the money into suspense pending review; raises an alert.
    Hold,
    /// Refuse; raises an alert.
    Deny,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Allow,
        Action::Alert,
        Action::Challenge,
        Action::Hold,
        Action::Deny,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Alert => "alert",
            Action::Challenge => "challenge",
            Action::Hold => "hold",
            Action::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// An analyst should look: alert, hold and deny. A challenge is the customer's own
    /// confirmation and raises nothing.
    pub fn raises_alert(self) -> bool {
        matches!(self, Action::Alert | Action::Hold | Action::Deny)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_actions_parse_what_they_print() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
            let json = serde_json::to_string(&action).unwrap();
            assert_eq!(json, format!("\"{}\"", action.as_str()));
        }
        assert_eq!(EventKind::parse("P2P"), None);
        assert_eq!(Action::parse("block"), None);
    }

    #[test]
    fn strictness_and_alerts() {
        assert!(Action::Allow < Action::Alert);
        assert!(Action::Alert < Action::Challenge);
        assert!(Action::Challenge < Action::Hold);
        assert!(Action::Hold < Action::Deny);
        let alerting: Vec<_> = Action::ALL
            .into_iter()
            .filter(|a| a.raises_alert())
            .collect();
        assert_eq!(alerting, [Action::Alert, Action::Hold, Action::Deny]);
        let outgoing: Vec<_> = EventKind::ALL
            .into_iter()
            .filter(|k| k.outgoing())
            .collect();
        assert_eq!(
            outgoing,
            [
                EventKind::P2p,
                EventKind::MerchantPayment,
                EventKind::CodeCharge,
                EventKind::Payout,
                EventKind::CardAuthorization
            ]
        );
    }
}
