//! The ISO 20022 file bank's two directions (see `connectors.rs`): the `pain.001` files that
//! carry queued payouts and micro-deposits to the bank, and the import of the bank's
//! `camt.053`/`camt.054` files, whose lines settle top-ups and payouts.
//!
//! Matching a statement line:
//! - a booked **debit** whose end-to-end id is a pending payout's reference, for its amount and
//!   currency, settles the payout (its hold posts); one that is a micro-deposit's is matched;
//! - a booked **credit** that quotes a pending top-up's reference (end-to-end id or remittance
//!   text), for its amount and currency, settles the top-up;
//! - a booked **return** (a credit marked as reversal or with return information) of a pending
//!   payout fails it (its hold is voided, the money is back in the wallet);
//! - every other booked line is **unmatched**, with its reason, for an operator to resolve:
//!   no reference, an unknown one, another amount or currency, an operation already finished
//!   (a top-up paid in after its hold released itself, a payout returned after it settled).
//!
//! A line is imported once: its key is the bank's own reference for it, so the same line in a
//! `camt.054` notification and the day's `camt.053` statement counts once. Lines that are not
//! booked (`PDNG`, `INFO`) are skipped.

use koban_auth::{Principal, Role};
use koban_ledger::TransferId;
use koban_shared::audit::{self, AuditEvent};
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
    let temporary = dir.join(format!(".{name}.part"));
    let mut file = std::fs::File::create(&temporary)?;
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

/// The outcome of matching one line: what to record, and the operation it names.
struct Match {
    state: &'static str,
    reason: Option<&'static str>,
    operation: Option<TransferId>,
    /// The reference the match used.
    reference: Option<String>,
}

impl Match {
    fn unmatched(reason: &'static str, reference: Option<String>) -> Match {
        Match {
            state: "unmatched",
            reason: Some(reason),
            operation: None,
            reference,
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
            if candidate.starts_with(b"KB") && candidate[2..].iter().all(u8::is_ascii_digit) {
                let after_is_digit = bytes.get(start + 12).is_some_and(u8::is_ascii_digit);
                if !after_is_digit {
                    return Some(String::from_utf8_lossy(candidate).into_owned());
                }
            }
        }
    }
    None
}

fn kept_from(row: &koban_store::sql::Row) -> Result<KeptLine, PayError> {
    Ok(KeptLine {
        id: row.text(0)?,
        message_id: row.text(1)?,
        direction: row.text(2)?,
        reversal: row.i64(3)? != 0,
        amount: row.i64(4)?,
        currency: row.text(5)?,
        booked_on: row.opt_text(6)?,
        reference: row.opt_text(7)?,
        counterparty: row.opt_text(8)?,
        state: row.text(9)?,
        reason: row.opt_text(10)?,
        operation_id: row
            .opt_bytes(11)?
            .and_then(|b| TransferId::from_bytes(&b).ok()),
        note: row.opt_text(12)?,
        imported_at_ms: row.i64(13)?,
    })
}

