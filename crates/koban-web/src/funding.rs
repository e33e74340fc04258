//! Funding pages: identity verification (KYC), linking a bank account by micro-deposits (with
//! step-up), top-ups from it, and in `--dev` the sandbox bank's own pages.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use koban_api::ApiState;
use koban_api::extract::with_cookies;
use koban_auth::{AuthError, LegalName, Principal};
use koban_ledger::{Amount, Currency};
use koban_pay::bank::{BankMove, Behaviour, FundingSource};
use koban_pay::{IdempotencyKey, PayError};
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::page::{
    Chrome, Page, SignedForm, SignedIn, explain, explain_auth, see_other, wallet_currency,
};
use crate::stepup::{Answer, Guarded, Stepped, with_step_up};
use crate::wallet::parse_amount;

pub struct Source {
    pub id: String,
    pub masked_number: String,
    pub verified: bool,
    pub pending: bool,
}

fn source(s: FundingSource) -> Source {
    Source {
        verified: s.status == "verified",
        pending: s.status == "pending",
        id: s.id,
        masked_number: s.masked_number,
    }
}

// ------------------------------------------------------------------ top-up and payout

/// A card kept for top-ups, as the page shows it.
pub struct CardSourceView {
    pub id: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "topup.html")]
pub struct TopupPage {
    pub c: Chrome,
    pub sources: Vec<Source>,
    pub cards: Vec<CardSourceView>,
    pub amount: String,
    pub key: String,
    /// The source chosen before an error, so it stays chosen.
    pub chosen: String,
}

impl TopupPage {
    pub fn has_verified(&self) -> bool {
        self.sources.iter().any(|s| s.verified)
    }

    pub fn has_any(&self) -> bool {
        self.has_verified() || !self.cards.is_empty()
    }

    /// Whether the radio button with `value` is the one to check.
    pub fn checked(&self, value: &str, first: impl std::borrow::Borrow<bool>) -> bool {
        if self.chosen.is_empty() {
            *first.borrow()
        } else {
            self.chosen == value
        }
    }
}

/// A card brand as people write it.
fn brand_name(brand: &str) -> String {
    match brand {
        "visa" => "Visa".into(),
        "mastercard" => "Mastercard".into(),
        "jcb_or_amex" => "JCB / American Express".into(),
        other => {
            let mut chars = other.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect())
                .unwrap_or_default()
        }
    }
}

async fn topup_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    c: Chrome,
    amount: String,
    key: Option<String>,
) -> Result<TopupPage, PayError> {
    let me = page
        .me
        .as_ref()
        .ok_or(PayError::Auth(AuthError::Unauthenticated))?;
    let sources = state.pay.funding_sources(me).await?;
    let cards = state.pay.cards(me).await?;
    Ok(TopupPage {
        c,
        sources: sources.into_iter().map(source).collect(),
        cards: cards
            .into_iter()
            .map(|card| CardSourceView {
                label: format!(
                    "{} •••• {} ({:02}/{:02})",
                    brand_name(&card.brand),
                    card.last4,
                    card.exp_month,
                    card.exp_year % 100
                ),
                id: card.id,
            })
            .collect(),
        amount,
        // A form shown again after an error keeps its key: trying again can never top up twice.
        key: key.unwrap_or_else(koban_shared::new_id),
        chosen: String::new(),
    })
}

pub async fn topup_page<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, .. }: SignedIn,
) -> Response {
    match topup_view(
        &state,
        &page,
        page.chrome("title-topup"),
        String::new(),
        None,
    )
    .await
    {
        Ok(view) => page.render(&view),
        Err(error) => message(&page, &error),
    }
}

fn message(page: &Page, error: &PayError) -> Response {
    let (status, text) = explain(&page.tr, error);
    crate::page::message(page, status, text, "/home", "link-home")
}

#[derive(Deserialize)]
pub struct TopupForm {
    /// `bank:ID` or `card:ID`.
    #[serde(default)]
    source: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    challenge_id: String,
    #[serde(default)]
    challenge_code: String,
}

#[derive(Template)]
#[template(path = "topup_done.html")]
pub struct TopupDonePage {
    pub c: Chrome,
    /// What is on its way, in words.
    pub text: String,
    /// What happens next, in words.
    pub next: String,
    /// For a top-up the customer pays in by their own transfer: to which account, quoting
    /// which reference.
    pub pay_in: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "card_challenge.html")]
pub struct ChallengePage {
    pub c: Chrome,
    pub source: String,
    pub amount: String,
    pub key: String,
    pub challenge_id: String,
}

