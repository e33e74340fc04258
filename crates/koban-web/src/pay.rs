//! Paying a store: a merchant's QR code scanned with the camera (or its payload pasted), shown
//! with merchant and amount before paying; and the customer's own payment code, shown as a QR
//! code and a barcode with a live countdown, revocable, and followed until a till charges it.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use koban_api::ApiState;
use koban_api::extract::with_cookies;
use koban_pay::merchant::MerchantPayment;
use koban_pay::{IdempotencyKey, PayError};
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::account::Empty;
use crate::page::{
    Chrome, Page, SignedForm, SignedIn, explain, millis, see_other, wallet_currency,
};
use crate::stepup::{Answer, Guarded, Stepped, with_step_up};
use crate::wallet::ReceiptPage;

/// A `data:` image of `payload` as a QR code, or `None` when it cannot be drawn.
pub fn qr_image(payload: &str) -> Option<String> {
    let code = qrcode::QrCode::new(payload.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build();
    Some(crate::page::data_url("image/svg+xml", svg.as_bytes()))
}

/// A `data:` image of a digit string as a Code 128 barcode (set C), as tills read them.
fn barcode_image(digits: &str) -> Option<String> {
    use barcoders::generators::svg::SVG;
    use barcoders::sym::code128::Code128;
    let encoded = Code128::new(format!("Ć{digits}")).ok()?.encode();
    let svg = SVG::new(80).xdim(2).generate(&encoded).ok()?;
    // As an image of its own, an SVG must name its namespace.
    let svg = svg.replacen("<svg ", "<svg xmlns=\"http://www.w3.org/2000/svg\" ", 1);
    Some(crate::page::data_url("image/svg+xml", svg.as_bytes()))
}

#[derive(Template)]
#[template(path = "pay.html")]
pub struct PayPage {
    pub c: Chrome,
    pub payload: String,
}

/// Paying a store: scan its code, or show yours.
pub async fn pay_page<S: LedgerStore>(SignedIn { page, .. }: SignedIn) -> Response {
    page.render(&PayPage {
        c: page.chrome("title-pay"),
        payload: String::new(),
    })
}

#[derive(Deserialize)]
pub struct PayloadForm {
    #[serde(default)]
    payload: String,
}

#[derive(Template)]
#[template(path = "pay_confirm.html")]
pub struct PayConfirmPage {
    pub c: Chrome,
    pub merchant: String,
    pub amount: String,
    pub reference: String,
    pub payload: String,
    pub key: String,
}

/// What the scanned code asks for: merchant and amount, before anything is paid.
pub async fn pay_check<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<PayloadForm>,
) -> Response {
    let payload = form.payload.trim().to_owned();
    match state.pay.inspect_qr(&me, &payload).await {
        Ok(request) if request.status == "open" => page.render(&PayConfirmPage {
            c: page.chrome("title-pay-confirm"),
            merchant: request.merchant_name,
            amount: page
                .tr
                .money(i128::from(request.amount.minor_units()), request.currency),
            reference: request.reference,
            payload,
            key: koban_shared::new_id(),
        }),
        Ok(_) => again(
            &page,
            payload,
            StatusCode::GONE,
            page.tr.t("error-request-closed"),
        ),
        Err(PayError::Invalid(_) | PayError::NotFound) => again(
            &page,
            payload,
            StatusCode::UNPROCESSABLE_ENTITY,
            page.tr.t("error-payload"),
        ),
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            again(&page, payload, status, text)
        }
    }
}

fn again(page: &Page, payload: String, status: StatusCode, text: String) -> Response {
    page.render_status(
        status,
        &PayPage {
            c: page.chrome("title-pay").with_error(Some("payload"), text),
            payload,
        },
    )
}

#[derive(Deserialize)]
pub struct PayConfirmForm {
    #[serde(default)]
    payload: String,
    #[serde(default)]
    key: String,
    #[serde(flatten)]
    answer: Answer,
}

/// Pays the request, with step-up when the domain asks for it.
pub async fn pay_confirm<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { mut page, me, form }: SignedForm<PayConfirmForm>,
) -> Response {
    let Ok(key) = IdempotencyKey::parse(&form.key) else {
        return crate::page::refusal(&page, StatusCode::BAD_REQUEST, "error-form");
    };
    // The step-up page says whom and how much, as the confirmation did.
    let summary = match state.pay.inspect_qr(&me, &form.payload).await {
        Ok(request) => page.tr.with(
            "step-up-pay",
            &[
                (
                    "amount",
                    &page
                        .tr
                        .money(i128::from(request.amount.minor_units()), request.currency),
                ),
                ("merchant", &request.merchant_name),
            ],
        ),
        Err(_) => String::new(),
    };
    let guarded = Guarded {
        action: "/pay/confirm".into(),
        summary,
        fields: vec![("payload", form.payload.clone()), ("key", form.key.clone())],
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (pay, me, payload, key, client) = (&state.pay, &me, &form.payload, &key, &page.client);
        async move { pay.pay_qr(me, payload, key, proof.as_ref(), client).await }
    })
    .await;
    match done {
        Ok(Stepped::Done(payment)) => paid(&mut page, &payment),
        Ok(Stepped::Page(response)) => response,
        Err(error) => {
            // While the request is still open, the confirmation is shown again with the same
            // key (a double click answered "in progress" can then never pay twice).
            let (status, text) = explain(&page.tr, &error);
            match state.pay.inspect_qr(&me, &form.payload).await {
                Ok(request) if request.status == "open" => page.render_status(
                    status,
                    &PayConfirmPage {
                        c: page.chrome("title-pay-confirm").with_error(None, text),
                        merchant: request.merchant_name,
                        amount: page
                            .tr
                            .money(i128::from(request.amount.minor_units()), request.currency),
                        reference: request.reference,
                        payload: form.payload.clone(),
                        key: form.key.clone(),
                    },
                ),
                _ => again(&page, form.payload.clone(), status, text),
            }
        }
    }
}

