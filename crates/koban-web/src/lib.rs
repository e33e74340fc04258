//! Koban's web pages: the customer wallet. Server-rendered HTML from templates checked at
//! compile time (askama), in Japanese and English (Fluent catalogues in `locales/`), working as
//! plain forms without JavaScript.
//!
//! Architecture invariant: a page parses its form at the edge and calls the same domain
//! operations as the JSON API (`koban_auth::Auth`, `koban_pay::Payments`), so no rule lives
//! only in a page. Pages hold no state between requests. Every form carries a CSRF token; every
//! answer has a strict Content-Security-Policy (no inline script) and `Cache-Control: no-store`.

pub mod account;
pub mod cards;
pub mod case;
pub mod chart;
pub mod console;
pub mod dashboard;
pub mod developers;
pub mod factors;
pub mod funding;
pub mod i18n;
pub mod links;
pub mod merchant;
pub mod oversight;
pub mod page;
pub mod pay;
pub mod security;
pub mod stepup;
pub mod wallet;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use koban_api::ApiState;
use koban_store::LedgerStore;

/// The whole service: the JSON API and the pages beside it, on one origin.
pub fn app<S: LedgerStore>(state: ApiState<S>) -> Router {
    koban_api::router(state.clone()).merge(router(state))
}

/// The pages alone.
pub fn router<S: LedgerStore>(state: ApiState<S>) -> Router {
    let dev = state.config.dev;
    let mut pages = account_pages::<S>()
        .merge(wallet_pages::<S>())
        .merge(merchant_pages::<S>())
        .merge(console_pages::<S>())
        .route("/assets/{file}", get(asset));
    if dev {
        pages = pages
            .route("/dev/mailbox", get(account::mailbox::<S>))
            .route("/bank/sandbox", post(funding::sandbox_open::<S>))
            .route(
                "/sandbox/bank/{number}",
                get(funding::sandbox_statement::<S>),
            );
    }
    pages
        .layer(DefaultBodyLimit::max(page::FORM_BYTES_MAX))
        .layer(middleware::from_fn_with_state(dev, page_headers))
        .layer(middleware::from_fn(koban_api::log_request))
        .with_state(state)
}

/// Signing up and in, the first factor, the language, and the customer's security centre.
fn account_pages<S: LedgerStore>() -> Router<ApiState<S>> {
    Router::new()
        .route("/", get(account::start::<S>))
        .route("/lang", post(account::set_lang::<S>))
        .route(
            "/signup",
            get(account::signup_page::<S>).post(account::signup::<S>),
        )
        .route(
            "/signup/verify",
            get(account::verify_page::<S>).post(account::verify::<S>),
        )
        .route(
            "/signin",
            get(account::signin_page::<S>).post(account::signin::<S>),
        )
        .route(
            "/signin/code",
            get(account::code_page::<S>).post(account::code::<S>),
        )
        .route("/signout", post(account::signout::<S>))
        .route("/enrol", get(account::enrol_page::<S>))
        .route("/enrol/totp", post(account::totp_begin::<S>))
        .route("/enrol/totp/confirm", post(account::totp_confirm::<S>))
        .route("/security", get(security::centre::<S>))
        .route("/security/email", post(security::change_email::<S>))
        .route(
            "/security/email/confirm",
            post(security::confirm_email::<S>),
        )
        .route("/security/phone", post(security::change_phone::<S>))
        .route("/security/export", post(security::export::<S>))
        .route("/security/close", post(security::close::<S>))
        .route("/security/password", post(security::change_password::<S>))
        .route(
            "/security/recovery-codes",
            post(security::recovery_codes::<S>),
        )
        .route("/security/factors/totp", post(factors::add_totp::<S>))
        .route("/security/factors/passkey", post(factors::add_passkey::<S>))
        .route("/security/factors/{id}/remove", post(factors::remove::<S>))
        .route(
            "/security/not-me",
            get(security::not_me_page::<S>).post(security::not_me::<S>),
        )
        .route(
            "/security/sessions/end-others",
            post(security::end_other_sessions::<S>),
        )
        .route(
            "/security/sessions/{id}/end",
            post(security::end_session::<S>),
        )
}

