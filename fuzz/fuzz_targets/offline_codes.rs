//! Offline payment codes, as a terminal, a device or the server reads them: certificates,
//! challenges and vouchers, in bytes and as QR text.
//! Properties: whatever decodes is exactly the canonical encoding of what it names (bytes and
//! text); a voucher signed from any fields reads back to them and verifies; changing any one
//! byte of it makes it unreadable or unverifiable.
#![no_main]

use std::sync::OnceLock;

use koban_offline::{
    Challenge, Currency, IssuerKeys, PurseCertificate, SigningKey, TerminalCertificate, Voucher,
    VoucherContent,
};
use libfuzzer_sys::fuzz_target;

struct Keys {
    issuer: SigningKey,
    device: SigningKey,
    known: IssuerKeys,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let issuer = SigningKey::generate();
        let known = IssuerKeys::new([(1, issuer.public())]);
        Keys {
            issuer,
            device: SigningKey::generate(),
            known,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Voucher::decode(data) {
        assert_eq!(v.encode(), data, "only canonical bytes read");
        assert_eq!(Voucher::from_text(&v.to_text()).ok(), Some(v));
    }
    if let Ok(c) = Challenge::decode(data) {
        assert_eq!(c.encode(), data, "only canonical bytes read");
    }
    if let Ok(c) = PurseCertificate::decode(data) {
        assert_eq!(c.encode(), data, "only canonical bytes read");
    }
    if let Ok(c) = TerminalCertificate::decode(data) {
        assert_eq!(c.encode(), data, "only canonical bytes read");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(v) = Voucher::from_text(text) {
            assert_eq!(v.to_text(), text.trim(), "only canonical text reads");
        }
        if let Ok(c) = Challenge::from_text(text) {
            assert_eq!(c.to_text(), text.trim(), "only canonical text reads");
        }
    }

    // A voucher from the fuzzer's fields, signed: it reads back and verifies, and one changed
    // byte stops it.
    let Some((f, rest)) = data.split_first_chunk::<62>() else {
        return;
    };
    let word = |i: usize| u32::from_be_bytes(f[i..i + 4].try_into().unwrap());
    let amount = u64::from(word(0)).max(1);
    let limit = amount + u64::from(word(4));
    let k = keys();
    let cert = PurseCertificate {
        issuer_key: 1,
        purse: f[8..24].try_into().unwrap(),
        device_key: k.device.public(),
        currency: Currency::JPY,
        limit,
        not_before: word(24).min(u32::MAX - 1),
        not_after: word(24).min(u32::MAX - 1) + 1,
        serial: word(28),
        signature: [0; 64],
    }
    .issue(&k.issuer);
    let content = VoucherContent {
        terminal: f[32..48].try_into().unwrap(),
        nonce: f[48..60].try_into().unwrap(),
        time: word(24),
        amount,
        counter: u32::from(u16::from_be_bytes([f[60], f[61]])).max(1),
        cumulative: limit,
    };
    let voucher = Voucher::sign(cert, content, &k.device);
    let bytes = voucher.encode();
    let read = Voucher::decode(&bytes).expect("a voucher made from fields reads");
    assert_eq!(read, voucher);
    assert!(read.verify_signatures(&k.known).is_ok());
    let at = usize::from(rest.first().copied().unwrap_or(0)) * 7 % bytes.len();
    let mut changed = bytes.clone();
    changed[at] ^= rest.get(1).copied().unwrap_or(1).max(1);
    if let Ok(v) = Voucher::decode(&changed) {
        assert!(
            v.verify_signatures(&k.known).is_err(),
            "byte {at} changed and still verifies"
        );
    }
});
