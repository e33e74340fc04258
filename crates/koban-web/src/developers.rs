//! The merchant's developer pages: API keys (made under step-up, the secret shown once,
//! revoked with one button) and webhook endpoints (the signing secret shown once, the log of
//! deliveries, sending one again).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use koban_api::ApiState;
use koban_api::extract::with_cookies;
use koban_auth::apikeys::{Environment, Scopes};
use koban_pay::PayError;
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::account::Empty;
use crate::page::{Chrome, MerchantForm, MerchantIn, Page, SignedForm, explain, plain_id};
use crate::stepup::{Answer, Guarded, Stepped, with_step_up};

/// The scopes a key can have, as the form's checkboxes name them.
const SCOPE_FIELDS: [(&str, &str); 4] = [
    ("payments_read", "payments:read"),
    ("payments_write", "payments:write"),
    ("refunds_write", "refunds:write"),
    ("webhooks_manage", "webhooks:manage"),
];
/// The events an endpoint can receive, as the form's checkboxes name them.
const EVENT_FIELDS: [(&str, &str); 4] = [
    ("payment_succeeded", "payment.succeeded"),
    ("refund_succeeded", "refund.succeeded"),
    ("payout_settled", "payout.settled"),
    ("payout_failed", "payout.failed"),
];

pub struct KeyLine {
    pub id: String,
    pub name: String,
    pub environment: String,
    pub prefix: String,
    pub scopes: String,
    pub created: String,
    pub last_used: Option<String>,
    pub live: bool,
}

#[derive(Template)]
#[template(path = "merchant_keys.html")]
pub struct KeysPage {
    pub c: Chrome,
    pub keys: Vec<KeyLine>,
    pub name: String,
    /// The key just made: shown on this answer only.
    pub new_key: Option<String>,
}

async fn keys_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &koban_auth::Principal,
    c: Chrome,
) -> Result<KeysPage, koban_auth::AuthError> {
    let tr = &page.tr;
    let now = state.auth.now_ms();
    let keys = state.auth.api_keys(me).await?;
    Ok(KeysPage {
        c,
        keys: keys
            .into_iter()
            .map(|k| KeyLine {
                live: k.revoked_at_ms.is_none() && k.expires_at_ms.is_none_or(|at| at > now),
                id: k.id,
                name: k.name,
                environment: tr.t(if k.environment == "live" {
                    "keys-live"
                } else {
                    "keys-test"
                }),
                prefix: k.prefix,
                scopes: tr.list(
                    &k.scopes
                        .iter()
                        .map(|s| match s.as_str() {
                            "payments:read" => tr.t("scope-payments-read"),
                            "payments:write" => tr.t("scope-payments-write"),
                            "refunds:write" => tr.t("scope-refunds-write"),
                            "webhooks:manage" => tr.t("scope-webhooks-manage"),
                            other => other.to_owned(),
                        })
                        .collect::<Vec<_>>(),
                ),
                created: tr.date(k.created_at_ms),
                last_used: k.last_used_at_ms.map(|at| tr.datetime(at)),
            })
            .collect(),
        name: String::new(),
        new_key: None,
    })
}

pub async fn keys<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantIn { page, me, .. }: MerchantIn,
) -> Response {
    let c = page.chrome("title-keys");
    match keys_view(&state, &page, &me, c).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &PayError::Auth(error)),
    }
}

#[derive(Deserialize, Default)]
pub struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    payments_read: Option<String>,
    #[serde(default)]
    payments_write: Option<String>,
    #[serde(default)]
    refunds_write: Option<String>,
    #[serde(default)]
    webhooks_manage: Option<String>,
    #[serde(flatten)]
    answer: Answer,
}

impl KeyForm {
    fn checked(&self) -> [bool; 4] {
        [
            self.payments_read.is_some(),
            self.payments_write.is_some(),
            self.refunds_write.is_some(),
            self.webhooks_manage.is_some(),
        ]
    }
}

