//! Retention: what Koban keeps about people is kept only as long as it is needed, and a job
//! (`koban serve`'s workers, hourly, one instance at a time) deletes the rest.
//!
//! - Risk decisions, with the device and network they name and the features behind them:
//!   [`Retention::risk_events_days`] (13 months by default, long enough to compare a year
//!   with the one before), then counted per month, kind, action and currency in
//!   `risk_event_months` and deleted. The decisions of an open case's subject, and those its
//!   alerts point to, stay until the case closes.
//! - Sessions (with their network and browser): [`Retention::sessions_days`] after they
//!   ended.
//! - Notices: [`Retention::notices_days`] after they were delivered or given up (their
//!   bodies are emptied at delivery already).
//! - Throttling counters, the card-testing guard, link tokens and WebAuthn ceremonies: a day
//!   after they stopped mattering (their windows are at most hours).
//! - A closed account's personal data: [`Retention::closed_accounts_days`] after it closed
//!   (7 years by default: Japan's Act on Prevention of Transfer of Criminal Proceeds keeps
//!   verification and transaction records that long after a relationship ends), then erased
//!   ([`Payments::erase_closed_accounts`]): contact details, names, factors, sessions,
//!   devices, notices, funding sources' holders, card numbers and its risk decisions go; the
//!   account's id stays, so the books still balance under it.
//!
//! The ledger and the audit chain are never touched: they are the books, and the audit log
//! holds ids, not contact details.

use std::collections::BTreeMap;

use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use koban_store::{LedgerStore, params};

use koban_shared::personal;

use crate::{PayError, Payments};

const DAY_MS: i64 = 86_400_000;
/// Decisions deleted per transaction, so the job never holds the database for long.
const BATCH: i64 = 500;

/// How long personal data is kept (days).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    pub risk_events_days: i64,
    pub sessions_days: i64,
    pub notices_days: i64,
    pub closed_accounts_days: i64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            risk_events_days: 395,
            sessions_days: 90,
            notices_days: 30,
            closed_accounts_days: 7 * 365 + 2,
        }
    }
}

/// What one run of the retention job deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub risk_events: u64,
    pub sessions: u64,
    pub notices: u64,
    pub other: u64,
    /// Closed accounts whose personal data was erased.
    pub erased_accounts: u64,
}

/// `YYYY-MM` of a time in milliseconds (UTC).
fn month_of(at_ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(at_ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}", at.year(), u8::from(at.month()))
}

