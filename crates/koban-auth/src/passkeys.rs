//! WebAuthn passkeys (webauthn-rs): several per account, as a second factor at sign-in and for
//! step-up. Each ceremony's state is stored between its start and finish (any instance may
//! finish it) and used once. For step-up, the ceremony is created together with the pending
//! action and stored under the step-up's id, so an assertion answers exactly that action's
//! challenge; webauthn-rs draws challenges itself, so the challenge is bound to the action's
//! digest by the server rather than computed from it.

use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use webauthn_rs::prelude::WebauthnError;
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

/// Why a passkey registration was refused, in words a customer (or their app's developer) can
/// act on; the library's error goes to the log.
fn registration_refusal(error: &WebauthnError) -> &'static str {
    match error {
        WebauthnError::UserNotVerified => {
            "the authenticator did not verify you (a PIN, fingerprint or face); turn that on and try again"
        }
        WebauthnError::InvalidRPOrigin | WebauthnError::InvalidRPIDHash => {
            "it was made for another site than this one (the page's address does not match the service's public URL)"
        }
        WebauthnError::MismatchedChallenge => "it answers another registration; start again",
        _ => "the authenticator's answer could not be verified; start again",
    }
}

use crate::flows::{EnrolledTotp, confirmed_factors, lock_user};
use crate::sessions::{IssuedSession, Principal, SessionLevel};
use crate::stepup::{SensitiveAction, StepUpProof};
use crate::{Auth, AuthError, Client, throttle};
use koban_shared::new_id;

/// A ceremony must finish within this long.
const CEREMONY_MS: i64 = 5 * 60 * 1000;
pub const PASSKEYS_PER_ACCOUNT_MAX: i64 = 10;

/// The relying party, from the public URL. Passkeys need a domain name (browsers refuse IP
/// addresses as relying-party ids), so with an IP in `--public-url` they are unavailable.
pub(crate) fn relying_party(public_url: &str) -> Option<Webauthn> {
    let origin = Url::parse(public_url).ok()?;
    let rp_id = origin.domain()?.to_owned();
    WebauthnBuilder::new(&rp_id, &origin)
        .ok()?
        .rp_name("Koban")
        .build()
        .ok()
}

fn unavailable() -> AuthError {
    AuthError::Conflict(
        "passkeys need --public-url with a domain name (such as http://localhost:8080)",
    )
}

/// A registration just started: the options to pass to `navigator.credentials.create()`.
#[derive(Debug)]
pub struct PasskeyRegistrationStart {
    pub ceremony_id: String,
    pub options: CreationChallengeResponse,
    /// Set when a step-up rotated the session.
    pub session: Option<IssuedSession>,
}

/// An authentication just started: the options to pass to `navigator.credentials.get()`.
#[derive(Debug)]
pub struct PasskeyAuthenticationStart {
    pub ceremony_id: String,
    pub options: RequestChallengeResponse,
}

impl<D: SqlDb> Auth<D> {
    fn webauthn(&self) -> Result<&Webauthn, AuthError> {
        self.webauthn.as_deref().ok_or_else(unavailable)
    }

    async fn store_ceremony<T: SqlTx>(
        tx: &mut T,
        id: &str,
        principal: &Principal,
        purpose: &str,
        state: String,
        now: i64,
    ) -> Result<(), AuthError> {
        tx.execute(
            "INSERT INTO webauthn_ceremonies (id, user_id, session_id, purpose, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            params![id, principal.user_id.as_str(), principal.session_id.as_str(), purpose, state, now, now + CEREMONY_MS],
        )
        .await?;
        Ok(())
    }

    /// Uses up a ceremony of this user and session; its state, if it was live.
    async fn take_ceremony<T: SqlTx>(
        tx: &mut T,
        id: &str,
        principal: &Principal,
        purpose: &str,
        now: i64,
    ) -> Result<Option<String>, AuthError> {
        let row = tx
            .query_opt(
                "UPDATE webauthn_ceremonies SET used_at = $1 WHERE id = $2 AND user_id = $3 AND session_id = $4 \
                 AND purpose = $5 AND used_at IS NULL AND expires_at > $1 RETURNING state",
                params![now, id, principal.user_id.as_str(), principal.session_id.as_str(), purpose],
            )
            .await?;
        Ok(row.map(|r| r.text(0)).transpose()?)
    }

