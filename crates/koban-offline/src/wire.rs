//! The byte forms of certificates, challenges and vouchers, and the text form of the two that
//! travel as QR codes.
//!
//! Every field has a fixed width and big-endian integers (a terminal page reads them with a
//! `DataView`), except the terminal's name, which is one length byte and that many bytes of
//! UTF-8. Each form starts with a kind byte, so one form is never read as another. What a
//! signature covers is a domain string (naming the form and its version) followed by every
//! byte of the form before the signature. Decoding refuses trailing bytes and any value that
//! would encode differently, so a decoded value's encoding is exactly the bytes it came from.
//!
//! QR text: a prefix (`KOC1:` for a challenge, `KOV1:` for a voucher) and the bytes in base45
//! (RFC 9285), whose alphabet is QR's alphanumeric set: 11 bits of code per 2 bytes, against
//! 16 for base64 in byte mode, so the symbol is about a quarter smaller.

use crate::{Id, Nonce, PublicKey, Signature};

/// The text of a challenge starts with this.
pub const CHALLENGE_PREFIX: &str = "KOC1:";
/// The text of a voucher starts with this.
pub const VOUCHER_PREFIX: &str = "KOV1:";
/// The longest merchant name a terminal certificate carries, in bytes of UTF-8.
pub const NAME_MAX: usize = 48;

const KIND_PURSE: u8 = 0x01;
const KIND_TERMINAL: u8 = 0x02;
const KIND_CHALLENGE: u8 = 0x03;
const KIND_VOUCHER: u8 = 0x04;

pub(crate) const PURSE_DOMAIN: &[u8] = b"koban offline purse certificate v1\0";
pub(crate) const TERMINAL_DOMAIN: &[u8] = b"koban offline terminal certificate v1\0";
pub(crate) const CHALLENGE_DOMAIN: &[u8] = b"koban offline challenge v1\0";
pub(crate) const VOUCHER_DOMAIN: &[u8] = b"koban offline voucher v1\0";

/// Bytes that are not the form they claim to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a well-formed offline payment code")]
pub struct DecodeError;

/// An ISO 4217 alphabetic code, three upper-case ASCII letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency(pub [u8; 3]);

impl Currency {
    pub const JPY: Currency = Currency(*b"JPY");

    pub fn parse(code: &str) -> Option<Currency> {
        Self::from_bytes(code.as_bytes().try_into().ok()?)
    }

    /// Three upper-case ASCII letters, or nothing.
    fn from_bytes(code: [u8; 3]) -> Option<Currency> {
        code.iter()
            .all(u8::is_ascii_uppercase)
            .then_some(Currency(code))
    }

    pub fn as_str(&self) -> &str {
        // Only upper-case ASCII is ever stored (`parse` and `decode` check it).
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

/// The issuer's word that a device key may spend up to `limit` of a purse's reserve between
/// `not_before` and `not_after` (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurseCertificate {
    /// Which issuer key signed it.
    pub issuer_key: u8,
    pub purse: Id,
    pub device_key: PublicKey,
    pub currency: Currency,
    /// Minor units; positive, at most `i64::MAX`.
    pub limit: u64,
    pub not_before: u32,
    pub not_after: u32,
    /// The certificate's number within its purse.
    pub serial: u32,
    pub signature: Signature,
}

/// The issuer's word that a terminal key belongs to a merchant and shows this name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminalCertificate {
    pub issuer_key: u8,
    pub terminal: Id,
    pub merchant: Id,
    pub terminal_key: PublicKey,
    pub currency: Currency,
    pub not_after: u32,
    /// The merchant's name as the customer's device shows it: 1 to [`NAME_MAX`] bytes of
    /// UTF-8 without control characters.
    pub name: String,
    pub signature: Signature,
}

/// What a terminal asks for, signed by its key: the customer's device shows the certified
/// name and the amount, and answers with a voucher naming this nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub terminal: TerminalCertificate,
    pub amount: u64,
    pub nonce: Nonce,
    /// The terminal's clock when it made the challenge.
    pub time: u32,
    pub signature: Signature,
}

/// What a device signs when it pays: everything of a voucher but the certificate and the
/// signature. Two vouchers with the same content are one payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VoucherContent {
    pub terminal: Id,
    pub nonce: Nonce,
    pub time: u32,
    pub amount: u64,
    /// 1 for the purse's first payment, then one more for each.
    pub counter: u32,
    /// What the purse has spent with this payment included.
    pub cumulative: u64,
}

