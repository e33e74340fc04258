//! Throttling of failed attempts, with every counter in the database so that it holds across
//! instances: per account (consecutive failures: a growing delay, then a lock), per client
//! network and per device cookie (failures per window), and per tried password across
//! accounts (one password failing against many accounts is refused everywhere).
//!
//! An attempt is counted against its account *before* the secret is checked ([`begin`]), in
//! one atomic statement that refuses when the account is blocked, so concurrent guesses cannot
//! slip through together; a success clears the count ([`record_success`]). The other scopes
//! are counted once the outcome is known ([`record_failure`]).
//!
//! Accounts are keyed by a keyed hash of what names them (the normalised e-mail for sign-in,
//! the user id for second factors), whether or not an account exists, so an unknown address is
//! throttled exactly like a known one (no enumeration).

use koban_store::params;
use koban_store::sql::{SqlTx, SqlTxExt};

use crate::secret::{HashPurpose, ServerKeys};
use crate::{AuthConfig, AuthError, Client};

/// Consecutive failures on one account are forgotten after a day without one.
const ACCOUNT_MEMORY_MS: i64 = 24 * 3600 * 1000;

/// What an attempt is counted against.
#[derive(Clone, Debug)]
pub struct AttemptKeys {
    pub account: [u8; 32],
    /// `None` when the client presented a device cookie issued to this very account: a
    /// browser that signed in before is not held back by its network's other traffic.
    pub network: Option<[u8; 32]>,
    pub device: Option<[u8; 32]>,
    /// The keyed hash of the tried password, for counting it across accounts.
    pub secret: Option<[u8; 32]>,
    /// The keyed hash of the account as the tried secret's subject.
    pub subject: [u8; 32],
}

impl AttemptKeys {
    /// `account` names the account (`"email:<normalised>"`, `"factor:<user id>"`);
    /// `password` is the tried password, if the attempt carried one (short codes are not
    /// counted across accounts: each account's codes are its own and random);
    /// `trusted_device` says the client's device cookie was issued to this account.
    pub fn new(
        keys: &ServerKeys,
        account: &str,
        client: &Client,
        password: Option<&str>,
        trusted_device: bool,
    ) -> AttemptKeys {
        let throttle = |scope: &str, subject: &str| {
            keys.hash(
                HashPurpose::Throttle,
                &[scope.as_bytes(), subject.as_bytes()],
            )
        };
        AttemptKeys {
            account: throttle("account", account),
            network: (!trusted_device).then(|| throttle("network", &client.network)),
            device: client.device.as_ref().map(|d| throttle("device", &d.id)),
            secret: password
                .map(|s| keys.hash(HashPurpose::TriedSecret, &[b"password", s.as_bytes()])),
            subject: throttle("subject", account),
        }
    }
}

/// The outcome of recording a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Consecutive failures on the account, this one included.
    pub account_failures: i64,
    /// This failure locked the account.
    pub locked_now: bool,
}

fn throttled(blocked_until: i64, now: i64, scope: &'static str) -> AuthError {
    metrics::counter!(crate::metrics::THROTTLED, "scope" => scope).increment(1);
    let wait_ms = blocked_until.saturating_sub(now).max(1);
    AuthError::Throttled {
        retry_after_s: u64::try_from((wait_ms + 999) / 1000).unwrap_or(1),
    }
}

async fn blocked_until<T: SqlTx>(tx: &mut T, key: &[u8; 32]) -> Result<i64, AuthError> {
    let row = tx
        .query_opt(
            "SELECT blocked_until FROM throttle WHERE key = $1",
            params![*key],
        )
        .await?;
    Ok(match row {
        Some(row) => row.i64(0)?,
        None => 0,
    })
}

/// Refuses the attempt if any scope is blocked; otherwise counts it against the account (and
/// sets the delay that applies if it fails) and returns its number in the account's run of
/// failures. Runs before any secret is checked; the caller commits before checking.
pub async fn begin<T: SqlTx>(
    tx: &mut T,
    config: &AuthConfig,
    now: i64,
    keys: &AttemptKeys,
) -> Result<i64, AuthError> {
    refuse_if_blocked(tx, config, now, keys).await?;
    count_attempt(tx, config, now, keys).await
}

