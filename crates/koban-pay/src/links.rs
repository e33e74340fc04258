//! Handles (`@name`) customers can be paid by, and request-to-pay links: a customer asks for
//! an amount, shares the link, and whoever opens it sees the requester's masked name and the
//! amount and may pay it once, as an ordinary P2P transfer (same limits, step-up and holds).

use koban_auth::{Client, Principal, StepUpProof, UserKind};
use koban_ledger::{Amount, Currency};
use koban_shared::audit::{self, AuditEvent};
use koban_shared::ids::UserId;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use koban_store::{LedgerStore, params};

use crate::p2p::{P2pOutcome, P2pRequest, message_metadata, parse_handle};
use crate::wallets::PartyKey;
use crate::{IdempotencyKey, PayError, Payments, mask_name};

/// Links last 7 days unless asked otherwise, at most 30.
pub const LINK_S_DEFAULT: i64 = 7 * 24 * 3600;
pub const LINK_S_MAX: i64 = 30 * 24 * 3600;

/// A request-to-pay link as anyone holding it sees it.
#[derive(Clone, Debug)]
pub struct PayLink {
    pub id: String,
    pub requester_masked_name: String,
    pub amount: Amount,
    pub currency: Currency,
    pub message: Option<String>,
    /// `open`, `paid`, `expired` or `cancelled`.
    pub status: &'static str,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
}

