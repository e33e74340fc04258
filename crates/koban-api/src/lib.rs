//! Koban's HTTP API. The only crate that knows HTTP and JSON on the wire: it parses requests
//! into domain values, calls the services (`koban_auth::Auth`, the ledger store), and maps
//! every error to an RFC 9457 problem in one place (`problem.rs`).
//!
//! Architecture invariant: handlers hold no state between requests; everything shared lives in
//! the database, so any number of instances can serve the same clients.

mod bankfiles;
pub mod cards;
pub mod extract;
mod identity;
pub mod offline;
mod openapi;
mod ops;
mod pages;
pub mod payments;
pub mod privacy;
pub mod problem;
mod risk;
pub mod wire;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use koban_auth::Auth;
use koban_store::LedgerStore;
use metrics_exporter_prometheus::PrometheusHandle;

pub use openapi::openapi_json;

/// The largest request body accepted, in bytes.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// The largest bank statement an operator may import, in bytes (a day of a busy account); read
/// only once the caller is known to be an admin.
pub const STATEMENT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Settings of the HTTP layer.
#[derive(Clone, Debug, Default)]
pub struct ApiConfig {
    /// Development mode: cookies without `Secure`, the mailbox readable at `/v1/dev/mailbox`.
    pub dev: bool,
    /// Take the client address from the last `X-Forwarded-For` hop (behind a trusted proxy).
    pub trust_forwarded_for: bool,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState<S: LedgerStore> {
    pub store: S,
    pub auth: Auth<S::Sql>,
    pub pay: koban_pay::Payments<S>,
    pub cards: koban_cards::Cards<S>,
    pub metrics: Option<PrometheusHandle>,
    pub config: ApiConfig,
}

/// The whole router; generic over the storage backend, which `main` picked once.
pub fn router<S: LedgerStore>(state: ApiState<S>) -> Router {
    let v1 = identity_routes::<S>()
        .merge(payment_routes::<S>())
        .merge(merchant_routes::<S>())
        .merge(risk_routes::<S>())
        .merge(card_routes::<S>());
    Router::new()
        .nest("/v1", v1)
        .route(
            "/not-me",
            get(pages::not_me_page).post(pages::not_me_submit::<S>),
        )
        .route(
            "/recovery/cancel",
            get(pages::cancel_recovery_page).post(pages::cancel_recovery_submit::<S>),
        )
        .route(
            "/operators/enrol",
            get(pages::enrol_operator_page).post(pages::enrol_operator_submit::<S>),
        )
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics_text::<S>))
        .route("/openapi.json", get(openapi_response::<S>))
        .fallback(problem::not_found)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(middleware::from_fn_with_state(
            state.config.dev,
            security_headers,
        ))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Identity: sign-up, sign-in, factors, sessions, recovery, operators' enrolment, merchants'
