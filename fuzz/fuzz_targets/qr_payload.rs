//! The merchant's QR payload and the customer's payment code, as a till or a wallet scans them.
//! Properties: whatever text is accepted, even text signed with the server's key, is exactly
//! the canonical encoding of what it names;
//! a payload made from any fields reads back to them; changing any one byte of it makes it
//! unreadable; a code is accepted only as 18 digits, with or without its QR prefix.
#![no_main]

use koban_auth::secret::ServerKeys;
use koban_ledger::{Amount, Currency};
use koban_pay::qr::{RequestPayload, code_digits, code_qr, signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = ServerKeys::from_master([42; 32]);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(payload) = RequestPayload::decode(&keys, text) {
            assert_eq!(
                payload.encode(&keys),
                text.trim(),
                "only the canonical text reads"
            );
        }
        // Any text, signed as if this server had written it: still only the canonical form
        // of a payload reads.
        let signed = format!("{text}.{}", signature(&keys, text.trim_start()));
        if let Ok(payload) = RequestPayload::decode(&keys, &signed) {
            assert_eq!(
                payload.encode(&keys),
                signed.trim(),
                "only the canonical text reads"
            );
        }
        if let Ok(digits) = code_digits(text) {
            assert!(digits.len() == 18 && digits.bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(code_digits(&code_qr(digits)).ok(), Some(digits));
        }
    }
    let Some((fields, rest)) = data.split_first_chunk::<35>() else {
        return;
    };
    let Ok(amount) = Amount::new(u64::from_le_bytes(fields[16..24].try_into().unwrap())) else {
        return;
    };
    let payload = RequestPayload {
        id: fields[..16].try_into().unwrap(),
        amount,
        currency: Currency::ALL[usize::from(fields[24]) % Currency::ALL.len()],
        expires_s: i64::from_le_bytes(fields[25..33].try_into().unwrap()),
    };
    let text = payload.encode(&keys);
    assert!(text.is_ascii());
    assert_eq!(
        RequestPayload::decode(&keys, &text).ok(),
        Some(payload.clone())
    );
    assert!(RequestPayload::decode(&ServerKeys::from_master([43; 32]), &text).is_err());
    // Any one byte changed to another ASCII byte: refused.
    let at = usize::from(u16::from_le_bytes([fields[33], fields[34]])) % text.len();
    let mut bytes = text.into_bytes();
    let mut new = rest.first().copied().unwrap_or(b'x') & 0x7f;
    if new == bytes[at] {
        new ^= 1;
    }
    bytes[at] = new;
    let changed = String::from_utf8(bytes).unwrap();
    assert!(
        RequestPayload::decode(&keys, &changed).is_err(),
        "a changed payload was read: {changed}"
    );
});
