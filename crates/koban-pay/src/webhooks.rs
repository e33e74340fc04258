//! Merchant webhooks, signed per Standard Webhooks: each delivery carries `webhook-id`,
//! `webhook-timestamp` and `webhook-signature` (`v1,` + base64 of HMAC-SHA256 under the
//! endpoint's secret over `id.timestamp.body`). A secret (`whsec_` + base64 of 32 random
//! bytes) is shown once, stored sealed under the server key, and rotated with an overlap in
//! which deliveries carry both signatures.
//!
//! Events are written as delivery rows (the webhook outbox); a worker posts due ones, retries
//! with backoff for 3 days, and records every attempt's status. Merchants read the log and ask
//! for a redelivery. Endpoints are `https://` at public addresses (see [`crate::outbound`] for
//! the guard against request forgery); `--dev` also accepts `http://` and loopback.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use koban_auth::apikeys::MerchantKey;
use koban_auth::{AuthError, Secret};
use koban_ledger::TransferId;
use koban_shared::new_id;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use koban_store::{LedgerStore, params};
use rand::RngCore;

use crate::{PayError, Payments, outbound};

/// The events a merchant can subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "payment.succeeded",
    "refund.succeeded",
    "payout.settled",
    "payout.failed",
];

/// Deliveries are retried for this long, then given up.
pub const RETRY_FOR_MS: i64 = 3 * 24 * 3600 * 1000;
/// After a rotation, the old secret still signs for this long.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;
pub const ENDPOINTS_PER_MERCHANT_MAX: i64 = 10;
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker holds the deliveries it took (more than one batch can take).
const CLAIM_MS: i64 = 120_000;

/// Waits between attempts: 5 s, 5 min, 30 min, 2 h, 5 h, then every 10 h until 3 days passed.
fn backoff_ms(attempts: i64) -> i64 {
    const STEPS: [i64; 5] = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000];
    usize::try_from(attempts - 1)
        .ok()
        .and_then(|i| STEPS.get(i).copied())
        .unwrap_or(36_000_000)
}

#[derive(Clone, Debug)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub endpoint_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    /// Why the last attempt got no HTTP answer (an [`outbound::Failure`] code, or
    /// `endpoint_deleted`, `secret_unreadable`); `None` when it got one.
    pub last_error: Option<String>,
    pub next_attempt_at_ms: i64,
    pub created_at_ms: i64,
}

