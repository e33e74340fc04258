//! Second factors: TOTP enrolment, recovery codes, removing a factor.

use super::*;

impl<D: SqlDb> Auth<D> {
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
        let attempt = self.factor_attempt(&principal.user_id, client);
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
            enqueue(
                tx,
                &self.vault,
                now,
                &principal.email,
                &Mail::new("factor-on"),
            )
            .await?;
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
}
