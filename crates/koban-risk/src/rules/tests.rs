use super::*;
use crate::NEVER_S;

const DAY_S: i64 = 86_400;

/// An unremarkable event of `kind`: an old verified customer on their long-known device,
/// paying a known, old payee a small amount, with the service's usual thresholds. No default
/// rule fires on it (checked below), so each test changes only what its pattern needs.
fn base(kind: EventKind) -> Features {
    let mut f = Features::new(kind);
    f.set_text("currency", "JPY");
    f.set_int("customer_age_s", 400 * DAY_S);
    f.set_bool("customer_verified", true);
    f.set_bool("device_known", true);
    f.set_int("device_age_s", 200 * DAY_S);
    f.set_int("step_up_from", 10_000);
    f.set_int("review_new_payee_from", 100_000);
    f.set_int("fan_in_senders_max", 5);
    if kind.outgoing() || kind == EventKind::Topup {
        f.set_int("amount", 1_500);
    }
    if kind == EventKind::P2p {
        f.set_int("payee_age_s", 900 * DAY_S);
    }
    if matches!(kind, EventKind::Topup | EventKind::FundingLink) {
        f.set_int("source_age_s", 300 * DAY_S);
    }
    if matches!(kind, EventKind::CardAuthorization | EventKind::CodeCharge) {
        f.set_int("step_up_from", i64::MAX);
    }
    f
}

fn fired(f: &Features) -> Vec<String> {
    let verdict = RuleSet::default_rules().decide(f);
    assert!(verdict.errors.is_empty(), "{:?}", verdict.errors);
    verdict.fired.into_iter().map(|x| x.rule).collect()
}

#[track_caller]
fn assert_fires(rule: &str, f: &Features) {
    let names = fired(f);
    assert!(
        names.iter().any(|n| n == rule),
        "{rule} silent; fired {names:?}"
    );
}

#[track_caller]
fn assert_silent(rule: &str, f: &Features) {
    let names = fired(f);
    assert!(!names.iter().any(|n| n == rule), "{rule} fired: {names:?}");
}

#[test]
fn the_default_rules_parse_and_the_base_events_are_quiet() {
    let set = RuleSet::default_rules();
    assert!(set.rules().len() >= 15);
    assert_eq!(set.version(), "2026-12-01");
    assert_eq!(set.digest().len(), 64);
    for rule in set.rules() {
        assert!(rule.enabled, "{}", rule.name);
    }
    for kind in EventKind::ALL {
        assert_eq!(fired(&base(kind)), Vec::<String>::new(), "{kind:?}");
    }
}

#[test]
fn every_default_rule_has_a_test_below() {
    let tested = [
        "p2p.fan_in_young_payee",
        "p2p.new_payee_large_amount",
        "p2p.new_payee_after_credential_change",
        "p2p.new_payee",
        "payment.large_amount",
        "p2p.fan_in_alert",
        "p2p.new_device_to_young_payee",
        "p2p.fan_in_suspicious_senders",
        "p2p.velocity",
        "login.stuffing_network",
        "login.stuffing_network_early",
        "login.after_stuffing_network",
        "login.account_guessing",
        "login.global_failure_spike",
        "payout.after_credential_change",
        "login.new_device_after_credential_change",
        "funding.link_failures_network",
        "funding.link_failures_device",
        "funding.link_failure_other_customer",
        "funding.link_failures_customer",
        "topup.then_spend",
        "topup.new_device",
        "device.new_large_out",
        "topup.new_source_large",
        "card.velocity",
        "card.velocity_hour",
        "code.guessing_merchant",
        "code.guessing_network",
    ];
    let names: Vec<String> = RuleSet::default_rules()
        .rules()
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(names, tested);
}

// D5 and the payment code's long-standing decisions.

fn young_payee_with_senders(senders: i64) -> Features {
    let mut f = base(EventKind::P2p);
    f.set_int("payee_age_s", 2 * DAY_S);
    f.set_int("payee_senders_1h", senders);
    f
}

#[test]
fn fan_in_young_payee_holds_at_the_configured_senders() {
    let f = young_payee_with_senders(5);
    assert_fires("p2p.fan_in_young_payee", &f);
    let verdict = RuleSet::default_rules().decide(&f);
    assert_eq!(verdict.action, Action::Hold);
    let strictest = verdict.strictest().unwrap();
    assert_eq!(strictest.rule, "p2p.fan_in_young_payee");
    assert_eq!(strictest.case_by, CaseBy::Payee);
}

#[test]
fn fan_in_young_payee_is_silent_below_the_threshold_and_for_old_payees() {
    assert_silent("p2p.fan_in_young_payee", &young_payee_with_senders(4));
    let mut old = young_payee_with_senders(9);
    old.set_int("payee_age_s", 7 * DAY_S);
    assert_silent("p2p.fan_in_young_payee", &old);
}

