//! Merchant API keys: shown once at creation, stored as keyed hashes, prefixed by kind and
//! environment (`kbn_sk_live_...`, `kbn_sk_test_...`), scoped, rotatable with an overlap, and
//! revocable.

use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};

use crate::model::UserKind;
use crate::secret::{Secret, random_token};
use crate::sessions::{IssuedSession, Principal};
use crate::stepup::{SensitiveAction, StepUpProof};
use crate::{Auth, AuthError, Client};
use koban_shared::audit::{AuditEvent, append};
use koban_shared::ids::UserId;
use koban_shared::new_id;

/// The scopes a key may carry.
pub const SCOPES: &[&str] = &[
    "payments:read",
    "payments:write",
    "refunds:write",
    "webhooks:manage",
];
/// The longest overlap in which a rotated key keeps working.
pub const ROTATION_OVERLAP_S_MAX: i64 = 7 * 24 * 3600;
pub const KEYS_PER_MERCHANT_MAX: i64 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn parse(text: &str) -> Result<Environment, AuthError> {
        match text {
            "live" => Ok(Environment::Live),
            "test" => Ok(Environment::Test),
            _ => Err(AuthError::Invalid("environment must be live or test")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

/// A validated set of scopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scopes(Vec<String>);

impl Scopes {
    pub fn parse(scopes: &[String]) -> Result<Scopes, AuthError> {
        if scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
            return Err(AuthError::Invalid(
                "scopes must be one or more of payments:read, payments:write, refunds:write, webhooks:manage",
            ));
        }
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        Ok(Scopes(scopes))
    }

    pub fn joined(&self) -> String {
        self.0.join(" ")
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s == scope)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

#[derive(Clone, Debug)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub environment: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
}

/// A merchant authenticated by an API key.
#[derive(Clone, Debug)]
pub struct MerchantKey {
    pub merchant_id: UserId,
    pub key_id: String,
    pub environment: Environment,
    pub scopes: Scopes,
}

impl MerchantKey {
    /// A merchant's own session, acting on its dashboard: the owner of the account, with every
    /// scope. Needs a session that passed its second factor, of a merchant account.
    pub fn for_session(principal: &Principal) -> Result<MerchantKey, AuthError> {
        principal.full()?;
        if principal.kind != UserKind::Merchant {
            return Err(AuthError::Forbidden("this needs a merchant account"));
        }
        Ok(MerchantKey {
            merchant_id: principal.user_id.clone(),
            key_id: format!("session:{}", principal.session_id),
            environment: Environment::Live,
            scopes: Scopes(SCOPES.iter().map(|s| (*s).to_owned()).collect()),
        })
    }
}

fn view(row: &koban_store::sql::Row) -> Result<ApiKeyView, AuthError> {
    Ok(ApiKeyView {
        id: row.text(0)?,
        name: row.text(1)?,
        environment: row.text(2)?,
        prefix: row.text(3)?,
        scopes: row.text(4)?.split(' ').map(str::to_owned).collect(),
        created_at_ms: row.i64(5)?,
        expires_at_ms: row.opt_i64(6)?,
        revoked_at_ms: row.opt_i64(7)?,
        last_used_at_ms: row.opt_i64(8)?,
    })
}

const KEY_COLUMNS_SQL: &str = "SELECT id, name, environment, prefix, scopes, created_at, expires_at, revoked_at, last_used_at FROM api_keys";

fn merchant(principal: &Principal) -> Result<(), AuthError> {
    principal.full()?;
    if principal.kind != UserKind::Merchant {
        return Err(AuthError::Forbidden("only merchant accounts have API keys"));
    }
    Ok(())
}

impl<D: SqlDb> Auth<D> {
    /// Creates a key (step-up); the key itself is returned this once.
    pub async fn create_api_key(
        &self,
        principal: &Principal,
        name: &str,
        environment: Environment,
        scopes: &Scopes,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<(ApiKeyView, Secret<String>, IssuedSession), AuthError> {
        merchant(principal)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(AuthError::Invalid("name must be 1 to 100 characters"));
        }
        let action = SensitiveAction::CreateApiKey {
            name: name.to_owned(),
            environment: environment.as_str().to_owned(),
            scopes: scopes.joined(),
        };
        let grant = self
            .require_step_up(principal, &action, proof, client)
            .await?;
        let (view, key) = self
            .insert_key(
                principal,
                name,
                environment,
                scopes,
                "api_key.created",
                None,
            )
            .await?;
        Ok((view, key, grant.session))
    }

    async fn insert_key(
        &self,
        principal: &Principal,
        name: &str,
        environment: Environment,
        scopes: &Scopes,
        what: &str,
        replaces: Option<(&str, i64)>,
    ) -> Result<(ApiKeyView, Secret<String>), AuthError> {
        let now = self.now_ms();
        let key = random_token(&format!("kbn_sk_{}_", environment.as_str()));
        let prefix: String = key.expose().chars().take(20).collect();
        let id = new_id();
        let mut tx = self.db.begin().await?;
        if let Some((old_id, overlap_s)) = replaces {
            end_key_after(
                &mut tx,
                &principal.user_id,
                old_id,
                now + overlap_s * 1000,
                now,
            )
            .await?;
        }
        room_for_a_key(&mut tx, &principal.user_id).await?;
        tx.execute(
            "INSERT INTO api_keys (id, user_id, name, environment, prefix, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            params![
                id.as_str(), principal.user_id.as_str(), name, environment.as_str(), prefix.as_str(),
                self.token_hash(key.expose()), scopes.joined(), now
            ],
        )
        .await?;
        append(&mut tx, &self.audit_key, now, AuditEvent {
            actor: &principal.actor(),
            action: what,
            subject: &format!("api_key:{id}"),
            details: serde_json::json!({ "environment": environment.as_str(), "scopes": scopes.as_slice() }),
        })
        .await?;
        let mail = koban_shared::mail::Mail::new("api-key-created")
            .arg("name", name)
            .arg("environment", environment.as_str());
        koban_shared::outbox::enqueue(&mut tx, &self.vault, now, &principal.email, &mail).await?;
        tx.commit().await?;
        self.outbox_written();
        let view = ApiKeyView {
            id,
            name: name.to_owned(),
            environment: environment.as_str().to_owned(),
            prefix,
            scopes: scopes.as_slice().to_vec(),
            created_at_ms: now,
            expires_at_ms: None,
            revoked_at_ms: None,
            last_used_at_ms: None,
        };
        Ok((view, key))
    }

    pub async fn api_keys(&self, principal: &Principal) -> Result<Vec<ApiKeyView>, AuthError> {
        merchant(principal)?;
        const SQL: &str = "SELECT id, name, environment, prefix, scopes, created_at, expires_at, revoked_at, last_used_at FROM api_keys \
                           WHERE user_id = $1 ORDER BY created_at DESC LIMIT 200";
        debug_assert!(SQL.starts_with(KEY_COLUMNS_SQL));
        let mut tx = self.db.begin().await?;
        tx.query(SQL, params![principal.user_id.as_str()])
            .await?
            .iter()
            .map(view)
            .collect()
    }

    pub async fn revoke_api_key(
        &self,
        principal: &Principal,
        key_id: &str,
    ) -> Result<(), AuthError> {
        merchant(principal)?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let revoked = tx
            .execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                params![now, key_id, principal.user_id.as_str()],
            )
            .await?;
        if revoked == 0 {
            return Err(AuthError::NotFound);
        }
        append(
            &mut tx,
            &self.audit_key,
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "api_key.revoked",
                subject: &format!("api_key:{key_id}"),
                details: serde_json::json!({}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a key with a new one of the same name and scopes (step-up); the old one keeps
    /// working for `overlap_s` seconds so servers can switch without downtime.
    pub async fn rotate_api_key(
        &self,
        principal: &Principal,
        key_id: &str,
        overlap_s: i64,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<(ApiKeyView, Secret<String>, IssuedSession), AuthError> {
        merchant(principal)?;
        if !(0..=ROTATION_OVERLAP_S_MAX).contains(&overlap_s) {
            return Err(AuthError::Invalid(
                "overlap_s must be between 0 and 604800 (7 days)",
            ));
        }
        let action = SensitiveAction::RotateApiKey {
            key_id: key_id.to_owned(),
        };
        let grant = self
            .require_step_up(principal, &action, proof, client)
            .await?;
        let now = self.now_ms();
        let old = {
            let mut tx = self.db.begin().await?;
            tx.query_opt(
                "SELECT name, environment, scopes FROM api_keys WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $3)",
                params![key_id, principal.user_id.as_str(), now],
            )
            .await?
            .ok_or(AuthError::NotFound)?
        };
        let scopes: Vec<String> = old.text(2)?.split(' ').map(str::to_owned).collect();
        let (view, key) = self
            .insert_key(
                principal,
                &old.text(0)?,
                Environment::parse(&old.text(1)?)?,
                &Scopes::parse(&scopes)?,
                "api_key.rotated",
                Some((key_id, overlap_s)),
            )
            .await?;
        Ok((view, key, grant.session))
    }

    /// The merchant behind an API key, if the key is live.
    pub async fn authenticate_api_key(&self, key: &str) -> Result<MerchantKey, AuthError> {
        if !key.starts_with("kbn_sk_") || key.len() > 128 {
            return Err(AuthError::Unauthenticated);
        }
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let row = tx
            .query_opt(
                "SELECT k.id, k.user_id, k.environment, k.scopes, k.last_used_at FROM api_keys k JOIN users u ON u.id = k.user_id \
                 WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2) AND u.status = 'active'",
                params![self.token_hash(key), now],
            )
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        let key_id = row.text(0)?;
        if row.opt_i64(4)?.is_none_or(|last| now - last > 60_000) {
            tx.execute(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2",
                params![now, key_id.as_str()],
            )
            .await?;
            tx.commit().await?;
        }
        let scopes: Vec<String> = row.text(3)?.split(' ').map(str::to_owned).collect();
        Ok(MerchantKey {
            merchant_id: UserId::from_stored(row.text(1)?),
            key_id,
            environment: Environment::parse(&row.text(2)?)?,
            scopes: Scopes::parse(&scopes)?,
        })
    }
}

/// Ends a merchant's live key at `ends_at` (a rotation's overlap), in the transaction that
/// makes its successor: the old key's end and the new key commit together, so a failure
/// leaves the merchant with the key they had.
async fn end_key_after<T: SqlTx>(
    tx: &mut T,
    user_id: &str,
    key_id: &str,
    ends_at: i64,
    now: i64,
) -> Result<(), AuthError> {
    let ended = tx
        .execute(
            "UPDATE api_keys SET expires_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $4)",
            params![ends_at, key_id, user_id, now],
        )
        .await?;
    if ended != 1 {
        return Err(AuthError::NotFound);
    }
    Ok(())
}

/// Refuses a new key to a merchant at the cap of live keys. Keys on their way out (rotated,
/// in their overlap) do not count.
async fn room_for_a_key<T: SqlTx>(tx: &mut T, user_id: &str) -> Result<(), AuthError> {
    let live = tx
        .query_one(
            "SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL AND expires_at IS NULL",
            params![user_id],
        )
        .await?
        .i64(0)?;
    if live >= KEYS_PER_MERCHANT_MAX {
        return Err(AuthError::Conflict(
            "too many live API keys: revoke one first",
        ));
    }
    Ok(())
}
