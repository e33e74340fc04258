//! Koban's payments (threat model D4, D5, D7): wallets and their tiers, the issuer's own
//! accounts, bank accounts linked by micro-deposits through the sandbox bank, top-ups and
//! payouts that stay pending until the bank settles, P2P transfers with confirmation of payee
//! and step-up, merchant payments in both QR directions with fees, refunds, transfers held for
//! review, and the one risk hook every movement passes through.
//!
//! [`Payments`] is the service. Money lives only in the ledger: every operation here decides,
//! then submits one atomic batch; the SQL tables hold what the ledger does not (who owns an
//! account, what a bank said, what a merchant asked for).
//!
//! Architecture invariants: every money-moving call takes an idempotency key and derives the
//! ledger ids of its batch from it, so a retry is a ledger replay and never moves money twice;
//! every movement is decided by [`Payments::assess`] first; wallets can never go negative (a
//! ledger flag); each batch that changes the customers' e-money carries a memo leg on the
//! issuer's e-money outstanding account, so outstanding always equals the sum of wallets.

pub mod accounts;
pub mod backtest;
pub mod bank;
pub mod card_topups;
pub mod cases;
pub mod connectors;
pub mod fraud;
pub mod iso20022;
pub mod links;
pub mod losses;
pub mod merchant;
pub mod offline;
pub mod outbound;
pub mod p2p;
pub mod privacy;
pub mod qr;
pub mod retention;
pub mod review;
pub mod risk;
pub mod statements;
pub mod wallets;
pub mod webhooks;

use koban_shared::mail::Mail;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use koban_auth::secret::HashPurpose;
use koban_auth::{Auth, AuthError};
use koban_ledger::{Amount, Currency, RejectReason, TransferId};
use koban_store::sql::{Held, SqlDb};
use koban_store::{LedgerStore, StoreError};

pub use accounts::IssuerAccount;
pub use card_topups::year_month;
pub use koban_risk;
pub use risk::{Decision, Parties, RiskEvent, RiskRules};

/// Limits of one verification tier, in minor units of the wallet's currency.
#[derive(Clone, Copy, Debug)]
pub struct TierLimits {
    /// The most a wallet may hold.
    pub balance_max: u64,
    /// The most that may leave the wallet per UTC day (transfers, payments, payouts).
    pub daily_out_max: u64,
}

/// Settings of the payments service. Amounts are minor units; durations seconds.
#[derive(Clone, Debug)]
pub struct PayConfig {
    /// Currencies wallets may be held in; the first is the default.
    pub currencies: Vec<Currency>,
    pub unverified: TierLimits,
    pub verified: TierLimits,
    /// The most one payer may send to one payee per day.
    pub per_payee_daily_max: u64,
    /// Transfers and payments of at least this much need step-up even to a known payee.
    pub step_up_from_minor: u64,
    /// A transfer of at least this much to a new payee is held for review.
    pub review_new_payee_from_minor: u64,
    /// Distinct senders to one young account within an hour that hold further transfers to it.
    pub fan_in_senders_max: usize,
    /// A newly linked funding source may top up at most this much per day ...
    pub new_source_daily_max: u64,
    /// ... for this long after it was verified.
    pub new_source_cooling_s: i64,
    /// How long micro-deposits can be confirmed, and how many tries a link gets.
    pub micro_deposit_s: i64,
    pub micro_deposit_attempts_max: i64,
    /// Customer-presented codes: lifetime and the most one code can be charged.
    pub code_s: i64,
    pub code_limit_minor: u64,
    /// Wrong payment codes one merchant key, one merchant across its keys, and one network
    /// may try within 15 minutes before charges from it are refused until the window ends.
    /// A charge is counted before its code is looked up and given back when the code is
    /// known, so charges in flight at once count too.
    pub code_guesses_max: i64,
    pub code_guesses_merchant_max: i64,
    pub code_guesses_network_max: i64,
    /// Payee lookups (and transfers) naming an address that belongs to no customer, per payer
    /// and per network within an hour, before lookups are refused for the rest of it and an
    /// alert is raised (address testing).
    pub lookup_misses_max: i64,
    pub lookup_misses_network_max: i64,
    /// The longest a merchant's payment request may stay payable.
    pub request_s_max: i64,
    /// Merchant fee unless set per merchant: basis points of the amount plus a fixed part.
    pub fee_bps: u64,
    pub fee_fixed_minor: u64,
    /// The sandbox bank settles this many seconds after a top-up or payout is made.
    pub settle_after_s: i64,
    /// The sandbox bank and the test-money faucet are on (development and tests only).
    pub sandbox: bool,
    /// Reversals of at least this much wait for a second operator with the approver role
    /// (compensations always do).
    pub approval_from_minor: u64,
    /// Certificate authorities (PEM) trusted for webhook endpoints besides the platform's
    /// roots: an operator's own, or a test's.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// The ISO 20022 file bank, when the issuer has an account there.
    pub file_bank: Option<connectors::FileBank>,
    /// How long personal data is kept ([`retention`]).
    pub retention: retention::Retention,
    /// Offline purses and terminals ([`offline`]).
    pub offline: offline::OfflineConfig,
}

