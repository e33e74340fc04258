//! The keys that protect issued cards' data (PCI DSS requirement 3): data keys that encrypt
//! card numbers, each with an id so keys can rotate; a separate card-verification key from
//! which a card's security code is derived on demand (it is never stored); and the card
//! network's request-signing credential.
//!
//! The key file is JSON, readable by its owner only:
//!
//! ```json
//! {"active_key": "k2",
//!  "data_keys": [{"id": "k1", "key": "<64 hex digits>"}, {"id": "k2", "key": "<64 hex>"}],
//!  "cvk": "<64 hex digits>",
//!  "network": {"id": "network-1", "secret": "<64 hex digits>"}}
//! ```
//!
//! Card numbers are sealed with XChaCha20-Poly1305 under the active data key, with the card
//! id and key id as associated data (a sealed number moved to another card does not open).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use koban_auth::Secret;
use rand::RngCore;
use sha2::Sha256;

/// Keys for card data. `Debug` never prints a key.
#[derive(Clone)]
pub struct CardKeys {
    data_keys: Vec<(String, [u8; 32])>,
    active: usize,
    cvk: [u8; 32],
    network_id: String,
    network_secret: [u8; 32],
}

impl std::fmt::Debug for CardKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CardKeys(active {}, {} data keys, [redacted])",
            self.active_id(),
            self.data_keys.len()
        )
    }
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    active_key: String,
    data_keys: Vec<DataKeyEntry>,
    cvk: String,
    network: NetworkEntry,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct DataKeyEntry {
    id: String,
    key: String,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct NetworkEntry {
    id: String,
    secret: String,
}

fn parse_key(text: &str, what: &str) -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key)
        .map_err(|_| format!("{what} must be 64 hexadecimal digits"))?;
    Ok(key)
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for part in parts {
        mac.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Nonce length of XChaCha20-Poly1305.
const NONCE: usize = 24;

impl CardKeys {
    /// Parses a key file; errors name the problem, never a key.
    pub fn from_json(text: &str) -> Result<CardKeys, String> {
        let file: KeyFile = serde_json::from_str(text).map_err(|e: serde_json::Error| {
            // Category and place only: serde's text can quote a value, here a key.
            format!(
                "not a card key file ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        let mut data_keys = Vec::new();
        for entry in &file.data_keys {
            let id_ok = !entry.id.is_empty()
                && entry.id.len() <= 32
                && entry
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return Err("a data key id must be 1 to 32 letters, digits, - or _".into());
            }
            if data_keys.iter().any(|(id, _)| id == &entry.id) {
                return Err(format!("data key id {} appears twice", entry.id));
            }
            data_keys.push((
                entry.id.clone(),
                parse_key(&entry.key, &format!("data key {}", entry.id))?,
            ));
        }
        let active = data_keys
            .iter()
            .position(|(id, _)| *id == file.active_key)
            .ok_or_else(|| format!("active_key {} is not among data_keys", file.active_key))?;
        let cvk = parse_key(&file.cvk, "cvk")?;
        if data_keys.iter().any(|(_, key)| *key == cvk) {
            return Err("the card-verification key must differ from every data key".into());
        }
        if file.network.id.is_empty() || file.network.id.len() > 64 {
            return Err("network.id must be 1 to 64 characters".into());
        }
        Ok(CardKeys {
            data_keys,
            active,
            cvk,
            network_id: file.network.id,
            network_secret: parse_key(&file.network.secret, "network.secret")?,
        })
    }

    /// Fresh random keys: for `--dev` (throwaway) and for writing a new key file.
    pub fn generate() -> CardKeys {
        CardKeys {
            data_keys: vec![("k1".to_owned(), random_key())],
            active: 0,
            cvk: random_key(),
            network_id: "network-1".to_owned(),
            network_secret: random_key(),
        }
    }

    /// The key file's text (it holds every key: write it readable by its owner only).
    pub fn to_json(&self) -> String {
        let file = KeyFile {
            active_key: self.active_id().to_owned(),
            data_keys: self
                .data_keys
                .iter()
                .map(|(id, key)| DataKeyEntry {
                    id: id.clone(),
                    key: hex::encode(key),
                })
                .collect(),
            cvk: hex::encode(self.cvk),
            network: NetworkEntry {
                id: self.network_id.clone(),
                secret: hex::encode(self.network_secret),
            },
        };
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// These keys plus a new random data key that becomes the active one.
    pub fn with_new_data_key(&self) -> CardKeys {
        let mut next = self.data_keys.len() + 1;
        while self
            .data_keys
            .iter()
            .any(|(id, _)| *id == format!("k{next}"))
        {
            next += 1;
        }
        let mut keys = self.clone();
        keys.data_keys.push((format!("k{next}"), random_key()));
        keys.active = keys.data_keys.len() - 1;
        keys
    }

    pub fn active_id(&self) -> &str {
        &self.data_keys[self.active].0
    }

    pub fn has_key(&self, id: &str) -> bool {
        self.data_keys.iter().any(|(key_id, _)| key_id == id)
    }

    pub fn network_id(&self) -> &str {
        &self.network_id
    }

    /// The card network's signing secret (for its client: the simulator and the bench).
    pub fn network_secret(&self) -> &[u8; 32] {
        &self.network_secret
    }

    /// Seals a card number under the active key; returns the key id and the sealed bytes.
    pub fn seal_pan(&self, card_id: &str, pan: &str) -> Result<(String, Vec<u8>), String> {
        let (id, key) = &self.data_keys[self.active];
        let mut nonce = [0u8; NONCE];
        rand::rng().fill_bytes(&mut nonce);
        let aad = [card_id.as_bytes(), b"/", id.as_bytes()].concat();
        let sealed = XChaCha20Poly1305::new(key.into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: pan.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| "sealing a card number failed".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok((id.clone(), out))
    }

    /// Opens a card number sealed by [`CardKeys::seal_pan`] under key `key_id`.
    pub fn open_pan(
        &self,
        card_id: &str,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<Secret<String>, String> {
        let key = self
            .data_keys
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, key)| key)
            .ok_or_else(|| format!("card data key {key_id} is not configured"))?;
        if sealed.len() <= NONCE {
            return Err("a sealed card number is too short".into());
        }
        let (nonce, body) = sealed.split_at(NONCE);
        let aad = [card_id.as_bytes(), b"/", key_id.as_bytes()].concat();
        let plain = XChaCha20Poly1305::new(key.into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| format!("a card number does not open with data key {key_id}"))?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| "a sealed card number is not text".into())
    }

    /// The card's 3-digit security code, derived from its number and expiry under the
    /// card-verification key (in the manner of a CVV: nothing to store, nothing to steal from
    /// the database).
    pub fn security_code(&self, pan: &str, exp_month: i64, exp_year: i64) -> Secret<String> {
        let expiry = format!("{:02}{:02}", exp_month, exp_year.rem_euclid(100));
        let digest = mac(
            &self.cvk,
            &[b"koban/cvc/v1", pan.as_bytes(), expiry.as_bytes()],
        );
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Secret::new(format!("{:03}", u64::from_be_bytes(first) % 1000))
    }
}

/// The signature of a card-network request: HMAC-SHA256 under the network secret over the
/// timestamp (Unix seconds), method, path and body, as lowercase hex.
pub fn network_signature(
    secret: &[u8],
    timestamp: i64,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    hex::encode(mac(
        secret,
        &[
            b"koban-network-v1",
            timestamp.to_string().as_bytes(),
            method.as_bytes(),
            path.as_bytes(),
            body,
        ],
    ))
}

/// Checks a network request's signature in constant time.
pub fn network_signature_ok(
    secret: &[u8],
    timestamp: i64,
    method: &str,
    path: &str,
    body: &[u8],
    signature: &str,
) -> bool {
    let expected = network_signature(secret, timestamp, method, path, body);
    koban_auth::secret::constant_time_eq(expected.as_bytes(), signature.trim().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_seal_per_card_and_key() {
        let keys = CardKeys::generate();
        let (key_id, sealed) = keys.seal_pan("card-1", "4000001234567899").unwrap();
        assert_eq!(key_id, "k1");
        assert_eq!(
            keys.open_pan("card-1", "k1", &sealed).unwrap().expose(),
            "4000001234567899"
        );
        // Bound to the card: the same bytes under another card id do not open.
        assert!(keys.open_pan("card-2", "k1", &sealed).is_err());
        assert!(keys.open_pan("card-1", "k9", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[30] ^= 1;
        assert!(keys.open_pan("card-1", "k1", &tampered).is_err());
    }

    #[test]
    fn rotation_keeps_old_keys_readable_and_seals_under_the_new_one() {
        let keys = CardKeys::generate();
        let (_, old) = keys.seal_pan("c", "4000001234567899").unwrap();
        let rotated = CardKeys::from_json(&keys.with_new_data_key().to_json()).unwrap();
        assert_eq!(rotated.active_id(), "k2");
        assert!(rotated.open_pan("c", "k1", &old).is_ok());
        let (id, new) = rotated.seal_pan("c", "4000001234567899").unwrap();
        assert_eq!(id, "k2");
        assert!(keys.open_pan("c", "k2", &new).is_err());
    }

    #[test]
    fn security_codes_are_derived_and_depend_on_every_input() {
        let keys = CardKeys::generate();
        let a = keys.security_code("4000001234567899", 5, 2030);
        assert_eq!(a.expose().len(), 3);
        assert_eq!(a, keys.security_code("4000001234567899", 5, 2030));
        let others = [
            keys.security_code("4000001234567881", 5, 2030),
            keys.security_code("4000001234567899", 6, 2030),
            CardKeys::generate().security_code("4000001234567899", 5, 2030),
        ];
        // One of three may collide by chance (1 in 1000 each); all three never do.
        assert!(others.iter().any(|o| *o != a));
    }

    #[test]
    fn key_files_are_validated_with_named_errors() {
        let good = CardKeys::generate().to_json();
        assert!(CardKeys::from_json(&good).is_ok());
        let no_active = good.replace("\"active_key\": \"k1\"", "\"active_key\": \"k7\"");
        assert!(CardKeys::from_json(&no_active).unwrap_err().contains("k7"));
        let err = CardKeys::from_json("{}").unwrap_err();
        assert!(err.contains("not a card key file"));
        let keys = CardKeys::generate();
        assert!(!format!("{keys:?}").contains(&hex::encode(keys.cvk)));
    }

    #[test]
    fn network_signatures_cover_every_part() {
        let secret = [3u8; 32];
        let sig = network_signature(&secret, 100, "POST", "/v1/network/authorizations", b"{}");
        assert!(network_signature_ok(
            &secret,
            100,
            "POST",
            "/v1/network/authorizations",
            b"{}",
            &sig
        ));
        assert!(!network_signature_ok(
            &secret,
            101,
            "POST",
            "/v1/network/authorizations",
            b"{}",
            &sig
        ));
        assert!(!network_signature_ok(
            &secret,
            100,
            "POST",
            "/v1/network/reversals",
            b"{}",
            &sig
        ));
        assert!(!network_signature_ok(
            &secret,
            100,
            "POST",
            "/v1/network/authorizations",
            b"{ }",
            &sig
        ));
    }
}
