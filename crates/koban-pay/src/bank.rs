//! Bank accounts as funding sources, at a bank reached through a connector
//! (`connectors.rs`): the built-in **sandbox bank** (a simulation with its own accounts and
//! statements, on only when `PayConfig::sandbox` is set) or the ISO 20022 file bank.
//!
//! Linking needs step-up, a holder name that matches the customer's verified legal name, and
//! proof of control: two random micro-deposits the customer reads on their bank statement and
//! states back (3 tries, 3 days). Wrong answers are throttled per customer, per network and
//! per device, and one guessed pair tried across many customers is refused everywhere
//! (threat model D4). A new source tops up at most a small amount per day for 72 hours.
//!
//! Top-ups and payouts are ledger holds until the bank settles: posted on success, voided
//! (released) on failure, the same for every bank. The sandbox settles by itself when an
//! operation is due (`settle_due`); the file bank settles from its statements
//! (`statements.rs`).

use koban_auth::apikeys::MerchantKey;
use koban_auth::secret::{HashPurpose, constant_time_eq};
use koban_auth::throttle::{self, AttemptKeys};
use koban_auth::{Client, IssuedSession, Principal, SensitiveAction, StepUpProof, UserKind};
use koban_ledger::{
    AccountId, Amount, Currency, Metadata, Move, PendingOptions, Transfer, TransferId,
    TransferRequest,
};
use koban_shared::audit::{self, AuditEvent};
use koban_shared::ids::UserId;
use koban_shared::mail::Mail;
use koban_shared::personal::{self, Vault};
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use koban_store::{LedgerStore, params};
use rand::Rng;

use crate::Tx;
use crate::accounts::{IssuerAccount, kind};
use crate::connectors::{BankConnector, Holder, Instruction, PayIn, Verdict};
use crate::risk::{Decision, EventKind, Parties, RiskEvent};
use crate::wallets::emoney_leg;
use crate::{IdempotencyKey, PayError, Payments, format_money};

pub use crate::connectors::{Behaviour, SANDBOX_BANK};

/// A top-up or payout waits this long at most for its bank before the hold releases itself.
pub const BANK_HOLD_S: u32 = 7 * 24 * 3600;

/// A linked (or linking) bank account.
#[derive(Clone, Debug)]
pub struct FundingSource {
    pub id: String,
    pub bank: String,
    /// The account number with all but the last three digits hidden.
    pub masked_number: String,
    pub status: String,
    pub attempts_left: i64,
    pub expires_at_ms: i64,
    pub verified_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// What a top-up or payout asks for.
#[derive(Clone, Debug)]
pub struct BankMove {
    pub source_id: String,
    pub amount: Amount,
    pub currency: Currency,
}

/// The start of a top-up or payout: new, or the answer to a retry.
pub(crate) enum Begun {
    New {
        id: TransferId,
        claim: crate::InFlight,
        wallet: crate::wallets::Wallet,
    },
    Done(Box<BankOperation>),
}

/// A top-up or payout as recorded.
#[derive(Debug)]
pub struct BankOperation {
    pub transfer: Transfer,
    pub kind: &'static str,
    /// `pending` until the bank settles, then `settled` or `failed`.
    pub status: String,
    pub replayed: bool,
    pub session: Option<IssuedSession>,
    /// For a top-up the customer pays in by their own transfer: where to, and what to quote.
    pub pay_in: Option<PayIn>,
}

/// Two random amounts of 1 to 99 minor units for a link's micro-deposits; the account's
/// holder proves the link by reading them back.
fn micro_deposit_amounts() -> [i64; 2] {
    let mut rng = rand::rng();
    [rng.random_range(1..100i64), rng.random_range(1..100i64)]
}

/// A new reference for a top-up or payout at a bank that needs one: `KB`, nine random digits
/// and a check digit (Luhn), short enough to type into a bank's transfer form; a mistyped digit,
/// or two neighbours swapped (but 0 and 9), makes no other valid reference.
pub fn new_reference() -> String {
    let body = format!("{:09}", rand::rng().random_range(0..1_000_000_000u32));
    let check = (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|candidate| crate::card_topups::luhn_ok(candidate))
        .unwrap_or_else(|| unreachable!("one check digit completes any number"));
    format!("KB{check}")
}

/// Whether `text` is a reference [`new_reference`] could have made.
pub fn reference_valid(text: &str) -> bool {
    text.len() == 12
        && text.starts_with("KB")
        && text[2..].bytes().all(|b| b.is_ascii_digit())
        && crate::card_topups::luhn_ok(&text[2..])
}

fn mask_number(number: &str) -> String {
    let keep = number.len().saturating_sub(3);
    format!("{}{}", "*".repeat(keep), &number[keep..])
}

/// Names compared the way banks do: case and spacing do not matter.
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" ")
    };
    norm(a) == norm(b)
}

fn source_from(row: &koban_store::sql::Row, attempts_max: i64) -> Result<FundingSource, PayError> {
    Ok(FundingSource {
        id: row.text(0)?,
        bank: row.text(1)?,
        masked_number: mask_number(&row.text(2)?),
        status: row.text(3)?,
        attempts_left: (attempts_max - row.i64(4)?).max(0),
        expires_at_ms: row.i64(5)?,
        verified_at_ms: row.opt_i64(6)?,
        created_at_ms: row.i64(7)?,
    })
}

/// What settlement reads of a bank operation ([`DueOperation::from_row`]), then `$where`.
macro_rules! operation_select {
    ($where:literal) => {
        concat!(
            "SELECT o.id, o.user_id, o.kind, o.amount, o.currency, o.created_at, f.number, f.bank, ",
            "f.holder_name, o.reference, c.behaviour FROM bank_operations o ",
            "LEFT JOIN funding_sources f ON f.id = o.source_id LEFT JOIN card_sources c ON c.id = o.source_id",
            $where
        )
    };
}

impl<S: LedgerStore> Payments<S> {
    fn sandbox_on(&self) -> Result<(), PayError> {
        if self.config.sandbox {
            Ok(())
        } else {
            Err(PayError::NotFound)
        }
    }

