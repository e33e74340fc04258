//! ECDSA P-256 with SHA-256, fixed-width signatures: what WebCrypto signs and verifies in
//! every browser, so the same bytes check on the server (ring) and on a page.

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};

use crate::{PublicKey, Signature};

/// A private signing key: the issuer's, or in tests and the simulation a device's or a
/// terminal's (a browser keeps those in WebCrypto, never extractable).
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("SigningKey")
            .field("public", &hex_prefix(&self.public()))
            .finish_non_exhaustive()
    }
}

fn hex_prefix(key: &PublicKey) -> String {
    key[1..9].iter().map(|b| format!("{b:02x}")).collect()
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> SigningKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            // Only fails when the system's random source does, which nothing can go on without.
            .expect("the system's random source works");
        Self::from_pkcs8(pkcs8.as_ref()).expect("a key ring just made reads back")
    }

    /// A key from its PKCS #8 document (as `pkcs8` gives it).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Option<SigningKey> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng).ok()?;
        Some(SigningKey {
            pair,
            pkcs8: pkcs8.to_vec(),
            rng,
        })
    }

    /// The PKCS #8 document, to keep the key (sealed) in storage.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public(&self) -> PublicKey {
        let mut key = [0; 65];
        key.copy_from_slice(self.pair.public_key().as_ref());
        key
    }

    /// Signs `domain || message`.
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> Signature {
        let mut bytes = Vec::with_capacity(domain.len() + message.len());
        bytes.extend_from_slice(domain);
        bytes.extend_from_slice(message);
        let signature = self
            .pair
            .sign(&self.rng, &bytes)
            .expect("signing fails only without randomness");
        let mut out = [0; 64];
        out.copy_from_slice(signature.as_ref());
        out
    }
}

/// Whether `signature` is `key`'s over `domain || message`. A key that is not a point of the
/// curve verifies nothing.
pub fn verify(key: &PublicKey, domain: &[u8], message: &[u8], signature: &Signature) -> bool {
    let mut bytes = Vec::with_capacity(domain.len() + message.len());
    bytes.extend_from_slice(domain);
    bytes.extend_from_slice(message);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(&bytes, signature)
        .is_ok()
}

/// The issuer's public keys by number: a terminal or device trusts what one of them signed.
/// Rotation adds a key under a new number; an old one stays until what it signed has expired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuerKeys {
    keys: Vec<(u8, PublicKey)>,
}

impl IssuerKeys {
    pub fn new(keys: impl IntoIterator<Item = (u8, PublicKey)>) -> IssuerKeys {
        IssuerKeys {
            keys: keys.into_iter().collect(),
        }
    }

    pub fn get(&self, number: u8) -> Option<&PublicKey> {
        self.keys.iter().find(|(n, _)| *n == number).map(|(_, k)| k)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(u8, PublicKey)> {
        self.keys.iter()
    }
}
