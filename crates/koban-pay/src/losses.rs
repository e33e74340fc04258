//! What customers lost to fraud, and what has been claimed against it. A loss is a completed
//! transfer out of a victim's wallet to another customer (a P2P transfer or the release of a
//! held one). Reversals and compensations claim against the transfers they cover, in
//! `loss_claims`: together they never exceed a transfer's amount, so no loss is paid twice.
//! A claim is taken, in one conditional statement, in the transaction that records the
//! request, and given back when the request is rejected or the ledger refuses it.

use koban_ledger::{AccountId, Amount, Currency, TransferId};
use koban_shared::ids::UserId;
use koban_store::LedgerStore;
use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};

use crate::{PayError, Payments, format_money};

/// The most transfers one compensation may cover.
pub const COVERED_TRANSFERS_MAX: usize = 20;

/// One transfer a customer lost: who lost it and to whom, how much, and how much of it is
/// still unclaimed by a reversal or compensation.
#[derive(Clone, Debug)]
pub struct Loss {
    pub transfer: TransferId,
    pub victim: UserId,
    pub victim_account: AccountId,
    /// The owner of the wallet the money went to.
    pub receiver: Option<UserId>,
    pub amount: Amount,
    pub currency: Currency,
    pub left: u64,
    /// When the money moved (milliseconds since the epoch).
    pub at_ms: i64,
}

impl<S: LedgerStore> Payments<S> {
    /// The loss a completed transfer between customers stands for (operators only).
    pub async fn loss(
        &self,
        principal: &koban_auth::Principal,
        transfer: TransferId,
    ) -> Result<Loss, PayError> {
        principal.operator(crate::cases::OPERATORS)?;
        self.loss_of(transfer).await
    }

    pub(crate) async fn loss_of(&self, transfer: TransferId) -> Result<Loss, PayError> {
        let (transfer, payer, receiver, amount, currency) =
            self.reversible(transfer).await.map_err(|e| match e {
                PayError::Invalid(_) => PayError::Invalid(
                    "only a completed transfer from one customer to another is a loss",
                ),
                other => other,
            })?;
        let victim = self
            .wallet_of_account(payer)
            .await?
            .ok_or(PayError::NotFound)?
            .user_id;
        let receiver = self.wallet_of_account(receiver).await?.map(|w| w.user_id);
        let moved = self
            .store
            .transfer(transfer)
            .await?
            .ok_or(PayError::NotFound)?;
        let at_ms = i64::try_from(moved.timestamp.nanos() / 1_000_000)
            .map_err(|_| PayError::Invalid("a stored time is out of range"))?;
        let mut tx = self.db().begin_read().await?;
        let claimed = claimed(&mut tx, transfer).await?;
        tx.commit().await?;
        Ok(Loss {
            transfer,
            victim,
            victim_account: payer,
            receiver,
            amount,
            currency,
            left: amount.minor_units().saturating_sub(claimed),
            at_ms,
        })
    }

    /// The losses a compensation of `customer` in `currency` covers: distinct transfers, at
    /// least one and at most [`COVERED_TRANSFERS_MAX`], each out of that customer's wallet.
    pub(crate) async fn covered_losses(
        &self,
        customer: &UserId,
        currency: Currency,
        transfers: &[TransferId],
    ) -> Result<Vec<Loss>, PayError> {
        check_named(transfers)?;
        let mut losses: Vec<Loss> = Vec::with_capacity(transfers.len());
        for transfer in transfers {
            let loss = self.loss_of(*transfer).await?;
            if losses.iter().any(|l| l.transfer == loss.transfer) {
                return Err(PayError::Invalid("a transfer is named twice"));
            }
            if loss.victim != *customer || loss.currency != currency {
                return Err(PayError::Invalid(
                    "each transfer must have left this customer's wallet in this currency",
                ));
            }
            losses.push(loss);
        }
        Ok(losses)
    }
}

/// A compensation names 1 to [`COVERED_TRANSFERS_MAX`] transfers.
pub(crate) fn check_named(transfers: &[TransferId]) -> Result<(), PayError> {
    if transfers.is_empty() || transfers.len() > COVERED_TRANSFERS_MAX {
        return Err(PayError::Invalid(
            "a compensation names 1 to 20 transfers the customer lost",
        ));
    }
    Ok(())
}

/// How long before a case's first event a loss may have happened and still be the case's
/// (the look-back of its timeline).
const CASE_LOSS_LOOKBACK_MS: i64 = 7 * 24 * 3_600_000;

/// Refuses losses that are not the case's: the victim must be the subject of a case about a
/// customer, or the money must have gone to the case's subject; and it moved no earlier than
/// a week before the case's first event.
pub(crate) async fn losses_in_case<T: SqlTx>(
    tx: &mut T,
    case_id: &str,
    losses: &[Loss],
) -> Result<(), PayError> {
    let case = tx
        .query_opt(
            "SELECT subject, subject_role, first_event_at FROM risk_cases WHERE id = $1",
            params![case_id],
        )
        .await?
        .ok_or(PayError::Invalid("case_id names no case"))?;
    let (subject, role) = (case.text(0)?, case.text(1)?);
    let since = case.i64(2)?.saturating_sub(CASE_LOSS_LOOKBACK_MS);
    for loss in losses {
        if loss.at_ms < since {
            return Err(PayError::Invalid(
                "a transfer moved more than a week before the case's first event: it is not the case's",
            ));
        }
        let victim_is_subject = role == "customer" && loss.victim.as_str() == subject;
        let paid_to_subject = loss.receiver.as_deref() == Some(subject.as_str());
        if !victim_is_subject && !paid_to_subject {
            return Err(PayError::Invalid(
                "each transfer must be the case's: out of the wallet of the customer it is about, or paid to its subject",
            ));
        }
    }
    Ok(())
}

