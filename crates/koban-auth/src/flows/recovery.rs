//! Recovery: password reset by e-mail, and account recovery by operator review after a waiting period.

use super::*;

impl<D: SqlDb> Auth<D> {
    /// Sends a reset code to the address already on file, if there is an account for it.
    /// The answer is the same either way.
    pub async fn forgot_password(&self, email: &Email, client: &Client) -> Result<(), AuthError> {
        self.limit_requests("forgot", client, self.config.requests_per_network_max)
            .await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let user = user_by_email(&mut tx, &self.vault, email.as_str())
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
                enqueue(&mut tx, &self.vault, now, &user.email, &mail).await?;
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
        let (user, code_id) = self.check_reset_code(email, code, &attempt, number).await?;
        // Then the second factor, counted in the user's second-factor run (which a right
        // password never clears); a wrong one also counts against the e-mailed code.
        let factor = self.factor_attempt(&user.id, client);
        let factor_number = self.begin_attempt(&factor).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        if self
            .check_factor_code(&mut tx, &user.id, factor_code.expose(), now)
            .await?
            != CodeCheck::Right
        {
            count_wrong_code(&mut tx, code_id.as_str(), now).await?;
            let user_id = Some(user.id.as_str());
            return Err(self
                .refuse_credentials(tx, user_id, &user.email, &factor, factor_number, now)
                .await?);
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
        self.after_reset(tx, &user, now).await
    }

    /// The e-mailed code of a password reset, checked for an active account without using it
    /// up; a wrong one (or no such account) is recorded as a failure of `attempt`.
    async fn check_reset_code(
        &self,
        email: &Email,
        code: &Secret<String>,
        attempt: &AttemptKeys,
        number: i64,
    ) -> Result<(UserRow, String), AuthError> {
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let user = user_by_email(&mut tx, &self.vault, email.as_str())
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
            let user_id = user_by_email(&mut tx, &self.vault, email.as_str())
                .await?
                .map(|u| u.id);
            return Err(self
                .refuse_credentials(tx, user_id.as_deref(), email.as_str(), attempt, number, now)
                .await?);
        };
        tx.commit().await?;
        Ok((user, code_id))
    }

    /// After a password was reset, in its transaction: every session ends, cooling-off
    /// starts, the customer is told and the audit chain records it.
    async fn after_reset<T: SqlTx>(
        &self,
        mut tx: T,
        user: &UserRow,
        now: i64,
    ) -> Result<(), AuthError> {
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
        let mut user = user_by_email(&mut tx, &self.vault, email.as_str()).await?;
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
        enqueue(&mut tx, &self.vault, now, &user.email, &mail).await?;
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
        let user = user_by_id(&mut tx, &self.vault, &user_id).await?;
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
}