impl Default for PayConfig {
    fn default() -> PayConfig {
        PayConfig {
            currencies: vec![Currency::Jpy],
            // In the spirit of Japan's prepaid instruments: an unverified wallet holds and moves
            // little; a verified (KYC) wallet more.
            unverified: TierLimits {
                balance_max: 100_000,
                daily_out_max: 50_000,
            },
            verified: TierLimits {
                balance_max: 1_000_000,
                daily_out_max: 500_000,
            },
            per_payee_daily_max: 100_000,
            step_up_from_minor: 10_000,
            review_new_payee_from_minor: 100_000,
            fan_in_senders_max: 5,
            new_source_daily_max: 10_000,
            new_source_cooling_s: 72 * 3600,
            micro_deposit_s: 3 * 24 * 3600,
            micro_deposit_attempts_max: 3,
            code_s: 60,
            code_limit_minor: 50_000,
            code_guesses_max: 20,
            code_guesses_merchant_max: 50,
            code_guesses_network_max: 50,
            lookup_misses_max: 20,
            lookup_misses_network_max: 60,
            request_s_max: 24 * 3600,
            fee_bps: 250,
            fee_fixed_minor: 0,
            settle_after_s: 5,
            sandbox: false,
            approval_from_minor: 50_000,
            tls_ca_pem: None,
            file_bank: None,
            retention: retention::Retention::default(),
            offline: offline::OfflineConfig::default(),
        }
    }
}

