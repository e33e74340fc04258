//! Payment endpoints: wallets, verification, funding sources, top-ups, payouts, P2P transfers,
//! QR payments both ways, merchant requests, charges and refunds, operator views, and the
//! sandbox bank. Wire types for them live here too. Every money-moving POST requires an
//! `Idempotency-Key` header.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use koban_auth::LegalName;
use koban_ledger::{Account, Currency, Transfer, TransferId};
use koban_pay::bank::{BankMove, BankOperation, Behaviour, FundingSource};
use koban_pay::merchant::{MerchantPayment, PaymentRequest, parse_transfer_id, transfer_id_text};
use koban_pay::p2p::P2pRequest;
use koban_pay::wallets::Entry;
use koban_pay::{IdempotencyKey, PayError, Payments, parse_amount};
use koban_store::LedgerStore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::extract::{
    Caller, ClientInfo, Json, MerchantCaller, Query, json, json_with_session, session_out,
};
use crate::problem::{ApiError, Problem};
use crate::wire::{SessionOut, StepUpIn, proof};

/// The `Idempotency-Key` header of a money-moving request.
pub struct IdemKey(pub IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for IdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get("idempotency-key")
            .ok_or(ApiError::IdempotencyKeyMissing)?;
        let text = value
            .to_str()
            .map_err(|_| PayError::Invalid("Idempotency-Key must be printable ASCII"))?;
        Ok(IdemKey(IdempotencyKey::parse(text)?))
    }
}

fn currency<S: LedgerStore>(pay: &Payments<S>, code: Option<&str>) -> Result<Currency, ApiError> {
    match code {
        Some(code) => Ok(pay.currency_enabled(code)?),
        None => Ok(pay.config().currencies[0]),
    }
}

