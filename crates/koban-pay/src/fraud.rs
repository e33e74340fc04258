//! Analysts' actions on fraud, each in the audit chain: freezing a customer's wallets,
//! reversing a completed transfer while the receiver still holds the funds (and freezing the
//! receiver), and compensating a victim from the fraud-losses account with the case attached.
//! A compensation covers transfers the victim lost ([`crate::losses`]), never more than they
//! lost less what was already reversed or compensated, and always waits for a second operator
//! with the approver role (maker-checker: the requester cannot approve). A reversal of at least
//! `approval_from_minor` waits for one too. Also the measures of the fraud operation.

use koban_auth::{Principal, Role};
use koban_ledger::{
    AccountId, Amount, Currency, Metadata, Move, RejectReason, StateChange, TransferId,
    TransferKind, TransferRequest,
};
use koban_shared::audit::{self, AuditEvent};
use koban_shared::ids::UserId;
use koban_shared::mail::Mail;
use koban_store::LedgerStore;
use koban_store::params;
use koban_store::sql::{Row, SqlDb, SqlTx, SqlTxExt};

use crate::accounts::{IssuerAccount, kind};
use crate::cases::OPERATORS;
use crate::losses::{self, Loss};
use crate::wallets::{account_id, currency_of, emoney_leg};
use crate::{PayError, Payments, format_money};

/// How long an approval has to carry out an action before another may take it over (after a
/// crash halfway).
const EXECUTION_LEASE_MS: i64 = 5 * 60 * 1000;

/// A reversal or compensation, as requested and as decided.
#[derive(Clone, Debug)]
pub struct RiskAction {
    pub id: String,
    pub kind: String,
    pub case_id: Option<String>,
    pub transfer_id: Option<String>,
    pub customer: UserId,
    pub amount: i64,
    pub currency: String,
    pub note: String,
    /// pending (waits for an approver) | done | rejected | refused (the ledger said no)
    pub status: String,
    pub requested_by: String,
    pub approved_by: Option<String>,
    pub ledger_id: Option<String>,
    /// A compensation's covered transfers.
    pub covers: Vec<String>,
}

/// The columns [`action_from`] reads, as a literal for `concat!` (statements are `'static`).
macro_rules! action_columns {
    () => {
        "id, kind, case_id, transfer_id, customer, amount, currency, note, status, requested_by, approved_by, ledger_id"
    };
}

fn uuid_text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(|b| uuid::Uuid::from_bytes(b).to_string())
}

fn action_from(row: &Row) -> Result<RiskAction, PayError> {
    Ok(RiskAction {
        id: row.text(0)?,
        kind: row.text(1)?,
        case_id: row.opt_text(2)?,
        transfer_id: uuid_text(row.opt_bytes(3)?),
        customer: UserId::from_stored(row.text(4)?),
        amount: row.i64(5)?,
        currency: row.text(6)?,
        note: row.text(7)?,
        status: row.text(8)?,
        requested_by: row.text(9)?,
        approved_by: row.opt_text(10)?,
        ledger_id: uuid_text(row.opt_bytes(11)?),
        covers: Vec::new(),
    })
}

/// The measures of the fraud operation.
#[derive(Clone, Debug)]
pub struct RiskStats {
    pub alerts_by_rule: Vec<(String, i64)>,
    pub decisions_by_action: Vec<(String, i64)>,
    pub cases_open: i64,
    pub holds_pending: i64,
    pub amount_held: i64,
    /// What compensations cost the issuer (the fraud-losses account), per currency.
    pub amount_lost: Vec<(String, i64)>,
    pub amount_compensated: i64,
    pub amount_reversed: i64,
    /// Time to detect (first event of a case to its first alert), in seconds, over cases.
    pub time_to_detect_s: Distribution,
}

#[derive(Clone, Debug, Default)]
pub struct Distribution {
    pub count: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub max: Option<f64>,
}

impl Distribution {
    /// The distribution, in seconds, of durations given in milliseconds.
    fn of_ms(mut ms: Vec<i64>) -> Self {
        ms.sort_unstable();
        Distribution {
            count: ms.len(),
            p50: nearest_rank(&ms, 50),
            p90: nearest_rank(&ms, 90),
            max: ms.last().map(|v| *v as f64 / 1000.0),
        }
    }
}

fn nearest_rank(sorted: &[i64], per_cent: usize) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * per_cent).div_ceil(100).max(1);
    sorted.get(rank - 1).map(|ms| *ms as f64 / 1000.0)
}

/// A customer's wallet as a case page shows it: the balance, whether it is frozen, and the
/// newest transfers between customers (those a reversal can name).
#[derive(Clone, Debug)]
pub struct CustomerWallet {
    pub currency: Currency,
    pub balance: i128,
    pub frozen: bool,
    pub transfers: Vec<crate::wallets::Entry>,
}

/// Transfers a case page lists per wallet.
const CASE_TRANSFERS_MAX: usize = 20;

/// What to do with a pending action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

