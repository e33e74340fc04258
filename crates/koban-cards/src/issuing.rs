//! Virtual prepaid cards issued on a customer's wallet (threat model D6): creation, display,
//! out-of-band activation, reveal with step-up, the holder's controls, closing, and an
//! operator's freeze.
//!
//! A card number exists in the clear only in memory: at rest it is sealed under a data key
//! ([`crate::card_keys`]) and found by a keyed fingerprint; everywhere it is shown it is the
//! BIN and the last four digits. The security code is never stored: it is derived when the
//! holder reveals the card and when the network presents it. A new card is inactive until the
//! holder activates it with step-up (and, for a physical card, the code from the letter).

use koban_auth::secret::{HashPurpose, constant_time_eq};
use koban_auth::{
    AuthError, Client, IssuedSession, Principal, Role, Secret, SensitiveAction, StepUpProof,
    UserKind,
};
use koban_ledger::Currency;
use koban_shared::audit::{self, AuditEvent};
use koban_shared::mail::Mail;
use koban_store::sql::{Row, SqlDb, SqlTx, SqlTxExt};
use koban_store::{LedgerStore, params};

use crate::Cards;
use crate::card_keys::CardKeys;
use koban_pay::PayError;
use koban_pay::wallets::Tier;
use koban_shared::ids::{CardId, UserId};

/// Cards one customer may hold open at once.
pub const CARDS_PER_CUSTOMER_MAX: i64 = 10;
/// Reveals of one card per hour.
pub const REVEALS_PER_HOUR_MAX: i64 = 5;
/// Wrong activation codes before a physical card's code is void (the holder asks for a new card).
pub const ACTIVATION_ATTEMPTS_MAX: i64 = 5;
/// Years a new card is valid for.
pub const CARD_YEARS: i64 = 3;

/// Channels a card may be used through.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    pub online: bool,
    pub in_store: bool,
    pub atm: bool,
}

/// The holder's controls on one card. Amounts are minor units of the card's currency.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardControls {
    pub channels: Channels,
    /// The most one authorization may be for (`None`: only the wallet's limits apply).
    pub per_transaction_max: Option<u64>,
    /// The most the card may authorize per UTC day.
    pub daily_max: Option<u64>,
    /// Merchant category codes (4 digits) the card refuses.
    pub blocked_mccs: Vec<String>,
    /// ISO 3166 alpha-2 countries the card works in (`None`: anywhere).
    pub allowed_countries: Option<Vec<String>>,
}

impl Default for CardControls {
    fn default() -> CardControls {
        CardControls {
            // A virtual card pays online; in-store (wallet phones) is on too; cash is off
            // until the holder turns it on.
            channels: Channels {
                online: true,
                in_store: true,
                atm: false,
            },
            per_transaction_max: None,
            daily_max: None,
            blocked_mccs: Vec::new(),
            allowed_countries: None,
        }
    }
}

impl CardControls {
    /// Checks shapes: 4-digit MCCs, 2-letter countries, positive limits, at most 50 entries.
    pub fn validate(mut self) -> Result<CardControls, PayError> {
        if self.blocked_mccs.len() > 50
            || self
                .allowed_countries
                .as_ref()
                .is_some_and(|c| c.len() > 50)
        {
            return Err(PayError::Invalid(
                "at most 50 blocked categories and 50 allowed countries",
            ));
        }
        if !self
            .blocked_mccs
            .iter()
            .all(|m| m.len() == 4 && m.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(PayError::Invalid(
                "blocked_mccs are 4-digit merchant category codes",
            ));
        }
        if let Some(countries) = &mut self.allowed_countries {
            for country in countries.iter_mut() {
                if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(PayError::Invalid(
                        "allowed_countries are ISO 3166 two-letter codes",
                    ));
                }
                *country = country.to_ascii_uppercase();
            }
        }
        if self.per_transaction_max == Some(0) || self.daily_max == Some(0) {
            return Err(PayError::Invalid(
                "limits are positive amounts (freeze the card to stop it)",
            ));
        }
        self.blocked_mccs.sort();
        self.blocked_mccs.dedup();
        Ok(self)
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(crate) fn from_json(text: &str) -> Result<CardControls, PayError> {
        serde_json::from_str(text)
            .map_err(|_| PayError::Auth(AuthError::Internal("stored card controls do not parse")))
    }
}

