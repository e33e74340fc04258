//! Wallet pages: home (balance, movements, the 30-day chart, pending money), sending money
//! with confirmation of payee and step-up, and the statement download.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use koban_api::ApiState;
use koban_api::extract::with_cookies;
use koban_auth::Principal;
use koban_ledger::{Amount, Currency, Money};
use koban_pay::p2p::P2pRequest;
use koban_pay::wallets::Entry;
use koban_pay::{IdempotencyKey, PayError};
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::chart::{CHART_DAYS, Point, daily_balances, polyline};
use crate::i18n::Tr;
use crate::page::{Chrome, Page, SignedForm, SignedIn, explain, millis, wallet_currency};
use crate::stepup::{Answer, Guarded, Stepped, with_step_up};

/// The longest message a transfer carries, in bytes (the domain's limit; Japanese text takes
/// three bytes a character).
const MESSAGE_BYTES_MAX: usize = 140;
/// Movements listed on the home page.
const HOME_MOVEMENTS: usize = 10;
/// History pages of 100 read for the chart at most; a busier wallet's chart starts later.
const CHART_PAGES_MAX: usize = 5;

/// An amount typed by a person: `1500`, `1,500`, `¥1,500`, `１５００円`, `12.50`.
pub fn parse_amount(text: &str, currency: Currency) -> Option<Amount> {
    let normal: String = text
        .trim()
        .chars()
        .filter_map(|c| match c {
            '０'..='９' => crate::page::half_width_digit(c),
            '．' => Some('.'),
            ',' | '，' | '¥' | '￥' | '円' | '$' | '€' | '£' | ' ' | '\u{3000}' => None,
            c => Some(c),
        })
        .collect();
    // Where a currency has a decimal separator, "12,50" is a European decimal, not 1,250:
    // refused rather than guessed.
    if currency.exponent() > 0
        && let Some((_, tail)) = text.trim().rsplit_once([',', '，'])
        && (1..=2).contains(&tail.chars().filter(char::is_ascii_digit).count())
        && !tail.contains(['.', '．'])
    {
        return None;
    }
    Money::parse(&normal, currency).ok().map(Money::amount)
}

/// One line of the wallet's history, ready to show.
pub struct Movement {
    pub when: String,
    pub what: String,
    pub party: Option<String>,
    pub amount: String,
    pub incoming: bool,
    pub status: Option<String>,
    pub message: Option<String>,
}

fn kind_label(tr: &Tr, entry: &Entry) -> String {
    let key = match (entry.kind, entry.incoming) {
        ("p2p", true) => "kind-p2p-in",
        ("p2p", false) => "kind-p2p-out",
        ("topup", _) => "kind-topup",
        ("payout", _) => "kind-payout",
        ("merchant_payment", _) => "kind-merchant-payment",
        ("refund", _) => "kind-refund",
        ("review_hold", _) => "kind-review-hold",
        ("card", _) | ("card_authorization", _) => "kind-card",
        _ => "kind-other",
    };
    tr.t(key)
}

pub fn movement(tr: &Tr, entry: &Entry, party: Option<String>) -> Movement {
    let minor = i128::from(entry.transfer.amount.minor_units());
    let signed = if entry.incoming { minor } else { -minor };
    let status = match entry.status {
        "pending" => Some(tr.t("status-pending")),
        "released" => Some(tr.t("status-released")),
        "expired" => Some(tr.t("status-expired")),
        _ => None,
    };
    Movement {
        when: tr.datetime(millis(entry.transfer.timestamp)),
        what: kind_label(tr, entry),
        party,
        amount: tr.money(signed, entry.transfer.currency),
        incoming: entry.incoming,
        status,
        message: entry
            .transfer
            .metadata
            .iter()
            .find(|(k, _)| *k == "message")
            .map(|(_, v)| v.to_owned()),
    }
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub c: Chrome,
    pub name: String,
    pub email_verified: bool,
    pub balance: String,
    pub available: String,
    pub pending_in: Option<String>,
    pub pending_out: Option<String>,
    pub tier: String,
    pub spent_today: String,
    pub daily_max: String,
    pub movements: Vec<Movement>,
    pub chart: ChartView,
}

