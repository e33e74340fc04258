//! The identity flows, one file per job: `signup.rs` (sign-up and e-mail verification),
//! `signin.rs` (password, second factor, known devices), `factors.rs` (TOTP enrolment,
//! recovery codes, removing a factor), `account.rs` (profile, contact and password changes,
//! "this was not me"), `recovery.rs` (password reset, recovery by operator review),
//! `operators.rs` (invitation and enrolment). Here: the types they answer with, and the
//! helpers they share (one-time codes, the audit entry, request limits, cooling-off,
//! notices). Each flow writes its state, its audit entry and its notifications in one
//! transaction.

use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};

use crate::customers::mask_email;
use crate::model::{BirthDate, DisplayName, Email, LegalName, Phone, Role, UserKind};
use crate::password::{Lane, NewPassword, Password};
use crate::secret::{
    HashPurpose, Secret, constant_time_eq, random_digits, random_recovery_code, random_token,
};
use crate::sessions::{IssuedSession, Principal, SessionLevel};
use crate::stepup::{SensitiveAction, StepUpProof};
use crate::throttle::{self, AttemptKeys};
use crate::{Auth, AuthError, Client, totp};
use koban_shared::audit::{AuditEvent, append};
use koban_shared::mail::Mail;
use koban_shared::new_id;
use koban_shared::outbox::enqueue;
use koban_shared::personal::{self, Index, Vault};

/// Wrong tries against one e-mailed code before it is void.
const CODE_ATTEMPTS_MAX: i64 = 5;
pub const RECOVERY_CODES: usize = 10;
/// An unconfirmed TOTP enrolment is good this long.
const ENROLMENT_MS: i64 = 15 * 60 * 1000;
/// "This was not me" and recovery-cancel links are good this long.
const LINK_MS: i64 = 30 * 24 * 3600 * 1000;
/// An operator's enrolment link is good this long.
const OPERATOR_LINK_MS: i64 = 72 * 3600 * 1000;
/// A new reset code is sent at most this often per account.
const RESET_EVERY_MS: i64 = 60 * 1000;

/// What a new account is made of.
#[derive(Debug)]
pub struct NewSignup {
    pub kind: UserKind,
    pub email: Email,
    pub password: Secret<String>,
    pub display_name: DisplayName,
    pub legal_name: Option<LegalName>,
    pub date_of_birth: Option<BirthDate>,
    pub phone: Option<Phone>,
    /// The language notices are written in (the page's or the request's).
    pub lang: koban_shared::lang::Lang,
}

/// The notice of a change to an account: `key` names what changed (a `change-...` message).
fn change(key: &'static str) -> Mail {
    Mail::new("account-changed").arg_message("what", key)
}

/// What a second-factor code turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CodeCheck {
    Right,
    Wrong,
    /// A TOTP code of a time step already accepted: right once, not again.
    Reused,
}

impl CodeCheck {
    /// The refusal to answer with, given the one recording the failure produced: a reused
    /// code says so (and to wait for the next one); anything else stays as it is.
    pub(crate) fn refusal(self, recorded: AuthError) -> AuthError {
        match (self, recorded) {
            (CodeCheck::Reused, AuthError::BadCredentials) => AuthError::CodeReused,
            (_, error) => error,
        }
    }
}

/// The result of a right password.
#[derive(Debug)]
pub struct LoginOutcome {
    /// A session at the password level: it can only confirm a second factor, or enrol the
    /// first one.
    pub session: IssuedSession,
    pub has_factor: bool,
}

#[derive(Debug)]
pub struct TotpEnrollment {
    pub factor_id: String,
    pub otpauth_uri: Secret<String>,
    pub qr_svg: Secret<String>,
    /// Set when a step-up rotated the session.
    pub session: Option<IssuedSession>,
}

#[derive(Debug)]
pub struct EnrolledTotp {
    /// The recovery codes, shown once, when this was the first factor.
    pub recovery_codes: Option<Vec<Secret<String>>>,
    /// The session, upgraded and rotated, when this was the first factor.
    pub session: Option<IssuedSession>,
}

