//! Services both identity and payments use, below both of them: time-ordered ids and the typed
//! ids that cross crates, the languages and the notice catalogue, the transactional outbox
//! notices are written to, and the tamper-evident audit chain.
//!
//! Architecture invariant: this crate knows the database ([`koban_store::sql`]) and nothing of
//! sessions, wallets or money, so the arrows from `koban-auth` and `koban-pay` end here.

pub mod audit;
pub mod export;
pub mod ids;
pub mod lang;
pub mod lease;
pub mod mail;
pub mod outbox;
pub mod personal;

use sha2::{Digest, Sha256};

/// A new time-ordered id (UUIDv7) as text.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}