pub async fn topup<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<TopupForm>,
) -> Response {
    let currency = wallet_currency(&state.pay);
    let kind = form.source.split_once(':').map_or("", |(kind, _)| kind);
    match submit_topup(&state, &me, &page, &form, currency).await {
        Ok((amount, pay_in)) => {
            let shown = page.tr.money(i128::from(amount.minor_units()), currency);
            let (text, next) = match (kind, &pay_in) {
                ("card", _) => ("topup-card-done", "topup-card-done-lead"),
                (_, Some(_)) => ("topup-pay-in", "topup-pay-in-lead"),
                _ => ("topup-done", "topup-done-lead"),
            };
            page.render(&TopupDonePage {
                c: page.chrome("title-topup-done"),
                text: page.tr.with(text, &[("amount", &shown)]),
                next: page.tr.t(next),
                pay_in: pay_in.map(|p| (p.pay_to, p.reference)),
            })
        }
        Err(PayError::ChallengeRequired { id, .. }) => {
            let mut c = page.chrome("title-card-challenge");
            if !form.challenge_id.is_empty() {
                c = c.with_error(Some("challenge_code"), page.tr.t("error-code"));
            }
            challenge_page(&page, StatusCode::FORBIDDEN, c, &form, id)
        }
        // A wrong or expired answer to the issuer's challenge: the challenge page again,
        // with the domain's reason (a new code is sent when the answer is left empty).
        Err(error) if !form.challenge_id.is_empty() && kind == "card" => {
            let (status, text) = explain(&page.tr, &error);
            let c = page
                .chrome("title-card-challenge")
                .with_error(Some("challenge_code"), text);
            let id = form.challenge_id.clone();
            challenge_page(&page, status, c, &form, id)
        }
        Err(error) => {
            let text = match error {
                PayError::Invalid("amount") => page.tr.t("error-amount"),
                PayError::Invalid("source") => page.tr.t("error-source"),
                _ => explain(&page.tr, &error).1,
            };
            let c = page.chrome("title-topup").with_error(Some("amount"), text);
            match topup_view(&state, &page, c, form.amount, Some(form.key)).await {
                Ok(mut view) => {
                    view.chosen = form.source;
                    page.render_status(StatusCode::UNPROCESSABLE_ENTITY, &view)
                }
                Err(error) => message(&page, &error),
            }
        }
    }
}

/// Tops up from the source the form names (`bank:ID` or `card:ID`, with the answer to the
/// card issuer's challenge if there is one); answers the amount on its way, and how to pay
/// it in when the customer's own transfer is what brings it.
async fn submit_topup<S: LedgerStore>(
    state: &ApiState<S>,
    me: &Principal,
    page: &Page,
    form: &TopupForm,
    currency: Currency,
) -> Result<(Amount, Option<koban_pay::connectors::PayIn>), PayError> {
    use koban_pay::card_topups::ChallengeAnswer;
    let (kind, source_id) = form.source.split_once(':').unwrap_or(("", ""));
    let amount = parse_amount(&form.amount, currency).ok_or(PayError::Invalid("amount"))?;
    let key = IdempotencyKey::parse(&form.key).map_err(|_| PayError::Invalid("key"))?;
    let request = BankMove {
        source_id: source_id.to_owned(),
        amount,
        currency,
    };
    let operation = match kind {
        "bank" => state.pay.topup(me, &request, &key).await,
        "card" => {
            let answer = (!form.challenge_id.is_empty()).then(|| ChallengeAnswer {
                id: form.challenge_id.clone(),
                code: koban_auth::Secret::new(form.challenge_code.trim().to_owned()),
            });
            state
                .pay
                .card_topup(me, &request, &key, answer.as_ref(), &page.client)
                .await
        }
        _ => Err(PayError::Invalid("source")),
    }?;
    Ok((operation.transfer.amount, operation.pay_in))
}

/// The card issuer's challenge of a top-up, asking for the code with the form's values kept.
fn challenge_page(
    page: &Page,
    status: StatusCode,
    c: Chrome,
    form: &TopupForm,
    challenge_id: String,
) -> Response {
    page.render_status(
        status,
        &ChallengePage {
            c,
            source: form.source.clone(),
            amount: form.amount.clone(),
            key: form.key.clone(),
            challenge_id,
        },
    )
}

#[derive(Deserialize)]
pub struct CardForm {
    #[serde(default)]
    number: String,
    #[serde(default)]
    exp_month: String,
    #[serde(default)]
    exp_year: String,
    #[serde(default)]
    cvc: String,
}

