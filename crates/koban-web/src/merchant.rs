//! The merchant dashboard: the balance and its chart, the payments received and their refunds
//! (full or part), a payment request as a QR code to show at the till or print, and a terminal
//! page that charges a code the customer shows. A merchant signs in like a customer; its
//! session acts as the merchant through the same operations as an API key
//! ([`MerchantKey::for_session`](koban_auth::apikeys::MerchantKey::for_session)).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use koban_api::ApiState;
use koban_auth::apikeys::MerchantKey;
use koban_ledger::Currency;
use koban_pay::merchant::{MerchantPayment, ReceivedPayment, parse_transfer_id, transfer_id_text};
use koban_pay::{IdempotencyKey, PayError};
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::i18n::Tr;
use crate::page::{
    Chrome, MerchantForm, MerchantIn, Page, explain, plain_id, see_other, wallet_currency,
};
use crate::wallet::{ChartView, parse_amount, recent};

/// Payments listed on the dashboard.
const DASHBOARD_PAYMENTS: i64 = 20;
/// How long a payment request shown at the till stays payable.
const REQUEST_S: i64 = 15 * 60;
/// How often an open request's page looks again for the payment, in seconds.
const REQUEST_REFRESH_S: u32 = 5;

/// One payment received, ready to show.
pub struct PaymentLine {
    pub id: String,
    /// The payer as this merchant knows them: a pseudonym, never a name or an address.
    pub customer: Option<String>,
    pub when: String,
    pub amount: String,
    /// What was refunded of it, when anything was.
    pub refunded: Option<String>,
    /// What can still be refunded, as typed into the refund form.
    pub refundable: String,
    pub fully_refunded: bool,
}

fn line(tr: &Tr, payment: &ReceivedPayment) -> PaymentLine {
    let amount = payment.amount.minor_units();
    let left = amount.saturating_sub(payment.refunded_minor);
    PaymentLine {
        id: transfer_id_text(payment.id),
        customer: payment.customer.clone(),
        when: tr.datetime(payment.created_at_ms),
        amount: tr.money(i128::from(amount), payment.currency),
        refunded: (payment.refunded_minor > 0)
            .then(|| tr.money(i128::from(payment.refunded_minor), payment.currency)),
        refundable: plain_amount(left, payment.currency),
        fully_refunded: left == 0,
    }
}

/// An amount as a person types it into a field (`1500`, `12.50`): no symbol, no grouping.
pub(crate) fn plain_amount(minor: u64, currency: Currency) -> String {
    let exponent = currency.exponent();
    if exponent == 0 {
        return minor.to_string();
    }
    let divisor = 10u64.pow(exponent);
    format!(
        "{}.{:0width$}",
        minor / divisor,
        minor % divisor,
        width = usize::try_from(exponent).unwrap_or(2)
    )
}

#[derive(Template)]
#[template(path = "merchant_home.html")]
pub struct DashboardPage {
    pub c: Chrome,
    pub name: String,
    pub balance: String,
    pub available: String,
    pub chart: ChartView,
    pub payments: Vec<PaymentLine>,
    pub payouts: Vec<crate::wallet::Movement>,
}

/// One line per payout: a payout the bank settled (or returned) shows as its outcome, not
/// also as the reservation it replaced.
fn payout_lines(tr: &Tr, entries: &[koban_pay::wallets::Entry]) -> Vec<crate::wallet::Movement> {
    let settled: Vec<_> = entries
        .iter()
        .filter_map(|e| e.transfer.kind.pending_id())
        .collect();
    entries
        .iter()
        .filter(|e| !settled.contains(&e.transfer.id))
        .map(|entry| crate::wallet::movement(tr, entry, None))
        .collect()
}

/// Payouts the dashboard lists.
const DASHBOARD_PAYOUTS: usize = 5;