/// Refuses the attempt if its device, network or password is blocked, or its account is
/// waiting out a delay; reads only, so it is cheap enough to run before anything else.
pub async fn refuse_if_blocked<T: SqlTx>(
    tx: &mut T,
    config: &AuthConfig,
    now: i64,
    keys: &AttemptKeys,
) -> Result<(), AuthError> {
    let account = blocked_until(tx, &keys.account).await?;
    if account > now {
        return Err(throttled(account, now, "account"));
    }
    if let Some(device) = &keys.device {
        let until = blocked_until(tx, device).await?;
        if until > now {
            return Err(throttled(until, now, "device"));
        }
    }
    if let Some(network) = &keys.network {
        let until = blocked_until(tx, network).await?;
        if until > now {
            return Err(throttled(until, now, "network"));
        }
    }
    if let Some(secret) = &keys.secret {
        let row = tx
            .query_one(
                "SELECT COUNT(*) FROM secret_attempts WHERE secret_hash = $1 AND subject_hash <> $2 AND at >= $3",
                params![*secret, keys.subject, now - config.secret_retention_s * 1000],
            )
            .await?;
        if row.i64(0)? >= config.spray_accounts_max {
            return Err(throttled(
                now + config.secret_retention_s * 1000,
                now,
                "secret",
            ));
        }
    }
    Ok(())
}

/// Counts one attempt at a secret that is not a password (a payment code typed at a till)
/// against `key`, before the secret is looked up, so parallel attempts cannot all pass a check
/// made before any is counted: refused while the key is blocked, and the attempt that makes
/// more than `max` within `window_ms` blocks it until the window ends. An attempt whose
/// secret turns out right is given back with [`forgive`].
pub async fn take_guess<T: SqlTx>(
    tx: &mut T,
    now: i64,
    key: &[u8; 32],
    window_ms: i64,
    max: i64,
    scope: &'static str,
) -> Result<(), AuthError> {
    let until = blocked_until(tx, key).await?;
    if until > now {
        return Err(throttled(until, now, scope));
    }
    let (attempts, start) = count(tx, key, now, window_ms).await?;
    if attempts > max {
        block(tx, key, start + window_ms).await?;
        return Err(throttled(start + window_ms, now, scope));
    }
    Ok(())
}

/// Whether an attempt [`take_guess`] would count now would pass: `key` is not blocked and
/// its window holds fewer than `max` attempts. Reads only: an attempt that will be given back
/// with [`forgive`] anyway (a hit) can be answered on this without writing, since counting
/// and forgiving it would leave the row as it was.
pub async fn guess_would_pass<T: SqlTx>(
    tx: &mut T,
    now: i64,
    key: &[u8; 32],
    window_ms: i64,
    max: i64,
) -> Result<bool, AuthError> {
    let row = tx
        .query_opt(
            "SELECT failures, window_start, blocked_until FROM throttle WHERE key = $1",
            params![*key],
        )
        .await?;
    Ok(match row {
        None => true,
        Some(row) => {
            let (failures, start, until) = (row.i64(0)?, row.i64(1)?, row.i64(2)?);
            until <= now && (start < now - window_ms || failures < max)
        }
    })
}

/// Gives back an attempt counted by [`take_guess`] whose secret was right.
pub async fn forgive<T: SqlTx>(tx: &mut T, key: &[u8; 32]) -> Result<(), AuthError> {
    tx.execute(
        "UPDATE throttle SET failures = failures - 1 WHERE key = $1 AND failures > 0",
        params![*key],
    )
    .await?;
    Ok(())
}