/// Adds a card for top-ups (through the sandbox acquirer): kept as a fingerprint and its last
/// four digits; the security code is checked once and forgotten.
pub async fn add_card<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<CardForm>,
) -> Response {
    use koban_pay::card_topups::CardDetails;
    let month = form.exp_month.trim().parse::<i64>();
    let year = form
        .exp_year
        .trim()
        .parse::<i64>()
        .map(|y| if y < 100 { y + 2000 } else { y });
    let result = match (month, year) {
        (Ok(exp_month), Ok(exp_year)) => {
            let card = CardDetails {
                number: form.number.chars().filter(char::is_ascii_digit).collect(),
                exp_month,
                exp_year,
                cvc: koban_auth::Secret::new(form.cvc.trim().to_owned()),
            };
            state.pay.add_card(&me, &card).await.map(|_| ())
        }
        _ => Err(PayError::Invalid("expiry")),
    };
    let c = match result {
        Ok(()) => page
            .chrome("title-topup")
            .with_notice(page.tr.t("card-source-added")),
        Err(PayError::Invalid("expiry")) => page
            .chrome("title-topup")
            .with_error(Some("exp_month"), page.tr.t("error-card-expiry")),
        Err(error) => page
            .chrome("title-topup")
            .with_error(Some("number"), explain(&page.tr, &error).1),
    };
    let status = if c.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    match topup_view(&state, &page, c, String::new(), None).await {
        Ok(view) => page.render_status(status, &view),
        Err(error) => message(&page, &error),
    }
}

#[derive(Template)]
#[template(path = "payout.html")]
pub struct PayoutPage {
    pub c: Chrome,
    pub sources: Vec<Source>,
    pub available: String,
    pub amount: String,
    pub key: String,
}

async fn payout_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    c: Chrome,
    amount: String,
    key: Option<String>,
) -> Result<PayoutPage, PayError> {
    let me = page
        .me
        .as_ref()
        .ok_or(PayError::Auth(AuthError::Unauthenticated))?;
    let currency = wallet_currency(&state.pay);
    let sources = state.pay.funding_sources(me).await?;
    let wallet = state.pay.wallet_view(me, currency).await?;
    Ok(PayoutPage {
        c,
        sources: sources
            .into_iter()
            .map(source)
            .filter(|s| s.verified)
            .collect(),
        available: page
            .tr
            .money(wallet.account.balance.available_credit(), currency),
        amount,
        key: key.unwrap_or_else(koban_shared::new_id),
    })
}

pub async fn payout_page<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, .. }: SignedIn,
) -> Response {
    match payout_view(
        &state,
        &page,
        page.chrome("title-payout"),
        String::new(),
        None,
    )
    .await
    {
        Ok(view) => page.render(&view),
        Err(error) => message(&page, &error),
    }
}

#[derive(Deserialize)]
pub struct PayoutForm {
    #[serde(default)]
    source_id: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    key: String,
    #[serde(flatten)]
    answer: Answer,
}

/// The payout form again, with what was wrong and the same idempotency key.
async fn payout_again<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    text: String,
    form: &PayoutForm,
) -> Response {
    let c = page.chrome("title-payout").with_error(Some("amount"), text);
    match payout_view(state, page, c, form.amount.clone(), Some(form.key.clone())).await {
        Ok(view) => page.render_status(StatusCode::UNPROCESSABLE_ENTITY, &view),
        Err(error) => message(page, &error),
    }
}

/// Withdraws to a linked bank account (step-up bound to amount and account); a customer's
/// wallet or a merchant's takings alike.
pub async fn payout<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { mut page, me, form }: SignedForm<PayoutForm>,
) -> Response {
    let currency = wallet_currency(&state.pay);
    let (Some(amount), Ok(key)) = (
        parse_amount(&form.amount, currency),
        IdempotencyKey::parse(&form.key),
    ) else {
        let text = page.tr.t("error-amount");
        return payout_again(&state, &page, text, &form).await;
    };
    let request = BankMove {
        source_id: form.source_id.clone(),
        amount,
        currency,
    };
    let shown = page.tr.money(i128::from(amount.minor_units()), currency);
    let guarded = Guarded {
        action: "/payout".into(),
        summary: page.tr.with("step-up-payout", &[("amount", &shown)]),
        fields: vec![
            ("source_id", form.source_id.clone()),
            ("amount", form.amount.clone()),
            ("key", form.key.clone()),
        ],
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (pay, me, request, key, client) = (&state.pay, &me, &request, &key, &page.client);
        async move {
            // A merchant's balance is paid out as with its API key, after the same step-up.
            if me.kind == koban_auth::UserKind::Merchant {
                pay.dashboard_payout(me, request, key, proof.as_ref(), client)
                    .await
            } else {
                pay.payout(me, request, key, proof.as_ref(), client).await
            }
        }
    })
    .await;
    match done {
        Ok(Stepped::Done(op)) => {
            if let Some(session) = &op.session {
                page.rotated(session);
            }
            let view = TopupDonePage {
                c: page.chrome("title-payout-done"),
                text: page.tr.with("payout-done", &[("amount", &shown)]),
                next: page.tr.t("payout-done-lead"),
                pay_in: None,
            };
            with_cookies(page.render(&view), op.session.as_ref(), page.dev)
        }
        Ok(Stepped::Page(response)) => response,
        Err(error) => {
            let text = explain(&page.tr, &error).1;
            payout_again(&state, &page, text, &form).await
        }
    }
}