/// API keys; and the operators' identity work (alerts, recovery requests, audit log).
fn identity_routes<S: LedgerStore>() -> Router<ApiState<S>> {
    Router::new()
        .route("/signup", post(identity::signup::<S>))
        .route("/signup/verify", post(identity::verify_email::<S>))
        .route("/login", post(identity::login::<S>))
        .route("/login/second-factor", post(identity::second_factor::<S>))
        .route(
            "/login/passkey/start",
            post(identity::passkey_login_start::<S>),
        )
        .route(
            "/login/passkey/finish",
            post(identity::passkey_login_finish::<S>),
        )
        .route(
            "/factors/passkeys/register/start",
            post(identity::passkey_register_start::<S>),
        )
        .route(
            "/factors/passkeys/register/finish",
            post(identity::passkey_register_finish::<S>),
        )
        .route("/logout", post(identity::logout::<S>))
        .route("/me", get(identity::me::<S>))
        .route("/me/email", post(identity::change_email::<S>))
        .route("/me/email/confirm", post(identity::confirm_email::<S>))
        .route("/me/phone", post(identity::change_phone::<S>))
        .route("/me/export", post(privacy::export::<S>))
        .route("/me/close", post(privacy::close::<S>))
        .route("/me/password", post(identity::change_password::<S>))
        .route("/sessions", get(identity::sessions::<S>))
        .route("/sessions/{id}", delete(identity::revoke_session::<S>))
        .route("/factors/totp", post(identity::totp_begin::<S>))
        .route(
            "/factors/totp/{id}/confirm",
            post(identity::totp_confirm::<S>),
        )
        .route("/factors/{id}/remove", post(identity::remove_factor::<S>))
        .route(
            "/factors/recovery-codes",
            post(identity::recovery_codes::<S>),
        )
        .route("/not-me", post(identity::not_me::<S>))
        .route("/password/forgot", post(identity::forgot_password::<S>))
        .route("/password/reset", post(identity::reset_password::<S>))
        .route("/recovery-requests", post(identity::request_recovery::<S>))
        .route(
            "/recovery-requests/cancel",
            post(identity::cancel_recovery::<S>),
        )
        .route("/operators/enrol", post(identity::enrol_operator::<S>))
        .route("/ops/alerts", get(ops::alerts::<S>))
        .route("/ops/recovery-requests", get(ops::recovery_requests::<S>))
        .route(
            "/ops/recovery-requests/{id}/approve",
            post(ops::approve_recovery::<S>),
        )
        .route("/ops/operators", post(ops::create_operator::<S>))
        .route("/ops/audit", get(ops::audit_log::<S>))
        .route(
            "/merchant/api-keys",
            post(ops::create_api_key::<S>).get(ops::api_keys::<S>),
        )
        .route(
            "/merchant/api-keys/{id}/rotate",
            post(ops::rotate_api_key::<S>),
        )
        .route("/merchant/api-keys/{id}", delete(ops::revoke_api_key::<S>))
        .route("/merchant/whoami", get(ops::whoami))
        .route("/dev/mailbox", get(ops::mailbox::<S>))
}

/// A customer's payments: wallet and statement, KYC, funding, top-ups and payouts, transfers,
/// handles and links, QR payments and payment codes.
fn payment_routes<S: LedgerStore>() -> Router<ApiState<S>> {
    Router::new()
        .route("/wallet", get(payments::wallet::<S>))
        .route("/wallet/transactions", get(payments::history::<S>))
        .route("/wallet/statement.csv", get(payments::statement::<S>))
        .route("/kyc", post(payments::submit_kyc::<S>))
        .route("/payees/lookup", get(payments::lookup_payee::<S>))
        .route("/transfers", post(payments::transfer::<S>))
        .route("/me/handle", post(payments::set_handle::<S>))
        .route("/pay-links", post(payments::create_pay_link::<S>))
        .route(
            "/pay-links/{id}",
            get(payments::pay_link::<S>).delete(payments::cancel_pay_link::<S>),
        )
        .route("/pay-links/{id}/pay", post(payments::pay_pay_link::<S>))
        .route("/funding-sources", get(payments::funding_sources::<S>))
        .route("/funding-sources/bank", post(payments::link_bank::<S>))
        .route(
            "/funding-sources/{id}/confirm",
            post(payments::confirm_bank::<S>),
        )
        .route("/topups", post(payments::topup::<S>))
        .route("/topups/card", post(payments::card_topup::<S>))
        .route(
            "/funding-sources/cards",
            post(payments::add_card::<S>).get(payments::cards::<S>),
        )
        .route("/payouts", post(payments::payout::<S>))
        .route("/bank-operations", get(payments::bank_operations::<S>))
        .route("/qr/inspect", post(payments::inspect_qr::<S>))
        .route("/qr/pay", post(payments::pay_qr::<S>))
        .route(
            "/payment-codes",
            post(payments::create_code::<S>).get(payments::live_codes::<S>),
        )
        .route("/payment-codes/{id}", delete(payments::revoke_code::<S>))
        .route(
            "/offline/purses",
            post(offline::load_purse::<S>).get(offline::purses::<S>),
        )
        .route("/offline/terminals", post(offline::register_terminal::<S>))
        .route("/offline/revocations", get(offline::revocations::<S>))
        .route("/offline/vouchers", post(offline::upload_vouchers::<S>))
        .route("/ops/offline/exposure", get(offline::exposure::<S>))
}