/// The dashboard: balance, its 30 days, the latest payments and payouts.
pub async fn dashboard<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantIn { page, me, merchant }: MerchantIn,
) -> Response {
    let view = async {
        let tr = &page.tr;
        let currency = wallet_currency(&state.pay);
        let user = state.auth.me(&me).await?;
        let account = state.pay.merchant_balance(&merchant, currency).await?;
        let balance = account.balance.net_credit_posted();
        let recent = recent(&state, &me, account.id, currency, balance, 0).await?;
        let payments = state
            .pay
            .received_payments(&merchant, DASHBOARD_PAYMENTS)
            .await?;
        let kinds = ["payout".to_owned()];
        let (payouts, _) = state
            .pay
            .history(&me, currency, None, DASHBOARD_PAYOUTS, &kinds)
            .await?;
        Ok::<_, PayError>(DashboardPage {
            c: page.chrome("title-dashboard"),
            name: user.display_name,
            balance: tr.money(balance, currency),
            available: tr.money(account.balance.available_credit(), currency),
            chart: ChartView::new(tr, &recent.days, balance, currency),
            payments: payments.iter().map(|p| line(tr, p)).collect(),
            payouts: payout_lines(tr, &payouts),
        })
    };
    match view.await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

// ------------------------------------------------------------------ payment requests

#[derive(Template)]
#[template(path = "merchant_request.html")]
pub struct RequestFormPage {
    pub c: Chrome,
    pub amount: String,
    pub reference: String,
    pub key: String,
}

pub async fn request_page<S: LedgerStore>(MerchantIn { page, .. }: MerchantIn) -> Response {
    page.render(&RequestFormPage {
        c: page.chrome("title-merchant-request"),
        amount: String::new(),
        reference: String::new(),
        key: koban_shared::new_id(),
    })
}

#[derive(Deserialize)]
pub struct RequestForm {
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    key: String,
}

/// Makes a payment request and shows it; the same form sent twice makes one request.
pub async fn create_request<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantForm {
        page,
        merchant,
        form,
    }: MerchantForm<RequestForm>,
) -> Response {
    let currency = wallet_currency(&state.pay);
    let again = |field: &'static str, status: StatusCode, text: String| {
        let view = RequestFormPage {
            c: page
                .chrome("title-merchant-request")
                .with_error(Some(field), text),
            amount: form.amount.clone(),
            reference: form.reference.clone(),
            key: form.key.clone(),
        };
        page.render_status(status, &view)
    };
    let Some(amount) = parse_amount(&form.amount, currency) else {
        let text = page.tr.t("error-amount");
        return again("amount", StatusCode::UNPROCESSABLE_ENTITY, text);
    };
    let Ok(key) = IdempotencyKey::parse(&form.key) else {
        return crate::page::refusal(&page, StatusCode::BAD_REQUEST, "error-form");
    };
    let reference = form.reference.trim();
    match state
        .pay
        .create_payment_request(&merchant, amount, currency, reference, REQUEST_S, &key)
        .await
    {
        Ok(request) => see_other(&format!("/merchant/requests/{}", request.id)),
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            again("reference", status, text)
        }
    }
}

#[derive(Template)]
#[template(path = "merchant_request_qr.html")]
pub struct RequestPage {
    pub c: Chrome,
    pub id: String,
    pub merchant: String,
    pub amount: String,
    pub reference: String,
    pub expires: String,
    pub payload: String,
    pub qr: Option<String>,
    /// `open`, `paid` or `expired`.
    pub status: &'static str,
    /// The payment, once paid.
    pub payment: Option<String>,
    /// Seconds until the page looks again, while the request is open.
    pub refresh: Option<u32>,
}

/// A payment request as the till shows it: the QR code, the amount, and whether it is paid
/// (the page looks again every few seconds while it is open).
pub async fn request<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    MerchantIn { page, merchant, .. }: MerchantIn,
) -> Response {
    if !plain_id(&id) {
        return failure(&page, &PayError::NotFound);
    }
    match state.pay.merchant_request(&merchant, &id).await {
        Ok(request) => {
            let tr = &page.tr;
            let open = request.status == "open";
            let view = RequestPage {
                c: page.chrome("title-merchant-request-qr"),
                id: request.id,
                merchant: request.merchant_name,
                amount: tr.money(i128::from(request.amount.minor_units()), request.currency),
                reference: request.reference,
                expires: tr.datetime(request.expires_at_ms),
                qr: open
                    .then(|| crate::pay::qr_image(&request.qr_payload))
                    .flatten(),
                payload: request.qr_payload,
                status: request.status,
                payment: request.payment.map(transfer_id_text),
                refresh: open.then_some(REQUEST_REFRESH_S),
            };
            page.render(&view)
        }
        Err(error) => failure(&page, &error),
    }
}

