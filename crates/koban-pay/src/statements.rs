//! The ISO 20022 file bank's two directions (see `connectors.rs`): the `pain.001` files that
//! carry queued payouts and micro-deposits to the bank, and the import of the bank's
//! `camt.053`/`camt.054` files, whose lines settle top-ups and payouts.
//!
//! Matching a statement line:
//! - a booked **debit** whose end-to-end id is a pending payout's reference, for its amount and
//!   currency, settles the payout (its hold posts); one that is a micro-deposit's is matched;
//! - a booked **credit** that quotes a pending top-up's reference (end-to-end id, remittance
//!   text or the sender's name; the check digit must hold), for its amount and currency, from
//!   the customer's linked account (or, when the line shows no account, a sender named as its
//!   holder), settles the top-up; a line that does not show the payer waits for an operator
//!   (`payer_unknown`), who may settle the top-up from it after checking;
//! - a booked **return** (a credit marked as reversal or with return information) of a pending
//!   payout fails it (its hold is voided, the money is back in the wallet); of a micro-deposit,
//!   fails the link;
//! - every other booked line is **unmatched**, with its reason, for an operator to resolve.
//!
//! A line is written before anything is settled from it, keyed by a digest of its account,
//! booking day, direction, money and the bank's reference, so the same movement in a
//! `camt.054` and the day's `camt.053` is one line, and two imports of one file settle each
//! line once. A line a crash left half-done (`settling`) is settled again by the next import
//! of its file, which changes nothing twice. Lines that are not booked (`PDNG`, `INFO`) are
//! skipped.

use koban_auth::{Principal, Role};
use koban_ledger::TransferId;
use koban_shared::audit::{self, AuditEvent};
use koban_shared::personal::{self, Vault};
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use koban_store::{LedgerStore, params};

use crate::connectors::FILE_BANK;
use crate::iso20022::{self, CreditTransfer, Direction, PaymentFile, StatementLine, ZenginAccount};
use crate::{PayError, Payments};

/// Transfers per `pain.001` file at most.
pub const FILE_TRANSFERS_MAX: i64 = 1000;
/// How long a queued transfer waits for others to share its file.
pub const BATCH_WAIT_S: i64 = 60;

/// Writes `name` in `dir` under a temporary name, syncs it, renames it, and syncs the folder.
fn write_atomically(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = dir.join(format!(".{name}.part"));
    // Names and account numbers: readable by Koban's user alone (the bank channel runs as it
    // or is given the files by the operator).
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub message_id: String,
    /// Lines read from the file.
    pub lines: usize,
    /// Lines imported before (skipped), and lines not booked (skipped).
    pub already_imported: usize,
    pub not_booked: usize,
    pub settled: usize,
    pub failed: usize,
    pub matched: usize,
    pub unmatched: usize,
}

/// A statement line as kept.
#[derive(Clone, Debug)]
pub struct KeptLine {
    pub id: String,
    /// The bank's own reference for the line.
    pub bank_reference: Option<String>,
    pub message_id: String,
    pub direction: String,
    pub reversal: bool,
    pub amount: i64,
    pub currency: String,
    pub booked_on: Option<String>,
    pub reference: Option<String>,
    pub counterparty: Option<String>,
    pub state: String,
    pub reason: Option<String>,
    pub operation_id: Option<TransferId>,
    pub note: Option<String>,
    pub imported_at_ms: i64,
}

/// A `pain.001` file made for the bank.
#[derive(Clone, Debug)]
pub struct BankFile {
    pub id: String,
    pub content: String,
    pub transactions: i64,
    pub created_at_ms: i64,
    pub written_at_ms: Option<i64>,
}

/// The outcome of matching one line: what to do, and what it names.
struct Match {
    /// `settle` or `fail` an operation, `fail_link` (a returned micro-deposit), `matched`
    /// (nothing to do: a micro-deposit booked), or `unmatched`.
    state: &'static str,
    reason: Option<&'static str>,
    operation: Option<TransferId>,
    /// The funding source a returned micro-deposit was for.
    source: Option<String>,
    /// The reference the match used.
    reference: Option<String>,
}

impl Match {
    fn unmatched(reason: &'static str, reference: Option<String>) -> Match {
        Match {
            state: "unmatched",
            reason: Some(reason),
            operation: None,
            source: None,
            reference,
        }
    }

    fn of(state: &'static str, operation: Option<TransferId>, reference: String) -> Match {
        Match {
            state,
            reason: None,
            operation,
            source: None,
            reference: Some(reference),
        }
    }
}

