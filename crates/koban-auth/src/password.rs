//! Passwords: the policy for new ones (NIST SP 800-63B: length, a list of common passwords,
//! no composition rules, no truncation) and Argon2id hashing off the async runtime with
//! bounded concurrency, so a flood of guesses is refused rather than queued without end.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::AuthError;
use crate::secret::Secret;

pub const PASSWORD_CHARS_MIN: usize = 12;
pub const PASSWORD_CHARS_MAX: usize = 256;
/// Longest password accepted at login, in bytes (older passwords are not re-checked there).
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// Argon2id at the OWASP minimum: 19 MiB, two passes, one lane.
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
pub const ARGON2_PASSES: u32 = 2;
pub const ARGON2_LANES: u32 = 1;

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|line| !line.is_empty())
        .collect()
});

/// How many entries the common-password list has.
pub fn common_passwords_len() -> usize {
    COMMON.len()
}

/// Why a new password was refused. The messages name the rule, never the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejection {
    #[error("the password must be at least 12 characters long")]
    TooShort,
    #[error("the password must be at most 256 characters long")]
    TooLong,
    #[error("the password is one of the most common passwords; choose another")]
    Common,
    #[error("the password contains your e-mail address or name; choose another")]
    ContainsPersonalData,
}

/// A password a person is choosing now, checked against the policy.
#[derive(Clone, Debug)]
pub struct NewPassword(Secret<String>);

impl NewPassword {
    /// Checks `text` against the policy; `personal` are words it must not contain (the
    /// e-mail's local part, names), compared without regard to case.
    pub fn parse(text: String, personal: &[&str]) -> Result<NewPassword, PasswordRejection> {
        let chars = text.chars().count();
        if chars < PASSWORD_CHARS_MIN {
            return Err(PasswordRejection::TooShort);
        }
        if chars > PASSWORD_CHARS_MAX {
            return Err(PasswordRejection::TooLong);
        }
        let lower = text.to_lowercase();
        if COMMON.contains(lower.as_str()) {
            return Err(PasswordRejection::Common);
        }
        let contains_personal = personal
            .iter()
            .flat_map(|word| word.split(|c: char| c.is_whitespace() || c == '@'))
            .map(str::to_lowercase)
            .filter(|word| word.chars().count() >= 3)
            .any(|word| lower.contains(&word));
        if contains_personal {
            return Err(PasswordRejection::ContainsPersonalData);
        }
        Ok(NewPassword(Secret::new(text)))
    }

    pub fn as_password(&self) -> Password {
        Password(self.0.clone())
    }
}

/// A password as typed at login: any non-empty text up to [`PASSWORD_BYTES_MAX`].
#[derive(Clone, Debug)]
pub struct Password(Secret<String>);

impl Password {
    pub fn parse(text: String) -> Result<Password, AuthError> {
        if text.is_empty() || text.len() > PASSWORD_BYTES_MAX {
            return Err(AuthError::Invalid(
                "password must be between 1 and 1024 bytes",
            ));
        }
        Ok(Password(Secret::new(text)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// Which share of hashing capacity a request may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// A browser or client that presented a valid device cookie: it may use the reserved share.
    KnownDevice,
    /// Everyone else queues for the general share.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct HasherConfig {
    /// Hashes running at once for unknown devices.
    pub general_max: usize,
    /// Hashes running at once reserved for known devices (besides the general ones, which
    /// they may also use when one is free).
    pub reserved_max: usize,
    /// Requests waiting for a hashing slot before new ones are refused.
    pub waiting_max: usize,
    /// How long a request waits for a slot before it is refused.
    pub wait_ms: u64,
}

impl Default for HasherConfig {
    fn default() -> HasherConfig {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        HasherConfig {
            general_max: cores.max(1),
            reserved_max: cores.max(1),
            waiting_max: 64,
            wait_ms: 2_000,
        }
    }
}

/// Argon2id hashing and verification with bounded concurrency.
#[derive(Clone)]
pub struct Hasher {
    general: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    reserved_waiting: Arc<AtomicUsize>,
    config: HasherConfig,
    /// A hash of a random password, verified when the account does not exist so that an
    /// unknown account costs the same time as a wrong password.
    dummy: Arc<String>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None)
        .unwrap_or_else(|_| unreachable!("the OWASP parameters are valid"));
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| AuthError::Internal("password hashing failed"))
}

fn verify_now(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Hasher {
    pub fn new(config: HasherConfig) -> Result<Hasher, AuthError> {
        let dummy = hash_now(crate::secret::random_token("").expose())?;
        Ok(Hasher {
            general: Arc::new(Semaphore::new(config.general_max.max(1))),
            reserved: Arc::new(Semaphore::new(config.reserved_max)),
            waiting: Arc::new(AtomicUsize::new(0)),
            reserved_waiting: Arc::new(AtomicUsize::new(0)),
            config,
            dummy: Arc::new(dummy),
        })
    }

    /// Waits (bounded) for a slot in `pool`; refuses with `Busy` when too many already wait
    /// or the wait runs out.
    async fn wait_for(
        &self,
        pool: &Arc<Semaphore>,
        waiting: &Arc<AtomicUsize>,
    ) -> Result<OwnedSemaphorePermit, AuthError> {
        if waiting.fetch_add(1, Ordering::SeqCst) >= self.config.waiting_max {
            waiting.fetch_sub(1, Ordering::SeqCst);
            metrics::counter!(crate::metrics::HASH_REFUSED).increment(1);
            return Err(AuthError::Busy);
        }
        let _waiting = Waiting(waiting.clone());
        let wait = Duration::from_millis(self.config.wait_ms);
        match tokio::time::timeout(wait, pool.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics::counter!(crate::metrics::HASH_REFUSED).increment(1);
                Err(AuthError::Busy)
            }
        }
    }

    /// A slot to hash in. Known devices take a reserved slot, or a general one if it is free at
    /// once, or wait in their own queue; everyone else waits in the general queue. Taking the
    /// slot first (before any database write) keeps refusals cheap under a flood.
    pub async fn reserve(&self, lane: Lane) -> Result<HashPermit, AuthError> {
        let permit = match lane {
            Lane::KnownDevice => match self.reserved.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => match self.general.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        self.wait_for(&self.reserved, &self.reserved_waiting)
                            .await?
                    }
                },
            },
            Lane::Unknown => self.wait_for(&self.general, &self.waiting).await?,
        };
        Ok(HashPermit {
            _permit: permit,
            dummy: self.dummy.clone(),
        })
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: &NewPassword, lane: Lane) -> Result<String, AuthError> {
        let permit = self.reserve(lane).await?;
        let text = password.0.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash_now(text.expose())
        })
        .await
        .map_err(|_| AuthError::Internal("hashing task failed"))?
    }

    /// Verifies `password` against `phc`, or against a dummy hash when there is none, so both
    /// cases cost the same.
    pub async fn verify(
        &self,
        password: &Password,
        phc: Option<&str>,
        lane: Lane,
    ) -> Result<bool, AuthError> {
        self.reserve(lane).await?.verify(password, phc).await
    }
}

