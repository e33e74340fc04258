//! The device's side: a purse certificate, the device key, and what it has spent. The wallet
//! page does the same in the browser (WebCrypto); this is the reference it follows, and what
//! the simulation's devices run.

use std::sync::Arc;

use crate::{
    Challenge, IssuerKeys, PurseCertificate, Refusal, SigningKey, Voucher, VoucherContent,
};

/// Why a device will not pay a challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PurseError {
    #[error("the challenge is refused: {0}")]
    Challenge(Refusal),
    #[error("the purse does not hold enough for this amount")]
    Insufficient,
}

/// A device's purse. `counter` and `spent` are the device's own state: an honest device only
/// ever moves them forward through [`Purse::pay`]; a cheating one may set them as it likes,
/// which is what the terminal and settlement are there to catch.
#[derive(Clone, Debug)]
pub struct Purse {
    pub certificate: PurseCertificate,
    pub key: Arc<SigningKey>,
    /// The counter of the last voucher signed (0 before the first).
    pub counter: u32,
    /// The cumulative amount of the last voucher signed.
    pub spent: u64,
    /// The last voucher signed: shown again, not signed anew, for the same challenge.
    pub last: Option<Voucher>,
}

impl Purse {
    pub fn new(certificate: PurseCertificate, key: Arc<SigningKey>) -> Purse {
        Purse {
            certificate,
            key,
            counter: 0,
            spent: 0,
            last: None,
        }
    }

    /// What is left to spend.
    pub fn available(&self) -> u64 {
        self.certificate.limit.saturating_sub(self.spent)
    }

    /// Pays a challenge the customer has confirmed: checks it, then signs a voucher with the
    /// next counter and the new cumulative amount. The same challenge again (scanned twice)
    /// gets the same voucher: one purchase is never paid twice.
    pub fn pay(
        &mut self,
        challenge: &Challenge,
        issuers: &IssuerKeys,
        now: u32,
    ) -> Result<Voucher, PurseError> {
        if let Some(last) = &self.last
            && last.content.terminal == challenge.terminal.terminal
            && last.content.nonce == challenge.nonce
            && last.content.amount == challenge.amount
            && last.content.time == challenge.time
        {
            return Ok(last.clone());
        }
        challenge
            .verify(issuers, now)
            .map_err(PurseError::Challenge)?;
        self.certificate
            .verify(issuers, now)
            .map_err(PurseError::Challenge)?;
        if challenge.terminal.currency != self.certificate.currency {
            return Err(PurseError::Challenge(Refusal::WrongCurrency));
        }
        let cumulative = self
            .spent
            .checked_add(challenge.amount)
            .filter(|c| *c <= self.certificate.limit)
            .ok_or(PurseError::Insufficient)?;
        let counter = self
            .counter
            .checked_add(1)
            .ok_or(PurseError::Insufficient)?;
        let voucher = Voucher::sign(
            self.certificate.clone(),
            VoucherContent {
                terminal: challenge.terminal.terminal,
                nonce: challenge.nonce,
                time: challenge.time,
                amount: challenge.amount,
                counter,
                cumulative,
            },
            &self.key,
        );
        self.counter = counter;
        self.spent = cumulative;
        self.last = Some(voucher.clone());
        Ok(voucher)
    }
}
