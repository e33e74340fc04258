//! Operators: invitation and enrolment.

use super::*;

/// How far invitation chains are followed (operators inviting operators).
const INVITATION_DEPTH_MAX: usize = 16;

impl<D: SqlDb> Auth<D> {
    /// Invites an operator: the account has no password until the enrolment link is used.
    /// `by` is the inviting admin, or `None` for the first admin made on the command line.
    pub async fn create_operator(
        &self,
        email: &Email,
        role: Role,
        by: Option<(&Principal, Option<&StepUpProof>, &Client)>,
    ) -> Result<(OperatorInvite, Option<IssuedSession>), AuthError> {
        let inviter = by.map(|(principal, _, _)| principal.user_id.as_str().to_owned());
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
                "INSERT INTO users (id, kind, role, email, email_index, display_name, status, created_at, invited_by) \
                 VALUES ($1, 'operator', $2, $3, $4, $5, 'active', $6, $7) ON CONFLICT (email_index) DO NOTHING",
                params![
                    id.as_str(),
                    role.as_str(),
                    self.vault.seal(&personal::USER_EMAIL, email.as_str()),
                    self.vault.index(Index::Email, email.as_str()),
                    self.vault.seal(&personal::USER_DISPLAY_NAME, email.local_part()),
                    now,
                    inviter.clone()
                ],
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
        let link = Secret::new(format!(
            "{}/operators/enrol?token={}",
            self.config.public_url,
            token.expose()
        ));
        // An operator invited by another gets the link in their own mailbox, in the same
        // transaction: the inviter never holds it, so one admin cannot enrol accounts to be
        // their own second pair of eyes (unless they hold those mailboxes too).
        if inviter.is_some() {
            let mail = Mail::new("operator-invited")
                .arg("role", role.as_str())
                .arg("link", link.expose().as_str());
            enqueue(&mut tx, &self.vault, now, email.as_str(), &mail).await?;
        }
        tx.commit().await?;
        if inviter.is_some() {
            self.outbox_written();
        }
        Ok((
            OperatorInvite {
                operator_id: id,
                enrolment_link: link,
            },
            session,
        ))
    }

    /// Whether one of the two operators invited the other, directly or through operators they
    /// invited: an approval between them would be one person's if the inviter kept the
    /// invitee's enrolment link. The chains are followed up to [`INVITATION_DEPTH_MAX`] steps.
    pub async fn linked_by_invitation(&self, a: &str, b: &str) -> Result<bool, AuthError> {
        for (from, to) in [(a, b), (b, a)] {
            let mut at = from.to_owned();
            for _ in 0..INVITATION_DEPTH_MAX {
                let rows = self
                    .db
                    .read(
                        "SELECT invited_by FROM users WHERE id = $1 AND kind = 'operator'",
                        params![at.as_str()],
                    )
                    .await?;
                match rows
                    .first()
                    .map(|row| row.opt_text(0))
                    .transpose()?
                    .flatten()
                {
                    Some(inviter) if inviter == to => return Ok(true),
                    Some(inviter) => at = inviter,
                    None => break,
                }
            }
        }
        Ok(false)
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
            user_by_id(&mut tx, &self.vault, &row.text(0)?).await?
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