pub async fn home<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, me }: SignedIn,
) -> Response {
    // A merchant's home is its dashboard.
    match me.kind {
        koban_auth::UserKind::Merchant => return crate::page::see_other("/merchant"),
        koban_auth::UserKind::Operator => return crate::page::see_other("/ops"),
        koban_auth::UserKind::Customer => {}
    }
    match home_view(&state, &page, &me).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

async fn home_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &Principal,
) -> Result<HomePage, PayError> {
    let tr = &page.tr;
    let currency = wallet_currency(&state.pay);
    let user = state.auth.me(me).await?;
    let view = state.pay.wallet_view(me, currency).await?;
    let account = view.wallet.account;
    let b = view.account.balance;
    let balance = b.net_credit_posted();
    let recent = recent(state, me, account, currency, balance, HOME_MOVEMENTS).await?;
    let parties = state.pay.counterparties(account, &recent.entries).await?;
    let movements = recent
        .entries
        .iter()
        .zip(parties)
        .map(|(entry, party)| movement(tr, entry, party))
        .collect();
    let pending = |minor: u64| (minor > 0).then(|| tr.money(i128::from(minor), currency));
    Ok(HomePage {
        c: page.chrome("title-home"),
        name: user.display_name,
        email_verified: user.email_verified,
        balance: tr.money(balance, currency),
        available: tr.money(b.available_credit(), currency),
        pending_in: pending(b.credits_pending),
        pending_out: pending(b.debits_pending),
        tier: tr.t(match view.tier.as_str() {
            "verified" => "tier-verified",
            _ => "tier-unverified",
        }),
        spent_today: tr.money(i128::from(view.spent_today), currency),
        daily_max: tr.money(i128::from(view.limits.daily_out_max), currency),
        movements,
        chart: ChartView::new(tr, &recent.days, balance, currency),
    })
}

/// The balance chart as a page draws it: the line's points and the sentence that says it.
pub struct ChartView {
    pub points: String,
    pub summary: String,
}

impl ChartView {
    pub fn new(tr: &Tr, days: &[i128], balance: i128, currency: Currency) -> ChartView {
        let low = days.iter().min().copied().unwrap_or(0);
        let high = days.iter().max().copied().unwrap_or(0);
        let first = days.first().copied().unwrap_or(0);
        ChartView {
            points: polyline(days, 600, 160),
            summary: tr.with(
                "home-chart-summary",
                &[
                    ("from", &tr.money(first, currency)),
                    ("to", &tr.money(balance, currency)),
                    ("low", &tr.money(low, currency)),
                    ("high", &tr.money(high, currency)),
                ],
            ),
        }
    }
}

/// A wallet's closing balance on each of the chart's days, and its newest movements.
pub struct Recent {
    pub days: Vec<i128>,
    pub entries: Vec<Entry>,
}

/// Reads the wallet's history back over the chart's days (at most [`CHART_PAGES_MAX`] pages):
/// the chart's days and the list's lines come from the same newest-first pages.
pub async fn recent<S: LedgerStore>(
    state: &ApiState<S>,
    me: &Principal,
    account: koban_ledger::AccountId,
    currency: Currency,
    balance: i128,
    lines: usize,
) -> Result<Recent, PayError> {
    let now = state.auth.now_ms();
    let since = now.saturating_sub(i64::try_from(CHART_DAYS).unwrap_or(30) * 86_400_000);
    let mut entries: Vec<Entry> = Vec::new();
    let mut complete = false;
    for _ in 0..CHART_PAGES_MAX {
        let after = entries.last().map(|e| e.transfer.id);
        let (page_entries, more) = state.pay.history(me, currency, after, 100, &[]).await?;
        entries.extend(page_entries);
        if !more {
            complete = true;
            break;
        }
        if entries
            .last()
            .is_some_and(|e| millis(e.transfer.timestamp) < since)
        {
            break;
        }
    }
    let points: Vec<Point> = entries
        .iter()
        .filter_map(|e| {
            e.transfer.side(account).map(|(_, after)| Point {
                at_ms: millis(e.transfer.timestamp),
                balance: after.net_credit_posted(),
            })
        })
        .collect();
    let days = daily_balances(now, balance, &points, complete, CHART_DAYS);
    entries.truncate(lines);
    Ok(Recent { days, entries })
}