/// The receipt of a store's request paid, with the session a step-up rotated to.
fn paid(page: &mut Page, payment: &MerchantPayment) -> Response {
    if let Some(session) = &payment.session {
        page.rotated(session);
    }
    let view = ReceiptPage {
        c: page.chrome("title-paid"),
        held: false,
        amount: page.tr.money(
            i128::from(payment.transfer.amount.minor_units()),
            payment.transfer.currency,
        ),
        payee: payment.merchant_name.clone(),
        reference: koban_pay::merchant::transfer_id_text(payment.transfer.id),
        when: page.tr.datetime(millis(payment.transfer.timestamp)),
        message: None,
    };
    with_cookies(
        page.render_status(StatusCode::CREATED, &view),
        payment.session.as_ref(),
        page.dev,
    )
}

// ------------------------------------------------------------------ the customer's code

#[derive(Template)]
#[template(path = "pay_code.html")]
pub struct CodePage {
    pub c: Chrome,
    pub id: String,
    pub digits: String,
    pub qr: Option<String>,
    pub barcode: Option<String>,
    pub limit: String,
    pub expires_at_ms: i64,
    pub now_ms: i64,
    pub seconds_left: i64,
    /// Codes shown one after the other on this page; the script renews only a few times.
    pub renewals: u32,
}

#[derive(Deserialize)]
pub struct RenewForm {
    #[serde(default)]
    renewals: u32,
}

/// Shows a new payment code (up to the amount that needs no step-up).
pub async fn code_new<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<RenewForm>,
) -> Response {
    let currency = wallet_currency(&state.pay);
    match state
        .pay
        .create_payment_code(&me, currency, None, None, &page.client)
        .await
    {
        Ok((code, _)) => {
            let digits = code.code.clone().unwrap_or_default();
            let now = state.auth.now_ms();
            page.render(&CodePage {
                c: page.chrome("title-pay-code"),
                qr: qr_image(&koban_pay::qr::code_qr(&digits)),
                barcode: barcode_image(&digits),
                id: code.id,
                digits,
                limit: page.tr.money(i128::from(code.limit_minor), currency),
                expires_at_ms: code.expires_at_ms,
                now_ms: now,
                seconds_left: (code.expires_at_ms - now).max(0) / 1000,
                renewals: form.renewals.min(100),
            })
        }
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            page.render_status(
                status,
                &PayPage {
                    c: page.chrome("title-pay").with_error(None, text),
                    payload: String::new(),
                },
            )
        }
    }
}

#[derive(Template)]
#[template(path = "pay_code_state.html")]
pub struct CodeStatePage {
    pub c: Chrome,
    pub state: &'static str,
    pub payment: Option<crate::wallet::Movement>,
}

/// What became of a payment code: still live, used (with the payment), revoked or expired.
/// The code page's script comes here when the code stops being live.
pub async fn code_state<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, me }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let (code_state, used_at) = state.pay.payment_code_state(&me, &id).await?;
        let payment = match used_at {
            Some(used_at) => {
                let currency = wallet_currency(&state.pay);
                let kinds = ["merchant_payment".to_owned()];
                let (entries, _) = state.pay.history(&me, currency, None, 5, &kinds).await?;
                // The payment the code paid: the first one since it was claimed.
                entries
                    .into_iter()
                    .rev()
                    .find(|e| millis(e.transfer.timestamp) >= used_at)
            }
            None => None,
        };
        Ok::<_, PayError>((code_state, payment))
    }
    .await;
    match result {
        Ok((code_state, payment)) => {
            let wallet = state
                .pay
                .wallet(&me.user_id, wallet_currency(&state.pay))
                .await;
            let movement = match (payment, wallet) {
                (Some(entry), Ok(wallet)) => {
                    let party = state
                        .pay
                        .counterparties(wallet.account, std::slice::from_ref(&entry))
                        .await
                        .ok()
                        .and_then(|mut names| names.pop().flatten());
                    Some(crate::wallet::movement(&page.tr, &entry, party))
                }
                _ => None,
            };
            page.render(&CodeStatePage {
                c: page.chrome(match code_state {
                    "used" => "title-code-used",
                    "live" => "title-pay-code",
                    _ => "title-code-ended",
                }),
                state: code_state,
                payment: movement,
            })
        }
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            crate::page::message(&page, status, text, "/pay", "link-pay")
        }
    }
}

/// Revokes a code before it expires (a till that should not charge it).
pub async fn code_revoke<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { page, me, .. }: SignedForm<Empty>,
) -> Response {
    if !crate::page::plain_id(&id) {
        return crate::page::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    }
    match state.pay.revoke_payment_code(&me, &id).await {
        Ok(()) | Err(PayError::NotFound) => see_other(&format!("/pay/code/{id}")),
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            page.render_status(
                status,
                &PayPage {
                    c: page.chrome("title-pay").with_error(None, text),
                    payload: String::new(),
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svg_of(image: &str) -> String {
        use base64::Engine;
        let data = image
            .strip_prefix("data:image/svg+xml;base64,")
            .expect("an SVG data URL");
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .expect("base64"),
        )
        .expect("utf-8")
    }

    #[test]
    fn codes_are_drawn_as_standalone_svg_images() {
        let bar = svg_of(&barcode_image("892222423420497899").expect("a barcode"));
        assert!(
            bar.contains("xmlns=\"http://www.w3.org/2000/svg\""),
            "{bar}"
        );
        let qr = svg_of(&qr_image("KBC1.892222423420497899").expect("a QR code"));
        assert!(qr.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    }
}