    /// Sandbox: opens an account at the sandbox bank; returns its number.
    pub async fn sandbox_open_account(
        &self,
        principal: &Principal,
        holder_name: &koban_auth::LegalName,
        behaviour: Behaviour,
    ) -> Result<String, PayError> {
        principal.full()?;
        self.sandbox_on()?;
        for _ in 0..5 {
            let number = format!("{:07}", rand::rng().random_range(1_000_000..10_000_000u32));
            let mut tx = self.db().begin().await?;
            let added = tx
                .execute(
                    "INSERT INTO sandbox_bank_accounts (number, owner_id, holder_name, behaviour, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (number) DO NOTHING",
                    params![
                        number.as_str(),
                        principal.user_id.as_str(),
                        (self.auth.vault()).seal(&personal::SANDBOX_HOLDER, holder_name.as_str()),
                        behaviour.as_str(),
                        self.now_ms()
                    ],
                )
                .await?;
            tx.commit().await?;
            if added == 1 {
                return Ok(number);
            }
        }
        Err(PayError::Conflict(
            "no free sandbox account number; try again",
        ))
    }

    /// Sandbox: an account's statement, newest first: (amount, description, at).
    pub async fn sandbox_statement(
        &self,
        principal: &Principal,
        number: &str,
    ) -> Result<Vec<(i64, String, i64)>, PayError> {
        self.sandbox_on()?;
        principal.full()?;
        let mut tx = self.db().begin_read().await?;
        // Only the account's own holder reads it, as at a real bank: another's account is not
        // found, as any id that is not the caller's.
        tx.query_opt(
            "SELECT 1 FROM sandbox_bank_accounts WHERE number = $1 AND owner_id = $2",
            params![number, principal.user_id.as_str()],
        )
        .await?
        .ok_or(PayError::NotFound)?;
        let rows = tx
            .query(
                "SELECT amount, description, created_at FROM sandbox_bank_entries \
                 WHERE number = $1 ORDER BY created_at DESC, id DESC LIMIT 100",
                params![number],
            )
            .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| Ok((r.i64(0)?, r.text(1)?, r.i64(2)?)))
            .collect()
    }

    /// The connector of bank `id`, if that bank is connected.
    pub(crate) fn bank(&self, id: &str) -> Result<&dyn BankConnector<Tx<S>>, PayError> {
        self.banks
            .iter()
            .find(|bank| bank.id() == id)
            .map(|bank| bank.as_ref())
            .ok_or(PayError::Invalid(
                "this bank is not connected: name one of the banks Koban is connected to",
            ))
    }

    fn amounts_hash(&self, source_id: &str, first: i64, second: i64) -> [u8; 32] {
        // The order the customer states them in does not matter.
        let (low, high) = if first <= second {
            (first, second)
        } else {
            (second, first)
        };
        self.auth.keys().hash(
            HashPurpose::Payment,
            &[
                b"micro-deposits",
                source_id.as_bytes(),
                &low.to_be_bytes(),
                &high.to_be_bytes(),
            ],
        )
    }

    /// Starts linking a bank account (step-up): checks the holder name and sends two
    /// micro-deposits to the account.
    pub async fn link_bank_start(
        &self,
        principal: &Principal,
        bank: &str,
        number: &str,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<(FundingSource, IssuedSession), PayError> {
        principal.can_move_money()?;
        let (number, bank_holder) = self.bank_account_holder(principal, bank, number).await?;
        let number = number.as_str();
        // Step-up last, once nothing else can refuse: a confirmed step-up rotates the session.
        let session = self
            .auth
            .confirm_action(
                principal,
                &SensitiveAction::LinkFundingSource {
                    source: format!("{bank}:{number}"),
                },
                proof,
                client,
            )
            .await?;
        let source = self
            .record_link(principal, bank, number, &bank_holder)
            .await?;
        Ok((source, session))
    }

    /// A bank account a customer may link, in its bank's normal form, and its holder's name:
    /// at a connected bank, and in the customer's verified legal name (for a bank that does
    /// not tell the name, the micro-deposits go out in that name, and a bank returns them if
    /// it is not the account's).
    async fn bank_account_holder(
        &self,
        principal: &Principal,
        bank: &str,
        number: &str,
    ) -> Result<(String, String), PayError> {
        let connector = self.bank(bank)?;
        let number = connector.normalise_account(number)?;
        let holder = self.holder(&principal.user_id).await?;
        let verified_name = holder.verified_name.clone().ok_or(PayError::Invalid(
            "verify your identity first: a bank account must be in your verified legal name",
        ))?;
        let mut tx = self.db().begin_read().await?;
        let told = connector
            .holder(&mut tx, self.auth.vault(), &number)
            .await?;
        tx.commit().await?;
        let bank_holder = match told {
            Holder::Named(name) => name,
            Holder::Unknown => verified_name.clone(),
            Holder::NoSuchAccount => {
                return Err(PayError::Invalid("the bank does not know this account"));
            }
        };
        if !same_name(&bank_holder, &verified_name) {
            return Err(PayError::Invalid(
                "the bank account holder's name does not match your verified legal name",
            ));
        }
        Ok((number, bank_holder))
    }

    /// Records a link being made: the pending source with the keyed hash of two random
    /// micro-deposits, the deposits at the (sandbox) bank, the audit entry and the notice.
    async fn record_link(
        &self,
        principal: &Principal,
        bank: &str,
        number: &str,
        bank_holder: &str,
    ) -> Result<FundingSource, PayError> {
        let now = self.now_ms();
        let id = koban_shared::new_id();
        let mut tx = self.db().begin().await?;
        let linked = tx
            .query_opt(
                "SELECT 1 FROM funding_sources WHERE user_id = $1 AND number = $2 AND status IN ('pending', 'verified')",
                params![principal.user_id.as_str(), number],
            )
            .await?;
        if linked.is_some() {
            return Err(PayError::Conflict(
                "this account is already linked or being linked",
            ));
        }
        let [first, second] = micro_deposit_amounts();
        self.bank(bank)?
            .send_micro_deposits(
                &mut tx,
                self.auth.vault(),
                &id,
                number,
                bank_holder,
                [first, second],
                now,
            )
            .await?;
        tx.execute(
            "INSERT INTO funding_sources (id, user_id, bank, number, holder_name, status, amounts_hash, \
             attempts, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, 0, $7, $8)",
            params![
                id.as_str(),
                principal.user_id.as_str(),
                bank,
                number,
                self.auth.vault().seal(&personal::FUNDING_HOLDER, bank_holder),
                self.amounts_hash(&id, first, second),
                now + self.config.micro_deposit_s * 1000,
                now
            ],
        )
        .await?;
        audit::append(
            &mut tx, self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "funding_source.link_started",
                subject: &principal.user_id,
                details: serde_json::json!({ "source": id, "bank": bank, "number": mask_number(number) }),
            },
        )
        .await?;
        let mail = Mail::new("bank-linking").arg("account", mask_number(number));
        koban_shared::outbox::enqueue(&mut tx, self.auth.vault(), now, &principal.email, &mail)
            .await?;
        let row = tx
            .query_one(
                "SELECT id, bank, number, status, attempts, expires_at, verified_at, created_at \
                 FROM funding_sources WHERE id = $1",
                params![id.as_str()],
            )
            .await?;
        tx.commit().await?;
        source_from(&row, self.config.micro_deposit_attempts_max)
    }

    /// Finishes linking with the two micro-deposit amounts.
    pub async fn link_bank_confirm(
        &self,
        principal: &Principal,
        source_id: &str,
        first: i64,
        second: i64,
        client: &Client,
    ) -> Result<FundingSource, PayError> {
        principal.can_move_money()?;
        if !(1..100).contains(&first) || !(1..100).contains(&second) {
            return Err(PayError::Invalid("each amount is between 1 and 99"));
        }
        let now = self.now_ms();
        let keys = AttemptKeys::new(
            self.auth.keys(),
            &format!("micro-deposits:{}", principal.user_id),
            client,
            Some(&format!(
                "micro-deposits:{}:{}",
                first.min(second),
                first.max(second)
            )),
            false,
        );
        let link_event = self.link_risk_event(principal, source_id, client).await?;
        let config = self.auth.config();
        let mut tx = self.db().begin().await?;
        let attempt = throttle::begin(&mut tx, config, now, &keys).await?;
        let row = tx
            .query_opt(
                "SELECT id, bank, number, status, attempts, expires_at, verified_at, created_at, amounts_hash \
                 FROM funding_sources WHERE id = $1 AND user_id = $2",
                params![source_id, principal.user_id.as_str()],
            )
            .await?
            .ok_or(PayError::NotFound)?;
        let source = source_from(&row, self.config.micro_deposit_attempts_max)?;
        if source.status != "pending" {
            return Err(PayError::Conflict(
                "this bank account is not waiting for confirmation",
            ));
        }
        if source.expires_at_ms <= now || source.attempts_left == 0 {
            tx.execute(
                "UPDATE funding_sources SET status = 'expired' WHERE id = $1",
                params![source_id],
            )
            .await?;
            tx.commit().await?;
            return Err(PayError::Gone(
                "the confirmation expired; link the account again",
            ));
        }
        let right = constant_time_eq(&row.bytes(8)?, &self.amounts_hash(source_id, first, second));
        if !right {
            self.mark_risk_failed(&link_event);
            throttle::record_failure(&mut tx, config, now, &keys, attempt).await?;
            return Err(self.count_wrong_amounts(tx, source_id).await?);
        }
        throttle::record_success(&mut tx, &keys).await?;
        self.finish_link(tx, principal, &source, now).await
    }

    /// Counts a wrong pair of amounts against the link (in `tx`, committed here); the last
    /// allowed try fails the link. Answers the refusal to give.
    async fn count_wrong_amounts<T: SqlTx>(
        &self,
        mut tx: T,
        source_id: &str,
    ) -> Result<PayError, PayError> {
        let attempts = tx
            .query_one(
                "UPDATE funding_sources SET attempts = attempts + 1, \
                 status = CASE WHEN attempts + 1 >= $1 THEN 'failed' ELSE status END \
                 WHERE id = $2 RETURNING attempts",
                params![self.config.micro_deposit_attempts_max, source_id],
            )
            .await?
            .i64(0)?;
        tx.commit().await?;
        Ok(if attempts >= self.config.micro_deposit_attempts_max {
            PayError::Gone("the amounts were wrong three times; link the account again")
        } else {
            PayError::Invalid("the amounts do not match the deposits")
        })
    }

    /// Marks a link verified, with its audit entry and notice, in `tx` (committed here).
    async fn finish_link<T: SqlTx>(
        &self,
        mut tx: T,
        principal: &Principal,
        source: &FundingSource,
        now: i64,
    ) -> Result<FundingSource, PayError> {
        let source_id = source.id.as_str();
        tx.execute(
            "UPDATE funding_sources SET status = 'verified', verified_at = $1 WHERE id = $2",
            params![now, source_id],
        )
        .await?;
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "funding_source.linked",
                subject: &principal.user_id,
                details: serde_json::json!({ "source": source_id }),
            },
        )
        .await?;
        let mail = Mail::new("bank-linked").arg("account", &source.masked_number);
        koban_shared::outbox::enqueue(&mut tx, self.auth.vault(), now, &principal.email, &mail)
            .await?;
        let row = tx
            .query_one(
                "SELECT id, bank, number, status, attempts, expires_at, verified_at, created_at \
                 FROM funding_sources WHERE id = $1",
                params![source_id],
            )
            .await?;
        tx.commit().await?;
        source_from(&row, self.config.micro_deposit_attempts_max)
    }

    /// Decides (and records) a bank-link confirmation attempt before its amounts are checked:
    /// the rules may refuse a network or device that failed across many accounts. Returns the
    /// recorded event's id, marked failed if the amounts turn out wrong.
    async fn link_risk_event(
        &self,
        principal: &Principal,
        source_id: &str,
        client: &Client,
    ) -> Result<String, PayError> {
        let mut event: RiskEvent = self.risk_event(
            crate::wallets::Tier::Unverified,
            principal.cooling_off_until_ms,
            EventKind::FundingLink,
            None,
            0,
        );
        event.daily_out_max = u64::MAX;
        let parties = Parties {
            source: Some(source_id.to_owned()),
            ..Parties::of(&principal.user_id, Some(client))
        };
        let (decision, id) = self.assess_recorded(&event, &parties).await?;
        match decision {
            Decision::Hold | Decision::Deny { .. } => Err(PayError::Declined {
                code: "risk_declined",
            }),
            Decision::Allow | Decision::Challenge => Ok(id),
        }
    }

    /// The caller's funding sources, newest first.
    pub async fn funding_sources(
        &self,
        principal: &Principal,
    ) -> Result<Vec<FundingSource>, PayError> {
        principal.full()?;
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT id, bank, number, status, attempts, expires_at, verified_at, created_at \
                 FROM funding_sources WHERE user_id = $1 AND status <> 'removed' ORDER BY created_at DESC LIMIT 50",
                params![principal.user_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| source_from(r, self.config.micro_deposit_attempts_max))
            .collect()
    }

    /// A verified source of `user_id`: (number, verified at, how long its bank's payout
    /// holds last).
    async fn verified_source(
        &self,
        user_id: &str,
        source_id: &str,
    ) -> Result<(String, i64, Option<u32>), PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT number, verified_at, bank FROM funding_sources WHERE id = $1 AND user_id = $2 AND status = 'verified'",
                params![source_id, user_id],
            )
            .await?
            .ok_or(PayError::Invalid("name a verified bank account of yours"))?;
        tx.commit().await?;
        let hold = self.bank(&row.text(2)?)?.payout_hold_s();
        Ok((row.text(0)?, row.opt_i64(1)?.unwrap_or(0), hold))
    }

    /// What every top-up and payout starts with: its ledger id from the idempotency key,
    /// the claim on that key, the wallet, and the earlier outcome if this is a retry.
    pub(crate) async fn begin_operation(
        &self,
        kind: &[u8],
        user_id: &UserId,
        key: &IdempotencyKey,
        request: &BankMove,
    ) -> Result<Begun, PayError> {
        let id = self.derive_id(&[kind, user_id.as_bytes(), key.as_str().as_bytes()]);
        let claim = self.claim(id).await?;
        let wallet = self.wallet(user_id, request.currency).await?;
        match self
            .existing_operation(id, wallet.account, request.amount, &request.source_id)
            .await?
        {
            Some(done) => Ok(Begun::Done(Box::new(done))),
            None => Ok(Begun::New { id, claim, wallet }),
        }
    }

    async fn existing_operation(
        &self,
        id: TransferId,
        account: AccountId,
        amount: Amount,
        source_id: &str,
    ) -> Result<Option<BankOperation>, PayError> {
        let Some(done) = self.store.transfer(id).await? else {
            return Ok(None);
        };
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT kind, status, source_id, reference FROM bank_operations WHERE id = $1",
                params![id.to_bytes()],
            )
            .await?
            .ok_or(PayError::IdempotencyMismatch)?;
        tx.commit().await?;
        let same_account = done.debit == account || done.credit == account;
        if !same_account || done.amount != amount || row.text(2)? != source_id {
            return Err(PayError::IdempotencyMismatch);
        }
        Ok(Some(BankOperation {
            transfer: done,
            kind: match row.text(0)?.as_str() {
                "topup" => "topup",
                "card_topup" => "card_topup",
                _ => "payout",
            },
            status: row.text(1)?,
            replayed: true,
            session: None,
            pay_in: match (row.text(0)?.as_str(), row.opt_text(3)?) {
                ("topup", Some(reference)) => self.pay_in_for(&reference)?,
                _ => None,
            },
        }))
    }

    /// Records a top-up or payout before its hold is written (so the settlement worker finds
    /// every hold it must finish) and instructs the bank, in one transaction; answers how the
    /// customer pays a top-up in, for a bank that needs it.
    pub(crate) async fn record_operation(
        &self,
        id: TransferId,
        user_id: &str,
        kind: &str,
        account: AccountId,
        request: &BankMove,
    ) -> Result<Option<PayIn>, PayError> {
        let BankMove {
            source_id,
            amount,
            currency,
        } = request;
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        // A card top-up's source is a card; a bank's instruction needs the account.
        let source = if kind == "card_topup" {
            None
        } else {
            let row = tx
                .query_one(
                    "SELECT bank, number, holder_name FROM funding_sources WHERE id = $1",
                    params![source_id.as_str()],
                )
                .await?;
            let holder = (self.auth.vault()).open(&personal::FUNDING_HOLDER, &row.text(2)?)?;
            Some((self.bank(&row.text(0)?)?, row.text(1)?, holder))
        };
        let (settle_after_s, needs_reference) = match &source {
            Some((bank, _, _)) => (bank.status_after_s(), bank.id() != SANDBOX_BANK),
            None => (self.config.settle_after_s, false),
        };
        // The row of this id, new or left by an earlier try with this key. A new reference
        // that happens to be taken leaves nothing written: another is drawn.
        let mut row = None;
        for _ in 0..8 {
            tx.execute(
                "INSERT INTO bank_operations (id, user_id, source_id, kind, account_id, amount, currency, status, due_at, created_at, reference) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10) ON CONFLICT DO NOTHING",
                params![
                    id.to_bytes(),
                    user_id,
                    source_id.as_str(),
                    kind,
                    account.to_bytes(),
                    amount.to_i64(),
                    currency.code(),
                    now + settle_after_s * 1000,
                    now,
                    needs_reference.then(new_reference)
                ],
            )
            .await?;
            row = tx
                .query_opt(
                    "SELECT user_id, source_id, kind, account_id, amount, currency, status, reference \
                     FROM bank_operations WHERE id = $1",
                    params![id.to_bytes()],
                )
                .await?;
            if row.is_some() {
                break;
            }
        }
        let row = row.ok_or(PayError::Conflict(
            "no free reference for this operation; try again",
        ))?;
        let reference = row.opt_text(7)?;
        let same = row.text(0)? == user_id
            && row.text(1)? == *source_id
            && row.text(2)? == kind
            && row.bytes(3)? == account.to_bytes()
            && row.i64(4)? == amount.to_i64()
            && row.text(5)? == currency.code();
        if !same {
            return Err(PayError::IdempotencyMismatch);
        }
        if row.text(6)? != "pending" {
            return Err(PayError::Conflict(
                "an earlier try with this Idempotency-Key was abandoned; use a new key",
            ));
        }
        let pay_in = match &source {
            Some((bank, number, holder_name)) => {
                let instruction = Instruction {
                    id,
                    kind,
                    amount: *amount,
                    currency: *currency,
                    account: number,
                    holder_name,
                    reference: reference.as_deref().unwrap_or_default(),
                };
                bank.instruct(&mut tx, self.auth.vault(), &instruction, now)
                    .await?
            }
            None => None,
        };
        tx.commit().await?;
        Ok(pay_in)
    }

    /// How a customer pays in the top-up with `reference` (a bank that needs it).
    fn pay_in_for(&self, reference: &str) -> Result<Option<PayIn>, PayError> {
        Ok(self.banks.iter().find_map(|bank| bank.pay_in(reference)))
    }

    /// Tops up the caller's wallet from a verified bank account: pending until the bank settles.
    pub async fn topup(
        &self,
        principal: &Principal,
        request: &BankMove,
        key: &IdempotencyKey,
    ) -> Result<BankOperation, PayError> {
        let (source_id, amount, currency) =
            (request.source_id.as_str(), request.amount, request.currency);
        principal.can_move_money()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("only customers top up"));
        }
        let (id, _claim, wallet) = match self
            .begin_operation(b"topup", &principal.user_id, key, request)
            .await?
        {
            Begun::New { id, claim, wallet } => (id, claim, wallet),
            Begun::Done(done) => return Ok(*done),
        };
        let (_, verified_at, _) = self.verified_source(&principal.user_id, source_id).await?;
        let now = self.now_ms();
        let _lock = self.lock_wallet(wallet.account).await?;
        self.still_signed_in(principal).await?;
        if verified_at > now - self.config.new_source_cooling_s * 1000 {
            let mut tx = self.db().begin_read().await?;
            let recent = tx
                .query_one(
                    "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM bank_operations WHERE source_id = $1 \
                     AND kind = 'topup' AND status <> 'failed' AND created_at > $2",
                    params![source_id, now - 24 * 3600 * 1000],
                )
                .await?
                .i64(0)?;
            tx.commit().await?;
            let after = u64::try_from(recent)
                .unwrap_or(0)
                .saturating_add(amount.minor_units());
            if after > self.config.new_source_daily_max {
                return Err(PayError::Limit {
                    code: "new_source_limit",
                    detail: format!(
                        "a bank account linked in the last 72 hours tops up at most {} a day",
                        format_money(self.config.new_source_daily_max, currency)
                    ),
                });
            }
        }
        let holder = self.holder(&principal.user_id).await?;
        let account = self.ledger_account(wallet.account).await?;
        self.check_balance_cap(&holder, &account, amount)?;
        self.assess_topup(principal, id, source_id, Some(verified_at), request, None)
            .await?;
        // The record first, so the settlement worker finds every hold it must finish.
        let pay_in = self
            .record_operation(id, &principal.user_id, "topup", wallet.account, request)
            .await?;
        let mut done = self
            .hold_topup(
                id,
                IssuerAccount::BankSettlement,
                wallet.account,
                request,
                Metadata::empty(),
                "topup",
            )
            .await?;
        done.pay_in = pay_in;
        Ok(done)
    }

    /// The risk decision of a top-up from `source_id` (verified at `verified_at`): a hold or a
    /// deny of the rules declines it.
    pub(crate) async fn assess_topup(
        &self,
        principal: &Principal,
        id: TransferId,
        source_id: &str,
        verified_at: Option<i64>,
        request: &BankMove,
        client: Option<&Client>,
    ) -> Result<(), PayError> {
        let mut event = self.risk_event(
            crate::wallets::Tier::Unverified,
            principal.cooling_off_until_ms,
            EventKind::Topup,
            Some(request.amount),
            0,
        );
        event.daily_out_max = u64::MAX;
        event.cooling_off_max = event.cooling_off_max.map(|_| u64::MAX);
        let parties = Parties {
            attempt: Some(id),
            source: Some(source_id.to_owned()),
            source_age_s: Some(verified_at.map_or(0, |at| (self.now_ms() - at).max(0) / 1000)),
            currency: request.currency.code().to_owned(),
            ..Parties::of(&principal.user_id, client)
        };
        match self.assess(&event, &parties).await? {
            Decision::Allow | Decision::Challenge => Ok(()),
            Decision::Hold | Decision::Deny { .. } => Err(PayError::Declined {
                code: "risk_declined",
            }),
        }
    }

    /// The ledger side of a top-up: a hold from the bank's (or acquirer's) settlement account
    /// to the wallet, with its e-money memo leg, until settlement posts or voids both.
    pub(crate) async fn hold_topup(
        &self,
        id: TransferId,
        settlement: IssuerAccount,
        wallet: AccountId,
        request: &BankMove,
        metadata: Metadata,
        kind: &'static str,
    ) -> Result<BankOperation, PayError> {
        let (amount, currency) = (request.amount, request.currency);
        let pending = Some(PendingOptions {
            timeout_s: Some(BANK_HOLD_S),
        });
        let batch = vec![
            TransferRequest::Move(Move {
                id,
                debit: settlement.id(currency),
                credit: wallet,
                amount,
                currency,
                code: kind::TOPUP,
                reference: None,
                metadata,
                pending,
            }),
            emoney_leg(
                self.derive_id(&[b"memo", &id.to_bytes()]),
                currency,
                amount,
                true,
                Some(id),
                pending,
            ),
        ];
        let applied = self.submit_batch(batch).await?;
        Ok(BankOperation {
            transfer: applied.transfers[0].clone(),
            kind,
            status: "pending".into(),
            replayed: false,
            session: None,
            pay_in: None,
        })
    }

    /// What every payout passes before money moves, a customer's or a merchant's from its
    /// dashboard: the balance, the limits and risk rules (recorded as a payout event of this
    /// attempt), then a step-up bound to the amount and the bank account.
    #[allow(clippy::too_many_arguments)]
    async fn payout_gate(
        &self,
        principal: &Principal,
        wallet: AccountId,
        request: &BankMove,
        number: &str,
        attempt: TransferId,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<IssuedSession, PayError> {
        let (amount, currency) = (request.amount, request.currency);
        let account = self.ledger_account(wallet).await?;
        if !account.balance.covers(amount) {
            return Err(PayError::InsufficientFunds);
        }
        let event = self
            .outgoing_context(principal, EventKind::Payout, &account, amount)
            .await?;
        let parties = Parties {
            attempt: Some(attempt),
            source: Some(request.source_id.clone()),
            currency: currency.code().to_owned(),
            ..Parties::of(&principal.user_id, Some(client))
        };
        // A payout cannot wait in suspense for review: a hold declines it.
        self.assess(&event, &parties)
            .await?
            .without_review("your")?;
        let payee = format!("bank account {}", mask_number(number));
        self.confirm_payment(principal, amount.to_i64(), currency, payee, proof, client)
            .await
    }

    /// Withdraws from the caller's wallet to a verified bank account (step-up).
    pub async fn payout(
        &self,
        principal: &Principal,
        request: &BankMove,
        key: &IdempotencyKey,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<BankOperation, PayError> {
        let (source_id, amount, currency) =
            (request.source_id.as_str(), request.amount, request.currency);
        principal.can_move_money()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid(
                "merchants are paid out with their API key",
            ));
        }
        let (id, _claim, wallet) = match self
            .begin_operation(b"payout", &principal.user_id, key, request)
            .await?
        {
            Begun::New { id, claim, wallet } => (id, claim, wallet),
            Begun::Done(done) => return Ok(*done),
        };
        let (number, _, hold) = self.verified_source(&principal.user_id, source_id).await?;
        let _lock = self.lock_wallet(wallet.account).await?;
        self.still_signed_in(principal).await?;
        let session = self
            .payout_gate(
                principal,
                wallet.account,
                request,
                &number,
                id,
                proof,
                client,
            )
            .await?;
        self.record_operation(id, &principal.user_id, "payout", wallet.account, request)
            .await?;
        let batch = self.payout_batch(id, wallet.account, amount, currency, hold);
        let applied = match self.submit_batch(batch).await {
            Ok(applied) => applied,
            // The database's trouble leaves it open whether the hold was written: settlement
            // finds out when the operation is due (it fails then if there is no hold), and it
            // goes to the bank only with its hold.
            Err(error @ PayError::Auth(koban_auth::AuthError::Store(_))) => return Err(error),
            Err(error) => {
                // Refused by the ledger: nothing moved, and nothing is sent to the bank.
                self.finish_operation(id, "failed").await?;
                return Err(error);
            }
        };
        Ok(BankOperation {
            transfer: applied.transfers[0].clone(),
            kind: "payout",
            status: "pending".into(),
            replayed: false,
            session: Some(session),
            pay_in: None,
        })
    }

    /// A customer's payout: a hold from the wallet to the bank settlement account until the
    /// bank settles (released after `hold` seconds, if its bank may leave it unfinished), with
    /// its e-money memo leg held alike.
    fn payout_batch(
        &self,
        id: TransferId,
        wallet: AccountId,
        amount: Amount,
        currency: Currency,
        hold: Option<u32>,
    ) -> Vec<TransferRequest> {
        let pending = Some(PendingOptions { timeout_s: hold });
        vec![
            TransferRequest::Move(Move {
                id,
                debit: wallet,
                credit: IssuerAccount::BankSettlement.id(currency),
                amount,
                currency,
                code: kind::PAYOUT,
                reference: None,
                metadata: Metadata::empty(),
                pending,
            }),
            emoney_leg(
                self.derive_id(&[b"memo", &id.to_bytes()]),
                currency,
                amount,
                false,
                Some(id),
                pending,
            ),
        ]
    }

    /// A merchant's payout from its dashboard: the signed-in merchant, confirmed by a step-up
    /// bound to the amount and the bank account, as a customer's payout is; then the same
    /// payout as with an API key. A retry with the same key pays nothing twice.
    pub async fn dashboard_payout(
        &self,
        principal: &Principal,
        request: &BankMove,
        key: &IdempotencyKey,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<BankOperation, PayError> {
        principal.can_move_money()?;
        let merchant = MerchantKey::for_session(principal)?;
        // The id `merchant_payout` gives this key: a payout already made is answered as it
        // was, before any new confirmation is asked for.
        let id = self.derive_id(&[
            b"merchant-payout",
            merchant.merchant_id.as_bytes(),
            key.as_str().as_bytes(),
        ]);
        let wallet = self.wallet(&merchant.merchant_id, request.currency).await?;
        if let Some(done) = self
            .existing_operation(id, wallet.account, request.amount, &request.source_id)
            .await?
        {
            return Ok(done);
        }
        let (number, _, _) = self
            .verified_source(&merchant.merchant_id, &request.source_id)
            .await?;
        // Held from the limits' check to the ledger write, as for a customer's payout.
        let _lock = self.lock_wallet(wallet.account).await?;
        self.still_signed_in(principal).await?;
        let session = self
            .payout_gate(
                principal,
                wallet.account,
                request,
                &number,
                id,
                proof,
                client,
            )
            .await?;
        let mut done = self.merchant_payout_locked(&merchant, request, key).await?;
        done.session = Some(session);
        Ok(done)
    }

    /// Pays a merchant's balance out to the merchant's verified bank account (API key).
    pub async fn merchant_payout(
        &self,
        merchant: &MerchantKey,
        request: &BankMove,
        key: &IdempotencyKey,
    ) -> Result<BankOperation, PayError> {
        Self::require_scope(merchant, "payments:write")?;
        let wallet = self.wallet(&merchant.merchant_id, request.currency).await?;
        let _lock = self.lock_wallet(wallet.account).await?;
        self.merchant_payout_locked(merchant, request, key).await
    }

    /// [`Payments::merchant_payout`] for a caller that holds the merchant wallet's lock.
    async fn merchant_payout_locked(
        &self,
        merchant: &MerchantKey,
        request: &BankMove,
        key: &IdempotencyKey,
    ) -> Result<BankOperation, PayError> {
        let (source_id, amount, currency) =
            (request.source_id.as_str(), request.amount, request.currency);
        let (id, _claim, wallet) = match self
            .begin_operation(b"merchant-payout", &merchant.merchant_id, key, request)
            .await?
        {
            Begun::New { id, claim, wallet } => (id, claim, wallet),
            Begun::Done(done) => return Ok(*done),
        };
        let (_, _, hold) = self
            .verified_source(&merchant.merchant_id, source_id)
            .await?;
        self.record_operation(id, &merchant.merchant_id, "payout", wallet.account, request)
            .await?;
        let batch = vec![TransferRequest::Move(Move {
            id,
            debit: wallet.account,
            credit: IssuerAccount::BankSettlement.id(currency),
            amount,
            currency,
            code: kind::PAYOUT,
            reference: None,
            metadata: Metadata::empty(),
            pending: Some(PendingOptions { timeout_s: hold }),
        })];
        match self.submit(batch).await? {
            Ok(applied) => Ok(BankOperation {
                transfer: applied.transfers[0].clone(),
                kind: "payout",
                status: "pending".into(),
                replayed: false,
                session: None,
                pay_in: None,
            }),
            Err(rejection) => {
                self.finish_operation(id, "failed").await?;
                Err(crate::ledger_refusal(rejection.reason))
            }
        }
    }

    async fn finish_operation(&self, id: TransferId, status: &str) -> Result<(), PayError> {
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE bank_operations SET status = $1, settled_at = $2 WHERE id = $3 AND status = 'pending'",
            params![status, self.now_ms(), id.to_bytes()],
        )
        .await?;
        // A payout that failed before its money moved is never sent to the bank.
        tx.execute(
            "DELETE FROM bank_instructions WHERE operation_id = $1 AND file_id IS NULL",
            params![id.to_bytes()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Settles bank operations whose time has come, as their bank (or acquirer) says: posts
    /// the holds of those it accepted, voids the others, and asks again a day later about
    /// those it cannot tell yet. Returns how many it finished.
    pub async fn settle_due(&self, limit: i64) -> Result<usize, PayError> {
        let now = self.now_ms();
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                operation_select!(
                    " WHERE o.status = 'pending' AND o.due_at <= $1 ORDER BY o.due_at LIMIT $2"
                ),
                params![now, limit],
            )
            .await?;
        tx.commit().await?;
        let mut finished = 0;
        let mut failure = None;
        for row in rows {
            let operation = DueOperation::from_row(self.auth.vault(), &row)?;
            // One operation that cannot be settled (its bank disconnected, an error of its
            // bank) does not hold up the others.
            match self.settle_one(&operation, now).await {
                Ok(true) => finished += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(
                        operation = %uuid::Uuid::from_u128(operation.id.get()),
                        %error,
                        "a bank operation could not be settled; asking again in an hour"
                    );
                    self.postpone(operation.id, now + 3600 * 1000).await?;
                    failure = Some(error);
                }
            }
        }
        match failure {
            Some(error) if finished == 0 => Err(error),
            _ => Ok(finished),
        }
    }

    /// Asks about a pending operation again at `at`.
    async fn postpone(&self, id: TransferId, at: i64) -> Result<(), PayError> {
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE bank_operations SET due_at = $1 WHERE id = $2 AND status = 'pending'",
            params![at, id.to_bytes()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The operation `id` as settlement sees it, if it exists.
    pub(crate) async fn due_operation(
        &self,
        id: TransferId,
    ) -> Result<Option<DueOperation>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                operation_select!(" WHERE o.id = $1"),
                params![id.to_bytes()],
            )
            .await?;
        tx.commit().await?;
        row.map(|row| DueOperation::from_row(self.auth.vault(), &row))
            .transpose()
    }

    /// Settles one due operation; false when it must wait (its hold is not written yet, or
    /// its bank cannot tell yet).
    async fn settle_one(&self, operation: &DueOperation, now: i64) -> Result<bool, PayError> {
        let id = operation.id;
        if self.store.transfer(id).await?.is_none() {
            // The process died between the record and the hold: after a minute, nothing
            // will come; the operation failed without moving money.
            if operation.created_at_ms < now - 60_000 {
                self.finish_operation(id, "failed").await?;
                return Ok(true);
            }
            return Ok(false);
        }
        let verdict = match &operation.bank {
            // Card top-ups were authorised by the acquirer already; this is their capture.
            None => self.acquirer.capture(&operation.card_behaviour),
            Some(bank) => {
                let mut tx = self.db().begin_read().await?;
                let verdict = self
                    .bank(bank)?
                    .status(&mut tx, &operation.instruction())
                    .await?;
                tx.commit().await?;
                verdict
            }
        };
        if verdict == Verdict::Waiting {
            tracing::warn!(
                operation = %uuid::Uuid::from_u128(id.get()),
                "a bank operation is past its time and its bank has not settled it: asking again in a day"
            );
            self.postpone(id, now + 24 * 3600 * 1000).await?;
            return Ok(false);
        }
        self.settle_operation(operation, verdict == Verdict::Accepted, now)
            .await?;
        Ok(true)
    }

    /// Finishes an operation its bank accepted (the hold posts) or refused (it is voided);
    /// answers its new status, or `None` when its hold is not in the ledger.
    pub(crate) async fn settle_operation(
        &self,
        operation: &DueOperation,
        accepted: bool,
        now: i64,
    ) -> Result<Option<&'static str>, PayError> {
        // The ledger's hold, not the row, says how much is at stake.
        let Some(hold) = self.store.transfer(operation.id).await? else {
            return Ok(None);
        };
        let status = self.post_or_void(operation.id, accepted).await?;
        self.record_settlement(operation, hold.amount, status, now)
            .await?;
        Ok(Some(status))
    }

    /// Posts (the bank accepted) or voids (it did not) an operation's hold and its memo leg's;
    /// answers the operation's new status.
    async fn post_or_void(&self, id: TransferId, accepted: bool) -> Result<&'static str, PayError> {
        let memo = self.derive_id(&[b"memo", &id.to_bytes()]);
        let memo_exists = self.store.transfer(memo).await?.is_some();
        let mut batch = Vec::new();
        for (pending_id, present) in [(id, true), (memo, memo_exists)] {
            if !present {
                continue;
            }
            batch.push(if accepted {
                TransferRequest::Post {
                    id: self.derive_id(&[b"settle", &pending_id.to_bytes()]),
                    pending_id,
                    amount: None,
                    metadata: Metadata::empty(),
                }
            } else {
                TransferRequest::Void {
                    id: self.derive_id(&[b"settle", &pending_id.to_bytes()]),
                    pending_id,
                    metadata: Metadata::empty(),
                }
            });
        }
        match self.submit(batch).await? {
            Ok(_) if accepted => Ok("settled"),
            Ok(_) => Ok("failed"),
            // The hold ran out before the bank answered: it released itself.
            Err(r) if r.reason == koban_ledger::RejectReason::PendingExpired => Ok("failed"),
            Err(r) => Err(crate::ledger_refusal(r.reason)),
        }
    }

    /// Records a settled or failed operation: its status, the bank's own record (the
    /// sandbox's statement), the merchant's webhook for a payout, and the customer's notice,
    /// in one transaction.
    async fn record_settlement(
        &self,
        operation: &DueOperation,
        amount: Amount,
        status: &str,
        now: i64,
    ) -> Result<(), PayError> {
        let (id, number) = (operation.id, operation.number.as_str());
        let topup = operation.kind != "payout";
        let mut tx = self.db().begin().await?;
        let changed = tx
            .execute(
                "UPDATE bank_operations SET status = $1, settled_at = $2 WHERE id = $3 AND status = 'pending'",
                params![status, now, id.to_bytes()],
            )
            .await?;
        if changed == 0 {
            // Another instance recorded it first, with its entry, event and notice.
            return Ok(());
        }
        if status == "settled"
            && let Some(bank) = &operation.bank
        {
            self.bank(bank)?
                .record_settled(&mut tx, &operation.instruction(), now)
                .await?;
        }
        if !topup {
            // Merchants hear of their payouts by webhook (customers have no endpoints).
            self.enqueue_event(
                &mut tx,
                &operation.user_id,
                id,
                if status == "settled" {
                    "payout.settled"
                } else {
                    "payout.failed"
                },
                serde_json::json!({
                    "payout_id": uuid::Uuid::from_u128(id.get()).to_string(),
                    "amount": amount.minor_units(),
                    "currency": operation.currency.code(),
                }),
            )
            .await?;
        }
        let mail = settlement_notice(topup, status, number).arg(
            "amount",
            format_money(amount.minor_units(), operation.currency),
        );
        koban_shared::outbox::enqueue_to_user(
            &mut tx,
            self.auth.vault(),
            now,
            &operation.user_id,
            &mail,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The caller's top-ups and payouts, newest first: (id, kind, amount, currency, status, created at).
    pub async fn bank_operations(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<(TransferId, String, i64, String, String, i64)>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT id, kind, amount, currency, status, created_at FROM bank_operations \
                 WHERE user_id = $1 ORDER BY created_at DESC LIMIT 100",
                params![user_id],
            )
            .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    TransferId::from_bytes(&r.bytes(0)?)
                        .map_err(|_| PayError::Invalid("a stored id is not valid"))?,
                    r.text(1)?,
                    r.i64(2)?,
                    r.text(3)?,
                    r.text(4)?,
                    r.i64(5)?,
                ))
            })
            .collect()
    }
}