fn ms(t: koban_ledger::Timestamp) -> i64 {
    i64::try_from(t.nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn id_text(id: TransferId) -> String {
    transfer_id_text(id)
}

// ---------------------------------------------------------------- wire types

/// An amount of money: integer minor units (yen for JPY, cents for USD) and its currency.
#[derive(Serialize, ToSchema)]
pub struct MoneyOut {
    #[schema(example = 1500)]
    pub amount: u64,
    #[schema(example = "JPY")]
    pub currency: &'static str,
}

fn money(amount: u64, currency: Currency) -> MoneyOut {
    MoneyOut {
        amount,
        currency: currency.code(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct LimitsOut {
    pub balance_max: i64,
    pub daily_out_max: i64,
}

#[derive(Serialize, ToSchema)]
pub struct WalletOut {
    pub currency: &'static str,
    /// Posted balance, minor units.
    pub balance: i64,
    /// What can be spent now: the balance less outgoing holds.
    pub available: i64,
    pub pending_in: i64,
    pub pending_out: i64,
    /// `unverified` or `verified`.
    pub tier: &'static str,
    pub limits: LimitsOut,
    pub spent_today: i64,
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[derive(Serialize, ToSchema)]
pub struct EntryOut {
    pub id: String,
    /// `p2p`, `topup`, `payout`, `merchant_payment`, `refund`, `review_hold`, ...
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `in` or `out`.
    pub direction: &'static str,
    /// `posted`, `pending`, `released`, `expired`.
    pub status: &'static str,
    pub amount: i64,
    pub currency: &'static str,
    pub balance_after: i64,
    pub message: Option<String>,
    pub created_at: i64,
}

fn entry_out(e: &Entry, account: koban_ledger::AccountId) -> EntryOut {
    EntryOut {
        id: id_text(e.transfer.id),
        kind: e.kind,
        direction: if e.incoming { "in" } else { "out" },
        status: e.status,
        amount: e.transfer.amount.to_i64(),
        currency: e.transfer.currency.code(),
        balance_after: e
            .transfer
            .side(account)
            .map_or(0, |(_, b)| clamp(b.net_credit_posted())),
        message: e
            .transfer
            .metadata
            .iter()
            .find(|(k, _)| *k == "message")
            .map(|(_, v)| v.to_owned()),
        created_at: ms(e.transfer.timestamp),
    }
}

/// A page of a list: `data`, and whether more follow (pass the last id as `starting_after`).
#[derive(Serialize, ToSchema)]
pub struct EntriesPage {
    pub data: Vec<EntryOut>,
    pub has_more: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    pub currency: Option<String>,
    /// 1 to 100 (default 20).
    pub limit: Option<usize>,
    /// The id of the last entry of the previous page.
    pub starting_after: Option<String>,
    /// Only entries of this type (`p2p`, `topup`, ...); repeat as a comma-separated list.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CurrencyQuery {
    pub currency: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    pub currency: Option<String>,
    /// Milliseconds since the Unix epoch (default: 30 days ago).
    pub from: Option<i64>,
    /// Milliseconds since the Unix epoch (default: now).
    pub to: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycIn {
    #[schema(example = "Hanako Suzuki")]
    pub legal_name: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    /// The payee's e-mail address or phone number.
    pub to: String,
    pub currency: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PayeeOut {
    /// The payee's name as far as the payer may see it, for confirming before paying.
    #[schema(example = "H***** S*****")]
    pub masked_name: String,
    /// Whether the caller has paid this payee before (a new payee needs step-up).
    pub known: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferIn {
    /// The payee's e-mail address or phone number.
    #[schema(example = "hanako@example.com")]
    pub to: String,
    /// Minor units, a positive integer.
    #[schema(example = 1500)]
    pub amount: i64,
    #[schema(example = "JPY")]
    pub currency: Option<String>,
    /// Up to 140 bytes, shown to both sides.
    pub message: Option<String>,
    pub step_up: Option<StepUpIn>,
}

#[derive(Serialize, ToSchema)]
pub struct TransferOut {
    pub id: String,
    /// `completed`, or `held` for review (the money stays reserved in the payer's wallet).
    pub status: &'static str,
    pub amount: MoneyOut,
    pub payee_masked_name: String,
    pub created_at: i64,
    /// True when this answers a retry with the same Idempotency-Key.
    pub replayed: bool,
    /// Present when step-up rotated the session: use this token from now on.
    pub session: Option<SessionOut>,
}

/// 201 with the transfer, or 200 for a replay; with the cookies of a rotated session.
fn transfer_answer(outcome: &koban_pay::p2p::P2pOutcome, dev: bool) -> Response {
    let out = TransferOut {
        id: id_text(outcome.transfer.id),
        status: outcome.status,
        amount: money(
            outcome.transfer.amount.minor_units(),
            outcome.transfer.currency,
        ),
        payee_masked_name: outcome.payee_masked_name.clone(),
        created_at: ms(outcome.transfer.timestamp),
        replayed: outcome.replayed,
        session: outcome.session.as_ref().map(session_out),
    };
    let status = if outcome.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    json_with_session(status, &out, outcome.session.as_ref(), dev)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBankIn {
    /// `sandbox` (development) or `iso20022` (the bank reached by ISO 20022 files, when
    /// the issuer connected one).
    #[schema(example = "sandbox")]
    pub bank: String,
    /// 7 digits at the sandbox; `0001-123-1234567` (bank, branch, number) at the ISO 20022 bank.
    #[schema(example = "1234567")]
    pub account_number: String,
    pub step_up: Option<StepUpIn>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmLinkIn {
    /// The two micro-deposit amounts, in either order.
    #[schema(example = json!([12, 34]))]
    pub amounts: [i64; 2],
}

#[derive(Serialize, ToSchema)]
pub struct FundingSourceOut {
    pub id: String,
    pub bank: String,
    pub masked_number: String,
    /// `pending` (waiting for the micro-deposits), `verified`, `failed`, `expired`.
    pub status: String,
    pub attempts_left: i64,
    pub expires_at: i64,
    pub verified_at: Option<i64>,
    pub created_at: i64,
    /// Present when step-up rotated the session.
    pub session: Option<SessionOut>,
}

fn source_out(s: FundingSource, session: Option<&koban_auth::IssuedSession>) -> FundingSourceOut {
    FundingSourceOut {
        id: s.id,
        bank: s.bank,
        masked_number: s.masked_number,
        status: s.status,
        attempts_left: s.attempts_left,
        expires_at: s.expires_at_ms,
        verified_at: s.verified_at_ms,
        created_at: s.created_at_ms,
        session: session.map(session_out),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BankMoveIn {
    pub source_id: String,
    #[schema(example = 5000)]
    pub amount: i64,
    pub currency: Option<String>,
    pub step_up: Option<StepUpIn>,
}

#[derive(Serialize, ToSchema)]
pub struct BankOperationOut {
    pub id: String,
    /// `topup` or `payout`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub amount: MoneyOut,
    /// `pending` until the bank settles, then `settled` or `failed`.
    pub status: String,
    pub replayed: bool,
    pub session: Option<SessionOut>,
    /// For a top-up from a bank the customer pays in by their own transfer (the ISO 20022
    /// bank): where to send the amount, and the reference the transfer must quote. The top-up
    /// settles when the bank's statement shows it.
    pub pay_in: Option<PayInOut>,
}

#[derive(Serialize, ToSchema)]
pub struct PayInOut {
    /// The issuer's account and name, e.g. `0001-123-1234567 Koban`.
    pub pay_to: String,
    /// Quote it in the transfer's message (or as the sender's name prefix).
    #[schema(example = "KB0123456789")]
    pub reference: String,
}

fn bank_op_out(op: &BankOperation) -> BankOperationOut {
    BankOperationOut {
        id: id_text(op.transfer.id),
        kind: op.kind,
        amount: money(op.transfer.amount.minor_units(), op.transfer.currency),
        status: op.status.clone(),
        replayed: op.replayed,
        session: op.session.as_ref().map(session_out),
        pay_in: op.pay_in.as_ref().map(|p| PayInOut {
            pay_to: p.pay_to.clone(),
            reference: p.reference.clone(),
        }),
    }
}

#[derive(Serialize, ToSchema)]
pub struct BankOperationRow {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub created_at: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QrIn {
    /// The scanned payload (`KB1.…`).
    pub payload: String,
    pub step_up: Option<StepUpIn>,
}

#[derive(Serialize, ToSchema)]
pub struct PaymentRequestOut {
    pub id: String,
    pub merchant_name: String,
    pub amount: MoneyOut,
    pub reference: String,
    /// `open`, `paid` or `expired`.
    pub status: &'static str,
    pub expires_at: i64,
    pub created_at: i64,
    /// Show this as a QR code (format in the API description: signed, tamper-evident).
    pub qr_payload: String,
    /// The payment's id once paid (for refunds).
    pub payment_id: Option<String>,
}

fn request_out(r: PaymentRequest) -> PaymentRequestOut {
    PaymentRequestOut {
        id: r.id,
        merchant_name: r.merchant_name,
        amount: money(r.amount.minor_units(), r.currency),
        reference: r.reference,
        status: r.status,
        expires_at: r.expires_at_ms,
        created_at: r.created_at_ms,
        qr_payload: r.qr_payload,
        payment_id: r.payment.map(id_text),
    }
}

#[derive(Serialize, ToSchema)]
pub struct MerchantPaymentOut {
    /// The payment's id (refunds name it).
    pub id: String,
    /// The payer as this merchant knows them: `cus_` and 24 hexadecimal digits, the same for
    /// every payment of one customer at one merchant, different at every other merchant, and
    /// never an e-mail address, phone number or name.
    #[schema(example = "cus_3f9a0c4e1b7d2a6c8e5f0b1d")]
    pub customer: String,
    pub status: &'static str,
    pub amount: MoneyOut,
    /// The merchant's fee, taken from the merchant's side.
    pub fee: MoneyOut,
    pub merchant_name: String,
    pub created_at: i64,
    pub replayed: bool,
    pub session: Option<SessionOut>,
}

fn merchant_payment_out(p: &MerchantPayment) -> MerchantPaymentOut {
    MerchantPaymentOut {
        id: id_text(p.transfer.id),
        customer: p.customer.clone(),
        status: "completed",
        amount: money(p.transfer.amount.minor_units(), p.transfer.currency),
        fee: money(p.fee, p.transfer.currency),
        merchant_name: p.merchant_name.clone(),
        created_at: ms(p.transfer.timestamp),
        replayed: p.replayed,
        session: p.session.as_ref().map(session_out),
    }
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PaymentCodeIn {
    pub currency: Option<String>,
    /// The most this code may be charged. Default: just under the step-up threshold (9,999
    /// yen), without step-up; up to 50,000 with step-up.
    pub limit: Option<i64>,
    pub step_up: Option<StepUpIn>,
}

#[derive(Serialize, ToSchema)]
pub struct PaymentCodeOut {
    pub id: String,
    /// 18 digits for a barcode; shown only when created.
    pub code: Option<String>,
    /// The same code as a QR payload.
    pub qr_payload: Option<String>,
    pub currency: &'static str,
    /// The most one charge of this code may take.
    pub limit: i64,
    pub expires_at: i64,
    /// Present when step-up rotated the session.
    pub session: Option<SessionOut>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequestIn {
    #[schema(example = 1200)]
    pub amount: i64,
    pub currency: Option<String>,
    /// The merchant's own reference (order number), up to 64 bytes.
    #[schema(example = "order-42")]
    pub reference: String,
    /// 30 s to 24 h (default 15 minutes).
    pub expires_in_s: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeIn {
    /// The customer's code (18 digits) or its QR payload.
    pub code: String,
    pub amount: i64,
    pub currency: Option<String>,
    #[serde(default)]
    pub reference: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundIn {
    pub amount: i64,
}

#[derive(Serialize, ToSchema)]
pub struct RefundOut {
    pub id: String,
    pub payment_id: String,
    pub amount: MoneyOut,
    /// Refunded of this payment so far, this refund included.
    pub refunded_total: i64,
    pub replayed: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantPayoutIn {
    pub source_id: String,
    pub amount: i64,
    pub currency: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AccountOut {
    pub name: String,
    pub id: String,
    pub currency: &'static str,
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
    /// Credits minus debits, posted.
    pub net_credit: i64,
}

fn account_out(name: &str, a: &Account) -> AccountOut {
    AccountOut {
        name: name.to_owned(),
        id: uuid::Uuid::from_u128(a.id.get()).to_string(),
        currency: a.currency.code(),
        debits_posted: clamp(i128::from(a.balance.debits_posted)),
        credits_posted: clamp(i128::from(a.balance.credits_posted)),
        debits_pending: clamp(i128::from(a.balance.debits_pending)),
        credits_pending: clamp(i128::from(a.balance.credits_pending)),
        net_credit: clamp(a.balance.net_credit_posted()),
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReconciliationOut {
    pub currency: &'static str,
    pub emoney_outstanding: i64,
    pub wallets_total: i64,
    /// True when e-money outstanding equals the sum of customer wallets.
    pub balanced: bool,
}

#[derive(Serialize, ToSchema)]
pub struct IssuerOut {
    pub accounts: Vec<AccountOut>,
    pub reconciliation: Vec<ReconciliationOut>,
}

#[derive(Serialize, ToSchema)]
pub struct KycRequestOut {
    pub user_id: String,
    /// The name masked (`H***** S*****`): `POST /v1/ops/kyc/{user_id}/reveal` shows it in
    /// full, with a reason that goes into the audit chain.
    pub legal_name_masked: String,
    pub submitted_at: i64,
}

/// Why an operator needs to see a customer's personal data: 5 to 500 characters, recorded in
/// the audit chain with the operator.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealIn {
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct KycNameOut {
    pub user_id: String,
    pub legal_name: String,
}

#[derive(Serialize, ToSchema)]
pub struct HeldTransferOut {
    pub id: String,
    pub payer_user_id: String,
    pub amount: MoneyOut,
    /// `held`, `released` or `voided`.
    pub status: String,
    pub created_at: i64,
    /// The operator who asked for the release while it waits for a second operator.
    pub release_requested_by: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeeIn {
    /// Basis points of the amount (250 = 2.5%).
    pub fee_bps: u64,
    pub fee_fixed_minor: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxAccountIn {
    /// The name the sandbox bank has on file for the account holder.
    pub holder_name: String,
    /// `normal` (default) or `fails_settlement`.
    pub behaviour: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SandboxAccountOut {
    /// Always true: this is a simulated bank.
    pub sandbox: bool,
    pub bank: &'static str,
    pub account_number: String,
}

#[derive(Serialize, ToSchema)]
pub struct SandboxEntryOut {
    /// Positive: credited to the bank account.
    pub amount: i64,
    pub description: String,
    pub created_at: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaucetIn {
    pub amount: i64,
    pub currency: Option<String>,
}

// ---------------------------------------------------------------- customer endpoints

/// The caller's wallet: balance, tier and limits.
#[utoipa::path(get, path = "/v1/wallet", tag = "wallet", params(CurrencyQuery),
    responses((status = 200, body = WalletOut), (status = 401, body = Problem)), security(("session" = [])))]
pub async fn wallet<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Query(q): Query<CurrencyQuery>,
) -> Result<Response, ApiError> {
    let currency = currency(&state.pay, q.currency.as_deref())?;
    let view = state.pay.wallet_view(&me, currency).await?;
    let b = view.account.balance;
    Ok(json(
        StatusCode::OK,
        &WalletOut {
            currency: currency.code(),
            balance: clamp(b.net_credit_posted()),
            available: clamp(b.available_credit()),
            pending_in: clamp(i128::from(b.credits_pending)),
            pending_out: clamp(i128::from(b.debits_pending)),
            tier: view.tier.as_str(),
            limits: LimitsOut {
                balance_max: clamp(i128::from(view.limits.balance_max)),
                daily_out_max: clamp(i128::from(view.limits.daily_out_max)),
            },
            spent_today: clamp(i128::from(view.spent_today)),
        },
    ))
}

/// The caller's wallet history, newest first, with cursor pagination and a type filter.
#[utoipa::path(get, path = "/v1/wallet/transactions", tag = "wallet", params(HistoryQuery),
    responses((status = 200, body = EntriesPage), (status = 422, body = Problem)), security(("session" = [])))]
pub async fn history<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let currency = currency(&state.pay, q.currency.as_deref())?;
    let after = q
        .starting_after
        .as_deref()
        .map(parse_transfer_id)
        .transpose()?;
    let kinds: Vec<String> = q
        .kind
        .as_deref()
        .map(|k| k.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let (entries, has_more) = state
        .pay
        .history(&me, currency, after, q.limit.unwrap_or(20), &kinds)
        .await?;
    let account = state.pay.wallet(&me.user_id, currency).await?.account;
    Ok(json(
        StatusCode::OK,
        &EntriesPage {
            data: entries.iter().map(|e| entry_out(e, account)).collect(),
            has_more,
        },
    ))
}

/// The caller's statement as CSV (at most 10,000 rows).
#[utoipa::path(get, path = "/v1/wallet/statement.csv", tag = "wallet", params(StatementQuery),
    responses((status = 200, content_type = "text/csv", body = String)), security(("session" = [])))]
pub async fn statement<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Query(q): Query<StatementQuery>,
) -> Result<Response, ApiError> {
    let currency = currency(&state.pay, q.currency.as_deref())?;
    let now = state.auth.now_ms();
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to.saturating_sub(30 * 86_400_000));
    let csv = state.pay.statement_csv(&me, currency, from, to).await?;
    let mut response = (StatusCode::OK, csv).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"koban-statement.csv\""),
    );
    Ok(response)
}

/// Asks for identity verification (KYC); an operator decides.
#[utoipa::path(post, path = "/v1/kyc", tag = "wallet", request_body = KycIn,
    responses((status = 202), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn submit_kyc<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Json(body): Json<KycIn>,
) -> Result<StatusCode, ApiError> {
    let name = LegalName::parse(&body.legal_name)?;
    state.pay.submit_kyc(&me, &name).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Confirmation of payee: the masked name behind an e-mail address or phone number. Lookups
/// that find nobody are counted per customer and per network: past 20 in an hour (60 for a
/// network) lookups and transfers to new addresses answer 429 for the rest of it.
#[utoipa::path(get, path = "/v1/payees/lookup", tag = "transfers", params(LookupQuery),
    responses((status = 200, body = PayeeOut), (status = 404, body = Problem),
        (status = 429, description = "Too many addresses that belong to nobody", body = Problem),
        (status = 422, description = "The address is the caller's own, or the currency is not offered", body = Problem)),
    security(("session" = [])))]
pub async fn lookup_payee<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Query(q): Query<LookupQuery>,
) -> Result<Response, ApiError> {
    let currency = currency(&state.pay, q.currency.as_deref())?;
    let (payee, known) = state
        .pay
        .lookup_payee(&me, &client, &q.to, currency)
        .await?;
    Ok(json(
        StatusCode::OK,
        &PayeeOut {
            masked_name: payee.masked_name,
            known,
        },
    ))
}

/// Sends money to another customer. A new payee or a large amount answers 403
/// `step-up-required`; repeat the same request with `step_up`.
#[utoipa::path(post, path = "/v1/transfers", tag = "transfers", request_body = TransferIn,
    params(("Idempotency-Key" = String, Header, description = "Makes retries safe")),
    responses((status = 201, body = TransferOut), (status = 200, description = "A replay", body = TransferOut),
        (status = 403, body = Problem), (status = 404, description = "No customer at that address", body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem),
        (status = 429, description = "Too many addresses that belong to nobody", body = Problem)),
    security(("session" = [])))]
pub async fn transfer<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    IdemKey(key): IdemKey,
    Json(body): Json<TransferIn>,
) -> Result<Response, ApiError> {
    let request = P2pRequest {
        to: body.to,
        amount: parse_amount(body.amount)?,
        currency: currency(&state.pay, body.currency.as_deref())?,
        message: body.message,
        key,
    };
    let outcome = state
        .pay
        .transfer(&me, &request, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    Ok(transfer_answer(&outcome, state.config.dev))
}

/// Starts linking a bank account (step-up; your verified legal name must match the holder's).
#[utoipa::path(post, path = "/v1/funding-sources/bank", tag = "funding", request_body = LinkBankIn,
    responses((status = 201, body = FundingSourceOut), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("session" = [])))]
pub async fn link_bank<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<LinkBankIn>,
) -> Result<Response, ApiError> {
    let (source, session) = state
        .pay
        .link_bank_start(
            &me,
            &body.bank,
            &body.account_number,
            proof(&body.step_up)?.as_ref(),
            &client,
        )
        .await?;
    let out = source_out(source, Some(&session));
    Ok(json_with_session(
        StatusCode::CREATED,
        &out,
        Some(&session),
        state.config.dev,
    ))
}

/// Finishes linking with the two micro-deposit amounts (3 tries, 3 days).
#[utoipa::path(post, path = "/v1/funding-sources/{id}/confirm", tag = "funding", request_body = ConfirmLinkIn,
    params(("id" = String, Path)),
    responses((status = 200, body = FundingSourceOut), (status = 410, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)),
    security(("session" = [])))]
pub async fn confirm_bank<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Path(id): Path<String>,
    Json(body): Json<ConfirmLinkIn>,
) -> Result<Response, ApiError> {
    let source = state
        .pay
        .link_bank_confirm(&me, &id, body.amounts[0], body.amounts[1], &client)
        .await?;
    Ok(json(StatusCode::OK, &source_out(source, None)))
}

/// The caller's bank accounts.
#[utoipa::path(get, path = "/v1/funding-sources", tag = "funding",
    responses((status = 200, body = [FundingSourceOut])), security(("session" = [])))]
pub async fn funding_sources<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let out: Vec<_> = state
        .pay
        .funding_sources(&me)
        .await?
        .into_iter()
        .map(|s| source_out(s, None))
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Tops up the wallet from a verified bank account; pending until the bank settles.
#[utoipa::path(post, path = "/v1/topups", tag = "funding", request_body = BankMoveIn,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 202, body = BankOperationOut), (status = 422, body = Problem)), security(("session" = [])))]
pub async fn topup<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    IdemKey(key): IdemKey,
    Json(body): Json<BankMoveIn>,
) -> Result<Response, ApiError> {
    let amount = parse_amount(body.amount)?;
    let currency = currency(&state.pay, body.currency.as_deref())?;
    let request = BankMove {
        source_id: body.source_id,
        amount,
        currency,
    };
    let op = state.pay.topup(&me, &request, &key).await?;
    Ok(json(StatusCode::ACCEPTED, &bank_op_out(&op)))
}

/// Withdraws to a verified bank account (step-up); pending until the bank settles.
#[utoipa::path(post, path = "/v1/payouts", tag = "funding", request_body = BankMoveIn,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 202, body = BankOperationOut), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("session" = [])))]
pub async fn payout<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    IdemKey(key): IdemKey,
    Json(body): Json<BankMoveIn>,
) -> Result<Response, ApiError> {
    let amount = parse_amount(body.amount)?;
    let currency = currency(&state.pay, body.currency.as_deref())?;
    let op = state
        .pay
        .payout(
            &me,
            &BankMove {
                source_id: body.source_id,
                amount,
                currency,
            },
            &key,
            proof(&body.step_up)?.as_ref(),
            &client,
        )
        .await?;
    Ok(json_with_session(
        StatusCode::ACCEPTED,
        &bank_op_out(&op),
        op.session.as_ref(),
        state.config.dev,
    ))
}

/// The caller's top-ups and payouts, newest first.
#[utoipa::path(get, path = "/v1/bank-operations", tag = "funding",
    responses((status = 200, body = [BankOperationRow])), security(("session" = [])))]