/// A card as the holder and operators see it: never more than BIN and last four.
#[derive(Clone, Debug)]
pub struct IssuedCard {
    pub id: CardId,
    pub user_id: UserId,
    pub currency: Currency,
    pub bin: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub name: String,
    pub physical: bool,
    /// `inactive`, `active` or `closed`.
    pub status: String,
    pub frozen_by_holder: bool,
    pub frozen_by_operator: bool,
    /// Too many wrong security codes or expiry dates: declines until the holder unlocks it.
    pub locked: bool,
    pub controls: CardControls,
    pub created_at_ms: i64,
    pub activated_at_ms: Option<i64>,
}

impl IssuedCard {
    /// `4999 10•• •••• 1234`-style display.
    pub fn masked(&self) -> String {
        format!("{}••••••{}", self.bin, self.last4)
    }
}

/// Full card details, only from [`Cards::reveal_card`].
pub struct RevealedCard {
    pub card: IssuedCard,
    pub pan: Secret<String>,
    pub security_code: Secret<String>,
    pub session: IssuedSession,
}

/// What a holder's change to a card answers: the card, and the rotated session when the
/// change needed step-up.
pub struct CardChange {
    pub card: IssuedCard,
    pub session: Option<IssuedSession>,
}

pub(crate) fn luhn_check_digit(body: &str) -> u8 {
    let mut sum = 0u32;
    for (i, b) in body.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    ((10 - sum % 10) % 10) as u8
}

pub fn luhn_valid(digits: &str) -> bool {
    match digits.len() {
        0 => false,
        n => {
            digits.bytes().all(|b| b.is_ascii_digit())
                && luhn_check_digit(&digits[..n - 1]) == digits.as_bytes()[n - 1] - b'0'
        }
    }
}

/// A new 16-digit card number under `bin` with a valid check digit.
pub(crate) fn new_pan(bin: &str) -> String {
    let mut body = bin.to_owned();
    while body.len() < 15 {
        body.push(char::from(b'0' + rand::random_range(0..10u8)));
    }
    let check = luhn_check_digit(&body);
    body.push(char::from(b'0' + check));
    body
}

/// What cards keep about a holder, for the export of their data.
const EXPORT: &[koban_shared::export::Section] = &[
    koban_shared::export::Section {
        name: "cards",
        sql: "SELECT id, currency, bin, last4, exp_month, exp_year, name, physical, status, controls, created_at \
              FROM issued_cards WHERE user_id = $1 ORDER BY created_at",
        columns: &[
            "id",
            "currency",
            "bin",
            "last4",
            "exp_month",
            "exp_year",
            "name",
            "physical",
            "status",
            "controls",
            "created_at",
        ],
        sealed: &[],
    },
    koban_shared::export::Section {
        name: "card_payments",
        sql: "SELECT a.id, a.card_id, a.status, a.response_code, a.amount, a.captured, a.refunded, a.currency, \
              a.merchant_name, a.mcc, a.country, a.channel, a.created_at FROM card_authorizations a \
              JOIN issued_cards c ON c.id = a.card_id WHERE c.user_id = $1 ORDER BY a.created_at",
        columns: &[
            "id",
            "card_id",
            "status",
            "response_code",
            "amount",
            "captured",
            "refunded",
            "currency",
            "merchant_name",
            "mcc",
            "country",
            "channel",
            "created_at",
        ],
        sealed: &[],
    },
];

