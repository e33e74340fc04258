//! Secrets and the server's keys: a `Secret` wrapper whose Debug never prints its content,
//! random tokens and codes, keyed hashes (for throttling keys, one-time codes and tokens at
//! rest), and sealing (TOTP seeds at rest).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::AuthError;

/// A value that must never reach a log line, an error message or a debug print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The secret itself; call sites are the places that legitimately use it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Secret<T> {
        Secret(value)
    }
}

/// What a keyed hash is for; each purpose has its own derived key, so a hash made for one
/// purpose says nothing about another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashPurpose {
    /// Throttle keys (account, network, device).
    Throttle,
    /// A tried password or code, for counting one secret across accounts.
    TriedSecret,
    /// One-time codes and recovery codes at rest.
    Code,
    /// Session tokens, link tokens and API keys at rest.
    Token,
    /// Step-up action digests.
    Action,
    /// Device cookies.
    Device,
    /// Payments: ledger ids derived from idempotency keys, QR signatures, payment codes and
    /// micro-deposit amounts at rest.
    Payment,
}

impl HashPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            HashPurpose::Throttle => b"koban/throttle/v1",
            HashPurpose::TriedSecret => b"koban/tried-secret/v1",
            HashPurpose::Code => b"koban/code/v1",
            HashPurpose::Token => b"koban/token/v1",
            HashPurpose::Action => b"koban/action/v1",
            HashPurpose::Device => b"koban/device/v1",
            HashPurpose::Payment => b"koban/payment/v1",
        }
    }
}

/// The server's keys, all derived from one 32-byte master key that every instance shares.
#[derive(Clone)]
pub struct ServerKeys {
    master: [u8; 32],
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKeys([redacted])")
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for part in parts {
        mac.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl ServerKeys {
    pub fn from_master(master: [u8; 32]) -> ServerKeys {
        ServerKeys { master }
    }

    /// Parses a master key written as 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Result<ServerKeys, AuthError> {
        let text = text.trim();
        let invalid = || AuthError::Invalid("the master key must be 64 hexadecimal digits");
        if text.len() != 64 || !text.is_ascii() {
            return Err(invalid());
        }
        let mut master = [0u8; 32];
        for (i, byte) in master.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(ServerKeys { master })
    }

    /// A fresh random master key as 64 hexadecimal digits.
    pub fn generate_hex() -> String {
        let mut master = [0u8; 32];
        rand::rng().fill_bytes(&mut master);
        master.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn subkey(&self, label: &[u8]) -> [u8; 32] {
        hmac(&self.master, &[label])
    }

    /// A keyed hash of `parts` for `purpose`.
    pub fn hash(&self, purpose: HashPurpose, parts: &[&[u8]]) -> [u8; 32] {
        hmac(&self.subkey(purpose.label()), parts)
    }

    /// The key of the audit chain and its checkpoints.
    pub fn audit_key(&self) -> koban_shared::audit::AuditKey {
        koban_shared::audit::AuditKey::new(self.subkey(b"koban/audit/v1"))
    }

    /// The vault of personal data: its data keys are wrapped under a key derived from the
    /// master key, and its blind indexes keyed by another.
    pub async fn vault<D: koban_store::sql::SqlDb>(
        &self,
        db: &D,
        clock: koban_store::Clock,
    ) -> Result<koban_shared::personal::Vault, koban_store::StoreError> {
        koban_shared::personal::Vault::load(
            db,
            self.subkey(b"koban/personal-wrapping/v1"),
            self.subkey(b"koban/blind-index/v1"),
            clock,
        )
        .await
    }

    fn sealing_key(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.subkey(b"koban/seal/v1").into())
    }

    /// Encrypts `plain` with a fresh random nonce; the nonce is stored in front.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, AuthError> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .sealing_key()
            .encrypt(XNonce::from_slice(&nonce), plain)
            .map_err(|_| AuthError::Internal("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Secret<Vec<u8>>, AuthError> {
        if sealed.len() < 24 {
            return Err(AuthError::Internal("sealed value is too short"));
        }
        let (nonce, body) = sealed.split_at(24);
        self.sealing_key()
            .decrypt(XNonce::from_slice(nonce), body)
            .map(Secret::new)
            .map_err(|_| AuthError::Internal("sealed value does not open with this key"))
    }
}

/// A random opaque token of 256 bits, URL-safe, with a readable prefix.
pub fn random_token(prefix: &str) -> Secret<String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// A random numeric code of `digits` digits.
pub fn random_digits(digits: u32) -> Secret<String> {
    let modulus = 10u64.pow(digits);
    let value = rand::random_range(0..modulus);
    Secret::new(format!("{value:0width$}", width = digits as usize))
}

/// A random recovery code: ten characters from an alphabet without look-alikes, grouped 5-5.
pub fn random_recovery_code() -> Secret<String> {
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
    let mut rng = rand::rng();
    let chars: String = (0..10)
        .map(|_| char::from(ALPHABET[rand::Rng::random_range(&mut rng, 0..ALPHABET.len())]))
        .collect();
    Secret::new(format!("{}-{}", &chars[..5], &chars[5..]))
}

/// Compares two byte strings in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2-hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        let keys = ServerKeys::from_master([7; 32]);
        assert!(!format!("{keys:?}").contains('7'));
    }

    #[test]
    fn sealing_round_trips_and_detects_tampering() {
        let keys = ServerKeys::from_master([1; 32]);
        let mut sealed = keys.seal(b"seed").unwrap();
        assert_eq!(keys.open(&sealed).unwrap().expose(), b"seed");
        let other = ServerKeys::from_master([2; 32]);
        assert!(other.open(&sealed).is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(keys.open(&sealed).is_err());
    }

    #[test]
    fn keyed_hashes_depend_on_key_purpose_and_part_boundaries() {
        let keys = ServerKeys::from_master([1; 32]);
        let a = keys.hash(HashPurpose::Code, &[b"ab", b"c"]);
        assert_ne!(a, keys.hash(HashPurpose::Code, &[b"a", b"bc"]));
        assert_ne!(a, keys.hash(HashPurpose::Token, &[b"ab", b"c"]));
        assert_ne!(
            a,
            ServerKeys::from_master([2; 32]).hash(HashPurpose::Code, &[b"ab", b"c"])
        );
    }

    #[test]
    fn master_keys_parse_from_hex_only() {
        let hex = ServerKeys::generate_hex();
        assert!(ServerKeys::from_hex(&hex).is_ok());
        assert!(ServerKeys::from_hex("00").is_err());
        assert!(ServerKeys::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn codes_have_their_shape() {
        assert_eq!(random_digits(6).expose().len(), 6);
        let code = random_recovery_code();
        assert_eq!(code.expose().len(), 11);
        assert_eq!(random_token("ks_").expose().len(), 3 + 43);
    }
}
