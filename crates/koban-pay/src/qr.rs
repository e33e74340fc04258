//! What tills and wallets scan, as text: the merchant's signed payment-request payload and the
//! customer's one-time payment code. Pure functions of the text and the server key, so they
//! can be fuzzed without a database (`fuzz/`).
//!
//! - A payment request: `KB1.<request id, base64url>.<amount in minor units>.<currency>.<expiry,
//!   unix s>.<signature>`, the signature being the first 16 bytes, base64url, of a keyed hash
//!   (HMAC-SHA256 under the server key) of everything before it: no field can be altered.
//! - A payment code: 18 digits, or its QR form `KBC1.<digits>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use koban_auth::secret::{HashPurpose, ServerKeys, constant_time_eq};
use koban_ledger::{Amount, Currency};

use crate::PayError;

const REQUEST_PREFIX: &str = "KB1";
const CODE_PREFIX: &str = "KBC1.";

/// A merchant's payment request as its QR payload carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestPayload {
    /// The request's id (a UUID's 16 bytes).
    pub id: [u8; 16],
    pub amount: Amount,
    pub currency: Currency,
    /// When it expires, Unix seconds.
    pub expires_s: i64,
}

fn not_valid() -> PayError {
    PayError::Invalid("this is not a valid Koban payment code")
}

/// The signature a payload's `body` (everything before its last `.`) carries.
pub fn signature(keys: &ServerKeys, body: &str) -> String {
    let hash = keys.hash(HashPurpose::Payment, &[b"qr", body.as_bytes()]);
    URL_SAFE_NO_PAD.encode(&hash[..16])
}

impl RequestPayload {
    /// The payload's text, signed under `keys`.
    pub fn encode(&self, keys: &ServerKeys) -> String {
        let body = self.body();
        let signature = signature(keys, &body);
        format!("{body}.{signature}")
    }

    /// Everything the signature covers, as this server writes it.
    fn body(&self) -> String {
        format!(
            "{REQUEST_PREFIX}.{}.{}.{}.{}",
            URL_SAFE_NO_PAD.encode(self.id),
            self.amount.minor_units(),
            self.currency.code(),
            self.expires_s
        )
    }

    /// Reads a scanned payload (surrounding whitespace ignored). Anything not signed under
    /// `keys`, or not in this form, is refused with one answer.
    pub fn decode(keys: &ServerKeys, payload: &str) -> Result<RequestPayload, PayError> {
        let (body, signature) = payload.trim().rsplit_once('.').ok_or_else(not_valid)?;
        if !constant_time_eq(self::signature(keys, body).as_bytes(), signature.as_bytes()) {
            return Err(not_valid());
        }
        let fields: Vec<&str> = body.split('.').collect();
        let [REQUEST_PREFIX, id, amount, currency, expires_s] = fields.as_slice() else {
            return Err(not_valid());
        };
        let payload = RequestPayload {
            id: URL_SAFE_NO_PAD
                .decode(id)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(not_valid)?,
            amount: amount
                .parse::<u64>()
                .ok()
                .and_then(|units| Amount::new(units).ok())
                .ok_or_else(not_valid)?,
            currency: Currency::parse(currency).map_err(|_| not_valid())?,
            expires_s: expires_s.parse().map_err(|_| not_valid())?,
        };
        // Only the text this server writes: no `+1200` or `01200` for 1200.
        if payload.body() != body {
            return Err(not_valid());
        }
        Ok(payload)
    }
}

/// The QR form of a customer's payment code.
pub fn code_qr(code: &str) -> String {
    format!("{CODE_PREFIX}{code}")
}

/// The 18 digits of a customer's payment code as typed or scanned (its QR form has a prefix);
/// anything else is answered as an unusable code.
pub fn code_digits(code: &str) -> Result<&str, PayError> {
    let code = code.trim();
    let code = code.strip_prefix(CODE_PREFIX).unwrap_or(code);
    if code.len() != 18 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(crate::merchant::code_unusable());
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ServerKeys {
        ServerKeys::from_master([7; 32])
    }

    #[test]
    fn a_payload_reads_back_and_no_field_can_be_changed() {
        let payload = RequestPayload {
            id: [3; 16],
            amount: Amount::new(1_200).unwrap(),
            currency: Currency::Jpy,
            expires_s: 1_800_000_000,
        };
        let text = payload.encode(&keys());
        assert!(text.starts_with("KB1.AwMDAwMDAwMDAwMDAwMDAw.1200.JPY.1800000000."));
        assert_eq!(RequestPayload::decode(&keys(), &text).unwrap(), payload);
        assert_eq!(
            RequestPayload::decode(&keys(), &format!(" {text}\n")).unwrap(),
            payload
        );
        let more = text.replace(".1200.", ".9200.");
        assert!(RequestPayload::decode(&keys(), &more).is_err());
        let padded = "KB1.AwMDAwMDAwMDAwMDAwMDAw.01200.JPY.1800000000";
        let signed = format!("{padded}.{}", signature(&keys(), padded));
        assert!(
            RequestPayload::decode(&keys(), &signed).is_err(),
            "signed, not canonical"
        );
        let other_key = ServerKeys::from_master([8; 32]);
        assert!(RequestPayload::decode(&other_key, &text).is_err());
    }

    #[test]
    fn a_code_is_eighteen_digits_with_or_without_its_prefix() {
        let digits = "891234567890123456";
        assert_eq!(code_digits(digits).unwrap(), digits);
        assert_eq!(code_digits(&code_qr(digits)).unwrap(), digits);
        assert!(code_digits("89123456789012345").is_err());
        assert!(code_digits("89123456789012345x").is_err());
        assert!(code_digits("KBC1.KBC1.891234567890123456").is_err());
    }
}