/// The top-up reference a credit quotes: `KB` and ten digits, in its end-to-end id, its
/// remittance text or its sender's name (where Japanese transfers carry it, before the
/// name); spaces and case do not matter.
fn quoted_reference(line: &StatementLine) -> Option<String> {
    let squeeze = |text: &str| text.to_ascii_uppercase().replace([' ', '\u{3000}'], "");
    let mut texts = vec![squeeze(&line.remittance)];
    if let Some(id) = &line.end_to_end_id {
        texts.insert(0, squeeze(id));
    }
    if let Some(name) = &line.counterparty {
        texts.push(squeeze(name));
    }
    for text in texts {
        let bytes = text.as_bytes();
        for start in 0..bytes.len().saturating_sub(11) {
            let candidate = &bytes[start..start + 12];
            let text = String::from_utf8_lossy(candidate);
            let after_is_digit = bytes.get(start + 12).is_some_and(u8::is_ascii_digit);
            if crate::bank::reference_valid(&text) && !after_is_digit {
                return Some(text.into_owned());
            }
        }
    }
    None
}

fn kept_from(vault: &Vault, row: &koban_store::sql::Row) -> Result<KeptLine, PayError> {
    Ok(KeptLine {
        id: row.text(0)?,
        message_id: row.text(1)?,
        direction: row.text(2)?,
        reversal: row.i64(3)? != 0,
        amount: row.i64(4)?,
        currency: row.text(5)?,
        booked_on: row.opt_text(6)?,
        reference: row.opt_text(7)?,
        counterparty: vault.open_opt(
            &personal::STATEMENT_COUNTERPARTY,
            row.opt_text(8)?.as_deref(),
        )?,
        state: row.text(9)?,
        reason: row.opt_text(10)?,
        operation_id: row
            .opt_bytes(11)?
            .and_then(|b| TransferId::from_bytes(&b).ok()),
        note: row.opt_text(12)?,
        imported_at_ms: row.i64(13)?,
        bank_reference: row.opt_text(14)?,
    })
}

/// The columns [`kept_from`] reads, in a `SELECT` of statement lines, then `$rest`.
macro_rules! select_lines {
    ($rest:literal) => {
        concat!(
            "SELECT id, message_id, direction, reversal, amount, currency, booked_on, reference, ",
            "counterparty, state, reason, operation_id, note, imported_at, bank_reference ",
            "FROM bank_statement_lines",
            $rest
        )
    };
}

impl<S: LedgerStore> Payments<S> {
    fn file_bank(&self) -> Result<&crate::connectors::FileBank, PayError> {
        self.config.file_bank.as_ref().ok_or(PayError::Invalid(
            "no ISO 20022 bank is connected (serve with --bank-account)",
        ))
    }

    /// Puts every queued credit transfer (payouts, micro-deposits) into a new `pain.001` file,
    /// kept in the database; answers the file, or `None` when nothing waits. One currency
    /// per file: another currency waits for the next call.
    pub async fn make_payment_file(&self) -> Result<Option<BankFile>, PayError> {
        let Some(bank) = self.config.file_bank.as_ref() else {
            return Ok(None);
        };
        let now = self.now_ms();
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT i.end_to_end_id, i.account, i.holder_name, i.amount, i.currency, i.kind, i.operation_id, o.status \
                 FROM bank_instructions i LEFT JOIN bank_operations o ON o.id = i.operation_id \
                 WHERE i.file_id IS NULL ORDER BY i.created_at, i.end_to_end_id LIMIT $1",
                params![FILE_TRANSFERS_MAX],
            )
            .await?;
        tx.commit().await?;
        // A payout goes out only once its hold is in the ledger and it is still pending: one
        // whose hold was refused (no funds) or never written (a crash) is dropped, never paid.
        let mut dropped = Vec::new();
        let mut ready = Vec::new();
        for row in rows {
            if row.text(5)? == "payout" {
                let id = row
                    .opt_bytes(6)?
                    .and_then(|b| TransferId::from_bytes(&b).ok());
                match (id, row.opt_text(7)?.as_deref()) {
                    (Some(id), Some("pending")) => {
                        if self.store.transfer(id).await?.is_none() {
                            continue;
                        }
                    }
                    _ => {
                        dropped.push(row.text(0)?);
                        continue;
                    }
                }
            }
            ready.push(row);
        }
        let mut tx = self.db().begin().await?;
        for end_to_end_id in &dropped {
            tx.execute(
                "DELETE FROM bank_instructions WHERE end_to_end_id = $1 AND file_id IS NULL",
                params![end_to_end_id.as_str()],
            )
            .await?;
        }
        let Some(first) = ready.first() else {
            tx.commit().await?;
            return Ok(None);
        };
        let currency_code = first.text(4)?;
        let currency = koban_ledger::Currency::parse(&currency_code)
            .map_err(|_| PayError::Invalid("a stored currency is not valid"))?;
        let mut transfers = Vec::new();
        for row in ready
            .iter()
            .filter(|r| r.text(4).is_ok_and(|c| c == currency_code))
        {
            let kind = row.text(5)?;
            transfers.push(CreditTransfer {
                end_to_end_id: row.text(0)?,
                creditor: ZenginAccount::parse(&row.text(1)?)?,
                creditor_name: (self.auth.vault())
                    .open(&personal::INSTRUCTION_HOLDER, &row.text(2)?)?,
                amount_minor: u64::try_from(row.i64(3)?)
                    .map_err(|_| PayError::Invalid("a stored amount is not valid"))?,
                currency,
                remittance: if kind == "micro_deposit" {
                    "KOBAN VERIFY".to_owned()
                } else {
                    "KOBAN PAYOUT".to_owned()
                },
            });
        }
        // Japan's banks work in Japan's time: the day asked for is the day in Tokyo.
        let at = time::OffsetDateTime::from_unix_timestamp(now / 1000)
            .map_err(|_| PayError::Invalid("the clock is out of range"))?
            .to_offset(
                time::UtcOffset::from_hms(9, 0, 0)
                    .map_err(|_| PayError::Invalid("Japan's offset is valid"))?,
            );
        let message_id = format!(
            "KOBAN-{:04}{:02}{:02}-{}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            &uuid::Uuid::now_v7().simple().to_string()[..16]
        );
        let file = PaymentFile {
            message_id: message_id.clone(),
            created_at: format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+09:00",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            ),
            execution_date: format!(
                "{:04}-{:02}-{:02}",
                at.year(),
                u8::from(at.month()),
                at.day()
            ),
            debtor_name: bank.name.clone(),
            debtor: bank.account.clone(),
            transfers,
        };
        let content = iso20022::write_pain001(&file)?;
        let count = file.transfers.len() as i64;
        for transfer in &file.transfers {
            let taken = tx
                .execute(
                    "UPDATE bank_instructions SET file_id = $1 WHERE end_to_end_id = $2 AND file_id IS NULL",
                    params![message_id.as_str(), transfer.end_to_end_id.as_str()],
                )
                .await?;
            if taken != 1 {
                // Another instance filed it meanwhile (a lease changing hands): this file is
                // dropped whole (the transaction rolls back), so nothing is paid twice.
                return Err(PayError::Conflict(
                    "a queued transfer was filed by another instance",
                ));
            }
        }
        tx.execute(
            "INSERT INTO bank_files (id, content, transactions, created_at) VALUES ($1, $2, $3, $4)",
            params![
                message_id.as_str(),
                self.auth.vault().seal(&personal::BANK_FILE_CONTENT, &content),
                count,
                now
            ],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(file = %message_id, transfers = count, "a pain.001 file was made for the bank");
        Ok(Some(BankFile {
            id: message_id,
            content,
            transactions: count,
            created_at_ms: now,
            written_at_ms: None,
        }))
    }

