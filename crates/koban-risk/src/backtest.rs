//! Backtesting: replay recorded events under the live rule set and a candidate, and count
//! what each rule and each set would have done, before the candidate goes live.

use std::collections::BTreeMap;

use crate::{Action, Features, RuleSet, Verdict};

/// Changed events named in a report, at most.
const CHANGED_EXAMPLES_MAX: usize = 20;

/// One event as it was decided, with the features it was decided on.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    pub id: String,
    pub at_ms: i64,
    pub features: Features,
}

/// Events counted by action. For one rule: the events it fired on, counted under the rule's
/// own action. For a whole set: the events by their final action, and `fired` the events on
/// which any rule fired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub fired: u64,
    pub alert: u64,
    pub challenge: u64,
    pub hold: u64,
    pub deny: u64,
}

impl Counts {
    /// Counts one event under `action` (an `Allow` counts only as fired).
    fn add(&mut self, action: Action) {
        self.fired += 1;
        match action {
            Action::Allow => {}
            Action::Alert => self.alert += 1,
            Action::Challenge => self.challenge += 1,
            Action::Hold => self.hold += 1,
            Action::Deny => self.deny += 1,
        }
    }

    fn add_verdict(&mut self, verdict: &Verdict) {
        if !verdict.fired.is_empty() {
            self.add(verdict.action);
        }
    }
}

/// One rule name's counts under each set (zero where the set has no rule of that name).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleReport {
    pub rule: String,
    pub in_live: bool,
    pub in_candidate: bool,
    pub live: Counts,
    pub candidate: Counts,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BacktestReport {
    pub events: u64,
    pub live: Counts,
    pub candidate: Counts,
    /// Every rule name of either set: the candidate's in its order, then those only live.
    pub rules: Vec<RuleReport>,
    /// Events whose final action is stricter under the candidate than live.
    pub stricter: u64,
    /// Events whose final action is looser under the candidate than live.
    pub looser: u64,
    /// Ids of the first events whose final action changed, at most 20.
    pub changed_examples: Vec<String>,
}

/// Decides every event under both sets and compares.
pub fn backtest(live: &RuleSet, candidate: &RuleSet, events: &[RecordedEvent]) -> BacktestReport {
    let mut rules: Vec<RuleReport> = Vec::new();
    for rule in candidate.rules() {
        rules.push(rule_report(&rule.name, false, true));
    }
    for rule in live.rules() {
        match rules.iter_mut().find(|r| r.rule == rule.name) {
            Some(report) => report.in_live = true,
            None => rules.push(rule_report(&rule.name, true, false)),
        }
    }
    let at: BTreeMap<String, usize> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.rule.clone(), i))
        .collect();
    let mut report = BacktestReport {
        events: 0,
        live: Counts::default(),
        candidate: Counts::default(),
        rules,
        stricter: 0,
        looser: 0,
        changed_examples: Vec::new(),
    };
    for event in events {
        let before = live.decide(&event.features);
        let after = candidate.decide(&event.features);
        report.events += 1;
        report.live.add_verdict(&before);
        report.candidate.add_verdict(&after);
        for fired in &before.fired {
            if let Some(&i) = at.get(&fired.rule) {
                report.rules[i].live.add(fired.action);
            }
        }
        for fired in &after.fired {
            if let Some(&i) = at.get(&fired.rule) {
                report.rules[i].candidate.add(fired.action);
            }
        }
        if after.action != before.action {
            if after.action > before.action {
                report.stricter += 1;
            } else {
                report.looser += 1;
            }
            if report.changed_examples.len() < CHANGED_EXAMPLES_MAX {
                report.changed_examples.push(event.id.clone());
            }
        }
    }
    report
}

