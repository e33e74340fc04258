//! Merchant payments in both directions used by QR payment services, with fees and refunds.
//!
//! - **Merchant-presented**: the merchant (API key) creates a payment request; Koban returns a
//!   signed QR payload (`crate::qr`) the customer's app submits, inspects (merchant name and
//!   amount) and pays.
//! - **Customer-presented**: the customer's app shows a one-time 18-digit code (also as QR
//!   `KBC1.<code>`), valid 60 seconds, bound to the wallet and session; the merchant's POS
//!   charges it once, up to the per-code limit.
//!
//! A payment and its fee are one atomic batch: the whole amount from the wallet to the
//! merchant, the fee from the merchant to fee revenue, and the e-money memo leg.

use koban_auth::apikeys::MerchantKey;
use koban_auth::secret::HashPurpose;
use koban_auth::throttle;
use koban_auth::{AuthError, Client, IssuedSession, Principal, StepUpProof, UserKind};
use koban_ledger::{
    Account, AccountId, Amount, Currency, Metadata, Move, RejectReason, Transfer, TransferId,
    TransferRequest,
};
use koban_shared::ids::UserId;
use koban_shared::mail::Mail;
use koban_shared::personal;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use koban_store::{LedgerStore, params};

use crate::accounts::{IssuerAccount, kind};
use crate::qr::{RequestPayload, code_digits};
use crate::risk::{EventKind, Parties};
use crate::wallets::{Tier, emoney_leg};
use crate::{IdempotencyKey, PayError, Payments, format_money};

/// Customer-presented codes start with these digits (a range reserved for Koban on barcodes).
const CODE_PREFIX: &str = "89";
pub const REFERENCE_BYTES_MAX: usize = 64;

/// A merchant's payment request.
#[derive(Clone, Debug)]
pub struct PaymentRequest {
    pub id: String,
    pub merchant_id: UserId,
    pub merchant_name: String,
    pub amount: Amount,
    pub currency: Currency,
    pub reference: String,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
    /// `open`, `paid` or `expired`.
    pub status: &'static str,
    pub qr_payload: String,
    /// The payment, once paid.
    pub payment: Option<TransferId>,
}

/// A completed merchant payment (or its replay).
#[derive(Debug)]
pub struct MerchantPayment {
    pub transfer: Transfer,
    pub fee: u64,
    /// The payer as this merchant knows them ([`Payments::customer_pseudonym`]).
    pub customer: String,
    pub merchant_name: String,
    pub replayed: bool,
    pub session: Option<IssuedSession>,
}

/// A customer-presented code as shown to its owner (the code itself only when created).
#[derive(Clone, Debug)]
pub struct PaymentCode {
    pub id: String,
    pub code: Option<String>,
    pub currency: Currency,
    pub limit_minor: u64,
    pub expires_at_ms: i64,
}

/// A refund.
#[derive(Debug)]
pub struct Refund {
    pub transfer: Transfer,
    pub payment: TransferId,
    pub refunded_total: u64,
    pub replayed: bool,
}

/// A payment the merchant received, as its dashboard lists it.
#[derive(Clone, Debug)]
pub struct ReceivedPayment {
    pub id: TransferId,
    /// The payer as this merchant knows them (`None` for a payer whose wallet is gone).
    pub customer: Option<String>,
    pub amount: Amount,
    pub currency: Currency,
    /// How much of it has been refunded (or is being refunded) so far, in minor units.
    pub refunded_minor: u64,
    pub created_at_ms: i64,
}

fn stored_currency(text: &str) -> Result<Currency, PayError> {
    Currency::parse(text).map_err(|_| PayError::Invalid("a stored currency is not valid"))
}

pub fn transfer_id_text(id: TransferId) -> String {
    uuid::Uuid::from_u128(id.get()).to_string()
}

/// A transfer's id as this server writes it: a UUID in its hyphenated form.
pub fn parse_transfer_id(text: &str) -> Result<TransferId, PayError> {
    Some(text)
        .filter(|text| text.len() == 36)
        .and_then(|text| uuid::Uuid::parse_str(text).ok())
        .and_then(|u| TransferId::new(u.as_u128()).ok())
        .ok_or(PayError::Invalid("not a valid id"))
}

impl<S: LedgerStore> Payments<S> {
    fn qr_payload(
        &self,
        id: &str,
        amount: Amount,
        currency: Currency,
        expires_at_ms: i64,
    ) -> String {
        RequestPayload {
            id: uuid::Uuid::parse_str(id)
                .map(|u| *u.as_bytes())
                .unwrap_or([0; 16]),
            amount,
            currency,
            expires_s: expires_at_ms / 1000,
        }
        .encode(self.auth.keys())
    }

    /// Checks a payload's signature; returns the request id it names.
    fn verify_payload(&self, payload: &str) -> Result<String, PayError> {
        let payload = RequestPayload::decode(self.auth.keys(), payload)?;
        Ok(uuid::Uuid::from_bytes(payload.id).to_string())
    }

    /// The fee on `amount`: `bps` basis points of it plus `fixed`. The merchant never pays
    /// more in fees than it received, so a fee at or above the amount is the amount.
    pub(crate) fn fee(&self, amount: Amount, bps: u64, fixed: u64) -> u64 {
        let amount = amount.minor_units();
        crate::basis_points(amount, bps)
            .checked_add(fixed)
            .map_or(amount, |fee| fee.min(amount))
    }