/// A first payment of `amount` to a two-day-old account from a device first used an hour ago.
fn new_device_to_young_payee(amount: i64) -> Features {
    let mut f = base(EventKind::P2p);
    f.set_bool("payee_new", true);
    f.set_int("payee_age_s", 2 * DAY_S);
    f.set_int("device_age_s", 3_600);
    f.set_int("amount", amount);
    f
}

#[test]
fn new_device_to_young_payee_holds_from_the_step_up_amount_but_not_without_a_device_cookie() {
    let f = new_device_to_young_payee(10_000);
    assert_fires("p2p.new_device_to_young_payee", &f);
    let verdict = RuleSet::default_rules().decide(&f);
    assert_eq!(verdict.action, Action::Hold);
    let unknown = {
        let mut f = new_device_to_young_payee(20_000);
        f.set_bool("device_known", false);
        f.set_int("device_age_s", NEVER_S);
        f
    };
    assert_silent("p2p.new_device_to_young_payee", &unknown);
}

#[test]
fn new_device_to_young_payee_is_silent_for_small_amounts_old_devices_and_old_payees() {
    assert_silent(
        "p2p.new_device_to_young_payee",
        &new_device_to_young_payee(9_999),
    );
    let mut old_device = new_device_to_young_payee(50_000);
    old_device.set_int("device_age_s", 2 * DAY_S);
    assert_silent("p2p.new_device_to_young_payee", &old_device);
    let mut old_payee = new_device_to_young_payee(50_000);
    old_payee.set_int("payee_age_s", 8 * DAY_S);
    assert_silent("p2p.new_device_to_young_payee", &old_payee);
    let mut newcomer = new_device_to_young_payee(50_000);
    newcomer.set_int("customer_age_s", 2 * DAY_S);
    assert_silent("p2p.new_device_to_young_payee", &newcomer);
}

#[test]
fn fan_in_suspicious_senders_holds_a_second_sender_cooling_off_or_on_a_new_device() {
    for change in ["in_cooling_off", "device_age_s"] {
        let mut f = young_payee_with_senders(1);
        match change {
            "in_cooling_off" => f.set_bool("in_cooling_off", true),
            other => f.set_int(other, 3_600),
        }
        assert_fires("p2p.fan_in_suspicious_senders", &f);
        let verdict = RuleSet::default_rules().decide(&f);
        assert_eq!(verdict.action, Action::Hold, "{change}");
        assert_eq!(verdict.strictest().unwrap().case_by, CaseBy::Payee);
    }
}

#[test]
fn fan_in_suspicious_senders_is_silent_for_a_first_sender_a_known_device_or_a_new_customer() {
    let mut first = young_payee_with_senders(0);
    first.set_bool("in_cooling_off", true);
    assert_silent("p2p.fan_in_suspicious_senders", &first);
    assert_silent(
        "p2p.fan_in_suspicious_senders",
        &young_payee_with_senders(3),
    );
    let mut newcomer = young_payee_with_senders(1);
    newcomer.set_int("customer_age_s", 2 * DAY_S);
    newcomer.set_int("device_age_s", 3_600);
    assert_silent("p2p.fan_in_suspicious_senders", &newcomer);
}

#[test]
fn new_payee_large_amount_holds() {
    let mut f = base(EventKind::P2p);
    f.set_bool("payee_new", true);
    f.set_int("amount", 100_000);
    assert_fires("p2p.new_payee_large_amount", &f);
    assert_eq!(RuleSet::default_rules().decide(&f).action, Action::Hold);
}

#[test]
fn new_payee_large_amount_is_silent_below_review_or_for_a_known_payee() {
    let mut f = base(EventKind::P2p);
    f.set_bool("payee_new", true);
    f.set_int("amount", 99_999);
    assert_silent("p2p.new_payee_large_amount", &f);
    let mut known = base(EventKind::P2p);
    known.set_int("amount", 500_000);
    assert_silent("p2p.new_payee_large_amount", &known);
}

#[test]
fn new_payee_after_credential_change_holds() {
    let mut f = base(EventKind::P2p);
    f.set_bool("payee_new", true);
    f.set_bool("in_cooling_off", true);
    assert_fires("p2p.new_payee_after_credential_change", &f);
    assert_eq!(RuleSet::default_rules().decide(&f).action, Action::Hold);
}

#[test]
fn new_payee_after_credential_change_is_silent_for_a_known_payee() {
    let mut f = base(EventKind::P2p);
    f.set_bool("in_cooling_off", true);
    assert_silent("p2p.new_payee_after_credential_change", &f);
}

