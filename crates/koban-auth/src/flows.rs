//! The identity flows: sign-up and e-mail verification, sign-in with a second factor, factor
//! enrolment, contact and password changes, "this was not me", password reset, and recovery
//! by operator review. Each flow writes its state, its audit entry and its notifications in
//! one transaction.

use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};

use crate::audit::{AuditEvent, append};
use crate::customers::mask_email;
use crate::mail::Mail;
use crate::model::{BirthDate, DisplayName, Email, LegalName, Phone, Role, UserKind};
use crate::outbox::enqueue;
use crate::password::{Lane, NewPassword, Password};
use crate::secret::{
    HashPurpose, Secret, constant_time_eq, new_id, random_digits, random_recovery_code,
    random_token,
};
use crate::sessions::{IssuedSession, Principal, SessionLevel};
use crate::stepup::{SensitiveAction, StepUpProof};
use crate::throttle::{self, AttemptKeys};
use crate::{Auth, AuthError, Client, totp};

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
    pub lang: crate::lang::Lang,
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

fn user_row(row: &koban_store::sql::Row) -> Result<UserRow, AuthError> {
    Ok(UserRow {
        id: row.text(0)?,
        kind: UserKind::parse(&row.text(1)?)?,
        email: row.text(2)?,
        password_hash: row.opt_text(3)?,
        status: row.text(4)?,
        email_verified: row.opt_i64(5)?.is_some(),
        display_name: row.text(6)?,
    })
}

async fn user_by_email<T: SqlTx>(tx: &mut T, email: &str) -> Result<Option<UserRow>, AuthError> {
    tx.query_opt(select_user!("WHERE email = $1"), params![email])
        .await?
        .as_ref()
        .map(user_row)
        .transpose()
}

