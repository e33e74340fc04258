//! `koban bench offline`: the simulation through the binary, with cheaters, across seeds.

#[test]
fn bench_offline_never_loses_more_than_the_bound_across_seeds() {
    let mut losses = 0;
    for seed in ["11", "12", "13"] {
        let report = crate::bench::bench_json(&[
            "offline",
            "--devices",
            "60",
            "--terminals",
            "10",
            "--hours",
            "48",
            "--cheaters",
            "9",
            "--seed",
            seed,
            "--server-purses",
            "0",
        ]);
        assert_eq!(report["invariants_ok"], true, "{report}");
        assert_eq!(report["errors"], 0, "{report}");
        let loss = report["loss_minor"].as_u64().unwrap();
        let bound = report["bound_minor"].as_u64().unwrap();
        // Nine cheaters, each able to cost at most one limit (factor 2) of ¥20,000.
        assert_eq!(bound, 9 * 20_000, "{report}");
        assert!(loss <= bound, "{report}");
        losses += loss;
        // Every purse whose accepted vouchers show double spending is revoked (the simulation
        // checks it purse by purse); a device's report can find one sooner.
        assert!(
            report["double_spends_detected"].as_u64()
                >= report["cheaters_who_double_spent"].as_u64(),
            "{report}"
        );
        assert!(
            report["double_spends_detected"].as_u64().unwrap() >= 6,
            "{report}"
        );
        assert!(report["payments"].as_u64().unwrap() > 200, "{report}");
        assert!(report["settled"] == report["payments"], "{report}");
        assert!(
            report["voucher_text_chars"].as_u64().unwrap() <= 520,
            "{report}"
        );
    }
    // Some seed has a cheater spending through an outage, past the reserve.
    assert!(losses > 0, "the cheaters never cost anything");
    // With factor 1 the issuer pays nothing of its own: merchants bear what cheaters take
    // beyond the reserve, and the report says so.
    let report = crate::bench::bench_json(&[
        "offline",
        "--devices",
        "20",
        "--terminals",
        "6",
        "--hours",
        "24",
        "--cheaters",
        "3",
        "--guarantee-factor",
        "1",
        "--server-purses",
        "4",
    ]);
    assert_eq!(report["invariants_ok"], true, "{report}");
    assert_eq!(report["loss_minor"], 0, "{report}");
    assert_eq!(report["bound_minor"], 0, "{report}");
    assert!(report["unpaid_minor"].as_u64().unwrap() > 0, "{report}");
    // And for real: four customers load purses over HTTP and pay four tills ten times each;
    // every voucher the merchants upload is paid once, and the books hold.
    let server = &report["server"];
    assert_eq!(server["purses"], 4, "{report}");
    assert_eq!(server["vouchers"], 40, "{report}");
    assert_eq!(server["paid"], 40, "{report}");
    assert_eq!(server["invariants_ok"], true, "{report}");
    assert!(server["settlements_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(
        report["requests_per_second"].as_f64().unwrap(),
        (server["settlements_per_second"].as_f64().unwrap() * 10.0).round() / 10.0
    );
}