#[test]
fn new_payee_challenges_with_no_score() {
    let mut f = base(EventKind::P2p);
    f.set_bool("payee_new", true);
    let verdict = RuleSet::default_rules().decide(&f);
    assert_eq!(verdict.action, Action::Challenge);
    assert_eq!(verdict.score, 0);
    assert_eq!(verdict.fired.len(), 1);
    assert_eq!(verdict.fired[0].rule, "p2p.new_payee");
    assert!(!verdict.raises_alert());
}

#[test]
fn new_payee_is_silent_for_a_first_merchant_payment() {
    let mut f = base(EventKind::MerchantPayment);
    f.set_bool("payee_new", true);
    assert_silent("p2p.new_payee", &f);
}

#[test]
fn large_amount_challenges_every_outgoing_kind_from_step_up() {
    for kind in [
        EventKind::P2p,
        EventKind::MerchantPayment,
        EventKind::Payout,
    ] {
        let mut f = base(kind);
        f.set_int("amount", 10_000);
        assert_fires("payment.large_amount", &f);
        assert_eq!(
            RuleSet::default_rules().decide(&f).action,
            Action::Challenge
        );
    }
}

#[test]
fn large_amount_is_silent_below_step_up_for_cards_and_for_top_ups() {
    let mut f = base(EventKind::P2p);
    f.set_int("amount", 9_999);
    assert_silent("payment.large_amount", &f);
    let mut card = base(EventKind::CardAuthorization);
    card.set_int("amount", 5_000_000);
    assert_silent("payment.large_amount", &card);
    let mut topup = base(EventKind::Topup);
    topup.set_int("amount", 50_000);
    assert_silent("payment.large_amount", &topup);
}

#[test]
fn fan_in_alert_fires_on_the_third_sender_before_the_hold() {
    let f = young_payee_with_senders(2);
    assert_fires("p2p.fan_in_alert", &f);
    assert_silent("p2p.fan_in_young_payee", &f);
    let verdict = RuleSet::default_rules().decide(&f);
    assert_eq!(verdict.action, Action::Alert);
    assert!(verdict.raises_alert());
    assert_eq!(verdict.fired[0].case_by, CaseBy::Payee);
}

#[test]
fn fan_in_alert_is_silent_for_a_young_account_paid_by_one_friend_or_an_old_popular_one() {
    assert_silent("p2p.fan_in_alert", &young_payee_with_senders(1));
    let mut popular = base(EventKind::P2p);
    popular.set_int("payee_senders_1h", 30);
    assert_silent("p2p.fan_in_alert", &popular);
}

#[test]
fn velocity_holds_a_burst_of_p2p() {
    let mut f = base(EventKind::P2p);
    f.set_int("customer_count_1h", 10);
    f.set_int("customer_sum_1h", 8_500);
    assert_fires("p2p.velocity", &f);
}

#[test]
fn velocity_is_silent_when_splitting_a_bill_or_receiving_many() {
    let mut f = base(EventKind::P2p);
    f.set_int("customer_count_1h", 4);
    f.set_int("payee_count_1h", 40);
    assert_silent("p2p.velocity", &f);
    // Many small transfers (a bill split twelve ways) stay under the step-up amount.
    let mut split = base(EventKind::P2p);
    split.set_int("customer_count_1h", 12);
    split.set_int("customer_sum_1h", 6_000);
    split.set_int("amount", 500);
    assert_silent("p2p.velocity", &split);
}

// D1.

fn failed_login() -> Features {
    let mut f = base(EventKind::Login);
    f.set_bool("failed", true);
    f.set_bool("device_known", false);
    f.set_int("device_age_s", NEVER_S);
    f
}

#[test]
fn stuffing_network_alerts() {
    let mut f = failed_login();
    f.set_int("network_failures_1h", 20);
    f.set_int("network_customers_1h", 10);
    assert_fires("login.stuffing_network", &f);
    assert_eq!(RuleSet::default_rules().decide(&f).action, Action::Alert);
}

#[test]
fn stuffing_network_is_silent_on_a_busy_carrier_network_or_one_customer_mistyping() {
    let mut carrier = failed_login();
    carrier.set_int("network_failures_1h", 4);
    carrier.set_int("network_customers_1h", 300);
    assert_silent("login.stuffing_network", &carrier);
    let mut mistyping = failed_login();
    mistyping.set_int("network_failures_1h", 25);
    mistyping.set_int("network_customers_1h", 1);
    assert_silent("login.stuffing_network", &mistyping);
}

#[test]
fn after_stuffing_network_alerts_on_a_success_without_the_device_cookie() {
    let mut f = failed_login();
    f.set_bool("failed", false);
    f.set_int("network_failures_1h", 40);
    f.set_int("network_customers_1h", 30);
    assert_fires("login.after_stuffing_network", &f);
}

#[test]
fn after_stuffing_network_is_silent_for_the_customers_own_device() {
    let mut f = base(EventKind::Login);
    f.set_int("network_failures_1h", 40);
    f.set_int("network_customers_1h", 30);
    assert_silent("login.after_stuffing_network", &f);
}