pub async fn bank_operations<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    me.full()?;
    let out: Vec<_> = state
        .pay
        .bank_operations(&me.user_id)
        .await?
        .into_iter()
        .map(
            |(id, kind, amount, currency, status, created_at)| BankOperationRow {
                id: id_text(id),
                kind,
                amount,
                currency,
                status,
                created_at,
            },
        )
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Reads a scanned merchant QR payload: merchant name, amount, status.
#[utoipa::path(post, path = "/v1/qr/inspect", tag = "qr", request_body = QrIn,
    responses((status = 200, body = PaymentRequestOut), (status = 422, body = Problem)), security(("session" = [])))]
pub async fn inspect_qr<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Json(body): Json<QrIn>,
) -> Result<Response, ApiError> {
    let request = state.pay.inspect_qr(&me, &body.payload).await?;
    Ok(json(StatusCode::OK, &request_out(request)))
}

/// Pays a scanned merchant QR payload (step-up above the threshold).
#[utoipa::path(post, path = "/v1/qr/pay", tag = "qr", request_body = QrIn,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = MerchantPaymentOut), (status = 403, body = Problem), (status = 409, body = Problem), (status = 410, body = Problem), (status = 422, body = Problem)),
    security(("session" = [])))]
pub async fn pay_qr<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    IdemKey(key): IdemKey,
    Json(body): Json<QrIn>,
) -> Result<Response, ApiError> {
    let payment = state
        .pay
        .pay_qr(
            &me,
            &body.payload,
            &key,
            proof(&body.step_up)?.as_ref(),
            &client,
        )
        .await?;
    let status = if payment.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_with_session(
        status,
        &merchant_payment_out(&payment),
        payment.session.as_ref(),
        state.config.dev,
    ))
}

