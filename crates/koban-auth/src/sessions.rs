//! Sessions: random 256-bit opaque tokens, stored only as keyed hashes; an idle timeout and an
//! absolute lifetime; two levels (password only, then second factor). Also the signed device
//! cookie that marks a browser that has signed in before.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};

use crate::model::{Role, UserKind};
use crate::secret::{HashPurpose, Secret, constant_time_eq, random_token};
use crate::{Auth, AuthError, Client};
use koban_shared::ids::UserId;
use koban_shared::new_id;

pub const SESSION_TOKEN_PREFIX: &str = "kbs_";
/// `last_seen_at` is written at most this often per session.
const TOUCH_EVERY_MS: i64 = 30_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SessionLevel {
    /// The password was right; a second factor is still to be checked (or enrolled).
    Password = 1,
    /// The second factor was checked too.
    SecondFactor = 2,
}

impl SessionLevel {
    fn from_i64(value: i64) -> SessionLevel {
        if value >= 2 {
            SessionLevel::SecondFactor
        } else {
            SessionLevel::Password
        }
    }
}

/// Who is calling, established from a session token.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: UserId,
    pub session_id: String,
    pub kind: UserKind,
    pub role: Option<Role>,
    pub level: SessionLevel,
    pub email: String,
    pub email_verified: bool,
    pub has_factor: bool,
    pub cooling_off_until_ms: Option<i64>,
}

/// Proof that the caller completed sign-in with a second factor. Only [`Principal::full`]
/// makes one.
#[derive(Clone, Copy, Debug)]
pub struct FullSession(());

/// Proof that the caller is an operator with one of the required roles.
#[derive(Clone, Debug)]
pub struct OperatorCap {
    pub operator_id: UserId,
    pub role: Role,
}

impl Principal {
    /// Every action beyond enrolling a first factor needs a session confirmed by a second factor.
    pub fn full(&self) -> Result<FullSession, AuthError> {
        if self.level == SessionLevel::SecondFactor {
            Ok(FullSession(()))
        } else if self.has_factor {
            Err(AuthError::SecondFactorRequired)
        } else {
            Err(AuthError::EnrolmentRequired)
        }
    }

    /// What moving money needs: a full session and a verified e-mail address.
    pub fn can_move_money(&self) -> Result<FullSession, AuthError> {
        let full = self.full()?;
        if !self.email_verified {
            return Err(AuthError::EmailNotVerified);
        }
        Ok(full)
    }

    /// An operator with one of `roles` (admins may do everything).
    pub fn operator(&self, roles: &[Role]) -> Result<OperatorCap, AuthError> {
        self.full()?;
        match (self.kind, self.role) {
            (UserKind::Operator, Some(role)) if role == Role::Admin || roles.contains(&role) => {
                Ok(OperatorCap {
                    operator_id: self.user_id.clone(),
                    role,
                })
            }
            _ => Err(AuthError::Forbidden(
                "this needs an operator with another role",
            )),
        }
    }

    pub fn actor(&self) -> String {
        match self.kind {
            UserKind::Operator => format!("operator:{}", self.user_id),
            _ => format!("user:{}", self.user_id),
        }
    }
}

/// A session just issued: the token is shown to the client once.
#[derive(Clone, Debug)]
pub struct IssuedSession {
    pub session_id: String,
    pub token: Secret<String>,
    /// The anti-CSRF token a cookie-authenticated client sends in `X-CSRF-Token`.
    pub csrf: Secret<String>,
    pub level: SessionLevel,
    pub expires_at_ms: i64,
    /// A device cookie to set, when this step completed a sign-in from a browser that had
    /// none for this account.
    pub device_cookie: Option<Secret<String>>,
}

/// One of the caller's sessions, for listing.
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: String,
    pub level: SessionLevel,
    pub network: String,
    pub user_agent: String,
    pub created_at_ms: i64,
    pub last_seen_at_ms: i64,
    pub expires_at_ms: i64,
}

impl<D: SqlDb> Auth<D> {
    pub(crate) fn token_hash(&self, token: &str) -> [u8; 32] {
        self.keys.hash(HashPurpose::Token, &[token.as_bytes()])
    }

    /// The anti-CSRF token that belongs to a session token.
    pub fn csrf_for(&self, token: &str) -> Secret<String> {
        Secret::new(
            URL_SAFE_NO_PAD.encode(
                self.keys
                    .hash(HashPurpose::Token, &[b"csrf", token.as_bytes()]),
            ),
        )
    }

    pub fn csrf_matches(&self, token: &str, presented: &str) -> bool {
        constant_time_eq(
            self.csrf_for(token).expose().as_bytes(),
            presented.as_bytes(),
        )
    }

    /// A signed device cookie value for `user_id`'s browser (issued after a completed sign-in).
    pub fn issue_device(&self, user_id: &str) -> Secret<String> {
        let id = new_id();
        let mac = URL_SAFE_NO_PAD.encode(
            self.keys
                .hash(HashPurpose::Device, &[id.as_bytes(), user_id.as_bytes()]),
        );
        Secret::new(format!("{id}.{user_id}.{mac}"))
    }