#[derive(Clone, Debug)]
pub struct FactorView {
    pub id: String,
    pub kind: String,
    pub label: String,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug)]
pub struct UserView {
    pub id: String,
    pub kind: UserKind,
    pub role: Option<Role>,
    pub email: String,
    pub email_verified: bool,
    pub phone: Option<String>,
    pub display_name: String,
    pub legal_name: Option<String>,
    pub date_of_birth: Option<String>,
    pub status: String,
    pub cooling_off_until_ms: Option<i64>,
    pub factors: Vec<FactorView>,
    pub recovery_codes_left: i64,
}

#[derive(Debug)]
pub struct OperatorInvite {
    pub operator_id: String,
    pub enrolment_link: Secret<String>,
}

#[derive(Clone, Debug)]
pub struct RecoveryRequestView {
    pub id: String,
    pub user_id: String,
    pub status: String,
    pub created_at_ms: i64,
    pub not_before_ms: i64,
}

struct UserRow {
    id: String,
    kind: UserKind,
    email: String,
    password_hash: Option<String>,
    status: String,
    email_verified: bool,
    display_name: String,
}

/// `SELECT` of the columns [`user_row`] reads, followed by `$where`.
macro_rules! select_user {
    ($where:literal) => {
        concat!(
            "SELECT id, kind, email, password_hash, status, email_verified_at, display_name FROM users ",
            $where
        )
    };
}

fn user_row(vault: &Vault, row: &koban_store::sql::Row) -> Result<UserRow, AuthError> {
    Ok(UserRow {
        id: row.text(0)?,
        kind: UserKind::parse(&row.text(1)?)?,
        email: vault.open(&personal::USER_EMAIL, &row.text(2)?)?,
        password_hash: row.opt_text(3)?,
        status: row.text(4)?,
        email_verified: row.opt_i64(5)?.is_some(),
        display_name: vault.open(&personal::USER_DISPLAY_NAME, &row.text(6)?)?,
    })
}

async fn user_by_email<T: SqlTx>(
    tx: &mut T,
    vault: &Vault,
    email: &str,
) -> Result<Option<UserRow>, AuthError> {
    tx.query_opt(
        select_user!("WHERE email_index = $1"),
        params![vault.index(Index::Email, email)],
    )
    .await?
    .as_ref()
    .map(|row| user_row(vault, row))
    .transpose()
}

async fn user_by_id<T: SqlTx>(tx: &mut T, vault: &Vault, id: &str) -> Result<UserRow, AuthError> {
    tx.query_opt(select_user!("WHERE id = $1"), params![id])
        .await?
        .as_ref()
        .map(|row| user_row(vault, row))
        .transpose()?
        .ok_or(AuthError::NotFound)
}

/// Counts a wrong try against an e-mailed code (atomically, so parallel guesses all count);
/// the fifth uses it up.
async fn count_wrong_code<T: SqlTx>(tx: &mut T, code_id: &str, now: i64) -> Result<(), AuthError> {
    tx.execute(
        "UPDATE one_time_codes SET attempts = attempts + 1, \
         used_at = CASE WHEN attempts + 1 >= $1 THEN $2 ELSE used_at END \
         WHERE id = $3 AND used_at IS NULL",
        params![CODE_ATTEMPTS_MAX, now, code_id],
    )
    .await?;
    Ok(())
}

/// Takes the user's row lock (PostgreSQL) so that changes to one user's factors and
/// recovery requests happen one at a time; SQLite's write lock already does this.
pub(crate) async fn lock_user<T: SqlTx>(tx: &mut T, user_id: &str) -> Result<(), AuthError> {
    let locked = tx
        .execute(
            "UPDATE users SET status = status WHERE id = $1",
            params![user_id],
        )
        .await?;
    if locked == 1 {
        Ok(())
    } else {
        Err(AuthError::NotFound)
    }
}

