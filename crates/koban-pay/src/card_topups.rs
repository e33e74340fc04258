//! Top-ups from a customer's payment card through the built-in **sandbox card acquirer**.
//!
//! The card number is never stored (a keyed fingerprint and the last four digits), and the
//! security code is checked once and forgotten. A top-up from a card that has never passed a
//! challenge, or from a device the customer has not signed in with before, needs a
//! 3-D Secure-like challenge first (threat model D7): a one-time code from the card's issuer,
//! which the sandbox delivers to the customer's mailbox, bound to that card, amount and
//! request. Then the acquirer authorises; the top-up is a ledger hold until it captures.
//!
//! Sandbox test cards: `4242 4242 4242 4242` works; `4000 0000 0000 0002` is declined;
//! `4000 0000 0000 3220` asks for a challenge every time. Any future expiry, any 3 digits.

use koban_auth::secret::{HashPurpose, constant_time_eq};
use koban_auth::{Client, Principal, UserKind};
use koban_ledger::Metadata;
use koban_shared::mail::Mail;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use koban_store::{LedgerStore, params};

use crate::accounts::IssuerAccount;
use crate::bank::{BankMove, BankOperation, Begun};
use crate::connectors::Authorisation;
use crate::{IdempotencyKey, PayError, Payments, format_money};

/// Wrong challenge codes before a challenge is void.
pub const CHALLENGE_ATTEMPTS_MAX: i64 = 5;
/// How long a challenge code lasts.
pub const CHALLENGE_S: i64 = 10 * 60;

/// Card details as the customer types them, checked once.
pub struct CardDetails {
    pub number: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub cvc: koban_auth::Secret<String>,
}

/// A card as the API shows it.
#[derive(Clone, Debug)]
pub struct CardSource {
    pub id: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub verified: bool,
    pub created_at_ms: i64,
}

/// The answer to a challenge.
pub struct ChallengeAnswer {
    pub id: String,
    pub code: koban_auth::Secret<String>,
}

