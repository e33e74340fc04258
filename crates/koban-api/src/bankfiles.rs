//! Operator endpoints of the ISO 20022 file bank: importing the bank's `camt.053`/`camt.054`
//! files, the statement lines that matched nothing (and resolving them), and the `pain.001`
//! files made for the bank.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use koban_pay::statements::{BankFile, KeptLine};
use koban_store::LedgerStore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::extract::{Caller, Json, Query, json};
use crate::problem::{ApiError, Problem};

#[derive(Serialize, ToSchema)]
pub struct ImportOut {
    /// The file's message id.
    pub message_id: String,
    /// Lines in the file.
    pub lines: usize,
    /// Lines imported before (from this file or a notification of the same movement).
    pub already_imported: usize,
    /// Lines not booked yet (`PDNG`, `INFO`): read, settle nothing.
    pub not_booked: usize,
    /// Top-ups and payouts settled, payouts failed (returned), and every line matched.
    pub settled: usize,
    pub failed: usize,
    pub matched: usize,
    /// Lines that matched nothing: they wait for an operator.
    pub unmatched: usize,
}

#[derive(Serialize, ToSchema)]
pub struct StatementLineOut {
    pub id: String,
    /// The bank's own reference for the line.
    pub bank_reference: Option<String>,
    pub message_id: String,
    /// `credit` (into the issuer's account) or `debit`.
    pub direction: String,
    /// A reversal or return of an earlier movement.
    pub reversal: bool,
    pub amount: i64,
    pub currency: String,
    pub booked_on: Option<String>,
    /// The reference the line carried (end-to-end id or quoted top-up reference).
    pub reference: Option<String>,
    pub counterparty: Option<String>,
    /// `matched`, `unmatched` or `resolved`.
    pub state: String,
    /// Why it is unmatched: `no_reference`, `unknown_reference`, `amount_differs`,
    /// `payer_differs` (a top-up paid from another account), `payer_unknown` (the line does
    /// not show who paid: check, then resolve with `settle`), `duplicate` (another line settled
    /// the same operation), `already_finished`, `returned_after_settlement`, `reversal`;
    /// `settling` while an import is settling it.
    pub reason: Option<String>,
    /// The top-up or payout it settled.
    pub operation_id: Option<String>,
    pub note: Option<String>,
    pub imported_at: i64,
}

fn line_out(line: KeptLine) -> StatementLineOut {
    StatementLineOut {
        id: line.id,
        bank_reference: line.bank_reference,
        message_id: line.message_id,
        direction: line.direction,
        reversal: line.reversal,
        amount: line.amount,
        currency: line.currency,
        booked_on: line.booked_on,
        reference: line.reference,
        counterparty: line.counterparty,
        state: line.state,
        reason: line.reason,
        operation_id: line.operation_id.map(koban_pay::merchant::transfer_id_text),
        note: line.note,
        imported_at: line.imported_at_ms,
    }
}

#[derive(Serialize, ToSchema)]
pub struct BankFileOut {
    /// The message id; `GET /v1/ops/bank/files/{id}` gives the XML.
    pub id: String,
    pub transactions: i64,
    pub created_at: i64,
    /// When it was written to the outbox folder (`--bank-outbox`), if it was.
    pub written_at: Option<i64>,
}

