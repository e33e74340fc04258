//! A customer's rights in payments: what payments keep about them, for the export of their
//! data (`POST /v1/me/export`: wallets with their balances and statements, funding sources,
//! operations, codes, links, the identity check, held transfers and the risk decisions made
//! about them), and what closing their account needs (no money on it, none on its way) and
//! ends (payment codes, pay links, the handle).

use koban_auth::Principal;
use koban_shared::export::{Section, read_sections};
use koban_shared::ids::UserId;
use koban_shared::personal;
use koban_store::LedgerStore;
use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use serde_json::{Map, Value, json};

use crate::{PayError, Payments};

/// Why a closing is refused: money on the account ...
const MONEY_ON_IT: &str =
    "this account still holds money: pay it out to your bank account (or spend it) first";
/// ... or on its way to or from it.
const MONEY_ON_ITS_WAY: &str = "money is on its way to or from this account (a top-up, payout, card payment or a transfer under review): close it once that has settled";

const EXPORT: &[Section] = &[
    Section {
        name: "wallets",
        sql: "SELECT currency, account_id, created_at FROM wallets WHERE user_id = $1 ORDER BY created_at",
        columns: &["currency", "account_id", "created_at"],
        sealed: &[],
    },
    Section {
        name: "identity_check",
        sql: "SELECT legal_name, status, submitted_at, decided_at FROM kyc WHERE user_id = $1",
        columns: &["legal_name", "status", "submitted_at", "decided_at"],
        sealed: &[("legal_name", personal::KYC_LEGAL_NAME)],
    },
    Section {
        name: "handle",
        sql: "SELECT handle, created_at FROM handles WHERE user_id = $1",
        columns: &["handle", "created_at"],
        sealed: &[],
    },
    Section {
        name: "pay_links",
        sql: "SELECT id, amount, currency, message, expires_at, cancelled_at, created_at FROM pay_links \
              WHERE requester_id = $1 ORDER BY created_at",
        columns: &[
            "id",
            "amount",
            "currency",
            "message",
            "expires_at",
            "cancelled_at",
            "created_at",
        ],
        sealed: &[],
    },
    Section {
        name: "bank_accounts",
        sql: "SELECT id, bank, number, holder_name, status, verified_at, created_at FROM funding_sources \
              WHERE user_id = $1 ORDER BY created_at",
        columns: &[
            "id",
            "bank",
            "number",
            "holder_name",
            "status",
            "verified_at",
            "created_at",
        ],
        sealed: &[("holder_name", personal::FUNDING_HOLDER)],
    },
    Section {
        name: "top_up_cards",
        sql: "SELECT id, brand, last4, exp_month, exp_year, verified_at, created_at, removed_at FROM card_sources \
              WHERE user_id = $1 ORDER BY created_at",
        columns: &[
            "id",
            "brand",
            "last4",
            "exp_month",
            "exp_year",
            "verified_at",
            "created_at",
            "removed_at",
        ],
        sealed: &[],
    },
    Section {
        name: "bank_operations",
        sql: "SELECT id, kind, amount, currency, status, reference, created_at, settled_at FROM bank_operations \
              WHERE user_id = $1 ORDER BY created_at",
        columns: &[
            "id",
            "kind",
            "amount",
            "currency",
            "status",
            "reference",
            "created_at",
            "settled_at",
        ],
        sealed: &[],
    },
    Section {
        name: "payment_codes",
        sql: "SELECT id, currency, limit_minor, expires_at, used_at, revoked_at, created_at FROM payment_codes \
              WHERE user_id = $1 ORDER BY created_at",
        columns: &[
            "id",
            "currency",
            "limit_minor",
            "expires_at",
            "used_at",
            "revoked_at",
            "created_at",
        ],
        sealed: &[],
    },
    Section {
        name: "offline_purses",
        sql: "SELECT id, currency, amount, not_before, not_after, deadline, status, reserve_left, \
              created_at, closed_at FROM offline_purses WHERE user_id = $1 ORDER BY created_at",
        columns: &[
            "id",
            "currency",
            "amount",
            "not_before",
            "not_after",
            "deadline",
            "status",
            "reserve_left",
            "created_at",
            "closed_at",
        ],
        sealed: &[],
    },
    Section {
        name: "held_transfers",
        sql: "SELECT pending_id, amount, currency, reason, status, created_at, decided_at \
              FROM held_transfers WHERE payer_user = $1 ORDER BY created_at",
        columns: &[
            "pending_id",
            "amount",
            "currency",
            "reason",
            "status",
            "created_at",
            "decided_at",
        ],
        sealed: &[],
    },
    Section {
        name: "risk_decisions",
        // Their own actions only (as payee, the device and network would be the payer's),
        // and what was decided, not which rules fired: the rules are the fraud team's.
        sql: "SELECT id, at, kind, device, network, amount, currency, failed, action \
              FROM risk_events WHERE customer = $1 ORDER BY at",
        columns: &[
            "id", "at", "kind", "device", "network", "amount", "currency", "failed", "action",
        ],
        sealed: &[],
    },
];

