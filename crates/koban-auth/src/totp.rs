//! TOTP (RFC 6238: SHA-1, 6 digits, 30-second steps, one step of clock skew either way). The
//! caller stores the last accepted step and accepts only later ones, so a code is good once.

use rand::RngCore;
use totp_rs::{Algorithm, TOTP};

use crate::AuthError;
use crate::secret::{Secret, constant_time_eq};

pub const STEP_S: u64 = 30;
pub const DIGITS: usize = 6;
const SEED_BYTES: usize = 20;
const ISSUER: &str = "Koban";

/// A fresh random seed (160 bits, as RFC 4226 recommends).
pub fn new_seed() -> Secret<Vec<u8>> {
    let mut seed = vec![0u8; SEED_BYTES];
    rand::rng().fill_bytes(&mut seed);
    Secret::new(seed)
}

fn totp(seed: &[u8], account: &str) -> Result<TOTP, AuthError> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_S,
        seed.to_vec(),
        Some(ISSUER.to_owned()),
        account.to_owned(),
    )
    .map_err(|_| AuthError::Internal("TOTP parameters rejected"))
}

/// The `otpauth://` URI an authenticator app scans.
pub fn otpauth_uri(seed: &Secret<Vec<u8>>, account: &str) -> Result<Secret<String>, AuthError> {
    Ok(Secret::new(totp(seed.expose(), account)?.get_url()))
}

/// The URI as a QR code in SVG.
pub fn qr_svg(uri: &Secret<String>) -> Result<Secret<String>, AuthError> {
    let code = qrcode::QrCode::new(uri.expose().as_bytes())
        .map_err(|_| AuthError::Internal("QR encoding failed"))?;
    Ok(Secret::new(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build(),
    ))
}

/// The step whose code `code` is, among the current step and one either side, if any.
pub fn matching_step(seed: &[u8], code: &str, now_s: u64) -> Result<Option<i64>, AuthError> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let totp = totp(seed, "check")?;
    let current = now_s / STEP_S;
    let mut found = None;
    // Every candidate is compared, so the time taken does not say which one matched.
    for step in [current.saturating_sub(1), current, current + 1] {
        if constant_time_eq(totp.generate(step * STEP_S).as_bytes(), code.as_bytes()) {
            found = i64::try_from(step).ok();
        }
    }
    Ok(found)
}

/// The code for the step containing `at_s` (for tests and tools).
pub fn code_at(seed: &[u8], at_s: u64) -> Result<String, AuthError> {
    Ok(totp(seed, "check")?.generate(at_s))
}

/// A seed from its base32 form (as in the `otpauth://` URI's `secret` parameter).
pub fn seed_from_uri(uri: &str) -> Option<Vec<u8>> {
    let secret = uri
        .split(['?', '&'])
        .find_map(|part| part.strip_prefix("secret="))?;
    totp_rs::Secret::Encoded(secret.to_owned()).to_bytes().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_vector() {
        // RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (8 digits); the last six are ours.
        let seed = b"12345678901234567890";
        assert_eq!(code_at(seed, 59).unwrap(), "287082");
        assert_eq!(matching_step(seed, "287082", 59).unwrap(), Some(1));
        assert_eq!(
            matching_step(seed, "287082", 59 + 30).unwrap(),
            Some(1),
            "one step of skew"
        );
        assert_eq!(matching_step(seed, "287082", 59 + 90).unwrap(), None);
        assert_eq!(matching_step(seed, "28708", 59).unwrap(), None);
    }

    #[test]
    fn uri_round_trips_the_seed() {
        let seed = new_seed();
        let uri = otpauth_uri(&seed, "hanako@example.com").unwrap();
        assert!(
            uri.expose()
                .starts_with("otpauth://totp/Koban:hanako%40example.com?")
        );
        assert_eq!(seed_from_uri(uri.expose()).unwrap(), *seed.expose());
        assert!(qr_svg(&uri).unwrap().expose().starts_with("<?xml"));
    }
}
