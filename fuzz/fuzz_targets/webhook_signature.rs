//! Webhook signatures as a merchant verifies them (Standard Webhooks: `v1,` and base64 of
//! HMAC-SHA256 over `id.timestamp.body`). Properties: the header holds one signature per
//! secret, each of which a receiver computing the scheme on its own accepts; none is accepted
//! for another body, timestamp or id, or under another secret; a `whsec_` secret reads back.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use koban_pay::webhooks::{secret_key, signatures};
use libfuzzer_sys::fuzz_target;

/// What a receiver does: computes the signature itself and looks for it in the header.
fn verifies(key: &[u8], id: &str, timestamp: i64, body: &str, header: &str) -> bool {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    header.split(' ').any(|entry| entry == expected)
}

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<41>() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // Webhook ids are Koban's own (msg_ and a UUID): never a dot, which the scheme's
    // `id.timestamp.body` could not tell apart.
    let split = usize::from(head[40]).min(text.len());
    let Some((id, body)) = text.split_at_checked(split) else {
        return;
    };
    if id.contains('.') {
        return;
    }
    let keys = [head[..16].to_vec(), head[16..32].to_vec()];
    let timestamp = i64::from_le_bytes(head[32..40].try_into().unwrap());
    let header = signatures(&keys, id, timestamp, body);
    assert_eq!(
        header.split(' ').count(),
        2,
        "one signature per secret: {header}"
    );
    for key in &keys {
        assert!(verifies(key, id, timestamp, body, &header));
        assert!(!verifies(key, id, timestamp.wrapping_add(1), body, &header));
        assert!(!verifies(key, id, timestamp, &format!("{body} "), &header));
        assert!(!verifies(key, &format!("{id}x"), timestamp, body, &header));
    }
    let mut other = keys[0].clone();
    other[0] ^= 1;
    if other != keys[1] {
        assert!(!verifies(&other, id, timestamp, body, &header));
    }
    let secret = format!("whsec_{}", STANDARD.encode(&keys[0]));
    assert_eq!(secret_key(&secret), Some(keys[0].clone()));
    let _ = secret_key(text);
});