#[test]
fn global_failure_spike_alerts() {
    let mut f = failed_login();
    f.set_int("global_login_failures_1m", 45);
    f.set_int("global_login_failures_baseline", 2);
    assert_fires("login.global_failure_spike", &f);
}

#[test]
fn global_failure_spike_is_silent_at_a_high_but_usual_rate_and_on_success() {
    let mut usual = failed_login();
    usual.set_int("global_login_failures_1m", 45);
    usual.set_int("global_login_failures_baseline", 30);
    assert_silent("login.global_failure_spike", &usual);
    let mut success = base(EventKind::Login);
    success.set_int("global_login_failures_1m", 45);
    assert_silent("login.global_failure_spike", &success);
}

// D2 and D3.

#[test]
fn payout_after_credential_change_holds() {
    let mut f = base(EventKind::Payout);
    f.set_bool("in_cooling_off", true);
    f.set_int("since_credential_change_s", 3_600);
    assert_fires("payout.after_credential_change", &f);
}

#[test]
fn payout_after_credential_change_is_silent_once_cooling_off_ends_and_for_merchant_payments() {
    let mut f = base(EventKind::Payout);
    f.set_int("since_credential_change_s", 2 * DAY_S);
    assert_silent("payout.after_credential_change", &f);
    let mut shop = base(EventKind::MerchantPayment);
    shop.set_bool("in_cooling_off", true);
    assert_silent("payout.after_credential_change", &shop);
}

#[test]
fn new_device_after_credential_change_alerts() {
    let mut f = base(EventKind::Login);
    f.set_bool("device_known", false);
    f.set_int("device_age_s", NEVER_S);
    f.set_int("since_credential_change_s", 600);
    assert_fires("login.new_device_after_credential_change", &f);
}

#[test]
fn new_device_after_credential_change_is_silent_on_the_device_that_made_the_change() {
    let mut f = base(EventKind::Login);
    f.set_int("since_credential_change_s", 600);
    assert_silent("login.new_device_after_credential_change", &f);
}

// D4.

fn link_attempt() -> Features {
    let mut f = base(EventKind::FundingLink);
    f.set_int("source_age_s", NEVER_S);
    f
}

#[test]
fn link_failures_network_denies() {
    let mut f = link_attempt();
    f.set_int("network_failures_1h", 10);
    f.set_int("network_customers_1h", 5);
    assert_fires("funding.link_failures_network", &f);
    let verdict = RuleSet::default_rules().decide(&f);
    assert_eq!(verdict.action, Action::Deny);
    assert!(verdict.raises_alert());
}

#[test]
fn link_failures_network_is_silent_for_an_office_with_a_few_typos() {
    let mut f = link_attempt();
    f.set_int("network_failures_1h", 3);
    f.set_int("network_customers_1h", 12);
    assert_silent("funding.link_failures_network", &f);
}

#[test]
fn link_failures_device_denies() {
    let mut f = link_attempt();
    f.set_int("device_failures_1h", 5);
    assert_fires("funding.link_failures_device", &f);
}

#[test]
fn link_failures_device_is_silent_after_two_typos() {
    let mut f = link_attempt();
    f.set_int("device_failures_1h", 2);
    f.set_int("customer_failures_1h", 2);
    assert_silent("funding.link_failures_device", &f);
}

#[test]
fn link_failures_customer_alerts() {
    let mut f = link_attempt();
    f.set_int("customer_failures_1h", 3);
    assert_fires("funding.link_failures_customer", &f);
}

#[test]
fn link_failures_customer_is_silent_after_one_typo_or_for_other_kinds() {
    let mut f = link_attempt();
    f.set_int("customer_failures_1h", 1);
    assert_silent("funding.link_failures_customer", &f);
    let mut login = base(EventKind::Login);
    login.set_int("customer_failures_1h", 5);
    assert_silent("funding.link_failures_customer", &login);
}

// D7.

fn spend_after_topup(kind: EventKind) -> Features {
    let mut f = base(kind);
    f.set_int("since_topup_s", 240);
    f.set_int("last_topup_amount", 40_000);
    f.set_int("amount", 36_000);
    f.set_int("device_age_s", 600);
    f
}

#[test]
fn topup_then_spend_holds() {
    for kind in [
        EventKind::P2p,
        EventKind::Payout,
        EventKind::MerchantPayment,
    ] {
        let f = spend_after_topup(kind);
        assert_fires("topup.then_spend", &f);
        assert_eq!(RuleSet::default_rules().decide(&f).action, Action::Hold);
    }
    let mut unknown = spend_after_topup(EventKind::Payout);
    unknown.set_bool("device_known", false);
    unknown.set_int("device_age_s", NEVER_S);
    assert_fires("topup.then_spend", &unknown);
}