// ------------------------------------------------------------------ bank linking

#[derive(Template)]
#[template(path = "bank.html")]
pub struct BankPage {
    pub c: Chrome,
    pub verified_name: Option<String>,
    pub legal_name: String,
    pub account_number: String,
    /// Accounts are linked at the ISO 20022 bank (bank, branch and number), not the sandbox.
    pub zengin: bool,
}

async fn bank_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    c: Chrome,
    account_number: String,
) -> Result<BankPage, PayError> {
    let me = page
        .me
        .as_ref()
        .ok_or(PayError::Auth(AuthError::Unauthenticated))?;
    let holder = state.pay.holder(&me.user_id).await?;
    Ok(BankPage {
        c,
        verified_name: holder.verified_name,
        legal_name: String::new(),
        account_number,
        zengin: state.pay.file_bank_connected(),
    })
}

/// Linking a bank account: verify your identity first, then the account number.
pub async fn bank_page<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, .. }: SignedIn,
) -> Response {
    match bank_view(&state, &page, page.chrome("title-bank"), String::new()).await {
        Ok(view) => page.render(&view),
        Err(error) => message(&page, &error),
    }
}

#[derive(Deserialize)]
pub struct KycForm {
    #[serde(default)]
    legal_name: String,
}

pub async fn kyc<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<KycForm>,
) -> Response {
    let result = match LegalName::parse(&form.legal_name) {
        Ok(name) => state.pay.submit_kyc(&me, &name).await,
        Err(error) => Err(PayError::Auth(error)),
    };
    let c = match result {
        Ok(()) => page.chrome("title-bank").with_notice(page.tr.t("kyc-sent")),
        Err(error) => page
            .chrome("title-bank")
            .with_error(Some("legal_name"), explain(&page.tr, &error).1),
    };
    match bank_view(&state, &page, c, String::new()).await {
        Ok(mut view) => {
            view.legal_name = form.legal_name;
            page.render(&view)
        }
        Err(error) => message(&page, &error),
    }
}

/// The bank the web wallet links accounts at: the ISO 20022 bank when the issuer connected
/// one, else the sandbox.
fn web_bank<S: LedgerStore>(pay: &koban_pay::Payments<S>) -> &'static str {
    if pay.file_bank_connected() {
        koban_pay::connectors::FILE_BANK
    } else {
        koban_pay::bank::SANDBOX_BANK
    }
}

#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    account_number: String,
    #[serde(flatten)]
    answer: Answer,
}

/// Starts linking (step-up); the bank then receives two small deposits to confirm with.
pub async fn link<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<LinkForm>,
) -> Response {
    let number = form.account_number.trim().to_owned();
    let guarded = Guarded {
        action: "/bank/link".into(),
        summary: page.tr.with("step-up-link", &[("number", &number)]),
        fields: vec![("account_number", number.clone())],
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (pay, me, number, client) = (&state.pay, &me, &number, &page.client);
        async move {
            pay.link_bank_start(me, web_bank(pay), number, proof.as_ref(), client)
                .await
        }
    })
    .await;
    match done {
        Ok(Stepped::Done((source, session))) => {
            let next = if page.dev && web_bank(&state.pay) == koban_pay::bank::SANDBOX_BANK {
                format!("/bank/{}/confirm?sandbox={number}", source.id)
            } else {
                format!("/bank/{}/confirm", source.id)
            };
            with_cookies(see_other(&next), Some(&session), page.dev)
        }
        Ok(Stepped::Page(response)) => response,
        Err(error) => {
            let c = page
                .chrome("title-bank")
                .with_error(Some("account_number"), explain(&page.tr, &error).1);
            match bank_view(&state, &page, c, number.clone()).await {
                Ok(view) => page.render_status(StatusCode::UNPROCESSABLE_ENTITY, &view),
                Err(error) => message(&page, &error),
            }
        }
    }
}