impl<S: LedgerStore> Payments<S> {
    pub(crate) async fn wallets_of(
        &self,
        user_id: &str,
    ) -> Result<Vec<(Currency, AccountId)>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT currency, account_id FROM wallets WHERE user_id = $1 ORDER BY currency",
                params![user_id],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| Ok((currency_of(&r.text(0)?)?, account_id(&r.bytes(1)?)?)))
            .collect()
    }

    /// The wallets of a customer with their newest P2P transfers, transfers held for review
    /// and releases, for an operator working a case.
    pub async fn customer_wallets(
        &self,
        principal: &Principal,
        user_id: &UserId,
    ) -> Result<Vec<CustomerWallet>, PayError> {
        principal.operator(OPERATORS)?;
        let kinds = [
            "p2p".to_owned(),
            "review_hold".to_owned(),
            "review_release".to_owned(),
        ];
        let mut out = Vec::new();
        for (currency, account) in self.wallets_of(user_id).await? {
            let ledger = self.ledger_account(account).await?;
            let (transfers, _) = self
                .account_history(account, None, CASE_TRANSFERS_MAX, &kinds)
                .await?;
            out.push(CustomerWallet {
                currency,
                balance: ledger.balance.net_credit_posted(),
                frozen: ledger.flags.frozen,
                transfers,
            });
        }
        Ok(out)
    }

    async fn set_frozen(&self, account: AccountId, frozen: bool) -> Result<(), PayError> {
        let change = if frozen {
            StateChange::Freeze
        } else {
            StateChange::Unfreeze
        };
        self.store
            .change_account_state(account, change)
            .await?
            .map_err(|_| PayError::Conflict("the wallet cannot change state (closed)"))?;
        Ok(())
    }

    /// Freezes (or unfreezes) every wallet of a customer: a frozen wallet can neither send nor
    /// receive; its pending holds stay as they are. Audited.
    pub async fn freeze_customer(
        &self,
        principal: &Principal,
        user_id: &UserId,
        freeze: bool,
        reason: &str,
    ) -> Result<usize, PayError> {
        principal.operator(OPERATORS)?;
        let reason = bounded_note(reason)?;
        let wallets = self.wallets_of(user_id).await?;
        if wallets.is_empty() {
            return Err(PayError::NotFound);
        }
        for (_, account) in &wallets {
            let _lock = self.lock_wallet(*account).await?;
            self.set_frozen(*account, freeze).await?;
        }
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: if freeze {
                    "risk.account_frozen"
                } else {
                    "risk.account_unfrozen"
                },
                subject: &format!("user:{user_id}"),
                details: serde_json::json!({ "wallets": wallets.len(), "reason": reason }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(wallets.len())
    }

    /// Submits `batch` touching `accounts`; accounts frozen by an analyst are thawed for the
    /// batch and frozen again after it (under this instance's wallet locks), so a frozen mule's
    /// funds can still be taken back and a frozen victim still made whole.
    async fn submit_through_freeze(
        &self,
        accounts: &[AccountId],
        batch: Vec<TransferRequest>,
    ) -> Result<Result<(), RejectReason>, PayError> {
        let mut thawed = Vec::new();
        let mut outcome = Ok(Ok(()));
        for account in accounts {
            match self.ledger_account(*account).await {
                Ok(state) if state.flags.frozen => match self.set_frozen(*account, false).await {
                    Ok(()) => thawed.push(*account),
                    Err(error) => {
                        outcome = Err(error);
                        break;
                    }
                },
                Ok(_) => {}
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        if matches!(outcome, Ok(Ok(()))) {
            outcome = match self.submit(batch).await {
                Ok(result) => Ok(result.map(|_| ()).map_err(|r| r.reason)),
                Err(error) => Err(error.into()),
            };
        }
        // Frozen again whatever happened above.
        for account in &thawed {
            if let Err(error) = self.set_frozen(*account, true).await {
                tracing::error!(%error, "a wallet thawed for a reversal could not be frozen again");
                outcome = Err(error);
            }
        }
        outcome
    }

    /// Asks to reverse a completed P2P transfer (or a released review hold): the receiver's
    /// wallet pays the amount back to the payer's and is frozen. Done at once below the
    /// approval threshold, otherwise it waits for an approver.
    pub async fn request_reversal(
        &self,
        principal: &Principal,
        transfer: TransferId,
        case_id: Option<&str>,
        note: &str,
    ) -> Result<RiskAction, PayError> {
        let me = principal.operator(OPERATORS)?;
        let note = bounded_note(note)?;
        let (transfer, payer, receiver, amount, currency) = self.reversible(transfer).await?;
        let payer_user = self
            .wallet_of_account(payer)
            .await?
            .ok_or(PayError::NotFound)?
            .user_id;
        let id = koban_shared::new_id();
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        self.check_case(&mut tx, case_id).await?;
        let inserted = tx
            .execute(
                "INSERT INTO risk_actions (id, kind, case_id, transfer_id, customer, amount, currency, note, status, requested_by, requested_at) \
                 VALUES ($1, 'reverse', $2, $3, $4, $5, $6, $7, 'pending', $8, $9) ON CONFLICT DO NOTHING",
                params![
                    id.as_str(),
                    case_id,
                    transfer.to_bytes().to_vec(),
                    payer_user.as_str(),
                    amount.to_i64(),
                    currency.code(),
                    note,
                    me.operator_id.as_str(),
                    now
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(PayError::Conflict(
                "a reversal of this transfer is already pending or done",
            ));
        }
        // The whole transfer, unless a compensation already covers part of it: the victim is
        // never paid twice for one loss.
        if !losses::claim(&mut tx, transfer, amount, amount.minor_units()).await? {
            return Err(PayError::Conflict(
                "a compensation already covers this transfer; reject it before reversing",
            ));
        }
        audit::append(
            &mut tx, self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "risk.reversal_requested",
                subject: &format!("user:{payer_user}"),
                details: serde_json::json!({
                    "action": id, "case": case_id, "transfer": uuid::Uuid::from_u128(transfer.get()).to_string(),
                    "amount": amount.minor_units(), "currency": currency.code(), "receiver": uuid::Uuid::from_u128(receiver.get()).to_string(),
                }),
            },
        )
        .await?;
        tx.commit().await?;
        if !self.needs_approval("reverse", &id).await? {
            return self.execute_action(principal, &id, None).await;
        }
        self.risk_action(&id).await
    }

    /// Whether action `id` needs a second operator: its amount together with the same kind of
    /// actions of the last 24 hours for the same customer, or by the same requester, reaches
    /// the approval threshold (so splitting one large amount does not avoid approval).
    async fn needs_approval(&self, kind: &str, id: &str) -> Result<bool, PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_one(
                "SELECT CAST(COALESCE(SUM(o.amount), 0) AS BIGINT) FROM risk_actions a JOIN risk_actions o \
                 ON o.kind = a.kind AND (o.customer = a.customer OR o.requested_by = a.requested_by) \
                 WHERE a.id = $1 AND a.kind = $2 AND o.status IN ('pending', 'executing', 'done') AND o.requested_at >= $3",
                params![id, kind, self.now_ms() - 24 * 3_600_000],
            )
            .await?;
        tx.commit().await?;
        let total = crate::stored_minor(row.i64(0)?)?;
        Ok(total >= self.config.approval_from_minor)
    }

    /// Asks to compensate a victim for transfers they lost: a transfer from the fraud-losses
    /// account into their wallet, with the case attached. It covers `transfers` (each out of
    /// the victim's wallet, and the case's), is at most what they lost less what was already
    /// reversed or compensated, and always waits for a second operator.
    #[allow(clippy::too_many_arguments)]
    pub async fn request_compensation(
        &self,
        principal: &Principal,
        customer: &UserId,
        amount: Amount,
        currency: Currency,
        case_id: &str,
        transfers: &[TransferId],
        note: &str,
        key: &crate::IdempotencyKey,
    ) -> Result<RiskAction, PayError> {
        let me = principal.operator(OPERATORS)?;
        let note = bounded_note(note)?;
        self.currency_enabled(currency.code())?;
        losses::check_named(transfers)?;
        // A retry of the same request answers what the first one did.
        let request_key = self.compensation_key(&me.operator_id, key);
        let asked = (customer, amount, currency, case_id, transfers);
        if let Some(done) = self.replayed_compensation(&request_key, asked).await? {
            return Ok(done);
        }
        self.require_wallet_in(customer, currency).await?;
        let losses = self.covered_losses(customer, currency, transfers).await?;
        let id = koban_shared::new_id();
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        self.check_case(&mut tx, Some(case_id)).await?;
        customer_in_case(&mut tx, customer, case_id).await?;
        losses::losses_in_case(&mut tx, case_id, &losses).await?;
        let inserted = tx
            .execute(
                "INSERT INTO risk_actions (id, kind, case_id, customer, amount, currency, note, status, requested_by, requested_at, request_key) \
                 VALUES ($1, 'compensate', $2, $3, $4, $5, $6, 'pending', $7, $8, $9) ON CONFLICT DO NOTHING",
                params![
                    id.as_str(),
                    case_id,
                    customer,
                    amount.to_i64(),
                    currency.code(),
                    note,
                    me.operator_id.as_str(),
                    now,
                    request_key.as_str()
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(PayError::InFlight);
        }
        let shares = self.cover_losses(&mut tx, &id, &losses, amount).await?;
        audit::append(
            &mut tx, self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "risk.compensation_requested",
                subject: &format!("user:{customer}"),
                details: serde_json::json!({
                    "action": id, "case": case_id, "amount": amount.minor_units(), "currency": currency.code(),
                    "covers": shares,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        self.risk_action(&id).await
    }

    /// The compensation asked for before under this key, if any; refused when it was another
    /// request (customer, amount, currency, case or covered transfers differ).
    async fn replayed_compensation(
        &self,
        request_key: &str,
        (customer, amount, currency, case_id, transfers): (
            &UserId,
            Amount,
            Currency,
            &str,
            &[TransferId],
        ),
    ) -> Result<Option<RiskAction>, PayError> {
        let Some(done) = self.action_by_key(request_key).await? else {
            return Ok(None);
        };
        let done = self.risk_action(&done.id).await?;
        let mut named = Vec::with_capacity(transfers.len());
        for transfer in transfers {
            let transfer = self.released_as(*transfer).await?;
            named.push(uuid::Uuid::from_u128(transfer.get()).to_string());
        }
        named.sort();
        let same = done.customer == *customer
            && done.amount == amount.to_i64()
            && done.currency == currency.code()
            && done.case_id.as_deref() == Some(case_id)
            && done.covers == named;
        same.then_some(Some(done))
            .ok_or(PayError::IdempotencyMismatch)
    }

    /// Claims a compensation's amount against the losses it covers and records each share;
    /// answers the shares as the audit entry shows them.
    async fn cover_losses<T: SqlTx>(
        &self,
        tx: &mut T,
        id: &str,
        losses: &[Loss],
        amount: Amount,
    ) -> Result<Vec<serde_json::Value>, PayError> {
        let shares = losses::claim_losses(tx, losses, amount).await?;
        let mut shown = Vec::new();
        // Every named transfer is recorded, a share of 0 included, so a retry of the same
        // request names the same covers.
        for loss in losses {
            let transfer = loss.transfer;
            let share = shares
                .iter()
                .find(|(t, _)| *t == transfer)
                .map_or(0, |(_, share)| *share);
            tx.execute(
                "INSERT INTO compensation_covers (action_id, transfer_id, amount) VALUES ($1, $2, $3)",
                params![id, transfer.to_bytes(), crate::minor_to_i64(share)?],
            )
            .await?;
            shown.push(serde_json::json!({
                "transfer": uuid::Uuid::from_u128(transfer.get()).to_string(),
                "amount": share,
            }));
        }
        Ok(shown)
    }

    /// The key a compensation request is remembered by: per operator and idempotency key.
    fn compensation_key(&self, operator_id: &UserId, key: &crate::IdempotencyKey) -> String {
        uuid::Uuid::from_u128(
            self.derive_id(&[
                b"risk-compensation",
                operator_id.as_bytes(),
                key.as_str().as_bytes(),
            ])
            .get(),
        )
        .to_string()
    }

    /// Refuses a compensation in a currency the customer holds no wallet in.
    async fn require_wallet_in(
        &self,
        customer: &UserId,
        currency: Currency,
    ) -> Result<(), PayError> {
        let wallets = self.wallets_of(customer).await?;
        if wallets.iter().any(|(c, _)| *c == currency) {
            Ok(())
        } else {
            Err(PayError::Invalid(
                "this customer has no wallet in that currency",
            ))
        }
    }

    async fn action_by_key(&self, request_key: &str) -> Result<Option<RiskAction>, PayError> {
        let sql = concat!(
            "SELECT ",
            action_columns!(),
            " FROM risk_actions WHERE request_key = $1"
        );
        let mut tx = self.db().begin_read().await?;
        let row = tx.query_opt(sql, params![request_key]).await?;
        tx.commit().await?;
        row.as_ref().map(action_from).transpose()
    }

    /// Checks that `approver` may complete what `requester` asked for (`what`: reverse,
    /// compensate, release): a different operator, not linked to the requester by invitation
    /// (an admin could otherwise keep an invitee's enrolment link and be both). A refusal is
    /// audited and raised as an alert on the approver, in its own transaction.
    pub(crate) async fn second_operator(
        &self,
        principal: &Principal,
        requester: &str,
        approver: &str,
        what: &str,
    ) -> Result<(), PayError> {
        let why = if requester == approver {
            "a second operator must approve what you requested"
        } else if self.auth.linked_by_invitation(requester, approver).await? {
            "an operator who invited the requester, or whom the requester invited, cannot approve it"
        } else {
            return Ok(());
        };
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "risk.four_eyes_refused",
                subject: &format!("operator:{approver}"),
                details: serde_json::json!({ "what": what, "requested_by": requester, "why": why }),
            },
        )
        .await?;
        crate::cases::raise_alert(
            &mut tx,
            now,
            &crate::cases::NewAlert {
                rule: "ops.four_eyes_refused",
                reason: "four_eyes",
                action: "alert",
                score: 50,
                event_id: None,
                subject: approver,
                subject_role: "operator",
            },
        )
        .await?;
        tx.commit().await?;
        Err(PayError::Auth(koban_auth::AuthError::Forbidden(why)))
    }

    /// Approves or rejects a pending action (approver; never the operator who asked).
    pub async fn decide_action(
        &self,
        principal: &Principal,
        id: &str,
        verdict: Verdict,
    ) -> Result<RiskAction, PayError> {
        let me = principal.operator(&[Role::Approver])?;
        let action = self.risk_action(id).await?;
        // `executing`: an approval that stopped halfway (a crash) may be approved again; the
        // ledger id derives from the action, so the money still moves once.
        let open = match verdict {
            Verdict::Approve => matches!(action.status.as_str(), "pending" | "executing"),
            Verdict::Reject => action.status == "pending",
        };
        if !open {
            return Err(PayError::Conflict("this action was already decided"));
        }
        if verdict == Verdict::Approve {
            self.second_operator(
                principal,
                &action.requested_by,
                &me.operator_id,
                &action.kind,
            )
            .await?;
        } else if action.requested_by == me.operator_id {
            return Err(PayError::Auth(koban_auth::AuthError::Forbidden(
                "a second operator must approve what you requested",
            )));
        }
        match verdict {
            Verdict::Approve => {
                self.execute_action(principal, id, Some(&me.operator_id))
                    .await
            }
            Verdict::Reject => {
                let now = self.now_ms();
                let mut tx = self.db().begin().await?;
                let changed = tx
                    .execute(
                        "UPDATE risk_actions SET status = 'rejected', approved_by = $1, decided_at = $2 WHERE id = $3 AND status = 'pending'",
                        params![me.operator_id.as_str(), now, id],
                    )
                    .await?;
                if changed == 0 {
                    return Err(PayError::Conflict("this action was already decided"));
                }
                self.release_action_claims(&mut tx, &action).await?;
                audit::append(
                    &mut tx,
                    self.auth.audit_key(),
                    now,
                    AuditEvent {
                        actor: &principal.actor(),
                        action: "risk.action_rejected",
                        subject: &format!("user:{}", action.customer),
                        details: serde_json::json!({ "action": id, "kind": action.kind }),
                    },
                )
                .await?;
                tx.commit().await?;
                self.risk_action(id).await
            }
        }
    }

    /// Carries out a pending action: the ledger batch, then its row and audit entry.
    async fn execute_action(
        &self,
        principal: &Principal,
        id: &str,
        approver: Option<&str>,
    ) -> Result<RiskAction, PayError> {
        let asked = self.risk_action(id).await?;
        if asked.kind == "compensate" {
            self.check_covers(&asked).await?;
        }
        let (action, token) = self.claim_action(id, approver).await?;
        let ledger_id = self.derive_id(&[b"risk-action", id.as_bytes()]);
        let (outcome, receiver) = self.move_action(&action, ledger_id).await?;
        let status = match outcome {
            Ok(()) => "done",
            // An approved retry after a crash finds its transfer already recorded.
            Err(RejectReason::IdempotencyConflict) => return Err(PayError::IdempotencyMismatch),
            Err(_) => "refused",
        };
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let changed = tx
            .execute(
                "UPDATE risk_actions SET status = $1, decided_at = $2, ledger_id = $3 \
                 WHERE id = $4 AND status = 'executing' AND executing_token = $5",
                params![
                    status,
                    now,
                    (status == "done").then(|| ledger_id.to_bytes().to_vec()),
                    id,
                    token.as_str()
                ],
            )
            .await?;
        if changed == 0 {
            // This execution outlived its lease and another finished the action (the ledger
            // made one of them a replay): the recorded answer stands.
            drop(tx);
            tracing::error!(
                action = id,
                outcome = status,
                "a risk action's execution outlived its lease; the recorded outcome stands"
            );
            return self.risk_action(id).await;
        }
        if status == "refused" {
            self.release_action_claims(&mut tx, &action).await?;
        }
        self.record_action_outcome(
            &mut tx,
            principal,
            &action,
            (id, approver, status, now),
            ledger_id,
            receiver,
        )
        .await?;
        tx.commit().await?;
        let done = self.risk_action(id).await?;
        if status == "refused" {
            return Err(PayError::Conflict(if action.kind == "reverse" {
                "the receiving wallet no longer holds the funds; nothing was moved"
            } else {
                "the ledger refused the compensation; nothing was moved"
            }));
        }
        Ok(done)
    }

    /// The ledger batch of a claimed action: a reversal (answering the receiver it froze) or a
    /// compensation.
    async fn move_action(
        &self,
        action: &RiskAction,
        ledger_id: TransferId,
    ) -> Result<(Result<(), RejectReason>, Option<AccountId>), PayError> {
        let amount = Amount::from_i64(action.amount)
            .map_err(|_| PayError::Invalid("a stored amount is not valid"))?;
        let currency = currency_of(&action.currency)?;
        match action.kind.as_str() {
            "reverse" => {
                self.move_reversal(action, ledger_id, amount, currency)
                    .await
            }
            "compensate" => Ok((
                self.move_compensation(action, &action.id, ledger_id, amount, currency)
                    .await?,
                None,
            )),
            _ => Err(PayError::Invalid("unknown action kind")),
        }
    }

    /// Refuses to carry out a compensation whose covered shares do not add up to its amount
    /// (one asked for before compensations named the losses they pay for).
    async fn check_covers(&self, action: &RiskAction) -> Result<(), PayError> {
        let mut tx = self.db().begin_read().await?;
        let covered = tx
            .query_one(
                "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM compensation_covers WHERE action_id = $1",
                params![action.id.as_str()],
            )
            .await?
            .i64(0)?;
        tx.commit().await?;
        if covered != action.amount {
            return Err(PayError::Conflict(
                "this compensation names no losses it pays for; reject it and ask again naming the transfers",
            ));
        }
        Ok(())
    }

    /// Gives back what a rejected or refused action claimed against the losses it covers.
    async fn release_action_claims<T: SqlTx>(
        &self,
        tx: &mut T,
        action: &RiskAction,
    ) -> Result<(), PayError> {
        let transfer = action
            .transfer_id
            .as_deref()
            .and_then(|t| uuid::Uuid::parse_str(t).ok())
            .and_then(|u| TransferId::new(u.as_u128()).ok());
        losses::release_claims(tx, &action.id, &action.kind, transfer, action.amount).await
    }

    /// Claims an action for execution before any money moves, so a rejection racing this
    /// approval finds it taken; answers the action as claimed.
    /// One execution at a time: the claim carries a token the outcome must match, and an
    /// execution that stopped halfway (a crash) may be claimed again once its lease ran out.
    async fn claim_action(
        &self,
        id: &str,
        approver: Option<&str>,
    ) -> Result<(RiskAction, String), PayError> {
        let now = self.now_ms();
        let token = koban_shared::new_id();
        let mut tx = self.db().begin().await?;
        let claimed = tx
            .execute(
                "UPDATE risk_actions SET status = 'executing', approved_by = $1, executing_token = $2, executing_since = $3 \
                 WHERE id = $4 AND (status = 'pending' OR (status = 'executing' AND COALESCE(executing_since, 0) < $5))",
                params![approver, token.as_str(), now, id, now - EXECUTION_LEASE_MS],
            )
            .await?;
        tx.commit().await?;
        if claimed == 0 {
            let action = self.risk_action(id).await?;
            return Err(PayError::Conflict(if action.status == "executing" {
                "this action is being carried out; look again in a moment"
            } else {
                "this action was already decided"
            }));
        }
        Ok((self.risk_action(id).await?, token))
    }

    /// Moves a completed transfer's amount back from its receiver to its payer (through their
    /// freezes), and keeps the receiver frozen for the investigation when it moved.
    async fn move_reversal(
        &self,
        action: &RiskAction,
        ledger_id: TransferId,
        amount: Amount,
        currency: Currency,
    ) -> Result<(Result<(), RejectReason>, Option<AccountId>), PayError> {
        let transfer = action
            .transfer_id
            .as_deref()
            .and_then(|t| uuid::Uuid::parse_str(t).ok())
            .and_then(|u| TransferId::new(u.as_u128()).ok())
            .ok_or(PayError::Invalid("a stored transfer id is not valid"))?;
        let (_, payer, receiver, _, _) = self.reversible(transfer).await?;
        let _locks = self.lock_wallets(payer, receiver).await?;
        let batch = vec![TransferRequest::Move(Move {
            id: ledger_id,
            debit: receiver,
            credit: payer,
            amount,
            currency,
            code: kind::REVERSAL,
            reference: Some(transfer),
            metadata: Metadata::empty(),
            pending: None,
        })];
        let outcome = self
            .submit_through_freeze(&[receiver, payer], batch)
            .await?;
        if outcome.is_ok() {
            self.set_frozen(receiver, true).await?;
        }
        Ok((outcome, Some(receiver)))
    }

    /// Credits the customer's wallet from the issuer's fraud losses, with its e-money memo leg.
    async fn move_compensation(
        &self,
        action: &RiskAction,
        id: &str,
        ledger_id: TransferId,
        amount: Amount,
        currency: Currency,
    ) -> Result<Result<(), RejectReason>, PayError> {
        let wallet = self.wallet(&action.customer, currency).await?;
        let _lock = self.lock_wallet(wallet.account).await?;
        let memo = self.derive_id(&[b"risk-action-memo", id.as_bytes()]);
        let batch = vec![
            TransferRequest::Move(Move {
                id: ledger_id,
                debit: IssuerAccount::FraudLosses.id(currency),
                credit: wallet.account,
                amount,
                currency,
                code: kind::COMPENSATION,
                reference: None,
                metadata: Metadata::empty(),
                pending: None,
            }),
            emoney_leg(memo, currency, amount, true, Some(ledger_id), None),
        ];
        self.submit_through_freeze(&[wallet.account], batch).await
    }

    /// Writes what an executed action did into the audit chain and, when money moved, tells
    /// the customer and counts it, inside `tx` (the transaction that records its status).
    async fn record_action_outcome<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        action: &RiskAction,
        (id, approver, status, now): (&str, Option<&str>, &str, i64),
        ledger_id: TransferId,
        receiver: Option<AccountId>,
    ) -> Result<(), PayError> {
        let currency = currency_of(&action.currency)?;
        let money = format_money(action.amount.unsigned_abs(), currency);
        audit::append(
            tx, self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: match (action.kind.as_str(), status) {
                    ("reverse", "done") => "risk.reversal_done",
                    ("reverse", _) => "risk.reversal_refused",
                    (_, "done") => "risk.compensation_done",
                    _ => "risk.compensation_refused",
                },
                subject: &format!("user:{}", action.customer),
                details: serde_json::json!({
                    "action": id, "case": action.case_id, "amount": action.amount, "currency": action.currency,
                    "approved_by": approver, "ledger_id": uuid::Uuid::from_u128(ledger_id.get()).to_string(),
                    "receiver_frozen": receiver.map(|r| uuid::Uuid::from_u128(r.get()).to_string()),
                }),
            },
        )
        .await?;
        if status == "done" {
            let mail = if action.kind == "reverse" {
                Mail::new("money-returned")
            } else {
                Mail::new("money-compensated")
            };
            let mail = mail.arg("amount", &money);
            koban_shared::outbox::enqueue_to_user(
                tx,
                self.auth.vault(),
                now,
                &action.customer,
                &mail,
            )
            .await?;
            metrics::counter!(
                if action.kind == "reverse" { "koban_risk_reversed_minor_total" } else { "koban_risk_compensated_minor_total" },
                "currency" => action.currency.clone()
            )
            .increment(action.amount.unsigned_abs());
        }
        Ok(())
    }

    /// The transfer that moved the money, and its payer, receiver, amount and currency, for a
    /// transfer that can be reversed. A held transfer that was released is named by its hold
    /// or by its release; both answer the release, so one loss has one id.
    pub(crate) async fn reversible(
        &self,
        transfer: TransferId,
    ) -> Result<(TransferId, AccountId, AccountId, Amount, Currency), PayError> {
        let transfer = self.released_as(transfer).await?;
        let t = self
            .store
            .transfer(transfer)
            .await?
            .ok_or(PayError::NotFound)?;
        if t.kind != TransferKind::Posted {
            return Err(PayError::Invalid(
                "only a completed transfer can be reversed",
            ));
        }
        let payer = match t.code {
            kind::P2P => t.debit,
            kind::REVIEW_RELEASE => {
                let held = t
                    .reference
                    .ok_or(PayError::Invalid("this release names no held transfer"))?;
                let mut tx = self.db().begin_read().await?;
                let row = tx
                    .query_one(
                        "SELECT payer_account FROM held_transfers WHERE pending_id = $1",
                        params![held.to_bytes()],
                    )
                    .await?;
                tx.commit().await?;
                AccountId::from_bytes(&row.bytes(0)?)
                    .map_err(|_| PayError::Invalid("a stored id is not valid"))?
            }
            _ => {
                return Err(PayError::Invalid(
                    "only transfers between customers can be reversed",
                ));
            }
        };
        Ok((transfer, payer, t.credit, t.amount, t.currency))
    }

    /// The release of a held transfer named by its hold; any other transfer as it is named.
    async fn released_as(&self, transfer: TransferId) -> Result<TransferId, PayError> {
        let mut tx = self.db().begin_read().await?;
        let held = tx
            .query_opt(
                "SELECT status FROM held_transfers WHERE pending_id = $1",
                params![transfer.to_bytes()],
            )
            .await?;
        tx.commit().await?;
        match held {
            None => Ok(transfer),
            Some(row) if row.text(0)? == "released" => {
                Ok(self.derive_id(&[b"review-release", &transfer.to_bytes()]))
            }
            Some(_) => Err(PayError::Invalid(
                "this transfer was held and never released: nothing left the payer",
            )),
        }
    }

    async fn check_case<T: SqlTx>(
        &self,
        tx: &mut T,
        case_id: Option<&str>,
    ) -> Result<(), PayError> {
        if let Some(case_id) = case_id {
            tx.query_opt("SELECT 1 FROM risk_cases WHERE id = $1", params![case_id])
                .await?
                .ok_or(PayError::Invalid("case_id names no case"))?;
        }
        Ok(())
    }

    async fn risk_action(&self, id: &str) -> Result<RiskAction, PayError> {
        let sql = concat!(
            "SELECT ",
            action_columns!(),
            " FROM risk_actions WHERE id = $1"
        );
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(sql, params![id])
            .await?
            .ok_or(PayError::NotFound)?;
        let mut action = action_from(&row)?;
        action.covers = losses::covers(&mut tx, id).await?;
        tx.commit().await?;
        Ok(action)
    }

    /// Reversals and compensations, newest first; `status` pending, done, rejected, refused
    /// or all.
    pub async fn risk_actions(
        &self,
        principal: &Principal,
        status: Option<&str>,
    ) -> Result<Vec<RiskAction>, PayError> {
        principal.operator(OPERATORS)?;
        let status = match status.unwrap_or("pending") {
            s @ ("pending" | "done" | "rejected" | "refused") => s,
            "all" => "",
            _ => {
                return Err(PayError::Invalid(
                    "status must be pending, done, rejected, refused or all",
                ));
            }
        };
        let sql = concat!(
            "SELECT ",
            action_columns!(),
            " FROM risk_actions WHERE ($1 = '' OR status = $1) ORDER BY requested_at DESC, id DESC LIMIT 200"
        );
        let mut tx = self.db().begin_read().await?;
        let rows = tx.query(sql, params![status]).await?;
        let mut actions = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut action = action_from(row)?;
            if action.kind == "compensate" {
                action.covers = losses::covers(&mut tx, &action.id).await?;
            }
            actions.push(action);
        }
        tx.commit().await?;
        Ok(actions)
    }

    /// The measures of the fraud operation (operators).
    pub async fn risk_stats(&self, principal: &Principal) -> Result<RiskStats, PayError> {
        principal.operator(OPERATORS)?;
        self.risk_measures().await
    }

    /// [`Payments::risk_stats`] without the role check, for the metrics gauges.
    pub async fn risk_measures(&self) -> Result<RiskStats, PayError> {
        let mut tx = self.db().begin_read().await?;
        let pairs = |rows: Vec<Row>| -> Result<Vec<(String, i64)>, PayError> {
            rows.iter().map(|r| Ok((r.text(0)?, r.i64(1)?))).collect()
        };
        // The last day's, through the time indexes: never a scan of all history.
        let day = self.now_ms() - 24 * 3_600_000;
        let alerts_by_rule = pairs(
            tx.query(
                "SELECT rule, COUNT(*) FROM risk_alerts WHERE at >= $1 GROUP BY rule ORDER BY rule",
                params![day],
            )
            .await?,
        )?;
        let decisions_by_action = pairs(
            tx.query(
                "SELECT action, COUNT(*) FROM risk_events WHERE at >= $1 GROUP BY action ORDER BY action",
                params![day],
            )
            .await?,
        )?;
        let cases_open = tx
            .query_one(
                "SELECT COUNT(*) FROM risk_cases WHERE status = 'open'",
                vec![],
            )
            .await?
            .i64(0)?;
        let held = tx
            .query_one(
                "SELECT COUNT(*), CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM held_transfers WHERE status = 'held'",
                vec![],
            )
            .await?;
        let sums = tx
            .query_one(
                "SELECT CAST(COALESCE(SUM(CASE WHEN kind = 'compensate' THEN amount ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN kind = 'reverse' THEN amount ELSE 0 END), 0) AS BIGINT) FROM risk_actions WHERE status = 'done'",
                vec![],
            )
            .await?;
        let detect = tx
            .query(
                "SELECT first_alert_at - first_event_at FROM risk_cases ORDER BY opened_at DESC LIMIT 10000",
                vec![],
            )
            .await?;
        tx.commit().await?;
        let ms: Vec<i64> = detect.iter().map(|r| r.i64(0)).collect::<Result<_, _>>()?;
        Ok(RiskStats {
            alerts_by_rule,
            decisions_by_action,
            cases_open,
            holds_pending: held.i64(0)?,
            amount_held: held.i64(1)?,
            amount_lost: self.amounts_lost().await?,
            amount_compensated: sums.i64(0)?,
            amount_reversed: sums.i64(1)?,
            time_to_detect_s: Distribution::of_ms(ms),
        })
    }

    /// What fraud has cost the issuer, per currency: the net debits of its losses account.
    async fn amounts_lost(&self) -> Result<Vec<(String, i64)>, PayError> {
        let mut lost = Vec::new();
        for currency in &self.config.currencies {
            let account = self
                .ledger_account(IssuerAccount::FraudLosses.id(*currency))
                .await?;
            let net =
                (account.balance.debits_posted).saturating_sub(account.balance.credits_posted);
            lost.push((currency.code().to_owned(), crate::minor_to_i64(net)?));
        }
        Ok(lost)
    }

    /// Sets the fraud gauges on `/metrics` from [`Payments::risk_measures`].
    pub async fn publish_risk_gauges(&self) -> Result<(), PayError> {
        let stats = self.risk_measures().await?;
        metrics::gauge!("koban_risk_holds_pending").set(stats.holds_pending as f64);
        metrics::gauge!("koban_risk_amount_held_minor").set(stats.amount_held as f64);
        metrics::gauge!("koban_risk_cases_open").set(stats.cases_open as f64);
        metrics::gauge!("koban_risk_amount_compensated_minor").set(stats.amount_compensated as f64);
        metrics::gauge!("koban_risk_amount_reversed_minor").set(stats.amount_reversed as f64);
        for (currency, lost) in stats.amount_lost {
            metrics::gauge!("koban_risk_amount_lost_minor", "currency" => currency)
                .set(lost as f64);
        }
        Ok(())
    }
}

/// An operator's note or reason: 1 to 500 characters.
pub(crate) fn bounded_note(note: &str) -> Result<&str, PayError> {
    let note = note.trim();
    if note.is_empty() || note.chars().count() > 500 {
        return Err(PayError::Invalid("a note is 1 to 500 characters"));
    }
    Ok(note)
}

/// Refuses compensating anyone but a customer the case is about: its subject when the case is
/// about a customer (never the payee a fan-in case is about: that is the suspected mule), or
/// someone who paid its subject.
async fn customer_in_case<T: SqlTx>(
    tx: &mut T,
    customer: &UserId,
    case_id: &str,
) -> Result<(), PayError> {
    let in_case = tx
        .query_opt(
            "SELECT 1 FROM risk_cases c JOIN users u ON u.id = $1 AND u.kind = 'customer' \
             WHERE c.id = $2 AND ((c.subject = u.id AND c.subject_role = 'customer') OR EXISTS \
             (SELECT 1 FROM risk_events e WHERE e.payee = c.subject AND e.customer = u.id))",
            params![customer, case_id],
        )
        .await?;
    if in_case.is_none() {
        return Err(PayError::Invalid(
            "the customer must be the subject of a case about a customer, or have paid its subject",
        ));
    }
    Ok(())
}