fn file_out(file: &BankFile) -> BankFileOut {
    BankFileOut {
        id: file.id.clone(),
        transactions: file.transactions,
        created_at: file.created_at_ms,
        written_at: file.written_at_ms,
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LinesQuery {
    /// Only the lines in this state; all when absent.
    pub state: Option<LineState>,
}

#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LineState {
    Matched,
    Unmatched,
    Resolved,
}

impl LineState {
    fn as_str(self) -> &'static str {
        match self {
            LineState::Matched => "matched",
            LineState::Unmatched => "unmatched",
            LineState::Resolved => "resolved",
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveIn {
    /// What was done about the line (returned to the sender, checked the payer, ...).
    pub note: String,
    /// For a `payer_unknown` line: the operator checked that the customer paid, and the
    /// top-up settles with it.
    #[serde(default)]
    pub settle: bool,
}

/// Imports a `camt.053` statement or `camt.054` notification of the ISO 20022 bank (admin):
/// settles the top-ups and payouts its booked lines match; lines that match nothing wait for
/// an operator. Importing a file again changes nothing.
#[utoipa::path(post, path = "/v1/ops/bank/statements", tag = "operators",
    request_body(content = String, content_type = "application/xml", description = "The camt.053 or camt.054 file"),
    responses((status = 200, body = ImportOut), (status = 422, description = "Not a statement of the issuer's account", body = Problem)),
    security(("session" = [])))]
pub async fn import_statement<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    // Only an admin's upload is read at all (up to STATEMENT_BYTES_MAX).
    me.operator(&[koban_auth::Role::Admin])?;
    let body = axum::body::to_bytes(body, crate::STATEMENT_BYTES_MAX)
        .await
        .map_err(|_| {
            ApiError::Pay(koban_pay::PayError::Invalid(
                "the file is larger than 16 MiB: split it by day",
            ))
        })?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::Pay(koban_pay::PayError::Invalid(
            "the file is not a camt.053 statement or camt.054 notification",
        ))
    })?;
    let summary = state.pay.import_statement(&me, text).await?;
    Ok(json(
        StatusCode::OK,
        &ImportOut {
            message_id: summary.message_id,
            lines: summary.lines,
            already_imported: summary.already_imported,
            not_booked: summary.not_booked,
            settled: summary.settled,
            failed: summary.failed,
            matched: summary.matched,
            unmatched: summary.unmatched,
        },
    ))
}

/// Statement lines, newest first (admin, approver, analyst); `state=unmatched` is the queue
/// of lines waiting for an operator.
#[utoipa::path(get, path = "/v1/ops/bank/statement-lines", tag = "operators", params(LinesQuery),
    responses((status = 200, body = [StatementLineOut])), security(("session" = [])))]
pub async fn statement_lines<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Query(query): Query<LinesQuery>,
) -> Result<Response, ApiError> {
    let lines = state
        .pay
        .statement_lines(&me, query.state.map(LineState::as_str))
        .await?;
    let out: Vec<_> = lines.into_iter().map(line_out).collect();
    Ok(json(StatusCode::OK, &out))
}

/// Marks an unmatched line resolved, saying what was done (admin, approver); audited.
#[utoipa::path(post, path = "/v1/ops/bank/statement-lines/{id}/resolve", tag = "operators",
    params(("id" = String, Path)), request_body = ResolveIn,
    responses((status = 200, body = StatementLineOut), (status = 409, description = "Not waiting for an operator", body = Problem)),
    security(("session" = [])))]
pub async fn resolve_statement_line<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Json(body): Json<ResolveIn>,
) -> Result<Response, ApiError> {
    let line = state
        .pay
        .resolve_statement_line(&me, &id, &body.note, body.settle)
        .await?;
    Ok(json(StatusCode::OK, &line_out(line)))
}

/// The `pain.001` files made for the bank, newest first (admin, approver).
#[utoipa::path(get, path = "/v1/ops/bank/files", tag = "operators",
    responses((status = 200, body = [BankFileOut])), security(("session" = [])))]
pub async fn bank_files<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let files = state.pay.bank_files_for(&me).await?;
    let out: Vec<_> = files.iter().map(file_out).collect();
    Ok(json(StatusCode::OK, &out))
}

/// One `pain.001` file, as XML (admin, approver).
#[utoipa::path(get, path = "/v1/ops/bank/files/{id}", tag = "operators", params(("id" = String, Path)),
    responses((status = 200, content_type = "application/xml", body = String)), security(("session" = [])))]
pub async fn bank_file<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let file = state.pay.bank_file(&me, &id).await?;
    let mut response = (StatusCode::OK, file.content).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    Ok(response)
}