/// Everything that can go wrong in a payment. Messages never carry a secret and never reveal
/// which risk rule refused.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("not found")]
    NotFound,
    /// A risk rules file was refused: the message names the file, the rule and the problem
    /// (rules hold no secrets).
    #[error("{0}")]
    RulesInvalid(String),
    #[error("insufficient funds")]
    InsufficientFunds,
    /// A limit the customer can know about: `code` names it.
    #[error("{detail}")]
    Limit { code: &'static str, detail: String },
    /// Refused by the risk checks; the code does not reveal the rule.
    #[error("the payment was declined")]
    Declined { code: &'static str },
    #[error("{0}")]
    Conflict(&'static str),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("a request with this Idempotency-Key is still in progress")]
    InFlight,
    #[error("{0}")]
    Gone(&'static str),
    #[error("the account is frozen; contact support")]
    Frozen,
    /// A feature this server is not configured for.
    #[error("{0}")]
    Unavailable(&'static str),
    /// A card top-up needs the card issuer's confirmation code (sent to the mailbox).
    #[error(
        "confirm this top-up with the code your card issuer sent: repeat the same request, with the same Idempotency-Key, adding challenge {{id, code}}"
    )]
    ChallengeRequired { id: String, expires_at_ms: i64 },
}

impl From<StoreError> for PayError {
    fn from(error: StoreError) -> PayError {
        PayError::Auth(AuthError::Store(error))
    }
}

/// A ledger refusal of a batch this service built. Business refusals (funds, frozen) are
/// expected; anything else means this code built a bad batch.
pub fn ledger_refusal(reason: RejectReason) -> PayError {
    match reason {
        RejectReason::ExceedsCredits => PayError::InsufficientFunds,
        RejectReason::DebitAccountFrozen
        | RejectReason::CreditAccountFrozen
        | RejectReason::DebitAccountClosed
        | RejectReason::CreditAccountClosed => PayError::Frozen,
        RejectReason::IdempotencyConflict => PayError::IdempotencyMismatch,
        RejectReason::PendingAlreadyPosted
        | RejectReason::PendingAlreadyVoided
        | RejectReason::PendingExpired => PayError::Conflict("this was already settled"),
        other => {
            tracing::error!(reason = other.code(), "the ledger refused a payments batch");
            PayError::Auth(AuthError::Internal("the ledger refused the operation"))
        }
    }
}

/// An idempotency key as sent by the client: 1 to 255 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<IdempotencyKey, PayError> {
        let ok = !text.is_empty()
            && text.len() <= 255
            && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        if ok {
            Ok(IdempotencyKey(text.to_owned()))
        } else {
            Err(PayError::Invalid(
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An amount as a client gives it: a positive integer count of minor units.
pub fn parse_amount(minor_units: i64) -> Result<Amount, PayError> {
    if minor_units <= 0 {
        return Err(PayError::Invalid(
            "amount must be a positive integer of minor units",
        ));
    }
    Amount::from_i64(minor_units).map_err(|_| PayError::Invalid("amount is too large"))
}

/// `bps` basis points of `amount`, rounded down, without overflow: `bps` is capped at 10,000,
/// so the answer is at most the amount itself.
pub fn basis_points(amount: u64, bps: u64) -> u64 {
    let bps = bps.min(10_000);
    amount / 10_000 * bps + amount % 10_000 * bps / 10_000
}

/// A count of minor units read back from a column this service wrote (balances, limits, sums
/// of amounts): never negative, so a negative one is corrupt data, not zero.
pub fn stored_minor(value: i64) -> Result<u64, PayError> {
    u64::try_from(value)
        .map_err(|_| PayError::Auth(AuthError::Internal("a stored amount is negative")))
}

/// A count of minor units (a sum or a limit, not an [`Amount`]) for a signed column.
pub fn minor_to_i64(value: u64) -> Result<i64, PayError> {
    i64::try_from(value).map_err(|_| PayError::Invalid("the amount is too large"))
}

/// Queues `item` unless `max` already wait: then the database is not keeping up, and the
/// caller is told it is busy now rather than queued without end.
pub(crate) fn push_bounded<T>(queue: &mut Vec<T>, item: T, max: usize) -> Result<(), PayError> {
    if queue.len() >= max {
        return Err(PayError::Auth(AuthError::Busy));
    }
    queue.push(item);
    Ok(())
}

/// Drops the oldest entries of `queue` beyond `max`; answers how many were dropped.
pub(crate) fn keep_newest<T>(queue: &mut Vec<T>, max: usize) -> usize {
    let over = queue.len().saturating_sub(max);
    queue.drain(..over);
    over
}

/// Keeps the newest [`MAIL_QUEUED_MAX`] notices waiting; the dropped are counted and logged.
fn drop_oldest_notices(queue: &mut Vec<QueuedNotice>) {
    let over = keep_newest(queue, MAIL_QUEUED_MAX);
    if over > 0 {
        metrics::counter!("koban_notices_dropped_total")
            .increment(u64::try_from(over).unwrap_or(u64::MAX));
        tracing::error!(
            dropped = over,
            "notices could not be written to the outbox in time; the oldest were dropped"
        );
    }
}

/// Notifications kept waiting for the outbox (a long database outage) before the oldest are
/// dropped.
pub const MAIL_QUEUED_MAX: usize = 100_000;
/// How long after a movement a retry that replays it still writes what a crash may have lost
/// (notices, webhook, decision); later replays only read, so repeating an old key costs no
/// writes.
pub const RECOVER_WITHIN_MS: i64 = 60 * 60 * 1000;
/// Rows kept waiting for one group commit; a write beyond is refused as busy.
pub const ROWS_QUEUED_MAX: usize = 10_000;

/// The payments service over one ledger store and the identity service on the same database.
#[derive(Clone)]
pub struct Payments<S: LedgerStore> {
    pub(crate) store: S,
    pub(crate) auth: Auth<S::Sql>,
    pub(crate) config: Arc<PayConfig>,
    /// Idempotency keys being processed by this instance (a concurrent duplicate gets 409).
    inflight: Arc<Mutex<HashSet<[u8; 16]>>>,
    /// Striped locks that serialise one wallet's outgoing movements within this instance, so
    /// the daily limits are checked and spent in one step.
    wallet_locks: Arc<Vec<tokio::sync::Mutex<()>>>,
    /// Notifications waiting to be written to the outbox in one transaction (at most
    /// [`MAIL_QUEUED_MAX`]), each under its stable outbox id.
    pending_mail: Arc<Mutex<Vec<QueuedNotice>>>,
    /// Rows waiting to be written together by [`Payments::write_batched`] (at most
    /// [`ROWS_QUEUED_MAX`]), and the lock the writer of a group holds.
    row_queue: Arc<Mutex<Vec<QueuedRow>>>,
    row_commit: Arc<tokio::sync::Mutex<()>>,
    /// The live risk rules (reloadable) and the decisions waiting to be written.
    pub(crate) risk_rules: Arc<risk::RiskRules>,
    pub(crate) risk_queue: risk::SharedRiskQueue,
    /// One flush of queued records (risk decisions, notices) at a time per instance: whoever
    /// holds it has written, or put back, everything it took.
    pub(crate) record_flush: Arc<tokio::sync::Mutex<()>>,
    /// Sign-ins refused by throttling scored in the current second (see
    /// [`Payments::score_login`]).
    pub(crate) refusals_scored: Arc<Mutex<(i64, u32)>>,
    /// Addresses each payer was already answered a hit for (`p2p::KnownAddresses`).
    pub(crate) known_addresses: Arc<Mutex<HashSet<[u8; 32]>>>,
    /// The offline issuer's signing key and trusted keys, read once ([`offline`]).
    pub(crate) offline_issuer: Arc<std::sync::OnceLock<OfflineIssuer>>,
    /// The TLS client settings for webhook endpoints, built on first use.
    pub(crate) webhook_tls: Arc<std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>>>,
    /// The banks connected (the sandbox, the ISO 20022 file bank) and the card acquirer.
    pub(crate) banks: Arc<Vec<Box<dyn connectors::BankConnector<Tx<S>>>>>,
    pub(crate) acquirer: Arc<dyn connectors::AcquirerConnector>,
}

/// The offline issuer's key number, signing key and every public key trusted.
pub(crate) type OfflineIssuer = (
    u8,
    Arc<koban_offline::SigningKey>,
    koban_offline::IssuerKeys,
);

/// The database transaction of a store's SQL side.
pub(crate) type Tx<S> = <<S as LedgerStore>::Sql as koban_store::sql::SqlDb>::Tx;

/// What a movement moves: id, debit and credit accounts, amount, currency.
type Movement = (
    TransferId,
    koban_ledger::AccountId,
    koban_ledger::AccountId,
    Amount,
    Currency,
);

/// A notice waiting for the outbox: its stable id, recipient and text.
type QueuedNotice = (String, String, Mail);

type QueuedRow = (
    &'static str,
    Vec<koban_store::sql::Value>,
    tokio::sync::oneshot::Sender<Result<(), String>>,
);

/// Removes an idempotency key from the in-flight set when the request ends, however it ends,
/// and gives back its claim for every instance.
pub struct InFlight {
    set: Arc<Mutex<HashSet<[u8; 16]>>>,
    key: [u8; 16],
    shared: Held,
}

/// One or two wallets locked by [`Payments::lock_wallet`] or `lock_wallets`, until dropped
/// (the lock of every instance is given back first, then this instance's).
pub struct WalletLock<'a> {
    _shared: Held,
    _local: Vec<tokio::sync::MutexGuard<'a, ()>>,
}

/// How long a request waits for a lock another instance holds before it answers busy.
pub const SHARED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The name of a lock shared by every instance: a kind (`w` wallet, `i` idempotency claim,
/// `c` card) and the id it locks.
pub fn shared_key(kind: u8, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(kind);
    key.extend_from_slice(id);
    key
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}

const WALLET_LOCK_STRIPES: usize = 256;

fn stripe(account: koban_ledger::AccountId) -> usize {
    (account.get() % WALLET_LOCK_STRIPES as u128) as usize
}

impl<S: LedgerStore> Payments<S> {
    pub fn new(store: S, auth: Auth<S::Sql>, config: PayConfig) -> Result<Self, PayError> {
        if config.currencies.is_empty() {
            return Err(PayError::Invalid("at least one wallet currency is needed"));
        }
        let mut banks: Vec<Box<dyn connectors::BankConnector<Tx<S>>>> = Vec::new();
        if config.sandbox {
            banks.push(Box::new(connectors::SandboxBank {
                settle_after_s: config.settle_after_s,
            }));
        }
        if let Some(file_bank) = &config.file_bank {
            banks.push(Box::new(file_bank.clone()));
        }
        Ok(Payments {
            store,
            auth,
            config: Arc::new(config),
            inflight: Arc::new(Mutex::new(HashSet::new())),
            wallet_locks: Arc::new(
                (0..WALLET_LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            ),
            pending_mail: Arc::new(Mutex::new(Vec::new())),
            row_queue: Arc::default(),
            row_commit: Arc::default(),
            risk_rules: Arc::new(
                risk::RiskRules::load(None)
                    .map_err(|_| PayError::Invalid("the default risk rules are invalid"))?,
            ),
            risk_queue: Arc::default(),
            record_flush: Arc::default(),
            refusals_scored: Arc::default(),
            known_addresses: Arc::default(),
            offline_issuer: Arc::default(),
            webhook_tls: Arc::default(),
            banks: Arc::new(banks),
            acquirer: Arc::new(connectors::SandboxAcquirer),
        })
    }

    /// Uses these risk rules (loaded from a file, reloadable) instead of the default set.
    pub fn with_risk_rules(mut self, rules: risk::RiskRules) -> Self {
        self.risk_rules = Arc::new(rules);
        self
    }

    /// Submits a batch this service built: the ledger's refusal becomes the domain's
    /// ([`ledger_refusal`]: funds, frozen, or a defect of the batch).
    pub async fn submit_batch(
        &self,
        batch: Vec<koban_ledger::TransferRequest>,
    ) -> Result<koban_ledger::Applied, PayError> {
        self.submit(batch)
            .await?
            .map_err(|r| ledger_refusal(r.reason))
    }

    /// Submits a batch this service built and checks, in release builds too, that what the
    /// ledger answers with is what was asked: one transfer per request, and each movement
    /// with the accounts, amount and currency of its request (a replay included). Callers
    /// that answer a refusal in their own terms (a card's response code) use this directly.
    pub async fn submit(
        &self,
        batch: Vec<koban_ledger::TransferRequest>,
    ) -> koban_store::SubmitResult {
        let asked: Vec<Option<Movement>> = batch
            .iter()
            .map(|request| match request {
                koban_ledger::TransferRequest::Move(m) => {
                    Some((m.id, m.debit, m.credit, m.amount, m.currency))
                }
                _ => None,
            })
            .collect();
        let answer = self.store.submit(batch).await;
        if let Ok(Ok(applied)) = &answer {
            assert_eq!(
                applied.transfers.len(),
                asked.len(),
                "the ledger answered a batch with another number of transfers"
            );
            for (done, asked) in applied.transfers.iter().zip(&asked) {
                if let Some(asked) = asked {
                    assert!(
                        (done.id, done.debit, done.credit, done.amount, done.currency) == *asked,
                        "the ledger recorded a movement other than the one asked for"
                    );
                }
            }
        }
        answer
    }

    /// Writes one row-changing statement together with others queued at the same moment,
    /// in one transaction (group commit): a hot path's record costs a share of one commit.
    /// Returns once the statement is durable.
    pub async fn write_batched(
        &self,
        sql: &'static str,
        params: Vec<koban_store::sql::Value>,
    ) -> Result<(), PayError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        {
            let mut queue = self
                .row_queue
                .lock()
                .map_err(|_| PayError::Auth(AuthError::Internal("a lock was poisoned")))?;
            push_bounded(&mut queue, (sql, params, done), ROWS_QUEUED_MAX)?;
        }
        {
            // Whoever holds the commit lock writes everything queued so far; a statement
            // written by an earlier holder finds an empty queue here and just reads its answer.
            let _writer = self.row_commit.lock().await;
            let group: Vec<QueuedRow> = match self.row_queue.lock() {
                Ok(mut queue) => std::mem::take(&mut *queue),
                Err(_) => Vec::new(),
            };
            if !group.is_empty() {
                let result = self.write_group(&group).await;
                for (_, _, done) in group {
                    let _ = done.send(result.clone());
                }
            }
        }
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => {
                tracing::error!(error = %message, "a batched write failed");
                Err(PayError::Auth(AuthError::Internal(
                    "a database write failed",
                )))
            }
            Err(_) => Err(PayError::Auth(AuthError::Internal(
                "a batched write was lost",
            ))),
        }
    }

    async fn write_group(&self, group: &[QueuedRow]) -> Result<(), String> {
        use koban_store::sql::SqlTx;
        let mut tx = self.db().begin().await.map_err(|e| e.to_string())?;
        for (sql, params, _) in group {
            tx.execute(sql, params.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())
    }

    pub fn config(&self) -> &PayConfig {
        &self.config
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The identity service on the same database (step-up, keys, audit).
    pub fn auth(&self) -> &Auth<S::Sql> {
        &self.auth
    }

    pub fn db(&self) -> &S::Sql {
        self.auth.db()
    }

    pub fn now_ms(&self) -> i64 {
        self.auth.now_ms()
    }

    /// Whether a replayed movement is recent enough that its first attempt may have died
    /// between the ledger's commit and its answer, so its retry writes again what that attempt
    /// would have written after the commit ([`RECOVER_WITHIN_MS`]). An older replay only reads.
    pub fn may_recover(&self, transfer: &koban_ledger::Transfer) -> bool {
        let at_ms = i64::try_from(transfer.timestamp.nanos() / 1_000_000).unwrap_or(i64::MAX);
        self.now_ms().saturating_sub(at_ms) < RECOVER_WITHIN_MS
    }

    /// A ledger id derived from `parts` under the server key: the same request parts always
    /// give the same id, and nobody without the key can predict one.
    pub fn derive_id(&self, parts: &[&[u8]]) -> TransferId {
        let hash = self.auth.keys().hash(HashPurpose::Payment, parts);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash[..16]);
        let value = u128::from_be_bytes(bytes).max(1);
        TransferId::new(value).unwrap_or_else(|_| unreachable!("never zero"))
    }

    /// Claims `id` (a key-derived id) for this request, in this instance and for every
    /// instance on the database; a second claim while the first runs is refused with
    /// [`PayError::InFlight`], whichever instance it reaches.
    pub async fn claim(&self, id: TransferId) -> Result<InFlight, PayError> {
        let key = id.to_bytes();
        {
            let mut set = self
                .inflight
                .lock()
                .map_err(|_| PayError::Auth(AuthError::Internal("a lock was poisoned")))?;
            if !set.insert(key) {
                return Err(PayError::InFlight);
            }
        }
        let mut claim = InFlight {
            set: self.inflight.clone(),
            key,
            shared: Held::default(),
        };
        match self.db().try_hold(vec![shared_key(b'i', &key)]).await? {
            Some(held) => claim.shared = held,
            None => return Err(PayError::InFlight),
        }
        Ok(claim)
    }

    /// Refuses a money-moving request whose session was revoked since it was authenticated
    /// (a step-up in a concurrent request rotated it): asked once the payer's wallet lock is
    /// held, which a rotating payment holds too. See `Auth::session_live`.
    pub async fn still_signed_in(&self, principal: &koban_auth::Principal) -> Result<(), PayError> {
        Ok(self.auth.session_live(principal).await?)
    }

    /// Locks a wallet's outgoing movements: this instance's stripe first, then the wallet for
    /// every instance on the database (waiting at most [`SHARED_WAIT`], then busy).
    pub async fn lock_wallet(
        &self,
        account: koban_ledger::AccountId,
    ) -> Result<WalletLock<'_>, PayError> {
        let local = vec![self.wallet_locks[stripe(account)].lock().await];
        let shared = self
            .hold_shared(vec![shared_key(b'w', &account.to_bytes())])
            .await?;
        Ok(WalletLock {
            _shared: shared,
            _local: local,
        })
    }

    /// Locks a payer's and a payee's wallet, always in stripe order (so two transfers in
    /// opposite directions cannot wait for each other), then both for every instance at once.
    pub(crate) async fn lock_wallets(
        &self,
        a: koban_ledger::AccountId,
        b: koban_ledger::AccountId,
    ) -> Result<WalletLock<'_>, PayError> {
        let (first, second) = (stripe(a).min(stripe(b)), stripe(a).max(stripe(b)));
        let mut local = vec![self.wallet_locks[first].lock().await];
        if second != first {
            local.push(self.wallet_locks[second].lock().await);
        }
        let keys = vec![
            shared_key(b'w', &a.to_bytes()),
            shared_key(b'w', &b.to_bytes()),
        ];
        let shared = self.hold_shared(keys).await?;
        Ok(WalletLock {
            _shared: shared,
            _local: local,
        })
    }

    /// Takes `keys` for every instance on the database, all or none at a time (so two holders
    /// cannot each wait for the other), asking again after a growing pause while another
    /// instance holds one; busy after [`SHARED_WAIT`]. The caller holds this instance's locks
    /// of the same keys.
    pub async fn hold_shared(&self, keys: Vec<Vec<u8>>) -> Result<Held, PayError> {
        let deadline = std::time::Instant::now() + SHARED_WAIT;
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            if let Some(held) = self.db().try_hold(keys.clone()).await? {
                return Ok(held);
            }
            if std::time::Instant::now() >= deadline {
                metrics::counter!("koban_shared_lock_timeouts_total").increment(1);
                return Err(PayError::Auth(AuthError::Busy));
            }
            // Up to half again at random, so holders that missed each other do not meet
            // again on the same beat.
            let jitter = pause.mul_f64(rand::random::<f64>() / 2.0);
            tokio::time::sleep(pause + jitter).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }

    pub fn currency_enabled(&self, code: &str) -> Result<Currency, PayError> {
        let currency = Currency::parse(code)
            .map_err(|_| PayError::Invalid("currency must be an ISO 4217 code Koban supports"))?;
        if self.config.currencies.contains(&currency) {
            Ok(currency)
        } else {
            Err(PayError::Invalid(
                "wallets are not offered in this currency",
            ))
        }
    }

    /// Step-up for a payment of `amount` to `payee` (as the customer will read it): the
    /// proof must be bound to exactly this payment. A confirmed step-up rotates the session,
    /// so callers ask for it once nothing else can refuse.
    pub async fn confirm_payment(
        &self,
        principal: &koban_auth::Principal,
        amount_minor: i64,
        currency: Currency,
        payee: String,
        proof: Option<&koban_auth::StepUpProof>,
        client: &koban_auth::Client,
    ) -> Result<koban_auth::IssuedSession, PayError> {
        let action = koban_auth::SensitiveAction::Payment {
            amount_minor,
            currency: currency.code().to_owned(),
            payee,
        };
        Ok(self
            .auth
            .confirm_action(principal, &action, proof, client)
            .await?)
    }

    /// Queues the notice `mail` about the movement `event` for `recipient`;
    /// [`Payments::flush_records`] writes the queue to the outbox in one transaction (the
    /// worker every 100 ms; a payment before it answers, through [`Payments::make_durable`]).
    ///
    /// The notice's outbox id derives from the movement, the notice and the recipient, so a
    /// retried request that tells again (after a crash between its commit and its answer)
    /// writes nothing twice. The movement a notice tells of is already committed, so a notice
    /// cannot be refused; when the outbox has been unwritable so long that [`MAIL_QUEUED_MAX`]
    /// wait, the oldest are dropped, with an error in the log and a counter on `/metrics`.
    pub fn notify(&self, event: TransferId, recipient: &str, mail: Mail) {
        let id = self.derive_id(&[
            b"notice",
            &event.to_bytes(),
            mail.key().as_bytes(),
            recipient.as_bytes(),
        ]);
        let id = uuid::Uuid::from_u128(id.get()).to_string();
        if let Ok(mut queue) = self.pending_mail.lock() {
            queue.push((id, recipient.to_owned(), mail));
            drop_oldest_notices(&mut queue);
        }
    }

    /// Writes every queued risk decision and notice (its own and other requests'), and
    /// returns once the database holds them (unsynced, see `SqlDb::begin_unsynced`: they
    /// survive a crash of this process): a payment calls it before it answers, so nothing
    /// acknowledged lives only in this process's memory. Requests arriving together share one write: whoever
    /// gets the flush lock next writes what all of them queued, and the others find nothing
    /// left. A failed write keeps what it took queued and is an error here.
    pub async fn make_durable(&self) -> Result<(), PayError> {
        self.flush_records().await.map(|_| ())
    }

    /// Writes the queued risk decisions (with their alerts) and notices, one flush at a time
    /// per instance; answers how many decisions and notices were written.
    pub async fn flush_records(&self) -> Result<(usize, usize), PayError> {
        let _one_flush = self.record_flush.lock().await;
        let risk = self.flush_risk_locked().await;
        let notices = self.flush_notifications_locked().await;
        Ok((risk?, notices?))
    }

    /// Writes queued notifications to the outbox; answers how many. The caller holds
    /// `record_flush`. A failed write puts them back, oldest first.
    async fn flush_notifications_locked(&self) -> Result<usize, PayError> {
        let batch: Vec<QueuedNotice> = match self.pending_mail.lock() {
            Ok(mut queue) => std::mem::take(&mut *queue),
            Err(_) => return Err(PayError::Auth(AuthError::Internal("a lock was poisoned"))),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let written = self.write_notices(&batch).await;
        if written.is_err()
            && let Ok(mut queue) = self.pending_mail.lock()
        {
            let newer = std::mem::replace(&mut *queue, batch);
            queue.extend(newer);
            drop_oldest_notices(&mut queue);
            return written.map(|()| 0);
        }
        written.map(|()| batch.len())
    }

    async fn write_notices(&self, batch: &[QueuedNotice]) -> Result<(), PayError> {
        let now = self.now_ms();
        // Unsynced: it survives a crash of this process (what "acknowledged" needs here); the
        // database's next flush takes it to disk, and a retry can write it again.
        let mut tx = self.db().begin_unsynced().await?;
        for (id, recipient, mail) in batch {
            koban_shared::outbox::enqueue_once(
                &mut tx,
                self.auth.vault(),
                id,
                now,
                recipient,
                mail,
            )
            .await?;
        }
        koban_store::sql::SqlTx::commit(tx).await?;
        Ok(())
    }

    /// Background work: settles due sandbox bank operations, flushes notifications, delivers
    /// due webhooks.
    pub async fn tick(&self) -> Result<(), PayError> {
        self.settle_and_flush(true).await?;
        self.deliver_webhooks(50).await?;
        Ok(())
    }

    /// The part of [`Payments::tick`] that must not wait for merchants' endpoints (the
    /// server runs webhook delivery in a task of its own): this instance's queued risk records
    /// and notices are written whatever else fails, and due bank operations are settled when
    /// `settle` (the server: while this instance holds the settlement lease).
    pub async fn settle_and_flush(&self, settle: bool) -> Result<(), PayError> {
        // Settlement and the bank's files are independent: one failing holds up neither.
        let settled = match settle {
            true => {
                let due = self.settle_due(100).await.map(|_| ());
                let files = self.send_payment_files().await.map(|_| ());
                due.and(files)
            }
            false => Ok(()),
        };
        let records = self.flush_records().await;
        settled.and(records).map(|_| ())
    }
}

/// Formats minor units with the currency code, for messages ("JPY 1,200").
pub fn format_money(minor: u64, currency: Currency) -> String {
    let exponent = currency.exponent();
    let divisor = 10u64.pow(exponent);
    let whole = minor / divisor;
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if exponent == 0 {
        format!("{} {grouped}", currency.code())
    } else {
        format!(
            "{} {grouped}.{:0width$}",
            currency.code(),
            minor % divisor,
            width = exponent as usize
        )
    }
}

/// A display name as a payer may see it before confirming: first letter of each word.
pub fn mask_name(name: &str) -> String {
    name.split_whitespace()
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => {
                    let rest = chars.count().clamp(2, 6);
                    format!("{first}{}", "*".repeat(rest))
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_row_queue_refuses_as_busy_and_keeps_what_it_holds() {
        let mut queue: Vec<u32> = Vec::new();
        for i in 0..3 {
            push_bounded(&mut queue, i, 3).expect("room left");
        }
        let refused = push_bounded(&mut queue, 3, 3);
        assert!(matches!(refused, Err(PayError::Auth(AuthError::Busy))));
        assert_eq!(queue, vec![0, 1, 2]);
        queue.remove(0);
        push_bounded(&mut queue, 3, 3).expect("room again once one was written");
        assert_eq!(queue, vec![1, 2, 3]);
    }

    #[test]
    fn a_bounded_queue_keeps_its_newest() {
        let mut queue: Vec<u32> = (0..10).collect();
        assert_eq!(keep_newest(&mut queue, 12), 0);
        assert_eq!(queue.len(), 10);
        assert_eq!(keep_newest(&mut queue, 4), 6);
        assert_eq!(queue, vec![6, 7, 8, 9]);
    }

    #[test]
    fn basis_points_round_down_and_never_exceed_the_amount() {
        assert_eq!(basis_points(10_000, 250), 250);
        assert_eq!(basis_points(9_999, 1), 0);
        assert_eq!(basis_points(123_456_789, 1_500), 18_518_518);
        assert_eq!(basis_points(u64::MAX, 10_000), u64::MAX);
        assert_eq!(basis_points(u64::MAX, 99_999), u64::MAX, "capped at 100%");
        assert_eq!(
            basis_points(u64::MAX, 5_000),
            u64::try_from(u128::from(u64::MAX) * 5_000 / 10_000).unwrap()
        );
    }

    #[test]
    fn names_are_masked_to_initials() {
        assert_eq!(mask_name("Hanako Suzuki"), "H***** S*****");
        assert_eq!(mask_name("Al"), "A**");
        assert_eq!(mask_name("  "), "");
    }

    #[test]
    fn money_is_formatted_per_exponent() {
        assert_eq!(format_money(1_234_567, Currency::Jpy), "JPY 1,234,567");
        assert_eq!(format_money(1_050, Currency::Usd), "USD 10.50");
        assert_eq!(format_money(5, Currency::Eur), "EUR 0.05");
    }

    #[test]
    fn idempotency_keys_and_amounts_are_parsed_once() {
        assert!(IdempotencyKey::parse("order-1").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("bad\nkey").is_err());
        assert!(parse_amount(0).is_err());
        assert!(parse_amount(-5).is_err());
        assert_eq!(parse_amount(7).unwrap().minor_units(), 7);
    }
}