/// Merchants' payments (requests, charges, refunds, balance, payouts, webhooks), the
/// operators' payment work (issuer accounts, KYC, held transfers, fees) and the sandbox bank.
fn merchant_routes<S: LedgerStore>() -> Router<ApiState<S>> {
    Router::new()
        .route(
            "/merchant/payment-requests",
            post(payments::create_request::<S>),
        )
        .route(
            "/merchant/payment-requests/{id}",
            get(payments::get_request::<S>),
        )
        .route("/merchant/charges", post(payments::charge::<S>))
        .route(
            "/merchant/payments/{id}/refunds",
            post(payments::refund::<S>),
        )
        .route("/merchant/balance", get(payments::merchant_balance::<S>))
        .route("/merchant/payouts", post(payments::merchant_payout::<S>))
        .route("/ops/issuer-accounts", get(payments::issuer_accounts::<S>))
        .route("/ops/kyc", get(payments::pending_kyc::<S>))
        .route("/ops/kyc/{user_id}/reveal", post(payments::reveal_kyc::<S>))
        .route(
            "/ops/kyc/{user_id}/approve",
            post(payments::approve_kyc::<S>),
        )
        .route("/ops/kyc/{user_id}/reject", post(payments::reject_kyc::<S>))
        .route("/ops/held-transfers", get(payments::held_transfers::<S>))
        .route(
            "/ops/bank/statements",
            post(bankfiles::import_statement::<S>),
        )
        .route(
            "/ops/bank/statement-lines",
            get(bankfiles::statement_lines::<S>),
        )
        .route(
            "/ops/bank/statement-lines/{id}/resolve",
            post(bankfiles::resolve_statement_line::<S>),
        )
        .route("/ops/bank/files", get(bankfiles::bank_files::<S>))
        .route("/ops/bank/files/{id}", get(bankfiles::bank_file::<S>))
        .route(
            "/ops/held-transfers/{id}/release",
            post(payments::release_held::<S>),
        )
        .route(
            "/ops/held-transfers/{id}/void",
            post(payments::void_held::<S>),
        )
        .route("/ops/merchants/{id}/fees", post(payments::set_fee::<S>))
        .route(
            "/sandbox/bank/accounts",
            post(payments::sandbox_account::<S>),
        )
        .route(
            "/sandbox/bank/accounts/{number}/statement",
            get(payments::sandbox_statement::<S>),
        )
        .route("/sandbox/faucet", post(payments::faucet::<S>))
        .route(
            "/merchant/webhooks",
            post(payments::create_webhook::<S>).get(payments::webhooks::<S>),
        )
        .route(
            "/merchant/webhooks/{id}",
            delete(payments::delete_webhook::<S>),
        )
        .route(
            "/merchant/webhooks/{id}/rotate",
            post(payments::rotate_webhook::<S>),
        )
        .route(
            "/merchant/webhooks/{id}/deliveries",
            get(payments::webhook_deliveries::<S>),
        )
        .route(
            "/merchant/webhook-deliveries/{id}/redeliver",
            post(payments::redeliver::<S>),
        )
}

/// The operators' fraud work: risk alerts and measures, the rules, cases, freezes, reversals,
/// compensations and their approvals.
fn risk_routes<S: LedgerStore>() -> Router<ApiState<S>> {
    Router::new()
        .route("/ops/risk/alerts", get(risk::risk_alerts::<S>))
        .route("/ops/risk/stats", get(risk::risk_stats::<S>))
        .route("/ops/risk/rules", get(risk::rules::<S>))
        .route("/ops/risk/rules/reload", post(risk::reload_rules::<S>))
        .route("/ops/cases", get(risk::cases::<S>))
        .route("/ops/cases/{id}", get(risk::case::<S>))
        .route("/ops/cases/{id}/assign", post(risk::assign_case::<S>))
        .route("/ops/cases/{id}/comments", post(risk::comment_case::<S>))
        .route("/ops/cases/{id}/close", post(risk::close_case::<S>))
        .route(
            "/ops/customers/{id}/freeze",
            post(risk::freeze_customer::<S>),
        )
        .route(
            "/ops/customers/{id}/unfreeze",
            post(risk::unfreeze_customer::<S>),
        )
        .route(
            "/ops/transfers/{id}/reverse",
            post(risk::reverse_transfer::<S>),
        )
        .route("/ops/compensations", post(risk::compensate::<S>))
        .route("/ops/risk-actions", get(risk::risk_actions::<S>))
        .route(
            "/ops/risk-actions/{id}/approve",
            post(risk::approve_action::<S>),
        )
        .route(
            "/ops/risk-actions/{id}/reject",
            post(risk::reject_action::<S>),
        )
}