impl<S: LedgerStore> Cards<S> {
    /// Closes every card of an account being closed (audited once for all of them).
    pub async fn close_all_cards(&self, principal: &Principal) -> Result<u64, PayError> {
        let now = self.pay.now_ms();
        let mut tx = self.pay.db().begin().await?;
        let closed = tx
            .execute(
                "UPDATE issued_cards SET status = 'closed', closed_at = $1, activation_hash = NULL \
                 WHERE user_id = $2 AND status <> 'closed'",
                params![now, principal.user_id.as_str()],
            )
            .await?;
        audit::append(
            &mut tx,
            self.pay.auth().audit_key(),
            now,
            audit::AuditEvent {
                actor: &principal.actor(),
                action: "cards.closed_with_account",
                subject: &format!("user:{}", principal.user_id),
                details: serde_json::json!({ "cards": closed }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(closed)
    }

    /// What cards keep about the caller, into `out` (never a card number or security code:
    /// the export names cards by their last four digits, as the wallet does).
    pub async fn export_into(
        &self,
        principal: &Principal,
        out: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), PayError> {
        principal.full()?;
        let mut tx = self.pay.db().begin_read().await?;
        koban_shared::export::read_sections(
            &mut tx,
            self.pay.auth().vault(),
            &principal.user_id,
            EXPORT,
            out,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) fn card_keys(&self) -> Result<&CardKeys, PayError> {
        self.keys.as_deref().ok_or(PayError::Unavailable(
            "card issuing is not configured on this server (no card keys)",
        ))
    }

    /// The keyed fingerprint a card number is found by.
    pub(crate) fn pan_fingerprint(&self, pan: &str) -> [u8; 32] {
        self.pay
            .auth()
            .keys()
            .hash(HashPurpose::Payment, &[b"issued-card", pan.as_bytes()])
    }

    fn card_locked(&self, bad_codes: i64) -> bool {
        bad_codes >= self.config.bad_codes_max
    }

    pub(crate) fn card_from_row(&self, row: &Row) -> Result<IssuedCard, PayError> {
        Ok(IssuedCard {
            id: CardId::from_stored(row.text(0)?),
            user_id: UserId::from_stored(row.text(1)?),
            currency: Currency::parse(&row.text(2)?)
                .map_err(|_| PayError::Auth(AuthError::Internal("unknown stored currency")))?,
            bin: row.text(3)?,
            last4: row.text(4)?,
            exp_month: row.i64(5)?,
            exp_year: row.i64(6)?,
            name: row.text(7)?,
            physical: row.bool(8)?,
            status: row.text(9)?,
            frozen_by_holder: row.bool(10)?,
            frozen_by_operator: row.bool(11)?,
            locked: self.card_locked(row.i64(12)?),
            controls: CardControls::from_json(&row.text(13)?)?,
            created_at_ms: row.i64(14)?,
            activated_at_ms: row.opt_i64(15)?,
        })
    }

    /// One card by id; a customer sees only their own (another's is "not found").
    async fn card_row<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        card_id: &CardId,
    ) -> Result<IssuedCard, PayError> {
        let row = tx
            .query_opt(const_format_card_select(), params![card_id.as_str()])
            .await?
            .ok_or(PayError::NotFound)?;
        let card = self.card_from_row(&row)?;
        if principal.kind != UserKind::Operator && card.user_id != principal.user_id {
            return Err(PayError::NotFound);
        }
        Ok(card)
    }

    /// Issues a virtual card on the caller's wallet (verified customers only). It starts
    /// inactive; a physical card's activation code goes out by post (the mailbox in the
    /// sandbox).
    pub async fn create_card(
        &self,
        principal: &Principal,
        name: &str,
        physical: bool,
        currency: Option<Currency>,
    ) -> Result<IssuedCard, PayError> {
        principal.can_move_money()?;
        let keys = self.card_keys()?;
        let name = self.may_issue(principal, name, physical).await?;
        let currency = currency.unwrap_or(self.pay.config().currencies[0]);
        let wallet = self.pay.wallet(&principal.user_id, currency).await?;
        let now = self.pay.now_ms();
        let (year, month) = koban_pay::year_month(now);
        let id = CardId::generate();
        let activation = physical.then(|| koban_auth::secret::random_digits(8));
        let mut tx = self.pay.db().begin().await?;
        room_for_a_card(&mut tx, &principal.user_id).await?;
        let pan = self.unused_pan(&mut tx).await?;
        let (key_id, sealed) = keys
            .seal_pan(&id, pan.expose())
            .map_err(|_| PayError::Auth(AuthError::Internal("sealing a card number failed")))?;
        let digits = pan.expose();
        let last4 = digits[digits.len() - 4..].to_owned();
        // No chip or cryptogram is checked here, so a virtual card starts online only; the
        // holder may turn other channels on.
        let mut controls = CardControls::default();
        controls.channels.in_store = physical;
        tx.execute(
            "INSERT INTO issued_cards (id, user_id, wallet_account, currency, fingerprint, pan_sealed, key_id, bin, last4, \
             exp_month, exp_year, name, physical, status, controls, activation_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'inactive', $14, $15, $16)",
            params![
                id.as_str(),
                principal.user_id.as_str(),
                wallet.account.to_bytes(),
                currency.code(),
                self.pan_fingerprint(digits),
                sealed,
                key_id.as_str(),
                self.config.bin.as_str(),
                last4.as_str(),
                month,
                year + CARD_YEARS,
                name,
                physical,
                controls.to_json(),
                activation
                    .as_ref()
                    .map(|code| self.activation_hash(&id, code.expose()).to_vec()),
                now
            ],
        )
        .await?;
        let masked = format!("{}••••••{last4}", self.config.bin);
        tell_card_issued(
            &mut tx,
            self.pay.auth().vault(),
            now,
            &principal.email,
            name,
            &masked,
            activation.as_ref(),
        )
        .await?;
        tx.commit().await?;
        let mut tx = self.pay.db().begin_read().await?;
        let card = self.card_row(&mut tx, principal, &id).await?;
        tx.commit().await?;
        Ok(card)
    }

    /// Whether this principal may be issued a card of this name: a verified customer, a
    /// name of 1 to 40 characters, and a physical card only where letters can be sent.
    /// Answers the name trimmed.
    async fn may_issue<'a>(
        &self,
        principal: &Principal,
        name: &'a str,
        physical: bool,
    ) -> Result<&'a str, PayError> {
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("only customers hold cards"));
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 40 || name.chars().any(char::is_control) {
            return Err(PayError::Invalid(
                "a card's name is 1 to 40 characters without control characters",
            ));
        }
        if physical && !self.pay.config().sandbox {
            return Err(PayError::Invalid(
                "physical cards need a postal channel for their activation codes, which this build has only in the sandbox",
            ));
        }
        let holder = self.pay.holder(&principal.user_id).await?;
        if holder.tier != Tier::Verified {
            return Err(PayError::Limit {
                code: "verification_required",
                detail: "cards are issued to verified customers; complete verification first"
                    .into(),
            });
        }
        Ok(name)
    }

