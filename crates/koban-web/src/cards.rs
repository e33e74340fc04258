//! Card pages: the customer's virtual cards, creating one, activating it and showing its
//! number with step-up (hidden again after 30 seconds, never in an address), freezing and
//! unfreezing, and the card's controls.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use koban_api::ApiState;
use koban_api::extract::with_cookies;
use koban_cards::issuing::{CardControls, IssuedCard};
use koban_pay::PayError;
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::account::Empty;
use crate::page::{Chrome, Page, SignedForm, SignedIn, explain, see_other};
use crate::stepup::{Answer, Guarded, Stepped, with_step_up};
use crate::wallet::parse_amount;
use koban_shared::ids::CardId;

/// Seconds a revealed card number stays on screen.
pub const REVEAL_S: u32 = 30;

/// A card as its pages show it.
pub struct CardView {
    pub id: String,
    pub name: String,
    pub masked: String,
    pub expiry: String,
    pub status: String,
    pub active: bool,
    pub inactive: bool,
    pub frozen: bool,
    pub per_transaction_max: String,
    pub daily_max: String,
    pub online: bool,
    pub in_store: bool,
    pub atm: bool,
}

fn view(page: &Page, card: &IssuedCard) -> CardView {
    let tr = &page.tr;
    let frozen = card.frozen_by_holder || card.frozen_by_operator || card.locked;
    let status = match (card.status.as_str(), frozen) {
        ("closed", _) => "card-status-closed",
        (_, true) => "card-status-frozen",
        ("inactive", _) => "card-status-inactive",
        _ => "card-status-active",
    };
    let amount = |minor: Option<u64>| {
        minor.map_or(String::new(), |m| {
            tr.money(i128::from(m), card.currency)
                .trim_start_matches(['¥', '$', '€', '£'])
                .to_owned()
        })
    };
    CardView {
        id: card.id.to_string(),
        name: card.name.clone(),
        masked: card.masked(),
        expiry: format!("{:02}/{:02}", card.exp_month, card.exp_year % 100),
        status: tr.t(status),
        active: card.status == "active",
        inactive: card.status == "inactive",
        frozen: card.frozen_by_holder,
        per_transaction_max: amount(card.controls.per_transaction_max),
        daily_max: amount(card.controls.daily_max),
        online: card.controls.channels.online,
        in_store: card.controls.channels.in_store,
        atm: card.controls.channels.atm,
    }
}

fn problem(page: &Page, error: &PayError, link: &'static str) -> Response {
    let (status, text) = explain(&page.tr, error);
    crate::page::message(page, status, text, link, "link-cards")
}

#[derive(Template)]
#[template(path = "cards.html")]
pub struct CardsPage {
    pub c: Chrome,
    pub cards: Vec<CardView>,
    pub name: String,
}

pub async fn cards_page<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, me }: SignedIn,
) -> Response {
    match state.cards.cards_of(&me).await {
        Ok(cards) => page.render(&CardsPage {
            c: page.chrome("title-cards"),
            cards: cards.iter().map(|c| view(&page, c)).collect(),
            name: String::new(),
        }),
        Err(error) => problem(&page, &error, "/home"),
    }
}

#[derive(Deserialize)]
pub struct NewCardForm {
    #[serde(default)]
    name: String,
}

pub async fn create<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<NewCardForm>,
) -> Response {
    match state.cards.create_card(&me, &form.name, false, None).await {
        Ok(card) => see_other(&format!("/cards/{}", card.id)),
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            let cards = state.cards.cards_of(&me).await.unwrap_or_default();
            page.render_status(
                status,
                &CardsPage {
                    c: page.chrome("title-cards").with_error(Some("name"), text),
                    cards: cards.iter().map(|c| view(&page, c)).collect(),
                    name: form.name,
                },
            )
        }
    }
}

#[derive(Template)]
#[template(path = "card.html")]
pub struct CardPage {
    pub c: Chrome,
    pub card: CardView,
}

pub async fn card_page<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, me }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = CardId::parse(&id) else {
        return crate::page::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    };
    match state.cards.card(&me, &id).await {
        Ok(card) => page.render(&CardPage {
            c: page.chrome("title-card"),
            card: view(&page, &card),
        }),
        Err(error) => problem(&page, &error, "/cards"),
    }
}

/// The fields every step-up-guarded card form sends.
#[derive(Deserialize, Default)]
pub struct CardStepForm {
    #[serde(flatten)]
    answer: Answer,
    #[serde(default)]
    per_transaction_max: String,
    #[serde(default)]
    daily_max: String,
    #[serde(default)]
    online: Option<String>,
    #[serde(default)]
    in_store: Option<String>,
    #[serde(default)]
    atm: Option<String>,
}

impl CardStepForm {
    /// The form's own fields, to carry through a step-up page.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("per_transaction_max", self.per_transaction_max.clone()),
            ("daily_max", self.daily_max.clone()),
        ];
        for (name, value) in [
            ("online", &self.online),
            ("in_store", &self.in_store),
            ("atm", &self.atm),
        ] {
            if let Some(value) = value {
                fields.push((name, value.clone()));
            }
        }
        fields
    }
}

/// Back to the card after a change, with the cookies of the session step-up rotated; the
/// step-up page when one is needed; or what was refused.
fn changed(
    page: &Page,
    id: &str,
    done: Result<Stepped<koban_cards::issuing::CardChange>, PayError>,
) -> Response {
    match done {
        Ok(Stepped::Done(change)) => with_cookies(
            see_other(&format!("/cards/{id}")),
            change.session.as_ref(),
            page.dev,
        ),
        Ok(Stepped::Page(response)) => response,
        Err(error) => problem(page, &error, "/cards"),
    }
}