/// A device's signed payment answering a terminal's challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voucher {
    pub certificate: PurseCertificate,
    pub content: VoucherContent,
    pub signature: Signature,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.bytes.split_first_chunk::<N>().ok_or(DecodeError)?;
        self.bytes = rest;
        Ok(*head)
    }

    fn slice(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn kind(&mut self, kind: u8) -> Result<(), DecodeError> {
        (self.u8()? == kind).then_some(()).ok_or(DecodeError)
    }

    fn currency(&mut self) -> Result<Currency, DecodeError> {
        Currency::from_bytes(self.take()?).ok_or(DecodeError)
    }

    fn key(&mut self) -> Result<PublicKey, DecodeError> {
        let key = self.take::<65>()?;
        // Uncompressed points only; whether it is on the curve is ring's check at verification.
        (key[0] == 0x04).then_some(key).ok_or(DecodeError)
    }

    fn amount(&mut self) -> Result<u64, DecodeError> {
        let amount = self.u64()?;
        (amount > 0 && i64::try_from(amount).is_ok())
            .then_some(amount)
            .ok_or(DecodeError)
    }

    fn end(&self) -> Result<(), DecodeError> {
        self.bytes.is_empty().then_some(()).ok_or(DecodeError)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.chars().any(|c| c.is_control() || invisible(c))
        && name.trim() == name
}

/// Characters that change how a name shows without showing themselves (zero-width marks and
/// joiners, direction overrides and isolates, the byte-order mark): a certified name could
/// otherwise be made to look like another.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

impl PurseCertificate {
    /// Encoded length in bytes.
    pub const LEN: usize = 1 + 1 + 16 + 65 + 3 + 8 + 4 + 4 + 4 + 64;

    /// The bytes the issuer's signature covers, after the domain.
    pub(crate) fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(KIND_PURSE);
        out.push(self.issuer_key);
        out.extend_from_slice(&self.purse);
        out.extend_from_slice(&self.device_key);
        out.extend_from_slice(&self.currency.0);
        out.extend_from_slice(&self.limit.to_be_bytes());
        out.extend_from_slice(&self.not_before.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
        out.extend_from_slice(&self.serial.to_be_bytes());
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_part();
        out.extend_from_slice(&self.signature);
        out
    }

    fn read(r: &mut Reader<'_>) -> Result<PurseCertificate, DecodeError> {
        r.kind(KIND_PURSE)?;
        let cert = PurseCertificate {
            issuer_key: r.u8()?,
            purse: r.take()?,
            device_key: r.key()?,
            currency: r.currency()?,
            limit: r.amount()?,
            not_before: r.u32()?,
            not_after: r.u32()?,
            serial: r.u32()?,
            signature: r.take()?,
        };
        if cert.not_before >= cert.not_after {
            return Err(DecodeError);
        }
        Ok(cert)
    }

    pub fn decode(bytes: &[u8]) -> Result<PurseCertificate, DecodeError> {
        let mut r = Reader { bytes };
        let cert = Self::read(&mut r)?;
        r.end()?;
        Ok(cert)
    }
}

impl TerminalCertificate {
    pub(crate) fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(110 + self.name.len() + 64);
        out.push(KIND_TERMINAL);
        out.push(self.issuer_key);
        out.extend_from_slice(&self.terminal);
        out.extend_from_slice(&self.merchant);
        out.extend_from_slice(&self.terminal_key);
        out.extend_from_slice(&self.currency.0);
        out.extend_from_slice(&self.not_after.to_be_bytes());
        // A name longer than NAME_MAX is never built by this crate's callers (`new` in the
        // server checks); it would not decode.
        out.push(u8::try_from(self.name.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_part();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Whether a merchant's name can be certified as it is.
    pub fn valid_name(name: &str) -> bool {
        valid_name(name)
    }

    fn read(r: &mut Reader<'_>) -> Result<TerminalCertificate, DecodeError> {
        r.kind(KIND_TERMINAL)?;
        let issuer_key = r.u8()?;
        let terminal = r.take()?;
        let merchant = r.take()?;
        let terminal_key = r.key()?;
        let currency = r.currency()?;
        let not_after = r.u32()?;
        let len = usize::from(r.u8()?);
        let name = std::str::from_utf8(r.slice(len)?).map_err(|_| DecodeError)?;
        if !valid_name(name) {
            return Err(DecodeError);
        }
        Ok(TerminalCertificate {
            issuer_key,
            terminal,
            merchant,
            terminal_key,
            currency,
            not_after,
            name: name.to_owned(),
            signature: r.take()?,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<TerminalCertificate, DecodeError> {
        let mut r = Reader { bytes };
        let cert = Self::read(&mut r)?;
        r.end()?;
        Ok(cert)
    }
}

impl Challenge {
    pub(crate) fn signed_part(&self) -> Vec<u8> {
        let mut out = vec![KIND_CHALLENGE];
        out.extend_from_slice(&self.terminal.encode());
        out.extend_from_slice(&self.amount.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.time.to_be_bytes());
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_part();
        out.extend_from_slice(&self.signature);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Challenge, DecodeError> {
        let mut r = Reader { bytes };
        r.kind(KIND_CHALLENGE)?;
        let challenge = Challenge {
            terminal: TerminalCertificate::read(&mut r)?,
            amount: r.amount()?,
            nonce: r.take()?,
            time: r.u32()?,
            signature: r.take()?,
        };
        r.end()?;
        Ok(challenge)
    }

    /// The QR text: [`CHALLENGE_PREFIX`] and the bytes in base45.
    pub fn to_text(&self) -> String {
        format!("{CHALLENGE_PREFIX}{}", base45::encode(self.encode()))
    }

    pub fn from_text(text: &str) -> Result<Challenge, DecodeError> {
        Self::decode(&from_text(text, CHALLENGE_PREFIX)?)
    }
}

impl VoucherContent {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.terminal);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.time.to_be_bytes());
        out.extend_from_slice(&self.amount.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&self.cumulative.to_be_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<VoucherContent, DecodeError> {
        let content = VoucherContent {
            terminal: r.take()?,
            nonce: r.take()?,
            time: r.u32()?,
            amount: r.amount()?,
            counter: r.u32()?,
            cumulative: r.amount()?,
        };
        if content.counter == 0 || content.cumulative < content.amount {
            return Err(DecodeError);
        }
        Ok(content)
    }

    /// A digest naming this content: the same payment, however often it is uploaded or
    /// re-signed, has one digest; any other content has another.
    pub fn digest(&self, purse: &Id) -> [u8; 32] {
        use sha2::Digest;
        let mut bytes = Vec::with_capacity(16 + 56);
        bytes.extend_from_slice(purse);
        self.write(&mut bytes);
        sha2::Sha256::digest(&bytes).into()
    }
}

impl Voucher {
    /// Encoded length in bytes.
    pub const LEN: usize = 1 + PurseCertificate::LEN + 16 + 12 + 4 + 8 + 4 + 8 + 64;

    pub(crate) fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(KIND_VOUCHER);
        out.extend_from_slice(&self.certificate.encode());
        self.content.write(&mut out);
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_part();
        out.extend_from_slice(&self.signature);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Voucher, DecodeError> {
        let mut r = Reader { bytes };
        r.kind(KIND_VOUCHER)?;
        let voucher = Voucher {
            certificate: PurseCertificate::read(&mut r)?,
            content: VoucherContent::read(&mut r)?,
            signature: r.take()?,
        };
        r.end()?;
        Ok(voucher)
    }

    /// The QR text: [`VOUCHER_PREFIX`] and the bytes in base45.
    pub fn to_text(&self) -> String {
        format!("{VOUCHER_PREFIX}{}", base45::encode(self.encode()))
    }

    pub fn from_text(text: &str) -> Result<Voucher, DecodeError> {
        Self::decode(&from_text(text, VOUCHER_PREFIX)?)
    }
}

fn from_text(text: &str, prefix: &str) -> Result<Vec<u8>, DecodeError> {
    let body = text.trim().strip_prefix(prefix).ok_or(DecodeError)?;
    let bytes = base45::decode(body).map_err(|_| DecodeError)?;
    // base45 has one text per byte string; refuse any other spelling of the same bytes.
    if base45::encode(&bytes) != body {
        return Err(DecodeError);
    }
    Ok(bytes)
}