#[test]
fn topup_then_spend_is_silent_on_the_usual_device_for_a_part_or_later() {
    let mut usual = spend_after_topup(EventKind::MerchantPayment);
    usual.set_int("device_age_s", 200 * DAY_S);
    assert_silent("topup.then_spend", &usual);
    let mut part = spend_after_topup(EventKind::MerchantPayment);
    part.set_int("amount", 31_999);
    assert_silent("topup.then_spend", &part);
    let mut later = spend_after_topup(EventKind::P2p);
    later.set_int("since_topup_s", 600);
    assert_silent("topup.then_spend", &later);
    let card = spend_after_topup(EventKind::CardAuthorization);
    assert_silent("topup.then_spend", &card);
}

#[test]
fn new_device_large_out_alerts_without_stopping_the_money() {
    let mut f = base(EventKind::Payout);
    f.set_bool("device_known", false);
    f.set_int("device_age_s", NEVER_S);
    f.set_int("amount", 100_000);
    assert_fires("device.new_large_out", &f);
    let verdict = RuleSet::default_rules().decide(&f);
    assert!(verdict.raises_alert());
    let mut under = f.clone();
    under.set_int("amount", 99_999);
    assert_silent("device.new_large_out", &under);
}

#[test]
fn new_device_large_out_is_silent_for_small_amounts_and_on_an_old_device() {
    let mut small = base(EventKind::MerchantPayment);
    small.set_int("device_age_s", 3_600);
    small.set_int("amount", 2_000);
    assert_silent("device.new_large_out", &small);
    let mut old = base(EventKind::Payout);
    old.set_int("amount", 80_000);
    assert_silent("device.new_large_out", &old);
}

#[test]
fn new_source_large_alerts() {
    let mut f = base(EventKind::Topup);
    f.set_int("source_age_s", DAY_S);
    f.set_int("amount", 50_000);
    assert_fires("topup.new_source_large", &f);
}

#[test]
fn new_source_large_is_silent_for_a_first_small_top_up_or_an_old_source() {
    let mut small = base(EventKind::Topup);
    small.set_int("source_age_s", 600);
    small.set_int("amount", 10_000);
    assert_silent("topup.new_source_large", &small);
    let mut old = base(EventKind::Topup);
    old.set_int("amount", 90_000);
    assert_silent("topup.new_source_large", &old);
}

// Cards.

#[test]
fn stuffing_network_early_alerts_on_unknown_devices_failing_across_five_customers() {
    let mut f = base(EventKind::Login);
    f.set_bool("failed", true);
    f.set_bool("device_known", false);
    f.set_int("device_age_s", NEVER_S);
    f.set_int("network_failures_1h", 5);
    f.set_int("network_customers_1h", 5);
    assert_fires("login.stuffing_network_early", &f);
    assert_eq!(RuleSet::default_rules().decide(&f).action, Action::Alert);
}

#[test]
fn stuffing_network_early_is_silent_for_known_devices_and_a_few_customers() {
    let mut known = base(EventKind::Login);
    known.set_bool("failed", true);
    known.set_int("network_failures_1h", 9);
    known.set_int("network_customers_1h", 9);
    assert_silent("login.stuffing_network_early", &known);
    let mut few = base(EventKind::Login);
    few.set_bool("failed", true);
    few.set_bool("device_known", false);
    few.set_int("device_age_s", NEVER_S);
    few.set_int("network_failures_1h", 9);
    few.set_int("network_customers_1h", 4);
    assert_silent("login.stuffing_network_early", &few);
}

#[test]
fn account_guessing_alerts_from_the_tenth_failure_on_one_account() {
    let mut f = base(EventKind::Login);
    f.set_bool("failed", true);
    f.set_int("customer_failures_1h", 10);
    assert_fires("login.account_guessing", &f);
    assert_eq!(RuleSet::default_rules().decide(&f).action, Action::Alert);
}

#[test]
fn account_guessing_is_silent_for_a_few_typos_and_a_success() {
    let mut typos = base(EventKind::Login);
    typos.set_bool("failed", true);
    typos.set_int("customer_failures_1h", 9);
    assert_silent("login.account_guessing", &typos);
    let mut success = base(EventKind::Login);
    success.set_int("customer_failures_1h", 12);
    assert_silent("login.account_guessing", &success);
}

#[test]
fn link_failure_other_customer_alerts_on_the_second_account_from_a_network() {
    let mut f = base(EventKind::FundingLink);
    f.set_bool("failed", true);
    f.set_int("network_failures_1h", 1);
    assert_fires("funding.link_failure_other_customer", &f);
    assert_eq!(RuleSet::default_rules().decide(&f).action, Action::Alert);
}