    /// A fresh card number no issued card has (a collision is rare; the unique fingerprint
    /// makes it impossible to issue one twice).
    async fn unused_pan<T: SqlTx>(&self, tx: &mut T) -> Result<Secret<String>, PayError> {
        let mut pan = Secret::new(new_pan(&self.config.bin));
        for _ in 0..8 {
            let taken = tx
                .query_opt(
                    "SELECT 1 FROM issued_cards WHERE fingerprint = $1",
                    params![self.pan_fingerprint(pan.expose())],
                )
                .await?
                .is_some();
            if !taken {
                break;
            }
            pan = Secret::new(new_pan(&self.config.bin));
        }
        Ok(pan)
    }

    fn activation_hash(&self, card_id: &str, code: &str) -> [u8; 32] {
        self.pay.auth().keys().hash(
            HashPurpose::Code,
            &[b"card-activation", card_id.as_bytes(), code.as_bytes()],
        )
    }

    /// The caller's cards, newest first (closed ones included).
    pub async fn cards_of(&self, principal: &Principal) -> Result<Vec<IssuedCard>, PayError> {
        principal.full()?;
        let mut tx = self.pay.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT id, user_id, currency, bin, last4, exp_month, exp_year, name, physical, status, \
                 frozen_by_holder, frozen_by_operator, bad_codes, controls, created_at, activated_at \
                 FROM issued_cards WHERE user_id = $1 ORDER BY created_at DESC",
                params![principal.user_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(|row| self.card_from_row(row)).collect()
    }

    /// One card of the caller (or any card, for an operator).
    pub async fn card(
        &self,
        principal: &Principal,
        card_id: &CardId,
    ) -> Result<IssuedCard, PayError> {
        principal.full()?;
        let mut tx = self.pay.db().begin_read().await?;
        let card = self.card_row(&mut tx, principal, card_id).await?;
        tx.commit().await?;
        Ok(card)
    }

    /// Activates an inactive card: step-up bound to this card, and for a physical card the
    /// code from its letter.
    pub async fn activate_card(
        &self,
        principal: &Principal,
        card_id: &CardId,
        activation_code: Option<&Secret<String>>,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<CardChange, PayError> {
        principal.can_move_money()?;
        let card = self.card(principal, card_id).await?;
        if card.status != "inactive" {
            return Err(PayError::Conflict(
                "this card is not waiting for activation",
            ));
        }
        self.check_activation_code(card_id, activation_code).await?;
        let action = SensitiveAction::ActivateCard {
            card_id: card_id.to_string(),
        };
        let session = self
            .pay
            .auth()
            .confirm_action(principal, &action, proof, client)
            .await?;
        let now = self.pay.now_ms();
        let mut tx = self.pay.db().begin().await?;
        let changed = tx
            .execute(
                "UPDATE issued_cards SET status = 'active', activated_at = $1, activation_hash = NULL \
                 WHERE id = $2 AND status = 'inactive'",
                params![now, card_id.as_str()],
            )
            .await?;
        if changed == 0 {
            return Err(PayError::Conflict(
                "this card is not waiting for activation",
            ));
        }
        self.card_audit(
            &mut tx,
            principal,
            "card.activated",
            &card,
            serde_json::json!({}),
            Some(Mail::new("card-activated").arg("masked", card.masked())),
        )
        .await?;
        tx.commit().await?;
        Ok(CardChange {
            card: self.card(principal, card_id).await?,
            session: Some(session),
        })
    }

    /// A physical card's activation code from its letter (a virtual card has none): at most
    /// `ACTIVATION_ATTEMPTS_MAX` wrong ones, each counted.
    async fn check_activation_code(
        &self,
        card_id: &CardId,
        activation_code: Option<&Secret<String>>,
    ) -> Result<(), PayError> {
        let mut tx = self.pay.db().begin_read().await?;
        let row = tx
            .query_one(
                "SELECT activation_hash, activation_attempts FROM issued_cards WHERE id = $1",
                params![card_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        let Some(expected) = row.opt_bytes(0)? else {
            return Ok(());
        };
        if row.i64(1)? >= ACTIVATION_ATTEMPTS_MAX {
            return Err(PayError::Gone(
                "too many wrong activation codes; close this card and order a new one",
            ));
        }
        let code = activation_code.ok_or(PayError::Invalid(
            "this card is activated with the code from its letter",
        ))?;
        if !constant_time_eq(
            &expected,
            &self.activation_hash(card_id, code.expose().trim()),
        ) {
            let mut tx = self.pay.db().begin().await?;
            tx.execute(
                "UPDATE issued_cards SET activation_attempts = activation_attempts + 1 WHERE id = $1",
                params![card_id.as_str()],
            )
            .await?;
            tx.commit().await?;
            return Err(PayError::Invalid("the activation code is not right"));
        }
        Ok(())
    }

    /// The full number, expiry and security code: step-up bound to "reveal card X", at most
    /// [`REVEALS_PER_HOUR_MAX`] an hour, recorded in the audit chain, and the holder is told.
    pub async fn reveal_card(
        &self,
        principal: &Principal,
        card_id: &CardId,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<RevealedCard, PayError> {
        principal.can_move_money()?;
        let keys = self.card_keys()?;
        let card = self.card(principal, card_id).await?;
        if principal.kind != UserKind::Customer || card.status == "closed" {
            return Err(PayError::NotFound);
        }
        let now = self.pay.now_ms();
        let hour = now.div_euclid(3_600_000);
        let mut tx = self.pay.db().begin_read().await?;
        let row = tx
            .query_one(
                "SELECT pan_sealed, key_id, reveal_hour, reveals FROM issued_cards WHERE id = $1",
                params![card_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        if row.i64(2)? == hour && row.i64(3)? >= REVEALS_PER_HOUR_MAX {
            return Err(PayError::Limit {
                code: "reveal_limit",
                detail: format!(
                    "a card's details can be shown at most {REVEALS_PER_HOUR_MAX} times an hour"
                ),
            });
        }
        let action = SensitiveAction::RevealCard {
            card_id: card_id.to_string(),
        };
        let session = self
            .pay
            .auth()
            .confirm_action(principal, &action, proof, client)
            .await?;
        let pan = keys
            .open_pan(card_id, &row.text(1)?, &row.bytes(0)?)
            .map_err(|_| PayError::Auth(AuthError::Internal("a card number does not open")))?;
        let security_code = keys.security_code(pan.expose(), card.exp_month, card.exp_year);
        let mut tx = self.pay.db().begin().await?;
        tx.execute(
            "UPDATE issued_cards SET reveals = CASE WHEN reveal_hour = $1 THEN reveals + 1 ELSE 1 END, \
             reveal_hour = $1 WHERE id = $2",
            params![hour, card_id.as_str()],
        )
        .await?;
        self.card_audit(
            &mut tx,
            principal,
            "card.revealed",
            &card,
            serde_json::json!({}),
            Some(Mail::new("card-shown").arg("masked", card.masked())),
        )
        .await?;
        tx.commit().await?;
        Ok(RevealedCard {
            card,
            pan,
            security_code,
            session,
        })
    }

    /// Freezes a card at once (no step-up: stopping a card must be quick).
    pub async fn freeze_card(
        &self,
        principal: &Principal,
        card_id: &CardId,
    ) -> Result<IssuedCard, PayError> {
        principal.full()?;
        let card = self.card(principal, card_id).await?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::NotFound);
        }
        let mut tx = self.pay.db().begin().await?;
        tx.execute(
            "UPDATE issued_cards SET frozen_by_holder = 1 WHERE id = $1",
            params![card_id.as_str()],
        )
        .await?;
        self.card_audit(
            &mut tx,
            principal,
            "card.frozen",
            &card,
            serde_json::json!({}),
            None,
        )
        .await?;
        tx.commit().await?;
        self.card(principal, card_id).await
    }

    /// Loosens or changes a card: unfreezing, unlocking after wrong codes, and new controls
    /// all need step-up bound to the card and to exactly what it will allow.
    pub async fn change_card(
        &self,
        principal: &Principal,
        card_id: &CardId,
        controls: Option<CardControls>,
        unfreeze: bool,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<CardChange, PayError> {
        principal.can_move_money()?;
        let card = self.card(principal, card_id).await?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::NotFound);
        }
        if card.status == "closed" {
            return Err(PayError::Gone("this card is closed"));
        }
        let controls = match controls {
            Some(controls) => controls.validate()?,
            None => card.controls.clone(),
        };
        let summary = format!(
            "{}{}",
            if unfreeze {
                "unfreeze and unlock; "
            } else {
                ""
            },
            controls.to_json()
        );
        let action = SensitiveAction::ChangeCardControls {
            card_id: card_id.to_string(),
            controls: summary,
        };
        let session = self
            .pay
            .auth()
            .confirm_action(principal, &action, proof, client)
            .await?;
        let mut tx = self.pay.db().begin().await?;
        tx.execute(
            "UPDATE issued_cards SET controls = $1, \
             frozen_by_holder = CASE WHEN $2 = 1 THEN 0 ELSE frozen_by_holder END, \
             bad_codes = CASE WHEN $2 = 1 THEN 0 ELSE bad_codes END WHERE id = $3",
            params![controls.to_json(), unfreeze, card_id.as_str()],
        )
        .await?;
        self.card_audit(
            &mut tx,
            principal,
            "card.controls_changed",
            &card,
            serde_json::json!({ "unfreeze": unfreeze, "controls": controls }),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(CardChange {
            card: self.card(principal, card_id).await?,
            session: Some(session),
        })
    }

    /// Closes a card for good. Open authorizations may still be captured or reversed.
    pub async fn close_card(
        &self,
        principal: &Principal,
        card_id: &CardId,
    ) -> Result<IssuedCard, PayError> {
        principal.full()?;
        let card = self.card(principal, card_id).await?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::NotFound);
        }
        let now = self.pay.now_ms();
        let mut tx = self.pay.db().begin().await?;
        tx.execute(
            "UPDATE issued_cards SET status = 'closed', closed_at = $1, activation_hash = NULL \
             WHERE id = $2 AND status <> 'closed'",
            params![now, card_id.as_str()],
        )
        .await?;
        self.card_audit(
            &mut tx,
            principal,
            "card.closed",
            &card,
            serde_json::json!({}),
            None,
        )
        .await?;
        tx.commit().await?;
        self.card(principal, card_id).await
    }

    /// An operator freezes or unfreezes a card (analysts, support); recorded with a reason.
    pub async fn operator_freeze_card(
        &self,
        principal: &Principal,
        card_id: &CardId,
        frozen: bool,
        reason: &str,
    ) -> Result<IssuedCard, PayError> {
        principal.operator(&[Role::Analyst, Role::Support])?;
        if reason.trim().is_empty() || reason.len() > 500 {
            return Err(PayError::Invalid("give a reason of at most 500 bytes"));
        }
        let card = self.card(principal, card_id).await?;
        let mut tx = self.pay.db().begin().await?;
        tx.execute(
            "UPDATE issued_cards SET frozen_by_operator = $1 WHERE id = $2",
            params![frozen, card_id.as_str()],
        )
        .await?;
        self.card_audit(
            &mut tx,
            principal,
            if frozen {
                "card.operator_frozen"
            } else {
                "card.operator_unfrozen"
            },
            &card,
            serde_json::json!({ "reason": reason.trim() }),
            None,
        )
        .await?;
        tx.commit().await?;
        self.card(principal, card_id).await
    }

    async fn card_audit<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        action: &str,
        card: &IssuedCard,
        mut details: serde_json::Value,
        notice: Option<Mail>,
    ) -> Result<(), PayError> {
        if let Some(mail) = notice {
            koban_shared::outbox::enqueue(
                tx,
                self.pay.auth().vault(),
                self.pay.now_ms(),
                &principal.email,
                &mail,
            )
            .await?;
        }
        details["card"] = serde_json::json!(card.id.as_str());
        details["masked"] = serde_json::json!(card.masked());
        audit::append(
            tx,
            self.pay.auth().audit_key(),
            self.pay.now_ms(),
            AuditEvent {
                actor: &principal.actor(),
                action,
                subject: &card.user_id,
                details,
            },
        )
        .await?;
        Ok(())
    }

    /// Re-seals every card number not under the active data key (`koban keys rotate`);
    /// returns how many were re-sealed. Every old key must still be configured.
    pub async fn reseal_cards(&self) -> Result<usize, PayError> {
        let keys = self.card_keys()?;
        let active = keys.active_id().to_owned();
        let mut done = 0;
        loop {
            let mut tx = self.pay.db().begin().await?;
            let rows = tx
                .query(
                    "SELECT id, key_id, pan_sealed FROM issued_cards WHERE key_id <> $1 AND key_id <> 'erased' LIMIT 200",
                    params![active.as_str()],
                )
                .await?;
            if rows.is_empty() {
                tx.commit().await?;
                return Ok(done);
            }
            for row in &rows {
                let id = row.text(0)?;
                let pan = keys
                    .open_pan(&id, &row.text(1)?, &row.bytes(2)?)
                    .map_err(|_| {
                        PayError::Auth(AuthError::Internal(
                            "a card number does not open with the configured keys",
                        ))
                    })?;
                let (key_id, sealed) = keys.seal_pan(&id, pan.expose()).map_err(|_| {
                    PayError::Auth(AuthError::Internal("sealing a card number failed"))
                })?;
                tx.execute(
                    "UPDATE issued_cards SET key_id = $1, pan_sealed = $2 WHERE id = $3",
                    params![key_id.as_str(), sealed, id.as_str()],
                )
                .await?;
                done += 1;
            }
            tx.commit().await?;
        }
    }

    /// Key ids that cards are sealed under but the configured keys lack (checked at start).
    pub async fn missing_card_keys(&self) -> Result<Vec<String>, PayError> {
        let mut tx = self.pay.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT DISTINCT key_id FROM issued_cards WHERE key_id <> 'erased'",
                vec![],
            )
            .await?;
        tx.commit().await?;
        let mut missing = Vec::new();
        for row in rows {
            let id = row.text(0)?;
            if self.keys.as_ref().is_none_or(|keys| !keys.has_key(&id)) {
                missing.push(id);
            }
        }
        Ok(missing)
    }
}

const fn const_format_card_select() -> &'static str {
    "SELECT id, user_id, currency, bin, last4, exp_month, exp_year, name, physical, status, \
     frozen_by_holder, frozen_by_operator, bad_codes, controls, created_at, activated_at \
     FROM issued_cards WHERE id = $1"
}