// ------------------------------------------------------------------ the terminal

#[derive(Template)]
#[template(path = "merchant_terminal.html")]
pub struct TerminalPage {
    pub c: Chrome,
    pub code: String,
    pub amount: String,
    pub reference: String,
    pub key: String,
    /// The last charge: paid, or why not, in large type for the cashier.
    pub result: Option<Charged>,
}

pub struct Charged {
    pub paid: bool,
    pub text: String,
    pub payment: Option<String>,
}

pub async fn terminal_page<S: LedgerStore>(MerchantIn { page, .. }: MerchantIn) -> Response {
    page.render(&TerminalPage {
        c: page.chrome("title-terminal"),
        code: String::new(),
        amount: String::new(),
        reference: String::new(),
        key: koban_shared::new_id(),
        result: None,
    })
}

#[derive(Deserialize)]
pub struct ChargeForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    key: String,
}

/// Charges a code the customer shows. The answer is the terminal again, empty and with a new
/// key for the next customer, headed by the result; a refused code leaves the form filled.
pub async fn charge<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantForm {
        page,
        merchant,
        form,
    }: MerchantForm<ChargeForm>,
) -> Response {
    let currency = wallet_currency(&state.pay);
    let refused = |field: &'static str, status: StatusCode, text: String| {
        let view = TerminalPage {
            c: page
                .chrome("title-terminal")
                .with_error(Some(field), text.clone()),
            code: form.code.clone(),
            amount: form.amount.clone(),
            reference: form.reference.clone(),
            key: form.key.clone(),
            result: Some(Charged {
                paid: false,
                text,
                payment: None,
            }),
        };
        page.render_status(status, &view)
    };
    let Some(amount) = parse_amount(&form.amount, currency) else {
        let text = page.tr.t("error-amount");
        return refused("amount", StatusCode::UNPROCESSABLE_ENTITY, text);
    };
    let Ok(key) = IdempotencyKey::parse(&form.key) else {
        return crate::page::refusal(&page, StatusCode::BAD_REQUEST, "error-form");
    };
    let code = typed_code(&form.code);
    let reference = form.reference.trim();
    match state
        .pay
        .charge_code(
            &merchant,
            &code,
            amount,
            currency,
            reference,
            &key,
            Some(&page.client),
        )
        .await
    {
        Ok(payment) => charged(&page, &payment),
        Err(error @ PayError::Gone(_)) => {
            let (status, _) = explain(&page.tr, &error);
            refused("code", status, page.tr.t("terminal-code-unusable"))
        }
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            refused("code", status, text)
        }
    }
}

/// The till after a charge went through: the amount paid and the payment's reference, with
/// an empty form (and a new key) for the next customer.
fn charged(page: &Page, payment: &MerchantPayment) -> Response {
    let tr = &page.tr;
    let text = tr.with(
        "terminal-paid",
        &[(
            "amount",
            &tr.money(
                i128::from(payment.transfer.amount.minor_units()),
                payment.transfer.currency,
            ),
        )],
    );
    let view = TerminalPage {
        c: page.chrome("title-terminal"),
        code: String::new(),
        amount: String::new(),
        reference: String::new(),
        key: koban_shared::new_id(),
        result: Some(Charged {
            paid: true,
            text,
            payment: Some(transfer_id_text(payment.transfer.id)),
        }),
    };
    page.render(&view)
}

/// The code as typed or read by a scanner: full-width digits (a Japanese input method) read
/// as digits; spaces and hyphens of either width, and the long-vowel mark typed for one,
/// dropped. Anything else is left for the domain to refuse.
fn typed_code(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '０'..='９' => crate::page::half_width_digit(c),
            '-' | '－' | 'ー' | '‐' | '−' => None,
            c if c.is_whitespace() => None,
            c => Some(c),
        })
        .collect()
}