/// Counts the attempt against its account unless the account is blocked (checked again in
/// the same statement), and sets the delay that applies if it fails.
async fn count_attempt<T: SqlTx>(
    tx: &mut T,
    config: &AuthConfig,
    now: i64,
    keys: &AttemptKeys,
) -> Result<i64, AuthError> {
    // One statement counts the attempt unless the account is blocked; on PostgreSQL the row
    // lock it takes makes concurrent attempts on one account wait for each other.
    let counted = tx
        .query_opt(
            "INSERT INTO throttle (key, failures, window_start, blocked_until, updated_at) VALUES ($1, 1, $2, 0, $2) \
             ON CONFLICT (key) DO UPDATE SET \
               failures = CASE WHEN throttle.window_start < $3 THEN 1 ELSE throttle.failures + 1 END, \
               window_start = CASE WHEN throttle.window_start < $3 THEN $2 ELSE throttle.window_start END, \
               updated_at = $2 \
             WHERE throttle.blocked_until <= $2 \
             RETURNING failures",
            params![keys.account, now, now - ACCOUNT_MEMORY_MS],
        )
        .await?;
    let Some(counted) = counted else {
        let until = blocked_until(tx, &keys.account).await?;
        return Err(throttled(until, now, "account"));
    };
    let attempt = counted.i64(0)?;
    let delay = account_delay_ms(config, attempt);
    if delay > 0 {
        block(tx, &keys.account, now + delay).await?;
    }
    Ok(attempt)
}

/// Counts one failure (or request) in `key`'s window; returns the count in the window, this
/// one included, and when the window started.
pub(crate) async fn count<T: SqlTx>(
    tx: &mut T,
    key: &[u8; 32],
    now: i64,
    window_ms: i64,
) -> Result<(i64, i64), AuthError> {
    let row = tx
        .query_one(
            "INSERT INTO throttle (key, failures, window_start, blocked_until, updated_at) VALUES ($1, 1, $2, 0, $2) \
             ON CONFLICT (key) DO UPDATE SET \
               failures = CASE WHEN throttle.window_start < $3 THEN 1 ELSE throttle.failures + 1 END, \
               window_start = CASE WHEN throttle.window_start < $3 THEN $2 ELSE throttle.window_start END, \
               updated_at = $2 \
             RETURNING failures, window_start",
            params![*key, now, now - window_ms],
        )
        .await?;
    Ok((row.i64(0)?, row.i64(1)?))
}

async fn block<T: SqlTx>(tx: &mut T, key: &[u8; 32], until: i64) -> Result<(), AuthError> {
    tx.execute(
        "UPDATE throttle SET blocked_until = $1 WHERE key = $2 AND blocked_until < $1",
        params![until, *key],
    )
    .await?;
    Ok(())
}

/// The delay after the `failures`-th consecutive failure on an account, in milliseconds.
pub fn account_delay_ms(config: &AuthConfig, failures: i64) -> i64 {
    if failures >= config.account_lock_after {
        config.account_lock_s * 1000
    } else if failures >= config.account_delay_after {
        let doublings = u32::try_from(failures - config.account_delay_after)
            .unwrap_or(30)
            .min(30);
        1000i64 << doublings
    } else {
        0
    }
}

/// Records a failed attempt (already counted against its account by [`begin`] as number
/// `attempt`) in the network, device and password scopes, and in the alarm's totals.
pub async fn record_failure<T: SqlTx>(
    tx: &mut T,
    config: &AuthConfig,
    now: i64,
    keys: &AttemptKeys,
    attempt: i64,
) -> Result<Failure, AuthError> {
    let window_ms = config.window_s * 1000;
    if let Some(network) = &keys.network {
        let (network_failures, start) = count(tx, network, now, window_ms).await?;
        if network_failures >= config.network_failures_max {
            block(tx, network, start + window_ms).await?;
        }
    }
    if let Some(device) = &keys.device {
        let (device_failures, start) = count(tx, device, now, window_ms).await?;
        if device_failures >= config.device_failures_max {
            block(tx, device, start + window_ms).await?;
        }
    }
    if let Some(secret) = &keys.secret {
        tx.execute(
            "INSERT INTO secret_attempts (secret_hash, subject_hash, at) VALUES ($1, $2, $3) \
             ON CONFLICT (secret_hash, subject_hash) DO UPDATE SET at = $3",
            params![*secret, keys.subject, now],
        )
        .await?;
        raise_if_sprayed(tx, config, now, secret).await?;
    }
    count_for_alarm(tx, now, 1).await?;
    Ok(Failure {
        account_failures: attempt,
        locked_now: attempt >= config.account_lock_after,
    })
}