pub(crate) fn luhn_ok(digits: &str) -> bool {
    let mut sum = 0;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// The UTC calendar year and month of a Unix time in milliseconds (civil-from-days).
pub fn year_month(ms: i64) -> (i64, i64) {
    let days = ms.div_euclid(86_400_000) + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// The digits of a card a customer adds, once its details have the shape of a card that
/// works now: 13 to 19 digits with a right Luhn digit, a month, a 3 or 4 digit security code,
/// and an expiry from this month to 20 years on (a card works until the end of its month).
fn card_digits(card: &CardDetails, now_ms: i64) -> Result<String, PayError> {
    let digits: String = card
        .number
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .collect();
    if !(13..=19).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !luhn_ok(&digits)
        || !(1..=12).contains(&card.exp_month)
        || !(3..=4).contains(&card.cvc.expose().len())
        || !card.cvc.expose().bytes().all(|b| b.is_ascii_digit())
    {
        return Err(PayError::Invalid("the card details are not valid"));
    }
    let (year, month) = year_month(now_ms);
    if (card.exp_year, card.exp_month) < (year, month) || card.exp_year > year + 20 {
        return Err(PayError::Invalid(
            "the card has expired or its expiry is not valid",
        ));
    }
    Ok(digits)
}

fn brand(digits: &str) -> &'static str {
    match digits.as_bytes().first() {
        Some(b'4') => "visa",
        Some(b'5') => "mastercard",
        Some(b'3') => "jcb_or_amex",
        _ => "card",
    }
}

impl<S: LedgerStore> Payments<S> {
    fn card_fingerprint(&self, digits: &str) -> [u8; 32] {
        self.auth
            .keys()
            .hash(HashPurpose::Payment, &[b"card", digits.as_bytes()])
    }

    /// Adds a card (sandbox acquirer). Nothing moves until a top-up.
    pub async fn add_card(
        &self,
        principal: &Principal,
        card: &CardDetails,
    ) -> Result<CardSource, PayError> {
        principal.can_move_money()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("only customers add cards"));
        }
        if !self.config.sandbox {
            return Err(PayError::Invalid(
                "the only card acquirer connected is the sandbox acquirer",
            ));
        }
        let now = self.now_ms();
        let digits = card_digits(card, now)?;
        let behaviour = self.acquirer.behaviour_of(&digits);
        let fingerprint = self.card_fingerprint(&digits);
        let id = koban_shared::new_id();
        let mut tx = self.db().begin().await?;
        let existing = tx
            .query_opt(
                "SELECT id FROM card_sources WHERE user_id = $1 AND fingerprint = $2 AND removed_at IS NULL",
                params![principal.user_id.as_str(), fingerprint],
            )
            .await?;
        if existing.is_some() {
            return Err(PayError::Conflict("this card is already added"));
        }
        tx.execute(
            "INSERT INTO card_sources (id, user_id, fingerprint, brand, last4, exp_month, exp_year, behaviour, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            params![
                id.as_str(),
                principal.user_id.as_str(),
                fingerprint,
                brand(&digits),
                &digits[digits.len() - 4..],
                card.exp_month,
                card.exp_year,
                behaviour,
                now
            ],
        )
        .await?;
        let mail = Mail::new("card-added").arg("last4", &digits[digits.len() - 4..]);
        koban_shared::outbox::enqueue(&mut tx, self.auth.vault(), now, &principal.email, &mail)
            .await?;
        tx.commit().await?;
        Ok(CardSource {
            id,
            brand: brand(&digits).to_owned(),
            last4: digits[digits.len() - 4..].to_owned(),
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            verified: false,
            created_at_ms: now,
        })
    }

    /// The caller's cards.
    pub async fn cards(&self, principal: &Principal) -> Result<Vec<CardSource>, PayError> {
        principal.full()?;
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT id, brand, last4, exp_month, exp_year, verified_at, created_at FROM card_sources \
                 WHERE user_id = $1 AND removed_at IS NULL ORDER BY created_at DESC",
                params![principal.user_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| {
                Ok(CardSource {
                    id: r.text(0)?,
                    brand: r.text(1)?,
                    last4: r.text(2)?,
                    exp_month: r.i64(3)?,
                    exp_year: r.i64(4)?,
                    verified: r.opt_i64(5)?.is_some(),
                    created_at_ms: r.i64(6)?,
                })
            })
            .collect()
    }

    /// Tops up from a card: challenged for a new card or a new device (answered with
    /// [`PayError::ChallengeRequired`] until the request carries the code), then authorised by
    /// the sandbox acquirer and held until it captures.
    pub async fn card_topup(
        &self,
        principal: &Principal,
        request: &BankMove,
        key: &IdempotencyKey,
        challenge: Option<&ChallengeAnswer>,
        client: &Client,
    ) -> Result<BankOperation, PayError> {
        principal.can_move_money()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("only customers top up"));
        }
        let (id, _claim, wallet) = match self
            .begin_operation(b"card-topup", &principal.user_id, key, request)
            .await?
        {
            Begun::New { id, claim, wallet } => (id, claim, wallet),
            Begun::Done(done) => return Ok(*done),
        };
        let amount = request.amount;
        let (behaviour, verified_at, last4) =
            self.topup_card(principal, &request.source_id).await?;
        // A device cookie of this account proves the browser completed a sign-in before.
        let known_device = client
            .device
            .as_ref()
            .is_some_and(|device| device.user_id == principal.user_id);
        let now = self.now_ms();
        let _lock = self.lock_wallet(wallet.account).await?;
        self.still_signed_in(principal).await?;
        self.check_card_limits(request, verified_at, now).await?;
        let holder = self.holder(&principal.user_id).await?;
        let account = self.ledger_account(wallet.account).await?;
        self.check_balance_cap(&holder, &account, amount)?;
        let authorisation = self.acquirer.authorise(&behaviour);
        if verified_at.is_none()
            || !known_device
            || authorisation == Authorisation::ChallengeEveryTime
        {
            self.card_challenge(principal, request, id, &last4, challenge)
                .await?;
        }
        if authorisation == Authorisation::Declined {
            return Err(PayError::Declined {
                code: "card_declined",
            });
        }
        self.assess_topup(
            principal,
            id,
            &request.source_id,
            verified_at,
            request,
            Some(client),
        )
        .await?;
        self.record_operation(
            id,
            &principal.user_id,
            "card_topup",
            wallet.account,
            request,
        )
        .await?;
        self.hold_topup(
            id,
            IssuerAccount::AcquirerSettlement,
            wallet.account,
            request,
            Metadata::parse([("source", "card")]).unwrap_or_default(),
            "card_topup",
        )
        .await
    }

    /// A card of the caller's to top up from: how its (sandbox) issuer behaves, when it was
    /// verified, and its last four digits.
    async fn topup_card(
        &self,
        principal: &Principal,
        source_id: &str,
    ) -> Result<(String, Option<i64>, String), PayError> {
        let mut tx = self.db().begin_read().await?;
        let card = tx
            .query_opt(
                "SELECT behaviour, verified_at, last4 FROM card_sources WHERE id = $1 AND user_id = $2 AND removed_at IS NULL",
                params![source_id, principal.user_id.as_str()],
            )
            .await?
            .ok_or(PayError::Invalid("name a card of yours"))?;
        tx.commit().await?;
        Ok((card.text(0)?, card.opt_i64(1)?, card.text(2)?))
    }

    /// The card issuer's challenge of a top-up: sent (and the top-up refused until it is
    /// answered) or, with an answer, checked.
    async fn card_challenge(
        &self,
        principal: &Principal,
        request: &BankMove,
        id: koban_ledger::TransferId,
        last4: &str,
        challenge: Option<&ChallengeAnswer>,
    ) -> Result<(), PayError> {
        match challenge {
            None => {
                let (id, expires_at_ms) = self
                    .start_card_challenge(principal, request, id, last4)
                    .await?;
                Err(PayError::ChallengeRequired { id, expires_at_ms })
            }
            Some(answer) => {
                self.pass_card_challenge(principal, request, id, answer)
                    .await
            }
        }
    }

    /// A card that has not been used for 72 hours since its first challenge tops up at most
    /// the new-source daily amount.
    async fn check_card_limits(
        &self,
        request: &BankMove,
        verified_at: Option<i64>,
        now: i64,
    ) -> Result<(), PayError> {
        let new_card =
            verified_at.is_none_or(|at| at > now - self.config.new_source_cooling_s * 1000);
        if !new_card {
            return Ok(());
        }
        let mut tx = self.db().begin_read().await?;
        let recent = tx
            .query_one(
                "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM bank_operations WHERE source_id = $1 \
                 AND kind = 'card_topup' AND status <> 'failed' AND created_at > $2",
                params![request.source_id.as_str(), now - 24 * 3600 * 1000],
            )
            .await?
            .i64(0)?;
        tx.commit().await?;
        let after = u64::try_from(recent)
            .unwrap_or(0)
            .saturating_add(request.amount.minor_units());
        if after > self.config.new_source_daily_max {
            return Err(PayError::Limit {
                code: "new_source_limit",
                detail: format!(
                    "a card added in the last 72 hours tops up at most {} a day",
                    format_money(self.config.new_source_daily_max, request.currency)
                ),
            });
        }
        Ok(())
    }

    fn challenge_hash(&self, challenge_id: &str, code: &str) -> [u8; 32] {
        self.auth.keys().hash(
            HashPurpose::Code,
            &[b"card-challenge", challenge_id.as_bytes(), code.as_bytes()],
        )
    }

    async fn start_card_challenge(
        &self,
        principal: &Principal,
        request: &BankMove,
        operation: koban_ledger::TransferId,
        last4: &str,
    ) -> Result<(String, i64), PayError> {
        let id = koban_shared::new_id();
        let code = koban_auth::secret::random_digits(6);
        let now = self.now_ms();
        let expires_at_ms = now + CHALLENGE_S * 1000;
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO card_challenges (id, user_id, source_id, operation, amount, currency, code_hash, attempts, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)",
            params![
                id.as_str(),
                principal.user_id.as_str(),
                request.source_id.as_str(),
                operation.to_bytes(),
                request.amount.to_i64(),
                request.currency.code(),
                self.challenge_hash(&id, code.expose()),
                expires_at_ms,
                now
            ],
        )
        .await?;
        let mail = Mail::new("card-issuer-code")
            .arg(
                "amount",
                format_money(request.amount.minor_units(), request.currency),
            )
            .arg("last4", last4)
            .arg("code", code.expose());
        koban_shared::outbox::enqueue(&mut tx, self.auth.vault(), now, &principal.email, &mail)
            .await?;
        tx.commit().await?;
        Ok((id, expires_at_ms))
    }

    async fn pass_card_challenge(
        &self,
        principal: &Principal,
        request: &BankMove,
        operation: koban_ledger::TransferId,
        answer: &ChallengeAnswer,
    ) -> Result<(), PayError> {
        let now = self.now_ms();
        let invalid = PayError::Invalid(
            "the confirmation code is wrong, used, expired, or for another top-up",
        );
        let mut tx = self.db().begin().await?;
        // The try is counted before the code is compared, whatever the outcome.
        let row = tx
            .query_opt(
                "UPDATE card_challenges SET attempts = attempts + 1 WHERE id = $1 AND user_id = $2 \
                 AND passed_at IS NULL AND attempts < $3 AND expires_at > $4 \
                 RETURNING source_id, operation, amount, currency, code_hash",
                params![
                    answer.id.as_str(),
                    principal.user_id.as_str(),
                    CHALLENGE_ATTEMPTS_MAX,
                    now
                ],
            )
            .await?;
        tx.commit().await?;
        let Some(row) = row else {
            return Err(invalid);
        };
        let bound = row.text(0)? == request.source_id
            && row.bytes(1)? == operation.to_bytes()
            && row.i64(2)? == request.amount.to_i64()
            && row.text(3)? == request.currency.code();
        let right = constant_time_eq(
            &row.bytes(4)?,
            &self.challenge_hash(&answer.id, answer.code.expose()),
        );
        if !(bound && right) {
            return Err(invalid);
        }
        let mut tx = self.db().begin().await?;
        let passed = tx
            .execute(
                "UPDATE card_challenges SET passed_at = $1 WHERE id = $2 AND passed_at IS NULL",
                params![now, answer.id.as_str()],
            )
            .await?;
        tx.execute(
            "UPDATE card_sources SET verified_at = $1 WHERE id = $2 AND verified_at IS NULL",
            params![now, request.source_id.as_str()],
        )
        .await?;
        tx.commit().await?;
        if passed == 0 {
            return Err(invalid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_checked_by_luhn() {
        assert!(luhn_ok("4242424242424242"));
        assert!(luhn_ok("4000000000000002"));
        assert!(luhn_ok("4000000000003220"));
        assert!(!luhn_ok("4242424242424241"));
        assert_eq!(brand("4242424242424242"), "visa");
    }

    #[test]
    fn calendar_months_are_exact() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(1_795_564_800_000), (2026, 11)); // 2026-11-25
        assert_eq!(year_month(1_709_164_800_000), (2024, 2)); // 2024-02-29
        assert_eq!(year_month(1_709_251_200_000), (2024, 3)); // 2024-03-01
    }
}