impl<S: LedgerStore> Payments<S> {
    /// What payments keep about the caller, into `out`: the sections above, each wallet's
    /// balance, and its whole statement as CSV (`statements`).
    pub async fn export_into(
        &self,
        principal: &Principal,
        out: &mut Map<String, Value>,
    ) -> Result<(), PayError> {
        principal.full()?;
        let mut tx = self.db().begin_read().await?;
        read_sections(&mut tx, self.auth.vault(), &principal.user_id, EXPORT, out).await?;
        tx.commit().await?;
        let mut statements = Map::new();
        for currency in self.config.currencies.clone() {
            if self
                .find_wallet(&principal.user_id, currency)
                .await?
                .is_none()
            {
                continue;
            }
            let balance = self.wallet_view(principal, currency).await?.account.balance;
            let csv = self.statement_csv(principal, currency, 0, i64::MAX).await?;
            statements.insert(
                currency.code().to_owned(),
                json!({
                    "balance": i64::try_from(balance.net_credit_posted()).unwrap_or(i64::MAX),
                    "available": i64::try_from(balance.available_credit()).unwrap_or(i64::MAX),
                    "statement_csv": csv,
                }),
            );
        }
        out.insert("statements".into(), Value::Object(statements));
        Ok(())
    }

    /// Whether the account of `user_id` may close now: every wallet empty, no hold on it
    /// (a card payment, a payout or a review), and no bank operation still pending.
    pub async fn closable(&self, user_id: &UserId) -> Result<(), PayError> {
        for (_, wallet) in self.wallets_of(user_id).await? {
            let balance = self.ledger_account(wallet).await?.balance;
            if balance.credits_pending != 0 || balance.debits_pending != 0 {
                return Err(PayError::Conflict(MONEY_ON_ITS_WAY));
            }
            if balance.net_credit_posted() != 0 {
                return Err(PayError::Conflict(MONEY_ON_IT));
            }
        }
        let mut tx = self.db().begin_read().await?;
        let pending = tx
            .query_one(
                "SELECT COUNT(*) FROM bank_operations WHERE user_id = $1 AND status = 'pending'",
                params![user_id.as_str()],
            )
            .await?
            .i64(0)?;
        // A transfer to it held for review sits in suspense, not on its wallet.
        let held_to_it = tx
            .query_one(
                "SELECT COUNT(*) FROM held_transfers WHERE status = 'held' AND payee_account IN \
                 (SELECT account_id FROM wallets WHERE user_id = $1)",
                params![user_id.as_str()],
            )
            .await?
            .i64(0)?;
        // An offline purse's reserve comes back to the wallet only when its window ends.
        let purses = tx
            .query_one(
                "SELECT COUNT(*) FROM offline_purses WHERE user_id = $1 AND status <> 'closed'",
                params![user_id.as_str()],
            )
            .await?
            .i64(0)?;
        tx.commit().await?;
        if pending > 0 || held_to_it > 0 || purses > 0 {
            return Err(PayError::Conflict(MONEY_ON_ITS_WAY));
        }
        Ok(())
    }

    /// Closes every wallet of `user_id` in the ledger, which refuses it while the wallet holds
    /// money or a hold (decided with the ledger's own balances, so nothing slips in between)
    /// and afterwards refuses every credit and debit: no refund, reversal or late payment can
    /// reach a closed account. A wallet closed before (a retried closing) stays closed.
    pub async fn close_wallets(&self, user_id: &UserId) -> Result<(), PayError> {
        for (_, wallet) in self.wallets_of(user_id).await? {
            let _lock = self.lock_wallet(wallet).await?;
            match self
                .store
                .change_account_state(wallet, koban_ledger::StateChange::CloseEmpty)
                .await?
            {
                Ok(_) | Err(koban_ledger::StateChangeRejection::Closed) => {}
                Err(koban_ledger::StateChangeRejection::HasBalance) => {
                    return Err(PayError::Conflict(MONEY_ON_IT));
                }
                Err(koban_ledger::StateChangeRejection::HasPending) => {
                    return Err(PayError::Conflict(MONEY_ON_ITS_WAY));
                }
                Err(koban_ledger::StateChangeRejection::NotFound) => {
                    return Err(PayError::NotFound);
                }
            }
        }
        Ok(())
    }

    /// Whether every wallet of `user_id` is closed in the ledger and holds nothing (what
    /// erasure asks before it runs).
    pub(crate) async fn wallets_closed_and_empty(&self, user_id: &str) -> Result<bool, PayError> {
        for (_, wallet) in self.wallets_of(user_id).await? {
            let account = self.ledger_account(wallet).await?;
            let balance = account.balance;
            if !account.flags.closed
                || balance.net_credit_posted() != 0
                || balance.debits_pending != 0
                || balance.credits_pending != 0
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Ends what a closed account leaves behind in payments: its payment codes are revoked and
    /// its pay links cancelled. Its handle stays taken until erasure, so nobody else receives
    /// what old payers send to it.
    pub async fn wind_down(&self, user_id: &UserId) -> Result<(), PayError> {
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE payment_codes SET revoked_at = $1 WHERE user_id = $2 AND used_at IS NULL AND revoked_at IS NULL",
            params![now, user_id.as_str()],
        )
        .await?;
        tx.execute(
            "UPDATE pay_links SET cancelled_at = $1 WHERE requester_id = $2 AND cancelled_at IS NULL",
            params![now, user_id.as_str()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