async fn user_by_id<T: SqlTx>(tx: &mut T, id: &str) -> Result<UserRow, AuthError> {
    tx.query_opt(select_user!("WHERE id = $1"), params![id])
        .await?
        .as_ref()
        .map(user_row)
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
            params![new_id(), user_id, purpose, hash, target, now, now + self.config.code_s * 1000],
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
        Ok(Some((id, row.opt_text(2)?)))
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
            let email = user_by_id(tx, user_id).await?.email;
            let left = tx
                .query_one(
                    "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                    params![user_id],
                )
                .await?
                .i64(0)?;
            enqueue(
                tx,
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
            enqueue(tx, now, email, &mail).await?;
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

    /// The throttling keys of a second-factor or confirmation-code attempt by a signed-in
    /// user: counted per user, apart from password attempts, so a right password never clears
    /// a run of wrong codes.
    pub(crate) fn factor_attempt(&self, principal: &Principal, client: &Client) -> AttemptKeys {
        AttemptKeys::new(
            &self.keys,
            &format!("factor:{}", principal.user_id),
            client,
            None,
            client.trusted_for(&principal.user_id),
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
        let lang = crate::outbox::user_lang(tx, user_id).await?;
        let mail = what
            .arg("hours", self.config.cooling_off_s / 3600)
            .arg("link", link)
            .in_lang(lang);
        enqueue(tx, now, email, &mail).await
    }

    // ---- sign-up and verification ----

    /// Creates an account and e-mails a verification code. The answer is the same whether or
    /// not the address is taken (the owner of a taken address is told instead).
    pub async fn signup(&self, signup: NewSignup, client: &Client) -> Result<(), AuthError> {
        if signup.kind == UserKind::Operator {
            return Err(AuthError::Invalid("kind must be customer or merchant"));
        }
        let legal = signup.legal_name.as_ref().map_or("", |n| n.as_str());
        let personal = [signup.email.as_str(), signup.display_name.as_str(), legal];
        let password = NewPassword::parse(signup.password.expose().clone(), &personal)?;
        self.limit_requests("signup", client, self.config.requests_per_network_max)
            .await?;
        let phc = self.hasher.hash(&password, Lane::Unknown).await?;
        let now = self.now_ms();
        let id = new_id();
        let mut tx = self.db.begin().await?;
        let inserted = tx
            .execute(
                "INSERT INTO users (id, kind, email, phone, display_name, legal_name, date_of_birth, password_hash, status, created_at, lang) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10) ON CONFLICT (email) DO NOTHING",
                params![
                    id.as_str(), signup.kind.as_str(), signup.email.as_str(),
                    signup.phone.as_ref().map(|p| p.as_str()), signup.display_name.as_str(),
                    signup.legal_name.as_ref().map(|n| n.as_str()),
                    signup.date_of_birth.as_ref().map(|d| d.as_str()), phc, now,
                    signup.lang.code()
                ],
            )
            .await?;
        if inserted == 1 {
            let code = self
                .create_code(&mut tx, &id, "verify_email", None, now)
                .await?;
            let mail = Mail::new("verify-code")
                .arg("code", code.expose())
                .arg("minutes", self.config.code_s / 60);
            enqueue(&mut tx, now, signup.email.as_str(), &mail).await?;
            self.audit(
                &mut tx,
                now,
                &format!("user:{id}"),
                "user.signed_up",
                &format!("user:{id}"),
                serde_json::json!({ "kind": signup.kind.as_str(), "network": client.network }),
            )
            .await?;
        } else {
            let mail = Mail::new("signup-address-taken");
            enqueue(&mut tx, now, signup.email.as_str(), &mail).await?;
            self.audit(
                &mut tx,
                now,
                "anonymous",
                "signup.address_taken",
                "unknown",
                serde_json::json!({}),
            )
            .await?;
        }
        tx.commit().await?;
        self.outbox_written();
        Ok(())
    }

    /// Confirms the address with the e-mailed code. Unknown address and wrong code answer alike.
    pub async fn verify_email(
        &self,
        email: &Email,
        code: &Secret<String>,
        client: &Client,
    ) -> Result<(), AuthError> {
        let attempt = AttemptKeys::new(
            &self.keys,
            &format!("email:{}", email.as_str()),
            client,
            None,
            false,
        );
        let number = self.begin_attempt(&attempt).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let user = user_by_email(&mut tx, email.as_str()).await?;
        let verified = match &user {
            Some(user) => self
                .use_code(&mut tx, &user.id, "verify_email", code.expose(), now)
                .await?
                .is_some(),
            None => false,
        };
        let user_id = user.as_ref().map(|u| u.id.as_str());
        if !verified {
            self.record_failure(&mut tx, user_id, email.as_str(), &attempt, number, now)
                .await?;
            tx.commit().await?;
            self.outbox_written();
            return Err(AuthError::BadCredentials);
        }
        let user_id = user_id.unwrap_or_default();
        tx.execute(
            "UPDATE users SET email_verified_at = $1 WHERE id = $2",
            params![now, user_id],
        )
        .await?;
        throttle::record_success(&mut tx, &attempt).await?;
        self.audit(
            &mut tx,
            now,
            &format!("user:{user_id}"),
            "user.email_verified",
            &format!("user:{user_id}"),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- sign-in ----

    /// Checks e-mail and password, after every throttle. A right password gives a session at
    /// the password level; the second factor (or the first enrolment) comes next.
    pub async fn login(
        &self,
        email: &str,
        password: Secret<String>,
        client: &Client,
    ) -> Result<LoginOutcome, AuthError> {
        let email = Email::parse(email).map_err(|_| AuthError::BadCredentials)?;
        let password = Password::parse(password.expose().clone())?;
        // One read: the account (for the device cookie, which counts only for the account it
        // was issued to), then the throttles. Blocked attempts are refused before they queue
        // for hashing.
        let (user, attempt) = {
            let mut tx = self.db.begin_read().await?;
            let user = user_by_email(&mut tx, email.as_str()).await?;
            let trusted = user.as_ref().is_some_and(|u| client.trusted_for(&u.id));
            let attempt = AttemptKeys::new(
                &self.keys,
                &format!("email:{}", email.as_str()),
                client,
                Some(password.expose()),
                trusted,
            );
            if let Err(refused) =
                throttle::refuse_if_blocked(&mut tx, &self.config, self.now_ms(), &attempt).await
            {
                if matches!(refused, AuthError::Throttled { .. }) {
                    self.refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return Err(refused);
            }
            (user, attempt)
        };
        let trusted = attempt.network.is_none();
        // The hashing slot comes first: an attempt refused for lack of capacity costs no write.
        let lane = if trusted {
            Lane::KnownDevice
        } else {
            Lane::Unknown
        };
        let slot = self.hasher.reserve(lane).await?;
        let number = self.begin_attempt(&attempt).await?;
        let phc = user.as_ref().and_then(|u| u.password_hash.as_deref());
        let right = slot.verify(&password, phc).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let user = match (right, user) {
            (true, Some(user)) if user.status == "active" => user,
            (true, Some(user)) => {
                // The right password for a frozen account: answered like a wrong one, so the
                // answer does not confirm the password; the owner is told instead.
                throttle::record_success(&mut tx, &attempt).await?;
                enqueue(&mut tx, now, &user.email, &Mail::new("frozen-sign-in")).await?;
                tx.commit().await?;
                self.outbox_written();
                return Err(AuthError::BadCredentials);
            }
            (_, user) => {
                self.record_failure(
                    &mut tx,
                    user.as_ref().map(|u| u.id.as_str()),
                    email.as_str(),
                    &attempt,
                    number,
                    now,
                )
                .await?;
                tx.commit().await?;
                self.outbox_written();
                return Err(AuthError::BadCredentials);
            }
        };
        throttle::record_success(&mut tx, &attempt).await?;
        let has_factor = tx
            .query_one(
                "SELECT COUNT(*) FROM factors WHERE user_id = $1 AND confirmed_at IS NOT NULL",
                params![user.id.as_str()],
            )
            .await?
            .i64(0)?
            > 0;
        let session = self
            .issue_session(&mut tx, &user.id, SessionLevel::Password, client, now)
            .await?;
        self.audit(
            &mut tx,
            now,
            &format!("user:{}", user.id),
            "login.password_ok",
            &format!("user:{}", user.id),
            serde_json::json!({ "network": client.network }),
        )
        .await?;
        tx.commit().await?;
        metrics::counter!(crate::metrics::LOGIN_SUCCESSES).increment(1);
        Ok(LoginOutcome {
            session,
            has_factor,
        })
    }

    /// Completes sign-in with a TOTP or recovery code; returns a new, full session.
    pub async fn second_factor(
        &self,
        principal: &Principal,
        code: &Secret<String>,
        client: &Client,
    ) -> Result<IssuedSession, AuthError> {
        if principal.level == SessionLevel::SecondFactor {
            return Err(AuthError::Conflict(
                "this session has already confirmed a second factor",
            ));
        }
        if !principal.has_factor {
            return Err(AuthError::EnrolmentRequired);
        }
        let attempt = self.factor_attempt(principal, client);
        let number = self.begin_attempt(&attempt).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let check = self
            .check_factor_code(&mut tx, &principal.user_id, code.expose(), now)
            .await?;
        if check != CodeCheck::Right {
            drop(tx);
            return Err(check.refusal(self.code_failed(principal, &attempt, number).await));
        }
        throttle::record_success(&mut tx, &attempt).await?;
        let session = self
            .complete_sign_in(&mut tx, principal, client, now)
            .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(session)
    }

    /// A second factor passed at sign-in: the session is rotated to the full level, the device
    /// remembered (and a device cookie issued if the browser has none for this account).
    pub(crate) async fn complete_sign_in<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        client: &Client,
        now: i64,
    ) -> Result<IssuedSession, AuthError> {
        let mut session = self
            .rotate_session(tx, principal, SessionLevel::SecondFactor, client, now)
            .await?;
        self.note_device(tx, principal, client, now).await?;
        session.device_cookie = self.device_cookie_for(client, &principal.user_id);
        self.audit_own(
            tx,
            principal,
            "login.completed",
            serde_json::json!({ "network": client.network }),
            now,
        )
        .await?;
        Ok(session)
    }

    /// Remembers the device; tells the owner when a sign-in came from one not seen before.
    async fn note_device<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        client: &Client,
        now: i64,
    ) -> Result<(), AuthError> {
        let device = client
            .device
            .as_ref()
            .filter(|d| d.user_id == principal.user_id)
            .map(|d| d.id.clone())
            .unwrap_or_default();
        let new = device.is_empty()
            || tx
                .execute(
                    "INSERT INTO known_devices (user_id, device_id, first_seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    params![principal.user_id.as_str(), device.as_str(), now],
                )
                .await?
                == 1;
        if new {
            // The browser names itself: printable characters only, and not too many.
            let device: String = client
                .user_agent
                .chars()
                .filter(|c| !c.is_control() && !crate::model::is_bidi_control(*c))
                .take(120)
                .collect();
            let mail = Mail::new("new-sign-in")
                .arg("device", device)
                .arg("network", &client.network);
            enqueue(tx, now, &principal.email, &mail).await?;
        }
        Ok(())
    }

    // ---- factors ----

    /// Starts TOTP enrolment. The first factor needs only the password-level session; adding
    /// another needs step-up.
    pub async fn totp_begin(
        &self,
        principal: &Principal,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<TotpEnrollment, AuthError> {
        let session = if principal.has_factor {
            let action = SensitiveAction::AddFactor {
                kind: "totp".into(),
            };
            Some(
                self.confirm_action(principal, &action, proof, client)
                    .await?,
            )
        } else {
            None
        };
        let seed = totp::new_seed();
        let uri = totp::otpauth_uri(&seed, &principal.email)?;
        let qr_svg = totp::qr_svg(&uri)?;
        let now = self.now_ms();
        let factor_id = new_id();
        let mut tx = self.db.begin().await?;
        tx.execute(
            "INSERT INTO factors (id, user_id, kind, label, secret, totp_last_step, created_at) VALUES ($1, $2, 'totp', 'Authenticator app', $3, 0, $4)",
            params![factor_id.as_str(), principal.user_id.as_str(), self.keys.seal(seed.expose())?, now],
        )
        .await?;
        tx.commit().await?;
        Ok(TotpEnrollment {
            factor_id,
            otpauth_uri: uri,
            qr_svg,
            session,
        })
    }

    /// Confirms TOTP enrolment with a code from the app. The first factor also yields the
    /// recovery codes and upgrades the session; any factor change ends every other session.
    pub async fn totp_confirm(
        &self,
        principal: &Principal,
        factor_id: &str,
        code: &Secret<String>,
        client: &Client,
    ) -> Result<EnrolledTotp, AuthError> {
        let attempt = self.factor_attempt(principal, client);
        let number = self.begin_attempt(&attempt).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        // Factor changes of one user are serialised on the user's row.
        lock_user(&mut tx, &principal.user_id).await?;
        let confirmed = confirmed_factors(&mut tx, &principal.user_id).await?;
        let first = confirmed == 0;
        if !first {
            // Once a factor exists, adding one needs a session that passed it (and the
            // enrolment itself was started under step-up).
            principal.full()?;
        }
        let row = tx
            .query_opt(
                "SELECT secret FROM factors WHERE id = $1 AND user_id = $2 AND confirmed_at IS NULL AND created_at > $3",
                params![factor_id, principal.user_id.as_str(), now - ENROLMENT_MS],
            )
            .await?
            .ok_or(AuthError::NotFound)?;
        let seed = self.keys.open(&row.bytes(0)?)?;
        let now_s = u64::try_from(now / 1000).unwrap_or(0);
        let Some(step) = totp::matching_step(seed.expose(), &normalise_code(code.expose()), now_s)?
        else {
            drop(tx);
            return Err(self.code_failed(principal, &attempt, number).await);
        };
        throttle::record_success(&mut tx, &attempt).await?;
        tx.execute(
            "UPDATE factors SET confirmed_at = $1, totp_last_step = $2 WHERE id = $3",
            params![now, step, factor_id],
        )
        .await?;
        let enrolled = self
            .factor_enrolled(&mut tx, principal, client, factor_id, "totp", first, now)
            .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(enrolled)
    }

    /// What follows the confirmation of a new factor, in its transaction: unconfirmed
    /// enrolments are void; the first factor brings recovery codes, a full session (rotated)
    /// and a device cookie; a further factor is a change (notice with "not me", cooling-off);
    /// either way every other session ends.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn factor_enrolled<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        client: &Client,
        factor_id: &str,
        kind: &str,
        first: bool,
        now: i64,
    ) -> Result<EnrolledTotp, AuthError> {
        tx.execute(
            "DELETE FROM factors WHERE user_id = $1 AND confirmed_at IS NULL",
            params![principal.user_id.as_str()],
        )
        .await?;
        let mut enrolled = EnrolledTotp {
            recovery_codes: None,
            session: None,
        };
        if first {
            enrolled.recovery_codes = Some(
                self.replace_recovery_codes(tx, &principal.user_id, now)
                    .await?,
            );
            let mut session = self
                .rotate_session(tx, principal, SessionLevel::SecondFactor, client, now)
                .await?;
            session.device_cookie = self.device_cookie_for(client, &principal.user_id);
            enrolled.session = Some(session);
            self.note_device(tx, principal, client, now).await?;
            enqueue(tx, now, &principal.email, &Mail::new("factor-on")).await?;
        } else {
            let what = if kind == "passkey" {
                "change-passkey-added"
            } else {
                "change-totp-added"
            };
            let what = change(what);
            self.notify_change(tx, &principal.user_id, &principal.email, what, now)
                .await?;
            self.start_cooling_off(tx, &principal.user_id, now).await?;
        }
        let keep = enrolled
            .session
            .as_ref()
            .map_or(principal.session_id.as_str(), |s| s.session_id.as_str());
        self.revoke_sessions(tx, &principal.user_id, Some(keep), now)
            .await?;
        self.audit_own(
            tx,
            principal,
            &format!("factor.{kind}.enrolled"),
            serde_json::json!({ "factor": factor_id, "first": first }),
            now,
        )
        .await?;
        Ok(enrolled)
    }

    async fn replace_recovery_codes<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<Secret<String>>, AuthError> {
        tx.execute(
            "DELETE FROM recovery_codes WHERE user_id = $1",
            params![user_id],
        )
        .await?;
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        while codes.len() < RECOVERY_CODES {
            let code = random_recovery_code();
            let hash = self.keys.hash(
                HashPurpose::Code,
                &[user_id.as_bytes(), b"recovery", code.expose().as_bytes()],
            );
            let inserted = tx
                .execute(
                    "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    params![user_id, hash, now],
                )
                .await?;
            if inserted == 1 {
                codes.push(code);
            }
        }
        Ok(codes)
    }

    /// Replaces the recovery codes (step-up).
    pub async fn regenerate_recovery_codes(
        &self,
        principal: &Principal,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<(Vec<Secret<String>>, IssuedSession), AuthError> {
        let session = self
            .confirm_action(
                principal,
                &SensitiveAction::RegenerateRecoveryCodes,
                proof,
                client,
            )
            .await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let codes = self
            .replace_recovery_codes(&mut tx, &principal.user_id, now)
            .await?;
        self.credential_changed(
            &mut tx,
            principal,
            &session.session_id,
            change("change-recovery-codes"),
            now,
        )
        .await?;
        self.audit_own(
            &mut tx,
            principal,
            "factor.recovery_codes.replaced",
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok((codes, session))
    }

    /// Removes a factor (step-up); the last one cannot be removed.
    pub async fn remove_factor(
        &self,
        principal: &Principal,
        factor_id: &str,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<IssuedSession, AuthError> {
        let action = SensitiveAction::RemoveFactor {
            factor_id: factor_id.to_owned(),
        };
        // Checked before the step-up is spent, and again under the lock below.
        {
            let mut tx = self.db.begin().await?;
            if confirmed_factors(&mut tx, &principal.user_id).await? <= 1 {
                return Err(AuthError::Conflict(
                    "keep at least one second factor: add another before removing this one",
                ));
            }
        }
        let session = self
            .confirm_action(principal, &action, proof, client)
            .await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        lock_user(&mut tx, &principal.user_id).await?;
        let count = confirmed_factors(&mut tx, &principal.user_id).await?;
        if count <= 1 {
            return Err(AuthError::Conflict(
                "keep at least one second factor: add another before removing this one",
            ));
        }
        let removed = tx
            .execute(
                "DELETE FROM factors WHERE id = $1 AND user_id = $2",
                params![factor_id, principal.user_id.as_str()],
            )
            .await?;
        if removed == 0 {
            return Err(AuthError::NotFound);
        }
        self.credential_changed(
            &mut tx,
            principal,
            &session.session_id,
            change("change-factor-removed"),
            now,
        )
        .await?;
        self.audit_own(
            &mut tx,
            principal,
            "factor.removed",
            serde_json::json!({ "factor": factor_id }),
            now,
        )
        .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(session)
    }

    // ---- the account ----

    pub async fn me(&self, principal: &Principal) -> Result<UserView, AuthError> {
        principal.full()?;
        let mut tx = self.db.begin_read().await?;
        let row = tx
            .query_one(
                "SELECT id, kind, role, email, email_verified_at, phone, display_name, legal_name, date_of_birth, status, cooling_off_until, \
                 (SELECT COUNT(*) FROM recovery_codes r WHERE r.user_id = users.id AND r.used_at IS NULL) FROM users WHERE id = $1",
                params![principal.user_id.as_str()],
            )
            .await?;
        let factors = tx
            .query(
                "SELECT id, kind, label, created_at FROM factors WHERE user_id = $1 AND confirmed_at IS NOT NULL ORDER BY created_at",
                params![principal.user_id.as_str()],
            )
            .await?
            .into_iter()
            .map(|f| Ok(FactorView { id: f.text(0)?, kind: f.text(1)?, label: f.text(2)?, created_at_ms: f.i64(3)? }))
            .collect::<Result<Vec<_>, AuthError>>()?;
        let now = self.now_ms();
        Ok(UserView {
            id: row.text(0)?,
            kind: UserKind::parse(&row.text(1)?)?,
            role: row.opt_text(2)?.as_deref().map(Role::parse).transpose()?,
            email: row.text(3)?,
            email_verified: row.opt_i64(4)?.is_some(),
            phone: row.opt_text(5)?,
            display_name: row.text(6)?,
            legal_name: row.opt_text(7)?,
            date_of_birth: row.opt_text(8)?,
            status: row.text(9)?,
            cooling_off_until_ms: row.opt_i64(10)?.filter(|t| *t > now),
            recovery_codes_left: row.i64(11)?,
            factors,
        })
    }

    /// The most that may leave the account now, in minor units, when a cooling-off period
    /// after a contact, factor or password change or a recovery is running; `None` otherwise.
    /// Payments must obey it.
    pub fn outgoing_limit(&self, principal: &Principal) -> Option<i64> {
        principal
            .cooling_off_until_ms
            .filter(|until| *until > self.now_ms())
            .map(|_| self.config.cooling_off_limit_minor)
    }

    /// Starts an e-mail change (step-up): a code goes to the new address.
    pub async fn change_email_begin(
        &self,
        principal: &Principal,
        new_email: &Email,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<IssuedSession, AuthError> {
        let action = SensitiveAction::ChangeEmail {
            new_email: new_email.as_str().to_owned(),
        };
        let session = self
            .confirm_action(principal, &action, proof, client)
            .await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let code = self
            .create_code(
                &mut tx,
                &principal.user_id,
                "change_email",
                Some(new_email.as_str()),
                now,
            )
            .await?;
        // The new address belongs to no account yet: the notice is in the account's language.
        let lang = crate::outbox::user_lang(&mut tx, &principal.user_id).await?;
        let mail = Mail::new("email-confirm-code")
            .arg("code", code.expose())
            .arg("minutes", self.config.code_s / 60)
            .in_lang(lang);
        enqueue(&mut tx, now, new_email.as_str(), &mail).await?;
        self.audit_own(
            &mut tx,
            principal,
            "email.change_started",
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(session)
    }

    /// Finishes an e-mail change with the code sent to the new address. The old address is
    /// told, with a "this was not me" link; cooling-off starts; other sessions end.
    pub async fn change_email_confirm(
        &self,
        principal: &Principal,
        code: &Secret<String>,
        client: &Client,
    ) -> Result<(), AuthError> {
        principal.full()?;
        let attempt = self.factor_attempt(principal, client);
        let number = self.begin_attempt(&attempt).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let Some(Some(new_email)) = self
            .use_code(
                &mut tx,
                &principal.user_id,
                "change_email",
                code.expose(),
                now,
            )
            .await?
        else {
            // The code's attempt count must stand even though the rest fails.
            tx.commit().await?;
            return Err(self.code_failed(principal, &attempt, number).await);
        };
        throttle::record_success(&mut tx, &attempt).await?;
        if user_by_email(&mut tx, &new_email).await?.is_some() {
            // The code stays used.
            tx.commit().await?;
            return Err(AuthError::Conflict(
                "this address cannot be used; choose another",
            ));
        }
        tx.execute(
            "UPDATE users SET email = $1, email_verified_at = $2 WHERE id = $3",
            params![new_email.as_str(), now, principal.user_id.as_str()],
        )
        .await?;
        self.credential_changed(
            &mut tx,
            principal,
            &principal.session_id,
            change("change-email").arg("address", mask_email(&new_email)),
            now,
        )
        .await?;
        enqueue(&mut tx, now, &new_email, &Mail::new("email-now-yours")).await?;
        self.audit_own(
            &mut tx,
            principal,
            "email.changed",
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(())
    }

    /// Changes the phone number (step-up).
    pub async fn change_phone(
        &self,
        principal: &Principal,
        phone: &Phone,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<IssuedSession, AuthError> {
        let action = SensitiveAction::ChangePhone {
            new_phone: phone.as_str().to_owned(),
        };
        let session = self
            .confirm_action(principal, &action, proof, client)
            .await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        tx.execute(
            "UPDATE users SET phone = $1 WHERE id = $2",
            params![phone.as_str(), principal.user_id.as_str()],
        )
        .await?;
        self.credential_changed(
            &mut tx,
            principal,
            &session.session_id,
            change("change-phone"),
            now,
        )
        .await?;
        self.audit_own(
            &mut tx,
            principal,
            "phone.changed",
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(session)
    }

    /// Changes the password (step-up bound to the new password).
    pub async fn change_password(
        &self,
        principal: &Principal,
        new_password: Secret<String>,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<IssuedSession, AuthError> {
        principal.full()?;
        let me = self.me(principal).await?;
        let personal = [
            me.email.as_str(),
            me.display_name.as_str(),
            me.legal_name.as_deref().unwrap_or(""),
        ];
        let password = NewPassword::parse(new_password.expose().clone(), &personal)?;
        let action = SensitiveAction::ChangePassword { new_password };
        let session = self
            .confirm_action(principal, &action, proof, client)
            .await?;
        let phc = self.hasher.hash(&password, Lane::KnownDevice).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        tx.execute(
            "UPDATE users SET password_hash = $1 WHERE id = $2",
            params![phc, principal.user_id.as_str()],
        )
        .await?;
        self.credential_changed(
            &mut tx,
            principal,
            &session.session_id,
            change("change-password"),
            now,
        )
        .await?;
        self.audit_own(
            &mut tx,
            principal,
            "password.changed",
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(session)
    }

    /// "This was not me": freezes the account and ends every session.
    pub async fn not_me(&self, token: &Secret<String>) -> Result<(), AuthError> {
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let row = tx
            .query_opt(
                "UPDATE link_tokens SET used_at = $1 WHERE token_hash = $2 AND purpose = 'not_me' AND used_at IS NULL AND expires_at > $1 \
                 RETURNING user_id",
                params![now, self.token_hash(token.expose())],
            )
            .await?
            .ok_or(AuthError::NotFound)?;
        let user_id = row.text(0)?;
        self.freeze_by_owner(&mut tx, &user_id, "link", now).await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(())
    }

    /// "This was not me" from a signed-in session (the security centre): the same freeze as
    /// the e-mailed link, for a customer who sees something they did not do.
    pub async fn freeze_own_account(&self, principal: &Principal) -> Result<(), AuthError> {
        principal.full()?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        lock_user(&mut tx, &principal.user_id).await?;
        self.freeze_by_owner(&mut tx, &principal.user_id, "session", now)
            .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(())
    }

    /// Freezes an account at its owner's word: every session ends, the owner is told, and the
    /// audit chain records how (`link` or `session`).
    async fn freeze_by_owner<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        via: &str,
        now: i64,
    ) -> Result<(), AuthError> {
        tx.execute(
            "UPDATE users SET status = 'frozen' WHERE id = $1",
            params![user_id],
        )
        .await?;
        self.revoke_sessions(tx, user_id, None, now).await?;
        let user = user_by_id(tx, user_id).await?;
        enqueue(tx, now, &user.email, &Mail::new("frozen-by-owner")).await?;
        self.audit(
            tx,
            now,
            &format!("user:{user_id}"),
            "account.frozen_by_owner",
            &format!("user:{user_id}"),
            serde_json::json!({ "via": via }),
        )
        .await?;
        Ok(())
    }

    // ---- recovery ----

    /// Sends a reset code to the address already on file, if there is an account for it.
    /// The answer is the same either way.
    pub async fn forgot_password(&self, email: &Email, client: &Client) -> Result<(), AuthError> {
        self.limit_requests("forgot", client, self.config.requests_per_network_max)
            .await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let user = user_by_email(&mut tx, email.as_str())
            .await?
            .filter(|u| u.status == "active" && u.email_verified);
        let recent = match &user {
            Some(user) => tx
                .query_one(
                    "SELECT COUNT(*) FROM one_time_codes WHERE user_id = $1 AND purpose = 'reset_password' AND created_at > $2",
                    params![user.id.as_str(), now - RESET_EVERY_MS],
                )
                .await?
                .i64(0)?,
            None => 0,
        };
        match user.filter(|_| recent == 0) {
            Some(user) => {
                let code = self
                    .create_code(&mut tx, &user.id, "reset_password", None, now)
                    .await?;
                // The message goes to the address stored for the account, never to one from the request.
                let mail = Mail::new("password-reset-code").arg("code", code.expose());
                enqueue(&mut tx, now, &user.email, &mail).await?;
                self.audit(
                    &mut tx,
                    now,
                    "anonymous",
                    "password.reset_requested",
                    &format!("user:{}", user.id),
                    serde_json::json!({}),
                )
                .await?;
            }
            // Unknown addresses write (and commit) an audit entry too, so both answers take
            // about as long.
            None => {
                self.audit(
                    &mut tx,
                    now,
                    "anonymous",
                    "password.reset_requested",
                    "unknown",
                    serde_json::json!({}),
                )
                .await?;
            }
        }
        tx.commit().await?;
        self.outbox_written();
        Ok(())
    }

    /// Resets the password with the e-mailed code and a second factor; ends every session.
    pub async fn reset_password(
        &self,
        email: &Email,
        code: &Secret<String>,
        factor_code: &Secret<String>,
        new_password: Secret<String>,
        client: &Client,
    ) -> Result<(), AuthError> {
        // Only the submitted address is compared with the new password here: comparing with
        // the account's names before the codes passed would tell a stranger the account exists.
        let password = NewPassword::parse(new_password.expose().clone(), &[email.as_str()])?;
        let attempt = AttemptKeys::new(
            &self.keys,
            &format!("email:{}", email.as_str()),
            client,
            None,
            false,
        );
        let number = self.begin_attempt(&attempt).await?;
        let phc = self.hasher.hash(&password, Lane::Unknown).await?;
        // First the e-mailed code, compared without using it up (a wrong one counts against it).
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let user = user_by_email(&mut tx, email.as_str())
            .await?
            .filter(|u| u.status == "active");
        let code_id = match &user {
            Some(user) => self
                .check_code(&mut tx, &user.id, "reset_password", code.expose(), now)
                .await?
                .map(|(id, _)| id),
            None => None,
        };
        let (Some(user), Some(code_id)) = (user, code_id) else {
            let user_id = user_by_email(&mut tx, email.as_str()).await?.map(|u| u.id);
            self.record_failure(
                &mut tx,
                user_id.as_deref(),
                email.as_str(),
                &attempt,
                number,
                now,
            )
            .await?;
            tx.commit().await?;
            self.outbox_written();
            return Err(AuthError::BadCredentials);
        };
        tx.commit().await?;
        // Then the second factor, counted in the user's second-factor run (which a right
        // password never clears); a wrong one also counts against the e-mailed code.
        let factor = AttemptKeys::new(
            &self.keys,
            &format!("factor:{}", user.id),
            client,
            None,
            client.trusted_for(&user.id),
        );
        let factor_number = self.begin_attempt(&factor).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        if self
            .check_factor_code(&mut tx, &user.id, factor_code.expose(), now)
            .await?
            != CodeCheck::Right
        {
            count_wrong_code(&mut tx, code_id.as_str(), now).await?;
            self.record_failure(
                &mut tx,
                Some(&user.id),
                &user.email,
                &factor,
                factor_number,
                now,
            )
            .await?;
            tx.commit().await?;
            self.outbox_written();
            return Err(AuthError::BadCredentials);
        }
        let used = tx
            .execute(
                "UPDATE one_time_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL",
                params![now, code_id.as_str()],
            )
            .await?;
        if used != 1 {
            // Another request used the code first: this one changes nothing (the factor check
            // is rolled back with it).
            return Err(AuthError::BadCredentials);
        }
        tx.execute(
            "UPDATE users SET password_hash = $1 WHERE id = $2",
            params![phc, user.id.as_str()],
        )
        .await?;
        throttle::record_success(&mut tx, &attempt).await?;
        throttle::record_success(&mut tx, &factor).await?;
        self.revoke_sessions(&mut tx, &user.id, None, now).await?;
        self.start_cooling_off(&mut tx, &user.id, now).await?;
        self.notify_change(
            &mut tx,
            &user.id,
            &user.email,
            change("change-password-reset"),
            now,
        )
        .await?;
        self.audit(
            &mut tx,
            now,
            &format!("user:{}", user.id),
            "password.reset",
            &format!("user:{}", user.id),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(())
    }

    /// Files a recovery request for someone who lost every factor. An operator may approve it
    /// only after the waiting period; the owner is told at once and can cancel it.
    pub async fn request_recovery(&self, email: &Email, client: &Client) -> Result<(), AuthError> {
        self.limit_requests("recovery", client, self.config.requests_per_network_max)
            .await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let mut user = user_by_email(&mut tx, email.as_str()).await?;
        if let Some(found) = &user {
            lock_user(&mut tx, &found.id).await?;
            let pending = tx
                .query_one(
                    "SELECT COUNT(*) FROM recovery_requests WHERE user_id = $1 AND status = 'pending'",
                    params![found.id.as_str()],
                )
                .await?
                .i64(0)?;
            if pending > 0 || found.kind == UserKind::Operator {
                user = None;
            }
        }
        let Some(user) = user else {
            // Nothing to file; an audit entry is still written and committed, so that the
            // answer takes about as long as for an account that exists.
            self.audit(
                &mut tx,
                now,
                "anonymous",
                "recovery.requested",
                "unknown",
                serde_json::json!({}),
            )
            .await?;
            tx.commit().await?;
            return Ok(());
        };
        let id = new_id();
        let not_before = now + self.config.recovery_wait_s * 1000;
        tx.execute(
            "INSERT INTO recovery_requests (id, user_id, status, created_at, not_before) VALUES ($1, $2, 'pending', $3, $4)",
            params![id.as_str(), user.id.as_str(), now, not_before],
        )
        .await?;
        let token = random_token("krc_");
        tx.execute(
            "INSERT INTO link_tokens (token_hash, purpose, user_id, ref_id, created_at, expires_at) VALUES ($1, 'cancel_recovery', $2, $3, $4, $5)",
            params![self.token_hash(token.expose()), user.id.as_str(), id.as_str(), now, not_before + LINK_MS],
        )
        .await?;
        let link = format!(
            "{}/recovery/cancel?token={}",
            self.config.public_url,
            token.expose()
        );
        let mail = Mail::new("recovery-requested")
            .arg("hours", self.config.recovery_wait_s / 3600)
            .arg("link", link);
        enqueue(&mut tx, now, &user.email, &mail).await?;
        self.audit(
            &mut tx,
            now,
            "anonymous",
            "recovery.requested",
            &format!("user:{}", user.id),
            serde_json::json!({ "request": id }),
        )
        .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(())
    }

    /// The owner cancels a pending recovery request with the link sent to them.
    pub async fn cancel_recovery(&self, token: &Secret<String>) -> Result<(), AuthError> {
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let row = tx
            .query_opt(
                "UPDATE link_tokens SET used_at = $1 WHERE token_hash = $2 AND purpose = 'cancel_recovery' AND used_at IS NULL AND expires_at > $1 \
                 RETURNING user_id, ref_id",
                params![now, self.token_hash(token.expose())],
            )
            .await?
            .ok_or(AuthError::NotFound)?;
        let (user_id, request) = (row.text(0)?, row.text(1)?);
        let cancelled = tx
            .execute(
                "UPDATE recovery_requests SET status = 'cancelled', decided_at = $1, decided_by = 'owner' WHERE id = $2 AND status = 'pending'",
                params![now, request.as_str()],
            )
            .await?;
        if cancelled == 0 {
            return Err(AuthError::NotFound);
        }
        self.audit(
            &mut tx,
            now,
            &format!("user:{user_id}"),
            "recovery.cancelled",
            &format!("user:{user_id}"),
            serde_json::json!({ "request": request }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Pending recovery requests, oldest first (operators).
    pub async fn recovery_requests(
        &self,
        principal: &Principal,
    ) -> Result<Vec<RecoveryRequestView>, AuthError> {
        principal.operator(&[Role::Approver, Role::Support])?;
        let mut tx = self.db.begin().await?;
        tx.query(
            "SELECT id, user_id, status, created_at, not_before FROM recovery_requests WHERE status = 'pending' ORDER BY created_at LIMIT 200",
            vec![],
        )
        .await?
        .into_iter()
        .map(|r| Ok(RecoveryRequestView { id: r.text(0)?, user_id: r.text(1)?, status: r.text(2)?, created_at_ms: r.i64(3)?, not_before_ms: r.i64(4)? }))
        .collect()
    }

    /// Approves a recovery request after its waiting period: the factors are removed, every
    /// session ends, the account is unfrozen, cooling-off starts, and the owner is told.
    pub async fn approve_recovery(
        &self,
        principal: &Principal,
        request_id: &str,
    ) -> Result<(), AuthError> {
        let operator = principal.operator(&[Role::Approver])?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let row = tx
            .query_opt("SELECT user_id, not_before FROM recovery_requests WHERE id = $1 AND status = 'pending'", params![request_id])
            .await?
            .ok_or(AuthError::NotFound)?;
        let user_id = row.text(0)?;
        if user_id == operator.operator_id {
            return Err(AuthError::Forbidden(
                "an operator cannot approve a request about their own account",
            ));
        }
        if now < row.i64(1)? {
            return Err(AuthError::Conflict(
                "the waiting period of this request has not ended",
            ));
        }
        // Only a request still pending is approved, so an owner's cancellation that committed
        // first wins.
        let approved = tx
            .execute(
                "UPDATE recovery_requests SET status = 'approved', decided_at = $1, decided_by = $2 WHERE id = $3 AND status = 'pending'",
                params![now, operator.operator_id.as_str(), request_id],
            )
            .await?;
        if approved != 1 {
            return Err(AuthError::NotFound);
        }
        tx.execute(
            "DELETE FROM factors WHERE user_id = $1",
            params![user_id.as_str()],
        )
        .await?;
        tx.execute(
            "DELETE FROM recovery_codes WHERE user_id = $1",
            params![user_id.as_str()],
        )
        .await?;
        tx.execute(
            "UPDATE users SET status = 'active' WHERE id = $1",
            params![user_id.as_str()],
        )
        .await?;
        self.revoke_sessions(&mut tx, &user_id, None, now).await?;
        self.start_cooling_off(&mut tx, &user_id, now).await?;
        let user = user_by_id(&mut tx, &user_id).await?;
        let what = change("change-recovery-approved");
        self.notify_change(&mut tx, &user_id, &user.email, what, now)
            .await?;
        self.audit(
            &mut tx,
            now,
            &principal.actor(),
            "recovery.approved",
            &format!("user:{user_id}"),
            serde_json::json!({ "request": request_id }),
        )
        .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(())
    }

    // ---- operators ----

    /// Invites an operator: the account has no password until the enrolment link is used.
    /// `by` is the inviting admin, or `None` for the first admin made on the command line.
    pub async fn create_operator(
        &self,
        email: &Email,
        role: Role,
        by: Option<(&Principal, Option<&StepUpProof>, &Client)>,
    ) -> Result<(OperatorInvite, Option<IssuedSession>), AuthError> {
        let (actor, session) = match by {
            Some((principal, proof, client)) => {
                principal.operator(&[])?;
                let action = SensitiveAction::CreateOperator {
                    email: email.as_str().to_owned(),
                    role: role.as_str().to_owned(),
                };
                let session = self
                    .confirm_action(principal, &action, proof, client)
                    .await?;
                (principal.actor(), Some(session))
            }
            None => ("cli".to_owned(), None),
        };
        let now = self.now_ms();
        let id = new_id();
        let mut tx = self.db.begin().await?;
        let inserted = tx
            .execute(
                "INSERT INTO users (id, kind, role, email, display_name, status, created_at) VALUES ($1, 'operator', $2, $3, $4, 'active', $5) \
                 ON CONFLICT (email) DO NOTHING",
                params![id.as_str(), role.as_str(), email.as_str(), email.local_part(), now],
            )
            .await?;
        if inserted == 0 {
            return Err(AuthError::Conflict(
                "an account with this e-mail address already exists",
            ));
        }
        let token = random_token("kop_");
        tx.execute(
            "INSERT INTO link_tokens (token_hash, purpose, user_id, created_at, expires_at) VALUES ($1, 'enrol_operator', $2, $3, $4)",
            params![self.token_hash(token.expose()), id.as_str(), now, now + OPERATOR_LINK_MS],
        )
        .await?;
        self.audit(
            &mut tx,
            now,
            &actor,
            "operator.invited",
            &format!("user:{id}"),
            serde_json::json!({ "role": role.as_str() }),
        )
        .await?;
        tx.commit().await?;
        let link = Secret::new(format!(
            "{}/operators/enrol?token={}",
            self.config.public_url,
            token.expose()
        ));
        Ok((
            OperatorInvite {
                operator_id: id,
                enrolment_link: link,
            },
            session,
        ))
    }

    /// An invited operator sets a password with the enrolment link; the second factor comes
    /// at first sign-in, before anything else is allowed.
    pub async fn enrol_operator(
        &self,
        token: &Secret<String>,
        password: Secret<String>,
    ) -> Result<(), AuthError> {
        let now = self.now_ms();
        let token_hash = self.token_hash(token.expose());
        let user = {
            let mut tx = self.db.begin().await?;
            let row = tx
                .query_opt(
                    "SELECT user_id FROM link_tokens WHERE token_hash = $1 AND purpose = 'enrol_operator' AND used_at IS NULL AND expires_at > $2",
                    params![token_hash, now],
                )
                .await?
                .ok_or(AuthError::NotFound)?;
            user_by_id(&mut tx, &row.text(0)?).await?
        };
        let password = NewPassword::parse(
            password.expose().clone(),
            &[user.email.as_str(), user.display_name.as_str()],
        )?;
        let phc = self.hasher.hash(&password, Lane::Unknown).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let used = tx
            .execute(
                "UPDATE link_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
                params![now, token_hash],
            )
            .await?;
        if used == 0 {
            return Err(AuthError::NotFound);
        }
        tx.execute(
            "UPDATE users SET password_hash = $1, email_verified_at = $2 WHERE id = $3",
            params![phc, now, user.id.as_str()],
        )
        .await?;
        self.audit(
            &mut tx,
            now,
            &format!("operator:{}", user.id),
            "operator.enrolled",
            &format!("user:{}", user.id),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