/// A slot to hash in, held until the hash is done.
pub struct HashPermit {
    _permit: OwnedSemaphorePermit,
    dummy: Arc<String>,
}

impl HashPermit {
    /// Verifies `password` against `phc`, or against a dummy hash when there is none, so both
    /// cases cost the same; the slot is freed when the hash is done.
    pub async fn verify(self, password: &Password, phc: Option<&str>) -> Result<bool, AuthError> {
        let text = password.0.clone();
        let (target, real) = match phc {
            Some(phc) => (phc.to_owned(), true),
            None => (self.dummy.as_str().to_owned(), false),
        };
        let matched = tokio::task::spawn_blocking(move || {
            let _slot = self;
            verify_now(text.expose(), &target)
        })
        .await
        .map_err(|_| AuthError::Internal("hashing task failed"))?;
        Ok(matched && real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_list_is_real_and_used() {
        assert!(common_passwords_len() >= 10_000);
        assert_eq!(
            NewPassword::parse("qwertyuiopasdfghjkl".into(), &[]).err(),
            Some(PasswordRejection::Common)
        );
        assert_eq!(
            NewPassword::parse("Qwertyuiopasdfghjkl".into(), &[]).err(),
            Some(PasswordRejection::Common),
            "the list is compared without regard to case"
        );
    }

    #[test]
    fn length_rules_count_characters_and_do_not_truncate() {
        assert_eq!(
            NewPassword::parse("short pass!".into(), &[]).err(),
            Some(PasswordRejection::TooShort)
        );
        assert!(NewPassword::parse("correct horse battery".into(), &[]).is_ok());
        // Twelve multi-byte characters are twelve characters.
        assert!(NewPassword::parse("ぱすわーどはながいほうがよい".into(), &[]).is_ok());
        assert!(NewPassword::parse("x".repeat(256), &[]).is_ok());
        assert_eq!(
            NewPassword::parse("x".repeat(257), &[]).err(),
            Some(PasswordRejection::TooLong)
        );
    }

    #[test]
    fn personal_data_is_refused() {
        let personal = ["hanako.yamada@example.com", "Hanako Yamada"];
        assert_eq!(
            NewPassword::parse("my name is YAMADA forever".into(), &personal).err(),
            Some(PasswordRejection::ContainsPersonalData)
        );
        assert!(NewPassword::parse("lantern pebble orchard".into(), &personal).is_ok());
    }

    #[tokio::test]
    async fn hashes_verify_and_long_passwords_are_not_truncated() {
        let hasher = Hasher::new(HasherConfig::default()).unwrap();
        let long = "a".repeat(200) + "tail-one";
        let new = NewPassword::parse(long.clone(), &[]).unwrap();
        let phc = hasher.hash(&new, Lane::Unknown).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let right = Password::parse(long).unwrap();
        let wrong = Password::parse("a".repeat(200) + "tail-two").unwrap();
        assert!(
            hasher
                .verify(&right, Some(&phc), Lane::Unknown)
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&wrong, Some(&phc), Lane::Unknown)
                .await
                .unwrap()
        );
        assert!(!hasher.verify(&right, None, Lane::Unknown).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_waiting() {
        let config = HasherConfig {
            general_max: 1,
            reserved_max: 1,
            waiting_max: 0,
            wait_ms: 10,
        };
        let hasher = Hasher::new(config).unwrap();
        let _held = hasher.general.clone().try_acquire_owned().unwrap();
        let password = Password::parse("anything at all".into()).unwrap();
        assert!(matches!(
            hasher.verify(&password, None, Lane::Unknown).await,
            Err(AuthError::Busy)
        ));
        // A known device still gets the reserved share.
        assert!(
            hasher
                .verify(&password, None, Lane::KnownDevice)
                .await
                .is_ok()
        );
    }
}
