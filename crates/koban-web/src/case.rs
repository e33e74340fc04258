//! One fraud case for an analyst: whom it is about (contact masked, shown in full only after a
//! reason is given and audited), their wallets with freeze and unfreeze, the newest transfers
//! between customers with a reversal request for each (and, for a loss not yet paid back, a
//! compensation request for its payer), the timeline (scored events, alerts,
//! audited changes, comments), and the case's own work: take it, comment, close it. Every
//! action is the same `Payments` or `Auth` operation, with the same role checks, as the API.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use koban_api::ApiState;
use koban_auth::Principal;
use koban_pay::cases::{CaseDetail, Outcome, TimelineEntry};
use koban_pay::merchant::{parse_transfer_id, transfer_id_text};
use koban_pay::{IdempotencyKey, PayError};
use koban_shared::ids::UserId;
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::console::{failure, headed};
use crate::i18n::Tr;
use crate::merchant::plain_amount;
use crate::page::{Chrome, OperatorForm, OperatorIn, Page, plain_id};
use crate::wallet::{Movement, movement, parse_amount};

/// Timeline entries a case page shows, newest first; older ones stay in the API's answer.
const TIMELINE_SHOWN: usize = 60;

/// What the page shows of the person a case is about.
pub struct PersonView {
    pub kind: String,
    pub email: String,
    pub phone: Option<String>,
    /// The contact is shown in full (a reason was just recorded).
    pub revealed: bool,
    pub since: String,
}

pub struct TransferLine {
    pub id: String,
    pub line: Movement,
    /// What of this transfer its payer lost is not yet reversed or compensated, as a person
    /// types it (`None`: nothing left, or not a transfer between customers), and the key of
    /// the compensation form.
    pub loss_left: Option<String>,
    pub key: String,
}

pub struct WalletLine {
    pub currency: String,
    pub balance: String,
    pub frozen: bool,
    pub transfers: Vec<TransferLine>,
}

pub struct TimelineLine {
    pub when: String,
    pub source: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "case.html")]
pub struct CasePage {
    pub c: Chrome,
    pub id: String,
    pub subject: String,
    pub role: String,
    pub open: bool,
    pub status: String,
    pub assignee: Option<String>,
    pub mine: bool,
    pub opened: String,
    pub person: Option<PersonView>,
    pub wallets: Vec<WalletLine>,
    pub timeline: Vec<TimelineLine>,
    /// Entries older than those shown.
    pub older: usize,
}

fn text_of(detail: &serde_json::Value, key: &str) -> String {
    match detail.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// One timeline entry in words. Events and alerts name rules and decisions in the rules'
/// own words (the rules file is written in English).
fn timeline_line(tr: &Tr, entry: &TimelineEntry) -> TimelineLine {
    let d = &entry.detail;
    let (source, text) = match entry.source {
        "event" => {
            let mut text = format!(
                "{} · {} {} · {} {}",
                entry.what,
                tr.t("case-decision"),
                text_of(d, "decision"),
                tr.t("case-score"),
                text_of(d, "score"),
            );
            if d.get("amount")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0)
                > 0
            {
                text.push_str(&format!(
                    " · {} {}",
                    text_of(d, "amount"),
                    text_of(d, "currency")
                ));
            }
            if d.get("failed").and_then(serde_json::Value::as_bool) == Some(true) {
                text.push_str(&format!(" · {}", tr.t("case-failed")));
            }
            ("case-source-event", text)
        }
        "alert" => (
            "case-source-alert",
            format!(
                "{}: {} → {}",
                entry.what,
                text_of(d, "reason"),
                text_of(d, "action")
            ),
        ),
        "audit" => (
            "case-source-audit",
            format!("{} · {}", entry.what, text_of(d, "actor")),
        ),
        _ => (
            "case-source-comment",
            format!("{}: {}", entry.what, text_of(d, "body")),
        ),
    };
    TimelineLine {
        when: tr.datetime(entry.at),
        source: tr.t(source),
        text,
    }
}