// ------------------------------------------------------------------ a payment and its refunds

#[derive(Template)]
#[template(path = "merchant_payment.html")]
pub struct PaymentPage {
    pub c: Chrome,
    pub payment: PaymentLine,
    pub amount: String,
    pub key: String,
}

async fn payment_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    merchant: &MerchantKey,
    id: &str,
    c: Chrome,
) -> Result<PaymentPage, PayError> {
    let payment = state
        .pay
        .received_payment(merchant, parse_transfer_id(id)?)
        .await?;
    let payment = line(&page.tr, &payment);
    Ok(PaymentPage {
        c,
        amount: payment.refundable.clone(),
        payment,
        key: koban_shared::new_id(),
    })
}

pub async fn payment<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    MerchantIn { page, merchant, .. }: MerchantIn,
) -> Response {
    let c = page.chrome("title-merchant-payment");
    match payment_view(&state, &page, &merchant, &id, c).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

#[derive(Deserialize)]
pub struct RefundForm {
    #[serde(default)]
    amount: String,
    #[serde(default)]
    key: String,
}

/// Refunds all or part of a payment to the customer's wallet; the same form sent twice
/// refunds once.
pub async fn refund<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    MerchantForm {
        page,
        merchant,
        form,
    }: MerchantForm<RefundForm>,
) -> Response {
    let currency = wallet_currency(&state.pay);
    let amount = parse_amount(&form.amount, currency);
    let (Ok(payment_id), Ok(key)) = (parse_transfer_id(&id), IdempotencyKey::parse(&form.key))
    else {
        return crate::page::refusal(&page, StatusCode::BAD_REQUEST, "error-form");
    };
    let result = match amount {
        Some(amount) => state.pay.refund(&merchant, payment_id, amount, &key).await,
        None => Err(PayError::Invalid("the amount is not a number")),
    };
    let (status, c) = match &result {
        Ok(done) => {
            let tr = &page.tr;
            let money = tr.money(
                i128::from(done.transfer.amount.minor_units()),
                done.transfer.currency,
            );
            let text = tr.with("refund-done", &[("amount", &money)]);
            (
                StatusCode::OK,
                page.chrome("title-merchant-payment").with_notice(text),
            )
        }
        Err(error) => {
            let (status, text) = match (error, amount) {
                (_, None) => (StatusCode::UNPROCESSABLE_ENTITY, page.tr.t("error-amount")),
                _ => explain(&page.tr, error),
            };
            (
                status,
                page.chrome("title-merchant-payment")
                    .with_error(Some("amount"), text),
            )
        }
    };
    match payment_view(&state, &page, &merchant, &id, c).await {
        Ok(mut view) => {
            if result.is_err() {
                // The form as it was, with its key: sending it again cannot refund twice.
                view.amount = form.amount.clone();
                view.key = form.key.clone();
            }
            page.render_status(status, &view)
        }
        Err(error) => failure(&page, &error),
    }
}

/// A dashboard page that could not be built: what went wrong, in words.
fn failure(page: &Page, error: &PayError) -> Response {
    let (status, text) = explain(&page.tr, error);
    crate::page::message(page, status, text, "/merchant", "link-dashboard")
}

#[cfg(test)]
mod tests {
    use super::*;
    use koban_ledger::Amount;

    #[test]
    fn a_code_is_read_as_a_cashier_types_it() {
        assert_eq!(typed_code("892222 423420 497899"), "892222423420497899");
        assert_eq!(
            typed_code("８９２２２２－４２３４２０ー４９７８９９"),
            "892222423420497899"
        );
        assert_eq!(typed_code("KBC1.8922"), "KBC1.8922");
    }

    #[test]
    fn amounts_are_written_as_typed() {
        assert_eq!(plain_amount(1500, Currency::Jpy), "1500");
        assert_eq!(plain_amount(1250, Currency::Usd), "12.50");
        assert_eq!(plain_amount(5, Currency::Usd), "0.05");
        assert_eq!(
            parse_amount(&plain_amount(1250, Currency::Usd), Currency::Usd)
                .map(Amount::minor_units),
            Some(1250)
        );
    }
}