impl<S: LedgerStore> Payments<S> {
    /// Sets (or changes) the caller's handle.
    pub async fn set_handle(
        &self,
        principal: &Principal,
        handle: &str,
    ) -> Result<String, PayError> {
        principal.full()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("only customers have handles"));
        }
        let handle = parse_handle(handle)?;
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let taken = tx
            .query_opt(
                "SELECT user_id FROM handles WHERE handle = $1",
                params![handle.as_str()],
            )
            .await?;
        if taken.is_some_and(|row| row.text(0).ok().as_deref() != Some(principal.user_id.as_str()))
        {
            return Err(PayError::Conflict("this handle is taken"));
        }
        // Two customers taking one handle at the same moment: the unique index refuses the
        // second, which is told the handle is taken.
        if tx
            .execute(
                "INSERT INTO handles (user_id, handle, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET handle = $2, created_at = $3",
                params![principal.user_id.as_str(), handle.as_str(), now],
            )
            .await
            .is_err()
        {
            return Err(PayError::Conflict("this handle is taken"));
        }
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "handle.set",
                subject: &principal.user_id,
                details: serde_json::json!({ "handle": handle }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(format!("@{handle}"))
    }

    /// Asks to be paid `amount`; returns the link.
    pub async fn create_pay_link(
        &self,
        principal: &Principal,
        amount: Amount,
        currency: Currency,
        message: Option<&str>,
        expires_in_s: Option<i64>,
    ) -> Result<PayLink, PayError> {
        principal.can_move_money()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("only customers request money this way"));
        }
        message_metadata(message)?;
        let lifetime = expires_in_s.unwrap_or(LINK_S_DEFAULT);
        if !(60..=LINK_S_MAX).contains(&lifetime) {
            return Err(PayError::Invalid(
                "expires_in_s must be between 60 and 2592000",
            ));
        }
        // Unguessable: the link is the capability to see the request.
        let id = koban_auth::secret::random_token("kpl_").expose().clone();
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO pay_links (id, requester_id, amount, currency, message, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            params![
                id.as_str(),
                principal.user_id.as_str(),
                amount.to_i64(),
                currency.code(),
                message,
                now + lifetime * 1000,
                now
            ],
        )
        .await?;
        tx.commit().await?;
        self.pay_link(principal, &id).await
    }

    async fn link_row(&self, id: &str) -> Result<(String, PayLink), PayError> {
        if !id.starts_with("kpl_") || id.len() > 100 {
            return Err(PayError::NotFound);
        }
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT l.requester_id, l.amount, l.currency, l.message, l.expires_at, l.cancelled_at, \
                 l.created_at, u.display_name FROM pay_links l JOIN users u ON u.id = l.requester_id WHERE l.id = $1",
                params![id],
            )
            .await?
            .ok_or(PayError::NotFound)?;
        tx.commit().await?;
        let currency = Currency::parse(&row.text(2)?)
            .map_err(|_| PayError::Invalid("a stored currency is not valid"))?;
        let payment = self
            .store
            .transfer(self.derive_id(&[b"pay-link", id.as_bytes()]))
            .await?;
        // A payment held for review is not paid until an analyst releases it.
        let paid = match payment {
            None => None,
            Some(t) if t.code == crate::accounts::kind::REVIEW_HOLD => {
                let mut tx = self.db().begin_read().await?;
                let review = tx
                    .query_opt(
                        "SELECT status FROM held_transfers WHERE pending_id = $1",
                        params![t.id.to_bytes()],
                    )
                    .await?;
                tx.commit().await?;
                Some(match review.map(|r| r.text(0)).transpose()?.as_deref() {
                    Some("released") => "paid",
                    Some("held") => "held",
                    _ => "stopped",
                })
            }
            Some(_) => Some("paid"),
        };
        let expires_at_ms = row.i64(4)?;
        let status = if let Some(paid) = paid {
            paid
        } else if row.opt_i64(5)?.is_some() {
            "cancelled"
        } else if expires_at_ms <= self.now_ms() {
            "expired"
        } else {
            "open"
        };
        Ok((
            row.text(0)?,
            PayLink {
                id: id.to_owned(),
                requester_masked_name: mask_name(
                    &(self.auth.vault())
                        .open(&koban_shared::personal::USER_DISPLAY_NAME, &row.text(7)?)?,
                ),
                amount: Amount::from_i64(row.i64(1)?)
                    .map_err(|_| PayError::Invalid("stored amount"))?,
                currency,
                message: row.opt_text(3)?,
                status,
                expires_at_ms,
                created_at_ms: row.i64(6)?,
            },
        ))
    }

    /// A link as a signed-in customer holding it sees it.
    pub async fn pay_link(&self, principal: &Principal, id: &str) -> Result<PayLink, PayError> {
        principal.full()?;
        Ok(self.link_row(id).await?.1)
    }

    /// The requester withdraws an open link.
    pub async fn cancel_pay_link(&self, principal: &Principal, id: &str) -> Result<(), PayError> {
        principal.full()?;
        let mut tx = self.db().begin().await?;
        let changed = tx
            .execute(
                "UPDATE pay_links SET cancelled_at = $1 WHERE id = $2 AND requester_id = $3 AND cancelled_at IS NULL",
                params![self.now_ms(), id, principal.user_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        if changed == 0 {
            return Err(PayError::NotFound);
        }
        Ok(())
    }

    /// Pays a link: a P2P transfer to its requester, at most once per link.
    pub async fn pay_pay_link(
        &self,
        principal: &Principal,
        id: &str,
        key: &IdempotencyKey,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<P2pOutcome, PayError> {
        principal.can_move_money()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("only customers send transfers"));
        }
        let (requester, link) = self.link_row(id).await?;
        let transfer_id = self.derive_id(&[b"pay-link", id.as_bytes()]);
        let _claim = self.claim(transfer_id).await?;
        match link.status {
            "open" => {}
            // A retry by the payer who paid it is answered as a replay by `send`.
            "paid" | "held" => {}
            "cancelled" => return Err(PayError::Gone("the requester withdrew this link")),
            "stopped" => {
                return Err(PayError::Gone(
                    "the payment of this link was stopped; ask for a new link",
                ));
            }
            _ => return Err(PayError::Gone("this link has expired")),
        }
        let claimed = self.claim_link(id, &principal.user_id).await?;
        if !claimed && link.status == "open" {
            return Err(PayError::Conflict(
                "this link is already being paid by someone else",
            ));
        }
        let payee = self
            .payee_of(
                PartyKey::Id(&requester),
                link.currency,
                format!("payment link {}", &id[..id.len().min(12)]),
            )
            .await?;
        let request = P2pRequest {
            to: String::new(),
            amount: link.amount,
            currency: link.currency,
            message: link.message.clone(),
            key: key.clone(),
        };
        let result = self
            .send(principal, &request, transfer_id, payee, proof, client)
            .await;
        if result.is_err() && self.store.transfer(transfer_id).await?.is_none() {
            // Nothing moved (a limit, step-up, funds): the link is open again for anyone.
            self.release_link(id, &principal.user_id).await?;
        }
        match result {
            Err(PayError::IdempotencyMismatch) => {
                Err(PayError::Conflict("this link is already paid"))
            }
            other => other,
        }
    }

    /// Claims a link for one payer, across instances, in the database before money moves;
    /// false when another payer holds it (or it was cancelled or expired meanwhile).
    async fn claim_link(&self, id: &str, payer: &UserId) -> Result<bool, PayError> {
        let mut tx = self.db().begin().await?;
        let claimed = tx
            .execute(
                "UPDATE pay_links SET paid_by = $1 WHERE id = $2 AND (paid_by IS NULL OR paid_by = $1) \
                 AND cancelled_at IS NULL AND expires_at > $3",
                params![payer.as_str(), id, self.now_ms()],
            )
            .await?;
        tx.commit().await?;
        Ok(claimed > 0)
    }

    /// Gives up a payer's claim on a link after a payment that moved no money.
    async fn release_link(&self, id: &str, payer: &UserId) -> Result<(), PayError> {
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE pay_links SET paid_by = NULL WHERE id = $1 AND paid_by = $2",
            params![id, payer.as_str()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
