//! Notifications through a transactional outbox: a message is written in the same transaction
//! as the event it reports, and a background worker delivers it with retries and backoff, so a
//! process that dies after the commit loses no message.
//!
//! Delivery goes to an SMTP relay when one is configured ([`SmtpConfig`]), otherwise to the
//! local mailbox (a table, readable over HTTP only in `--dev` mode). Delivery is at least
//! once: a process that dies between sending and recording the send sends again.

use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};

use crate::{Auth, AuthError, Secret};
use koban_shared::personal::{self, Index};

/// Longest time a claimed message stays claimed by a worker that died.
const CLAIM_MS: i64 = 30_000;
/// Longest wait between two attempts.
const BACKOFF_MAX_MS: i64 = 3_600_000;
/// Attempts before a message is given up (about three days at the longest backoff).
pub const ATTEMPTS_MAX: i64 = 80;

/// A notice as its recipient's history lists it.
#[derive(Clone, Debug)]
pub struct Notice {
    pub subject: String,
    pub created_at_ms: i64,
    pub delivered: bool,
}

/// How the connection to the SMTP relay is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte (port 465 by default).
    Tls,
    /// `smtp://…?tls=required`: STARTTLS, and no message is sent if the relay refuses it
    /// (port 587 by default).
    StartTls,
    /// `smtp://` to this machine, or `smtp://…?tls=none` on purpose: no encryption, for a
    /// relay on the same machine or a sidecar that does TLS onwards (port 25 by default).
    /// Credentials are refused on it.
    Plain,
}

/// The SMTP relay notifications go through.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// The user name and password the relay wants (`AUTH PLAIN` or `LOGIN`), if any.
    pub credentials: Option<(String, Secret<String>)>,
    /// The sender address, such as `Koban <no-reply@koban.example>`.
    pub from: String,
    /// Certificate authorities (PEM) trusted for the relay besides the platform's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl SmtpConfig {
    /// Parses `smtps://[USER:PASSWORD@]HOST[:PORT]` (TLS),
    /// `smtp://[USER:PASSWORD@]HOST[:PORT]?tls=required` (STARTTLS) or `smtp://HOST[:PORT]`
    /// (plain: to this machine, or anywhere with `?tls=none`). The user name and password are percent-encoded; `password`, when given (from
    /// a file), replaces the URL's. Error messages never repeat the URL.
    pub fn parse(
        url: &str,
        from: &str,
        password: Option<Secret<String>>,
    ) -> Result<SmtpConfig, AuthError> {
        const SHAPE: &str = "the SMTP URL must look like smtps://USER:PASSWORD@HOST:465, smtp://USER:PASSWORD@HOST:587?tls=required or smtp://HOST:25";
        let url = url::Url::parse(url).map_err(|_| AuthError::Invalid(SHAPE))?;
        let mut tls = None;
        for (key, value) in url.query_pairs() {
            if key != "tls" || tls.is_some() {
                return Err(AuthError::Invalid(
                    "the SMTP URL takes one parameter, tls (required, or none to send in clear on purpose)",
                ));
            }
            tls = Some(value.into_owned());
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(AuthError::Invalid("the SMTP URL must name a host")),
        };
        let on_this_machine = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtps", None) => (SmtpSecurity::Tls, 465),
            ("smtp", Some("required")) => (SmtpSecurity::StartTls, 587),
            ("smtp", None) if on_this_machine => (SmtpSecurity::Plain, 25),
            ("smtp", Some("none")) => (SmtpSecurity::Plain, 25),
            ("smtp", None) => {
                // Mail carries sign-in codes and links: in clear only to this machine, unless
                // the operator says so.
                return Err(AuthError::Invalid(
                    "plain SMTP goes only to a relay on this machine: use smtps://, smtp://...?tls=required, or ?tls=none to send in clear on purpose",
                ));
            }
            _ => return Err(AuthError::Invalid(SHAPE)),
        };
        if !url.path().trim_matches('/').is_empty() || url.fragment().is_some() {
            return Err(AuthError::Invalid(SHAPE));
        }
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| AuthError::Invalid("the SMTP user name or password is not UTF-8"))
        };
        let user = decode(url.username())?;
        let password = match (password, url.password()) {
            (Some(password), _) => Some(password),
            (None, Some(inline)) => Some(Secret::new(decode(inline)?)),
            (None, None) => None,
        };
        let credentials = match (user.is_empty(), password) {
            (true, None) => None,
            (false, Some(password)) => Some((user, password)),
            _ => {
                return Err(AuthError::Invalid(
                    "the SMTP URL needs both a user name and a password, or neither",
                ));
            }
        };
        if credentials.is_some() && security == SmtpSecurity::Plain {
            return Err(AuthError::Invalid(
                "SMTP credentials need TLS: use smtps:// or smtp://...?tls=required",
            ));
        }
        from.parse::<lettre::message::Mailbox>().map_err(|_| {
            AuthError::Invalid("the sender must be an address like Koban <no-reply@koban.example>")
        })?;
        Ok(SmtpConfig {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            credentials,
            from: from.to_owned(),
            ca_pem: None,
        })
    }
}