/// A one-time code to show at a till: 18 digits (barcode) and a QR form, valid 60 seconds.
/// The body is optional: without one, the code is for the wallet's first currency, with no
/// limit beyond the wallet's own.
#[utoipa::path(post, path = "/v1/payment-codes", tag = "qr", request_body = Option<PaymentCodeIn>,
    responses((status = 201, body = PaymentCodeOut)), security(("session" = [])))]
pub async fn create_code<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // No body, or `null` as the document allows, asks for the defaults.
    let body: PaymentCodeIn = if body.trim_ascii().is_empty() || body.trim_ascii() == b"null" {
        PaymentCodeIn::default()
    } else {
        crate::extract::json_body(&body)?
    };
    let currency = currency(&state.pay, body.currency.as_deref())?;
    let limit = body
        .limit
        .map(|l| u64::try_from(l).map_err(|_| PayError::Invalid("limit must be positive")))
        .transpose()?;
    let (code, session) = state
        .pay
        .create_payment_code(
            &me,
            currency,
            limit,
            proof(&body.step_up)?.as_ref(),
            &client,
        )
        .await?;
    Ok(json_with_session(
        StatusCode::CREATED,
        &PaymentCodeOut {
            id: code.id,
            qr_payload: code.code.as_deref().map(koban_pay::qr::code_qr),
            code: code.code,
            currency: code.currency.code(),
            limit: clamp(i128::from(code.limit_minor)),
            expires_at: code.expires_at_ms,
            session: session.as_ref().map(session_out),
        },
        session.as_ref(),
        state.config.dev,
    ))
}