/// Raises a `password_spray` security alert when one password has now failed on as many
/// accounts as [`AuthConfig::spray_accounts_max`] allows (from then on it is refused): a
/// spray, however slowly and from however many networks it comes. The alarm's import makes
/// it a fraud alert within seconds. One alert per minute at most.
async fn raise_if_sprayed<T: SqlTx>(
    tx: &mut T,
    config: &AuthConfig,
    now: i64,
    secret: &[u8; 32],
) -> Result<(), AuthError> {
    let accounts = tx
        .query_one(
            "SELECT COUNT(*) FROM secret_attempts WHERE secret_hash = $1 AND at >= $2",
            params![*secret, now - config.secret_retention_s * 1000],
        )
        .await?
        .i64(0)?;
    if accounts != config.spray_accounts_max {
        return Ok(());
    }
    let raised = tx
        .execute(
            "INSERT INTO security_alerts (id, kind, minute, observed, baseline, raised_at) \
             VALUES ($1, 'password_spray', $2, $3, $4, $5) ON CONFLICT (kind, minute) DO NOTHING",
            params![
                koban_shared::new_id(),
                now / 60_000,
                accounts,
                config.spray_accounts_max,
                now
            ],
        )
        .await?;
    if raised == 1 {
        metrics::counter!(crate::metrics::SECURITY_ALERTS, "kind" => "password_spray").increment(1);
        tracing::warn!(
            accounts,
            "security alert: one password tried across accounts"
        );
    }
    Ok(())
}

/// Raises an `account_lockout` security alert when a run of wrong passwords or codes has just
/// locked an account: someone guessing at one account (its password, or a reset or factor
/// code) is told to an analyst at once, not only to the owner. The accounts locked within one
/// minute share one alert, which counts them.
pub async fn raise_lockout<T: SqlTx>(tx: &mut T, now: i64) -> Result<(), AuthError> {
    let raised = tx
        .execute(
            "INSERT INTO security_alerts (id, kind, minute, observed, baseline, raised_at) \
             VALUES ($1, 'account_lockout', $2, 1, 0, $3) \
             ON CONFLICT (kind, minute) DO UPDATE SET observed = security_alerts.observed + 1",
            params![koban_shared::new_id(), now / 60_000, now],
        )
        .await?;
    if raised == 1 {
        metrics::counter!(crate::metrics::SECURITY_ALERTS, "kind" => "account_lockout")
            .increment(1);
        tracing::warn!("security alert: an account locked after repeated wrong credentials");
    }
    Ok(())
}

/// Adds failed or refused attempts to the per-minute totals that the global alarm watches.
pub async fn count_for_alarm<T: SqlTx>(
    tx: &mut T,
    now: i64,
    attempts: i64,
) -> Result<(), AuthError> {
    tx.execute(
        "INSERT INTO failure_minutes (minute, failures) VALUES ($1, $2) \
         ON CONFLICT (minute) DO UPDATE SET failures = failure_minutes.failures + $2",
        params![now / 60_000, attempts],
    )
    .await?;
    metrics::counter!(crate::metrics::LOGIN_FAILURES)
        .increment(u64::try_from(attempts).unwrap_or(0));
    Ok(())
}

/// A success ends the account's run of consecutive failures (not the network's or device's).
pub async fn record_success<T: SqlTx>(tx: &mut T, keys: &AttemptKeys) -> Result<(), AuthError> {
    tx.execute("DELETE FROM throttle WHERE key = $1", params![keys.account])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_lock() {
        let config = AuthConfig::default();
        assert_eq!(account_delay_ms(&config, 4), 0);
        assert_eq!(account_delay_ms(&config, 5), 1000);
        assert_eq!(account_delay_ms(&config, 6), 2000);
        assert_eq!(account_delay_ms(&config, 9), 16_000);
        assert_eq!(account_delay_ms(&config, 10), 30 * 60 * 1000);
        assert_eq!(account_delay_ms(&config, 11), 30 * 60 * 1000);
    }
}