    /// The device a cookie value names, if its signature holds.
    pub fn verify_device(&self, cookie: &str) -> Option<crate::model::DeviceCookie> {
        let mut parts = cookie.splitn(3, '.');
        let (id, user_id, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if id.len() > 64 || user_id.len() > 64 {
            return None;
        }
        let expected = URL_SAFE_NO_PAD.encode(
            self.keys
                .hash(HashPurpose::Device, &[id.as_bytes(), user_id.as_bytes()]),
        );
        constant_time_eq(expected.as_bytes(), mac.as_bytes()).then(|| crate::model::DeviceCookie {
            id: id.to_owned(),
            user_id: user_id.to_owned(),
        })
    }

    /// A new device cookie, unless the client already holds one for `user_id`.
    pub(crate) fn device_cookie_for(
        &self,
        client: &Client,
        user_id: &str,
    ) -> Option<Secret<String>> {
        (!client.trusted_for(user_id)).then(|| self.issue_device(user_id))
    }

    pub(crate) async fn issue_session<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        level: SessionLevel,
        client: &Client,
        now: i64,
    ) -> Result<IssuedSession, AuthError> {
        let expires_at_ms = now + self.config.session_absolute_s * 1000;
        self.insert_session(tx, user_id, level, client, now, expires_at_ms)
            .await
    }