pub async fn activate<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { page, me, form }: SignedForm<CardStepForm>,
) -> Response {
    let Some(id) = CardId::parse(&id) else {
        return crate::page::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    };
    let summary = page.tr.t("step-up-card-activate");
    let action = format!("/cards/{id}/activate");
    let guarded = Guarded {
        action,
        summary,
        fields: form.fields(),
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (cards, me, id, client) = (&state.cards, &me, &id, &page.client);
        async move {
            cards
                .activate_card(me, id, None, proof.as_ref(), client)
                .await
        }
    })
    .await;
    changed(&page, &id, done)
}

#[derive(Template)]
#[template(path = "card_reveal.html")]
pub struct RevealPage {
    pub c: Chrome,
    pub card: CardView,
    pub number: String,
    pub expiry: String,
    pub security_code: String,
    pub seconds: u32,
}

/// The full number and security code, in the answer to a POST only, for 30 seconds.
pub async fn reveal<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { mut page, me, form }: SignedForm<CardStepForm>,
) -> Response {
    let Some(id) = CardId::parse(&id) else {
        return crate::page::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    };
    let summary = page.tr.t("step-up-card-reveal");
    let action = format!("/cards/{id}/reveal");
    let guarded = Guarded {
        action,
        summary,
        fields: form.fields(),
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (cards, me, id, client) = (&state.cards, &me, &id, &page.client);
        async move { cards.reveal_card(me, id, proof.as_ref(), client).await }
    })
    .await;
    match done {
        Ok(Stepped::Done(revealed)) => {
            page.rotated(&revealed.session);
            let number: Vec<String> = revealed
                .pan
                .expose()
                .as_bytes()
                .chunks(4)
                .map(|group| String::from_utf8_lossy(group).into_owned())
                .collect();
            let view = RevealPage {
                c: page.chrome("title-card-reveal"),
                card: view(&page, &revealed.card),
                number: number.join(" "),
                expiry: format!(
                    "{:02}/{:02}",
                    revealed.card.exp_month,
                    revealed.card.exp_year % 100
                ),
                security_code: revealed.security_code.expose().clone(),
                seconds: REVEAL_S,
            };
            with_cookies(page.render(&view), Some(&revealed.session), page.dev)
        }
        Ok(Stepped::Page(response)) => response,
        Err(error) => problem(&page, &error, "/cards"),
    }
}

pub async fn freeze<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { page, me, .. }: SignedForm<Empty>,
) -> Response {
    let Some(id) = CardId::parse(&id) else {
        return crate::page::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    };
    match state.cards.freeze_card(&me, &id).await {
        Ok(_) => see_other(&format!("/cards/{id}")),
        Err(error) => problem(&page, &error, "/cards"),
    }
}

/// Unfreezing loosens the card: step-up bound to the card.
pub async fn unfreeze<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { page, me, form }: SignedForm<CardStepForm>,
) -> Response {
    let Some(id) = CardId::parse(&id) else {
        return crate::page::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    };
    let summary = page.tr.t("step-up-card-unfreeze");
    let action = format!("/cards/{id}/unfreeze");
    let guarded = Guarded {
        action,
        summary,
        fields: form.fields(),
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (cards, me, id, client) = (&state.cards, &me, &id, &page.client);
        async move {
            cards
                .change_card(me, id, None, true, proof.as_ref(), client)
                .await
        }
    })
    .await;
    changed(&page, &id, done)
}

/// New limits and channels for the card (step-up bound to exactly what they allow).
pub async fn controls<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { page, me, form }: SignedForm<CardStepForm>,
) -> Response {
    let Some(id) = CardId::parse(&id) else {
        return crate::page::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    };
    let card = match state.cards.card(&me, &id).await {
        Ok(card) => card,
        Err(error) => return problem(&page, &error, "/cards"),
    };
    let limit = |text: &str| -> Result<Option<u64>, ()> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        parse_amount(text, card.currency)
            .map(|a| Some(a.minor_units()))
            .ok_or(())
    };
    let (Ok(per_transaction_max), Ok(daily_max)) =
        (limit(&form.per_transaction_max), limit(&form.daily_max))
    else {
        let view = CardPage {
            c: page
                .chrome("title-card")
                .with_error(Some("per_transaction_max"), page.tr.t("error-amount")),
            card: view(&page, &card),
        };
        return page.render_status(StatusCode::UNPROCESSABLE_ENTITY, &view);
    };
    let mut controls: CardControls = card.controls.clone();
    controls.per_transaction_max = per_transaction_max;
    controls.daily_max = daily_max;
    controls.channels.online = form.online.is_some();
    controls.channels.in_store = form.in_store.is_some();
    controls.channels.atm = form.atm.is_some();
    let summary = page.tr.t("step-up-card-controls");
    let action = format!("/cards/{id}/controls");
    let guarded = Guarded {
        action,
        summary,
        fields: form.fields(),
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (cards, me, id, client, controls) =
            (&state.cards, &me, &id, &page.client, controls.clone());
        async move {
            cards
                .change_card(me, id, Some(controls), false, proof.as_ref(), client)
                .await
        }
    })
    .await;
    match done {
        ok @ Ok(_) => changed(&page, &id, ok),
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            let view = CardPage {
                c: page
                    .chrome("title-card")
                    .with_error(Some("per_transaction_max"), text),
                card: view(&page, &card),
            };
            page.render_status(status, &view)
        }
    }
}