/// The caller's payment codes that can still be charged.
#[utoipa::path(get, path = "/v1/payment-codes", tag = "qr",
    responses((status = 200, body = [PaymentCodeOut])), security(("session" = [])))]
pub async fn live_codes<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let out: Vec<_> = state
        .pay
        .live_payment_codes(&me)
        .await?
        .into_iter()
        .map(|c| PaymentCodeOut {
            id: c.id,
            code: None,
            qr_payload: None,
            currency: c.currency.code(),
            limit: clamp(i128::from(c.limit_minor)),
            expires_at: c.expires_at_ms,
            session: None,
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Revokes a payment code.
#[utoipa::path(delete, path = "/v1/payment-codes/{id}", tag = "qr", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn revoke_code<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.pay.revoke_payment_code(&me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- merchant endpoints

/// Creates a payment request and its signed QR payload (API key, `payments:write`).
#[utoipa::path(post, path = "/v1/merchant/payment-requests", tag = "merchant", request_body = PaymentRequestIn,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = PaymentRequestOut), (status = 422, body = Problem)), security(("api_key" = [])))]
pub async fn create_request<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
    IdemKey(key): IdemKey,
    Json(body): Json<PaymentRequestIn>,
) -> Result<Response, ApiError> {
    let amount = parse_amount(body.amount)?;
    let currency = currency(&state.pay, body.currency.as_deref())?;
    let request = state
        .pay
        .create_payment_request(
            &merchant,
            amount,
            currency,
            &body.reference,
            body.expires_in_s.unwrap_or(900),
            &key,
        )
        .await?;
    Ok(json(StatusCode::CREATED, &request_out(request)))
}

/// One of the merchant's payment requests, with its status (API key, `payments:read`).
#[utoipa::path(get, path = "/v1/merchant/payment-requests/{id}", tag = "merchant", params(("id" = String, Path)),
    responses((status = 200, body = PaymentRequestOut), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn get_request<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let request = state.pay.merchant_request(&merchant, &id).await?;
    Ok(json(StatusCode::OK, &request_out(request)))
}

/// Charges a customer-presented code (API key, `payments:write`). A larger amount than the
/// code allows fails with code `code_limit` and a message the till can show. A code that
/// cannot be charged (unknown, used, expired) answers 410; after 20 unknown codes from one
/// key, 50 across one merchant's keys, or 50 from one network, within 15 minutes, charges
/// answer 429 with `Retry-After` until the window ends.
#[utoipa::path(post, path = "/v1/merchant/charges", tag = "merchant", request_body = ChargeIn,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = MerchantPaymentOut), (status = 410, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)), security(("api_key" = [])))]
pub async fn charge<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
    ClientInfo(client): ClientInfo,
    IdemKey(key): IdemKey,
    Json(body): Json<ChargeIn>,
) -> Result<Response, ApiError> {
    let amount = parse_amount(body.amount)?;
    let currency = currency(&state.pay, body.currency.as_deref())?;
    let payment = state
        .pay
        .charge_code(
            &merchant,
            &body.code,
            amount,
            currency,
            &body.reference,
            &key,
            Some(&client),
        )
        .await?;
    let status = if payment.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json(status, &merchant_payment_out(&payment)))
}

/// Refunds all or part of a payment (API key, `refunds:write`).
#[utoipa::path(post, path = "/v1/merchant/payments/{id}/refunds", tag = "merchant", request_body = RefundIn,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = RefundOut), (status = 404, body = Problem), (status = 422, body = Problem)), security(("api_key" = [])))]
pub async fn refund<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
    Json(body): Json<RefundIn>,
) -> Result<Response, ApiError> {
    let payment = parse_transfer_id(&id).map_err(|_| ApiError::NotFound)?;
    let amount = parse_amount(body.amount)?;
    let refund = state.pay.refund(&merchant, payment, amount, &key).await?;
    let out = RefundOut {
        id: id_text(refund.transfer.id),
        payment_id: id_text(refund.payment),
        amount: money(amount.minor_units(), refund.transfer.currency),
        refunded_total: clamp(i128::from(refund.refunded_total)),
        replayed: refund.replayed,
    };
    let status = if refund.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json(status, &out))
}

/// The merchant's balance (API key, `payments:read`).
#[utoipa::path(get, path = "/v1/merchant/balance", tag = "merchant", params(CurrencyQuery),
    responses((status = 200, body = AccountOut)), security(("api_key" = [])))]
pub async fn merchant_balance<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
    Query(q): Query<CurrencyQuery>,
) -> Result<Response, ApiError> {
    let currency = currency(&state.pay, q.currency.as_deref())?;
    let account = state.pay.merchant_balance(&merchant, currency).await?;
    Ok(json(
        StatusCode::OK,
        &account_out("merchant_balance", &account),
    ))
}

