//! Sign-up and e-mail verification.

use super::*;

impl<D: SqlDb> Auth<D> {
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
                "INSERT INTO users (id, kind, email, email_index, phone, phone_index, display_name, legal_name, date_of_birth, password_hash, status, created_at, lang) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'active', $11, $12) ON CONFLICT (email_index) DO NOTHING",
                params![
                    id.as_str(),
                    signup.kind.as_str(),
                    self.vault.seal(&personal::USER_EMAIL, signup.email.as_str()),
                    self.vault.index(Index::Email, signup.email.as_str()),
                    self.vault.seal_opt(&personal::USER_PHONE, signup.phone.as_ref().map(|p| p.as_str())),
                    signup.phone.as_ref().map(|p| self.vault.index(Index::Phone, p.as_str())),
                    self.vault.seal(&personal::USER_DISPLAY_NAME, signup.display_name.as_str()),
                    self.vault.seal_opt(&personal::USER_LEGAL_NAME, signup.legal_name.as_ref().map(|n| n.as_str())),
                    self.vault.seal_opt(&personal::USER_DATE_OF_BIRTH, signup.date_of_birth.as_ref().map(|d| d.as_str())),
                    phc,
                    now,
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
            enqueue(&mut tx, &self.vault, now, signup.email.as_str(), &mail).await?;
            self.audit(
                &mut tx,
                now,
                &format!("user:{id}"),
                "user.signed_up",
                &format!("user:{id}"),
                serde_json::json!({ "kind": signup.kind.as_str() }),
            )
            .await?;
        } else {
            let mail = Mail::new("signup-address-taken");
            enqueue(&mut tx, &self.vault, now, signup.email.as_str(), &mail).await?;
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
        let user = user_by_email(&mut tx, &self.vault, email.as_str()).await?;
        let verified = match &user {
            Some(user) => self
                .use_code(&mut tx, &user.id, "verify_email", code.expose(), now)
                .await?
                .is_some(),
            None => false,
        };
        let user_id = user.as_ref().map(|u| u.id.as_str());
        if !verified {
            return Err(self
                .refuse_credentials(tx, user_id, email.as_str(), &attempt, number, now)
                .await?);
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
}
