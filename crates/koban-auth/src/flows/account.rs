//! The account as its owner sees and changes it: the profile, contact and password changes, and "this was not me".

use super::*;
use koban_shared::export::{Section, read_sections};

/// What identity keeps about an account, for its export.
const EXPORT: &[Section] = &[
    Section {
        name: "profile",
        sql: "SELECT id, kind, role, email, email_verified_at, phone, display_name, legal_name, date_of_birth, \
              status, lang, cooling_off_until, created_at FROM users WHERE id = $1",
        columns: &[
            "id",
            "kind",
            "role",
            "email",
            "email_verified_at",
            "phone",
            "display_name",
            "legal_name",
            "date_of_birth",
            "status",
            "lang",
            "cooling_off_until",
            "created_at",
        ],
        sealed: &[
            ("email", personal::USER_EMAIL),
            ("phone", personal::USER_PHONE),
            ("display_name", personal::USER_DISPLAY_NAME),
            ("legal_name", personal::USER_LEGAL_NAME),
            ("date_of_birth", personal::USER_DATE_OF_BIRTH),
        ],
    },
    Section {
        name: "factors",
        sql: "SELECT id, kind, label, confirmed_at, created_at FROM factors WHERE user_id = $1 ORDER BY created_at",
        columns: &["id", "kind", "label", "confirmed_at", "created_at"],
        sealed: &[],
    },
    Section {
        name: "recovery_codes",
        sql: "SELECT created_at, used_at FROM recovery_codes WHERE user_id = $1 ORDER BY created_at",
        columns: &["created_at", "used_at"],
        sealed: &[],
    },
    Section {
        name: "sessions",
        sql: "SELECT id, level, device_id, network, user_agent, created_at, last_seen_at, expires_at, revoked_at \
              FROM sessions WHERE user_id = $1 ORDER BY created_at",
        columns: &[
            "id",
            "level",
            "device_id",
            "network",
            "user_agent",
            "created_at",
            "last_seen_at",
            "expires_at",
            "revoked_at",
        ],
        sealed: &[],
    },
    Section {
        name: "known_devices",
        sql: "SELECT device_id, first_seen_at FROM known_devices WHERE user_id = $1 ORDER BY first_seen_at",
        columns: &["device_id", "first_seen_at"],
        sealed: &[],
    },
    Section {
        name: "recovery_requests",
        sql: "SELECT id, status, created_at, not_before, decided_at FROM recovery_requests WHERE user_id = $1 \
              ORDER BY created_at",
        columns: &["id", "status", "created_at", "not_before", "decided_at"],
        sealed: &[],
    },
    Section {
        name: "notices",
        sql: "SELECT o.id, o.subject, o.created_at, o.delivered_at FROM outbox o \
              JOIN users u ON u.email_index = o.recipient_index WHERE u.id = $1 ORDER BY o.created_at",
        columns: &["id", "subject", "created_at", "delivered_at"],
        sealed: &[("subject", personal::OUTBOX_SUBJECT)],
    },
    Section {
        name: "audit",
        // What the customer did; operators' actions about them (a freeze, a review) are the
        // fraud team's, and name the operators.
        sql: "SELECT seq, at, actor, action, subject FROM audit_log WHERE actor = 'user:' || $1 ORDER BY seq",
        columns: &["seq", "at", "actor", "action", "subject"],
        sealed: &[],
    },
];