/// The customer's notice of a settled or failed top-up or payout (without its amount).
fn settlement_notice(topup: bool, status: &str, number: &str) -> Mail {
    match (topup, status) {
        (true, "settled") => Mail::new("topup-received"),
        (true, _) => Mail::new("topup-failed"),
        (false, "settled") => Mail::new("payout-sent").arg("account", mask_number(number)),
        (false, _) => Mail::new("payout-failed"),
    }
}

/// A bank operation as settlement sees it.
pub(crate) struct DueOperation {
    pub(crate) id: TransferId,
    user_id: String,
    /// `topup`, `card_topup` or `payout`.
    pub(crate) kind: String,
    pub(crate) amount: Amount,
    pub(crate) currency: Currency,
    created_at_ms: i64,
    /// The bank account's number (empty for a card top-up).
    number: String,
    /// The account's bank; `None` for a card top-up (its acquirer settles it).
    bank: Option<String>,
    holder_name: String,
    reference: Option<String>,
    /// What the acquirer recorded about a card top-up's card.
    card_behaviour: String,
}

impl DueOperation {
    fn from_row(vault: &Vault, row: &koban_store::sql::Row) -> Result<DueOperation, PayError> {
        fn stored<E>(_: E) -> PayError {
            PayError::Invalid("a stored bank operation is not valid")
        }
        Ok(DueOperation {
            id: TransferId::from_bytes(&row.bytes(0)?).map_err(stored)?,
            user_id: row.text(1)?,
            kind: row.text(2)?,
            amount: Amount::from_i64(row.i64(3)?).map_err(stored)?,
            currency: Currency::parse(&row.text(4)?).map_err(stored)?,
            created_at_ms: row.i64(5)?,
            number: row.opt_text(6)?.unwrap_or_default(),
            bank: row
                .opt_text(7)?
                .filter(|_| row.text(2).is_ok_and(|k| k != "card_topup")),
            holder_name: vault
                .open_opt(&personal::FUNDING_HOLDER, row.opt_text(8)?.as_deref())?
                .unwrap_or_default(),
            reference: row.opt_text(9)?,
            card_behaviour: row.opt_text(10)?.unwrap_or_default(),
        })
    }

    /// The operation as its bank sees it.
    fn instruction(&self) -> Instruction<'_> {
        Instruction {
            id: self.id,
            kind: if self.kind == "payout" {
                "payout"
            } else {
                "topup"
            },
            amount: self.amount,
            currency: self.currency,
            account: &self.number,
            holder_name: &self.holder_name,
            reference: self.reference.as_deref().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_numbers_are_masked_and_names_compared_loosely() {
        assert_eq!(mask_number("1234567"), "****567");
        assert!(same_name("Hanako  SUZUKI", "hanako suzuki"));
        assert!(!same_name("Hanako Suzuki", "Hanako Sato"));
    }
}
