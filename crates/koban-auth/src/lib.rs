//! Koban's identity and account security (threat model D1-D3): sign-up, passwords, second
//! factors, sessions, throttling, step-up with dynamic linking, contact changes, recovery,
//! notifications through a transactional outbox, and the tamper-evident audit chain.
//!
//! [`Auth`] is the service; the HTTP layer calls its methods and maps [`AuthError`] to
//! problems. Everything is stored through [`koban_store::sql::SqlDb`], so the same code runs on
//! SQLite and PostgreSQL, and every counter that throttling needs lives in the database, so it
//! holds across instances.
//!
//! Architecture invariant: no HTTP and no JSON on the wire here; no secret (password, code,
//! token, seed) is ever logged, formatted into an error, or stored unhashed (TOTP seeds are
//! sealed, since they must be read back).

pub mod alarm;
pub mod apikeys;
pub mod audit;
pub mod customers;
mod flows;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod passkeys;
pub mod password;
pub mod secret;
pub mod sessions;
pub mod stepup;
pub mod throttle;
pub mod totp;

use koban_store::sql::{SqlDb, SqlTx};
use koban_store::{Clock, StoreError};

pub use flows::{
    EnrolledTotp, FactorView, LoginOutcome, NewSignup, OperatorInvite, RecoveryRequestView,
    TotpEnrollment, UserView,
};
pub use model::{
    BirthDate, Client, DeviceCookie, DisplayName, Email, LegalName, Phone, Role, UserKind,
};
pub use password::{Hasher, HasherConfig, Lane, NewPassword, Password, PasswordRejection};
pub use secret::{Secret, ServerKeys};
pub use sessions::{IssuedSession, Principal, SessionLevel};
pub use stepup::{SensitiveAction, StepUpAnswer, StepUpChallenge, StepUpGrant, StepUpProof};

/// Everything that can go wrong in an identity operation. Messages never say which of two
/// credentials was wrong, whether an account exists, or any secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Password(#[from] PasswordRejection),
    #[error("the sign-in details or the code are not right")]
    BadCredentials,
    /// A right TOTP code of a time step this factor has already accepted.
    #[error(
        "this code was already used; wait for the next code from your app (a new one every 30 seconds)"
    )]
    CodeReused,
    #[error("too many attempts; try again in {retry_after_s} s")]
    Throttled { retry_after_s: u64 },
    #[error("the service is busy; try again shortly")]
    Busy,
    #[error("sign in first, or sign in again: the session is missing, expired or revoked")]
    Unauthenticated,
    #[error("confirm the sign-in with a second factor first")]
    SecondFactorRequired,
    #[error("enrol a second factor first")]
    EnrolmentRequired,
    #[error("verify your e-mail address first")]
    EmailNotVerified,
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    #[error("this action must be confirmed with a second factor")]
    StepUpRequired(Box<StepUpChallenge>),
    #[error("the confirmation is expired, used, or was made for a different action")]
    StepUpInvalid,
    /// The authenticator's answer to a passkey registration was refused, and why (no
    /// secret: the reason is one of a few fixed texts).
    #[error("the passkey was not accepted: {0}")]
    PasskeyRefused(&'static str),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("the account is frozen; contact support")]
    Frozen,
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Settings of the identity service. Durations are seconds; amounts are minor units.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Base URL used in links sent by e-mail.
    pub public_url: String,
    pub session_idle_s: i64,
    pub session_absolute_s: i64,
    /// Consecutive failures on one account before each attempt is delayed.
    pub account_delay_after: i64,
    /// Consecutive failures on one account that lock it.
    pub account_lock_after: i64,
    pub account_lock_s: i64,
    /// Failures from one network (IPv4 /24, IPv6 /64) per window before it is blocked.
    pub network_failures_max: i64,
    /// Failures from one device cookie per window before it is blocked.
    pub device_failures_max: i64,
    pub window_s: i64,
    /// Distinct accounts one secret may fail against (per `secret_retention_s`) before that
    /// secret is refused everywhere.
    pub spray_accounts_max: i64,
    pub secret_retention_s: i64,
    /// The global alarm fires when failures in the last minute exceed this multiple of the
    /// baseline (the mean of the hour before, but at least `alarm_floor_per_min`).
    pub alarm_multiple: i64,
    pub alarm_floor_per_min: i64,
    pub step_up_s: i64,
    pub code_s: i64,
    /// After a contact or factor change or a recovery, outgoing money is limited for this long.
    pub cooling_off_s: i64,
    /// What may go out during cooling-off, in minor units.
    pub cooling_off_limit_minor: i64,
    pub recovery_wait_s: i64,
    /// Sign-ups, reset requests and recovery requests from one network per window.
    pub requests_per_network_max: i64,
    /// Development mode: no `Secure` cookies, the mailbox is readable over HTTP.
    pub dev: bool,
    pub hasher: HasherConfig,
    /// An SMTP relay for notifications; without one they go to the local mailbox.
    pub smtp: Option<outbox::SmtpConfig>,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            public_url: "http://localhost:8080".into(),
            session_idle_s: 15 * 60,
            session_absolute_s: 12 * 3600,
            account_delay_after: 5,
            account_lock_after: 10,
            account_lock_s: 30 * 60,
            network_failures_max: 100,
            device_failures_max: 20,
            window_s: 15 * 60,
            spray_accounts_max: 5,
            secret_retention_s: 3600,
            alarm_multiple: 10,
            alarm_floor_per_min: 20,
            step_up_s: 5 * 60,
            code_s: 30 * 60,
            cooling_off_s: 24 * 3600,
            cooling_off_limit_minor: 10_000,
            recovery_wait_s: 72 * 3600,
            requests_per_network_max: 30,
            dev: false,
            hasher: HasherConfig::default(),
            smtp: None,
        }
    }
}