impl<D: SqlDb> Auth<D> {
    /// The step-up an export of the caller's data needs: everything about them leaves in one
    /// answer, so a stolen session alone must not be enough.
    pub async fn confirm_export(
        &self,
        principal: &Principal,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<IssuedSession, AuthError> {
        principal.full()?;
        self.confirm_action(principal, &SensitiveAction::ExportData, proof, client)
            .await
    }

    /// The step-up closing the caller's account needs.
    pub async fn confirm_close(
        &self,
        principal: &Principal,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<IssuedSession, AuthError> {
        principal.full()?;
        if principal.kind != UserKind::Customer {
            // A shop has payments customers may still need refunded, and an operator is
            // removed by an admin.
            return Err(AuthError::Invalid(
                "only a customer's account closes this way; a shop asks support",
            ));
        }
        self.confirm_action(principal, &SensitiveAction::CloseAccount, proof, client)
            .await
    }

    /// Closes the caller's account (after [`Auth::confirm_close`], and after payments closed
    /// its wallets): it can no longer sign in; every session ends, links in mail stop working
    /// and a recovery request waiting is cancelled; the owner is told. Answers false when it
    /// was not active.
    pub async fn close_account(&self, principal: &Principal) -> Result<bool, AuthError> {
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let closed = tx
            .execute(
                "UPDATE users SET status = 'closed', closed_at = $1 WHERE id = $2 AND status = 'active'",
                params![now, principal.user_id.as_str()],
            )
            .await?;
        if closed == 0 {
            return Ok(false);
        }
        self.revoke_sessions(&mut tx, &principal.user_id, None, now)
            .await?;
        tx.execute(
            "DELETE FROM link_tokens WHERE user_id = $1",
            params![principal.user_id.as_str()],
        )
        .await?;
        tx.execute(
            "UPDATE recovery_requests SET status = 'cancelled', decided_at = $1 WHERE user_id = $2 AND status = 'pending'",
            params![now, principal.user_id.as_str()],
        )
        .await?;
        enqueue(
            &mut tx,
            &self.vault,
            now,
            &principal.email,
            &Mail::new("account-closed"),
        )
        .await?;
        self.audit_own(
            &mut tx,
            principal,
            "account.closed",
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(true)
    }

    /// What identity keeps about the caller, into `out` (the export of their data, after
    /// [`Auth::confirm_export`]).
    pub async fn export_into(
        &self,
        principal: &Principal,
        out: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), AuthError> {
        principal.full()?;
        let mut tx = self.db.begin_read().await?;
        read_sections(&mut tx, &self.vault, &principal.user_id, EXPORT, out).await?;
        tx.commit().await?;
        Ok(())
    }

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
            email: self.vault.open(&personal::USER_EMAIL, &row.text(3)?)?,
            email_verified: row.opt_i64(4)?.is_some(),
            phone: (self.vault).open_opt(&personal::USER_PHONE, row.opt_text(5)?.as_deref())?,
            display_name: (self.vault).open(&personal::USER_DISPLAY_NAME, &row.text(6)?)?,
            legal_name: (self.vault)
                .open_opt(&personal::USER_LEGAL_NAME, row.opt_text(7)?.as_deref())?,
            date_of_birth: (self.vault)
                .open_opt(&personal::USER_DATE_OF_BIRTH, row.opt_text(8)?.as_deref())?,
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
        let lang = koban_shared::outbox::user_lang(&mut tx, &principal.user_id).await?;
        let mail = Mail::new("email-confirm-code")
            .arg("code", code.expose())
            .arg("minutes", self.config.code_s / 60)
            .in_lang(lang);
        enqueue(&mut tx, &self.vault, now, new_email.as_str(), &mail).await?;
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
        let attempt = self.factor_attempt(&principal.user_id, client);
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
        if user_by_email(&mut tx, &self.vault, &new_email)
            .await?
            .is_some()
        {
            // The code stays used.
            tx.commit().await?;
            return Err(AuthError::Conflict(
                "this address cannot be used; choose another",
            ));
        }
        tx.execute(
            "UPDATE users SET email = $1, email_index = $2, email_verified_at = $3 WHERE id = $4",
            params![
                self.vault.seal(&personal::USER_EMAIL, &new_email),
                self.vault.index(Index::Email, &new_email),
                now,
                principal.user_id.as_str()
            ],
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
        enqueue(
            &mut tx,
            &self.vault,
            now,
            &new_email,
            &Mail::new("email-now-yours"),
        )
        .await?;
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
            "UPDATE users SET phone = $1, phone_index = $2 WHERE id = $3",
            params![
                self.vault.seal(&personal::USER_PHONE, phone.as_str()),
                self.vault.index(Index::Phone, phone.as_str()),
                principal.user_id.as_str()
            ],
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
        let user = user_by_id(tx, &self.vault, user_id).await?;
        enqueue(
            tx,
            &self.vault,
            now,
            &user.email,
            &Mail::new("frozen-by-owner"),
        )
        .await?;
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
}