async fn person<S: LedgerStore>(
    state: &ApiState<S>,
    tr: &Tr,
    me: &Principal,
    user_id: &UserId,
    contact: Option<koban_auth::customers::Contact>,
) -> Result<Option<PersonView>, PayError> {
    let card = match state.auth.customer_card(me, user_id).await {
        Ok(card) => card,
        Err(koban_auth::AuthError::NotFound) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let kind = tr.t(match card.kind {
        koban_auth::model::UserKind::Merchant => "case-kind-merchant",
        _ => "case-kind-customer",
    });
    let since = tr.date(card.created_at_ms);
    Ok(Some(match contact {
        Some(full) => PersonView {
            kind,
            email: full.email,
            phone: full.phone,
            revealed: true,
            since,
        },
        None => PersonView {
            kind,
            email: card.email_masked,
            phone: card.phone_masked,
            revealed: false,
            since,
        },
    }))
}

async fn case_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &Principal,
    c: Chrome,
    id: &str,
    contact: Option<koban_auth::customers::Contact>,
) -> Result<CasePage, PayError> {
    let tr = &page.tr;
    if !plain_id(id) {
        return Err(PayError::NotFound);
    }
    let CaseDetail { case, timeline } = state.pay.case(me, id).await?;
    let customer = case.customer();
    let person = match &customer {
        Some(customer) => person(state, tr, me, customer, contact).await?,
        None => None,
    };
    let wallets = match &customer {
        Some(customer) if person.is_some() => state.pay.customer_wallets(me, customer).await?,
        _ => Vec::new(),
    };
    Ok(CasePage {
        c,
        role: tr.t(match case.subject_role.as_str() {
            "customer" => "console-role-customer",
            "payee" => "console-role-payee",
            "operator" => "console-role-operator",
            _ => "console-role-network",
        }),
        open: case.status == "open",
        status: match &case.outcome {
            Some(outcome) => tr.t(&format!("case-outcome-{outcome}")),
            None => tr.t("case-status-open"),
        },
        mine: case.assignee.as_deref() == Some(me.user_id.as_str()),
        assignee: case.assignee,
        opened: tr.datetime(case.first_alert_at),
        person,
        wallets: wallet_lines(state, me, tr, wallets).await?,
        older: timeline.len().saturating_sub(TIMELINE_SHOWN),
        timeline: timeline
            .iter()
            .rev()
            .take(TIMELINE_SHOWN)
            .map(|entry| timeline_line(tr, entry))
            .collect(),
        id: case.id,
        subject: case.subject,
    })
}

/// The subject's wallets, each with its newest transfers and what of each is still a loss.
async fn wallet_lines<S: LedgerStore>(
    state: &ApiState<S>,
    me: &Principal,
    tr: &Tr,
    wallets: Vec<koban_pay::fraud::CustomerWallet>,
) -> Result<Vec<WalletLine>, PayError> {
    let mut lines = Vec::with_capacity(wallets.len());
    for w in wallets {
        let mut transfers = Vec::with_capacity(w.transfers.len());
        for entry in &w.transfers {
            // Not a loss: the transfer shows without the form. A loss that cannot be read is
            // logged, and the rest of the case still shows.
            let loss_left = match state.pay.loss(me, entry.transfer.id).await {
                Ok(loss) if loss.left > 0 => Some(plain_amount(loss.left, loss.currency)),
                Ok(_) | Err(PayError::Invalid(_) | PayError::NotFound) => None,
                Err(error) => {
                    tracing::warn!(%error, "a case's loss could not be read");
                    None
                }
            };
            transfers.push(TransferLine {
                id: transfer_id_text(entry.transfer.id),
                line: movement(tr, entry, None),
                loss_left,
                key: koban_shared::new_id(),
            });
        }
        lines.push(WalletLine {
            currency: w.currency.code().to_owned(),
            balance: tr.money(w.balance, w.currency),
            frozen: w.frozen,
            transfers,
        });
    }
    Ok(lines)
}