/// A page that could not be built: what went wrong, in words.
fn failure(page: &Page, error: &PayError) -> Response {
    let (status, text) = explain(&page.tr, error);
    crate::page::message(page, status, text, "/home", "link-home")
}

// ------------------------------------------------------------------ send money

#[derive(Template)]
#[template(path = "send.html")]
pub struct SendPage {
    pub c: Chrome,
    pub to: String,
    pub amount: String,
    pub message: String,
}

pub async fn send_page<S: LedgerStore>(SignedIn { page, .. }: SignedIn) -> Response {
    page.render(&SendPage {
        c: page.chrome("title-send"),
        to: String::new(),
        amount: String::new(),
        message: String::new(),
    })
}

#[derive(Deserialize)]
pub struct SendForm {
    #[serde(default)]
    to: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    message: String,
}

#[derive(Template)]
#[template(path = "send_confirm.html")]
pub struct ConfirmPage {
    pub c: Chrome,
    pub to: String,
    pub payee: String,
    pub known: bool,
    pub amount_minor: String,
    pub amount: String,
    pub message: String,
    pub key: String,
}

/// Confirmation of payee: who the address belongs to (masked) and the amount, before anything
/// is sent.
pub async fn send_check<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<SendForm>,
) -> Response {
    let currency = wallet_currency(&state.pay);
    let again = |field: &'static str, status: StatusCode, text: String| {
        page.render_status(
            status,
            &SendPage {
                c: page.chrome("title-send").with_error(Some(field), text),
                to: form.to.clone(),
                amount: form.amount.clone(),
                message: form.message.clone(),
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
    if form.message.trim().len() > MESSAGE_BYTES_MAX {
        return again(
            "message",
            StatusCode::UNPROCESSABLE_ENTITY,
            page.tr.t("error-message-long"),
        );
    }
    // A phone number typed the way people write it is looked up in E.164.
    let to = if form.to.contains('@') {
        form.to.trim().to_owned()
    } else {
        crate::page::normalize_phone(&form.to)
    };
    match state
        .pay
        .lookup_payee(&me, &page.client, &to, currency)
        .await
    {
        Ok((payee, known)) => page.render(&ConfirmPage {
            c: page.chrome("title-send-confirm"),
            to,
            payee: payee.masked_name,
            known,
            amount_minor: amount.minor_units().to_string(),
            amount: page.tr.money(i128::from(amount.minor_units()), currency),
            message: form.message.trim().to_owned(),
            key: koban_shared::new_id(),
        }),
        Err(PayError::NotFound) => again("to", StatusCode::NOT_FOUND, page.tr.t("error-payee")),
        Err(PayError::Invalid(_)) => again(
            "to",
            StatusCode::UNPROCESSABLE_ENTITY,
            page.tr.t("error-payee-format"),
        ),
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            again("to", status, text)
        }
    }
}

#[derive(Deserialize)]
pub struct SendConfirmForm {
    #[serde(default)]
    to: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    key: String,
    #[serde(flatten)]
    answer: Answer,
}

/// Sends the money, asking for step-up when the domain does; answers with a receipt.
pub async fn send_confirm<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { mut page, me, form }: SignedForm<SendConfirmForm>,
) -> Response {
    let currency = wallet_currency(&state.pay);
    let amount = form
        .amount
        .parse::<i64>()
        .ok()
        .and_then(|minor| koban_pay::parse_amount(minor).ok());
    let (Some(amount), Ok(key)) = (amount, IdempotencyKey::parse(&form.key)) else {
        return crate::page::refusal(&page, StatusCode::BAD_REQUEST, "error-form");
    };
    let message = form.message.trim();
    let request = P2pRequest {
        to: form.to.clone(),
        amount,
        currency,
        message: (!message.is_empty()).then(|| message.to_owned()),
        key,
    };
    let shown = page.tr.money(i128::from(amount.minor_units()), currency);
    // The step-up page names the payee as confirmation of payee showed them.
    let looked_up = state
        .pay
        .lookup_payee(&me, &page.client, &form.to, currency)
        .await;
    let payee = match &looked_up {
        Ok((payee, _)) => format!("{} ({})", payee.masked_name, form.to),
        Err(_) => form.to.clone(),
    };
    let guarded = Guarded {
        action: "/send/confirm".into(),
        summary: page
            .tr
            .with("step-up-send", &[("amount", &shown), ("to", &payee)]),
        fields: vec![
            ("to", form.to.clone()),
            ("amount", form.amount.clone()),
            ("message", form.message.clone()),
            ("key", form.key.clone()),
        ],
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (pay, me, request, client) = (&state.pay, &me, &request, &page.client);
        async move { pay.transfer(me, request, proof.as_ref(), client).await }
    })
    .await;
    match done {
        Ok(Stepped::Done(outcome)) => receipt(&mut page, &outcome, request.message.clone()),
        Ok(Stepped::Page(response)) => response,
        Err(error) => send_refused(&page, &form, looked_up, shown, &error),
    }
}