/// Signs `body` as Standard Webhooks does, with each secret (raw key bytes).
pub fn signatures(secrets: &[Vec<u8>], id: &str, timestamp_s: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    secrets
        .iter()
        .filter_map(|key| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
            mac.update(format!("{id}.{timestamp_s}.{body}").as_bytes());
            Some(format!(
                "v1,{}",
                STANDARD.encode(mac.finalize().into_bytes())
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The raw key of a `whsec_` secret.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix("whsec_")?).ok()
}

fn event_types(types: &[String]) -> Result<String, PayError> {
    if types.is_empty() || types.iter().any(|t| !EVENT_TYPES.contains(&t.as_str())) {
        return Err(PayError::Invalid(
            "event_types must name at least one of payment.succeeded, refund.succeeded, payout.settled, payout.failed",
        ));
    }
    let mut sorted = types.to_vec();
    sorted.sort();
    sorted.dedup();
    Ok(sorted.join(" "))
}

fn new_secret() -> Secret<String> {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    Secret::new(format!("whsec_{}", STANDARD.encode(key)))
}

impl<S: LedgerStore> Payments<S> {
    fn require_webhooks(merchant: &MerchantKey) -> Result<(), PayError> {
        if merchant.scopes.contains("webhooks:manage") {
            Ok(())
        } else {
            Err(PayError::Auth(AuthError::Forbidden(
                "this API key lacks the scope this needs",
            )))
        }
    }

    /// Subscribes an endpoint; returns it and its secret (shown this once).
    pub async fn create_webhook(
        &self,
        merchant: &MerchantKey,
        url: &str,
        types: &[String],
    ) -> Result<(Endpoint, Secret<String>), PayError> {
        Self::require_webhooks(merchant)?;
        outbound::parse(url, self.auth.config().dev).map_err(PayError::Invalid)?;
        let types = event_types(types)?;
        let secret = new_secret();
        let sealed = self.auth.keys().seal(secret.expose().as_bytes())?;
        let id = new_id();
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let count = tx
            .query_one(
                "SELECT COUNT(*) FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL",
                params![merchant.merchant_id.as_str()],
            )
            .await?
            .i64(0)?;
        if count >= ENDPOINTS_PER_MERCHANT_MAX {
            return Err(PayError::Conflict(
                "a merchant may have at most 10 webhook endpoints",
            ));
        }
        tx.execute(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, secret, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![
                id.as_str(),
                merchant.merchant_id.as_str(),
                url,
                types.as_str(),
                sealed,
                now
            ],
        )
        .await?;
        tx.commit().await?;
        Ok((
            Endpoint {
                id,
                url: url.to_owned(),
                event_types: types.split(' ').map(str::to_owned).collect(),
                created_at_ms: now,
            },
            secret,
        ))
    }

    pub async fn webhooks(&self, merchant: &MerchantKey) -> Result<Vec<Endpoint>, PayError> {
        Self::require_webhooks(merchant)?;
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT id, url, event_types, created_at FROM webhook_endpoints \
                 WHERE merchant_id = $1 AND deleted_at IS NULL ORDER BY created_at",
                params![merchant.merchant_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| {
                Ok(Endpoint {
                    id: r.text(0)?,
                    url: r.text(1)?,
                    event_types: r.text(2)?.split(' ').map(str::to_owned).collect(),
                    created_at_ms: r.i64(3)?,
                })
            })
            .collect()
    }

    /// A new secret; the old one keeps signing (beside the new) for 24 hours.
    pub async fn rotate_webhook_secret(
        &self,
        merchant: &MerchantKey,
        id: &str,
    ) -> Result<Secret<String>, PayError> {
        Self::require_webhooks(merchant)?;
        let secret = new_secret();
        let sealed = self.auth.keys().seal(secret.expose().as_bytes())?;
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let changed = tx
            .execute(
                "UPDATE webhook_endpoints SET old_secret = secret, old_secret_until = $1, secret = $2 \
                 WHERE id = $3 AND merchant_id = $4 AND deleted_at IS NULL",
                params![now + ROTATION_OVERLAP_MS, sealed, id, merchant.merchant_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        if changed == 0 {
            return Err(PayError::NotFound);
        }
        Ok(secret)
    }

    pub async fn delete_webhook(&self, merchant: &MerchantKey, id: &str) -> Result<(), PayError> {
        Self::require_webhooks(merchant)?;
        let mut tx = self.db().begin().await?;
        let changed = tx
            .execute(
                "UPDATE webhook_endpoints SET deleted_at = $1 WHERE id = $2 AND merchant_id = $3 AND deleted_at IS NULL",
                params![self.now_ms(), id, merchant.merchant_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        if changed == 0 {
            return Err(PayError::NotFound);
        }
        Ok(())
    }

    /// Writes one delivery per subscribed endpoint of `merchant_id`, inside `tx`.
    pub(crate) async fn enqueue_event<T: SqlTx>(
        &self,
        tx: &mut T,
        merchant_id: &str,
        event: TransferId,
        event_type: &str,
        data: serde_json::Value,
    ) -> Result<(), PayError> {
        let now = self.now_ms();
        let endpoints = tx
            .query(
                "SELECT id, event_types FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL",
                params![merchant_id],
            )
            .await?;
        for endpoint in endpoints {
            if !endpoint.text(1)?.split(' ').any(|t| t == event_type) {
                continue;
            }
            // Stable per movement, event and endpoint: written again (a retried request after a
            // crash), the delivery is not duplicated, and receivers deduplicate by this id.
            let id = self.derive_id(&[
                b"webhook",
                &event.to_bytes(),
                event_type.as_bytes(),
                endpoint.text(0)?.as_bytes(),
            ]);
            let id = format!("msg_{}", uuid::Uuid::from_u128(id.get()).simple());
            let payload = serde_json::json!({
                "type": event_type,
                "timestamp": now,
                "data": data,
            })
            .to_string();
            tx.execute(
                "INSERT INTO webhook_deliveries (id, endpoint_id, event_type, payload, status, attempts, \
                 next_attempt_at, created_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) \
                 ON CONFLICT (id) DO NOTHING",
                params![id, endpoint.text(0)?, event_type, payload, now],
            )
            .await?;
        }
        Ok(())
    }

    /// The delivery log of one endpoint, newest first.
    pub async fn webhook_deliveries(
        &self,
        merchant: &MerchantKey,
        endpoint_id: &str,
    ) -> Result<Vec<Delivery>, PayError> {
        Self::require_webhooks(merchant)?;
        let mut tx = self.db().begin_read().await?;
        // Another merchant's endpoint is not found, as any id that is not the caller's.
        tx.query_opt(
            "SELECT 1 FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2",
            params![endpoint_id, merchant.merchant_id.as_str()],
        )
        .await?
        .ok_or(PayError::NotFound)?;
        let rows = tx
            .query(
                "SELECT id, endpoint_id, event_type, status, attempts, last_status_code, \
                 next_attempt_at, created_at, last_error FROM webhook_deliveries \
                 WHERE endpoint_id = $1 ORDER BY created_at DESC, id DESC LIMIT 100",
                params![endpoint_id],
            )
            .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| {
                Ok(Delivery {
                    id: r.text(0)?,
                    endpoint_id: r.text(1)?,
                    event_type: r.text(2)?,
                    status: r.text(3)?,
                    attempts: r.i64(4)?,
                    last_status_code: r.opt_i64(5)?,
                    last_error: r.opt_text(8)?,
                    next_attempt_at_ms: r.i64(6)?,
                    created_at_ms: r.i64(7)?,
                })
            })
            .collect()
    }

    /// Sends a delivery again as soon as the worker runs (whatever its state).
    pub async fn redeliver(
        &self,
        merchant: &MerchantKey,
        delivery_id: &str,
    ) -> Result<(), PayError> {
        Self::require_webhooks(merchant)?;
        let mut tx = self.db().begin().await?;
        let changed = tx
            .execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1 \
                 WHERE id = $2 AND status <> 'pending' \
                 AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE merchant_id = $3 AND deleted_at IS NULL)",
                params![self.now_ms(), delivery_id, merchant.merchant_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        if changed == 0 {
            return Err(PayError::NotFound);
        }
        Ok(())
    }

    /// Posts due deliveries, concurrently; returns how many were attempted.
    pub async fn deliver_webhooks(&self, limit: i64) -> Result<usize, PayError> {
        let now = self.now_ms();
        // Claimed for longer than the whole batch can take, so no other instance sends them
        // meanwhile; the result is written only while the claim still holds.
        let claimed_until = now + CLAIM_MS;
        let mut tx = self.db().begin().await?;
        let due = tx
            .query(
                "UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE id IN \
                 (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $2 \
                  ORDER BY next_attempt_at LIMIT $3) AND status = 'pending' AND next_attempt_at <= $2 \
                 RETURNING id, endpoint_id, payload, attempts, created_at",
                params![claimed_until, now, limit],
            )
            .await?;
        tx.commit().await?;
        let attempts = due.iter().map(|row| self.deliver_one(row, claimed_until));
        let results = futures_util::future::join_all(attempts).await;
        let attempted = results.len();
        for result in results {
            result?;
        }
        Ok(attempted)
    }

    async fn deliver_one(
        &self,
        row: &koban_store::sql::Row,
        claimed_until: i64,
    ) -> Result<(), PayError> {
        let id = row.text(0)?;
        let endpoint_id = row.text(1)?;
        let payload = row.text(2)?;
        let attempts = row.i64(3)? + 1;
        let created_at = row.i64(4)?;
        let mut tx = self.db().begin_read().await?;
        let endpoint = tx
            .query_opt(
                "SELECT url, secret, old_secret, old_secret_until FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL",
                params![endpoint_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        let now = self.now_ms();
        let outcome = match &endpoint {
            None => Err(("endpoint_deleted", "the endpoint was deleted".to_owned())),
            Some(endpoint) => match self.signing_keys(endpoint, now) {
                Ok(keys) => {
                    let timestamp_s = now / 1000;
                    let signature = signatures(&keys, &id, timestamp_s, &payload);
                    let delivery = Attempt {
                        id: &id,
                        timestamp_s,
                        signature: &signature,
                    };
                    self.post(&endpoint.text(0)?, delivery, payload)
                        .await
                        .map_err(|(failure, why)| (failure.code(), why))
                }
                Err(_) => Err((
                    "secret_unreadable",
                    "the endpoint's secret could not be opened".to_owned(),
                )),
            },
        };
        let now = self.now_ms();
        let give_up = endpoint.is_none() || now + backoff_ms(attempts) - created_at > RETRY_FOR_MS;
        let (status, code, next) = match &outcome {
            Ok(code) if (200..300).contains(code) => ("delivered", Some(i64::from(*code)), now),
            Ok(code) if give_up => ("failed", Some(i64::from(*code)), now),
            Ok(code) => (
                "pending",
                Some(i64::from(*code)),
                now + backoff_ms(attempts),
            ),
            Err(_) if give_up => ("failed", None, now),
            Err(_) => ("pending", None, now + backoff_ms(attempts)),
        };
        if let Err((failure, error)) = &outcome {
            tracing::info!(delivery = %id, failure, %error, "webhook delivery failed");
        }
        let last_error = outcome.as_ref().err().map(|(failure, _)| *failure);
        metrics::counter!("koban_webhook_attempts_total", "outcome" => match status {
            "delivered" => "delivered",
            "failed" => "given_up",
            _ => "failed",
        })
        .increment(1);
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE webhook_deliveries SET status = $1, attempts = $2, last_status_code = $3, next_attempt_at = $4, \
             last_error = $5 WHERE id = $6 AND next_attempt_at = $7",
            params![status, attempts, code, next, last_error, id.as_str(), claimed_until],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The raw keys that sign now: the current secret, and the old one during its overlap.
    fn signing_keys(
        &self,
        endpoint: &koban_store::sql::Row,
        now: i64,
    ) -> Result<Vec<Vec<u8>>, PayError> {
        let mut keys = Vec::new();
        for (column, until) in [(1, None), (2, endpoint.opt_i64(3)?)] {
            let Some(sealed) = endpoint.opt_bytes(column)? else {
                continue;
            };
            if until.is_some_and(|until| until <= now) {
                continue;
            }
            let opened = self.auth.keys().open(&sealed)?;
            if let Some(key) = std::str::from_utf8(opened.expose())
                .ok()
                .and_then(secret_key)
            {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}

/// The Standard Webhooks headers of one attempt.
struct Attempt<'a> {
    id: &'a str,
    timestamp_s: i64,
    signature: &'a str,
}

impl<S: LedgerStore> Payments<S> {
    /// One POST to a checked address; the status code, or why there was none.
    async fn post(
        &self,
        url: &str,
        delivery: Attempt<'_>,
        body: String,
    ) -> Result<u16, outbound::Failed> {
        let dev = self.auth.config().dev;
        let tls = self
            .webhook_tls()
            .map_err(|why| (outbound::Failure::Tls, why))?;
        let attempt = async {
            let target = outbound::parse(url, dev)
                .map_err(|why| (outbound::Failure::Refused, why.to_owned()))?;
            let addrs = outbound::resolve(&target, dev).await?;
            let request = hyper::Request::post(target.path.as_str())
                .header("host", target.authority())
                .header("content-type", "application/json")
                .header("user-agent", "Koban-Webhooks/1")
                .header("webhook-id", delivery.id)
                .header("webhook-timestamp", delivery.timestamp_s.to_string())
                .header("webhook-signature", delivery.signature)
                .body(Full::new(Bytes::from(body)))
                .map_err(|_| {
                    (
                        outbound::Failure::Refused,
                        "the request could not be built".to_owned(),
                    )
                })?;
            match outbound::connect(&target, &addrs, &tls).await? {
                outbound::Stream::Plain(stream) => exchange(stream, request).await,
                outbound::Stream::Tls(stream) => exchange(stream, request).await,
            }
        };
        tokio::time::timeout(TIMEOUT, attempt)
            .await
            .map_err(|_| (outbound::Failure::TimedOut, "timed out".to_owned()))?
    }

    /// The TLS settings for endpoints, built on first use.
    fn webhook_tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.webhook_tls
            .get_or_init(|| {
                outbound::tls_config(self.config.tls_ca_pem.as_deref())
                    .map(Arc::new)
                    .map_err(|e| format!("webhook TLS settings: {e}"))
            })
            .clone()
    }
}

/// Sends `request` over `io` and returns the status code. The body is not read: a receiver
/// could send any amount of it; redirects are not followed.
async fn exchange<IO>(io: IO, request: hyper::Request<Full<Bytes>>) -> Result<u16, outbound::Failed>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let none = |why: &str| (outbound::Failure::NoResponse, why.to_owned());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| none("no HTTP handshake"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|_| none("no HTTP response"))?;
    Ok(response.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example from the Standard Webhooks specification.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signatures(&[key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn retries_back_off_and_stop_after_three_days() {
        assert_eq!(backoff_ms(1), 5_000);
        assert_eq!(backoff_ms(5), 18_000_000);
        assert_eq!(backoff_ms(9), 36_000_000);
        let total: i64 = (1..=12).map(backoff_ms).sum();
        assert!(total > RETRY_FOR_MS, "the schedule reaches three days");
    }
}
