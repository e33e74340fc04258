//! A short attack drill against the drill's own server: no money reaches an attacker, no
//! account is taken over, the customers keep paying, and guessing payment codes is detected.

use serde_json::Value;

#[test]
fn a_short_drill_moves_no_money_to_the_attacker_and_detects_code_guessing() {
    let out = crate::helpers::koban()
        .args([
            "drill",
            "--customers",
            "3",
            "--attempts",
            "40",
            "--detect-wait-s",
            "5",
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
            "p2p_drain_with_a_stolen_session",
            "merchant_code_guessing"
        ]
    );
    for s in scenarios {
        assert!(s["attempts"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["money_to_attacker_minor"], 0, "{s}");
        assert_eq!(s["accounts_taken_over"], 0, "{s}");
        assert!(s["legit_success_rate"].as_f64().unwrap() >= 0.9, "{s}");
        assert!(!s["stopped_by"].as_object().unwrap().is_empty(), "{s}");
    }
    // The reused password is found by stuffing, and the second factor stops it.
    assert!(
        scenarios[0]["stopped_by"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("second-factor-required")),
        "{}",
        scenarios[0]
    );
    let guessing = &scenarios[3];
    assert!(
        guessing["stopped_by"]["throttled"].as_u64().unwrap() > 0,
        "{guessing}"
    );
    let detected = guessing["first_alert_s"]
        .as_f64()
        .expect("code guessing raises an alert");
    assert!(detected <= 60.0, "{guessing}");
}