    pub(crate) async fn merchant_terms(
        &self,
        merchant_id: &str,
    ) -> Result<(String, u64, u64), PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT u.display_name, m.fee_bps, m.fee_fixed_minor FROM users u \
                 LEFT JOIN merchants m ON m.user_id = u.id WHERE u.id = $1 AND u.kind = 'merchant'",
                params![merchant_id],
            )
            .await?
            .ok_or(PayError::NotFound)?;
        tx.commit().await?;
        Ok((
            (self.auth.vault()).open(&personal::USER_DISPLAY_NAME, &row.text(0)?)?,
            row.opt_i64(1)?
                .map_or(Ok(self.config.fee_bps), crate::stored_minor)?,
            row.opt_i64(2)?
                .map_or(Ok(self.config.fee_fixed_minor), crate::stored_minor)?,
        ))
    }

    /// Sets a merchant's fee (admin).
    pub async fn set_merchant_fee(
        &self,
        principal: &Principal,
        merchant_id: &UserId,
        bps: u64,
        fixed_minor: u64,
    ) -> Result<(), PayError> {
        principal.operator(&[])?;
        if bps > 10_000 || fixed_minor > 1_000_000_000 {
            return Err(PayError::Invalid(
                "fee_bps is at most 10000 and the fixed fee at most 1e9",
            ));
        }
        self.merchant_terms(merchant_id).await?;
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO merchants (user_id, fee_bps, fee_fixed_minor, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id) DO UPDATE SET fee_bps = $2, fee_fixed_minor = $3, updated_at = $4",
            params![
                merchant_id,
                crate::minor_to_i64(bps)?,
                crate::minor_to_i64(fixed_minor)?,
                now
            ],
        )
        .await?;
        koban_shared::audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            koban_shared::audit::AuditEvent {
                actor: &principal.actor(),
                action: "merchant.fee_set",
                subject: merchant_id,
                details: serde_json::json!({ "fee_bps": bps, "fee_fixed_minor": fixed_minor }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) fn require_scope(
        merchant: &MerchantKey,
        scope: &'static str,
    ) -> Result<(), PayError> {
        if merchant.scopes.contains(scope) {
            Ok(())
        } else {
            Err(PayError::Auth(AuthError::Forbidden(
                "this API key lacks the scope this needs",
            )))
        }
    }

    async fn request_by_id(&self, id: &str) -> Result<PaymentRequest, PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT merchant_id, amount, currency, reference, expires_at, created_at \
                 FROM payment_requests WHERE id = $1",
                params![id],
            )
            .await?
            .ok_or(PayError::NotFound)?;
        tx.commit().await?;
        let merchant_id = UserId::from_stored(row.text(0)?);
        let (merchant_name, _, _) = self.merchant_terms(&merchant_id).await?;
        let amount =
            Amount::from_i64(row.i64(1)?).map_err(|_| PayError::Invalid("stored amount"))?;
        let currency = stored_currency(&row.text(2)?)?;
        let expires_at_ms = row.i64(4)?;
        let payment_id = self.derive_id(&[b"qr-pay", id.as_bytes()]);
        let paid = self.store.transfer(payment_id).await?.is_some();
        Ok(PaymentRequest {
            id: id.to_owned(),
            merchant_id,
            merchant_name,
            amount,
            currency,
            reference: row.text(3)?,
            expires_at_ms,
            created_at_ms: row.i64(5)?,
            status: if paid {
                "paid"
            } else if expires_at_ms <= self.now_ms() {
                "expired"
            } else {
                "open"
            },
            qr_payload: self.qr_payload(id, amount, currency, expires_at_ms),
            payment: paid.then_some(payment_id),
        })
    }

    /// A merchant asks to be paid: returns the request and its signed QR payload.
    pub async fn create_payment_request(
        &self,
        merchant: &MerchantKey,
        amount: Amount,
        currency: Currency,
        reference: &str,
        expires_in_s: i64,
        key: &IdempotencyKey,
    ) -> Result<PaymentRequest, PayError> {
        Self::require_scope(merchant, "payments:write")?;
        check_reference(reference)?;
        if expires_in_s < 30 || expires_in_s > self.config.request_s_max {
            return Err(PayError::Invalid(
                "expires_in_s must be between 30 and 86400",
            ));
        }
        let derived = self.derive_id(&[
            b"request",
            merchant.merchant_id.as_bytes(),
            key.as_str().as_bytes(),
        ]);
        let id = uuid::Uuid::from_u128(derived.get()).to_string();
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO payment_requests (id, merchant_id, amount, currency, reference, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            params![
                id.as_str(),
                merchant.merchant_id.as_str(),
                amount.to_i64(),
                currency.code(),
                reference,
                now + expires_in_s * 1000,
                now
            ],
        )
        .await?;
        tx.commit().await?;
        let request = self.request_by_id(&id).await?;
        if request.merchant_id != merchant.merchant_id
            || request.amount != amount
            || request.currency != currency
            || request.reference != reference
        {
            return Err(PayError::IdempotencyMismatch);
        }
        Ok(request)
    }

    /// A merchant reads one of its requests.
    pub async fn merchant_request(
        &self,
        merchant: &MerchantKey,
        id: &str,
    ) -> Result<PaymentRequest, PayError> {
        Self::require_scope(merchant, "payments:read")?;
        let request = self.request_by_id(id).await?;
        if request.merchant_id != merchant.merchant_id {
            return Err(PayError::NotFound);
        }
        Ok(request)
    }

    /// The customer's app reads a scanned payload: who is asking for how much.
    pub async fn inspect_qr(
        &self,
        principal: &Principal,
        payload: &str,
    ) -> Result<PaymentRequest, PayError> {
        principal.can_move_money()?;
        let id = self.verify_payload(payload)?;
        self.request_by_id(&id).await
    }

    /// The customer pays a scanned payment request.
    pub async fn pay_qr(
        &self,
        principal: &Principal,
        payload: &str,
        key: &IdempotencyKey,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<MerchantPayment, PayError> {
        principal.can_move_money()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("only customers pay merchants"));
        }
        let request_id = self.verify_payload(payload)?;
        let request = self.request_by_id(&request_id).await?;
        let payment_id = self.derive_id(&[b"qr-pay", request_id.as_bytes()]);
        let memo_id = self.derive_id(&[
            b"qr-memo",
            principal.user_id.as_bytes(),
            key.as_str().as_bytes(),
        ]);
        let _claim = self.claim(memo_id).await?;
        if let Some(memo) = self.store.transfer(memo_id).await? {
            let (_, bps, fixed) = self.merchant_terms(&request.merchant_id).await?;
            let payment = self
                .replayed_payment(
                    &memo,
                    payment_id,
                    None,
                    (
                        request.merchant_name.clone(),
                        self.customer_pseudonym(&request.merchant_id, &principal.user_id),
                    ),
                    (bps, fixed),
                )
                .await?;
            // What the first attempt wrote after the ledger's commit, in case it died there.
            if self.may_recover(&payment.transfer) {
                self.record_capture(
                    &request.merchant_id,
                    &principal.user_id,
                    &payment.transfer,
                    payment.fee,
                )
                .await?;
                let parties = qr_parties(principal, client, payment_id, &request);
                self.recover_decision(
                    EventKind::MerchantPayment,
                    &parties,
                    &payment.transfer,
                    koban_risk::Action::Allow,
                )
                .await?;
                self.tell_paid(principal, &payment.transfer, &payment.merchant_name);
                self.make_durable().await?;
            }
            return Ok(payment);
        }
        match request.status {
            "paid" => return Err(PayError::Conflict("this payment request is already paid")),
            "expired" => return Err(PayError::Gone("this payment request has expired")),
            _ => {}
        }
        let wallet = self.wallet(&principal.user_id, request.currency).await?;
        let merchant_wallet = self.wallet(&request.merchant_id, request.currency).await?;
        let lock = self.lock_wallet(wallet.account).await?;
        self.still_signed_in(principal).await?;
        let account = self.ledger_account(wallet.account).await?;
        let amount = request.amount;
        if !account.balance.covers(amount) {
            return Err(PayError::InsufficientFunds);
        }
        let session = self
            .assess_qr_payment(principal, &request, &account, payment_id, proof, client)
            .await?;
        let (transfer, fee) = self
            .capture_request(
                &request,
                payment_id,
                memo_id,
                (&principal.user_id, wallet.account),
                merchant_wallet.account,
            )
            .await?;
        drop(lock);
        self.tell_paid(principal, &transfer, &request.merchant_name);
        self.make_durable().await?;
        Ok(MerchantPayment {
            customer: self.customer_pseudonym(&request.merchant_id, &principal.user_id),
            transfer,
            fee,
            merchant_name: request.merchant_name,
            replayed: false,
            session,
        })
    }

    /// Tells the holder of a payment code that a store charged it.
    fn tell_code_paid(&self, email: &str, transfer: &Transfer, merchant_name: &str) {
        self.notify(
            transfer.id,
            email,
            Mail::new("merchant-paid-code")
                .arg(
                    "amount",
                    format_money(transfer.amount.minor_units(), transfer.currency),
                )
                .arg("merchant", merchant_name),
        );
    }

    /// Tells the payer that a store's request was paid.
    fn tell_paid(&self, principal: &Principal, transfer: &Transfer, merchant_name: &str) {
        self.notify(
            transfer.id,
            &principal.email,
            Mail::new("merchant-paid")
                .arg(
                    "amount",
                    format_money(transfer.amount.minor_units(), transfer.currency),
                )
                .arg("merchant", merchant_name),
        );
    }

    /// The risk decision on paying a store's request and, when the rules ask for it, the
    /// payer's step-up; answers the session a step-up rotated to.
    async fn assess_qr_payment(
        &self,
        principal: &Principal,
        request: &PaymentRequest,
        account: &Account,
        payment_id: TransferId,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<Option<IssuedSession>, PayError> {
        let amount = request.amount;
        let event = self
            .outgoing_context(principal, EventKind::MerchantPayment, account, amount)
            .await?;
        let parties = qr_parties(principal, client, payment_id, request);
        // A hold cannot wait at a till: it declines like a denial.
        if self
            .assess(&event, &parties)
            .await?
            .without_review("your")?
        {
            let payee = format!("merchant {}", request.merchant_name);
            Ok(Some(
                self.confirm_payment(
                    principal,
                    amount.to_i64(),
                    request.currency,
                    payee,
                    proof,
                    client,
                )
                .await?,
            ))
        } else {
            Ok(None)
        }
    }

    /// Captures a payment request: the payment of its amount to its merchant, tagged with the
    /// request and its reference. A memo that names another payment means the request was
    /// paid by someone else's attempt.
    async fn capture_request(
        &self,
        request: &PaymentRequest,
        payment_id: TransferId,
        memo_id: TransferId,
        payer: (&UserId, AccountId),
        merchant_account: AccountId,
    ) -> Result<(Transfer, u64), PayError> {
        let metadata = Metadata::parse([
            ("request", request.id.as_str()),
            ("reference", request.reference.as_str()),
        ])
        .unwrap_or_default();
        self.capture(
            payment_id,
            memo_id,
            payer,
            merchant_account,
            &request.merchant_id,
            request.amount,
            request.currency,
            metadata,
        )
        .await
        .map_err(|e| match e {
            PayError::IdempotencyMismatch => {
                PayError::Conflict("this payment request is already paid")
            }
            other => other,
        })
    }

    /// Moves a payment and its fee in one batch and records it for refunds.
    #[allow(clippy::too_many_arguments)]
    async fn capture(
        &self,
        payment_id: TransferId,
        memo_id: TransferId,
        (payer_user, payer): (&UserId, AccountId),
        merchant_account: AccountId,
        merchant_id: &str,
        amount: Amount,
        currency: Currency,
        metadata: Metadata,
    ) -> Result<(Transfer, u64), PayError> {
        let (_, bps, fixed) = self.merchant_terms(merchant_id).await?;
        let fee = self.fee(amount, bps, fixed);
        let batch = self.payment_batch(
            (payment_id, memo_id),
            (payer, merchant_account),
            amount,
            currency,
            metadata,
            fee,
        );
        let applied = self.submit_batch(batch).await?;
        let transfer = applied.transfers[0].clone();
        self.record_capture(merchant_id, payer_user, &transfer, fee)
            .await?;
        Ok((transfer, fee))
    }

    /// Records a captured payment for refunds and tells the merchant's endpoints; written
    /// again by a retry that finds the payment in the ledger (the first attempt may have died
    /// before this), which adds nothing when it was written.
    async fn record_capture(
        &self,
        merchant_id: &str,
        payer_user: &UserId,
        transfer: &Transfer,
        fee: u64,
    ) -> Result<(), PayError> {
        let (payment_id, payer, amount, currency) = (
            transfer.id,
            transfer.debit,
            transfer.amount,
            transfer.currency,
        );
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO merchant_payments (transfer_id, merchant_id, payer_account, amount, currency, refunded, created_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT (transfer_id) DO NOTHING",
            params![
                payment_id.to_bytes(),
                merchant_id,
                payer.to_bytes(),
                amount.to_i64(),
                currency.code(),
                self.now_ms()
            ],
        )
        .await?;
        self.enqueue_event(
            &mut tx,
            merchant_id,
            payment_id,
            "payment.succeeded",
            serde_json::json!({
                "payment_id": transfer_id_text(payment_id),
                "customer": self.customer_pseudonym(merchant_id, payer_user),
                "amount": amount.minor_units(),
                "currency": currency.code(),
                "fee": fee,
                "reference": transfer.metadata.iter().find(|(k, _)| *k == "reference").map(|(_, v)| v),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The batch of a merchant payment: the payment, the merchant's fee (when there is one)
    /// to the issuer's revenue, and the e-money leg.
    fn payment_batch(
        &self,
        (payment_id, memo_id): (TransferId, TransferId),
        (payer, merchant_account): (AccountId, AccountId),
        amount: Amount,
        currency: Currency,
        metadata: Metadata,
        fee: u64,
    ) -> Vec<TransferRequest> {
        let mut batch = vec![TransferRequest::Move(Move {
            id: payment_id,
            debit: payer,
            credit: merchant_account,
            amount,
            currency,
            code: kind::MERCHANT_PAYMENT,
            reference: None,
            metadata,
            pending: None,
        })];
        if let Ok(fee_amount) = Amount::new(fee) {
            batch.push(TransferRequest::Move(Move {
                id: self.derive_id(&[b"fee", &payment_id.to_bytes()]),
                debit: merchant_account,
                credit: IssuerAccount::FeeRevenue.id(currency),
                amount: fee_amount,
                currency,
                code: kind::FEE,
                reference: Some(payment_id),
                metadata: Metadata::empty(),
                pending: None,
            }));
        }
        batch.push(emoney_leg(
            memo_id,
            currency,
            amount,
            false,
            Some(payment_id),
            None,
        ));
        batch
    }

    fn code_hash(&self, code: &str) -> [u8; 32] {
        self.auth
            .keys()
            .hash(HashPurpose::Payment, &[b"payment-code", code.as_bytes()])
    }

    /// A one-time code for the customer to show at a till.
    /// Without `limit`, a code allows just under the step-up threshold and needs no step-up;
    /// a larger limit (up to `code_limit_minor`) is confirmed with step-up first, since the
    /// till cannot ask for one.
    pub async fn create_payment_code(
        &self,
        principal: &Principal,
        currency: Currency,
        limit: Option<u64>,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<(PaymentCode, Option<IssuedSession>), PayError> {
        principal.can_move_money()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("only customers show payment codes"));
        }
        let below_step_up = self.config.step_up_from_minor.saturating_sub(1);
        let limit = self.code_limit(limit, currency)?;
        self.wallet(&principal.user_id, currency).await?;
        let session = if limit > below_step_up {
            let payee = "any merchant, by one payment code".to_owned();
            let limit = crate::minor_to_i64(limit)?;
            Some(
                self.confirm_payment(principal, limit, currency, payee, proof, client)
                    .await?,
            )
        } else {
            None
        };
        let code = format!(
            "{CODE_PREFIX}{}",
            koban_auth::secret::random_digits(16).expose()
        );
        let id = koban_shared::new_id();
        let now = self.now_ms();
        let expires_at_ms = now + self.config.code_s * 1000;
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO payment_codes (id, code_hash, user_id, session_id, currency, limit_minor, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            params![
                id.as_str(),
                self.code_hash(&code),
                principal.user_id.as_str(),
                // The code belongs to the session the customer holds now: a step-up that
                // confirmed a larger limit rotated the one they asked with.
                session
                    .as_ref()
                    .map_or(principal.session_id.as_str(), |s| s.session_id.as_str()),
                currency.code(),
                crate::minor_to_i64(limit)?,
                expires_at_ms,
                now
            ],
        )
        .await?;
        tx.commit().await?;
        Ok((
            PaymentCode {
                id,
                code: Some(code),
                currency,
                limit_minor: limit,
                expires_at_ms,
            },
            session,
        ))
    }

    /// The most a new payment code may be charged: as asked, or by default just below the
    /// step-up amount; between 1 and the configured cap.
    fn code_limit(&self, limit: Option<u64>, currency: Currency) -> Result<u64, PayError> {
        let below_step_up = self.config.step_up_from_minor.saturating_sub(1);
        let limit = limit.unwrap_or(below_step_up.min(self.config.code_limit_minor));
        if limit == 0 || limit > self.config.code_limit_minor {
            return Err(PayError::Limit {
                code: "code_limit",
                detail: format!(
                    "a payment code allows between 1 and {}",
                    format_money(self.config.code_limit_minor, currency)
                ),
            });
        }
        Ok(limit)
    }

    /// One of the caller's payment codes: `live`, `used`, `revoked` or `expired`, and when
    /// it was used.
    pub async fn payment_code_state(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(&'static str, Option<i64>), PayError> {
        principal.full()?;
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT used_at, revoked_at, expires_at FROM payment_codes WHERE id = $1 AND user_id = $2",
                params![id, principal.user_id.as_str()],
            )
            .await?
            .ok_or(PayError::NotFound)?;
        tx.commit().await?;
        let used = row.opt_i64(0)?;
        let state = if used.is_some() {
            "used"
        } else if row.opt_i64(1)?.is_some() {
            "revoked"
        } else if row.i64(2)? <= self.now_ms() {
            "expired"
        } else {
            "live"
        };
        Ok((state, used))
    }

    /// The caller's codes that can still be charged.
    pub async fn live_payment_codes(
        &self,
        principal: &Principal,
    ) -> Result<Vec<PaymentCode>, PayError> {
        principal.full()?;
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT id, currency, limit_minor, expires_at FROM payment_codes WHERE user_id = $1 \
                 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC",
                params![principal.user_id.as_str(), self.now_ms()],
            )
            .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| {
                Ok(PaymentCode {
                    id: r.text(0)?,
                    code: None,
                    currency: stored_currency(&r.text(1)?)?,
                    limit_minor: crate::stored_minor(r.i64(2)?)?,
                    expires_at_ms: r.i64(3)?,
                })
            })
            .collect()
    }

    pub async fn revoke_payment_code(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(), PayError> {
        principal.full()?;
        let mut tx = self.db().begin().await?;
        let changed = tx
            .execute(
                "UPDATE payment_codes SET revoked_at = $1 WHERE id = $2 AND user_id = $3 \
                 AND used_at IS NULL AND revoked_at IS NULL",
                params![self.now_ms(), id, principal.user_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        if changed == 0 {
            return Err(PayError::NotFound);
        }
        Ok(())
    }

    /// The merchant's POS charges a customer-presented code (or its QR form). Wrong codes are
    /// counted per merchant key and per network: past [`PayConfig::code_guesses_max`] (or the
    /// network's maximum) within the window, charges are refused until it ends, and each wrong
    /// code is scored, so guessing raises an alert.
    ///
    /// [`PayConfig::code_guesses_max`]: crate::PayConfig::code_guesses_max
    #[allow(clippy::too_many_arguments)]
    pub async fn charge_code(
        &self,
        merchant: &MerchantKey,
        code: &str,
        amount: Amount,
        currency: Currency,
        reference: &str,
        key: &IdempotencyKey,
        client: Option<&Client>,
    ) -> Result<MerchantPayment, PayError> {
        Self::require_scope(merchant, "payments:write")?;
        check_reference(reference)?;
        let guard = CodeGuard::new(self, merchant, client);
        let memo_id = self.derive_id(&[
            b"charge-memo",
            merchant.merchant_id.as_bytes(),
            key.as_str().as_bytes(),
        ]);
        let _claim = self.claim(memo_id).await?;
        let now = self.now_ms();
        let row = self.code_or_guessed(code, now, &guard, currency).await?;
        let code_id = row.text(0)?;
        let payment_id = self.derive_id(&[b"code-pay", code_id.as_bytes()]);
        let (merchant_name, bps, fixed) = self.merchant_terms(&merchant.merchant_id).await?;
        if let Some(memo) = self.store.transfer(memo_id).await? {
            let customer =
                self.customer_pseudonym(&merchant.merchant_id, &UserId::from_stored(row.text(1)?));
            let payment = self
                .replayed_payment(
                    &memo,
                    payment_id,
                    Some(amount),
                    (merchant_name, customer),
                    (bps, fixed),
                )
                .await?;
            if self.may_recover(&payment.transfer) {
                // What the first attempt wrote after the ledger's commit, in case it died there.
                let customer = UserId::from_stored(row.text(1)?);
                self.record_capture(
                    &merchant.merchant_id,
                    &customer,
                    &payment.transfer,
                    payment.fee,
                )
                .await?;
                let parties = code_parties(&customer, payment_id, merchant, currency);
                self.recover_decision(
                    EventKind::CodeCharge,
                    &parties,
                    &payment.transfer,
                    koban_risk::Action::Allow,
                )
                .await?;
                let email = (self.auth.vault()).open(&personal::USER_EMAIL, &row.text(8)?)?;
                self.tell_code_paid(&email, &payment.transfer, &payment.merchant_name);
                self.make_durable().await?;
            }
            return Ok(payment);
        }
        let user_id = UserId::from_stored(row.text(1)?);
        if !code_usable(&row, now)? {
            return Err(code_unusable());
        }
        code_covers(&row, amount, currency)?;
        if !self.claim_code(&code_id, now).await? {
            return Err(code_unusable());
        }
        let result = self
            .charge_claimed(
                &user_id,
                row.opt_i64(10)?,
                merchant,
                payment_id,
                memo_id,
                amount,
                currency,
                reference,
            )
            .await;
        if result.is_err() && self.store.transfer(payment_id).await?.is_none() {
            // A refusal (funds, limits) leaves the code usable for a smaller amount; a payment
            // that went through (and failed only afterwards) leaves it used.
            self.release_code(&code_id).await?;
        }
        let (transfer, fee) = result?;
        let email = (self.auth.vault()).open(&personal::USER_EMAIL, &row.text(8)?)?;
        self.tell_code_paid(&email, &transfer, &merchant_name);
        self.make_durable().await?;
        Ok(MerchantPayment {
            customer: self.customer_pseudonym(&merchant.merchant_id, &user_id),
            transfer,
            fee,
            merchant_name,
            replayed: false,
            session: None,
        })
    }

    /// The stored row of a code as typed, guarded against guessing: the charge is counted
    /// against the merchant key, the merchant and the network (refused, 429, while any of them
    /// guessed too many wrong codes), the code is looked up, and a code that is known gives the
    /// attempt back, all in one transaction, so the counters' rows stay locked meanwhile
    /// (PostgreSQL; SQLite has one writer): parallel charges can neither slip past the limit
    /// nor, while in flight, count as wrong codes and block a busy till. A code that is not
    /// known (or is not a code) stays counted and is scored as a wrong guess.
    async fn code_or_guessed(
        &self,
        code: &str,
        now: i64,
        guard: &CodeGuard,
        currency: Currency,
    ) -> Result<koban_store::sql::Row, PayError> {
        let window_ms = CODE_GUESS_WINDOW_S * 1000;
        let maxima = [
            self.config.code_guesses_max,
            self.config.code_guesses_merchant_max,
            self.config.code_guesses_network_max,
        ];
        let mut tx = self.db().begin().await?;
        for (key, max) in guard.keys.iter().zip(maxima) {
            if let Err(refused) =
                throttle::take_guess(&mut tx, now, key, window_ms, max, "payment_code").await
            {
                // The block is kept; the count of this refused attempt is too.
                tx.commit().await?;
                tracing::warn!(
                    merchant = %guard.merchant,
                    "payment codes: too many wrong codes; charges refused for a while"
                );
                return Err(refused.into());
            }
        }
        let found = match code_digits(code) {
            Ok(code) => self.find_code_in(&mut tx, code, now).await?,
            Err(_) => None,
        };
        if found.is_some() {
            for key in &guard.keys {
                throttle::forgive(&mut tx, key).await?;
            }
        }
        tx.commit().await?;
        match found {
            Some(row) => Ok(row),
            None => Err(self.code_guessed(guard, currency).await?),
        }
    }

    /// Scores a wrong code (already counted against the till) as a failed code charge with
    /// the merchant as payee; answers the refusal to give, the same as for any code that
    /// cannot be charged.
    async fn code_guessed(
        &self,
        guard: &CodeGuard,
        currency: Currency,
    ) -> Result<PayError, PayError> {
        let mut event = self.risk_event(Tier::Unverified, None, EventKind::CodeCharge, None, 0);
        event.step_up_from = u64::MAX;
        event.daily_out_max = u64::MAX;
        let parties = Parties {
            payee: Some(guard.merchant.to_string()),
            currency: currency.code().to_owned(),
            failed: true,
            ..Parties::of("", guard.client.as_ref())
        };
        self.assess(&event, &parties).await?;
        Ok(code_unusable())
    }

    /// Marks a payment code used; false when it already was (or was revoked): one charge only,
    /// even with two tills racing.
    async fn claim_code(&self, code_id: &str, now: i64) -> Result<bool, PayError> {
        let mut tx = self.db().begin().await?;
        let claimed = tx
            .execute(
                "UPDATE payment_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
                params![now, code_id],
            )
            .await?;
        tx.commit().await?;
        Ok(claimed > 0)
    }

    /// Makes a claimed code usable again after a charge that moved no money.
    async fn release_code(&self, code_id: &str) -> Result<(), PayError> {
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE payment_codes SET used_at = NULL WHERE id = $1",
            params![code_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The answer to a retried payment, found by its memo leg: the payment it made (refused
    /// when the retry names another payment, or another amount where the caller gives one).
    async fn replayed_payment(
        &self,
        memo: &Transfer,
        payment_id: TransferId,
        amount: Option<Amount>,
        (merchant_name, customer): (String, String),
        (bps, fixed): (u64, u64),
    ) -> Result<MerchantPayment, PayError> {
        if memo.reference != Some(payment_id) || amount.is_some_and(|a| memo.amount != a) {
            return Err(PayError::IdempotencyMismatch);
        }
        let transfer = self
            .store
            .transfer(payment_id)
            .await?
            .ok_or(PayError::NotFound)?;
        Ok(MerchantPayment {
            fee: self.fee(transfer.amount, bps, fixed),
            customer,
            transfer,
            merchant_name,
            replayed: true,
            session: None,
        })
    }

    /// A payment code by its hash, with its holder and whether the session that made it is
    /// still live.
    async fn find_code_in<T: SqlTx>(
        &self,
        tx: &mut T,
        code: &str,
        now: i64,
    ) -> Result<Option<koban_store::sql::Row>, PayError> {
        let row = tx
            .query_opt(
                "SELECT c.id, c.user_id, c.currency, c.limit_minor, c.expires_at, c.used_at, c.revoked_at, \
                 (SELECT COUNT(*) FROM sessions s WHERE s.id = c.session_id AND s.revoked_at IS NULL AND s.expires_at > $1), \
                 u.email, u.status, u.cooling_off_until \
                 FROM payment_codes c JOIN users u ON u.id = c.user_id WHERE c.code_hash = $2",
                params![now, self.code_hash(code)],
            )
            .await?;
        Ok(row)
    }

    #[allow(clippy::too_many_arguments)]
    async fn charge_claimed(
        &self,
        user_id: &UserId,
        cooling_off_until: Option<i64>,
        merchant: &MerchantKey,
        payment_id: TransferId,
        memo_id: TransferId,
        amount: Amount,
        currency: Currency,
        reference: &str,
    ) -> Result<(Transfer, u64), PayError> {
        let wallet = self.wallet(user_id, currency).await?;
        let merchant_wallet = self.wallet(&merchant.merchant_id, currency).await?;
        let _lock = self.lock_wallet(wallet.account).await?;
        let account = self.ledger_account(wallet.account).await?;
        if !account.balance.covers(amount) {
            return Err(PayError::InsufficientFunds);
        }
        let mut event = self
            .context_for(
                user_id,
                cooling_off_until,
                EventKind::CodeCharge,
                &account,
                amount,
            )
            .await?;
        // The customer confirmed with a full session when the code was made, and the per-code
        // limit bounds it: a code charge is never challenged at the till.
        event.step_up_from = u64::MAX;
        let parties = code_parties(user_id, payment_id, merchant, currency);
        let decision = self.assess(&event, &parties).await?;
        decision.without_review("the customer's")?;
        self.capture(
            payment_id,
            memo_id,
            (user_id, wallet.account),
            merchant_wallet.account,
            &merchant.merchant_id,
            amount,
            currency,
            Metadata::parse([("reference", reference)]).unwrap_or_default(),
        )
        .await
    }

    /// Refunds all or part of a captured payment to the payer (API key with `refunds:write`).
    pub async fn refund(
        &self,
        merchant: &MerchantKey,
        payment: TransferId,
        amount: Amount,
        key: &IdempotencyKey,
    ) -> Result<Refund, PayError> {
        Self::require_scope(merchant, "refunds:write")?;
        let refund_id = self.derive_id(&[
            b"refund",
            merchant.merchant_id.as_bytes(),
            key.as_str().as_bytes(),
        ]);
        let _claim = self.claim(refund_id).await?;
        let original = self
            .store
            .transfer(payment)
            .await?
            .ok_or(PayError::NotFound)?;
        let merchant_wallet = self
            .wallet(&merchant.merchant_id, original.currency)
            .await?;
        if original.code != kind::MERCHANT_PAYMENT || original.credit != merchant_wallet.account {
            return Err(PayError::NotFound);
        }
        if let Some(done) = self.store.transfer(refund_id).await? {
            if done.reference != Some(payment) || done.amount != amount {
                return Err(PayError::IdempotencyMismatch);
            }
            if self.may_recover(&done) {
                // Its first attempt may have died before it told anyone.
                self.announce_refund(merchant, &original, refund_id, amount)
                    .await?;
            }
            return Ok(Refund {
                transfer: done,
                payment,
                refunded_total: self.refunded(payment).await?,
                replayed: true,
            });
        }
        let refunded_total = self.reserve_refund(merchant, &original, amount).await?;
        let batch = self.refund_batch(refund_id, merchant_wallet.account, &original, amount);
        match self.submit(batch).await? {
            Ok(applied) => {
                self.announce_refund(merchant, &original, refund_id, amount)
                    .await?;
                Ok(Refund {
                    transfer: applied.transfers[0].clone(),
                    payment,
                    refunded_total,
                    replayed: false,
                })
            }
            Err(rejection) => {
                // Nothing moved: what was reserved is refundable again.
                self.release_refund(payment, amount).await?;
                Err(match rejection.reason {
                    RejectReason::ExceedsCredits => {
                        PayError::Invalid("the merchant balance is too low for this refund")
                    }
                    other => crate::ledger_refusal(other),
                })
            }
        }
    }

    /// What has been refunded of a payment so far.
    async fn refunded(&self, payment: TransferId) -> Result<u64, PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT refunded FROM merchant_payments WHERE transfer_id = $1",
                params![payment.to_bytes()],
            )
            .await?;
        tx.commit().await?;
        crate::stored_minor(row.map_or(Ok(0), |r| r.i64(0))?)
    }

    /// Reserves `amount` against what remains refundable of `original`, atomically, before any
    /// money moves (so refunds racing on several instances cannot exceed the payment); answers
    /// the total refunded with this one.
    async fn reserve_refund(
        &self,
        merchant: &MerchantKey,
        original: &Transfer,
        amount: Amount,
    ) -> Result<u64, PayError> {
        let mut tx = self.db().begin().await?;
        // The payment's row may be missing if the process died right after capturing it.
        tx.execute(
            "INSERT INTO merchant_payments (transfer_id, merchant_id, payer_account, amount, currency, refunded, created_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT (transfer_id) DO NOTHING",
            params![
                original.id.to_bytes(),
                merchant.merchant_id.as_str(),
                original.debit.to_bytes(),
                original.amount.to_i64(),
                original.currency.code(),
                self.now_ms()
            ],
        )
        .await?;
        let reserved = tx
            .query_opt(
                "UPDATE merchant_payments SET refunded = refunded + $1 \
                 WHERE transfer_id = $2 AND refunded + $1 <= amount RETURNING refunded",
                params![amount.to_i64(), original.id.to_bytes()],
            )
            .await?;
        let Some(reserved) = reserved else {
            return Err(PayError::Invalid(
                "the refund is more than what remains refundable of this payment",
            ));
        };
        tx.commit().await?;
        crate::stored_minor(reserved.i64(0)?)
    }

    /// A refund: from the merchant's wallet back to the payer's, with its e-money memo leg.
    fn refund_batch(
        &self,
        refund_id: TransferId,
        merchant_wallet: AccountId,
        original: &Transfer,
        amount: Amount,
    ) -> Vec<TransferRequest> {
        vec![
            TransferRequest::Move(Move {
                id: refund_id,
                debit: merchant_wallet,
                credit: original.debit,
                amount,
                currency: original.currency,
                code: kind::REFUND,
                reference: Some(original.id),
                metadata: Metadata::empty(),
                pending: None,
            }),
            emoney_leg(
                self.derive_id(&[b"refund-memo", &refund_id.to_bytes()]),
                original.currency,
                amount,
                true,
                Some(refund_id),
                None,
            ),
        ]
    }

    /// Gives back a refund's reservation after the ledger refused it.
    async fn release_refund(&self, payment: TransferId, amount: Amount) -> Result<(), PayError> {
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE merchant_payments SET refunded = refunded - $1 WHERE transfer_id = $2",
            params![amount.to_i64(), payment.to_bytes()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Tells the merchant (webhook) and the payer (notice) that a refund went through.
    async fn announce_refund(
        &self,
        merchant: &MerchantKey,
        original: &Transfer,
        refund_id: TransferId,
        amount: Amount,
    ) -> Result<(), PayError> {
        let payer = self.wallet_of_account(original.debit).await?;
        let mut tx = self.db().begin().await?;
        self.enqueue_event(
            &mut tx,
            &merchant.merchant_id,
            refund_id,
            "refund.succeeded",
            serde_json::json!({
                "refund_id": transfer_id_text(refund_id),
                "payment_id": transfer_id_text(original.id),
                "customer": payer.as_ref().map(|payer| {
                    self.customer_pseudonym(&merchant.merchant_id, &payer.user_id)
                }),
                "amount": amount.minor_units(),
                "currency": original.currency.code(),
            }),
        )
        .await?;
        tx.commit().await?;
        if let Some(payer) = payer {
            let holder = self.holder(&payer.user_id).await?;
            self.notify(
                refund_id,
                &holder.email,
                Mail::new("merchant-refund").arg(
                    "amount",
                    format_money(amount.minor_units(), original.currency),
                ),
            );
        }
        self.make_durable().await
    }

    /// A merchant's balance account (API key with `payments:read`).
    pub async fn merchant_balance(
        &self,
        merchant: &MerchantKey,
        currency: Currency,
    ) -> Result<koban_ledger::Account, PayError> {
        Self::require_scope(merchant, "payments:read")?;
        let wallet = self.wallet(&merchant.merchant_id, currency).await?;
        self.ledger_account(wallet.account).await
    }

    /// The payer of this merchant's payments, as this merchant alone knows them: `cus_` and
    /// 24 hexadecimal digits of a keyed hash of the merchant and the payer, the same for every
    /// payment of one payer at one merchant, unrelated across merchants, and telling nothing
    /// of the payer's address, phone or name.
    pub fn customer_pseudonym(&self, merchant_id: &str, payer: &UserId) -> String {
        let hash = self.auth.keys().hash(
            HashPurpose::Payment,
            &[
                b"customer-pseudonym",
                merchant_id.as_bytes(),
                payer.as_bytes(),
            ],
        );
        format!("cus_{}", hex::encode(&hash[..12]))
    }

    /// A row of `merchant_payments` with its payer's user id (column 5) as a
    /// [`ReceivedPayment`].
    fn received_payment_from(
        &self,
        merchant_id: &str,
        row: &koban_store::sql::Row,
    ) -> Result<ReceivedPayment, PayError> {
        let invalid = || PayError::Invalid("a stored amount is not valid");
        Ok(ReceivedPayment {
            id: TransferId::from_bytes(&row.bytes(0)?)
                .map_err(|_| PayError::Invalid("a stored id is not valid"))?,
            customer: row
                .opt_text(5)?
                .map(|user| self.customer_pseudonym(merchant_id, &UserId::from_stored(user))),
            amount: Amount::from_i64(row.i64(1)?).map_err(|_| invalid())?,
            currency: stored_currency(&row.text(2)?)?,
            refunded_minor: u64::try_from(row.i64(3)?).map_err(|_| invalid())?,
            created_at_ms: row.i64(4)?,
        })
    }

    /// The merchant's payments, newest first (`limit` at most), with what was refunded of each.
    pub async fn received_payments(
        &self,
        merchant: &MerchantKey,
        limit: i64,
    ) -> Result<Vec<ReceivedPayment>, PayError> {
        Self::require_scope(merchant, "payments:read")?;
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT p.transfer_id, p.amount, p.currency, p.refunded, p.created_at, w.user_id \
                 FROM merchant_payments p LEFT JOIN wallets w ON w.account_id = p.payer_account \
                 WHERE p.merchant_id = $1 ORDER BY p.created_at DESC LIMIT $2",
                params![merchant.merchant_id.as_str(), limit.clamp(1, 500)],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| self.received_payment_from(&merchant.merchant_id, row))
            .collect()
    }

    /// One of the merchant's payments.
    pub async fn received_payment(
        &self,
        merchant: &MerchantKey,
        id: TransferId,
    ) -> Result<ReceivedPayment, PayError> {
        Self::require_scope(merchant, "payments:read")?;
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT p.transfer_id, p.amount, p.currency, p.refunded, p.created_at, w.user_id \
                 FROM merchant_payments p LEFT JOIN wallets w ON w.account_id = p.payer_account \
                 WHERE p.merchant_id = $1 AND p.transfer_id = $2",
                params![merchant.merchant_id.as_str(), id.to_bytes()],
            )
            .await?
            .ok_or(PayError::NotFound)?;
        tx.commit().await?;
        self.received_payment_from(&merchant.merchant_id, &row)
    }
}

/// How long wrong payment codes are counted against a merchant key and a network.
const CODE_GUESS_WINDOW_S: i64 = 15 * 60;

/// Whose wrong payment codes count together: the merchant key (a till, or a dashboard
/// session), the merchant across all its keys, and the network.
struct CodeGuard {
    merchant: UserId,
    client: Option<Client>,
    /// The throttle keys of the merchant key, the merchant, then the network.
    keys: Vec<[u8; 32]>,
}

impl CodeGuard {
    fn new<S: LedgerStore>(
        pay: &Payments<S>,
        merchant: &MerchantKey,
        client: Option<&Client>,
    ) -> Self {
        let hash = |scope: &[u8], subject: &[u8]| {
            pay.auth
                .keys()
                .hash(HashPurpose::Throttle, &[scope, subject])
        };
        let mut keys = vec![
            hash(
                b"payment-code-key",
                format!("{}:{}", merchant.merchant_id, merchant.key_id).as_bytes(),
            ),
            hash(b"payment-code-merchant", merchant.merchant_id.as_bytes()),
        ];
        if let Some(client) = client {
            keys.push(hash(b"payment-code-network", client.network.as_bytes()));
        }
        CodeGuard {
            merchant: merchant.merchant_id.clone(),
            client: client.cloned(),
            keys,
        }
    }
}

/// A merchant's reference: at most [`REFERENCE_BYTES_MAX`] bytes, no control characters.
fn check_reference(reference: &str) -> Result<(), PayError> {
    if reference.len() > REFERENCE_BYTES_MAX || reference.chars().any(char::is_control) {
        return Err(PayError::Invalid(
            "reference is at most 64 bytes without control characters",
        ));
    }
    Ok(())
}

/// The one answer for a code that cannot be charged, whatever the reason, so a till learns
/// nothing about codes it guesses.
pub(crate) fn code_unusable() -> PayError {
    PayError::Gone("this payment code is unknown, expired or already used; ask for a new one")
}

/// Whether a payment code (a row of [`Payments::find_code_in`]) can still be charged: not used,
/// not revoked, not expired, its session live and its holder active. A known code that
/// cannot be charged is an honest miss, not a guess: it does not count against the till.
fn code_usable(row: &koban_store::sql::Row, now: i64) -> Result<bool, PayError> {
    Ok(row.opt_i64(5)?.is_none()
        && row.opt_i64(6)?.is_none()
        && row.i64(4)? > now
        && row.i64(7)? == 1
        && row.text(9)? == "active")
}

/// Refuses a charge in another currency than the code's, or above the code's limit.
fn code_covers(
    row: &koban_store::sql::Row,
    amount: Amount,
    currency: Currency,
) -> Result<(), PayError> {
    if stored_currency(&row.text(2)?)? != currency {
        return Err(PayError::Invalid("this code is for another currency"));
    }
    let limit = crate::stored_minor(row.i64(3)?)?;
    if amount.minor_units() > limit {
        return Err(PayError::Limit {
            code: "code_limit",
            detail: format!(
                "this payment code allows at most {}; the customer must pay by scanning the merchant's QR code instead",
                format_money(limit, currency)
            ),
        });
    }
    Ok(())
}

/// The parties of a QR payment's risk decision: the same for its assessment and for a retry
/// that writes a lost decision again, so both name one record.
fn qr_parties(
    principal: &Principal,
    client: &Client,
    payment_id: TransferId,
    request: &PaymentRequest,
) -> Parties {
    Parties::payment(
        &principal.user_id,
        Some(client),
        payment_id,
        &request.merchant_id,
        request.currency,
    )
}

/// The parties of a payment-code charge's risk decision (as [`qr_parties`]).
fn code_parties(
    customer: &UserId,
    payment_id: TransferId,
    merchant: &MerchantKey,
    currency: Currency,
) -> Parties {
    Parties::payment(customer, None, payment_id, &merchant.merchant_id, currency)
}