#[test]
fn link_failure_other_customer_is_silent_for_a_customer_retrying_or_a_success() {
    let mut retry = base(EventKind::FundingLink);
    retry.set_bool("failed", true);
    retry.set_int("network_failures_1h", 1);
    retry.set_int("customer_failures_1h", 1);
    assert_silent("funding.link_failure_other_customer", &retry);
    let mut success = base(EventKind::FundingLink);
    success.set_int("network_failures_1h", 1);
    assert_silent("funding.link_failure_other_customer", &success);
}

#[test]
fn topup_new_device_alerts_from_the_step_up_amount() {
    let mut f = base(EventKind::Topup);
    f.set_int("device_age_s", 120);
    f.set_int("amount", 10_000);
    assert_fires("topup.new_device", &f);
    assert_eq!(RuleSet::default_rules().decide(&f).action, Action::Alert);
}

#[test]
fn topup_new_device_is_silent_for_small_amounts_and_devices_older_than_an_hour() {
    let mut small = base(EventKind::Topup);
    small.set_int("device_age_s", 120);
    small.set_int("amount", 9_999);
    assert_silent("topup.new_device", &small);
    let mut known = base(EventKind::Topup);
    known.set_int("device_age_s", 3_601);
    known.set_int("amount", 50_000);
    assert_silent("topup.new_device", &known);
}

#[test]
fn card_velocity_denies() {
    let mut f = base(EventKind::CardAuthorization);
    f.set_int("customer_count_1m", 5);
    assert_fires("card.velocity", &f);
    assert_eq!(RuleSet::default_rules().decide(&f).action, Action::Deny);
}

#[test]
fn card_velocity_is_silent_for_an_authorization_and_its_increment() {
    let mut f = base(EventKind::CardAuthorization);
    f.set_int("customer_count_1m", 1);
    assert_silent("card.velocity", &f);
    let mut qr = base(EventKind::MerchantPayment);
    qr.set_int("customer_count_1m", 8);
    assert_silent("card.velocity", &qr);
}

#[test]
fn card_velocity_hour_alerts() {
    let mut f = base(EventKind::CardAuthorization);
    f.set_int("customer_count_1h", 20);
    assert_fires("card.velocity_hour", &f);
}

#[test]
fn card_velocity_hour_is_silent_on_a_busy_shopping_day() {
    let mut f = base(EventKind::CardAuthorization);
    f.set_int("customer_count_1h", 6);
    f.set_int("customer_count_24h", 19);
    assert_silent("card.velocity_hour", &f);
}

// Guessing customers' payment codes at a till.

#[test]
fn code_guessing_alerts_on_the_merchant_and_on_the_network() {
    let mut f = base(EventKind::CodeCharge);
    f.set_int("payee_failures_1h", 10);
    assert_fires("code.guessing_merchant", &f);
    let mut f = base(EventKind::CodeCharge);
    f.set_int("network_failures_1h", 10);
    assert_fires("code.guessing_network", &f);
}

#[test]
fn a_few_mistyped_codes_are_silent() {
    let mut f = base(EventKind::CodeCharge);
    f.set_int("payee_failures_1h", 9);
    f.set_int("network_failures_1h", 9);
    assert_silent("code.guessing_merchant", &f);
    assert_silent("code.guessing_network", &f);
    // Another kind's failures are not codes.
    let mut f = base(EventKind::FundingLink);
    f.set_int("network_failures_1h", 30);
    assert_silent("code.guessing_network", &f);
}

// Combination.

const COMBINE: &str = r#"
version = "t"

[[rule]]
name = "a"
description = "Alerts."
when = 'amount > 0'
action = "alert"
score = 10
reason = "a"

[[rule]]
name = "b"
description = "Holds."
when = 'amount > 10'
action = "hold"
score = 25
reason = "b"

[[rule]]
name = "c"
description = "Also holds."
when = 'amount > 20'
action = "hold"
score = 5
reason = "c"
case = "payee"

[[rule]]
name = "d"
description = "Challenges."
when = 'amount > 30'
action = "challenge"
reason = "d"

[[rule]]
name = "off"
description = "Disabled."
when = 'true'
action = "deny"
score = 1000
reason = "off"
enabled = false

[[rule]]
name = "overflow"
description = "Fails on huge amounts."
when = 'amount * 10 > 1000000000'
action = "deny"
reason = "overflow"
"#;

fn amount(a: i64) -> Features {
    let mut f = Features::new(EventKind::P2p);
    f.set_int("amount", a);
    f
}

#[test]
fn the_strictest_action_wins_and_scores_add_up() {
    let set = RuleSet::parse(COMBINE).unwrap();
    assert!(!set.rules()[4].enabled);
    let v = set.decide(&amount(50));
    assert_eq!(v.action, Action::Hold);
    assert_eq!(v.score, 40);
    let names: Vec<_> = v.fired.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(v.strictest().unwrap().rule, "b");
    assert!(v.raises_alert());
    assert!(v.errors.is_empty());

    let v = set.decide(&amount(5));
    assert_eq!((v.action, v.score), (Action::Alert, 10));
    let v = set.decide(&amount(0));
    assert_eq!((v.action, v.score), (Action::Allow, 0));
    assert_eq!(v.strictest(), None);
    assert!(!v.raises_alert());
}

