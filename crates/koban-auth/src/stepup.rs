//! Step-up with dynamic linking (PSD2 RTS art. 5): a sensitive action needs a fresh factor
//! check bound to that exact action. The first request stores the pending action's digest and
//! answers with a challenge; the confirmation repeats the action with the challenge id and a
//! code, and is accepted only if the action's digest is unchanged, within five minutes, once.
//!
//! Every confirmed action, in identity and in payments, passes one gate,
//! [`Auth::confirm_action`]: [`Auth::require_step_up`], then the grant's digest checked
//! against the action about to be performed; it answers the session the confirmation rotated.

use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};

use crate::flows::CodeCheck;
use crate::secret::{HashPurpose, Secret, constant_time_eq};
use crate::sessions::{IssuedSession, Principal, SessionLevel};
use crate::throttle;
use crate::{Auth, AuthError, Client};
use koban_shared::new_id;

/// Wrong codes against one challenge before it is void.
pub const STEP_UP_ATTEMPTS_MAX: i64 = 5;

/// An action that needs step-up, with everything that defines it.
#[derive(Clone, Debug)]
pub enum SensitiveAction {
    Payment {
        amount_minor: i64,
        currency: String,
        payee: String,
    },
    ChangeEmail {
        new_email: String,
    },
    ChangePhone {
        new_phone: String,
    },
    ChangePassword {
        new_password: Secret<String>,
    },
    AddFactor {
        kind: String,
    },
    RemoveFactor {
        factor_id: String,
    },
    RegenerateRecoveryCodes,
    LinkFundingSource {
        source: String,
    },
    RevealCard {
        card_id: String,
    },
    ActivateCard {
        card_id: String,
    },
    /// Unfreezing a card or changing its controls (channels, limits, categories, countries).
    ChangeCardControls {
        card_id: String,
        controls: String,
    },
    RaiseLimits {
        limits: String,
    },
    CreateApiKey {
        name: String,
        environment: String,
        scopes: String,
    },
    RotateApiKey {
        key_id: String,
    },
    CreateOperator {
        email: String,
        role: String,
    },
    /// Everything Koban holds about the account, exported.
    ExportData,
    /// The account closed for good.
    CloseAccount,
}