/// Where delivered messages go.
pub(crate) enum Mailer {
    Mailbox,
    Smtp {
        transport: Box<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>,
        from: lettre::message::Mailbox,
    },
}

impl Mailer {
    pub(crate) fn new(smtp: Option<&SmtpConfig>) -> Result<Mailer, AuthError> {
        use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
        let Some(smtp) = smtp else {
            return Ok(Mailer::Mailbox);
        };
        let mut builder =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(&smtp.host)
                .port(smtp.port)
                .timeout(Some(std::time::Duration::from_secs(10)));
        if smtp.security != SmtpSecurity::Plain {
            // Verified against the platform's roots plus the operator's own authorities.
            let mut parameters = TlsParameters::builder(smtp.host.clone());
            if let Some(pem) = &smtp.ca_pem {
                let certificate = Certificate::from_pem(pem).map_err(|_| {
                    AuthError::Invalid("the CA file for the SMTP relay is not PEM certificates")
                })?;
                parameters = parameters.add_root_certificate(certificate);
            }
            let parameters = parameters
                .build_rustls()
                .map_err(|_| AuthError::Invalid("the SMTP relay's TLS settings are not valid"))?;
            builder = builder.tls(match smtp.security {
                SmtpSecurity::Tls => Tls::Wrapper(parameters),
                _ => Tls::Required(parameters),
            });
        }
        if let Some((user, password)) = &smtp.credentials {
            builder =
                builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    user.clone(),
                    password.expose().clone(),
                ));
        }
        let from = smtp
            .from
            .parse()
            .map_err(|_| AuthError::Invalid("the sender address is not valid"))?;
        Ok(Mailer::Smtp {
            transport: Box::new(builder.build()),
            from,
        })
    }
}

/// A message in the local mailbox.
#[derive(Clone, Debug)]
pub struct MailboxMessage {
    pub id: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub delivered_at_ms: i64,
}

impl<D: SqlDb> Auth<D> {
    /// Wakes the delivery worker after a commit that wrote messages.
    pub(crate) fn outbox_written(&self) {
        self.outbox_wake.notify_one();
    }