/// Pays the merchant's balance out to its verified bank account (API key, `payments:write`).
#[utoipa::path(post, path = "/v1/merchant/payouts", tag = "merchant", request_body = MerchantPayoutIn,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 202, body = BankOperationOut), (status = 422, body = Problem)), security(("api_key" = [])))]
pub async fn merchant_payout<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
    IdemKey(key): IdemKey,
    Json(body): Json<MerchantPayoutIn>,
) -> Result<Response, ApiError> {
    if !merchant.scopes.contains("payments:write") {
        return Err(ApiError::Scope("payments:write"));
    }
    let amount = parse_amount(body.amount)?;
    let currency = currency(&state.pay, body.currency.as_deref())?;
    let op = state
        .pay
        .merchant_payout(
            &merchant,
            &BankMove {
                source_id: body.source_id,
                amount,
                currency,
            },
            &key,
        )
        .await?;
    Ok(json(StatusCode::ACCEPTED, &bank_op_out(&op)))
}

// ---------------------------------------------------------------- operator endpoints

/// The issuer's accounts with balances, and the e-money reconciliation (operators).
#[utoipa::path(get, path = "/v1/ops/issuer-accounts", tag = "operators",
    responses((status = 200, body = IssuerOut), (status = 403, body = Problem)), security(("session" = [])))]
pub async fn issuer_accounts<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    me.operator(&[
        koban_auth::Role::Analyst,
        koban_auth::Role::Approver,
        koban_auth::Role::Support,
    ])?;
    let accounts = state
        .pay
        .issuer_accounts()
        .await?
        .iter()
        .map(|(which, account)| account_out(which.name(), account))
        .collect();
    let reconciliation = state
        .pay
        .reconcile()
        .await?
        .into_iter()
        .map(|(currency, outstanding, wallets)| ReconciliationOut {
            currency: currency.code(),
            emoney_outstanding: clamp(outstanding),
            wallets_total: clamp(wallets),
            balanced: outstanding == wallets,
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &IssuerOut {
            accounts,
            reconciliation,
        },
    ))
}

/// Verification requests waiting for a decision (support, approver).
#[utoipa::path(get, path = "/v1/ops/kyc", tag = "operators",
    responses((status = 200, body = [KycRequestOut])), security(("session" = [])))]
pub async fn pending_kyc<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let out: Vec<_> = state
        .pay
        .pending_kyc(&me)
        .await?
        .into_iter()
        .map(|(user_id, legal_name, submitted_at)| KycRequestOut {
            user_id,
            legal_name_masked: koban_pay::mask_name(&legal_name),
            submitted_at,
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// The legal name of a pending verification request in full (support, approver), for the
/// operator who checks it: the reason and the operator are recorded in the audit chain as the
/// name is read.
#[utoipa::path(post, path = "/v1/ops/kyc/{user_id}/reveal", tag = "operators", params(("user_id" = String, Path)), request_body = RevealIn,
    responses((status = 200, body = KycNameOut), (status = 404, body = Problem), (status = 422, description = "No reason of 5 to 500 characters", body = Problem)),
    security(("session" = [])))]
pub async fn reveal_kyc<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(user_id): Path<String>,
    Json(body): Json<RevealIn>,
) -> Result<Response, ApiError> {
    let user = crate::extract::user_id(&user_id)?;
    let legal_name = state.pay.reveal_kyc_name(&me, &user, &body.reason).await?;
    Ok(json(
        StatusCode::OK,
        &KycNameOut {
            user_id,
            legal_name,
        },
    ))
}

/// Approves a verification request (support, approver), naming the legal name that was
/// checked: a request resubmitted since with another name is not approved.
#[utoipa::path(post, path = "/v1/ops/kyc/{user_id}/approve", tag = "operators", params(("user_id" = String, Path)), request_body = KycIn,
    responses((status = 204), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn approve_kyc<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(user_id): Path<String>,
    Json(body): Json<KycIn>,
) -> Result<StatusCode, ApiError> {
    state
        .pay
        .decide_kyc(
            &me,
            &crate::extract::user_id(&user_id)?,
            &body.legal_name,
            true,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rejects a verification request (support, approver).
#[utoipa::path(post, path = "/v1/ops/kyc/{user_id}/reject", tag = "operators", params(("user_id" = String, Path)), request_body = KycIn,
    responses((status = 204), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn reject_kyc<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(user_id): Path<String>,
    Json(body): Json<KycIn>,
) -> Result<StatusCode, ApiError> {
    state
        .pay
        .decide_kyc(
            &me,
            &crate::extract::user_id(&user_id)?,
            &body.legal_name,
            false,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Transfers held for review (analyst, approver).
#[utoipa::path(get, path = "/v1/ops/held-transfers", tag = "operators",
    responses((status = 200, body = [HeldTransferOut])), security(("session" = [])))]
pub async fn held_transfers<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let out: Vec<_> = state
        .pay
        .held_transfers(&me)
        .await?
        .into_iter()
        .map(held_out)
        .collect();
    Ok(json(StatusCode::OK, &out))
}

fn held_out(h: koban_pay::review::HeldTransfer) -> HeldTransferOut {
    HeldTransferOut {
        id: id_text(h.id),
        payer_user_id: h.payer_user,
        amount: money(h.amount, h.currency),
        status: h.status,
        created_at: h.created_at_ms,
        release_requested_by: h.release_requested_by,
    }
}

async fn decide_held<S: LedgerStore>(
    state: ApiState<S>,
    me: koban_auth::Principal,
    id: String,
    release: bool,
) -> Result<Response, ApiError> {
    let id = parse_transfer_id(&id).map_err(|_| ApiError::NotFound)?;
    let held = state.pay.decide_held(&me, id, release).await?;
    // A release asked for by a first operator waits for a second one.
    let status = if held.status == "held" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &held_out(held)))
}

/// Releases a held transfer to its payee in two steps (analyst, approver): the first operator
/// asks (202, still held, `release_requested_by` set), a second one, neither the first nor
/// linked to them by invitation, releases (200). Refusing the second step is audited and
/// raises an alert on the operator.
#[utoipa::path(post, path = "/v1/ops/held-transfers/{id}/release", tag = "operators", params(("id" = String, Path)),
    responses((status = 200, body = HeldTransferOut), (status = 202, body = HeldTransferOut), (status = 403, body = Problem), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn release_held<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    decide_held(state, me, id, true).await
}

/// Voids a held transfer: the money returns to the payer (analyst, approver).
#[utoipa::path(post, path = "/v1/ops/held-transfers/{id}/void", tag = "operators", params(("id" = String, Path)),
    responses((status = 200, body = HeldTransferOut), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn void_held<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    decide_held(state, me, id, false).await
}

/// Sets a merchant's fee (admin).
#[utoipa::path(post, path = "/v1/ops/merchants/{id}/fees", tag = "operators", request_body = FeeIn, params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn set_fee<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Json(body): Json<FeeIn>,
) -> Result<StatusCode, ApiError> {
    state
        .pay
        .set_merchant_fee(
            &me,
            &crate::extract::user_id(&id)?,
            body.fee_bps,
            body.fee_fixed_minor,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- sandbox

/// SANDBOX: opens an account at the simulated bank (development and tests only).
#[utoipa::path(post, path = "/v1/sandbox/bank/accounts", tag = "sandbox", request_body = SandboxAccountIn,
    responses((status = 201, body = SandboxAccountOut), (status = 404, description = "Sandbox off")), security(("session" = [])))]