impl SensitiveAction {
    pub fn kind(&self) -> &'static str {
        match self {
            SensitiveAction::Payment { .. } => "payment",
            SensitiveAction::ChangeEmail { .. } => "change_email",
            SensitiveAction::ChangePhone { .. } => "change_phone",
            SensitiveAction::ChangePassword { .. } => "change_password",
            SensitiveAction::AddFactor { .. } => "add_factor",
            SensitiveAction::RemoveFactor { .. } => "remove_factor",
            SensitiveAction::RegenerateRecoveryCodes => "regenerate_recovery_codes",
            SensitiveAction::LinkFundingSource { .. } => "link_funding_source",
            SensitiveAction::RevealCard { .. } => "reveal_card",
            SensitiveAction::ActivateCard { .. } => "activate_card",
            SensitiveAction::ChangeCardControls { .. } => "change_card_controls",
            SensitiveAction::RaiseLimits { .. } => "raise_limits",
            SensitiveAction::CreateApiKey { .. } => "create_api_key",
            SensitiveAction::RotateApiKey { .. } => "rotate_api_key",
            SensitiveAction::CreateOperator { .. } => "create_operator",
            SensitiveAction::ExportData => "export_data",
            SensitiveAction::CloseAccount => "close_account",
        }
    }

    /// Every field that defines the action, in a fixed order.
    fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            SensitiveAction::Payment {
                amount_minor,
                currency,
                payee,
            } => vec![
                ("amount_minor", amount_minor.to_string()),
                ("currency", currency.clone()),
                ("payee", payee.clone()),
            ],
            SensitiveAction::ChangeEmail { new_email } => vec![("new_email", new_email.clone())],
            SensitiveAction::ChangePhone { new_phone } => vec![("new_phone", new_phone.clone())],
            SensitiveAction::ChangePassword { new_password } => {
                vec![("new_password", new_password.expose().clone())]
            }
            SensitiveAction::AddFactor { kind } => vec![("kind", kind.clone())],
            SensitiveAction::RemoveFactor { factor_id } => vec![("factor_id", factor_id.clone())],
            SensitiveAction::RegenerateRecoveryCodes => vec![],
            SensitiveAction::LinkFundingSource { source } => vec![("source", source.clone())],
            SensitiveAction::RevealCard { card_id } => vec![("card_id", card_id.clone())],
            SensitiveAction::ActivateCard { card_id } => vec![("card_id", card_id.clone())],
            SensitiveAction::ChangeCardControls { card_id, controls } => {
                vec![("card_id", card_id.clone()), ("controls", controls.clone())]
            }
            SensitiveAction::RaiseLimits { limits } => vec![("limits", limits.clone())],
            SensitiveAction::CreateApiKey {
                name,
                environment,
                scopes,
            } => vec![
                ("name", name.clone()),
                ("environment", environment.clone()),
                ("scopes", scopes.clone()),
            ],
            SensitiveAction::RotateApiKey { key_id } => vec![("key_id", key_id.clone())],
            SensitiveAction::CreateOperator { email, role } => {
                vec![("email", email.clone()), ("role", role.clone())]
            }
            SensitiveAction::ExportData | SensitiveAction::CloseAccount => vec![],
        }
    }

    /// What the person is asked to confirm, in words (never a secret).
    pub fn summary(&self) -> String {
        match self {
            SensitiveAction::Payment {
                amount_minor,
                currency,
                payee,
            } => {
                format!("pay {amount_minor} (minor units) {currency} to {payee}")
            }
            SensitiveAction::ChangeEmail { new_email } => format!("change e-mail to {new_email}"),
            SensitiveAction::ChangePhone { new_phone } => format!("change phone to {new_phone}"),
            SensitiveAction::ChangePassword { .. } => "change password".into(),
            SensitiveAction::AddFactor { kind } => format!("add a {kind} factor"),
            SensitiveAction::RemoveFactor { factor_id } => format!("remove factor {factor_id}"),
            SensitiveAction::RegenerateRecoveryCodes => "replace recovery codes".into(),
            SensitiveAction::LinkFundingSource { source } => {
                format!("link funding source {source}")
            }
            SensitiveAction::RevealCard { card_id } => format!("reveal details of card {card_id}"),
            SensitiveAction::ActivateCard { card_id } => format!("activate card {card_id}"),
            SensitiveAction::ChangeCardControls { card_id, controls } => {
                format!("change controls of card {card_id}: {controls}")
            }
            SensitiveAction::RaiseLimits { limits } => format!("raise limits: {limits}"),
            SensitiveAction::CreateApiKey {
                name, environment, ..
            } => {
                format!("create {environment} API key \"{name}\"")
            }
            SensitiveAction::RotateApiKey { key_id } => format!("rotate API key {key_id}"),
            SensitiveAction::CreateOperator { email, role } => {
                format!("invite {role} operator {email}")
            }
            SensitiveAction::ExportData => "export all your data".into(),
            SensitiveAction::CloseAccount => "close your account for good".into(),
        }
    }

    /// The keyed digest that binds a confirmation to this exact action.
    pub fn digest(&self, keys: &crate::ServerKeys) -> [u8; 32] {
        let fields = self.fields();
        let mut parts: Vec<&[u8]> = vec![self.kind().as_bytes()];
        for (name, value) in &fields {
            parts.push(name.as_bytes());
            parts.push(value.as_bytes());
        }
        keys.hash(HashPurpose::Action, &parts)
    }
}

/// The answer to a sensitive request made without confirmation.
#[derive(Clone, Debug)]
pub struct StepUpChallenge {
    pub id: String,
    pub action: &'static str,
    pub summary: String,
    pub expires_at_ms: i64,
    /// Ways to confirm: `totp`, `recovery_code`, and `passkey` when the user has one.
    pub methods: Vec<&'static str>,
    /// The options for `navigator.credentials.get()`, bound to this action, when the user
    /// has a passkey.
    pub passkey: Option<webauthn_rs::prelude::RequestChallengeResponse>,
}

