//! The rules file: TOML with CEL conditions, as an operator writes it. Properties: any text
//! either loads or is refused with an error (never a panic); a rule set that loads decides on
//! any event without panicking, the same way twice, and its digest is stable; a condition an
//! operator writes is held to the same.
#![no_main]

use koban_risk::{EventKind, Features, RuleSet};
use libfuzzer_sys::fuzz_target;

fn exercise(rules: &RuleSet, seed: &[u8]) {
    assert_eq!(rules.digest(), rules.digest());
    for (n, kind) in EventKind::ALL.into_iter().enumerate() {
        let mut features = Features::new(kind);
        let value = i64::from(seed.get(n).copied().unwrap_or(0));
        for name in [
            "amount",
            "customer_count_1m",
            "payee_senders_1h",
            "device_age_s",
        ] {
            features.set_int(name, value * 1_000);
        }
        let first = rules.decide(&features);
        let again = rules.decide(&features);
        assert_eq!(format!("{first:?}"), format!("{again:?}"));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rules) = RuleSet::parse(text) {
        exercise(&rules, data);
    }
    // The text as one rule's condition.
    let condition = text.replace('\'', "\"");
    let file = format!(
        "version = \"fuzz\"\n[[rule]]\nname = \"fuzz.rule\"\ndescription = \"a condition\"\nwhen = '''{condition}'''\naction = \"alert\"\nscore = 1\nreason = \"fuzz\"\n"
    );
    if let Ok(rules) = RuleSet::parse(&file) {
        exercise(&rules, data);
    }
});