/// The identity service over one database.
#[derive(Clone)]
pub struct Auth<D: SqlDb> {
    pub(crate) db: D,
    pub(crate) keys: ServerKeys,
    /// The audit chain's key, derived from `keys` once.
    pub(crate) audit_key: koban_shared::audit::AuditKey,
    pub(crate) hasher: Hasher,
    pub(crate) clock: Clock,
    pub(crate) config: std::sync::Arc<AuthConfig>,
    /// Wakes the outbox worker when a message was just written.
    pub(crate) outbox_wake: std::sync::Arc<tokio::sync::Notify>,
    pub(crate) mailer: std::sync::Arc<outbox::Mailer>,
    /// The WebAuthn relying party; `None` when the public URL has no domain name.
    pub(crate) webauthn: Option<std::sync::Arc<webauthn_rs::Webauthn>>,
    /// Attempts refused by throttling since the alarm last flushed them to the database
    /// (counted in memory so that a refusal costs no write).
    pub(crate) refused: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Seals personal data at rest (`koban_shared::personal`).
    pub(crate) vault: koban_shared::personal::Vault,
}

/// Whether `db` was set up with `keys` (recording their fingerprint on first use). Instances
/// with different keys would not recognise each other's sessions, codes or throttling
/// counters, nor open each other's personal data, so a mismatch stops [`Auth::new`].
async fn master_key_matches<D: SqlDb>(db: &D, keys: &ServerKeys) -> Result<(), AuthError> {
    let fingerprint = keys.hash(secret::HashPurpose::Token, &[b"master-key-fingerprint"]);
    let mut tx = db.begin().await?;
    tx.execute(
        "INSERT INTO server_key_check (id, fingerprint) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        koban_store::params![fingerprint],
    )
    .await?;
    let stored = koban_store::sql::SqlTxExt::query_one(
        &mut tx,
        "SELECT fingerprint FROM server_key_check WHERE id = 1",
        vec![],
    )
    .await?
    .bytes(0)?;
    tx.commit().await?;
    if secret::constant_time_eq(&stored, &fingerprint) {
        Ok(())
    } else {
        Err(AuthError::Conflict(
            "this database was set up with another master key: give every instance the same key",
        ))
    }
}

impl<D: SqlDb> Auth<D> {
    /// Identity on `db`: loads the personal data keys (creating the first on a new database)
    /// and seals, once, personal data an older version wrote in clear.
    pub async fn new(
        db: D,
        keys: ServerKeys,
        clock: Clock,
        config: AuthConfig,
    ) -> Result<Self, AuthError> {
        // A process with another master key must not create or use the personal data keys:
        // what it sealed, nobody else could open.
        master_key_matches(&db, &keys).await?;
        let vault = keys.vault(&db, clock.clone()).await?;
        let sealed = koban_shared::personal::seal_clear_columns(&db, &vault).await?;
        if sealed > 0 {
            tracing::info!(values = sealed, "personal data written in clear was sealed");
        }
        Ok(Auth {
            vault,
            mailer: std::sync::Arc::new(outbox::Mailer::new(config.smtp.as_ref())?),
            webauthn: passkeys::relying_party(&config.public_url).map(std::sync::Arc::new),
            hasher: Hasher::new(config.hasher.clone())?,
            db,
            audit_key: keys.audit_key(),
            keys,
            clock,
            config: std::sync::Arc::new(config),
            outbox_wake: std::sync::Arc::new(tokio::sync::Notify::new()),
            refused: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0)),
        })
    }

    /// Counts an attempt against its account before its secret is checked, in a transaction
    /// of its own (so the count stands whatever happens next), or refuses it when a throttle
    /// applies. Returns the attempt's number in the account's run of failures.
    pub(crate) async fn begin_attempt(
        &self,
        attempt: &throttle::AttemptKeys,
    ) -> Result<i64, AuthError> {
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        match throttle::begin(&mut tx, &self.config, now, attempt).await {
            Ok(number) => {
                tx.commit().await?;
                Ok(number)
            }
            Err(refused @ AuthError::Throttled { .. }) => {
                self.refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(refused)
            }
            Err(other) => Err(other),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The key the audit chain is linked under.
    pub fn audit_key(&self) -> &koban_shared::audit::AuditKey {
        &self.audit_key
    }

    pub fn keys(&self) -> &ServerKeys {
        &self.keys
    }

    pub fn db(&self) -> &D {
        &self.db
    }

    /// The vault that seals personal data at rest.
    pub fn vault(&self) -> &koban_shared::personal::Vault {
        &self.vault
    }

    /// Reloads the personal data keys (a rotation elsewhere); the serving process calls it
    /// every `personal::REFRESH_MS`.
    pub async fn refresh_personal_keys(&self) -> Result<(), AuthError> {
        Ok(self.vault.refresh(&self.db).await?)
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().nanos() / 1_000_000).unwrap_or(i64::MAX)
    }
}