    /// Waits until a message may have been written, or `timeout` passed.
    pub async fn outbox_wait(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.outbox_wake.notified()).await;
    }

    /// Delivers up to `limit` due messages; returns how many were delivered.
    pub async fn deliver_outbox(&self, limit: i64) -> Result<usize, AuthError> {
        let now = self.now_ms();
        if matches!(&*self.mailer, Mailer::Mailbox) {
            return self.deliver_locally(now, limit).await;
        }
        let mut tx = self.db.begin().await?;
        // The conditions are repeated outside the subquery so that, on PostgreSQL, a second
        // worker that waited for the row lock re-checks them and skips the claimed row.
        let claimed = tx
            .query(
                "UPDATE outbox SET claimed_until = $1 \
                 WHERE id IN (SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
                              AND (claimed_until IS NULL OR claimed_until < $2) AND attempts < $3 \
                              ORDER BY next_attempt_at LIMIT $4) \
                 AND delivered_at IS NULL AND (claimed_until IS NULL OR claimed_until < $2) \
                 RETURNING id, recipient, subject, body, attempts",
                params![now + CLAIM_MS, now, ATTEMPTS_MAX, limit],
            )
            .await?;
        tx.commit().await?;
        let mut delivered = 0;
        for row in claimed {
            let id = row.text(0)?;
            let attempts = row.i64(4)?;
            let mut tx = self.db.begin().await?;
            let opened = self.opened_or_given_up(&mut tx, &id, &row).await?;
            tx.commit().await?;
            let Some(message) = opened else {
                continue;
            };
            match self.deliver_one(&id, &message, now).await {
                Ok(()) => {
                    delivered += 1;
                    metrics::counter!(crate::metrics::OUTBOX_DELIVERED).increment(1);
                }
                Err(error) => {
                    metrics::counter!(crate::metrics::OUTBOX_FAILED).increment(1);
                    tracing::warn!(message_id = %id, %error, "notification delivery failed; will retry");
                    self.reschedule(&id, attempts, now).await?;
                }
            }
        }
        Ok(delivered)
    }

    /// The local mailbox takes a whole batch in one transaction: a busy service writes many
    /// notifications a second, and a commit per message would compete with the ledger's
    /// writer for the database.
    async fn deliver_locally(&self, now: i64, limit: i64) -> Result<usize, AuthError> {
        let mut tx = self.db.begin().await?;
        let due = tx
            .query(
                "SELECT id, recipient, subject, body FROM outbox WHERE delivered_at IS NULL \
                 AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until < $1) \
                 AND attempts < $2 ORDER BY next_attempt_at LIMIT $3",
                params![now, ATTEMPTS_MAX, limit.saturating_mul(4)],
            )
            .await?;
        for row in &due {
            let id = row.text(0)?;
            let Some(message) = self.opened_or_given_up(&mut tx, &id, row).await? else {
                continue;
            };
            self.write_to_mailbox(&mut tx, &id, &message, now).await?;
            tx.execute(
                "UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, claimed_until = NULL, body = '' \
                 WHERE id = $2 AND delivered_at IS NULL",
                params![now, id.as_str()],
            )
            .await?;
        }
        tx.commit().await?;
        metrics::counter!(crate::metrics::OUTBOX_DELIVERED).increment(due.len() as u64);
        // Reported against the caller's batch size, so a full batch asks for another round.
        Ok(due.len().min(usize::try_from(limit).unwrap_or(usize::MAX)))
    }

    async fn deliver_one(
        &self,
        id: &str,
        (recipient, subject, body): &(String, String, String),
        now: i64,
    ) -> Result<(), AuthError> {
        if let Mailer::Smtp { transport, from } = &*self.mailer {
            use lettre::AsyncTransport;
            let to = recipient
                .parse()
                .map_err(|_| AuthError::Internal("a stored recipient is not an address"))?;
            let message = lettre::Message::builder()
                .from(from.clone())
                .to(to)
                .subject(subject.as_str())
                .body(body.clone())
                .map_err(|_| AuthError::Internal("the message could not be built"))?;
            transport
                .send(message)
                .await
                .map_err(|_| AuthError::Internal("the SMTP relay did not accept the message"))?;
            let mut tx = self.db.begin().await?;
            tx.execute(
                "UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, claimed_until = NULL, body = '' WHERE id = $2",
                params![now, id],
            )
            .await?;
            return Ok(tx.commit().await?);
        }
        let mut tx = self.db.begin().await?;
        let message = (recipient.clone(), subject.clone(), body.clone());
        self.write_to_mailbox(&mut tx, id, &message, now).await?;
        tx.execute(
            "UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, claimed_until = NULL, body = '' WHERE id = $2",
            params![now, id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An outbox row's recipient, subject and body (columns 1 to 3), opened.
    fn opened(&self, row: &koban_store::sql::Row) -> Result<(String, String, String), AuthError> {
        Ok((
            self.vault
                .open(&personal::OUTBOX_RECIPIENT, &row.text(1)?)?,
            self.vault.open(&personal::OUTBOX_SUBJECT, &row.text(2)?)?,
            self.vault.open(&personal::OUTBOX_BODY, &row.text(3)?)?,
        ))
    }

    /// [`Auth::opened`], or `None` for a message that does not open: one under a key this
    /// instance has not loaded yet waits for the next round; any other (written in clear by a
    /// process that did not seal, or damaged) is given up, with its reason, rather than holding
    /// up every message behind it.
    async fn opened_or_given_up<T: SqlTx>(
        &self,
        tx: &mut T,
        id: &str,
        row: &koban_store::sql::Row,
    ) -> Result<Option<(String, String, String)>, AuthError> {
        match self.opened(row) {
            Ok(message) => Ok(Some(message)),
            // Sealed under a key another instance added a moment ago: this one loads it
            // within seconds, and the notice goes then.
            Err(_) if row.text(1)?.starts_with("pd1.") && !self.vault.knows_key(&row.text(1)?) => {
                Ok(None)
            }
            Err(error) => {
                tracing::error!(message_id = %id, %error, "a notice does not open; given up");
                tx.execute(
                    "UPDATE outbox SET attempts = $1, claimed_until = NULL, last_error = 'unreadable' WHERE id = $2",
                    params![ATTEMPTS_MAX, id],
                )
                .await?;
                metrics::counter!(crate::metrics::OUTBOX_FAILED).increment(1);
                Ok(None)
            }
        }
    }

    /// Writes a delivered message into the local mailbox, sealed for its columns.
    async fn write_to_mailbox<T: SqlTx>(
        &self,
        tx: &mut T,
        id: &str,
        (recipient, subject, body): &(String, String, String),
        now: i64,
    ) -> Result<(), AuthError> {
        tx.execute(
            "INSERT INTO mailbox (id, recipient, recipient_index, subject, body, delivered_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            params![
                id,
                self.vault.seal(&personal::MAILBOX_RECIPIENT, recipient),
                self.vault.index(Index::Email, recipient),
                self.vault.seal(&personal::MAILBOX_SUBJECT, subject),
                self.vault.seal(&personal::MAILBOX_BODY, body),
                now
            ],
        )
        .await?;
        Ok(())
    }

    async fn reschedule(&self, id: &str, attempts: i64, now: i64) -> Result<(), AuthError> {
        let backoff = 1000i64
            .checked_shl(u32::try_from(attempts.clamp(0, 22)).unwrap_or(22))
            .unwrap_or(BACKOFF_MAX_MS)
            .min(BACKOFF_MAX_MS);
        let mut tx = self.db.begin().await?;
        tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, claimed_until = NULL, \
             last_error = 'delivery failed' WHERE id = $2",
            params![now + backoff, id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Messages in the local mailbox for `recipient`, newest first (dev mode only; the HTTP
    /// layer enforces that).
    pub async fn mailbox(
        &self,
        recipient: &str,
        limit: i64,
    ) -> Result<Vec<MailboxMessage>, AuthError> {
        let recipient = recipient.trim().to_lowercase();
        let mut tx = self.db.begin_read().await?;
        let rows = tx
            .query(
                "SELECT id, recipient, subject, body, delivered_at FROM mailbox WHERE recipient_index = $1 \
                 ORDER BY delivered_at DESC, id DESC LIMIT $2",
                params![self.vault.index(Index::Email, &recipient), limit.clamp(1, 200)],
            )
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(MailboxMessage {
                    id: row.text(0)?,
                    recipient: (self.vault).open(&personal::MAILBOX_RECIPIENT, &row.text(1)?)?,
                    subject: (self.vault).open(&personal::MAILBOX_SUBJECT, &row.text(2)?)?,
                    body: (self.vault).open(&personal::MAILBOX_BODY, &row.text(3)?)?,
                    delivered_at_ms: row.i64(4)?,
                })
            })
            .collect()
    }

    /// The notices sent to the caller's address, newest first: subject, when, and whether it
    /// was delivered. Bodies are left out: some carry one-time codes or links.
    pub async fn notices(
        &self,
        principal: &crate::Principal,
        limit: i64,
    ) -> Result<Vec<Notice>, AuthError> {
        principal.full()?;
        let mut tx = self.db.begin_read().await?;
        let rows = tx
            .query(
                "SELECT subject, created_at, delivered_at FROM outbox WHERE recipient_index = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $2",
                params![
                    self.vault.index(Index::Email, principal.email.as_str()),
                    limit.clamp(1, 200)
                ],
            )
            .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|row| {
                Ok(Notice {
                    subject: (self.vault).open(&personal::OUTBOX_SUBJECT, &row.text(0)?)?,
                    created_at_ms: row.i64(1)?,
                    delivered: row.opt_i64(2)?.is_some(),
                })
            })
            .collect()
    }

    /// How many messages wait for delivery.
    pub async fn outbox_pending(&self) -> Result<i64, AuthError> {
        let mut tx = self.db.begin().await?;
        let row = tx
            .query_one(
                "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL",
                vec![],
            )
            .await?;
        Ok(row.i64(0)?)
    }
}