    /// The file bank's regular work (the instance holding the settlement lease): once the
    /// oldest queued transfer has waited [`BATCH_WAIT_S`], every queued transfer goes into
    /// `pain.001` files; files not yet in the outbox folder are written there (to a temporary
    /// name, synced, then renamed, so the bank channel never picks up half a file). Answers
    /// how many files it wrote.
    pub async fn send_payment_files(&self) -> Result<usize, PayError> {
        let Some(bank) = self.config.file_bank.as_ref() else {
            return Ok(0);
        };
        let now = self.now_ms();
        let mut tx = self.db().begin_read().await?;
        let oldest = tx
            .query_one(
                "SELECT MIN(created_at) FROM bank_instructions WHERE file_id IS NULL",
                vec![],
            )
            .await?
            .opt_i64(0)?;
        tx.commit().await?;
        // A file that cannot be made does not keep those made already from the outbox.
        let mut made = Ok(());
        if oldest.is_some_and(|at| at <= now - BATCH_WAIT_S * 1000) {
            for _ in 0..10 {
                match self.make_payment_file().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(error) => {
                        tracing::error!(%error, "a pain.001 file could not be made; will retry");
                        made = Err(error);
                        break;
                    }
                }
            }
        }
        let Some(dir) = &bank.outbox else {
            return made.map(|_| 0);
        };
        // Written, then noted: a crash between the two writes the same file (the same message
        // id) again, which banks refuse as a duplicate message.
        let mut written = 0;
        for file in self.bank_files(true).await? {
            write_atomically(dir, &format!("{}.xml", file.id), file.content.as_bytes())
                .map_err(|error| {
                    tracing::error!(file = %file.id, %error, "a pain.001 file could not be written to the bank outbox");
                    PayError::Invalid("a pain.001 file could not be written to the bank outbox")
                })?;
            self.bank_file_written(&file.id).await?;
            written += 1;
        }
        made.map(|_| written)
    }

    /// The `pain.001` files made, newest first (`unwritten`: only those not yet written to the
    /// outbox folder, oldest first).
    pub async fn bank_files(&self, unwritten: bool) -> Result<Vec<BankFile>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let rows = if unwritten {
            tx.query(
                "SELECT id, content, transactions, created_at, written_at FROM bank_files \
                 WHERE written_at IS NULL ORDER BY created_at LIMIT 100",
                vec![],
            )
            .await?
        } else {
            tx.query(
                "SELECT id, content, transactions, created_at, written_at FROM bank_files \
                 ORDER BY created_at DESC LIMIT 100",
                vec![],
            )
            .await?
        };
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(BankFile {
                    id: r.text(0)?,
                    content: (self.auth.vault()).open(&personal::BANK_FILE_CONTENT, &r.text(1)?)?,
                    transactions: r.i64(2)?,
                    created_at_ms: r.i64(3)?,
                    written_at_ms: r.opt_i64(4)?,
                })
            })
            .collect()
    }

    /// Notes that a file reached the outbox folder.
    pub async fn bank_file_written(&self, id: &str) -> Result<(), PayError> {
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE bank_files SET written_at = $1 WHERE id = $2 AND written_at IS NULL",
            params![self.now_ms(), id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The `pain.001` files (operators: admin, approver).
    pub async fn bank_files_for(&self, principal: &Principal) -> Result<Vec<BankFile>, PayError> {
        principal.operator(&[Role::Admin, Role::Approver])?;
        self.bank_files(false).await
    }

    /// One `pain.001` file (operators: admin, approver).
    pub async fn bank_file(&self, principal: &Principal, id: &str) -> Result<BankFile, PayError> {
        principal.operator(&[Role::Admin, Role::Approver])?;
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT id, content, transactions, created_at, written_at FROM bank_files WHERE id = $1",
                params![id],
            )
            .await?
            .ok_or(PayError::NotFound)?;
        tx.commit().await?;
        Ok(BankFile {
            id: row.text(0)?,
            content: (self.auth.vault()).open(&personal::BANK_FILE_CONTENT, &row.text(1)?)?,
            transactions: row.i64(2)?,
            created_at_ms: row.i64(3)?,
            written_at_ms: row.opt_i64(4)?,
        })
    }

    /// Imports a `camt.053` statement or `camt.054` notification of the file bank (operators:
    /// admin): settles what its lines match and keeps the rest for an operator. Importing the
    /// same file again changes nothing.
    pub async fn import_statement(
        &self,
        principal: &Principal,
        file: &str,
    ) -> Result<ImportSummary, PayError> {
        principal.operator(&[Role::Admin])?;
        let bank = self.file_bank()?;
        let statement = <crate::connectors::FileBank as crate::connectors::BankConnector<
            crate::Tx<S>,
        >>::read_statement(bank, file)?;
        let mut summary = ImportSummary {
            message_id: statement.message_id.clone(),
            lines: statement.lines.len(),
            ..ImportSummary::default()
        };
        for line in &statement.lines {
            if line.status != "BOOK" {
                summary.not_booked += 1;
                continue;
            }
            // The line is written first: whoever writes it settles it, and a line another
            // import is settling (or a crash left mid-way) is settled again, which changes
            // nothing twice.
            if !self.claim_line(line, &statement.message_id).await? {
                summary.already_imported += 1;
                continue;
            }
            let found = self.match_line(line).await?;
            // The operation is noted on the line before anything is done, so a line that
            // settled it (before a crash, or in a concurrent import) is known as the one that did.
            let outcome = if line.reversal { "failed" } else { "settled" };
            let (state, reason) = if let Some(operation) = found.operation
                && self.note_operation(line, operation).await?
                && matches!(found.reason, Some("duplicate" | "already_finished"))
                && self.operation_status(operation).await?.as_deref() == Some(outcome)
            {
                // Noted by an earlier try of this very line, which settled it.
                summary.matched += 1;
                ("matched", None)
            } else {
                self.act_on(&found, &mut summary).await?
            };
            if state == "unmatched" {
                summary.unmatched += 1;
            }
            self.finish_line(line, state, reason, &found).await?;
        }
        summary.matched += summary.settled + summary.failed;
        let mut tx = self.db().begin().await?;
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            self.now_ms(),
            AuditEvent {
                actor: &principal.actor(),
                action: "bank.statement_imported",
                subject: &statement.message_id,
                details: serde_json::json!({
                    "kind": statement.kind, "lines": summary.lines,
                    "settled": summary.settled, "failed": summary.failed,
                    "unmatched": summary.unmatched, "already_imported": summary.already_imported,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        if summary.unmatched > 0 {
            tracing::warn!(
                file = %statement.message_id,
                unmatched = summary.unmatched,
                "bank statement lines match nothing: an operator must resolve them"
            );
        }
        metrics::counter!("koban_bank_statement_lines_total", "outcome" => "unmatched")
            .increment(summary.unmatched as u64);
        metrics::counter!("koban_bank_statement_lines_total", "outcome" => "matched")
            .increment(summary.matched as u64);
        Ok(summary)
    }

    /// Does what a match says; answers the line's state and reason.
    async fn act_on(
        &self,
        found: &Match,
        summary: &mut ImportSummary,
    ) -> Result<(&'static str, Option<&'static str>), PayError> {
        let now = self.now_ms();
        Ok(match (found.state, found.operation) {
            (finish @ ("settle" | "fail"), Some(id)) => {
                let outcome = match self.due_operation(id).await? {
                    Some(operation) => {
                        // A refusal of the ledger (the hold finished meanwhile) leaves the
                        // line for an operator; it never stops the import.
                        match self
                            .settle_operation(&operation, finish == "settle", now)
                            .await
                        {
                            Ok(outcome) => outcome,
                            Err(error @ PayError::Auth(koban_auth::AuthError::Store(_))) => {
                                return Err(error);
                            }
                            Err(error) => {
                                tracing::warn!(%error, "a statement line could not settle its operation");
                                None
                            }
                        }
                    }
                    None => None,
                };
                match outcome {
                    Some("settled") if finish == "settle" => {
                        summary.settled += 1;
                        ("matched", None)
                    }
                    Some("failed") if finish == "fail" => {
                        summary.failed += 1;
                        ("matched", None)
                    }
                    // The hold had released itself, or the operation finished meanwhile: the
                    // money moved at the bank only.
                    _ => ("unmatched", Some("already_finished")),
                }
            }
            ("fail_link", _) => {
                if let Some(source) = &found.source {
                    self.fail_link(source).await?;
                }
                summary.matched += 1;
                ("matched", None)
            }
            ("matched", _) => {
                summary.matched += 1;
                ("matched", None)
            }
            _ => ("unmatched", found.reason),
        })
    }

    /// A link whose micro-deposit the bank returned (the account is not the customer's, or
    /// not in their name) fails.
    async fn fail_link(&self, source_id: &str) -> Result<(), PayError> {
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE funding_sources SET status = 'failed' WHERE id = $1 AND status = 'pending'",
            params![source_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes a booked line as being settled; true when this import is to settle it (it is
    /// new, or still marked as being settled), false when it was imported before.
    async fn claim_line(&self, line: &StatementLine, message_id: &str) -> Result<bool, PayError> {
        let mut tx = self.db().begin().await?;
        let written = tx
            .execute(
                "INSERT INTO bank_statement_lines (id, bank_reference, message_id, direction, reversal, amount, currency, \
                 booked_on, counterparty, state, reason, imported_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'unmatched', 'settling', $10) ON CONFLICT (id) DO NOTHING",
                params![
                    line.key.as_str(),
                    line.bank_reference.clone(),
                    message_id,
                    line.direction.as_str(),
                    i64::from(line.reversal),
                    i64::try_from(line.amount_minor).unwrap_or(i64::MAX),
                    line.currency.code(),
                    line.booked_on.clone(),
                    (self.auth.vault())
                        .seal_opt(&personal::STATEMENT_COUNTERPARTY, line.counterparty.as_deref()),
                    self.now_ms()
                ],
            )
            .await?;
        let claimed = written == 1
            || tx
                .query_opt(
                    "SELECT 1 FROM bank_statement_lines WHERE id = $1 AND state = 'unmatched' AND reason = 'settling'",
                    params![line.key.as_str()],
                )
                .await?
                .is_some();
        tx.commit().await?;
        Ok(claimed)
    }

    /// Notes on a claimed line the operation it names; true when an earlier try of this line
    /// (before a crash, or a concurrent import) had noted it already.
    async fn note_operation(
        &self,
        line: &StatementLine,
        operation: TransferId,
    ) -> Result<bool, PayError> {
        let mut tx = self.db().begin().await?;
        let before = tx
            .query_opt(
                "SELECT 1 FROM bank_statement_lines WHERE id = $1 AND operation_id = $2",
                params![line.key.as_str(), operation.to_bytes().to_vec()],
            )
            .await?
            .is_some();
        tx.execute(
            "UPDATE bank_statement_lines SET operation_id = $1 WHERE id = $2 AND operation_id IS NULL",
            params![operation.to_bytes().to_vec(), line.key.as_str()],
        )
        .await?;
        tx.commit().await?;
        Ok(before)
    }

    /// Records what a claimed line came to.
    async fn finish_line(
        &self,
        line: &StatementLine,
        state: &str,
        reason: Option<&str>,
        found: &Match,
    ) -> Result<(), PayError> {
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE bank_statement_lines SET state = $1, reason = $2, reference = $3, operation_id = $4 \
             WHERE id = $5 AND state = 'unmatched' AND reason = 'settling'",
            params![
                state,
                reason.map(str::to_owned),
                found.reference.clone(),
                found.operation.map(|id| id.to_bytes().to_vec()),
                line.key.as_str()
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Why a line naming an operation that is no longer pending settles nothing: another line
    /// settled it already (`duplicate`: the same movement seen again under another reference,
    /// or a second payment to return), or it finished otherwise (lapsed, failed).
    async fn finished_reason<T: SqlTx>(
        tx: &mut T,
        operation: &[u8],
        key: &str,
    ) -> Result<&'static str, PayError> {
        let seen = tx
            .query_opt(
                "SELECT 1 FROM bank_statement_lines WHERE operation_id = $1 AND state = 'matched' AND id <> $2",
                params![operation.to_vec(), key],
            )
            .await?
            .is_some();
        Ok(if seen {
            "duplicate"
        } else {
            "already_finished"
        })
    }

    /// What a booked line matches (see the module's comment).
    async fn match_line(&self, line: &StatementLine) -> Result<Match, PayError> {
        let mut tx = self.db().begin_read().await?;
        let found = match (line.direction, line.reversal) {
            (Direction::Debit, false) => {
                let Some(e2e) = line.end_to_end_id.clone() else {
                    return Ok(Match::unmatched("no_reference", None));
                };
                let row = tx
                    .query_opt(
                        "SELECT i.kind, i.amount, i.currency, o.status, o.id FROM bank_instructions i \
                         LEFT JOIN bank_operations o ON o.id = i.operation_id WHERE i.end_to_end_id = $1",
                        params![e2e.as_str()],
                    )
                    .await?;
                match row {
                    None => Match::unmatched("unknown_reference", Some(e2e)),
                    Some(row) if !same_money(&row, 1, 2, line)? => {
                        Match::unmatched("amount_differs", Some(e2e))
                    }
                    Some(row) if row.text(0)? == "micro_deposit" => Match::of("matched", None, e2e),
                    Some(row) if row.opt_text(3)?.as_deref() != Some("pending") => {
                        let reason =
                            Self::finished_reason(&mut tx, &row.bytes(4)?, &line.key).await?;
                        Match {
                            operation: operation_id(&row, 4)?,
                            ..Match::unmatched(reason, Some(e2e))
                        }
                    }
                    Some(row) => Match::of("settle", operation_id(&row, 4)?, e2e),
                }
            }
            (Direction::Credit, true) => {
                // A return quotes the end-to-end id of what it returns: a payout, or a
                // micro-deposit.
                let Some(e2e) = line.end_to_end_id.clone() else {
                    return Ok(Match::unmatched("no_reference", None));
                };
                let payout = tx
                    .query_opt(
                        "SELECT o.amount, o.currency, o.status, o.id FROM bank_operations o \
                         WHERE o.reference = $1 AND o.kind = 'payout'",
                        params![e2e.as_str()],
                    )
                    .await?;
                let micro = tx
                    .query_opt(
                        "SELECT amount, currency, source_id FROM bank_instructions \
                         WHERE end_to_end_id = $1 AND kind = 'micro_deposit'",
                        params![e2e.as_str()],
                    )
                    .await?;
                match (payout, micro) {
                    (Some(row), _) if !same_money(&row, 0, 1, line)? => {
                        Match::unmatched("amount_differs", Some(e2e))
                    }
                    (Some(row), _) if row.text(2)? == "pending" => {
                        Match::of("fail", operation_id(&row, 3)?, e2e)
                    }
                    (Some(row), _) => {
                        let reason = match row.text(2)?.as_str() {
                            "settled" => "returned_after_settlement",
                            _ => Self::finished_reason(&mut tx, &row.bytes(3)?, &line.key).await?,
                        };
                        Match {
                            operation: operation_id(&row, 3)?,
                            ..Match::unmatched(reason, Some(e2e))
                        }
                    }
                    (None, Some(row)) if same_money(&row, 0, 1, line)? => Match {
                        source: row.opt_text(2)?,
                        ..Match::of("fail_link", None, e2e)
                    },
                    (None, Some(_)) => Match::unmatched("amount_differs", Some(e2e)),
                    (None, None) => Match::unmatched("unknown_reference", Some(e2e)),
                }
            }
            (Direction::Credit, false) => {
                let Some(reference) = quoted_reference(line) else {
                    return Ok(Match::unmatched("no_reference", None));
                };
                let row = tx
                    .query_opt(
                        "SELECT o.amount, o.currency, o.status, o.id, f.number, f.holder_name FROM bank_operations o \
                         JOIN funding_sources f ON f.id = o.source_id WHERE o.reference = $1 AND o.kind = 'topup'",
                        params![reference.as_str()],
                    )
                    .await?;
                match row {
                    None => Match::unmatched("unknown_reference", Some(reference)),
                    Some(row) if !same_money(&row, 0, 1, line)? => {
                        Match::unmatched("amount_differs", Some(reference))
                    }
                    Some(row) if row.text(2)? != "pending" => {
                        let reason =
                            Self::finished_reason(&mut tx, &row.bytes(3)?, &line.key).await?;
                        Match {
                            operation: operation_id(&row, 3)?,
                            ..Match::unmatched(reason, Some(reference))
                        }
                    }
                    // A top-up is paid from the customer's own linked account: a transfer
                    // from another (a third party quoting the reference) settles nothing, and
                    // one whose payer the line does not show waits for an operator to check.
                    Some(row) => match payer(
                        &row.text(4)?,
                        &(self.auth.vault()).open(&personal::FUNDING_HOLDER, &row.text(5)?)?,
                        line,
                    ) {
                        Payer::Theirs => Match::of("settle", operation_id(&row, 3)?, reference),
                        Payer::Other => Match::unmatched("payer_differs", Some(reference)),
                        Payer::Unknown => Match {
                            operation: operation_id(&row, 3)?,
                            ..Match::unmatched("payer_unknown", Some(reference))
                        },
                    },
                }
            }
            (Direction::Debit, true) => Match::unmatched("reversal", line.end_to_end_id.clone()),
        };
        tx.commit().await?;
        Ok(found)
    }

    /// Statement lines, newest first; `state` filters (`unmatched` for the operator's queue).
    /// Operators: admin, approver, analyst.
    pub async fn statement_lines(
        &self,
        principal: &Principal,
        state: Option<&str>,
    ) -> Result<Vec<KeptLine>, PayError> {
        principal.operator(&[Role::Admin, Role::Approver, Role::Analyst])?;
        if let Some(state) = state
            && !matches!(state, "matched" | "unmatched" | "resolved")
        {
            return Err(PayError::Invalid(
                "state must be matched, unmatched or resolved",
            ));
        }
        let mut tx = self.db().begin_read().await?;
        let rows = match state {
            Some(state) => {
                tx.query(
                    select_lines!(" WHERE state = $1 ORDER BY imported_at DESC, id LIMIT 200"),
                    params![state],
                )
                .await?
            }
            None => {
                tx.query(
                    select_lines!(" ORDER BY imported_at DESC, id LIMIT 200"),
                    vec![],
                )
                .await?
            }
        };
        tx.commit().await?;
        rows.iter()
            .map(|row| kept_from(self.auth.vault(), row))
            .collect()
    }

    /// Marks an unmatched line resolved with what the operator did about it (admin,
    /// approver); audited. With `settle`, a top-up whose payer the line did not show
    /// (`payer_unknown`), once the operator has checked the payer is the customer, settles
    /// with it. Nothing else moves money here: a stray payment is returned or credited through
    /// the bank and the usual tools.
    pub async fn resolve_statement_line(
        &self,
        principal: &Principal,
        id: &str,
        note: &str,
        settle: bool,
    ) -> Result<KeptLine, PayError> {
        principal.operator(&[Role::Admin, Role::Approver])?;
        let note = crate::fraud::bounded_note(note)?;
        let now = self.now_ms();
        let mut tx = self.db().begin_read().await?;
        let line = tx
            .query_opt(select_lines!(" WHERE id = $1"), params![id])
            .await?
            .ok_or(PayError::NotFound)?;
        tx.commit().await?;
        let line = kept_from(self.auth.vault(), &line)?;
        if line.state != "unmatched" || line.reason.as_deref() == Some("settling") {
            return Err(PayError::Conflict(
                "this line is not waiting for an operator",
            ));
        }
        if settle {
            let operation = match (line.reason.as_deref(), line.operation_id) {
                (Some("payer_unknown"), Some(operation)) => operation,
                _ => {
                    return Err(PayError::Conflict(
                        "only a top-up whose payer the bank did not show can be settled from its line",
                    ));
                }
            };
            let due = self
                .due_operation(operation)
                .await?
                .ok_or(PayError::NotFound)?;
            if !self.operation_pending(operation).await? {
                return Err(PayError::Conflict(
                    "the top-up is no longer waiting: it settled or lapsed",
                ));
            }
            match self.settle_operation(&due, true, now).await? {
                Some("settled") => {}
                _ => {
                    return Err(PayError::Conflict(
                        "the top-up is no longer waiting: it settled or lapsed",
                    ));
                }
            }
        }
        let mut tx = self.db().begin().await?;
        let changed = tx
            .execute(
                "UPDATE bank_statement_lines SET state = 'resolved', note = $1, resolved_by = $2, resolved_at = $3 \
                 WHERE id = $4 AND state = 'unmatched'",
                params![note, principal.user_id.as_str(), now, id],
            )
            .await?;
        if changed == 0 {
            return Err(PayError::Conflict(
                "this line is not waiting for an operator",
            ));
        }
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "bank.statement_line_resolved",
                subject: id,
                details: serde_json::json!({ "note": note, "settled": settle }),
            },
        )
        .await?;
        let row = tx
            .query_one(select_lines!(" WHERE id = $1"), params![id])
            .await?;
        tx.commit().await?;
        kept_from(self.auth.vault(), &row)
    }

    async fn operation_pending(&self, id: TransferId) -> Result<bool, PayError> {
        Ok(self.operation_status(id).await?.as_deref() == Some("pending"))
    }

    /// An operation's status: `pending`, `settled` or `failed`.
    async fn operation_status(&self, id: TransferId) -> Result<Option<String>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let status = tx
            .query_opt(
                "SELECT status FROM bank_operations WHERE id = $1",
                params![id.to_bytes().to_vec()],
            )
            .await?
            .map(|row| row.text(0))
            .transpose()?;
        tx.commit().await?;
        Ok(status)
    }

    /// Unmatched statement lines waiting for an operator (for the gauge).
    pub async fn unmatched_statement_lines(&self) -> Result<i64, PayError> {
        let mut tx = self.db().begin_read().await?;
        let count = tx
            .query_one(
                "SELECT COUNT(*) FROM bank_statement_lines WHERE state = 'unmatched'",
                vec![],
            )
            .await?
            .i64(0)?;
        tx.commit().await?;
        Ok(count)
    }

    /// Whether the file bank is connected.
    pub fn file_bank_connected(&self) -> bool {
        self.banks.iter().any(|bank| bank.id() == FILE_BANK)
    }
}

/// Whether the row's amount (column `amount`) and currency (column `currency`) are the line's.
fn same_money(
    row: &koban_store::sql::Row,
    amount: usize,
    currency: usize,
    line: &StatementLine,
) -> Result<bool, PayError> {
    Ok(
        u64::try_from(row.i64(amount)?).ok() == Some(line.amount_minor)
            && row.text(currency)? == line.currency.code(),
    )
}

/// Who paid a top-up in, as far as the line tells.
#[derive(Debug, PartialEq, Eq)]
enum Payer {
    /// The customer's linked account (`number`, `0005-123-7654321`), or a payer named as its
    /// holder when the line gives no account.
    Theirs,
    /// Another account.
    Other,
    /// The line gives neither the payer's account nor a name that is the holder's.
    Unknown,
}

/// `text` without any top-up reference in it.
fn without_reference(text: &str) -> String {
    text.split_whitespace()
        .filter(|word| !crate::bank::reference_valid(&word.to_ascii_uppercase()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn payer(number: &str, holder_name: &str, line: &StatementLine) -> Payer {
    match &line.counterparty_account {
        Some(account) => {
            let digits =
                |text: &str| -> String { text.chars().filter(char::is_ascii_digit).collect() };
            let (theirs, ours) = (digits(account), digits(number));
            // The statement may give the account number alone or with its bank and branch.
            if theirs.len() >= 7 && ours.ends_with(&theirs) {
                Payer::Theirs
            } else {
                Payer::Other
            }
        }
        // The sender's name as the sending bank shows it (Japanese transfers carry the
        // reference before it).
        None => match &line.counterparty {
            Some(name) if crate::bank::same_name(&without_reference(name), holder_name) => {
                Payer::Theirs
            }
            _ => Payer::Unknown,
        },
    }
}

fn operation_id(
    row: &koban_store::sql::Row,
    column: usize,
) -> Result<Option<TransferId>, PayError> {
    Ok(Some(TransferId::from_bytes(&row.bytes(column)?).map_err(
        |_| PayError::Invalid("a stored id is not valid"),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use koban_ledger::Currency;

    fn credit(remittance: &str, e2e: Option<&str>) -> StatementLine {
        StatementLine {
            key: "k".into(),
            bank_reference: None,
            direction: Direction::Credit,
            reversal: false,
            amount_minor: 1,
            currency: Currency::Jpy,
            status: "BOOK".into(),
            booked_on: None,
            end_to_end_id: e2e.map(str::to_owned),
            remittance: remittance.into(),
            counterparty: None,
            counterparty_account: None,
        }
    }

    #[test]
    fn a_top_up_reference_is_found_wherever_it_is_quoted() {
        assert_eq!(
            quoted_reference(&credit("TOPUP kb 0123456782 thanks", None)).as_deref(),
            Some("KB0123456782")
        );
        assert_eq!(
            quoted_reference(&credit("", Some("KB0123456782"))).as_deref(),
            Some("KB0123456782")
        );
        // A mistyped digit fails the check digit; eleven digits is not a reference, nor nine.
        assert_eq!(quoted_reference(&credit("KB0123456783", None)), None);
        assert_eq!(quoted_reference(&credit("KB01234567821", None)), None);
        assert_eq!(quoted_reference(&credit("KB012345678", None)), None);
        assert_eq!(quoted_reference(&credit("", None)), None);
        let mut by_name = credit("", None);
        by_name.counterparty = Some("KB0123456782 ｽｽﾞｷ ﾊﾅｺ".into());
        assert_eq!(quoted_reference(&by_name).as_deref(), Some("KB0123456782"));
    }

    #[test]
    fn a_top_up_is_the_customers_own_when_the_line_shows_it() {
        let mut line = credit("", None);
        assert_eq!(
            payer("0005-123-7654321", "Alice Example", &line),
            Payer::Unknown
        );
        line.counterparty = Some("ALICE  EXAMPLE".into());
        assert_eq!(
            payer("0005-123-7654321", "Alice Example", &line),
            Payer::Theirs
        );
        line.counterparty = Some("ｱﾘｽ".into());
        assert_eq!(
            payer("0005-123-7654321", "Alice Example", &line),
            Payer::Unknown
        );
        line.counterparty = Some("KB0123456782 ALICE EXAMPLE".into());
        assert_eq!(
            payer("0005-123-7654321", "Alice Example", &line),
            Payer::Theirs
        );
        line.counterparty_account = Some("7654321".into());
        assert_eq!(
            payer("0005-123-7654321", "Alice Example", &line),
            Payer::Theirs
        );
        line.counterparty_account = Some("00051237654321".into());
        assert_eq!(
            payer("0005-123-7654321", "Alice Example", &line),
            Payer::Theirs
        );
        line.counterparty_account = Some("1111111".into());
        assert_eq!(
            payer("0005-123-7654321", "Alice Example", &line),
            Payer::Other
        );
        line.counterparty_account = Some("21".into());
        assert_eq!(
            payer("0005-123-7654321", "Alice Example", &line),
            Payer::Other
        );
    }
}
