//! The card network's signed messages: the signature over the timestamp, method, path and body
//! (each part length-prefixed), and the authorization message's JSON. Properties: a signature
//! verifies; it does not after any change to a part, to the secret or to one of its own hex
//! digits, nor when bytes move from the path to the body; a message body never panics the
//! reader, and one that reads carries what it was sent.
#![no_main]

use koban_cards::card_keys::{network_signature, network_signature_ok};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<42>() else {
        return;
    };
    let secret = &head[..32];
    let timestamp = i64::from_le_bytes(head[32..40].try_into().unwrap());
    let method = ["POST", "GET", "PUT"][usize::from(head[40]) % 3];
    let split = usize::from(head[41]).min(rest.len());
    let (path, body) = rest.split_at(split);
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let signature = network_signature(secret, timestamp, method, path, body);
    assert_eq!(signature.len(), 64);
    assert!(network_signature_ok(
        secret, timestamp, method, path, body, &signature
    ));
    let ok = |secret: &[u8], timestamp, method, path: &str, body: &[u8]| {
        network_signature_ok(secret, timestamp, method, path, body, &signature)
    };
    assert!(!ok(secret, timestamp.wrapping_add(1), method, path, body));
    assert!(!ok(secret, timestamp, "DELETE", path, body));
    assert!(!ok(secret, timestamp, method, &format!("{path}/"), body));
    let mut other = secret.to_vec();
    other[0] ^= 1;
    assert!(!ok(&other, timestamp, method, path, body));
    if let Some((&first, tail)) = body.split_first() {
        let mut changed = body.to_vec();
        changed[0] ^= 0x80;
        assert!(!ok(secret, timestamp, method, path, &changed));
        if first.is_ascii() {
            // The same bytes, one of them moved from the body to the path.
            let moved = format!("{path}{}", char::from(first));
            assert!(!ok(secret, timestamp, method, &moved, tail));
        }
    }
    let at = usize::from(head[40]) % 64;
    let mut digits = signature.clone().into_bytes();
    digits[at] = if digits[at] == b'0' { b'1' } else { b'0' };
    let digits = String::from_utf8(digits).unwrap();
    assert!(!network_signature_ok(
        secret, timestamp, method, path, body, &digits
    ));
    // The authorization message itself, read as the server reads a signed body: only an
    // object, and an amount it reads is one the JSON wrote as an integer or a whole float.
    if let Ok(message) = koban_api::extract::json_body::<koban_api::cards::AuthorizationIn>(body) {
        assert_eq!(body.trim_ascii_start().first(), Some(&b'{'));
        let value: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(value["amount"].as_f64(), Some(message.amount as f64));
    }
});