#[test]
fn a_rule_failing_at_run_time_is_reported_and_does_not_fire() {
    let set = RuleSet::parse(COMBINE).unwrap();
    let v = set.decide(&amount(i64::MAX));
    assert_eq!(v.errors, ["overflow"]);
    assert_eq!(v.action, Action::Hold);
    assert!(v.fired.iter().all(|f| f.rule != "overflow"));
    let v = set.decide(&amount(200_000_000));
    assert_eq!(v.action, Action::Deny);
    assert_eq!(v.strictest().unwrap().rule, "overflow");
}

#[test]
fn the_digest_follows_the_source_text() {
    let a = RuleSet::parse(COMBINE).unwrap();
    let b = RuleSet::parse(COMBINE).unwrap();
    assert_eq!(a.digest(), b.digest());
    let c = RuleSet::parse(&COMBINE.replace("score = 25", "score = 26")).unwrap();
    assert_ne!(a.digest(), c.digest());
    assert!(a.digest().chars().all(|ch| ch.is_ascii_hexdigit()));
}

#[test]
fn a_rule_set_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<RuleSet>();
}

// Invalid files.

fn one_rule(fields: &str) -> String {
    format!("[[rule]]\n{fields}\n")
}

const GOOD: &str =
    "name = \"x.y\"\ndescription = \"d\"\nwhen = 'amount > 1'\naction = \"hold\"\nreason = \"r\"";

