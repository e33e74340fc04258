//! Wallets: one ledger account per holder and currency (customers and merchants alike), the
//! verification tier that sets a customer's limits, identity checks (KYC) decided by an
//! operator, history pages and CSV statements, and the e-money reconciliation.

use koban_auth::{LegalName, Principal, Role, UserKind};
use koban_ledger::{
    Account, AccountId, Amount, Currency, Metadata, Move, NewAccount, Transfer, TransferId,
    TransferKind, TransferRequest,
};
use koban_shared::audit::{self, AuditEvent};
use koban_shared::ids::UserId;
use koban_shared::mail::Mail;
use koban_shared::personal::{self, Index, Vault};
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt, Value};
use koban_store::{LedgerStore, PageRequest, params};

use crate::accounts::{self, IssuerAccount, kind};
use crate::{IdempotencyKey, PayError, Payments, TierLimits};

/// A holder's account in one currency.
#[derive(Clone, Debug)]
pub struct Wallet {
    pub user_id: UserId,
    pub currency: Currency,
    pub account: AccountId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Unverified,
    Verified,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Unverified => "unverified",
            Tier::Verified => "verified",
        }
    }
}

/// Who holds an account, as payments needs to know them.
#[derive(Clone, Debug)]
pub struct Holder {
    pub user_id: UserId,
    pub kind: UserKind,
    pub email: String,
    pub display_name: String,
    pub active: bool,
    pub tier: Tier,
    /// The legal name an operator approved, for matching bank account holders.
    pub verified_name: Option<String>,
}