/// How a pending action is confirmed.
#[derive(Clone, Debug)]
pub enum StepUpAnswer {
    /// A TOTP code or a recovery code.
    Code(Secret<String>),
    /// A passkey assertion answering the challenge that came with the action.
    Passkey(Box<webauthn_rs::prelude::PublicKeyCredential>),
}

/// The confirmation a client sends with the repeated request.
#[derive(Clone, Debug)]
pub struct StepUpProof {
    pub id: String,
    pub answer: StepUpAnswer,
}

impl StepUpProof {
    pub fn code(id: &str, code: &str) -> StepUpProof {
        StepUpProof {
            id: id.to_owned(),
            answer: StepUpAnswer::Code(Secret::new(code.to_owned())),
        }
    }
}

/// Permission to perform the confirmed action, once. Only [`Auth::require_step_up`] makes one.
/// The session was rotated: the client must use the new token from now on.
#[derive(Debug)]
pub struct StepUpGrant {
    pub session: IssuedSession,
    digest: [u8; 32],
}

impl StepUpGrant {
    /// Whether this grant was made for exactly `action`; the code that performs an action
    /// checks it against what it is about to do.
    pub fn authorises(&self, action: &SensitiveAction, keys: &crate::ServerKeys) -> bool {
        constant_time_eq(&self.digest, &action.digest(keys))
    }
}

