//! Sign-in: the password step, the second factor, known devices.

use super::*;

impl<D: SqlDb> Auth<D> {
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
        let (user, attempt) = self.login_attempt(&email, &password, client).await?;
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
                enqueue(
                    &mut tx,
                    &self.vault,
                    now,
                    &user.email,
                    &Mail::new("frozen-sign-in"),
                )
                .await?;
                tx.commit().await?;
                self.outbox_written();
                return Err(AuthError::BadCredentials);
            }
            (_, user) => {
                let user_id = user.as_ref().map(|u| u.id.as_str());
                return Err(self
                    .refuse_credentials(tx, user_id, email.as_str(), &attempt, number, now)
                    .await?);
            }
        };
        throttle::record_success(&mut tx, &attempt).await?;
        let has_factor = confirmed_factors(&mut tx, &user.id).await? > 0;
        let session = self
            .issue_session(&mut tx, &user.id, SessionLevel::Password, client, now)
            .await?;
        self.audit(
            &mut tx,
            now,
            &format!("user:{}", user.id),
            "login.password_ok",
            &format!("user:{}", user.id),
            // The session, not its network: the chain keeps references, never personal data
            // (the session's network is kept for its retention window only).
            serde_json::json!({ "session": session.session_id }),
        )
        .await?;
        tx.commit().await?;
        metrics::counter!(crate::metrics::LOGIN_SUCCESSES).increment(1);
        Ok(LoginOutcome {
            session,
            has_factor,
        })
    }

    /// One read before a sign-in attempt: the account (for the device cookie, which counts
    /// only for the account it was issued to), then the throttles. A blocked attempt is
    /// refused here, before it queues for hashing.
    async fn login_attempt(
        &self,
        email: &Email,
        password: &Password,
        client: &Client,
    ) -> Result<(Option<UserRow>, AttemptKeys), AuthError> {
        let mut tx = self.db.begin_read().await?;
        let user = user_by_email(&mut tx, &self.vault, email.as_str()).await?;
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
        Ok((user, attempt))
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
        let attempt = self.factor_attempt(&principal.user_id, client);
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
            serde_json::json!({ "session": session.session_id }),
            now,
        )
        .await?;
        Ok(session)
    }

    /// Remembers the device; tells the owner when a sign-in came from one not seen before.
    pub(super) async fn note_device<T: SqlTx>(
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
            enqueue(tx, &self.vault, now, &principal.email, &mail).await?;
        }
        Ok(())
    }
}