/// The columns [`kept_from`] reads, in a `SELECT` of statement lines, then `$rest`.
macro_rules! select_lines {
    ($rest:literal) => {
        concat!(
            "SELECT id, message_id, direction, reversal, amount, currency, booked_on, reference, ",
            "counterparty, state, reason, operation_id, note, imported_at FROM bank_statement_lines",
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
        let mut tx = self.db().begin().await?;
        let rows = tx
            .query(
                "SELECT end_to_end_id, account, holder_name, amount, currency, kind FROM bank_instructions \
                 WHERE file_id IS NULL ORDER BY created_at, end_to_end_id LIMIT $1",
                params![FILE_TRANSFERS_MAX],
            )
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let currency_code = first.text(4)?;
        let currency = koban_ledger::Currency::parse(&currency_code)
            .map_err(|_| PayError::Invalid("a stored currency is not valid"))?;
        let mut transfers = Vec::new();
        for row in rows
            .iter()
            .filter(|r| r.text(4).is_ok_and(|c| c == currency_code))
        {
            let kind = row.text(5)?;
            transfers.push(CreditTransfer {
                end_to_end_id: row.text(0)?,
                creditor: ZenginAccount::parse(&row.text(1)?)?,
                creditor_name: row.text(2)?,
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
        let at = time::OffsetDateTime::from_unix_timestamp(now / 1000)
            .map_err(|_| PayError::Invalid("the clock is out of range"))?;
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
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
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
            tx.execute(
                "UPDATE bank_instructions SET file_id = $1 WHERE end_to_end_id = $2 AND file_id IS NULL",
                params![message_id.as_str(), transfer.end_to_end_id.as_str()],
            )
            .await?;
        }
        tx.execute(
            "INSERT INTO bank_files (id, content, transactions, created_at) VALUES ($1, $2, $3, $4)",
            params![message_id.as_str(), content.as_str(), count, now],
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
        if oldest.is_some_and(|at| at <= now - BATCH_WAIT_S * 1000) {
            for _ in 0..10 {
                if self.make_payment_file().await?.is_none() {
                    break;
                }
            }
        }
        let Some(dir) = &bank.outbox else {
            return Ok(0);
        };
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
        Ok(written)
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
                    content: r.text(1)?,
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
            content: row.text(1)?,
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
            if self.line_known(&line.key).await? {
                summary.already_imported += 1;
                continue;
            }
            let found = self.match_line(line).await?;
            let now = self.now_ms();
            let (state, reason) = match (found.state, found.operation) {
                (finish @ ("settle" | "fail"), Some(id)) => {
                    let outcome = match self.due_operation(id).await? {
                        Some(operation) => {
                            self.settle_operation(&operation, finish == "settle", now)
                                .await?
                        }
                        None => None,
                    };
                    match outcome {
                        Some("settled") => {
                            summary.settled += 1;
                            ("matched", None)
                        }
                        Some(_) if finish == "fail" => {
                            summary.failed += 1;
                            ("matched", None)
                        }
                        // The hold had released itself: the money moved at the bank only.
                        _ => ("unmatched", Some("hold_released")),
                    }
                }
                ("matched", _) => {
                    summary.matched += 1;
                    ("matched", None)
                }
                _ => ("unmatched", found.reason),
            };
            if state == "unmatched" {
                summary.unmatched += 1;
            }
            self.keep_line(line, &statement.message_id, state, reason, &found, now)
                .await?;
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

    async fn line_known(&self, key: &str) -> Result<bool, PayError> {
        let mut tx = self.db().begin_read().await?;
        let known = tx
            .query_opt(
                "SELECT 1 FROM bank_statement_lines WHERE id = $1",
                params![key],
            )
            .await?
            .is_some();
        tx.commit().await?;
        Ok(known)
    }

    /// What a booked line matches (see the module's comment); `state` is `settle` or `fail`
    /// for an operation to finish, `matched` for a micro-deposit, or `unmatched`.
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
                    Some(row) if row.text(0)? == "micro_deposit" => Match {
                        state: "matched",
                        reason: None,
                        operation: None,
                        reference: Some(e2e),
                    },
                    Some(row) if row.opt_text(3)?.as_deref() != Some("pending") => {
                        Match::unmatched("already_finished", Some(e2e))
                    }
                    Some(row) => Match {
                        state: "settle",
                        reason: None,
                        operation: operation_id(&row, 4)?,
                        reference: Some(e2e),
                    },
                }
            }
            (Direction::Credit, true) => {
                // A return of a payout quotes the payout's end-to-end id.
                let Some(e2e) = line.end_to_end_id.clone() else {
                    return Ok(Match::unmatched("no_reference", None));
                };
                let row = tx
                    .query_opt(
                        "SELECT o.amount, o.currency, o.status, o.id FROM bank_operations o \
                         WHERE o.reference = $1 AND o.kind = 'payout'",
                        params![e2e.as_str()],
                    )
                    .await?;
                match row {
                    None => Match::unmatched("unknown_reference", Some(e2e)),
                    Some(row) if !same_money(&row, 0, 1, line)? => {
                        Match::unmatched("amount_differs", Some(e2e))
                    }
                    Some(row) if row.text(2)? != "pending" => {
                        Match::unmatched("returned_after_settlement", Some(e2e))
                    }
                    Some(row) => Match {
                        state: "fail",
                        reason: None,
                        operation: operation_id(&row, 3)?,
                        reference: Some(e2e),
                    },
                }
            }
            (Direction::Credit, false) => {
                let Some(reference) = quoted_reference(line) else {
                    return Ok(Match::unmatched("no_reference", None));
                };
                let row = tx
                    .query_opt(
                        "SELECT o.amount, o.currency, o.status, o.id, f.number FROM bank_operations o \
                         JOIN funding_sources f ON f.id = o.source_id WHERE o.reference = $1 AND o.kind = 'topup'",
                        params![reference.as_str()],
                    )
                    .await?;
                match row {
                    None => Match::unmatched("unknown_reference", Some(reference)),
                    Some(row) if !same_money(&row, 0, 1, line)? => {
                        Match::unmatched("amount_differs", Some(reference))
                    }
                    // A top-up is paid from the customer's own linked account: a transfer
                    // from another (a third party quoting the reference) settles nothing.
                    Some(row) if !same_payer(&row.text(4)?, line) => {
                        Match::unmatched("payer_differs", Some(reference))
                    }
                    Some(row) if row.text(2)? != "pending" => {
                        Match::unmatched("already_finished", Some(reference))
                    }
                    Some(row) => Match {
                        state: "settle",
                        reason: None,
                        operation: operation_id(&row, 3)?,
                        reference: Some(reference),
                    },
                }
            }
            (Direction::Debit, true) => Match::unmatched("reversal", line.end_to_end_id.clone()),
        };
        tx.commit().await?;
        Ok(found)
    }

    async fn keep_line(
        &self,
        line: &StatementLine,
        message_id: &str,
        state: &str,
        reason: Option<&str>,
        found: &Match,
        now: i64,
    ) -> Result<(), PayError> {
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO bank_statement_lines (id, message_id, direction, reversal, amount, currency, booked_on, \
             reference, counterparty, state, reason, operation_id, imported_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING",
            params![
                line.key.as_str(),
                message_id,
                line.direction.as_str(),
                i64::from(line.reversal),
                i64::try_from(line.amount_minor).unwrap_or(i64::MAX),
                line.currency.code(),
                line.booked_on.clone(),
                found.reference.clone(),
                line.counterparty.clone(),
                state,
                reason.map(str::to_owned),
                found.operation.map(|id| id.to_bytes().to_vec()),
                now
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
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
        rows.iter().map(kept_from).collect()
    }

    /// Marks an unmatched line resolved with what the operator did about it (admin,
    /// approver); audited. No money moves here: a stray payment is returned or credited
    /// through the bank and the usual tools.
    pub async fn resolve_statement_line(
        &self,
        principal: &Principal,
        id: &str,
        note: &str,
    ) -> Result<KeptLine, PayError> {
        principal.operator(&[Role::Admin, Role::Approver])?;
        let note = crate::fraud::bounded_note(note)?;
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let changed = tx
            .execute(
                "UPDATE bank_statement_lines SET state = 'resolved', note = $1, resolved_by = $2, resolved_at = $3 \
                 WHERE id = $4 AND state = 'unmatched'",
                params![note, principal.user_id.as_str(), now, id],
            )
            .await?;
        if changed == 0 {
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM bank_statement_lines WHERE id = $1",
                    params![id],
                )
                .await?
                .is_some();
            return Err(if exists {
                PayError::Conflict("this line is not waiting for an operator")
            } else {
                PayError::NotFound
            });
        }
        audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "bank.statement_line_resolved",
                subject: id,
                details: serde_json::json!({ "note": note }),
            },
        )
        .await?;
        let row = tx
            .query_one(select_lines!(" WHERE id = $1"), params![id])
            .await?;
        tx.commit().await?;
        kept_from(&row)
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

/// Whether a credit came from the linked account `number` (`0005-123-7654321`), as far as the
/// line tells: a line without the payer's account is taken on its reference alone.
fn same_payer(number: &str, line: &StatementLine) -> bool {
    let Some(account) = &line.counterparty_account else {
        return true;
    };
    let digits = |text: &str| -> String { text.chars().filter(char::is_ascii_digit).collect() };
    let (theirs, ours) = (digits(account), digits(number));
    // The statement may give the account number alone or with its bank and branch.
    theirs.len() >= 7 && ours.ends_with(&theirs)
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
            quoted_reference(&credit("TOPUP kb 0123456789 thanks", None)).as_deref(),
            Some("KB0123456789")
        );
        assert_eq!(
            quoted_reference(&credit("", Some("KB0123456789"))).as_deref(),
            Some("KB0123456789")
        );
        // Eleven digits is not a reference; nine is not either.
        assert_eq!(quoted_reference(&credit("KB01234567891", None)), None);
        assert_eq!(quoted_reference(&credit("KB012345678", None)), None);
        assert_eq!(quoted_reference(&credit("", None)), None);
        let mut by_name = credit("", None);
        by_name.counterparty = Some("KB0123456789 ｽｽﾞｷ ﾊﾅｺ".into());
        assert_eq!(quoted_reference(&by_name).as_deref(), Some("KB0123456789"));
    }
}