    /// The user's passkeys with their factor ids.
    async fn passkeys<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
    ) -> Result<Vec<(String, Passkey)>, AuthError> {
        let rows = tx
            .query(
                "SELECT id, secret FROM factors WHERE user_id = $1 AND kind = 'passkey' AND confirmed_at IS NOT NULL",
                params![user_id],
            )
            .await?;
        rows.into_iter()
            .map(|row| {
                let plain = self.keys.open(&row.bytes(1)?)?;
                let passkey: Passkey = serde_json::from_slice(plain.expose())
                    .map_err(|_| AuthError::Internal("a stored passkey does not read back"))?;
                Ok((row.text(0)?, passkey))
            })
            .collect()
    }

    async fn check_passkey_room<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
    ) -> Result<(), AuthError> {
        let count = tx
            .query_one(
                "SELECT COUNT(*) FROM factors WHERE user_id = $1 AND kind = 'passkey' AND confirmed_at IS NOT NULL",
                params![user_id],
            )
            .await?
            .i64(0)?;
        if count >= PASSKEYS_PER_ACCOUNT_MAX {
            return Err(AuthError::Conflict(
                "this account has the most passkeys allowed: remove one first",
            ));
        }
        Ok(())
    }

    fn seal_passkey(&self, passkey: &Passkey) -> Result<Vec<u8>, AuthError> {
        let json = serde_json::to_vec(passkey)
            .map_err(|_| AuthError::Internal("a passkey does not serialise"))?;
        self.keys.seal(&json)
    }

    /// Starts registering a passkey. The first factor needs only the password step; another
    /// needs step-up.
    pub async fn passkey_register_start(
        &self,
        principal: &Principal,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<PasskeyRegistrationStart, AuthError> {
        let webauthn = self.webauthn()?;
        // The limit is checked before any step-up is spent on a request that would fail.
        {
            let mut tx = self.db.begin().await?;
            self.check_passkey_room(&mut tx, &principal.user_id).await?;
        }
        let (principal, session) = if principal.has_factor {
            let action = SensitiveAction::AddFactor {
                kind: "passkey".into(),
            };
            let grant = self
                .require_step_up(principal, &action, proof, client)
                .await?;
            let rotated = Principal {
                session_id: grant.session.session_id.clone(),
                level: SessionLevel::SecondFactor,
                ..principal.clone()
            };
            (rotated, Some(grant.session))
        } else {
            (principal.clone(), None)
        };
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let existing = self.passkeys(&mut tx, &principal.user_id).await?;
        let exclude = existing.iter().map(|(_, p)| p.cred_id().clone()).collect();
        let user = Uuid::parse_str(&principal.user_id)
            .map_err(|_| AuthError::Internal("user ids are UUIDs"))?;
        let (options, state) = webauthn
            .start_passkey_registration(user, &principal.email, &principal.email, Some(exclude))
            .map_err(|_| AuthError::Internal("the passkey registration could not start"))?;
        let state = serde_json::to_string(&state)
            .map_err(|_| AuthError::Internal("state does not serialise"))?;
        let ceremony_id = new_id();
        Self::store_ceremony(&mut tx, &ceremony_id, &principal, "register", state, now).await?;
        tx.commit().await?;
        Ok(PasskeyRegistrationStart {
            ceremony_id,
            options,
            session,
        })
    }

    /// Finishes registering a passkey with the browser's answer.
    pub async fn passkey_register_finish(
        &self,
        principal: &Principal,
        ceremony_id: &str,
        credential: &RegisterPublicKeyCredential,
        client: &Client,
    ) -> Result<EnrolledTotp, AuthError> {
        let webauthn = self.webauthn()?;
        let attempt = self.factor_attempt(&principal.user_id, client);
        let number = self.begin_attempt(&attempt).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        lock_user(&mut tx, &principal.user_id).await?;
        let first = confirmed_factors(&mut tx, &principal.user_id).await? == 0;
        if !first {
            principal.full()?;
        }
        self.check_passkey_room(&mut tx, &principal.user_id).await?;
        let state = Self::take_ceremony(&mut tx, ceremony_id, principal, "register", now)
            .await?
            .ok_or(AuthError::NotFound)?;
        let state: PasskeyRegistration = serde_json::from_str(&state)
            .map_err(|_| AuthError::Internal("stored state does not read back"))?;
        let passkey = match webauthn.finish_passkey_registration(credential, &state) {
            Ok(passkey) => passkey,
            Err(error) => {
                tx.commit().await?;
                let why = registration_refusal(&error);
                tracing::warn!(reason = why, %error, "a passkey registration was refused");
                // Counted like a wrong code (a guessing client is slowed the same way).
                return Err(match self.code_failed(principal, &attempt, number).await {
                    AuthError::BadCredentials => AuthError::PasskeyRefused(why),
                    other => other,
                });
            }
        };
        let credential_id: String = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(passkey.cred_id().as_slice())
        };
        let taken = tx
            .query_opt(
                "SELECT id FROM factors WHERE credential_id = $1",
                params![credential_id.as_str()],
            )
            .await?;
        if taken.is_some() {
            // The ceremony stays used.
            tx.commit().await?;
            return Err(AuthError::Conflict("this passkey is already registered"));
        }
        throttle::record_success(&mut tx, &attempt).await?;
        let factor_id = new_id();
        tx.execute(
            "INSERT INTO factors (id, user_id, kind, label, secret, totp_last_step, credential_id, confirmed_at, created_at) \
             VALUES ($1, $2, 'passkey', 'Passkey', $3, 0, $4, $5, $5)",
            params![factor_id.as_str(), principal.user_id.as_str(), self.seal_passkey(&passkey)?, credential_id, now],
        )
        .await?;
        let enrolled = self
            .factor_enrolled(
                &mut tx, principal, client, &factor_id, "passkey", first, now,
            )
            .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(enrolled)
    }

    /// Starts a passkey authentication for `purpose` (`login`, or `step_up` under the
    /// step-up's id); `None` when the user has no passkey or passkeys are unavailable.
    pub(crate) async fn passkey_challenge<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        ceremony_id: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<RequestChallengeResponse>, AuthError> {
        let Some(webauthn) = self.webauthn.as_deref() else {
            return Ok(None);
        };
        let passkeys: Vec<Passkey> = self
            .passkeys(tx, &principal.user_id)
            .await?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        if passkeys.is_empty() {
            return Ok(None);
        }
        let (options, state) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|_| AuthError::Internal("the passkey authentication could not start"))?;
        let state = serde_json::to_string(&state)
            .map_err(|_| AuthError::Internal("state does not serialise"))?;
        Self::store_ceremony(tx, ceremony_id, principal, purpose, state, now).await?;
        Ok(Some(options))
    }

    /// Checks a passkey assertion against the stored ceremony (used up either way) and
    /// records the authenticator's new counter.
    pub(crate) async fn check_passkey<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        ceremony_id: &str,
        purpose: &str,
        assertion: &PublicKeyCredential,
        now: i64,
    ) -> Result<bool, AuthError> {
        let webauthn = self.webauthn()?;
        let Some(state) = Self::take_ceremony(tx, ceremony_id, principal, purpose, now).await?
        else {
            return Ok(false);
        };
        let state: PasskeyAuthentication = serde_json::from_str(&state)
            .map_err(|_| AuthError::Internal("stored state does not read back"))?;
        let Ok(result) = webauthn.finish_passkey_authentication(assertion, &state) else {
            return Ok(false);
        };
        // Only a passkey still registered counts (one removed after the ceremony started does
        // not), and its counter is written under the user's row lock.
        lock_user(tx, &principal.user_id).await?;
        let mut matched = false;
        for (factor_id, mut passkey) in self.passkeys(tx, &principal.user_id).await? {
            if let Some(changed) = passkey.update_credential(&result) {
                matched = true;
                if changed {
                    tx.execute(
                        "UPDATE factors SET secret = $1 WHERE id = $2",
                        params![self.seal_passkey(&passkey)?, factor_id],
                    )
                    .await?;
                }
            }
        }
        Ok(matched)
    }

    /// Starts signing in with a passkey as the second factor.
    pub async fn passkey_login_start(
        &self,
        principal: &Principal,
    ) -> Result<PasskeyAuthenticationStart, AuthError> {
        self.webauthn()?;
        if principal.level == SessionLevel::SecondFactor {
            return Err(AuthError::Conflict(
                "this session has already confirmed a second factor",
            ));
        }
        let now = self.now_ms();
        let ceremony_id = new_id();
        let mut tx = self.db.begin().await?;
        let options = self
            .passkey_challenge(&mut tx, principal, &ceremony_id, "login", now)
            .await?
            .ok_or(AuthError::Conflict("this account has no passkey"))?;
        tx.commit().await?;
        Ok(PasskeyAuthenticationStart {
            ceremony_id,
            options,
        })
    }

    /// Completes sign-in with a passkey assertion; returns a new, full session.
    pub async fn passkey_login_finish(
        &self,
        principal: &Principal,
        ceremony_id: &str,
        assertion: &PublicKeyCredential,
        client: &Client,
    ) -> Result<IssuedSession, AuthError> {
        if principal.level == SessionLevel::SecondFactor {
            return Err(AuthError::Conflict(
                "this session has already confirmed a second factor",
            ));
        }
        let attempt = self.factor_attempt(&principal.user_id, client);
        let number = self.begin_attempt(&attempt).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        if !self
            .check_passkey(&mut tx, principal, ceremony_id, "login", assertion, now)
            .await?
        {
            tx.commit().await?;
            return Err(self.code_failed(principal, &attempt, number).await);
        }
        throttle::record_success(&mut tx, &attempt).await?;
        let session = self
            .complete_sign_in(&mut tx, principal, client, now)
            .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(session)
    }
}
