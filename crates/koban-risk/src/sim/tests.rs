use super::*;
use crate::{RuleSet, Value};

fn small(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        customers: 500,
        days: 1,
    }
}

fn decide_all(sim: &Simulation, rules: &RuleSet) -> Vec<Verdict> {
    sim.events()
        .iter()
        .map(|e| rules.decide(&e.features))
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_timeline() {
    let a = Simulation::new(small(7));
    let b = Simulation::new(small(7));
    assert_eq!(a.events(), b.events());
    let c = Simulation::new(small(8));
    assert_ne!(a.events(), c.events());
    assert!(a.events().windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
}

#[test]
fn the_default_rules_catch_every_attack_with_few_false_positives() {
    let sim = Simulation::new(small(42));
    let rules = RuleSet::default_rules();
    let verdicts = decide_all(&sim, &rules);
    for v in &verdicts {
        assert!(v.errors.is_empty(), "{:?}", v.errors);
    }
    let report = sim.report(&verdicts);
    for kind in [
        AttackKind::CredentialStuffing,
        AttackKind::BankLinkPinCycling,
        AttackKind::MuleFanIn,
        AttackKind::TopupThenSpend,
    ] {
        let n = report.by_attack.iter().filter(|a| a.kind == kind).count();
        assert!(n >= 5, "{kind:?}: {n}");
    }
    let missed: Vec<_> = report.by_attack.iter().filter(|a| !a.caught).collect();
    assert!(missed.is_empty(), "missed {missed:?}");
    assert_eq!(report.attacks_caught, report.attacks_total);
    assert_eq!(report.normal_customers, 500);
    assert!(
        report.false_positive_rate < 0.01,
        "false positives {} ({:?})",
        report.false_positive_rate,
        report.flagged_by_rule
    );
    eprintln!("{:#?}\n{:?}", report.by_kind, report.flagged_by_rule);
    // Every attack is seen within a minute of its first attempt, and none moves money out
    // before it is held.
    for kind in &report.by_kind {
        assert_eq!(kind.caught, kind.attacks, "{kind:?}");
        assert!(kind.time_to_detect_s_max <= 60.0, "{kind:?}");
        assert_eq!(kind.money_out_before_hold, 0, "{kind:?}");
    }
    assert!(report.time_to_detect_s_max <= 60.0, "{report:?}");
    assert!(report.time_to_detect_s_p50 <= report.time_to_detect_s_max);
    assert!(report.events > 3_000, "{}", report.events);
}

#[test]
fn a_rule_set_that_never_fires_catches_nothing_and_flags_no_one() {
    let sim = Simulation::new(SimConfig {
        seed: 3,
        customers: 50,
        days: 1,
    });
    let quiet = RuleSet::parse(
        "[[rule]]\nname = \"never\"\ndescription = \"d\"\nwhen = 'false'\naction = \"deny\"\nreason = \"r\"\n",
    )
    .unwrap();
    let report = sim.report(&decide_all(&sim, &quiet));
    assert_eq!(report.attacks_caught, 0);
    assert_eq!(report.attacks_total, 20);
    assert!(
        report
            .by_attack
            .iter()
            .all(|a| a.time_to_detect_s.is_none())
    );
    assert_eq!(report.false_positive_rate, 0.0);
    assert_eq!(report.time_to_detect_s_p50, 0.0);
    assert!(report.flagged_by_rule.is_empty());
}

#[test]
fn a_flagging_rule_counts_customer_days_once() {
    let sim = Simulation::new(SimConfig {
        seed: 4,
        customers: 40,
        days: 2,
    });
    let loud = RuleSet::parse(
        "[[rule]]\nname = \"shop\"\ndescription = \"d\"\nwhen = 'event == \"merchant_payment\"'\naction = \"challenge\"\nreason = \"r\"\n",
    )
    .unwrap();
    let report = sim.report(&decide_all(&sim, &loud));
    let shoppers: BTreeSet<(u32, i64)> = sim
        .events()
        .iter()
        .filter(|e| e.features.event() == EventKind::MerchantPayment)
        .filter_map(|e| match e.actor {
            Actor::Normal { customer } => Some((customer, (e.at_ms - START_MS) / DAY_MS)),
            Actor::Attack { .. } => None,
        })
        .collect();
    assert!(shoppers.len() > 40);
    assert_eq!(
        report.normal_customer_days_flagged,
        u64::try_from(shoppers.len()).unwrap()
    );
    assert_eq!(report.flagged_by_rule.len(), 1);
    assert_eq!(report.flagged_by_rule[0].0, "shop");
    assert!(report.flagged_by_rule[0].1 >= report.normal_customer_days_flagged);
}

fn int(e: &SimEvent, name: &str) -> i64 {
    match e.features.get(name) {
        Some(Value::Int(i)) => *i,
        other => panic!("{name}: {other:?}"),
    }
}

fn flag(e: &SimEvent, name: &str) -> bool {
    match e.features.get(name) {
        Some(Value::Bool(b)) => *b,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn attack_events_carry_the_features_of_their_pattern() {
    let sim = Simulation::new(small(5));
    let of = |kind: AttackKind| {
        sim.events()
            .iter()
            .filter(move |e| matches!(e.actor, Actor::Attack { kind: k, .. } if k == kind))
    };
    let stuffing_peak = of(AttackKind::CredentialStuffing)
        .map(|e| int(e, "network_failures_1h"))
        .max()
        .unwrap();
    assert!(stuffing_peak >= 20, "{stuffing_peak}");
    let cycling_peak = of(AttackKind::BankLinkPinCycling)
        .map(|e| int(e, "device_failures_1h"))
        .max()
        .unwrap();
    assert!(cycling_peak >= 30, "{cycling_peak}");
    let senders_peak = of(AttackKind::MuleFanIn)
        .filter(|e| e.features.event() == EventKind::P2p)
        .map(|e| int(e, "payee_senders_1h"))
        .max()
        .unwrap();
    assert_eq!(senders_peak, 5);
    for spend in of(AttackKind::TopupThenSpend).filter(|e| e.features.event().outgoing()) {
        assert!(int(spend, "since_topup_s") < 600);
        assert!(flag(spend, "device_known"));
        assert!(int(spend, "device_age_s") < 900);
    }
    // Ordinary customers sign in from their long-known devices.
    let normal_logins: Vec<_> = sim
        .events()
        .iter()
        .filter(|e| matches!(e.actor, Actor::Normal { .. }))
        .filter(|e| e.features.event() == EventKind::Login)
        .collect();
    let known = normal_logins
        .iter()
        .filter(|e| flag(e, "device_known"))
        .count();
    assert!(
        known * 100 >= normal_logins.len() * 99,
        "{known} of {}",
        normal_logins.len()
    );
}

#[test]
fn nearest_rank_percentiles() {
    assert_eq!(nearest_rank(&[], 50), 0.0);
    assert_eq!(nearest_rank(&[4.0], 50), 4.0);
    assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 50), 2.0);
    assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0, 5.0], 50), 3.0);
    assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0, 5.0], 100), 5.0);
}