impl<S: LedgerStore> Payments<S> {
    /// Deletes what the retention windows say is no longer kept; answers what it deleted.
    pub async fn enforce_retention(&self) -> Result<Pruned, PayError> {
        let now = self.now_ms();
        let retention = &self.config.retention;
        let mut pruned = Pruned {
            risk_events: self
                .fold_risk_events(now - retention.risk_events_days * DAY_MS)
                .await?,
            erased_accounts: self
                .erase_closed_accounts(now - retention.closed_accounts_days * DAY_MS)
                .await?,
            ..Pruned::default()
        };
        // The large tables in batches, a transaction each, so a first run after years of
        // data never holds the database's writer for long.
        let ended = now - retention.sessions_days * DAY_MS;
        pruned.sessions = self
            .delete_in_batches(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE expires_at < $1 \
                 OR (revoked_at IS NOT NULL AND revoked_at < $1) LIMIT $2)",
                params![ended, BATCH],
            )
            .await?;
        let notices = now - retention.notices_days * DAY_MS;
        pruned.notices = self
            .delete_in_batches(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE (delivered_at IS NOT NULL AND delivered_at < $1) \
                 OR (delivered_at IS NULL AND attempts >= $2 AND created_at < $1) LIMIT $3)",
                params![notices, koban_auth::outbox::ATTEMPTS_MAX, BATCH],
            )
            .await?;
        pruned.notices += self
            .delete_in_batches(
                "DELETE FROM mailbox WHERE id IN (SELECT id FROM mailbox WHERE delivered_at < $1 LIMIT $2)",
                params![notices, BATCH],
            )
            .await?;
        let mut tx = self.db().begin().await?;
        let day_ago = now - DAY_MS;
        for sql in [
            "DELETE FROM throttle WHERE updated_at < $1 AND blocked_until < $1",
            "DELETE FROM link_tokens WHERE expires_at < $1",
            "DELETE FROM webauthn_ceremonies WHERE created_at < $1",
            "DELETE FROM card_testing_failures WHERE failed_at < $1",
            "DELETE FROM card_testing_blocks WHERE blocked_until < $1",
        ] {
            pruned.other += tx.execute(sql, params![day_ago]).await?;
        }
        tx.commit().await?;
        Ok(pruned)
    }

    /// Runs `sql` (a `DELETE` of at most [`BATCH`] rows) again and again, a transaction each,
    /// until it deletes fewer; answers how many rows went.
    async fn delete_in_batches(
        &self,
        sql: &'static str,
        values: Vec<koban_store::sql::Value>,
    ) -> Result<u64, PayError> {
        let mut deleted = 0;
        loop {
            let mut tx = self.db().begin().await?;
            let gone = tx.execute(sql, values.clone()).await?;
            tx.commit().await?;
            deleted += gone;
            if gone < BATCH.unsigned_abs() {
                return Ok(deleted);
            }
        }
    }

    /// Erases the personal data of every account closed before `closed_before`, one account
    /// per transaction; answers how many. The account's row stays with its id and status
    /// `erased` (the ledger's wallets still name it), its address replaced by a sealed
    /// placeholder nobody can sign in with or find.
    pub async fn erase_closed_accounts(&self, closed_before: i64) -> Result<u64, PayError> {
        let due = self
            .db()
            .read(
                "SELECT id FROM users WHERE status = 'closed' AND closed_at < $1 ORDER BY closed_at LIMIT 100",
                params![closed_before],
            )
            .await?;
        let vault = self.auth.vault();
        let mut erased = 0;
        for row in due {
            let id = row.text(0)?;
            if !self.wallets_closed_and_empty(&id).await? {
                // Closing closes the wallets in the ledger first, so this is an account
                // closed another way: its money must be returned before anything is erased.
                tracing::error!(user = %id, "a closed account still has an open or non-empty wallet; not erased");
                continue;
            }
            let now = self.now_ms();
            let mut tx = self.db().begin().await?;
            let address = tx
                .query_opt(
                    "SELECT email_index FROM users WHERE id = $1 AND status = 'closed'",
                    params![id.as_str()],
                )
                .await?
                .map(|row| row.opt_bytes(0))
                .transpose()?;
            let Some(address) = address else {
                continue;
            };
            tx.execute(
                "UPDATE users SET email = $1, email_index = NULL, phone = NULL, phone_index = NULL, \
                 display_name = $2, legal_name = NULL, date_of_birth = NULL, password_hash = NULL, \
                 status = 'erased' WHERE id = $3",
                params![
                    vault.seal(
                        &personal::USER_EMAIL,
                        &format!("erased-{id}@erased.invalid")
                    ),
                    vault.seal(&personal::USER_DISPLAY_NAME, "(erased)"),
                    id.as_str()
                ],
            )
            .await?;
            if let Some(address) = address {
                // Notices to its address, found by the address's blind index.
                tx.execute(
                    "DELETE FROM outbox WHERE recipient_index = $1",
                    params![address.clone()],
                )
                .await?;
                tx.execute(
                    "DELETE FROM mailbox WHERE recipient_index = $1",
                    params![address],
                )
                .await?;
            }
            tx.execute(
                "UPDATE kyc SET legal_name = $1 WHERE user_id = $2",
                params![vault.seal(&personal::KYC_LEGAL_NAME, ""), id.as_str()],
            )
            .await?;
            tx.execute(
                "UPDATE bank_instructions SET holder_name = $1, account = 'erased' WHERE \
                 source_id IN (SELECT id FROM funding_sources WHERE user_id = $2) OR \
                 operation_id IN (SELECT id FROM bank_operations WHERE user_id = $2)",
                params![vault.seal(&personal::INSTRUCTION_HOLDER, ""), id.as_str()],
            )
            .await?;
            tx.execute(
                "UPDATE funding_sources SET holder_name = $1, number = 'erased' WHERE user_id = $2",
                params![vault.seal(&personal::FUNDING_HOLDER, ""), id.as_str()],
            )
            .await?;
            tx.execute(
                "UPDATE sandbox_bank_accounts SET holder_name = $1 WHERE owner_id = $2",
                params![vault.seal(&personal::SANDBOX_HOLDER, ""), id.as_str()],
            )
            .await?;
            // The card numbers go, and their fingerprints (with the BIN and last four digits,
            // a keyed hash of a number could be matched by trying every number).
            let cards = tx
                .query(
                    "SELECT id FROM issued_cards WHERE user_id = $1",
                    params![id.as_str()],
                )
                .await?;
            for card in cards {
                let mut fingerprint = vec![0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut fingerprint);
                tx.execute(
                    "UPDATE issued_cards SET pan_sealed = $1, key_id = 'erased', fingerprint = $2, name = '', \
                     activation_hash = NULL WHERE id = $3",
                    params![Vec::<u8>::new(), fingerprint, card.text(0)?],
                )
                .await?;
            }
            for sql in [
                "DELETE FROM factors WHERE user_id = $1",
                "DELETE FROM recovery_codes WHERE user_id = $1",
                "DELETE FROM known_devices WHERE user_id = $1",
                "DELETE FROM sessions WHERE user_id = $1",
                "DELETE FROM webauthn_ceremonies WHERE user_id = $1",
                "DELETE FROM one_time_codes WHERE user_id = $1",
                "DELETE FROM step_ups WHERE user_id = $1",
                "DELETE FROM link_tokens WHERE user_id = $1",
                "DELETE FROM card_sources WHERE user_id = $1",
                "DELETE FROM payment_codes WHERE user_id = $1",
                "DELETE FROM handles WHERE user_id = $1",
                // Its decisions, but those an open case points to (the case's evidence).
                "DELETE FROM risk_events WHERE customer = $1 AND NOT EXISTS (SELECT 1 FROM risk_alerts a \
                 JOIN risk_cases c ON c.id = a.case_id WHERE a.event_id = risk_events.id AND c.status = 'open')",
            ] {
                tx.execute(sql, params![id.as_str()]).await?;
            }
            koban_shared::audit::append(
                &mut tx,
                self.auth.audit_key(),
                now,
                koban_shared::audit::AuditEvent {
                    actor: "retention",
                    action: "account.erased",
                    subject: &format!("user:{id}"),
                    details: serde_json::json!({}),
                },
            )
            .await?;
            tx.commit().await?;
            erased += 1;
        }
        Ok(erased)
    }

    /// Counts the risk decisions made before `before` into `risk_event_months` and deletes
    /// them, a batch per transaction; those an open case's alerts point to stay.
    async fn fold_risk_events(&self, before: i64) -> Result<u64, PayError> {
        let mut deleted = 0;
        loop {
            let mut tx = self.db().begin().await?;
            let rows = tx
                .query(
                    "SELECT e.id, e.at, e.kind, e.action, e.currency, e.amount FROM risk_events e \
                     WHERE e.at < $1 AND NOT EXISTS (SELECT 1 FROM risk_alerts a \
                     JOIN risk_cases c ON c.id = a.case_id WHERE a.event_id = e.id AND c.status = 'open') \
                     AND NOT EXISTS (SELECT 1 FROM risk_cases c WHERE c.status = 'open' \
                     AND (c.subject = e.customer OR c.subject = e.payee)) \
                     ORDER BY e.at LIMIT $2",
                    params![before, BATCH],
                )
                .await?;
            let mut months: BTreeMap<(String, String, String, String), (i64, i64)> =
                BTreeMap::new();
            for row in &rows {
                // Counted only when this run deleted it: two runs at once count it once.
                let gone = tx
                    .execute(
                        "DELETE FROM risk_events WHERE id = $1",
                        params![row.text(0)?],
                    )
                    .await?;
                if gone == 0 {
                    continue;
                }
                let key = (
                    month_of(row.i64(1)?),
                    row.text(2)?,
                    row.text(3)?,
                    row.text(4)?,
                );
                let entry = months.entry(key).or_default();
                entry.0 += 1;
                entry.1 = entry.1.saturating_add(row.i64(5)?);
                deleted += 1;
            }
            for ((month, kind, action, currency), (events, amount)) in months {
                tx.execute(
                    "INSERT INTO risk_event_months (month, kind, action, currency, events, amount) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (month, kind, action, currency) \
                     DO UPDATE SET events = risk_event_months.events + excluded.events, \
                     amount = risk_event_months.amount + excluded.amount",
                    params![month, kind, action, currency, events, amount],
                )
                .await?;
            }
            tx.commit().await?;
            if (rows.len() as i64) < BATCH {
                return Ok(deleted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_of(0), "1970-01");
        // 2026-12-31T23:59:59.999Z and the next millisecond.
        assert_eq!(month_of(1_798_761_599_999), "2026-12");
        assert_eq!(month_of(1_798_761_600_000), "2027-01");
    }
}