/// How to find a holder.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PartyKey<'a> {
    Id(&'a str),
    Email(&'a str),
    Phone(&'a str),
    Handle(&'a str),
}

/// A wallet with its balance and the limits that apply to it.
#[derive(Clone, Debug)]
pub struct WalletView {
    pub wallet: Wallet,
    pub tier: Tier,
    pub account: Account,
    pub limits: TierLimits,
    pub spent_today: u64,
}

/// One line of a wallet's history.
#[derive(Clone, Debug)]
pub struct Entry {
    pub transfer: Transfer,
    /// True when money came in.
    pub incoming: bool,
    pub kind: &'static str,
    pub status: &'static str,
}

pub const DAY_MS: i64 = 86_400_000;

/// Most rows one CSV statement holds.
pub const STATEMENT_ROWS_MAX: usize = 10_000;

/// The largest amount the sandbox faucet credits at once.
pub const FAUCET_MAX: u64 = 100_000;

pub fn currency_of(code: &str) -> Result<Currency, PayError> {
    Currency::parse(code).map_err(|_| PayError::Invalid("unknown currency in a stored row"))
}

pub fn account_id(bytes: &[u8]) -> Result<AccountId, PayError> {
    AccountId::from_bytes(bytes).map_err(|_| PayError::Invalid("a stored account id is not valid"))
}

pub(crate) fn entry(transfer: Transfer, account: AccountId) -> Entry {
    let incoming = transfer.credit == account;
    let status = match transfer.kind {
        TransferKind::Posted => "posted",
        TransferKind::Pending { .. } => "pending",
        TransferKind::PostPending { .. } => "posted",
        TransferKind::VoidPending { .. } => "released",
        TransferKind::ExpirePending { .. } => "expired",
    };
    Entry {
        kind: kind::name(transfer.code),
        incoming,
        status,
        transfer,
    }
}

impl<S: LedgerStore> Payments<S> {
    /// The holder of `user_id`, or `NotFound`.
    pub async fn holder(&self, user_id: &UserId) -> Result<Holder, PayError> {
        Ok(self
            .party(PartyKey::Id(user_id), self.config.currencies[0])
            .await?
            .ok_or(PayError::NotFound)?
            .0)
    }

    /// A holder and their wallet account in `currency` (if opened), in one read.
    pub(crate) async fn party(
        &self,
        key: PartyKey<'_>,
        currency: Currency,
    ) -> Result<Option<(Holder, Option<AccountId>)>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let party = Self::party_in(&mut tx, self.auth.vault(), key, currency).await?;
        tx.commit().await?;
        Ok(party)
    }

    /// [`Payments::party`], read in the caller's transaction.
    pub(crate) async fn party_in<T: SqlTx>(
        tx: &mut T,
        vault: &Vault,
        key: PartyKey<'_>,
        currency: Currency,
    ) -> Result<Option<(Holder, Option<AccountId>)>, PayError> {
        let (sql, value): (&'static str, Value) = match key {
            PartyKey::Id(id) => (
                "SELECT u.id, u.kind, u.email, u.display_name, u.status, k.status, k.legal_name, w.account_id \
                 FROM users u LEFT JOIN kyc k ON k.user_id = u.id \
                 LEFT JOIN wallets w ON w.user_id = u.id AND w.currency = $1 WHERE u.id = $2",
                id.into(),
            ),
            PartyKey::Email(email) => (
                "SELECT u.id, u.kind, u.email, u.display_name, u.status, k.status, k.legal_name, w.account_id \
                 FROM users u LEFT JOIN kyc k ON k.user_id = u.id \
                 LEFT JOIN wallets w ON w.user_id = u.id AND w.currency = $1 \
                 WHERE u.email_index = $2 AND u.email_verified_at IS NOT NULL",
                vault.index(Index::Email, email).into(),
            ),
            PartyKey::Handle(handle) => (
                "SELECT u.id, u.kind, u.email, u.display_name, u.status, k.status, k.legal_name, w.account_id \
                 FROM handles h JOIN users u ON u.id = h.user_id LEFT JOIN kyc k ON k.user_id = u.id \
                 LEFT JOIN wallets w ON w.user_id = u.id AND w.currency = $1 \
                 WHERE h.handle = $2 AND u.email_verified_at IS NOT NULL",
                handle.into(),
            ),
            PartyKey::Phone(phone) => (
                "SELECT u.id, u.kind, u.email, u.display_name, u.status, k.status, k.legal_name, w.account_id \
                 FROM users u LEFT JOIN kyc k ON k.user_id = u.id \
                 LEFT JOIN wallets w ON w.user_id = u.id AND w.currency = $1 \
                 WHERE u.phone_index = $2 AND u.email_verified_at IS NOT NULL \
                 AND u.kind = 'customer' AND u.status = 'active' LIMIT 2",
                vault.index(Index::Phone, phone).into(),
            ),
        };
        let mut rows = tx.query(sql, vec![currency.code().into(), value]).await?;
        // Phone numbers are not unique: two customers giving the same one could be mistaken
        // for each other, so a number that names more than one is refused.
        if rows.len() > 1 {
            return Err(PayError::Invalid(
                "this phone number does not name one customer; pay by e-mail address or handle",
            ));
        }
        let Some(row) = rows.pop() else {
            return Ok(None);
        };
        let approved = row.opt_text(5)?.as_deref() == Some("approved");
        let holder = Holder {
            user_id: UserId::from_stored(row.text(0)?),
            kind: UserKind::parse(&row.text(1)?)?,
            email: vault.open(&personal::USER_EMAIL, &row.text(2)?)?,
            display_name: vault.open(&personal::USER_DISPLAY_NAME, &row.text(3)?)?,
            active: row.text(4)? == "active",
            tier: if approved {
                Tier::Verified
            } else {
                Tier::Unverified
            },
            verified_name: if approved {
                vault.open_opt(&personal::KYC_LEGAL_NAME, row.opt_text(6)?.as_deref())?
            } else {
                None
            },
        };
        let account = row.opt_bytes(7)?.map(|b| account_id(&b)).transpose()?;
        Ok(Some((holder, account)))
    }

    /// A holder's wallet in `currency`, from a `party` read, opening it if needed.
    pub(crate) async fn wallet_from(
        &self,
        holder: &Holder,
        account: Option<AccountId>,
        currency: Currency,
    ) -> Result<Wallet, PayError> {
        match account {
            Some(account) => Ok(Wallet {
                user_id: holder.user_id.clone(),
                currency,
                account,
            }),
            None => self.wallet(&holder.user_id, currency).await,
        }
    }

    /// The wallet of `user_id` in `currency`, opened on first use.
    pub async fn wallet(&self, user_id: &UserId, currency: Currency) -> Result<Wallet, PayError> {
        if let Some(wallet) = self.find_wallet(user_id, currency).await? {
            return Ok(wallet);
        }
        let holder = self.holder(user_id).await?;
        let code = match holder.kind {
            UserKind::Customer => accounts::WALLET,
            UserKind::Merchant => accounts::MERCHANT,
            UserKind::Operator => return Err(PayError::Invalid("operators have no wallet")),
        };
        // The ledger account first: if another request opens the same wallet at the same
        // time, the loser's account stays empty and unused.
        let candidate = AccountId::new(uuid::Uuid::now_v7().as_u128())
            .map_err(|_| PayError::Invalid("a new account id was zero"))?;
        for result in self
            .store
            .create_accounts(vec![NewAccount {
                id: candidate,
                currency,
                code,
                flags: accounts::holder_flags(),
            }])
            .await?
        {
            result.map_err(|_| PayError::Conflict("the wallet could not be opened"))?;
        }
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO wallets (user_id, currency, account_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, currency) DO NOTHING",
            params![user_id, currency.code(), candidate.to_bytes(), self.now_ms()],
        )
        .await?;
        tx.commit().await?;
        self.find_wallet(user_id, currency)
            .await?
            .ok_or(PayError::NotFound)
    }

    pub(crate) async fn find_wallet(
        &self,
        user_id: &UserId,
        currency: Currency,
    ) -> Result<Option<Wallet>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT account_id FROM wallets WHERE user_id = $1 AND currency = $2",
                params![user_id.as_str(), currency.code()],
            )
            .await?;
        tx.commit().await?;
        row.map(|row| {
            Ok(Wallet {
                user_id: user_id.clone(),
                currency,
                account: account_id(&row.bytes(0)?)?,
            })
        })
        .transpose()
    }

    /// The wallet that owns ledger account `account`, if any.
    pub(crate) async fn wallet_of_account(
        &self,
        account: AccountId,
    ) -> Result<Option<Wallet>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT user_id, currency FROM wallets WHERE account_id = $1",
                params![account.to_bytes()],
            )
            .await?;
        tx.commit().await?;
        row.map(|row| {
            Ok(Wallet {
                user_id: UserId::from_stored(row.text(0)?),
                currency: currency_of(&row.text(1)?)?,
                account,
            })
        })
        .transpose()
    }

    /// The other party of each of `entries` of wallet account `account`, as its owner may see
    /// it: a customer's masked display name, a merchant's name, or `None` for the issuer's own
    /// accounts (bank settlement, suspense, ...).
    pub async fn counterparties(
        &self,
        account: AccountId,
        entries: &[Entry],
    ) -> Result<Vec<Option<String>>, PayError> {
        let mut names: std::collections::HashMap<AccountId, Option<String>> =
            std::collections::HashMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let other = if entry.transfer.debit == account {
                entry.transfer.credit
            } else {
                entry.transfer.debit
            };
            let name = match names.get(&other) {
                Some(name) => name.clone(),
                None => {
                    let name = match self.wallet_of_account(other).await? {
                        Some(wallet) => {
                            let holder = self.holder(&wallet.user_id).await?;
                            Some(match holder.kind {
                                UserKind::Merchant => holder.display_name,
                                _ => crate::mask_name(&holder.display_name),
                            })
                        }
                        None => None,
                    };
                    names.insert(other, name.clone());
                    name
                }
            };
            out.push(name);
        }
        Ok(out)
    }

    pub fn limits(&self, tier: Tier) -> TierLimits {
        match tier {
            Tier::Unverified => self.config.unverified,
            Tier::Verified => self.config.verified,
        }
    }

    /// An account as the ledger keeps it. Its balance is checked against its flags as read
    /// back (in release builds too): a wallet is never overdrawn.
    pub async fn ledger_account(&self, id: AccountId) -> Result<Account, PayError> {
        let account = self.store.account(id).await?.ok_or(PayError::NotFound)?;
        assert!(
            account.balance.within_limits(account.flags),
            "an account's balance read back breaks its limit flags"
        );
        Ok(account)
    }

    /// What left `account` today (UTC): posted and pending debits since midnight.
    pub async fn spent_today(&self, account: &Account) -> Result<u64, PayError> {
        Ok(self.spent_today_and_known(account, None).await?.0)
    }

    /// [`Payments::spent_today`], and in the same read whether `payer` has paid `payee`.
    pub(crate) async fn spent_today_and_known(
        &self,
        account: &Account,
        payee_of: Option<(&str, AccountId)>,
    ) -> Result<(u64, bool), PayError> {
        let day = self.now_ms().div_euclid(DAY_MS);
        let mut tx = self.db().begin_read().await?;
        let stored = tx
            .query_opt(
                "SELECT debits_at_start FROM wallet_days WHERE account_id = $1 AND day = $2",
                params![account.id.to_bytes(), day],
            )
            .await?;
        let known = match payee_of {
            Some((user_id, payee)) => tx
                .query_opt(
                    "SELECT 1 FROM payees WHERE user_id = $1 AND payee_account = $2",
                    params![user_id, payee.to_bytes()],
                )
                .await?
                .is_some(),
            None => false,
        };
        tx.commit().await?;
        let stored = match stored {
            Some(row) => Some(crate::stored_minor(row.i64(0)?)?),
            None => None,
        };
        Ok((self.spent_today_from(account, stored).await?, known))
    }

    /// [`Payments::spent_today`] when the caller already read today's `wallet_days` row
    /// (`stored`); records the day's start when there is none yet.
    pub async fn spent_today_from(
        &self,
        account: &Account,
        stored: Option<u64>,
    ) -> Result<u64, PayError> {
        let day = self.now_ms().div_euclid(DAY_MS);
        // Posted since midnight plus everything pending now: a hold from an earlier day counts
        // again while it is pending (never less than what really left today), and a hold
        // released today cannot give back allowance it never took today.
        let total = account
            .balance
            .debits_posted
            .saturating_add(account.balance.debits_pending);
        let start = match stored {
            Some(start) => start,
            None => {
                let midnight = koban_ledger::Timestamp::from_nanos(
                    u64::try_from(day * DAY_MS).unwrap_or(0) * 1_000_000,
                );
                let start = match self.store.balance_at(account.id, midnight).await? {
                    Some(b) => b.debits_posted,
                    None => 0,
                };
                let mut tx = self.db().begin().await?;
                tx.execute(
                    "INSERT INTO wallet_days (account_id, day, debits_at_start) VALUES ($1, $2, $3) \
                     ON CONFLICT (account_id, day) DO NOTHING",
                    params![
                        account.id.to_bytes(),
                        day,
                        i64::try_from(start).unwrap_or(i64::MAX)
                    ],
                )
                .await?;
                tx.commit().await?;
                start
            }
        };
        Ok(total.saturating_sub(start))
    }

    /// The caller's wallet in `currency`, with balance and limits.
    pub async fn wallet_view(
        &self,
        principal: &Principal,
        currency: Currency,
    ) -> Result<WalletView, PayError> {
        principal.full()?;
        let holder = self.holder(&principal.user_id).await?;
        let wallet = self.wallet(&principal.user_id, currency).await?;
        let account = self.ledger_account(wallet.account).await?;
        let spent_today = self.spent_today(&account).await?;
        Ok(WalletView {
            tier: holder.tier,
            limits: self.limits(holder.tier),
            wallet,
            account,
            spent_today,
        })
    }

    /// One page of the caller's history, newest first: up to `limit` entries older than
    /// `starting_after` (a transfer id from an earlier page); `kinds` keeps only those kinds.
    pub async fn history(
        &self,
        principal: &Principal,
        currency: Currency,
        starting_after: Option<TransferId>,
        limit: usize,
        kinds: &[String],
    ) -> Result<(Vec<Entry>, bool), PayError> {
        principal.full()?;
        let wallet = self.wallet(&principal.user_id, currency).await?;
        self.account_history(wallet.account, starting_after, limit, kinds)
            .await
    }

    pub(crate) async fn account_history(
        &self,
        account: AccountId,
        starting_after: Option<TransferId>,
        limit: usize,
        kinds: &[String],
    ) -> Result<(Vec<Entry>, bool), PayError> {
        if limit == 0 || limit > 100 {
            return Err(PayError::Invalid("limit must be between 1 and 100"));
        }
        let mut cursor = match starting_after {
            None => None,
            Some(id) => {
                let after = self.store.transfer(id).await?.ok_or(PayError::Invalid(
                    "starting_after names no entry of this wallet",
                ))?;
                match after.side(account) {
                    Some((prev, _)) => prev,
                    None => {
                        return Err(PayError::Invalid(
                            "starting_after names no entry of this wallet",
                        ));
                    }
                }
            }
        };
        if starting_after.is_some() && cursor.is_none() {
            return Ok((Vec::new(), false));
        }
        let mut out = Vec::new();
        // A filter may skip many entries; read at most 20 pages for one answer.
        for _ in 0..20 {
            let page = self
                .store
                .account_transfers(account, page_request(cursor, 100)?)
                .await?
                .ok_or(PayError::NotFound)?;
            for transfer in page.transfers {
                let entry = entry(transfer, account);
                if kinds.is_empty() || kinds.iter().any(|k| k == entry.kind) {
                    if out.len() == limit {
                        return Ok((out, true));
                    }
                    out.push(entry);
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok((out, false)),
            }
        }
        let more = cursor.is_some();
        Ok((out, more))
    }

    /// The caller's statement between two instants as CSV (newest first, at most 10,000 rows).
    pub async fn statement_csv(
        &self,
        principal: &Principal,
        currency: Currency,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<String, PayError> {
        principal.full()?;
        if from_ms > to_ms {
            return Err(PayError::Invalid("from must not be after to"));
        }
        let wallet = self.wallet(&principal.user_id, currency).await?;
        let mut csv = String::from(
            "id,time_ms,kind,status,direction,amount_minor,currency,balance_after_minor,message\n",
        );
        let mut cursor = None;
        let mut rows = 0;
        'pages: loop {
            let page = self
                .store
                .account_transfers(wallet.account, page_request(cursor, 200)?)
                .await?
                .ok_or(PayError::NotFound)?;
            for transfer in page.transfers {
                let at_ms = i64::try_from(transfer.timestamp.nanos() / 1_000_000).unwrap_or(0);
                if at_ms < from_ms {
                    break 'pages;
                }
                if at_ms > to_ms {
                    continue;
                }
                csv.push_str(&statement_line(transfer, wallet.account, at_ms)?);
                rows += 1;
                if rows == STATEMENT_ROWS_MAX {
                    break 'pages;
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(csv)
    }

    /// Asks for verification with the caller's legal name; an operator decides.
    pub async fn submit_kyc(
        &self,
        principal: &Principal,
        legal_name: &LegalName,
    ) -> Result<(), PayError> {
        principal.full()?;
        if principal.kind == UserKind::Operator {
            return Err(PayError::Invalid("operators are not verified this way"));
        }
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let changed = tx
            .execute(
                "INSERT INTO kyc (user_id, legal_name, status, submitted_at) VALUES ($1, $2, 'pending', $3) \
                 ON CONFLICT (user_id) DO UPDATE SET legal_name = $2, status = 'pending', submitted_at = $3, \
                 decided_at = NULL, decided_by = NULL WHERE kyc.status <> 'approved'",
                params![
                    principal.user_id.as_str(),
                    self.auth.vault().seal(&personal::KYC_LEGAL_NAME, legal_name.as_str()),
                    now
                ],
            )
            .await?;
        if changed == 0 {
            return Err(PayError::Conflict("the identity is already verified"));
        }
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "kyc.submitted",
                subject: &principal.user_id,
                details: serde_json::json!({}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Verification requests waiting for an operator: (user id, legal name, submitted at).
    pub async fn pending_kyc(
        &self,
        principal: &Principal,
    ) -> Result<Vec<(String, String, i64)>, PayError> {
        principal.operator(&[Role::Support, Role::Approver])?;
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT user_id, legal_name, submitted_at FROM kyc WHERE status = 'pending' \
                 ORDER BY submitted_at LIMIT 200",
                vec![],
            )
            .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| {
                let name = (self.auth.vault()).open(&personal::KYC_LEGAL_NAME, &r.text(1)?)?;
                Ok((r.text(0)?, name, r.i64(2)?))
            })
            .collect()
    }

    /// The legal name of a pending verification request in full, for the operator who decides
    /// it: the reason and the operator are recorded in the audit chain as the name is read.
    pub async fn reveal_kyc_name(
        &self,
        principal: &Principal,
        user_id: &UserId,
        reason: &str,
    ) -> Result<String, PayError> {
        principal.operator(&[Role::Support, Role::Approver])?;
        let reason = koban_auth::customers::check_reason(reason)?;
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let name = tx
            .query_opt(
                "SELECT legal_name FROM kyc WHERE user_id = $1 AND status = 'pending'",
                params![user_id],
            )
            .await?
            .ok_or(PayError::NotFound)?
            .text(0)?;
        let name = (self.auth.vault()).open(&personal::KYC_LEGAL_NAME, &name)?;
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "kyc.name_revealed",
                subject: user_id,
                details: serde_json::json!({ "reason": reason }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(name)
    }

    /// An operator approves or rejects a verification request; the holder is told.
    pub async fn decide_kyc(
        &self,
        principal: &Principal,
        user_id: &UserId,
        seen_name: &str,
        approve: bool,
    ) -> Result<(), PayError> {
        let operator = principal.operator(&[Role::Support, Role::Approver])?;
        let now = self.now_ms();
        let status = if approve { "approved" } else { "rejected" };
        let mut tx = self.db().begin().await?;
        let vault = self.auth.vault();
        let sealed = tx
            .query_opt(
                "SELECT legal_name FROM kyc WHERE user_id = $1 AND status = 'pending'",
                params![user_id],
            )
            .await?
            .ok_or(PayError::NotFound)?
            .text(0)?;
        let name = vault.open(&personal::KYC_LEGAL_NAME, &sealed)?;
        if name != seen_name {
            return Err(PayError::NotFound);
        }
        // Only the name the operator saw: a resubmission in between (sealed anew) needs a
        // new look.
        tx.query_opt(
            "UPDATE kyc SET status = $1, decided_at = $2, decided_by = $3 \
             WHERE user_id = $4 AND status = 'pending' AND legal_name = $5 RETURNING user_id",
            params![status, now, operator.operator_id.as_str(), user_id, sealed],
        )
        .await?
        .ok_or(PayError::NotFound)?;
        if approve {
            tx.execute(
                "UPDATE users SET legal_name = $1 WHERE id = $2",
                params![vault.seal(&personal::USER_LEGAL_NAME, &name), user_id],
            )
            .await?;
        }
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: if approve {
                    "kyc.approved"
                } else {
                    "kyc.rejected"
                },
                subject: user_id,
                details: serde_json::json!({}),
            },
        )
        .await?;
        let mail = if approve {
            Mail::new("kyc-approved")
        } else {
            Mail::new("kyc-rejected")
        };
        koban_shared::outbox::enqueue_to_user(&mut tx, self.auth.vault(), now, user_id, &mail)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Per currency: what e-money outstanding says, and what the customer wallets hold, read
    /// in one statement (one snapshot, so payments in flight cannot make them differ). Reads
    /// every customer wallet: once a minute, or on an operator's request, not per payment.
    pub async fn reconcile(&self) -> Result<Vec<(Currency, i128, i128)>, PayError> {
        let mut out = Vec::new();
        for currency in &self.config.currencies {
            let mut tx = self.db().begin_read().await?;
            let row = tx
                .query_one(
                    "SELECT \
                     (SELECT CAST(credits_posted - debits_posted AS BIGINT) FROM accounts WHERE id = $1), \
                     (SELECT CAST(COALESCE(SUM(a.credits_posted - a.debits_posted), 0) AS BIGINT) \
                      FROM wallets w JOIN users u ON u.id = w.user_id JOIN accounts a ON a.id = w.account_id \
                      WHERE u.kind = 'customer' AND w.currency = $2)",
                    params![
                        IssuerAccount::EmoneyOutstanding
                            .id(*currency)
                            .to_bytes()
                            .to_vec(),
                        currency.code()
                    ],
                )
                .await?;
            tx.commit().await?;
            let outstanding = row.opt_i64(0)?.unwrap_or(0);
            out.push((*currency, i128::from(outstanding), i128::from(row.i64(1)?)));
        }
        Ok(out)
    }

    /// Per currency: e-money outstanding less what the customer wallets hold ([`Payments::reconcile`]);
    /// anything but zero means the books disagree with the wallets.
    pub async fn reconciliation_gaps(&self) -> Result<Vec<(Currency, i64)>, PayError> {
        Ok(self
            .reconcile()
            .await?
            .into_iter()
            .map(|(currency, outstanding, wallets)| {
                let gap = outstanding - wallets;
                (
                    currency,
                    i64::try_from(gap).unwrap_or(if gap < 0 { i64::MIN } else { i64::MAX }),
                )
            })
            .collect())
    }

    /// Sandbox only: credits test money to the caller's wallet (within its tier's balance cap).
    pub async fn faucet(
        &self,
        principal: &Principal,
        currency: Currency,
        amount: koban_ledger::Amount,
        key: &IdempotencyKey,
    ) -> Result<Transfer, PayError> {
        if !self.config.sandbox {
            return Err(PayError::NotFound);
        }
        principal.can_move_money()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("the faucet fills customer wallets only"));
        }
        if amount.minor_units() > FAUCET_MAX {
            return Err(PayError::Invalid(
                "the faucet gives at most 100,000 minor units at once",
            ));
        }
        let id = self.derive_id(&[
            b"faucet",
            principal.user_id.as_bytes(),
            key.as_str().as_bytes(),
        ]);
        let _claim = self.claim(id).await?;
        let holder = self.holder(&principal.user_id).await?;
        let wallet = self.wallet(&principal.user_id, currency).await?;
        if let Some(done) = self.store.transfer(id).await? {
            return if done.credit == wallet.account && done.amount == amount {
                Ok(done)
            } else {
                Err(PayError::IdempotencyMismatch)
            };
        }
        let account = self.ledger_account(wallet.account).await?;
        self.check_balance_cap(&holder, &account, amount)?;
        let memo = self.derive_id(&[b"faucet-memo", &id.to_bytes()]);
        let batch = vec![
            TransferRequest::Move(Move {
                id,
                debit: IssuerAccount::BankSettlement.id(currency),
                credit: wallet.account,
                amount,
                currency,
                code: kind::SANDBOX_FAUCET,
                reference: None,
                metadata: Metadata::empty(),
                pending: None,
            }),
            emoney_leg(memo, currency, amount, true, None, None),
        ];
        let applied = self.submit_batch(batch).await?;
        Ok(applied.transfers[0].clone())
    }

    /// Refuses a credit that would lift a customer wallet above its tier's balance cap.
    pub fn check_balance_cap(
        &self,
        holder: &Holder,
        account: &Account,
        amount: Amount,
    ) -> Result<(), PayError> {
        if holder.kind != UserKind::Customer {
            return Ok(());
        }
        let cap = self.limits(holder.tier).balance_max;
        let after = i128::from(account.balance.credits_posted)
            + i128::from(account.balance.credits_pending)
            - i128::from(account.balance.debits_posted)
            + i128::from(amount.minor_units());
        if after > i128::from(cap) {
            return Err(PayError::Limit {
                code: "balance_limit",
                detail: format!(
                    "the receiving wallet may hold at most {} at its verification level",
                    crate::format_money(cap, account.currency)
                ),
            });
        }
        Ok(())
    }
}

/// The memo leg that keeps e-money outstanding equal to the sum of customer wallets: `up`
/// when customers' e-money grows (top-up, refund), down when it shrinks (payout, purchase).
pub fn emoney_leg(
    id: TransferId,
    currency: Currency,
    amount: koban_ledger::Amount,
    up: bool,
    reference: Option<TransferId>,
    pending: Option<koban_ledger::PendingOptions>,
) -> TransferRequest {
    let (debit, credit) = if up {
        (
            IssuerAccount::EmoneyControl.id(currency),
            IssuerAccount::EmoneyOutstanding.id(currency),
        )
    } else {
        (
            IssuerAccount::EmoneyOutstanding.id(currency),
            IssuerAccount::EmoneyControl.id(currency),
        )
    };
    TransferRequest::Move(Move {
        id,
        debit,
        credit,
        amount,
        currency,
        code: kind::EMONEY,
        reference,
        metadata: Metadata::empty(),
        pending,
    })
}

/// One line of a CSV statement: the transfer as the wallet sees it, with the balance after it.
fn statement_line(transfer: Transfer, wallet: AccountId, at_ms: i64) -> Result<String, PayError> {
    let balance = transfer
        .side(wallet)
        .map(|(_, b)| b.net_credit_posted())
        .ok_or(PayError::Auth(koban_auth::AuthError::Internal(
            "a statement's transfer does not touch its wallet",
        )))?;
    let message = transfer
        .metadata
        .iter()
        .find(|(k, _)| *k == "message")
        .map(|(_, v)| csv_text(v))
        .unwrap_or_default();
    let e = entry(transfer, wallet);
    Ok(format!(
        "{},{},{},{},{},{},{},{},\"{}\"\n",
        uuid::Uuid::from_u128(e.transfer.id.get()),
        at_ms,
        e.kind,
        e.status,
        if e.incoming { "in" } else { "out" },
        e.transfer.amount.minor_units(),
        e.transfer.currency.code(),
        balance,
        message
    ))
}

/// Text for a quoted CSV field that a spreadsheet will not read as a formula.
fn csv_text(text: &str) -> String {
    let quoted = text.replace('"', "\"\"");
    if quoted.starts_with(['=', '+', '-', '@']) {
        format!("'{quoted}")
    } else {
        quoted
    }
}

fn page_request(cursor: Option<TransferId>, limit: usize) -> Result<PageRequest, PayError> {
    PageRequest::new(cursor, limit).map_err(|_| PayError::Invalid("page size out of range"))
}
