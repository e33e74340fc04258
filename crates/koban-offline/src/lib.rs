//! Offline payments with a bounded exposure: the protocol between Koban (the issuer), a
//! customer's device holding a purse, and a merchant's terminal, with no network between the
//! last two.
//!
//! - The issuer signs a [`PurseCertificate`]: this device key may spend up to `limit` from
//!   this purse between two instants. The limit is money already moved from the customer's
//!   wallet into a reserve account of the purse.
//! - The issuer signs a [`TerminalCertificate`]: this terminal key belongs to this merchant,
//!   shown under this name.
//! - The terminal shows a signed [`Challenge`] (amount, nonce, time) as a QR code; the device
//!   checks it ([`Challenge::verify`]), shows the merchant's certified name and the amount,
//!   and after the customer confirms, answers with a [`Voucher`] signed by the device key:
//!   the purse certificate, the challenge it answers, its counter and the cumulative amount
//!   the purse has spent ([`Purse::pay`]).
//! - The terminal checks the voucher against its challenge, the issuer's keys, its revocation
//!   list and what it saw of the purse before ([`Terminal::accept`]), and keeps it.
//! - The terminal uploads the vouchers when it is online; [`settle::PurseBook`] decides each
//!   content once and finds double spending (the device's own copies only help find it).
//!
//! Architecture invariant: no IO, no clock, no database. Time comes in as an argument (Unix
//! seconds); randomness is used only where ECDSA needs it (key generation, signing nonces)
//! and by the seeded simulation. The same bytes always decode to the same values, and every
//! value encodes to exactly one byte string (see `wire`).

mod keys;
mod purse;
pub mod settle;
mod sign;
pub mod sim;
mod terminal;
mod wire;

pub use keys::{IssuerKeys, SigningKey, verify};
pub use purse::{Purse, PurseError};
pub use terminal::{CHALLENGE_MAX_AGE, Seen, Terminal};
pub use wire::{
    CHALLENGE_PREFIX, Challenge, Currency, DecodeError, NAME_MAX, PurseCertificate,
    TerminalCertificate, VOUCHER_PREFIX, Voucher, VoucherContent,
};

/// A 16-byte identifier: a purse, a terminal, a merchant (the bytes of its UUID).
pub type Id = [u8; 16];
/// A P-256 public key in SEC 1 uncompressed form (`04 || X || Y`), as WebCrypto exports it
/// with `exportKey("raw", ...)`.
pub type PublicKey = [u8; 65];
/// An ECDSA P-256 signature over SHA-256, `r || s` (IEEE P1363), as WebCrypto produces it.
pub type Signature = [u8; 64];
/// A terminal's challenge nonce.
pub type Nonce = [u8; 12];

/// Why a certificate, challenge or voucher is refused. Each has a stable `code()`, shown to
/// the merchant or customer in their language by the pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the code cannot be read")]
    Malformed,
    #[error("signed by an issuer key this side does not know")]
    UnknownIssuer,
    #[error("the issuer's signature does not verify")]
    BadIssuerSignature,
    #[error("the terminal's signature does not verify")]
    BadTerminalSignature,
    #[error("the device's signature does not verify")]
    BadDeviceSignature,
    #[error("the certificate is not valid yet")]
    NotYetValid,
    #[error("the certificate has expired")]
    Expired,
    #[error("the purse has been revoked")]
    Revoked,
    #[error("the terminal has not refreshed its revocation list recently enough")]
    StaleRevocationList,
    #[error("the currency is not the terminal's")]
    WrongCurrency,
    #[error("the voucher answers another terminal's challenge")]
    WrongTerminal,
    #[error("the voucher does not answer the challenge shown")]
    WrongChallenge,
    #[error("the voucher's counter is not above the last one seen")]
    CounterNotIncreasing,
    #[error("the cumulative amount would exceed the purse's limit")]
    OverLimit,
    #[error("the cumulative amount does not follow from the amounts seen")]
    CumulativeInconsistent,
}

impl Refusal {
    /// A stable code for pages, logs and the API.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::UnknownIssuer => "unknown_issuer",
            Refusal::BadIssuerSignature => "bad_issuer_signature",
            Refusal::BadTerminalSignature => "bad_terminal_signature",
            Refusal::BadDeviceSignature => "bad_device_signature",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
            Refusal::StaleRevocationList => "stale_revocation_list",
            Refusal::WrongCurrency => "wrong_currency",
            Refusal::WrongTerminal => "wrong_terminal",
            Refusal::WrongChallenge => "wrong_challenge",
            Refusal::CounterNotIncreasing => "counter_not_increasing",
            Refusal::OverLimit => "over_limit",
            Refusal::CumulativeInconsistent => "cumulative_inconsistent",
        }
    }
}

impl From<DecodeError> for Refusal {
    fn from(_: DecodeError) -> Refusal {
        Refusal::Malformed
    }
}