/// A transfer refused: the confirmation shown again with the same key, so trying again after
/// an error (or a double click answered "in progress") can never send twice; or the form,
/// when the payee could not be found.
fn send_refused(
    page: &Page,
    form: &SendConfirmForm,
    looked_up: Result<(koban_pay::p2p::Payee, bool), PayError>,
    shown: String,
    error: &PayError,
) -> Response {
    let (status, text) = explain(&page.tr, error);
    match looked_up {
        Ok((payee, known)) => page.render_status(
            status,
            &ConfirmPage {
                c: page.chrome("title-send-confirm").with_error(None, text),
                to: form.to.clone(),
                payee: payee.masked_name,
                known,
                amount_minor: form.amount.clone(),
                amount: shown,
                message: form.message.clone(),
                key: form.key.clone(),
            },
        ),
        Err(_) => page.render_status(
            status,
            &SendPage {
                c: page.chrome("title-send").with_error(Some("to"), text),
                to: form.to.clone(),
                amount: shown,
                message: form.message.clone(),
            },
        ),
    }
}

#[derive(Template)]
#[template(path = "receipt.html")]
pub struct ReceiptPage {
    pub c: Chrome,
    pub held: bool,
    pub amount: String,
    pub payee: String,
    pub reference: String,
    pub when: String,
    pub message: Option<String>,
}

/// The receipt of a transfer (sent, or a link paid), with the cookies of the session that
/// step-up rotated: this page's forms then carry the new session's token.
pub fn receipt(
    page: &mut Page,
    outcome: &koban_pay::p2p::P2pOutcome,
    message: Option<String>,
) -> Response {
    if let Some(session) = &outcome.session {
        page.rotated(session);
    }
    let view = ReceiptPage {
        c: page.chrome("title-receipt"),
        held: outcome.status == "held",
        amount: page.tr.money(
            i128::from(outcome.transfer.amount.minor_units()),
            outcome.transfer.currency,
        ),
        payee: outcome.payee_masked_name.clone(),
        reference: koban_pay::merchant::transfer_id_text(outcome.transfer.id),
        when: page.tr.datetime(millis(outcome.transfer.timestamp)),
        message,
    };
    with_cookies(
        page.render_status(StatusCode::CREATED, &view),
        outcome.session.as_ref(),
        page.dev,
    )
}