pub(crate) async fn confirmed_factors<T: SqlTx>(
    tx: &mut T,
    user_id: &str,
) -> Result<i64, AuthError> {
    Ok(tx
        .query_one(
            "SELECT COUNT(*) FROM factors WHERE user_id = $1 AND confirmed_at IS NOT NULL",
            params![user_id],
        )
        .await?
        .i64(0)?)
}

fn normalise_code(code: &str) -> String {
    code.trim().replace([' ', '\t'], "").to_lowercase()
}

impl<D: SqlDb> Auth<D> {
    async fn audit<T: SqlTx>(
        &self,
        tx: &mut T,
        now: i64,
        actor: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> Result<(), AuthError> {
        append(
            tx,
            &self.audit_key,
            now,
            AuditEvent {
                actor,
                action,
                subject,
                details,
            },
        )
        .await?;
        Ok(())
    }

    /// Appends an audit entry of the caller acting on their own account.
    pub(crate) async fn audit_own<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        action: &str,
        details: serde_json::Value,
        now: i64,
    ) -> Result<(), AuthError> {
        let subject = format!("user:{}", principal.user_id);
        self.audit(tx, now, &principal.actor(), action, &subject, details)
            .await
    }

    async fn create_code<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        purpose: &str,
        target: Option<&str>,
        now: i64,
    ) -> Result<Secret<String>, AuthError> {
        tx.execute(
            "UPDATE one_time_codes SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
            params![now, user_id, purpose],
        )
        .await?;
        let code = random_digits(6);
        let hash = self.keys.hash(
            HashPurpose::Code,
            &[
                user_id.as_bytes(),
                purpose.as_bytes(),
                code.expose().as_bytes(),
            ],
        );
        tx.execute(
            "INSERT INTO one_time_codes (id, user_id, purpose, code_hash, target, attempts, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
            params![
                new_id(),
                user_id,
                purpose,
                hash,
                self.vault.seal_opt(&personal::CODE_TARGET, target),
                now,
                now + self.config.code_s * 1000
            ],
        )
        .await?;
        Ok(code)
    }

    /// Checks an e-mailed code; a right one is used up and its target (if any) returned, a
    /// wrong one counts against the code's attempts.
    async fn use_code<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        purpose: &str,
        code: &str,
        now: i64,
    ) -> Result<Option<Option<String>>, AuthError> {
        let Some((id, target)) = self.check_code(tx, user_id, purpose, code, now).await? else {
            return Ok(None);
        };
        let used = tx
            .execute(
                "UPDATE one_time_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL",
                params![now, id.as_str()],
            )
            .await?;
        Ok((used == 1).then_some(target))
    }

    /// Compares an e-mailed code with the newest live one without using it up; a wrong one
    /// counts against the code's attempts (atomically, so parallel guesses all count).
    async fn check_code<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        purpose: &str,
        code: &str,
        now: i64,
    ) -> Result<Option<(String, Option<String>)>, AuthError> {
        let Some(row) = tx
            .query_opt(
                "SELECT id, code_hash, target FROM one_time_codes WHERE user_id = $1 AND purpose = $2 \
                 AND used_at IS NULL AND expires_at > $3 ORDER BY created_at DESC LIMIT 1",
                params![user_id, purpose, now],
            )
            .await?
        else {
            return Ok(None);
        };
        let id = row.text(0)?;
        let hash = self.keys.hash(
            HashPurpose::Code,
            &[
                user_id.as_bytes(),
                purpose.as_bytes(),
                normalise_code(code).as_bytes(),
            ],
        );
        if !constant_time_eq(&row.bytes(1)?, &hash) {
            count_wrong_code(tx, id.as_str(), now).await?;
            return Ok(None);
        }
        let target = self
            .vault
            .open_opt(&personal::CODE_TARGET, row.opt_text(2)?.as_deref())?;
        Ok(Some((id, target)))
    }

    /// Checks a TOTP code (each time step accepted once) or a recovery code (each used once).
    pub(crate) async fn check_factor_code<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        code: &str,
        now: i64,
    ) -> Result<CodeCheck, AuthError> {
        let code = normalise_code(code);
        let now_s = u64::try_from(now / 1000).unwrap_or(0);
        if code.len() == totp::DIGITS {
            let factors = tx
                .query(
                    "SELECT id, secret, totp_last_step FROM factors WHERE user_id = $1 AND kind = 'totp' AND confirmed_at IS NOT NULL",
                    params![user_id],
                )
                .await?;
            for factor in factors {
                let seed = self.keys.open(&factor.bytes(1)?)?;
                if let Some(step) = totp::matching_step(seed.expose(), &code, now_s)? {
                    let fresh = tx
                        .execute(
                            "UPDATE factors SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1",
                            params![step, factor.text(0)?],
                        )
                        .await?;
                    return Ok(if fresh == 1 {
                        CodeCheck::Right
                    } else {
                        CodeCheck::Reused
                    });
                }
            }
            return Ok(CodeCheck::Wrong);
        }
        let hash = self.keys.hash(
            HashPurpose::Code,
            &[user_id.as_bytes(), b"recovery", code.as_bytes()],
        );
        let used = tx
            .execute(
                "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
                params![now, user_id, hash],
            )
            .await?;
        if used == 1 {
            let email = user_by_id(tx, &self.vault, user_id).await?.email;
            let left = tx
                .query_one(
                    "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                    params![user_id],
                )
                .await?
                .i64(0)?;
            enqueue(
                tx,
                &self.vault,
                now,
                &email,
                &Mail::new("recovery-code-used").arg("left", left),
            )
            .await?;
        }
        Ok(if used == 1 {
            CodeCheck::Right
        } else {
            CodeCheck::Wrong
        })
    }

    /// Records a failed attempt everywhere it counts, and tells the owner when it locked the
    /// account.
    /// Records a failed credential check ([`Auth::record_failure`]), commits `tx`, and
    /// answers the refusal every failed check gets.
    pub(crate) async fn refuse_credentials<T: SqlTx>(
        &self,
        mut tx: T,
        user_id: Option<&str>,
        email: &str,
        attempt: &AttemptKeys,
        number: i64,
        now: i64,
    ) -> Result<AuthError, AuthError> {
        self.record_failure(&mut tx, user_id, email, attempt, number, now)
            .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(AuthError::BadCredentials)
    }

    pub(crate) async fn record_failure<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: Option<&str>,
        email: &str,
        attempt: &AttemptKeys,
        number: i64,
        now: i64,
    ) -> Result<(), AuthError> {
        let failure = throttle::record_failure(tx, &self.config, now, attempt, number).await?;
        let subject = user_id.map_or("unknown".to_owned(), |id| format!("user:{id}"));
        self.audit(
            tx,
            now,
            "anonymous",
            "auth.failed",
            &subject,
            serde_json::json!({ "consecutive": failure.account_failures }),
        )
        .await?;
        if failure.locked_now
            && let Some(user_id) = user_id
        {
            let minutes = self.config.account_lock_s / 60;
            let mail = Mail::new("account-locked")
                .arg("failures", failure.account_failures)
                .arg("minutes", minutes);
            enqueue(tx, &self.vault, now, email, &mail).await?;
            throttle::raise_lockout(tx, now).await?;
            self.audit(
                tx,
                now,
                "system",
                "account.locked",
                &format!("user:{user_id}"),
                serde_json::json!({ "minutes": minutes }),
            )
            .await?;
        }
        Ok(())
    }

    /// The throttling keys of a second-factor or confirmation-code attempt by a user (signed
    /// in, or resetting a password): counted per user, apart from password attempts, so a right password never clears
    /// a run of wrong codes.
    pub(crate) fn factor_attempt(&self, user_id: &str, client: &Client) -> AttemptKeys {
        AttemptKeys::new(
            &self.keys,
            &format!("factor:{user_id}"),
            client,
            None,
            client.trusted_for(user_id),
        )
    }

    /// Records a failed code attempt in its own transaction; returns the error to answer.
    pub(crate) async fn code_failed(
        &self,
        principal: &Principal,
        attempt: &AttemptKeys,
        number: i64,
    ) -> AuthError {
        let now = self.now_ms();
        let recorded = async {
            let mut tx = self.db.begin().await?;
            self.record_failure(
                &mut tx,
                Some(&principal.user_id),
                &principal.email,
                attempt,
                number,
                now,
            )
            .await?;
            tx.commit().await?;
            Ok::<(), AuthError>(())
        };
        match recorded.await {
            Ok(()) => {
                self.outbox_written();
                AuthError::BadCredentials
            }
            Err(error) => error,
        }
    }

    /// Counts a request (not a failure) from the client's network in `scope`, refusing once
    /// `max` were made within the window: sign-ups, reset and recovery requests.
    async fn limit_requests(
        &self,
        scope: &str,
        client: &Client,
        max: i64,
    ) -> Result<(), AuthError> {
        let now = self.now_ms();
        let key = self.keys.hash(
            HashPurpose::Throttle,
            &[scope.as_bytes(), client.network.as_bytes()],
        );
        let window_ms = self.config.window_s * 1000;
        let mut tx = self.db.begin().await?;
        let (requests, window_start) = throttle::count(&mut tx, &key, now, window_ms).await?;
        tx.commit().await?;
        if requests > max {
            metrics::counter!(crate::metrics::THROTTLED, "scope" => "requests").increment(1);
            let wait_ms = (window_start + window_ms - now).max(1000);
            return Err(AuthError::Throttled {
                retry_after_s: u64::try_from(wait_ms / 1000).unwrap_or(1),
            });
        }
        Ok(())
    }

    pub(crate) async fn not_me_link<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        now: i64,
    ) -> Result<String, AuthError> {
        let token = random_token("knm_");
        tx.execute(
            "INSERT INTO link_tokens (token_hash, purpose, user_id, created_at, expires_at) VALUES ($1, 'not_me', $2, $3, $4)",
            params![self.token_hash(token.expose()), user_id, now, now + LINK_MS],
        )
        .await?;
        Ok(format!(
            "{}/not-me?token={}",
            self.config.public_url,
            token.expose()
        ))
    }

    async fn start_cooling_off<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        now: i64,
    ) -> Result<(), AuthError> {
        tx.execute(
            "UPDATE users SET cooling_off_until = $1 WHERE id = $2",
            params![now + self.config.cooling_off_s * 1000, user_id],
        )
        .await?;
        Ok(())
    }

    /// After a change of the caller's password, contact or factors: every other session
    /// ends, cooling-off starts, and the address on file is told, with a "this was not me" link.
    async fn credential_changed<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        keep_session: &str,
        what: Mail,
        now: i64,
    ) -> Result<(), AuthError> {
        self.revoke_sessions(tx, &principal.user_id, Some(keep_session), now)
            .await?;
        self.start_cooling_off(tx, &principal.user_id, now).await?;
        self.notify_change(tx, &principal.user_id, &principal.email, what, now)
            .await
    }

    /// Tells the owner about a change on the channel they had before it, with a link that
    /// freezes the account if it was not them.
    async fn notify_change<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        email: &str,
        what: Mail,
        now: i64,
    ) -> Result<(), AuthError> {
        let link = self.not_me_link(tx, user_id, now).await?;
        // In the account's language, found by its id: after an address change, no account has
        // the old address any more.
        let lang = koban_shared::outbox::user_lang(tx, user_id).await?;
        let mail = what
            .arg("hours", self.config.cooling_off_s / 3600)
            .arg("link", link)
            .in_lang(lang);
        Ok(enqueue(tx, &self.vault, now, email, &mail).await?)
    }
}

mod account;
mod factors;
mod operators;
mod recovery;
mod signin;
mod signup;