fn rule_report(name: &str, in_live: bool, in_candidate: bool) -> RuleReport {
    RuleReport {
        rule: name.to_owned(),
        in_live,
        in_candidate,
        live: Counts::default(),
        candidate: Counts::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;

    const LIVE: &str = r#"
[[rule]]
name = "big"
description = "Large amounts."
when = 'amount >= 1000'
action = "hold"
reason = "big"

[[rule]]
name = "new_payee"
description = "New payees."
when = 'payee_new'
action = "challenge"
reason = "new_payee"

[[rule]]
name = "retired"
description = "Only live."
when = 'failed'
action = "alert"
reason = "retired"
"#;

    const CANDIDATE: &str = r#"
[[rule]]
name = "fresh"
description = "Only in the candidate."
when = 'amount >= 500 && !payee_new'
action = "deny"
reason = "fresh"

[[rule]]
name = "big"
description = "Large amounts, now a challenge."
when = 'amount >= 1000'
action = "challenge"
reason = "big"

[[rule]]
name = "new_payee"
description = "New payees."
when = 'payee_new'
action = "challenge"
reason = "new_payee"
"#;

    fn event(id: &str, amount: i64, payee_new: bool, failed: bool) -> RecordedEvent {
        let mut features = Features::new(EventKind::P2p);
        features.set_int("amount", amount);
        features.set_bool("payee_new", payee_new);
        features.set_bool("failed", failed);
        RecordedEvent {
            id: id.to_owned(),
            at_ms: 0,
            features,
        }
    }

    #[test]
    fn counts_match_a_hand_computed_history() {
        let live = RuleSet::parse(LIVE).unwrap();
        let candidate = RuleSet::parse(CANDIDATE).unwrap();
        let events = [
            // live: nothing fires. candidate: nothing. unchanged.
            event("e1", 100, false, false),
            // live: new_payee (challenge). candidate: new_payee (challenge). unchanged.
            event("e2", 100, true, false),
            // live: big (hold). candidate: fresh (deny) + big (challenge) -> deny. stricter.
            event("e3", 2000, false, false),
            // live: big (hold) + new_payee -> hold. candidate: big + new_payee -> challenge.
            // looser.
            event("e4", 2000, true, false),
            // live: retired (alert). candidate: fresh (deny). stricter.
            event("e5", 600, false, true),
            // live: retired (alert). candidate: nothing. looser.
            event("e6", 10, false, true),
        ];
        let report = backtest(&live, &candidate, &events);
        assert_eq!(report.events, 6);
        assert_eq!(
            report.live,
            Counts {
                fired: 5,
                alert: 2,
                challenge: 1,
                hold: 2,
                deny: 0
            }
        );
        assert_eq!(
            report.candidate,
            Counts {
                fired: 4,
                alert: 0,
                challenge: 2,
                hold: 0,
                deny: 2
            }
        );
        assert_eq!(report.stricter, 2);
        assert_eq!(report.looser, 2);
        assert_eq!(report.changed_examples, ["e3", "e4", "e5", "e6"]);

        let names: Vec<&str> = report.rules.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(names, ["fresh", "big", "new_payee", "retired"]);
        let [fresh, big, new_payee, retired] = &report.rules[..] else {
            panic!("four rules expected");
        };
        assert!(!fresh.in_live && fresh.in_candidate);
        assert_eq!(fresh.live, Counts::default());
        assert_eq!(
            fresh.candidate,
            Counts {
                fired: 2,
                deny: 2,
                ..Counts::default()
            }
        );
        assert!(big.in_live && big.in_candidate);
        assert_eq!(
            big.live,
            Counts {
                fired: 2,
                hold: 2,
                ..Counts::default()
            }
        );
        assert_eq!(
            big.candidate,
            Counts {
                fired: 2,
                challenge: 2,
                ..Counts::default()
            }
        );
        let new_payee_counts = Counts {
            fired: 2,
            challenge: 2,
            ..Counts::default()
        };
        assert_eq!(new_payee.live, new_payee_counts);
        assert_eq!(new_payee.candidate, new_payee_counts);
        assert!(retired.in_live && !retired.in_candidate);
        assert_eq!(
            retired.live,
            Counts {
                fired: 2,
                alert: 2,
                ..Counts::default()
            }
        );
        assert_eq!(retired.candidate, Counts::default());
    }

    #[test]
    fn changed_examples_are_capped() {
        let live = RuleSet::parse(LIVE).unwrap();
        let candidate = RuleSet::parse(CANDIDATE).unwrap();
        let events: Vec<_> = (0..30)
            .map(|i| event(&format!("e{i}"), 2000, false, false))
            .collect();
        let report = backtest(&live, &candidate, &events);
        assert_eq!(report.stricter, 30);
        assert_eq!(report.changed_examples.len(), CHANGED_EXAMPLES_MAX);
        assert_eq!(report.changed_examples[0], "e0");
    }
}