// ------------------------------------------------------------------ statement

#[derive(Template)]
#[template(path = "statement.html")]
pub struct StatementPage {
    pub c: Chrome,
    pub from: String,
    pub to: String,
}

fn iso_date(ms: i64) -> String {
    let offset = time::UtcOffset::from_whole_seconds(9 * 3600).unwrap_or(time::UtcOffset::UTC);
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(at) => {
            let at = at.to_offset(offset);
            format!(
                "{:04}-{:02}-{:02}",
                at.year(),
                u8::from(at.month()),
                at.day()
            )
        }
        Err(_) => String::new(),
    }
}

/// The start of a JST day written `YYYY-MM-DD`, in milliseconds.
fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let offset = time::UtcOffset::from_whole_seconds(9 * 3600).ok()?;
    let at = date.midnight().assume_offset(offset);
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

pub async fn statement_page<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, .. }: SignedIn,
) -> Response {
    let now = state.auth.now_ms();
    page.render(&StatementPage {
        c: page.chrome("title-statement"),
        from: iso_date(now.saturating_sub(30 * 86_400_000)),
        to: iso_date(now),
    })
}

#[derive(Deserialize)]
pub struct StatementQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// The statement of a period as CSV (the same file as the API's).
pub async fn statement_csv<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, me }: SignedIn,
    Query(query): Query<StatementQuery>,
) -> Response {
    let (Some(from), Some(to_day)) = (parse_date(&query.from), parse_date(&query.to)) else {
        let view = StatementPage {
            c: page
                .chrome("title-statement")
                .with_error(Some("from"), page.tr.t("error-dates")),
            from: query.from,
            to: query.to,
        };
        return page.render_status(StatusCode::UNPROCESSABLE_ENTITY, &view);
    };
    // The last day is included whole.
    let to = to_day.saturating_add(86_400_000);
    match state
        .pay
        .statement_csv(&me, wallet_currency(&state.pay), from, to)
        .await
    {
        Ok(csv) => {
            let mut response = (StatusCode::OK, csv).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            let name = format!(
                "attachment; filename=\"koban-{}-{}.csv\"",
                query.from.trim(),
                query.to.trim()
            );
            if let Ok(value) = HeaderValue::from_str(&name) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        Err(error) => {
            let (status, text) = explain(&page.tr, &error);
            let view = StatementPage {
                c: page
                    .chrome("title-statement")
                    .with_error(Some("from"), text),
                from: query.from,
                to: query.to,
            };
            page.render_status(status, &view)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_as_people_type_them() {
        let yen = |t| parse_amount(t, Currency::Jpy).map(Amount::minor_units);
        assert_eq!(yen("1500"), Some(1500));
        assert_eq!(yen(" ¥1,500 "), Some(1500));
        assert_eq!(yen("１，５００円"), Some(1500));
        assert_eq!(yen("0"), None);
        assert_eq!(yen("-5"), None);
        assert_eq!(yen("12.5"), None);
        assert_eq!(yen("abc"), None);
        assert_eq!(
            parse_amount("12.50", Currency::Usd).map(Amount::minor_units),
            Some(1250)
        );
        assert_eq!(
            parse_amount("1,234.50", Currency::Usd).map(Amount::minor_units),
            Some(123_450)
        );
        assert_eq!(
            parse_amount("12,50", Currency::Usd),
            None,
            "a decimal comma is not guessed"
        );
        assert_eq!(
            yen("12,50"),
            Some(1250),
            "yen have no decimals: the comma groups"
        );
    }

    #[test]
    fn statement_dates_are_jst_days() {
        let start = parse_date("2026-12-06").unwrap();
        assert_eq!(iso_date(start), "2026-12-06");
        assert_eq!(iso_date(start - 1), "2026-12-05");
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
    }
}