pub async fn sandbox_account<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Json(body): Json<SandboxAccountIn>,
) -> Result<Response, ApiError> {
    me.full()?;
    let name = LegalName::parse(&body.holder_name)?;
    let behaviour = Behaviour::parse(body.behaviour.as_deref().unwrap_or("normal"))?;
    let number = state
        .pay
        .sandbox_open_account(&me, &name, behaviour)
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &SandboxAccountOut {
            sandbox: true,
            bank: koban_pay::bank::SANDBOX_BANK,
            account_number: number,
        },
    ))
}

/// SANDBOX: a simulated bank account's statement (where the micro-deposits show).
#[utoipa::path(get, path = "/v1/sandbox/bank/accounts/{number}/statement", tag = "sandbox", params(("number" = String, Path)),
    responses((status = 200, body = [SandboxEntryOut])), security(("session" = [])))]
pub async fn sandbox_statement<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(number): Path<String>,
) -> Result<Response, ApiError> {
    me.full()?;
    let out: Vec<_> = state
        .pay
        .sandbox_statement(&me, &number)
        .await?
        .into_iter()
        .map(|(amount, description, created_at)| SandboxEntryOut {
            amount,
            description,
            created_at,
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// SANDBOX: credits test money to the caller's wallet (at most 100,000 minor units at once).
#[utoipa::path(post, path = "/v1/sandbox/faucet", tag = "sandbox", request_body = FaucetIn,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = EntryOut), (status = 404, description = "Sandbox off")), security(("session" = [])))]
pub async fn faucet<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    IdemKey(key): IdemKey,
    Json(body): Json<FaucetIn>,
) -> Result<Response, ApiError> {
    let amount = parse_amount(body.amount)?;
    let currency = currency(&state.pay, body.currency.as_deref())?;
    let transfer: Transfer = state.pay.faucet(&me, currency, amount, &key).await?;
    let account = transfer.credit;
    let entry = koban_pay::wallets::Entry {
        incoming: true,
        kind: "sandbox_faucet",
        status: "posted",
        transfer,
    };
    Ok(json(StatusCode::CREATED, &entry_out(&entry, account)))
}

// ---------------------------------------------------------------- webhooks

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    /// Where deliveries are POSTed: an `https://` URL whose host resolves only to public
    /// addresses (loopback, private, shared, link-local and metadata, multicast, documentation
    /// and reserved addresses are refused, here and at each delivery), with no user name or
    /// password. A development server (`--dev`) also accepts `http://` and loopback.
    #[schema(example = "https://shop.example/koban/webhooks")]
    pub url: String,
    /// Any of `payment.succeeded`, `refund.succeeded`, `payout.settled`, `payout.failed`.
    pub event_types: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookOut {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub created_at: i64,
    /// `whsec_...`: shown only when created or rotated. Verify `webhook-signature` with it.
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookSecretOut {
    /// The new secret; the old one keeps signing beside it for 24 hours.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryOut {
    /// The `webhook-id` header of the delivery.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (retried with backoff for 3 days).
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    /// Why the last attempt got no HTTP answer: `address_refused` (the URL or an address it
    /// resolves to is not public), `dns_failed`, `connect_failed`, `tls_failed` (most often
    /// a certificate no public authority signed, or for another name), `no_response`,
    /// `timed_out`, `endpoint_deleted` or `secret_unreadable`; absent when it got an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub next_attempt_at: i64,
    pub created_at: i64,
}

fn endpoint_out(e: koban_pay::webhooks::Endpoint, secret: Option<String>) -> WebhookOut {
    WebhookOut {
        id: e.id,
        url: e.url,
        event_types: e.event_types,
        created_at: e.created_at_ms,
        secret,
    }
}

/// Subscribes a webhook endpoint (API key, `webhooks:manage`); the secret is shown once.
#[utoipa::path(post, path = "/v1/merchant/webhooks", tag = "webhooks", request_body = WebhookIn,
    responses((status = 201, body = WebhookOut), (status = 422, body = Problem)), security(("api_key" = [])))]
pub async fn create_webhook<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
    Json(body): Json<WebhookIn>,
) -> Result<Response, ApiError> {
    let (endpoint, secret) = state
        .pay
        .create_webhook(&merchant, &body.url, &body.event_types)
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &endpoint_out(endpoint, Some(secret.expose().clone())),
    ))
}

/// The merchant's webhook endpoints (API key, `webhooks:manage`).
#[utoipa::path(get, path = "/v1/merchant/webhooks", tag = "webhooks",
    responses((status = 200, body = [WebhookOut])), security(("api_key" = [])))]
pub async fn webhooks<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
) -> Result<Response, ApiError> {
    let out: Vec<_> = state
        .pay
        .webhooks(&merchant)
        .await?
        .into_iter()
        .map(|e| endpoint_out(e, None))
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Rotates an endpoint's secret; the old one still signs for 24 hours.
#[utoipa::path(post, path = "/v1/merchant/webhooks/{id}/rotate", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = WebhookSecretOut), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn rotate_webhook<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let secret = state.pay.rotate_webhook_secret(&merchant, &id).await?;
    Ok(json(
        StatusCode::OK,
        &WebhookSecretOut {
            secret: secret.expose().clone(),
        },
    ))
}