/// Cards for their holders, an operator's card freeze, and the card network's signed
/// messages.
fn card_routes<S: LedgerStore>() -> Router<ApiState<S>> {
    Router::new()
        .route(
            "/cards",
            post(cards::create_card::<S>).get(cards::cards::<S>),
        )
        .route("/cards/{id}", get(cards::card::<S>))
        .route("/cards/{id}/activate", post(cards::activate_card::<S>))
        .route("/cards/{id}/reveal", post(cards::reveal_card::<S>))
        .route("/cards/{id}/freeze", post(cards::freeze_card::<S>))
        .route("/cards/{id}/unfreeze", post(cards::unfreeze_card::<S>))
        .route("/cards/{id}/controls", post(cards::set_card_controls::<S>))
        .route("/cards/{id}/close", post(cards::close_card::<S>))
        .route("/cards/{id}/activity", get(cards::card_activity::<S>))
        .route(
            "/ops/cards/{id}/freeze",
            post(cards::operator_freeze_card::<S>),
        )
        .route("/network/authorizations", post(cards::authorize::<S>))
        .route(
            "/network/authorizations/{id}/increments",
            post(cards::increment::<S>),
        )
        .route(
            "/network/authorizations/{id}/reversals",
            post(cards::reverse::<S>),
        )
        .route(
            "/network/authorizations/{id}/clearings",
            post(cards::clear::<S>),
        )
        .route(
            "/network/authorizations/{id}/refunds",
            post(cards::refund::<S>),
        )
}

/// The OpenAPI document, naming this server's currencies and limits.
async fn openapi_response<S: LedgerStore>(State(state): State<ApiState<S>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi_json(state.pay.config()),
    )
        .into_response()
}

/// The Content-Security-Policy of the API's answers: nothing may load or run.
pub const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The headers every answer of Koban's carries, with its own Content-Security-Policy: no
/// sniffing, no framing, no referrer, and HSTS outside development.
pub fn set_security_headers(headers: &mut axum::http::HeaderMap, csp: &'static str, dev: bool) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !dev {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
}

/// Security headers on every response.
async fn security_headers(State(dev): State<bool>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    set_security_headers(headers, API_CSP, dev);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The caller's `X-Request-Id` when it is a short token (at most 64 letters, digits, `-`, `_`
/// or `.`, so it cannot forge a log line), else a new one.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), str::to_owned)
}

/// One JSON log line per request: method, route template (never the raw path or query, which
/// may carry tokens), status and time taken. Every line logged while the request runs carries
/// its id (in the `request` span), and the answer carries it in `X-Request-Id`, so a proxy's
/// log, the client's report and Koban's lines can be joined.
pub async fn log_request(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_owned(), |p| p.as_str().to_owned());
    let id = request_id(&request);
    let span = tracing::info_span!("request", request_id = %id);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            method = %method,
            route,
            status = response.status().as_u16(),
            ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "request"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn readyz<S: LedgerStore>(State(state): State<ApiState<S>>) -> Response {
    match state.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            let body = serde_json::json!({
                "type": "about:blank",
                "title": "Service Unavailable",
                "status": 503,
                "detail": "the database is not answering",
            });
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/problem+json")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

async fn metrics_text<S: LedgerStore>(State(state): State<ApiState<S>>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => problem::ApiError::NotFound.into_response(),
    }
}
