//! Request-to-pay links: a customer asks for an amount and shares the link (as text or a QR
//! code); whoever opens it sees who asks for how much and pays once, with the same checks and
//! step-up as any transfer. Also the customer's @handle, by which others can pay them.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use koban_api::ApiState;
use koban_pay::{IdempotencyKey, PayError};
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::account::Empty;
use crate::page::{
    Chrome, Page, SignedForm, SignedIn, explain, plain_id, see_other, wallet_currency,
};
use crate::stepup::{Answer, Guarded, Stepped, with_step_up};
use crate::wallet::parse_amount;

#[derive(Template)]
#[template(path = "request.html")]
pub struct RequestPage {
    pub c: Chrome,
    pub amount: String,
    pub message: String,
    pub handle: String,
}

pub async fn request_page<S: LedgerStore>(SignedIn { page, .. }: SignedIn) -> Response {
    page.render(&RequestPage {
        c: page.chrome("title-request"),
        amount: String::new(),
        message: String::new(),
        handle: String::new(),
    })
}

#[derive(Deserialize)]
pub struct RequestForm {
    #[serde(default)]
    amount: String,
    #[serde(default)]
    message: String,
}

#[derive(Template)]
#[template(path = "request_link.html")]
pub struct LinkMadePage {
    pub c: Chrome,
    pub url: String,
    pub qr: Option<String>,
    pub amount: String,
    pub id: String,
}

/// Makes a link for the amount asked; shows it to share.
pub async fn create<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<RequestForm>,
) -> Response {
    let currency = wallet_currency(&state.pay);
    let again = |field: &'static str, status: StatusCode, text: String| {
        page.render_status(
            status,
            &RequestPage {
                c: page.chrome("title-request").with_error(Some(field), text),
                amount: form.amount.clone(),
                message: form.message.clone(),
                handle: String::new(),
            },
        )
    };
    let Some(amount) = parse_amount(&form.amount, currency) else {
        return again(
            "amount",
            StatusCode::UNPROCESSABLE_ENTITY,
            page.tr.t("error-amount"),
        );
    };
    let message = form.message.trim();
    let message = (!message.is_empty()).then_some(message);
    match state
        .pay
        .create_pay_link(&me, amount, currency, message, None)
        .await
    {
        Ok(link) => {
            let url = format!("{}/l/{}", state.auth.config().public_url, link.id);
            page.render(&LinkMadePage {
                c: page.chrome("title-request-made"),
                qr: crate::pay::qr_image(&url),
                url,
                amount: page
                    .tr
                    .money(i128::from(link.amount.minor_units()), link.currency),
                id: link.id,
            })
        }
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            again("amount", status, text)
        }
    }
}

#[derive(Template)]
#[template(path = "link.html")]
pub struct LinkPage {
    pub c: Chrome,
    pub id: String,
    pub requester: String,
    pub amount: String,
    pub message: Option<String>,
    pub open: bool,
    pub status: String,
    pub key: String,
}

/// A link as its payer sees it: who asks, for how much, and the button that pays.
pub async fn link_page<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, me }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    if !plain_id(&id) {
        return crate::page::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    }
    match state.pay.pay_link(&me, &id).await {
        Ok(link) => page.render(&LinkPage {
            c: page.chrome("title-link"),
            id: link.id,
            requester: link.requester_masked_name,
            amount: page
                .tr
                .money(i128::from(link.amount.minor_units()), link.currency),
            message: link.message,
            open: link.status == "open",
            status: page.tr.t(match link.status {
                "paid" => "link-status-paid",
                "held" => "link-status-held",
                "stopped" => "link-status-stopped",
                "cancelled" => "link-status-cancelled",
                "expired" => "link-status-expired",
                _ => "link-status-open",
            }),
            key: koban_shared::new_id(),
        }),
        Err(error) => problem(&page, &error),
    }
}

fn problem(page: &Page, error: &PayError) -> Response {
    let (status, text) = explain(&page.tr, error);
    crate::page::message(page, status, text, "/home", "link-home")
}

#[derive(Deserialize)]
pub struct PayLinkForm {
    #[serde(default)]
    key: String,
    #[serde(flatten)]
    answer: Answer,
}

/// Pays a link once (step-up for a new payee or a large amount), answering with a receipt.
pub async fn pay<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { mut page, me, form }: SignedForm<PayLinkForm>,
) -> Response {
    let (true, Ok(key)) = (plain_id(&id), IdempotencyKey::parse(&form.key)) else {
        return crate::page::refusal(&page, StatusCode::BAD_REQUEST, "error-form");
    };
    let summary = match state.pay.pay_link(&me, &id).await {
        Ok(link) => page.tr.with(
            "step-up-link-pay",
            &[
                (
                    "amount",
                    &page
                        .tr
                        .money(i128::from(link.amount.minor_units()), link.currency),
                ),
                ("to", &link.requester_masked_name),
            ],
        ),
        Err(_) => String::new(),
    };
    let guarded = Guarded {
        action: format!("/l/{id}/pay"),
        summary,
        fields: vec![("key", form.key.clone())],
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (pay, me, id, key, client) = (&state.pay, &me, &id, &key, &page.client);
        async move { pay.pay_pay_link(me, id, key, proof.as_ref(), client).await }
    })
    .await;
    match done {
        Ok(Stepped::Done(outcome)) => crate::wallet::receipt(&mut page, &outcome, None),
        Ok(Stepped::Page(response)) => response,
        Err(error) => problem(&page, &error),
    }
}

/// The requester withdraws an open link.
pub async fn cancel<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { page, me, .. }: SignedForm<Empty>,
) -> Response {
    if !plain_id(&id) {
        return crate::page::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    }
    match state.pay.cancel_pay_link(&me, &id).await {
        Ok(()) => see_other(&format!("/l/{id}")),
        Err(error) => problem(&page, &error),
    }
}

#[derive(Deserialize)]
pub struct HandleForm {
    #[serde(default)]
    handle: String,
}

/// Sets or changes the customer's @handle.
pub async fn set_handle<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<HandleForm>,
) -> Response {
    let c = match state.pay.set_handle(&me, &form.handle).await {
        Ok(handle) => page
            .chrome("title-request")
            .with_notice(page.tr.with("handle-set", &[("handle", &handle)])),
        Err(PayError::Invalid(_)) => page
            .chrome("title-request")
            .with_error(Some("handle"), page.tr.t("error-handle")),
        Err(error) => page
            .chrome("title-request")
            .with_error(Some("handle"), explain(&page.tr, &error).1),
    };
    let status = if c.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    page.render_status(
        status,
        &RequestPage {
            c,
            amount: String::new(),
            message: String::new(),
            handle: form.handle,
        },
    )
}