/// Refuses a new card to a customer who already holds the most open cards allowed.
async fn room_for_a_card<T: SqlTx>(tx: &mut T, user_id: &UserId) -> Result<(), PayError> {
    let open = tx
        .query_one(
            "SELECT COUNT(*) FROM issued_cards WHERE user_id = $1 AND status <> 'closed'",
            params![user_id.as_str()],
        )
        .await?
        .i64(0)?;
    if open >= CARDS_PER_CUSTOMER_MAX {
        return Err(PayError::Limit {
            code: "card_limit",
            detail: format!("at most {CARDS_PER_CUSTOMER_MAX} open cards; close one first"),
        });
    }
    Ok(())
}

/// Tells the holder of a new card, in `tx`: the card's masked number and, for a physical
/// card, the activation code in a separate letter (the sandbox's post), never beside the
/// card details.
async fn tell_card_issued<T: SqlTx>(
    tx: &mut T,
    vault: &koban_shared::personal::Vault,
    now: i64,
    email: &str,
    name: &str,
    masked: &str,
    activation: Option<&Secret<String>>,
) -> Result<(), PayError> {
    let mail = Mail::new("card-issued")
        .arg("name", name)
        .arg("masked", masked);
    koban_shared::outbox::enqueue(tx, vault, now, email, &mail).await?;
    if let Some(code) = activation {
        let mail = Mail::new("card-activation-letter")
            .arg("masked", masked)
            .arg("code", code.expose());
        koban_shared::outbox::enqueue(tx, vault, now, email, &mail).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_numbers_pass_luhn_and_keep_the_bin() {
        for _ in 0..200 {
            let pan = new_pan("499910");
            assert_eq!(pan.len(), 16);
            assert!(pan.starts_with("499910"));
            assert!(luhn_valid(&pan), "{pan}");
        }
        assert!(luhn_valid("4242424242424242"));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("42a2"));
    }

    #[test]
    fn controls_are_validated_and_normalised() {
        let mut controls = CardControls {
            blocked_mccs: vec!["7995".into(), "7995".into()],
            allowed_countries: Some(vec!["jp".into()]),
            ..CardControls::default()
        };
        let ok = controls.clone().validate().unwrap();
        assert_eq!(ok.blocked_mccs, vec!["7995"]);
        assert_eq!(ok.allowed_countries, Some(vec!["JP".to_owned()]));
        controls.blocked_mccs = vec!["79".into()];
        assert!(controls.clone().validate().is_err());
        controls.blocked_mccs = vec![];
        controls.per_transaction_max = Some(0);
        assert!(controls.validate().is_err());
    }
}
