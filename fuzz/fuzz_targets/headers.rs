//! Header values Koban reads: the Idempotency-Key, the language (Accept-Language), a merchant
//! API key's environment and scopes. Properties: a key is accepted exactly when it is 1 to 255
//! printable ASCII characters and is kept as sent; the language is always one Koban speaks and
//! follows an explicit choice; what is accepted never panics later readers.
#![no_main]

use koban_pay::IdempotencyKey;
use koban_shared::lang::Lang;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let printable = !text.is_empty()
        && text.len() <= 255
        && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    match IdempotencyKey::parse(text) {
        Ok(key) => {
            assert!(printable);
            assert_eq!(key.as_str(), text);
        }
        Err(_) => assert!(!printable),
    }
    let negotiated = Lang::negotiate(None, Some(text));
    assert!(matches!(negotiated.code(), "en" | "ja"));
    if let Some(chosen) = Lang::parse(text) {
        assert_eq!(Lang::negotiate(Some(text), Some("ja, en;q=0.5")), chosen);
        assert_eq!(Lang::parse(chosen.code()), Some(chosen));
    }
    let _ = koban_auth::apikeys::Environment::parse(text);
    let scopes: Vec<String> = text.split(',').map(str::to_owned).collect();
    if let Ok(parsed) = koban_auth::apikeys::Scopes::parse(&scopes) {
        let _ = format!("{parsed:?}");
    }
});