pub async fn case<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    OperatorIn { page, me }: OperatorIn,
) -> Response {
    let c = page.chrome("title-case");
    match case_view(&state, &page, &me, c, &id, None).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

#[derive(Deserialize, Default)]
pub struct CaseForm {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    key: String,
}

/// What a case action did: a sentence for the page, and the contact when it was revealed.
type Done = (&'static str, Option<koban_auth::customers::Contact>);

async fn perform<S: LedgerStore>(
    state: &ApiState<S>,
    me: &Principal,
    id: &str,
    act: &str,
    form: &CaseForm,
) -> Result<Done, PayError> {
    if !plain_id(id) {
        return Err(PayError::NotFound);
    }
    let subject = || async {
        state
            .pay
            .case_summary(me, id)
            .await?
            .customer()
            .ok_or(PayError::NotFound)
    };
    match act {
        "reveal" => {
            let contact = state
                .auth
                .reveal_contact(me, &subject().await?, &form.reason)
                .await?;
            Ok(("case-revealed", Some(contact)))
        }
        "freeze" | "unfreeze" => {
            let freeze = act == "freeze";
            state
                .pay
                .freeze_customer(me, &subject().await?, freeze, &form.reason)
                .await?;
            Ok((
                if freeze {
                    "case-frozen"
                } else {
                    "case-unfrozen"
                },
                None,
            ))
        }
        "comment" => {
            state.pay.comment_case(me, id, &form.body).await?;
            Ok(("case-commented", None))
        }
        "assign" => {
            state.pay.assign_case(me, id, None).await?;
            Ok(("case-assigned", None))
        }
        "close" => {
            state
                .pay
                .close_case(me, id, Outcome::parse(&form.outcome)?)
                .await?;
            Ok(("case-closed", None))
        }
        _ => Err(PayError::NotFound),
    }
}

/// The case again, headed by what was just done or refused.
async fn answer<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &Principal,
    id: &str,
    done: Result<Done, PayError>,
) -> Response {
    let (done, contact) = match done {
        Ok((notice, contact)) => (Ok(notice), contact),
        Err(error) => (Err(error), None),
    };
    let (status, c) = headed(page, "title-case", &done);
    match case_view(state, page, me, c, id, contact).await {
        Ok(view) => page.render_status(status, &view),
        Err(error) => failure(page, &error),
    }
}

/// Reveal, freeze, unfreeze, comment, take (assign to oneself) or close.
pub async fn act<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path((id, act)): Path<(String, String)>,
    OperatorForm { page, me, form }: OperatorForm<CaseForm>,
) -> Response {
    let done = perform(&state, &me, &id, &act, &form).await;
    answer(&state, &page, &me, &id, done).await
}

/// A case's id and one of its transfers' ids, as a form's address names them.
fn case_transfer(id: &str, transfer: &str) -> Result<koban_ledger::TransferId, PayError> {
    if !plain_id(id) {
        return Err(PayError::NotFound);
    }
    parse_transfer_id(transfer)
}

/// Asks to reverse one of the subject's transfers (done at once below the approval threshold,
/// otherwise it waits for a second operator on the console).
pub async fn reverse<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path((id, transfer)): Path<(String, String)>,
    OperatorForm { page, me, form }: OperatorForm<CaseForm>,
) -> Response {
    let done = async {
        let transfer = case_transfer(&id, &transfer)?;
        let action = state
            .pay
            .request_reversal(&me, transfer, Some(&id), &form.note)
            .await?;
        Ok((
            match action.status.as_str() {
                "pending" => "case-reversal-waits",
                "done" => "case-reversed",
                _ => "console-refused",
            },
            None,
        ))
    };
    let done = done.await;
    answer(&state, &page, &me, &id, done).await
}

/// Asks to compensate the payer of one of the case's transfers for what they lost; it always
/// waits for a second operator on the console.
pub async fn compensate<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path((id, transfer)): Path<(String, String)>,
    OperatorForm { page, me, form }: OperatorForm<CaseForm>,
) -> Response {
    let done = async {
        let transfer = case_transfer(&id, &transfer)?;
        let loss = state.pay.loss(&me, transfer).await?;
        let amount = parse_amount(&form.amount, loss.currency)
            .ok_or(PayError::Invalid("the amount is not a number"))?;
        let key = IdempotencyKey::parse(&form.key)?;
        let action = state
            .pay
            .request_compensation(
                &me,
                &loss.victim,
                amount,
                loss.currency,
                &id,
                &[transfer],
                &form.note,
                &key,
            )
            .await?;
        Ok((
            match action.status.as_str() {
                "pending" => "case-compensation-waits",
                _ => "console-refused",
            },
            None,
        ))
    };
    let done = done.await;
    answer(&state, &page, &me, &id, done).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use koban_shared::lang::Lang;

    #[test]
    fn timeline_lines_say_what_happened() {
        let tr = Tr::new(Lang::En);
        let event = TimelineEntry {
            at: 0,
            source: "event",
            what: "p2p".into(),
            detail: serde_json::json!({ "decision": "hold", "score": 70, "amount": 5000, "currency": "JPY", "failed": false }),
        };
        let line = timeline_line(&tr, &event);
        assert!(line.text.contains("hold"), "{}", line.text);
        assert!(line.text.contains("5000 JPY"), "{}", line.text);
        let comment = TimelineEntry {
            at: 0,
            source: "comment",
            what: "op-1".into(),
            detail: serde_json::json!({ "body": "called the customer" }),
        };
        assert_eq!(
            timeline_line(&tr, &comment).text,
            "op-1: called the customer"
        );
    }
}