/// Claims `amount` against `losses`, filling each transfer's unclaimed part in order; answers
/// each transfer's share. Refused, changing nothing the caller commits, when the losses leave
/// less than `amount`.
pub(crate) async fn claim_losses<T: SqlTx>(
    tx: &mut T,
    losses: &[Loss],
    amount: Amount,
) -> Result<Vec<(TransferId, u64)>, PayError> {
    let mut wanted = amount.minor_units();
    let mut shares = Vec::new();
    let mut left_in_all = 0u64;
    for loss in losses {
        let left = loss
            .amount
            .minor_units()
            .saturating_sub(claimed(tx, loss.transfer).await?);
        left_in_all = left_in_all.saturating_add(left);
        let share = left.min(wanted);
        if share == 0 {
            continue;
        }
        if !claim(tx, loss.transfer, loss.amount, share).await? {
            return Err(PayError::Conflict(
                "another request claimed this loss at the same moment; look again and retry",
            ));
        }
        shares.push((loss.transfer, share));
        wanted -= share;
    }
    if wanted > 0 {
        let currency = losses.first().map(|l| l.currency);
        return Err(PayError::Limit {
            code: "more_than_lost",
            detail: format!(
                "these transfers leave {} to compensate, after what was already reversed or compensated",
                currency.map_or(left_in_all.to_string(), |c| format_money(left_in_all, c))
            ),
        });
    }
    Ok(shares)
}

/// Claims `share` of a transfer of `amount`; false when that would exceed the amount.
pub(crate) async fn claim<T: SqlTx>(
    tx: &mut T,
    transfer: TransferId,
    amount: Amount,
    share: u64,
) -> Result<bool, PayError> {
    let share = crate::minor_to_i64(share)?;
    if share > amount.to_i64() {
        return Ok(false);
    }
    let claimed = tx
        .execute(
            "INSERT INTO loss_claims (transfer_id, amount, claimed) VALUES ($1, $2, $3) \
             ON CONFLICT (transfer_id) DO UPDATE SET claimed = loss_claims.claimed + excluded.claimed \
             WHERE loss_claims.claimed + excluded.claimed <= loss_claims.amount",
            params![transfer.to_bytes(), amount.to_i64(), share],
        )
        .await?;
    Ok(claimed == 1)
}

/// Gives back what action `id` claimed: a reversal its transfer's amount, a compensation
/// each share it took.
pub(crate) async fn release_claims<T: SqlTx>(
    tx: &mut T,
    id: &str,
    kind: &str,
    transfer: Option<TransferId>,
    amount: i64,
) -> Result<(), PayError> {
    let shares: Vec<(Vec<u8>, i64)> = if kind == "reverse" {
        transfer
            .map(|t| (t.to_bytes().to_vec(), amount))
            .into_iter()
            .collect()
    } else {
        tx.query(
            "SELECT transfer_id, amount FROM compensation_covers WHERE action_id = $1",
            params![id],
        )
        .await?
        .iter()
        .map(|r| Ok((r.bytes(0)?, r.i64(1)?)))
        .collect::<Result<_, PayError>>()?
    };
    for (transfer, share) in shares {
        let released = tx
            .execute(
                "UPDATE loss_claims SET claimed = claimed - $1 WHERE transfer_id = $2 AND claimed >= $1",
                params![share, transfer],
            )
            .await?;
        if released == 0 && share > 0 {
            // The claims no longer add up: left for an operator to look into rather than
            // blocking the decision.
            tracing::error!(action = id, "a loss claim to give back was not found");
        }
    }
    Ok(())
}

/// The transfers a compensation covers, as ids.
pub(crate) async fn covers<T: SqlTx>(tx: &mut T, id: &str) -> Result<Vec<String>, PayError> {
    let rows = tx
        .query(
            "SELECT transfer_id FROM compensation_covers WHERE action_id = $1 ORDER BY transfer_id",
            params![id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let bytes = <[u8; 16]>::try_from(r.bytes(0)?.as_slice())
                .map_err(|_| PayError::Invalid("a stored transfer id is not valid"))?;
            Ok(uuid::Uuid::from_bytes(bytes).to_string())
        })
        .collect()
}

async fn claimed<T: SqlTx>(tx: &mut T, transfer: TransferId) -> Result<u64, PayError> {
    match tx
        .query_opt(
            "SELECT claimed FROM loss_claims WHERE transfer_id = $1",
            params![transfer.to_bytes()],
        )
        .await?
    {
        Some(row) => crate::stored_minor(row.i64(0)?),
        None => Ok(0),
    }
}