/// Makes a key, confirmed with a code (step-up); the answer shows the key this once.
pub async fn create_key<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { mut page, me, form }: SignedForm<KeyForm>,
) -> Response {
    let chosen: Vec<String> = SCOPE_FIELDS
        .iter()
        .zip(form.checked())
        .filter(|(_, on)| *on)
        .map(|((_, scope), _)| (*scope).to_owned())
        .collect();
    let parsed = Environment::parse(&form.environment)
        .and_then(|environment| Ok((environment, Scopes::parse(&chosen)?)));
    let (environment, scopes) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return keys_refused(&state, &page, &me, &PayError::Auth(error), &form).await,
    };
    let mut fields = vec![
        ("name", form.name.clone()),
        ("environment", form.environment.clone()),
    ];
    for ((field, _), on) in SCOPE_FIELDS.iter().zip(form.checked()) {
        if on {
            fields.push((field, "on".to_owned()));
        }
    }
    let guarded = Guarded {
        action: "/merchant/keys".into(),
        summary: page
            .tr
            .with("step-up-api-key", &[("name", form.name.trim())]),
        fields,
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (auth, me, client) = (&state.auth, &me, &page.client);
        let (name, scopes) = (&form.name, &scopes);
        async move {
            auth.create_api_key(me, name, environment, scopes, proof.as_ref(), client)
                .await
                .map_err(PayError::Auth)
        }
    })
    .await;
    match done {
        Ok(Stepped::Done((_, key, session))) => {
            page.rotated(&session);
            let c = page
                .chrome("title-keys")
                .with_notice(page.tr.t("keys-made"));
            match keys_view(&state, &page, &me, c).await {
                Ok(mut view) => {
                    view.new_key = Some(key.expose().clone());
                    with_cookies(page.render(&view), Some(&session), page.dev)
                }
                Err(error) => failure(&page, &PayError::Auth(error)),
            }
        }
        Ok(Stepped::Page(response)) => response,
        Err(error) => keys_refused(&state, &page, &me, &error, &form).await,
    }
}

async fn keys_refused<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &koban_auth::Principal,
    error: &PayError,
    form: &KeyForm,
) -> Response {
    let (status, text) = explain(&page.tr, error);
    let c = page.chrome("title-keys").with_error(Some("name"), text);
    match keys_view(state, page, me, c).await {
        Ok(mut view) => {
            view.name = form.name.clone();
            page.render_status(status, &view)
        }
        Err(error) => failure(page, &PayError::Auth(error)),
    }
}

/// Revokes a key at once.
pub async fn revoke_key<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { page, me, .. }: SignedForm<Empty>,
) -> Response {
    let c = match state.auth.revoke_api_key(&me, &id).await {
        Ok(()) => page
            .chrome("title-keys")
            .with_notice(page.tr.t("keys-revoked")),
        Err(error) => {
            let (_, text) = explain(&page.tr, &PayError::Auth(error));
            page.chrome("title-keys").with_error(None, text)
        }
    };
    match keys_view(&state, &page, &me, c).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &PayError::Auth(error)),
    }
}

// ------------------------------------------------------------------ webhooks

pub struct EndpointLine {
    pub id: String,
    pub url: String,
    pub events: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "merchant_webhooks.html")]
pub struct WebhooksPage {
    pub c: Chrome,
    pub endpoints: Vec<EndpointLine>,
    pub url: String,
    /// The signing secret of the endpoint just made: shown on this answer only.
    pub new_secret: Option<String>,
}

async fn webhooks_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    merchant: &koban_auth::apikeys::MerchantKey,
    c: Chrome,
) -> Result<WebhooksPage, PayError> {
    let endpoints = state.pay.webhooks(merchant).await?;
    Ok(WebhooksPage {
        c,
        endpoints: endpoints
            .into_iter()
            .map(|e| EndpointLine {
                id: e.id,
                url: e.url,
                events: page.tr.list(&e.event_types),
                created: page.tr.date(e.created_at_ms),
            })
            .collect(),
        url: String::new(),
        new_secret: None,
    })
}

pub async fn webhooks<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantIn { page, merchant, .. }: MerchantIn,
) -> Response {
    let c = page.chrome("title-webhooks");
    match webhooks_view(&state, &page, &merchant, c).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

#[derive(Deserialize, Default)]
pub struct EndpointForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    payment_succeeded: Option<String>,
    #[serde(default)]
    refund_succeeded: Option<String>,
    #[serde(default)]
    payout_settled: Option<String>,
    #[serde(default)]
    payout_failed: Option<String>,
}