impl<D: SqlDb> Auth<D> {
    /// The gate of every confirmed action: [`Auth::require_step_up`], then a check that the
    /// grant was made for exactly `action`. Answers the session the confirmation rotated to.
    pub async fn confirm_action(
        &self,
        principal: &Principal,
        action: &SensitiveAction,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<IssuedSession, AuthError> {
        let grant = self
            .require_step_up(principal, action, proof, client)
            .await?;
        if !grant.authorises(action, &self.keys) {
            return Err(AuthError::StepUpInvalid);
        }
        Ok(grant.session)
    }

    /// Checks that `action` was confirmed by `proof`, or starts a confirmation (answering
    /// [`AuthError::StepUpRequired`]) when there is no proof.
    pub async fn require_step_up(
        &self,
        principal: &Principal,
        action: &SensitiveAction,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<StepUpGrant, AuthError> {
        principal.full()?;
        match proof {
            None => Err(AuthError::StepUpRequired(Box::new(
                self.start_step_up(principal, action).await?,
            ))),
            Some(proof) => self.confirm_step_up(principal, action, proof, client).await,
        }
    }

    async fn start_step_up(
        &self,
        principal: &Principal,
        action: &SensitiveAction,
    ) -> Result<StepUpChallenge, AuthError> {
        let now = self.now_ms();
        let id = new_id();
        let expires_at_ms = now + self.config.step_up_s * 1000;
        let mut tx = self.db.begin().await?;
        tx.execute(
            "INSERT INTO step_ups (id, user_id, session_id, action, digest, created_at, expires_at, attempts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
            params![
                id.as_str(),
                principal.user_id.as_str(),
                principal.session_id.as_str(),
                action.kind(),
                action.digest(&self.keys),
                now,
                expires_at_ms
            ],
        )
        .await?;
        let passkey = self
            .passkey_challenge(&mut tx, principal, &id, "step_up", now)
            .await?;
        tx.commit().await?;
        let mut methods = vec!["totp", "recovery_code"];
        if passkey.is_some() {
            methods.push("passkey");
        }
        Ok(StepUpChallenge {
            id,
            action: action.kind(),
            summary: action.summary(),
            expires_at_ms,
            methods,
            passkey,
        })
    }

    async fn confirm_step_up(
        &self,
        principal: &Principal,
        action: &SensitiveAction,
        proof: &StepUpProof,
        client: &Client,
    ) -> Result<StepUpGrant, AuthError> {
        let now = self.now_ms();
        let digest = action.digest(&self.keys);
        self.check_pending(principal, action, &proof.id, &digest, now)
            .await?;
        let attempt = self.factor_attempt(&principal.user_id, client);
        let number = self.begin_attempt(&attempt).await?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let check = self.check_answer(&mut tx, principal, proof, now).await?;
        if check != CodeCheck::Right {
            tx.execute(
                "UPDATE step_ups SET attempts = attempts + 1, \
                 used_at = CASE WHEN attempts + 1 >= $1 THEN $2 ELSE used_at END \
                 WHERE id = $3 AND used_at IS NULL",
                params![STEP_UP_ATTEMPTS_MAX, now, proof.id.as_str()],
            )
            .await?;
            tx.commit().await?;
            return Err(check.refusal(self.code_failed(principal, &attempt, number).await));
        }
        let used = tx
            .execute(
                "UPDATE step_ups SET used_at = $1 WHERE id = $2 AND used_at IS NULL",
                params![now, proof.id.as_str()],
            )
            .await?;
        if used != 1 {
            return Err(AuthError::StepUpInvalid);
        }
        throttle::record_success(&mut tx, &attempt).await?;
        let session = self
            .rotate_session(&mut tx, principal, SessionLevel::SecondFactor, client, now)
            .await?;
        self.audit_own(
            &mut tx,
            principal,
            "step_up.confirmed",
            serde_json::json!({ "action": action.kind() }),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(StepUpGrant { session, digest })
    }

    /// The pending confirmation `proof_id`, looked up and compared with `action` before
    /// anything is counted: an unknown, expired or changed confirmation is refused without
    /// touching the user's code run. Any change to the action voids the confirmation.
    async fn check_pending(
        &self,
        principal: &Principal,
        action: &SensitiveAction,
        proof_id: &str,
        digest: &[u8; 32],
        now: i64,
    ) -> Result<(), AuthError> {
        let mut tx = self.db.begin().await?;
        let pending = tx
            .query_opt(
                "SELECT digest FROM step_ups WHERE id = $1 AND user_id = $2 AND session_id = $3 \
                 AND used_at IS NULL AND expires_at > $4",
                params![
                    proof_id,
                    principal.user_id.as_str(),
                    principal.session_id.as_str(),
                    now
                ],
            )
            .await?
            .ok_or(AuthError::StepUpInvalid)?;
        if !constant_time_eq(&pending.bytes(0)?, digest) {
            // This request is refused; the confirmation stays good for the action it was made
            // for (it can authorise nothing else), so the customer's corrected retry works.
            self.audit_own(
                &mut tx,
                principal,
                "step_up.mismatch",
                serde_json::json!({ "action": action.kind() }),
                now,
            )
            .await?;
            tx.commit().await?;
            return Err(AuthError::StepUpInvalid);
        }
        // Nothing was written: the transaction is let go.
        drop(tx);
        Ok(())
    }

    /// Checks a confirmation's answer: a code of a second factor, or a passkey assertion
    /// made for this confirmation.
    async fn check_answer<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        proof: &StepUpProof,
        now: i64,
    ) -> Result<CodeCheck, AuthError> {
        Ok(match &proof.answer {
            StepUpAnswer::Code(code) => {
                self.check_factor_code(tx, &principal.user_id, code.expose(), now)
                    .await?
            }
            StepUpAnswer::Passkey(assertion) => {
                if self
                    .check_passkey(tx, principal, &proof.id, "step_up", assertion, now)
                    .await?
                {
                    CodeCheck::Right
                } else {
                    CodeCheck::Wrong
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_bind_every_field() {
        let keys = crate::ServerKeys::from_master([3; 32]);
        let pay = |amount_minor, payee: &str| SensitiveAction::Payment {
            amount_minor,
            currency: "JPY".into(),
            payee: payee.into(),
        };
        let base = pay(5000, "bob").digest(&keys);
        assert_eq!(base, pay(5000, "bob").digest(&keys));
        assert_ne!(base, pay(5001, "bob").digest(&keys));
        assert_ne!(base, pay(5000, "bobby").digest(&keys));
        let euro = SensitiveAction::Payment {
            amount_minor: 5000,
            currency: "EUR".into(),
            payee: "bob".into(),
        };
        assert_ne!(base, euro.digest(&keys));
        let pw = SensitiveAction::ChangePassword {
            new_password: Secret::new("a long passphrase".into()),
        };
        assert!(!format!("{pw:?}").contains("passphrase"));
    }
}