#[track_caller]
fn refused(text: &str) -> RulesError {
    match RuleSet::parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

#[track_caller]
fn refused_rule(text: &str, rule: &str, words: &str) {
    let e = refused(text);
    assert_eq!(e.rule.as_deref(), Some(rule), "{e}");
    let message = e.to_string();
    assert!(
        message.starts_with(&format!("rule `{rule}`: ")),
        "{message}"
    );
    assert!(message.contains(words), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn the_good_rule_parses() {
    let set = RuleSet::parse(&one_rule(GOOD)).unwrap();
    let rule = &set.rules()[0];
    assert_eq!(rule.name, "x.y");
    assert_eq!(rule.action, Action::Hold);
    assert_eq!(rule.score, 0);
    assert_eq!(rule.case_by, CaseBy::Customer);
    assert!(rule.enabled);
    assert_eq!(set.version(), "");
}

#[test]
fn file_level_problems_name_no_rule() {
    let e = refused("[[rule]\nname = 1");
    assert_eq!(e.rule, None);
    assert!(e.problem.starts_with("invalid rules file at line 1"), "{e}");
    let e = refused(&format!("colour = \"red\"\n{}", one_rule(GOOD)));
    assert_eq!(e.rule, None);
    assert!(e.problem.contains("colour"), "{e}");
    let e = refused("version = \"1\"\n");
    assert_eq!(e.to_string(), "the file has no [[rule]]");
    let e = refused(&one_rule("description = \"no name\""));
    assert_eq!(e.rule, None);
    assert!(e.problem.contains("rule 1 has no `name`"), "{e}");
}

#[test]
fn an_unknown_key_in_a_rule_is_refused() {
    refused_rule(
        &one_rule(&format!("{GOOD}\npriority = 3")),
        "x.y",
        "priority",
    );
}

#[test]
fn a_missing_key_is_refused() {
    let text = one_rule("name = \"x.y\"\ndescription = \"d\"\naction = \"hold\"\nreason = \"r\"");
    refused_rule(&text, "x.y", "when");
}

#[test]
fn bad_names_are_refused() {
    for bad in ["", "Upper", "has space", "dash-ed", &"a".repeat(65)] {
        let text = one_rule(&GOOD.replace("x.y", bad));
        refused_rule(&text, bad, "bad name");
    }
    RuleSet::parse(&one_rule(&GOOD.replace("x.y", &"a".repeat(64)))).unwrap();
}

#[test]
fn duplicate_names_are_refused() {
    let text = format!("{}{}", one_rule(GOOD), one_rule(GOOD));
    refused_rule(&text, "x.y", "duplicate name");
}

#[test]
fn unknown_actions_and_cases_are_refused() {
    refused_rule(
        &one_rule(&GOOD.replace("\"hold\"", "\"block\"")),
        "x.y",
        "unknown action `block`",
    );
    refused_rule(
        &one_rule(&format!("{GOOD}\ncase = \"merchant\"")),
        "x.y",
        "unknown case `merchant`",
    );
}

#[test]
fn scores_out_of_range_are_refused() {
    refused_rule(
        &one_rule(&format!("{GOOD}\nscore = 1001")),
        "x.y",
        "score 1001",
    );
    refused_rule(&one_rule(&format!("{GOOD}\nscore = -1")), "x.y", "score -1");
    RuleSet::parse(&one_rule(&format!("{GOOD}\nscore = 1000"))).unwrap();
}

#[test]
fn empty_descriptions_and_bad_reasons_are_refused() {
    refused_rule(
        &one_rule(&GOOD.replace("\"d\"", "\"  \"")),
        "x.y",
        "description is empty",
    );
    refused_rule(
        &one_rule(&GOOD.replace("reason = \"r\"", "reason = \"Fan-In\"")),
        "x.y",
        "bad reason",
    );
}

#[test]
fn an_expression_that_does_not_compile_is_refused_with_the_parser_message() {
    let text = one_rule(&GOOD.replace("amount > 1", "amount >"));
    refused_rule(&text, "x.y", "does not compile: 1:");
}

#[test]
fn an_unknown_feature_is_refused_by_name() {
    let text = one_rule(&GOOD.replace("amount > 1", "amount > 1 && balance_left < 5"));
    refused_rule(&text, "x.y", "unknown feature `balance_left`");
}

#[test]
fn an_expression_that_is_not_a_bool_is_refused() {
    let text = one_rule(&GOOD.replace("amount > 1", "amount + 1"));
    refused_rule(&text, "x.y", "yields an int, not a bool");
    let text = one_rule(&GOOD.replace("amount > 1", "event == \"p2p\" ? 1 : false"));
    refused_rule(&text, "x.y", "on a default `p2p` event");
}

#[test]
fn an_expression_that_fails_on_default_features_is_refused() {
    let text = one_rule(&GOOD.replace("amount > 1", "amount / customer_count_1h > 2"));
    refused_rule(&text, "x.y", "fails on a default `login` event");
    let text = one_rule(&GOOD.replace("amount > 1", "amount > \"1\""));
    refused_rule(&text, "x.y", "fails on a default");
}

#[test]
fn a_long_expression_is_refused() {
    let long = format!("amount > 1{}", " && amount > 1".repeat(200));
    let text = one_rule(&GOOD.replace("amount > 1", &long));
    refused_rule(&text, "x.y", "more than 2000");
}

#[test]
fn a_rule_can_be_turned_off_by_name_and_the_digest_says_so() {
    let mut f = base(EventKind::CardAuthorization);
    f.set_int("customer_count_1m", 9);
    assert_fires("card.velocity", &f);
    let full = RuleSet::default_rules();
    let without = RuleSet::default_rules()
        .without(&["card.velocity"])
        .unwrap();
    assert!(
        !without
            .decide(&f)
            .fired
            .iter()
            .any(|r| r.rule == "card.velocity")
    );
    assert_ne!(full.digest(), without.digest());
    let unknown = RuleSet::default_rules()
        .without(&["no.such_rule"])
        .unwrap_err();
    assert_eq!(unknown.rule.as_deref(), Some("no.such_rule"));
}

#[test]
fn a_rule_applies_to_the_kinds_its_event_condition_allows_and_needs_follow() {
    let set = RuleSet::default_rules();
    let rule = |name: &str| set.rules().iter().find(|r| r.name == name).unwrap();
    assert_eq!(rule("p2p.new_payee").kinds, vec![EventKind::P2p]);
    assert_eq!(
        rule("payment.large_amount").kinds,
        vec![
            EventKind::P2p,
            EventKind::MerchantPayment,
            EventKind::CodeCharge,
            EventKind::Payout,
            EventKind::CardAuthorization
        ]
    );
    assert!(
        rule("p2p.fan_in_young_payee")
            .references
            .contains(&"payee_senders_1h".to_owned())
    );
    // A merchant payment needs no payee or network window; a login needs the network's.
    let merchant = set.needs(EventKind::MerchantPayment);
    assert!(
        !merchant
            .iter()
            .any(|f| f.starts_with("payee_") || f.starts_with("network_"))
    );
    assert!(merchant.contains("since_topup_s"));
    let login = set.needs(EventKind::Login);
    assert!(login.contains("network_failures_1h") && login.contains("network_customers_1h"));
    // A rule whose event condition comes second is kept for every kind (conservative).
    let late = RuleSet::parse(
        "[[rule]]\nname = \"late\"\ndescription = \"d\"\nwhen = 'amount > 5 && event == \"p2p\"'\naction = \"alert\"\nreason = \"r\"\n",
    )
    .unwrap();
    assert!(late.rules()[0].kinds.contains(&EventKind::P2p));
    let mut f = base(EventKind::P2p);
    f.set_int("amount", 6);
    assert_eq!(late.decide(&f).fired.len(), 1);
}