/// Adds an endpoint; the answer shows its signing secret this once.
pub async fn create_webhook<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    MerchantForm {
        page,
        merchant,
        form,
    }: MerchantForm<EndpointForm>,
) -> Response {
    let checked = [
        form.payment_succeeded.is_some(),
        form.refund_succeeded.is_some(),
        form.payout_settled.is_some(),
        form.payout_failed.is_some(),
    ];
    let types: Vec<String> = EVENT_FIELDS
        .iter()
        .zip(checked)
        .filter(|(_, on)| *on)
        .map(|((_, event), _)| (*event).to_owned())
        .collect();
    let url = form.url.trim();
    let (status, c, secret) = match state.pay.create_webhook(&merchant, url, &types).await {
        Ok((_, secret)) => (
            StatusCode::OK,
            page.chrome("title-webhooks")
                .with_notice(page.tr.t("webhooks-made")),
            Some(secret.expose().clone()),
        ),
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            let c = page.chrome("title-webhooks").with_error(Some("url"), text);
            (status, c, None)
        }
    };
    match webhooks_view(&state, &page, &merchant, c).await {
        Ok(mut view) => {
            if secret.is_none() {
                view.url = form.url.clone();
            }
            view.new_secret = secret;
            page.render_status(status, &view)
        }
        Err(error) => failure(&page, &error),
    }
}

pub struct DeliveryLine {
    pub id: String,
    pub event: String,
    pub status: String,
    pub attempts: i64,
    pub code: Option<i64>,
    /// Why the last attempt got no answer, in the reader's language.
    pub error: Option<String>,
    pub when: String,
}

#[derive(Template)]
#[template(path = "merchant_deliveries.html")]
pub struct DeliveriesPage {
    pub c: Chrome,
    pub endpoint: String,
    pub deliveries: Vec<DeliveryLine>,
}

async fn deliveries_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    merchant: &koban_auth::apikeys::MerchantKey,
    endpoint: &str,
    c: Chrome,
) -> Result<DeliveriesPage, PayError> {
    if !plain_id(endpoint) {
        return Err(PayError::NotFound);
    }
    let deliveries = state.pay.webhook_deliveries(merchant, endpoint).await?;
    let tr = &page.tr;
    Ok(DeliveriesPage {
        c,
        endpoint: endpoint.to_owned(),
        deliveries: deliveries
            .into_iter()
            .map(|d| DeliveryLine {
                status: tr.t(match d.status.as_str() {
                    "delivered" => "delivery-delivered",
                    "pending" => "delivery-pending",
                    _ => "delivery-failed",
                }),
                id: d.id,
                event: d.event_type,
                attempts: d.attempts,
                code: d.last_status_code,
                error: d.last_error.as_deref().map(|failure| {
                    tr.t(match failure {
                        "address_refused" => "delivery-error-address-refused",
                        "dns_failed" => "delivery-error-dns",
                        "connect_failed" => "delivery-error-connect",
                        "tls_failed" => "delivery-error-tls",
                        "no_response" => "delivery-error-no-response",
                        "timed_out" => "delivery-error-timed-out",
                        _ => "delivery-error-other",
                    })
                }),
                when: tr.datetime(d.created_at_ms),
            })
            .collect(),
    })
}

/// One endpoint's deliveries, newest first.
pub async fn deliveries<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    MerchantIn { page, merchant, .. }: MerchantIn,
) -> Response {
    let c = page.chrome("title-deliveries");
    match deliveries_view(&state, &page, &merchant, &id, c).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

/// Sends a delivery again; the log says so.
pub async fn redeliver<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path((endpoint, delivery)): Path<(String, String)>,
    MerchantForm { page, merchant, .. }: MerchantForm<Empty>,
) -> Response {
    let (status, c) = match state.pay.redeliver(&merchant, &delivery).await {
        Ok(()) => (
            StatusCode::OK,
            page.chrome("title-deliveries")
                .with_notice(page.tr.t("delivery-again")),
        ),
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            (
                status,
                page.chrome("title-deliveries").with_error(None, text),
            )
        }
    };
    match deliveries_view(&state, &page, &merchant, &endpoint, c).await {
        Ok(view) => page.render_status(status, &view),
        Err(error) => failure(&page, &error),
    }
}

fn failure(page: &Page, error: &PayError) -> Response {
    let (status, text) = explain(&page.tr, error);
    crate::page::message(page, status, text, "/merchant", "link-dashboard")
}
