//! Transfers the risk hook held for review: analysts list them, then release (the money goes
//! on to the payee) or void (it returns to the payer). A hold is a fraud control, so a
//! release needs two operators: the first asks for it, a second one releases; voiding (the
//! money goes back where it came from) needs one. Every step is in the audit chain.

use koban_auth::{Principal, Role};
use koban_ledger::{AccountId, Amount, Currency, Metadata, Move, TransferId, TransferRequest};
use koban_shared::audit::{self, AuditEvent};
use koban_shared::mail::Mail;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use koban_store::{LedgerStore, params};

use crate::accounts::{IssuerAccount, kind};
use crate::{PayError, Payments, format_money};

/// A held transfer as an analyst sees it.
#[derive(Clone, Debug)]
pub struct HeldTransfer {
    pub id: TransferId,
    pub payer_user: String,
    pub payer_account: AccountId,
    pub payee_account: AccountId,
    pub amount: u64,
    pub currency: Currency,
    pub status: String,
    pub created_at_ms: i64,
    /// The operator who asked for the release, while it waits for a second one.
    pub release_requested_by: Option<String>,
}

/// The columns [`held_from`] reads, in its order.
macro_rules! held_columns {
    () => {
        "pending_id, payer_user, payer_account, payee_account, amount, currency, status, created_at, release_requested_by "
    };
}

fn held_from(row: &koban_store::sql::Row) -> Result<HeldTransfer, PayError> {
    let bad = |_| PayError::Invalid("a stored id is not valid");
    Ok(HeldTransfer {
        id: TransferId::from_bytes(&row.bytes(0)?).map_err(bad)?,
        payer_user: row.text(1)?,
        payer_account: AccountId::from_bytes(&row.bytes(2)?).map_err(bad)?,
        payee_account: AccountId::from_bytes(&row.bytes(3)?).map_err(bad)?,
        amount: crate::stored_minor(row.i64(4)?)?,
        currency: Currency::parse(&row.text(5)?)
            .map_err(|_| PayError::Invalid("a stored currency is not valid"))?,
        status: row.text(6)?,
        created_at_ms: row.i64(7)?,
        release_requested_by: row.opt_text(8)?,
    })
}

impl<S: LedgerStore> Payments<S> {
    /// Transfers waiting for review, oldest first (analyst, approver).
    pub async fn held_transfers(
        &self,
        principal: &Principal,
    ) -> Result<Vec<HeldTransfer>, PayError> {
        principal.operator(&[Role::Analyst, Role::Approver])?;
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                concat!(
                    "SELECT ",
                    held_columns!(),
                    "FROM held_transfers WHERE status = 'held' ORDER BY created_at LIMIT 200"
                ),
                vec![],
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(held_from).collect()
    }