/// A customer's money: home, sending, the statement, top-ups, payouts, the bank, KYC, cards,
/// links and the @handle, paying a store and the payment code.
fn wallet_pages<S: LedgerStore>() -> Router<ApiState<S>> {
    Router::new()
        .route("/home", get(wallet::home::<S>))
        .route("/send", get(wallet::send_page::<S>))
        .route("/send/check", post(wallet::send_check::<S>))
        .route("/send/confirm", post(wallet::send_confirm::<S>))
        .route("/statement", get(wallet::statement_page::<S>))
        .route("/statement.csv", get(wallet::statement_csv::<S>))
        .route(
            "/topup",
            get(funding::topup_page::<S>).post(funding::topup::<S>),
        )
        .route("/topup/cards", post(funding::add_card::<S>))
        .route(
            "/payout",
            get(funding::payout_page::<S>).post(funding::payout::<S>),
        )
        .route("/bank", get(funding::bank_page::<S>))
        .route("/kyc", post(funding::kyc::<S>))
        .route("/bank/link", post(funding::link::<S>))
        .route(
            "/bank/{id}/confirm",
            get(funding::confirm_page::<S>).post(funding::confirm::<S>),
        )
        .route(
            "/cards",
            get(cards::cards_page::<S>).post(cards::create::<S>),
        )
        .route("/cards/{id}", get(cards::card_page::<S>))
        .route("/cards/{id}/activate", post(cards::activate::<S>))
        .route("/cards/{id}/reveal", post(cards::reveal::<S>))
        .route("/cards/{id}/freeze", post(cards::freeze::<S>))
        .route("/cards/{id}/unfreeze", post(cards::unfreeze::<S>))
        .route("/cards/{id}/controls", post(cards::controls::<S>))
        .route(
            "/request",
            get(links::request_page::<S>).post(links::create::<S>),
        )
        .route("/me/handle", post(links::set_handle::<S>))
        .route("/l/{id}", get(links::link_page::<S>))
        .route("/l/{id}/pay", post(links::pay::<S>))
        .route("/l/{id}/cancel", post(links::cancel::<S>))
        .route("/pay", get(pay::pay_page::<S>))
        .route("/pay/check", post(pay::pay_check::<S>))
        .route("/pay/confirm", post(pay::pay_confirm::<S>))
        .route("/pay/code/new", post(pay::code_new::<S>))
        .route("/pay/code/{id}", get(pay::code_state::<S>))
        .route("/pay/code/{id}/revoke", post(pay::code_revoke::<S>))
}

/// A merchant's dashboard: payments and refunds, payment requests, the till's terminal, API
/// keys and webhooks.
fn merchant_pages<S: LedgerStore>() -> Router<ApiState<S>> {
    Router::new()
        .route("/merchant", get(merchant::dashboard::<S>))
        .route(
            "/merchant/request",
            get(merchant::request_page::<S>).post(merchant::create_request::<S>),
        )
        .route("/merchant/requests/{id}", get(merchant::request::<S>))
        .route(
            "/merchant/terminal",
            get(merchant::terminal_page::<S>).post(merchant::charge::<S>),
        )
        .route("/merchant/payments/{id}", get(merchant::payment::<S>))
        .route(
            "/merchant/payments/{id}/refund",
            post(merchant::refund::<S>),
        )
        .route(
            "/merchant/keys",
            get(developers::keys::<S>).post(developers::create_key::<S>),
        )
        .route(
            "/merchant/keys/{id}/revoke",
            post(developers::revoke_key::<S>),
        )
        .route(
            "/merchant/webhooks",
            get(developers::webhooks::<S>).post(developers::create_webhook::<S>),
        )
        .route("/merchant/webhooks/{id}", get(developers::deliveries::<S>))
        .route(
            "/merchant/webhooks/{id}/deliveries/{delivery}/redeliver",
            post(developers::redeliver::<S>),
        )
}

/// The operator console: work queue, dashboard, rules, audit log, queues, cases, held
/// transfers and actions waiting for approval.
fn console_pages<S: LedgerStore>() -> Router<ApiState<S>> {
    Router::new()
        .route("/ops", get(console::console::<S>))
        .route("/ops/dashboard", get(dashboard::dashboard::<S>))
        .route(
            "/ops/rules",
            get(oversight::rules::<S>).post(oversight::backtest::<S>),
        )
        .route("/ops/audit", get(oversight::audit::<S>))
        .route("/ops/audit/verify", post(oversight::verify_audit::<S>))
        .route("/ops/queues", get(oversight::queues::<S>))
        .route("/ops/kyc/{user}/reveal", post(oversight::reveal_kyc::<S>))
        .route(
            "/ops/kyc/{user}/{decision}",
            post(oversight::decide_kyc::<S>),
        )
        .route(
            "/ops/recovery/{id}/approve",
            post(oversight::approve_recovery::<S>),
        )
        .route("/ops/cases/{id}", get(case::case::<S>))
        .route("/ops/cases/{id}/{act}", post(case::act::<S>))
        .route(
            "/ops/cases/{id}/reverse/{transfer}",
            post(case::reverse::<S>),
        )
        .route(
            "/ops/cases/{id}/compensate/{transfer}",
            post(case::compensate::<S>),
        )
        .route("/ops/held/{id}/{decision}", post(console::decide_held::<S>))
        .route(
            "/ops/actions/{id}/{decision}",
            post(console::decide_action::<S>),
        )
}

/// The Content-Security-Policy of every page: scripts, styles and images only from Koban
/// itself (QR codes as `data:` images), no inline script, no framing.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

async fn page_headers(
    axum::extract::State(dev): axum::extract::State<bool>,
    request: Request,
    next: Next,
) -> Response {
    let asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    koban_api::set_security_headers(headers, PAGE_CSP, dev);
    // Pages carry personal data and form tokens: never stored. Assets are the same for
    // everyone and change only with the binary.
    if !asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The files served under `/assets/`, built into the binary.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.css", CSS, include_bytes!("../assets/app.css")),
    ("scan.js", JS, include_bytes!("../assets/scan.js")),
    ("jsqr.js", JS, include_bytes!("../assets/jsqr.js")),
    ("countdown.js", JS, include_bytes!("../assets/countdown.js")),
    ("reveal.js", JS, include_bytes!("../assets/reveal.js")),
    ("passkey.js", JS, include_bytes!("../assets/passkey.js")),
    ("request.js", JS, include_bytes!("../assets/request.js")),
];
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
