//! Making and checking the signatures of each form: the issuer's on certificates, the
//! terminal's on a challenge, the device's on a voucher.

use crate::wire::{CHALLENGE_DOMAIN, PURSE_DOMAIN, TERMINAL_DOMAIN, VOUCHER_DOMAIN};
use crate::{
    Challenge, IssuerKeys, Nonce, PurseCertificate, Refusal, SigningKey, TerminalCertificate,
    Voucher, VoucherContent, verify,
};

impl PurseCertificate {
    /// The issuer signs a certificate with these fields (its `signature` is replaced).
    pub fn issue(mut self, issuer: &SigningKey) -> PurseCertificate {
        self.signature = issuer.sign(PURSE_DOMAIN, &self.signed_part());
        self
    }

    /// Signed by a known issuer key, and valid at `now`.
    pub fn verify(&self, issuers: &IssuerKeys, now: u32) -> Result<(), Refusal> {
        self.verify_signature(issuers)?;
        self.check_time(now)
    }

    /// Valid at `now`: from `not_before`, until (not including) `not_after`.
    pub fn check_time(&self, now: u32) -> Result<(), Refusal> {
        if now < self.not_before {
            return Err(Refusal::NotYetValid);
        }
        if now >= self.not_after {
            return Err(Refusal::Expired);
        }
        Ok(())
    }

    /// Signed by a known issuer key, whatever the time.
    pub fn verify_signature(&self, issuers: &IssuerKeys) -> Result<(), Refusal> {
        let key = issuers.get(self.issuer_key).ok_or(Refusal::UnknownIssuer)?;
        if !verify(key, PURSE_DOMAIN, &self.signed_part(), &self.signature) {
            return Err(Refusal::BadIssuerSignature);
        }
        Ok(())
    }
}

impl TerminalCertificate {
    /// The issuer signs a certificate with these fields (its `signature` is replaced).
    pub fn issue(mut self, issuer: &SigningKey) -> TerminalCertificate {
        self.signature = issuer.sign(TERMINAL_DOMAIN, &self.signed_part());
        self
    }

    /// Signed by a known issuer key, and not expired at `now`.
    pub fn verify(&self, issuers: &IssuerKeys, now: u32) -> Result<(), Refusal> {
        let key = issuers.get(self.issuer_key).ok_or(Refusal::UnknownIssuer)?;
        if !verify(key, TERMINAL_DOMAIN, &self.signed_part(), &self.signature) {
            return Err(Refusal::BadIssuerSignature);
        }
        if now >= self.not_after {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

impl Challenge {
    /// A terminal asks for `amount`, signing with its key.
    pub fn new(
        terminal: TerminalCertificate,
        key: &SigningKey,
        amount: u64,
        nonce: Nonce,
        time: u32,
    ) -> Challenge {
        let mut challenge = Challenge {
            terminal,
            amount,
            nonce,
            time,
            signature: [0; 64],
        };
        challenge.signature = key.sign(CHALLENGE_DOMAIN, &challenge.signed_part());
        challenge
    }

    /// What a device checks before showing the challenge to its customer: the terminal's
    /// certificate is the issuer's and current, and the terminal's key signed the challenge.
    pub fn verify(&self, issuers: &IssuerKeys, now: u32) -> Result<(), Refusal> {
        self.terminal.verify(issuers, now)?;
        if !verify(
            &self.terminal.terminal_key,
            CHALLENGE_DOMAIN,
            &self.signed_part(),
            &self.signature,
        ) {
            return Err(Refusal::BadTerminalSignature);
        }
        Ok(())
    }
}

impl Voucher {
    /// A device signs a payment.
    pub fn sign(
        certificate: PurseCertificate,
        content: VoucherContent,
        device: &SigningKey,
    ) -> Voucher {
        let mut voucher = Voucher {
            certificate,
            content,
            signature: [0; 64],
        };
        voucher.signature = device.sign(VOUCHER_DOMAIN, &voucher.signed_part());
        voucher
    }

    /// The signatures: the issuer's on the certificate and the device's on the voucher. Time
    /// is not checked here: the terminal checks its own clock, settlement the challenge's.
    pub fn verify_signatures(&self, issuers: &IssuerKeys) -> Result<(), Refusal> {
        self.certificate.verify_signature(issuers)?;
        if !verify(
            &self.certificate.device_key,
            VOUCHER_DOMAIN,
            &self.signed_part(),
            &self.signature,
        ) {
            return Err(Refusal::BadDeviceSignature);
        }
        Ok(())
    }
}
