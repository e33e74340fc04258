//! A short attack drill against the drill's own server: every scenario runs, no money reaches
//! an attacker, no account is taken over, the bystanders keep paying, and every attack is
//! detected within the wait.

use serde_json::Value;

#[test]
fn a_short_drill_moves_no_money_to_the_attacker_and_detects_every_attack() {
    let out = crate::helpers::koban()
        .args([
            "drill",
            "--customers",
            "3",
            "--attempts",
            "40",
            "--detect-wait-s",
            "10",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the drill failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "credential_stuffing",
            "password_spray",
            "password_reset_hijack",
            "account_recovery_hijack",
            "p2p_drain_with_a_stolen_session",
            "mule_chain",
            "merchant_code_guessing",
            "stolen_card_topup",
            "bank_link_guessing",
            "card_testing",
            "insider_operator_alone",
        ]
    );
    for s in scenarios {
        assert!(s["skipped"].is_null(), "{s}");
        assert!(s["attempts"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["money_to_attacker_minor"], 0, "{s}");
        assert_eq!(s["accounts_taken_over"], 0, "{s}");
        assert!(s["legit_success_rate"].as_f64().unwrap() >= 0.9, "{s}");
        assert!(!s["stopped_by"].as_object().unwrap().is_empty(), "{s}");
        let detected = s["first_alert_s"].as_f64();
        assert!(
            detected.is_some_and(|at| at <= 10.0),
            "detected in time: {s}"
        );
    }
    let by_name = |name: &str| scenarios.iter().find(|s| s["name"] == name).unwrap();
    let said = |name: &str, what: &str| {
        by_name(name)["stopped_by"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains(what))
    };
    // The reused password is found by stuffing, and the second factor stops it.
    assert!(said("credential_stuffing", "second-factor-required"));
    assert!(said("merchant_code_guessing", "throttled"));
    // What only a second operator may do is refused to the insider and their invitee.
    assert!(said("insider_operator_alone", "rule ops.four_eyes_refused"));
    // The stolen cards' money stays in the attacker's wallet: the spend is held.
    assert!(said("stolen_card_topup", "the spend: held"));
    assert!(said("card_testing", "alarm card_testing"));
}