    async fn insert_session<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        level: SessionLevel,
        client: &Client,
        now: i64,
        expires_at_ms: i64,
    ) -> Result<IssuedSession, AuthError> {
        let token = random_token(SESSION_TOKEN_PREFIX);
        let id = new_id();
        tx.execute(
            "INSERT INTO sessions (id, token_hash, user_id, level, device_id, network, user_agent, \
             created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
            params![
                id.as_str(),
                self.token_hash(token.expose()),
                user_id,
                level as i64,
                client.device.as_ref().map(|d| d.id.clone()),
                client.network.as_str(),
                client.user_agent.as_str(),
                now,
                expires_at_ms
            ],
        )
        .await?;
        Ok(IssuedSession {
            session_id: id,
            csrf: self.csrf_for(token.expose()),
            token,
            level,
            expires_at_ms,
            device_cookie: None,
        })
    }

    /// Ends `principal`'s session and issues a new one at `level` (on every login step and
    /// step-up, so a token seen before the step is worthless after it). The new session keeps
    /// the old one's absolute end: rotation never extends a session's life.
    pub(crate) async fn rotate_session<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        level: SessionLevel,
        client: &Client,
        now: i64,
    ) -> Result<IssuedSession, AuthError> {
        let ended = tx
            .query_opt(
                "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING expires_at",
                params![now, principal.session_id.as_str()],
            )
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        let expires_at_ms = ended.i64(0)?;
        self.insert_session(tx, &principal.user_id, level, client, now, expires_at_ms)
            .await
    }

    pub(crate) async fn revoke_sessions<T: SqlTx>(
        &self,
        tx: &mut T,
        user_id: &str,
        except: Option<&str>,
        now: i64,
    ) -> Result<u64, AuthError> {
        Ok(tx
            .execute(
                "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3",
                params![now, user_id, except.unwrap_or("")],
            )
            .await?)
    }

    /// Whether the session a principal was authenticated with is still live: not revoked
    /// (a step-up rotates the session by revoking it), not expired. A request that moves
    /// money asks again once it holds the payer's wallet lock, so a token replaced by a
    /// rotation stops moving money at the moment of the rotation, also for requests that
    /// were already in flight with it.
    pub async fn session_live(&self, principal: &Principal) -> Result<(), AuthError> {
        let now = self.now_ms();
        let mut tx = self.db.begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT revoked_at, expires_at FROM sessions WHERE id = $1",
                params![principal.session_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        match row {
            Some(row) if row.opt_i64(0)?.is_none() && now < row.i64(1)? => Ok(()),
            _ => Err(AuthError::Unauthenticated),
        }
    }

    /// The principal behind a session token, if the session is live.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        if !token.starts_with(SESSION_TOKEN_PREFIX) || token.len() > 128 {
            return Err(AuthError::Unauthenticated);
        }
        let now = self.now_ms();
        // A read: most requests write nothing (the idle clock is touched at most every 30 s).
        let mut tx = self.db.begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT s.id, s.user_id, s.level, s.last_seen_at, s.expires_at, s.revoked_at, \
                 u.kind, u.role, u.email, u.email_verified_at, u.status, u.cooling_off_until, \
                 (SELECT COUNT(*) FROM factors f WHERE f.user_id = u.id AND f.confirmed_at IS NOT NULL) \
                 FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
                params![self.token_hash(token)],
            )
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        let last_seen = row.i64(3)?;
        let idle_limit = last_seen + self.config.session_idle_s * 1000;
        if row.opt_i64(5)?.is_some()
            || now >= row.i64(4)?
            || now >= idle_limit
            || row.text(10)? != "active"
        {
            return Err(AuthError::Unauthenticated);
        }
        let principal = Principal {
            session_id: row.text(0)?,
            user_id: UserId::from_stored(row.text(1)?),
            level: SessionLevel::from_i64(row.i64(2)?),
            kind: UserKind::parse(&row.text(6)?)?,
            role: row.opt_text(7)?.as_deref().map(Role::parse).transpose()?,
            email: (self.vault).open(&koban_shared::personal::USER_EMAIL, &row.text(8)?)?,
            email_verified: row.opt_i64(9)?.is_some(),
            cooling_off_until_ms: row.opt_i64(11)?.filter(|until| *until > now),
            has_factor: row.i64(12)? > 0,
        };
        drop(tx);
        if now - last_seen >= TOUCH_EVERY_MS {
            let mut tx = self.db.begin().await?;
            tx.execute(
                "UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                params![now, principal.session_id.as_str()],
            )
            .await?;
            tx.commit().await?;
        }
        Ok(principal)
    }

    /// The caller's live sessions, newest first.
    pub async fn sessions(&self, principal: &Principal) -> Result<Vec<SessionRow>, AuthError> {
        principal.full()?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let rows = tx
            .query(
                "SELECT id, level, network, user_agent, created_at, last_seen_at, expires_at FROM sessions \
                 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_seen_at > $3 \
                 ORDER BY created_at DESC LIMIT 100",
                params![
                    principal.user_id.as_str(),
                    now,
                    now - self.config.session_idle_s * 1000
                ],
            )
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(SessionRow {
                    id: row.text(0)?,
                    level: SessionLevel::from_i64(row.i64(1)?),
                    network: row.text(2)?,
                    user_agent: row.text(3)?,
                    created_at_ms: row.i64(4)?,
                    last_seen_at_ms: row.i64(5)?,
                    expires_at_ms: row.i64(6)?,
                })
            })
            .collect()
    }

    /// Ends one of the caller's own sessions (any level may sign itself out).
    pub async fn revoke_session(
        &self,
        principal: &Principal,
        session_id: &str,
    ) -> Result<(), AuthError> {
        // Signing oneself out is always allowed; ending another session needs a full one.
        if session_id != principal.session_id {
            principal.full()?;
        }
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let changed = tx
            .execute(
                "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                params![now, session_id, principal.user_id.as_str()],
            )
            .await?;
        if changed == 0 {
            return Err(AuthError::NotFound);
        }
        koban_shared::audit::append(
            &mut tx,
            &self.audit_key,
            now,
            koban_shared::audit::AuditEvent {
                actor: &principal.actor(),
                action: "session.revoked",
                subject: &format!("session:{session_id}"),
                details: serde_json::json!({}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets the language the caller's notices are written in. A full session only: someone
    /// who knows the password alone must not be able to turn the owner's alerts into a
    /// language the owner does not read.
    pub async fn set_lang(
        &self,
        principal: &Principal,
        lang: koban_shared::lang::Lang,
    ) -> Result<(), AuthError> {
        principal.full()?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let changed = tx
            .execute(
                "UPDATE users SET lang = $1 WHERE id = $2 AND lang <> $1",
                params![lang.code(), principal.user_id.as_str()],
            )
            .await?;
        if changed > 0 {
            koban_shared::audit::append(
                &mut tx,
                &self.audit_key,
                now,
                koban_shared::audit::AuditEvent {
                    actor: &principal.actor(),
                    action: "account.lang_changed",
                    subject: &format!("user:{}", principal.user_id),
                    details: serde_json::json!({ "lang": lang.code() }),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends every session of the caller but the current one (a full session only: a thief
    /// halfway through signing in cannot sign the owner out). Returns how many ended.
    pub async fn revoke_other_sessions(&self, principal: &Principal) -> Result<u64, AuthError> {
        principal.full()?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let ended = self
            .revoke_sessions(
                &mut tx,
                &principal.user_id,
                Some(&principal.session_id),
                now,
            )
            .await?;
        // Told by e-mail, with the link that freezes the account: the one signing everyone
        // else out may not be the owner.
        let link = self.not_me_link(&mut tx, &principal.user_id, now).await?;
        let mail = koban_shared::mail::Mail::new("sessions-ended").arg("link", link);
        koban_shared::outbox::enqueue(&mut tx, &self.vault, now, &principal.email, &mail).await?;
        koban_shared::audit::append(
            &mut tx,
            &self.audit_key,
            now,
            koban_shared::audit::AuditEvent {
                actor: &principal.actor(),
                action: "session.revoked_others",
                subject: &format!("user:{}", principal.user_id),
                details: serde_json::json!({ "ended": ended }),
            },
        )
        .await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(ended)
    }
}