#[derive(Template)]
#[template(path = "bank_confirm.html")]
pub struct ConfirmPage {
    pub c: Chrome,
    pub id: String,
    /// In `--dev`, the sandbox account whose statement shows the deposits.
    pub sandbox: Option<String>,
}

#[derive(Deserialize)]
pub struct SandboxQuery {
    sandbox: Option<String>,
}

pub async fn confirm_page<S: LedgerStore>(
    SignedIn { page, .. }: SignedIn,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<SandboxQuery>,
) -> Response {
    if !crate::page::plain_id(&id) {
        return crate::page::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    }
    let sandbox = query
        .sandbox
        .filter(|n| page.dev && n.len() == 7 && n.bytes().all(|b| b.is_ascii_digit()));
    page.render(&ConfirmPage {
        c: page.chrome("title-bank-confirm"),
        id,
        sandbox,
    })
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    first: String,
    #[serde(default)]
    second: String,
}

pub async fn confirm<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { page, me, form }: SignedForm<ConfirmForm>,
) -> Response {
    if !crate::page::plain_id(&id) {
        return crate::page::refusal(&page, StatusCode::NOT_FOUND, "error-not-found");
    }
    let (Ok(first), Ok(second)) = (
        form.first.trim().parse::<i64>(),
        form.second.trim().parse::<i64>(),
    ) else {
        let view = ConfirmPage {
            c: page
                .chrome("title-bank-confirm")
                .with_error(Some("first"), page.tr.t("error-deposits")),
            id,
            sandbox: None,
        };
        return page.render_status(StatusCode::UNPROCESSABLE_ENTITY, &view);
    };
    match state
        .pay
        .link_bank_confirm(&me, &id, first, second, &page.client)
        .await
    {
        Ok(source) if source.status == "verified" => {
            let c = page
                .chrome("title-topup")
                .with_notice(page.tr.t("bank-linked"));
            match topup_view(&state, &page, c, String::new(), None).await {
                Ok(view) => page.render(&view),
                Err(error) => message(&page, &error),
            }
        }
        Ok(_) => {
            let view = ConfirmPage {
                c: page
                    .chrome("title-bank-confirm")
                    .with_error(Some("first"), page.tr.t("error-deposits-wrong")),
                id,
                sandbox: None,
            };
            page.render_status(StatusCode::UNPROCESSABLE_ENTITY, &view)
        }
        Err(error) => {
            let (status, text) = match &error {
                PayError::Auth(auth) => explain_auth(&page.tr, auth),
                other => explain(&page.tr, other),
            };
            let view = ConfirmPage {
                c: page
                    .chrome("title-bank-confirm")
                    .with_error(Some("first"), text),
                id,
                sandbox: None,
            };
            page.render_status(status, &view)
        }
    }
}

// ------------------------------------------------------------------ sandbox bank (--dev)

#[derive(Deserialize)]
pub struct SandboxForm {
    #[serde(default)]
    holder_name: String,
}

/// `--dev`: opens an account at the sandbox bank in the name given, and shows it.
pub async fn sandbox_open<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<SandboxForm>,
) -> Response {
    let result = match LegalName::parse(&form.holder_name) {
        Ok(name) => {
            state
                .pay
                .sandbox_open_account(&me, &name, Behaviour::Normal)
                .await
        }
        Err(error) => Err(PayError::Auth(error)),
    };
    match result {
        Ok(number) => see_other(&format!("/sandbox/bank/{number}")),
        Err(error) => message(&page, &error),
    }
}

#[derive(Template)]
#[template(path = "sandbox_bank.html")]
pub struct SandboxBankPage {
    pub c: Chrome,
    pub number: String,
    pub lines: Vec<(String, String, String)>,
}

/// `--dev`: the sandbox bank's statement of one of the caller's accounts.
pub async fn sandbox_statement<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, me }: SignedIn,
    Path(number): Path<String>,
) -> Response {
    let currency = wallet_currency(&state.pay);
    match state.pay.sandbox_statement(&me, &number).await {
        Ok(lines) => page.render(&SandboxBankPage {
            c: page.chrome("title-sandbox-bank"),
            number,
            lines: lines
                .into_iter()
                .map(|(amount, text, at)| {
                    (
                        page.tr.datetime(at),
                        text,
                        page.tr.money(i128::from(amount), currency),
                    )
                })
                .collect(),
        }),
        Err(error) => message(&page, &error),
    }
}