/// Removes an endpoint; nothing more is delivered to it.
#[utoipa::path(delete, path = "/v1/merchant/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn delete_webhook<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.pay.delete_webhook(&merchant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An endpoint's delivery log, newest first.
#[utoipa::path(get, path = "/v1/merchant/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = [DeliveryOut])), security(("api_key" = [])))]
pub async fn webhook_deliveries<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let out: Vec<_> = state
        .pay
        .webhook_deliveries(&merchant, &id)
        .await?
        .into_iter()
        .map(|d| DeliveryOut {
            id: d.id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at_ms,
            created_at: d.created_at_ms,
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Sends a delivery again.
#[utoipa::path(post, path = "/v1/merchant/webhook-deliveries/{id}/redeliver", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 202), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn redeliver<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantCaller(merchant): MerchantCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.pay.redeliver(&merchant, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

// ---------------------------------------------------------------- handles and pay links

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandleIn {
    /// 3 to 20 letters, digits or underscores; others pay you at `@handle`.
    #[schema(example = "hanako")]
    pub handle: String,
}

#[derive(Serialize, ToSchema)]
pub struct HandleOut {
    #[schema(example = "@hanako")]
    pub handle: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayLinkIn {
    pub amount: i64,
    pub currency: Option<String>,
    pub message: Option<String>,
    /// 60 s to 30 days (default 7 days).
    pub expires_in_s: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct PayLinkOut {
    /// The link's id (`kpl_...`): share it; whoever holds it can see and pay the request.
    pub id: String,
    pub requester_masked_name: String,
    pub amount: MoneyOut,
    pub message: Option<String>,
    /// `open`, `paid`, `expired` or `cancelled`.
    pub status: &'static str,
    pub expires_at: i64,
    pub created_at: i64,
}

fn link_out(l: koban_pay::links::PayLink) -> PayLinkOut {
    PayLinkOut {
        amount: money(l.amount.minor_units(), l.currency),
        id: l.id,
        requester_masked_name: l.requester_masked_name,
        message: l.message,
        status: l.status,
        expires_at: l.expires_at_ms,
        created_at: l.created_at_ms,
    }
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct StepUpBody {
    pub step_up: Option<StepUpIn>,
}

/// Sets the caller's handle, by which others can pay them (`"to": "@handle"`).
#[utoipa::path(post, path = "/v1/me/handle", tag = "transfers", request_body = HandleIn,
    responses((status = 200, body = HandleOut), (status = 409, body = Problem), (status = 422, body = Problem)), security(("session" = [])))]
pub async fn set_handle<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Json(body): Json<HandleIn>,
) -> Result<Response, ApiError> {
    let handle = state.pay.set_handle(&me, &body.handle).await?;
    Ok(json(StatusCode::OK, &HandleOut { handle }))
}

/// Requests money: a link whoever holds it may pay once.
#[utoipa::path(post, path = "/v1/pay-links", tag = "transfers", request_body = PayLinkIn,
    responses((status = 201, body = PayLinkOut), (status = 422, body = Problem)), security(("session" = [])))]
pub async fn create_pay_link<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Json(body): Json<PayLinkIn>,
) -> Result<Response, ApiError> {
    let amount = parse_amount(body.amount)?;
    let currency = currency(&state.pay, body.currency.as_deref())?;
    let link = state
        .pay
        .create_pay_link(
            &me,
            amount,
            currency,
            body.message.as_deref(),
            body.expires_in_s,
        )
        .await?;
    Ok(json(StatusCode::CREATED, &link_out(link)))
}

/// A pay link: who asks, for how much, and whether it is still open.
#[utoipa::path(get, path = "/v1/pay-links/{id}", tag = "transfers", params(("id" = String, Path)),
    responses((status = 200, body = PayLinkOut), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn pay_link<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let link = state.pay.pay_link(&me, &id).await?;
    Ok(json(StatusCode::OK, &link_out(link)))
}

/// Withdraws one of the caller's pay links.
#[utoipa::path(delete, path = "/v1/pay-links/{id}", tag = "transfers", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn cancel_pay_link<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.pay.cancel_pay_link(&me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pays a pay link: a transfer to its requester, with the same limits and step-up as any.
#[utoipa::path(post, path = "/v1/pay-links/{id}/pay", tag = "transfers", request_body = StepUpBody,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = TransferOut), (status = 403, body = Problem), (status = 409, body = Problem), (status = 410, body = Problem)),
    security(("session" = [])))]
pub async fn pay_pay_link<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
    Json(body): Json<StepUpBody>,
) -> Result<Response, ApiError> {
    let outcome = state
        .pay
        .pay_pay_link(&me, &id, &key, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    Ok(transfer_answer(&outcome, state.config.dev))
}

// ---------------------------------------------------------------- card top-ups

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardIn {
    /// SANDBOX test cards: 4242424242424242 works, 4000000000000002 is declined,
    /// 4000000000003220 is always challenged. Never stored; never logged.
    #[schema(example = "4242424242424242")]
    pub number: String,
    pub exp_month: i64,
    pub exp_year: i64,
    /// Checked once and forgotten.
    pub cvc: String,
}

#[derive(Serialize, ToSchema)]
pub struct CardOut {
    pub id: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
    /// True once a top-up's challenge was passed with this card.
    pub verified: bool,
    pub created_at: i64,
}

fn card_out(c: koban_pay::card_topups::CardSource) -> CardOut {
    CardOut {
        id: c.id,
        brand: c.brand,
        last4: c.last4,
        exp_month: c.exp_month,
        exp_year: c.exp_year,
        verified: c.verified,
        created_at: c.created_at_ms,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeIn {
    pub id: String,
    pub code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardTopupIn {
    /// A card id from `/v1/funding-sources/cards`.
    pub source_id: String,
    pub amount: i64,
    pub currency: Option<String>,
    /// The answer to a `card-challenge-required` problem.
    pub challenge: Option<ChallengeIn>,
}

/// Adds a card for top-ups (sandbox acquirer). The number is kept only as a fingerprint and
/// its last four digits; the security code is never stored.
#[utoipa::path(post, path = "/v1/funding-sources/cards", tag = "funding", request_body = CardIn,
    responses((status = 201, body = CardOut), (status = 409, body = Problem), (status = 422, body = Problem)), security(("session" = [])))]
pub async fn add_card<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Json(body): Json<CardIn>,
) -> Result<Response, ApiError> {
    let card = koban_pay::card_topups::CardDetails {
        number: body.number,
        exp_month: body.exp_month,
        exp_year: body.exp_year,
        cvc: koban_auth::Secret::new(body.cvc),
    };
    let added = state.pay.add_card(&me, &card).await?;
    Ok(json(StatusCode::CREATED, &card_out(added)))
}

/// The caller's cards.
#[utoipa::path(get, path = "/v1/funding-sources/cards", tag = "funding",
    responses((status = 200, body = [CardOut])), security(("session" = [])))]
pub async fn cards<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let out: Vec<_> = state
        .pay
        .cards(&me)
        .await?
        .into_iter()
        .map(card_out)
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Tops up from a card. A new card or a new device first answers 403
/// `card-challenge-required` (the issuer's code goes to the mailbox in the sandbox); repeat
/// the same request with `challenge: {id, code}`. Pending until the acquirer captures.
#[utoipa::path(post, path = "/v1/topups/card", tag = "funding", request_body = CardTopupIn,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 202, body = BankOperationOut), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("session" = [])))]
pub async fn card_topup<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    IdemKey(key): IdemKey,
    Json(body): Json<CardTopupIn>,
) -> Result<Response, ApiError> {
    use koban_pay::card_topups::ChallengeAnswer;
    let request = BankMove {
        source_id: body.source_id,
        amount: parse_amount(body.amount)?,
        currency: currency(&state.pay, body.currency.as_deref())?,
    };
    let answer = body.challenge.map(|c| ChallengeAnswer {
        id: c.id,
        code: koban_auth::Secret::new(c.code),
    });
    let op = state
        .pay
        .card_topup(&me, &request, &key, answer.as_ref(), &client)
        .await?;
    Ok(json(StatusCode::ACCEPTED, &bank_op_out(&op)))
}