    /// Voids a held transfer, or takes a release one step: the first operator asks for it
    /// (the transfer stays held, `release_requested_by` set), a second one, who is neither the
    /// first nor linked to them by invitation, releases it.
    pub async fn decide_held(
        &self,
        principal: &Principal,
        id: TransferId,
        release: bool,
    ) -> Result<HeldTransfer, PayError> {
        let operator = principal.operator(&[Role::Analyst, Role::Approver])?;
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                concat!(
                    "SELECT ",
                    held_columns!(),
                    "FROM held_transfers WHERE pending_id = $1"
                ),
                params![id.to_bytes()],
            )
            .await?
            .ok_or(PayError::NotFound)?;
        tx.commit().await?;
        let held = held_from(&row)?;
        if held.status != "held" {
            return Err(PayError::Conflict("this transfer was already decided"));
        }
        if release {
            match &held.release_requested_by {
                None => {
                    return self
                        .request_release(principal, &operator.operator_id, held)
                        .await;
                }
                // Asking again (a retry, a second click) answers the same: it still waits.
                Some(asked_by) if *asked_by == operator.operator_id => return Ok(held),
                Some(asked_by) => {
                    self.second_operator(principal, asked_by, &operator.operator_id, "release")
                        .await?
                }
            }
        }
        let batch = self.review_batch(&held, release)?;
        let outcome = self.submit(batch).await?;
        let status = match outcome {
            Ok(_) => {
                if release {
                    "released"
                } else {
                    "voided"
                }
            }
            // The hold never reached the ledger (the process died in between) or ran out:
            // nothing is reserved any more, so the review ends as voided.
            Err(r)
                if matches!(
                    r.reason,
                    koban_ledger::RejectReason::PendingNotFound
                        | koban_ledger::RejectReason::PendingExpired
                ) =>
            {
                "voided"
            }
            Err(r) => return Err(crate::ledger_refusal(r.reason)),
        };
        self.record_review(principal, &operator.operator_id, &held, status)
            .await?;
        Ok(HeldTransfer {
            status: status.to_owned(),
            ..held
        })
    }

    /// The first step of a release: records who asked, audited; the transfer stays held.
    async fn request_release(
        &self,
        principal: &Principal,
        operator_id: &str,
        held: HeldTransfer,
    ) -> Result<HeldTransfer, PayError> {
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let asked = tx
            .execute(
                "UPDATE held_transfers SET release_requested_by = $1 \
                 WHERE pending_id = $2 AND status = 'held' AND release_requested_by IS NULL",
                params![operator_id, held.id.to_bytes()],
            )
            .await?;
        if asked == 0 {
            return Err(PayError::Conflict("this transfer was decided meanwhile"));
        }
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "payment.review_release_requested",
                subject: &held.payer_user,
                details: serde_json::json!({
                    "transfer": uuid::Uuid::from_u128(held.id.get()).to_string(),
                    "amount": held.amount,
                    "currency": held.currency.code(),
                }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(HeldTransfer {
            release_requested_by: Some(operator_id.to_owned()),
            ..held
        })
    }

    /// Releasing posts the hold into suspense and moves it on to the payee; stopping voids it
    /// (back to the payer).
    fn review_batch(
        &self,
        held: &HeldTransfer,
        release: bool,
    ) -> Result<Vec<TransferRequest>, PayError> {
        let id = held.id;
        let amount = Amount::new(held.amount).map_err(|_| PayError::Invalid("stored amount"))?;
        Ok(if release {
            vec![
                TransferRequest::Post {
                    id: self.derive_id(&[b"review-post", &id.to_bytes()]),
                    pending_id: id,
                    amount: None,
                    metadata: Metadata::empty(),
                },
                TransferRequest::Move(Move {
                    id: self.derive_id(&[b"review-release", &id.to_bytes()]),
                    debit: IssuerAccount::Suspense.id(held.currency),
                    credit: held.payee_account,
                    amount,
                    currency: held.currency,
                    code: kind::REVIEW_RELEASE,
                    reference: Some(id),
                    metadata: Metadata::empty(),
                    pending: None,
                }),
            ]
        } else {
            vec![TransferRequest::Void {
                id: self.derive_id(&[b"review-void", &id.to_bytes()]),
                pending_id: id,
                metadata: Metadata::empty(),
            }]
        })
    }

    /// Records the decision, its audit entry and the payer's notice in one transaction.
    async fn record_review(
        &self,
        principal: &Principal,
        operator_id: &str,
        held: &HeldTransfer,
        status: &str,
    ) -> Result<(), PayError> {
        let id = held.id;
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let decided = tx
            .execute(
                "UPDATE held_transfers SET status = $1, decided_at = $2, decided_by = $3 \
                 WHERE pending_id = $4 AND status = 'held'",
                params![status, now, operator_id, id.to_bytes()],
            )
            .await?;
        if decided == 0 {
            // Two operators decided at once: the ledger moved the money once, and the first
            // to record it audited it and told the payer.
            return Ok(());
        }
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: if status == "released" {
                    "payment.review_released"
                } else {
                    "payment.review_voided"
                },
                subject: &held.payer_user,
                details: serde_json::json!({
                    "transfer": uuid::Uuid::from_u128(id.get()).to_string(),
                    "amount": held.amount,
                    "currency": held.currency.code(),
                }),
            },
        )
        .await?;
        let money = format_money(held.amount, held.currency);
        let mail = if status == "released" {
            Mail::new("held-released")
        } else {
            Mail::new("held-stopped")
        };
        let mail = mail.arg("amount", money);
        koban_shared::outbox::enqueue_to_user(
            &mut tx,
            self.auth.vault(),
            now,
            &held.payer_user,
            &mail,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
