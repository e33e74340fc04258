//! The terminal's side: it makes challenges, checks the vouchers that answer them with no
//! network, and keeps them until it can upload them. The terminal page does the same in the
//! browser (WebCrypto); this is the reference it follows, and what the simulation's terminals
//! run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::{Challenge, Id, IssuerKeys, Nonce, Refusal, SigningKey, TerminalCertificate, Voucher};

/// How long a challenge stays answerable (seconds): a customer scans it at the till.
pub const CHALLENGE_MAX_AGE: u32 = 600;

/// What a terminal saw last of a purse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub counter: u32,
    pub cumulative: u64,
}

/// A merchant's terminal.
#[derive(Debug)]
pub struct Terminal {
    pub certificate: TerminalCertificate,
    key: Arc<SigningKey>,
    issuers: IssuerKeys,
    /// Purses the issuer has revoked, as of `list_time`.
    revoked: HashSet<Id>,
    list_time: u32,
    /// How old the revocation list may be before the terminal stops accepting offline
    /// payments (seconds).
    max_list_age: u32,
    seen: HashMap<Id, Seen>,
    /// Challenges already answered by an accepted voucher.
    answered: HashSet<Nonce>,
    /// Accepted vouchers not yet uploaded.
    stored: Vec<Voucher>,
}

impl Terminal {
    /// A terminal with its certificate and key, the issuer's keys and a revocation list
    /// fetched at `now`.
    pub fn new(
        certificate: TerminalCertificate,
        key: Arc<SigningKey>,
        issuers: IssuerKeys,
        max_list_age: u32,
        revoked: impl IntoIterator<Item = Id>,
        now: u32,
    ) -> Terminal {
        Terminal {
            certificate,
            key,
            issuers,
            revoked: revoked.into_iter().collect(),
            list_time: now,
            max_list_age,
            seen: HashMap::new(),
            answered: HashSet::new(),
            stored: Vec::new(),
        }
    }

    /// A challenge for `amount` (the caller draws the nonce from a secure random source).
    pub fn challenge(&self, amount: u64, nonce: Nonce, now: u32) -> Challenge {
        Challenge::new(self.certificate.clone(), &self.key, amount, nonce, now)
    }

    /// Checks a voucher answering `challenge` (this terminal's, still on its screen) and, when
    /// it passes every check, keeps it for upload. A refused voucher changes nothing.
    pub fn accept(
        &mut self,
        challenge: &Challenge,
        voucher: &Voucher,
        now: u32,
    ) -> Result<(), Refusal> {
        // A clock set back before the list was fetched cannot vouch for its age either.
        if now < self.list_time || now - self.list_time > self.max_list_age {
            return Err(Refusal::StaleRevocationList);
        }
        let cert = &voucher.certificate;
        let content = &voucher.content;
        if content.terminal != self.certificate.terminal {
            return Err(Refusal::WrongTerminal);
        }
        if content.nonce != challenge.nonce
            || content.amount != challenge.amount
            || content.time != challenge.time
            || challenge.terminal.terminal != self.certificate.terminal
            || self.answered.contains(&challenge.nonce)
            || challenge.time > now
            || now - challenge.time > CHALLENGE_MAX_AGE
        {
            return Err(Refusal::WrongChallenge);
        }
        if cert.currency != self.certificate.currency {
            return Err(Refusal::WrongCurrency);
        }
        voucher.verify_signatures(&self.issuers)?;
        // Valid now, and when the challenge was made (settlement checks the latter).
        cert.check_time(now)?;
        cert.check_time(challenge.time)?;
        if self.revoked.contains(&cert.purse) {
            return Err(Refusal::Revoked);
        }
        if content.cumulative > cert.limit {
            return Err(Refusal::OverLimit);
        }
        if let Some(last) = self.seen.get(&cert.purse) {
            if content.counter <= last.counter {
                return Err(Refusal::CounterNotIncreasing);
            }
            let least = last
                .cumulative
                .checked_add(content.amount)
                .ok_or(Refusal::OverLimit)?;
            if content.cumulative < least {
                return Err(Refusal::CumulativeInconsistent);
            }
        }
        self.seen.insert(
            cert.purse,
            Seen {
                counter: content.counter,
                cumulative: content.cumulative,
            },
        );
        self.answered.insert(challenge.nonce);
        self.stored.push(voucher.clone());
        Ok(())
    }

    /// Online again: a fresh revocation list.
    pub fn refresh(&mut self, revoked: impl IntoIterator<Item = Id>, now: u32) {
        self.revoked = revoked.into_iter().collect();
        self.list_time = now;
    }

    /// The vouchers to upload; they are gone from the terminal once taken (the caller keeps
    /// them until the upload is acknowledged).
    pub fn take_vouchers(&mut self) -> Vec<Voucher> {
        std::mem::take(&mut self.stored)
    }

    pub fn stored(&self) -> &[Voucher] {
        &self.stored
    }
}
