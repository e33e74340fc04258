//! The operator console, first slice: one page with the security alarms, the fraud alerts, the
//! open cases (each linked to its page, where losses are compensated), the transfers held for
//! review (release or void), and the reversals and compensations waiting for a second
//! operator (approve or reject; never one's own, which the domain refuses). Every action goes
//! through the same `Payments` operations and role checks as the operator API. Customers are
//! shown by their account id only, never by name or contact.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use koban_api::ApiState;
use koban_auth::Principal;
use koban_ledger::Currency;
use koban_pay::PayError;
use koban_pay::fraud::Verdict;
use koban_pay::merchant::{parse_transfer_id, transfer_id_text};
use koban_store::LedgerStore;

use crate::account::Empty;
use crate::i18n::Tr;
use crate::page::{Chrome, OperatorForm, OperatorIn, Page, explain, plain_id};

/// Lines shown in each list of the console.
const LIST_MAX: i64 = 20;

pub struct AlarmLine {
    pub when: String,
    /// `password_spray`, `account_lockout`, `card_testing`, or a spike of failed sign-ins.
    pub kind: String,
    pub observed: i64,
    pub baseline: i64,
}

pub struct AlertLine {
    pub when: String,
    pub rule: String,
    pub reason: String,
    pub action: String,
    pub subject: String,
    pub case_id: String,
}

pub struct CaseLine {
    pub id: String,
    pub subject: String,
    /// Whom the case is about (a customer, a payee, a network), in words.
    pub role: String,
    pub alerts: i64,
    pub opened: String,
}

pub struct HeldLine {
    pub id: String,
    pub payer: String,
    pub amount: String,
    pub when: String,
    /// A first operator asked for the release; `mine` when it was this operator.
    pub requested: bool,
    pub mine: bool,
}

pub struct ActionLine {
    pub id: String,
    pub kind: String,
    pub customer: String,
    pub amount: String,
    pub note: String,
    /// The operator who asked: the approver must be someone else (maker-checker).
    pub requested_by: String,
    pub mine: bool,
}

#[derive(Template)]
#[template(path = "console.html")]
pub struct ConsolePage {
    pub c: Chrome,
    /// Each list, or `None` when the operator's role does not see it.
    pub alarms: Option<Vec<AlarmLine>>,
    /// Failed sign-ins per minute, for those who see the alarms.
    pub failures: Option<crate::dashboard::FailuresView>,
    pub alerts: Option<Vec<AlertLine>>,
    pub cases: Option<Vec<CaseLine>>,
    pub held: Option<Vec<HeldLine>>,
    pub actions: Option<Vec<ActionLine>>,
}

/// A list the role may not see is left out; any other failure fails the page.
pub(crate) fn seen<T>(result: Result<T, PayError>) -> Result<Option<T>, PayError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(PayError::Auth(koban_auth::AuthError::Forbidden(_))) => Ok(None),
        Err(error) => Err(error),
    }
}

fn money(tr: &Tr, minor: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(currency) => tr.money(i128::from(minor), currency),
        Err(_) => format!("{minor} {currency}"),
    }
}

async fn console_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &Principal,
    c: Chrome,
) -> Result<ConsolePage, PayError> {
    let tr = &page.tr;
    let alarms = seen(state.auth.alerts(me).await.map_err(PayError::Auth))?;
    let failures = seen(state.auth.failure_chart(me).await.map_err(PayError::Auth))?
        .map(|chart| crate::dashboard::FailuresView::new(tr, &chart));
    let alerts = seen(state.pay.risk_alerts(me, LIST_MAX).await)?;
    let cases = seen(state.pay.cases(me, Some("open"), LIST_MAX).await)?;
    let held = seen(state.pay.held_transfers(me).await)?;
    let actions = seen(state.pay.risk_actions(me, Some("pending")).await)?;
    Ok(ConsolePage {
        c,
        failures,
        alarms: alarms.map(|list| {
            list.into_iter()
                .take(10)
                .map(|a| AlarmLine {
                    when: tr.datetime(a.raised_at_ms),
                    kind: a.kind,
                    observed: a.observed,
                    baseline: a.baseline,
                })
                .collect()
        }),
        alerts: alerts.map(|list| {
            list.into_iter()
                .map(|a| AlertLine {
                    when: tr.datetime(a.at),
                    rule: a.rule,
                    reason: a.reason,
                    action: a.action,
                    subject: a.subject,
                    case_id: a.case_id,
                })
                .collect()
        }),
        cases: cases.map(|list| case_lines(tr, list)),
        held: held.map(|list| {
            list.into_iter()
                .map(|h| HeldLine {
                    id: transfer_id_text(h.id),
                    payer: h.payer_user,
                    amount: tr.money(i128::from(h.amount), h.currency),
                    when: tr.datetime(h.created_at_ms),
                    requested: h.release_requested_by.is_some(),
                    mine: h.release_requested_by.as_deref() == Some(me.user_id.as_str()),
                })
                .collect()
        }),
        actions: actions.map(|list| {
            list.into_iter()
                .map(|a| ActionLine {
                    mine: a.requested_by == me.user_id,
                    amount: money(tr, a.amount, &a.currency),
                    kind: tr.t(if a.kind == "reverse" {
                        "console-kind-reverse"
                    } else {
                        "console-kind-compensate"
                    }),
                    id: a.id,
                    customer: a.customer.to_string(),
                    note: a.note,
                    requested_by: a.requested_by,
                })
                .collect()
        }),
    })
}

/// The open cases, each linked to its page.
fn case_lines(tr: &Tr, list: Vec<koban_pay::cases::Case>) -> Vec<CaseLine> {
    list.into_iter()
        .map(|c| CaseLine {
            role: tr.t(match c.subject_role.as_str() {
                "customer" => "console-role-customer",
                "payee" => "console-role-payee",
                "operator" => "console-role-operator",
                _ => "console-role-network",
            }),
            alerts: c.alerts,
            opened: tr.datetime(c.first_alert_at),
            id: c.id,
            subject: c.subject,
        })
        .collect()
}

/// The console again, headed by what was just done or refused.
async fn answer<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &Principal,
    done: Result<&'static str, PayError>,
) -> Response {
    let (status, c) = headed(page, "title-console", &done);
    match console_view(state, page, me, c).await {
        Ok(view) => page.render_status(status, &view),
        Err(error) => failure(page, &error),
    }
}

pub async fn console<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    OperatorIn { page, me }: OperatorIn,
) -> Response {
    match console_view(&state, &page, &me, page.chrome("title-console")).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

/// Releases or voids a held transfer.
pub async fn decide_held<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path((id, decision)): Path<(String, String)>,
    OperatorForm { page, me, .. }: OperatorForm<Empty>,
) -> Response {
    let release = match decision.as_str() {
        "release" => true,
        "void" => false,
        _ => return failure(&page, &PayError::NotFound),
    };
    let done =
        match parse_transfer_id(&id) {
            Ok(id) => state.pay.decide_held(&me, id, release).await.map(|held| {
                match held.status.as_str() {
                    "held" => "console-release-requested",
                    "released" => "console-released",
                    _ => "console-voided",
                }
            }),
            Err(error) => Err(error),
        };
    answer(&state, &page, &me, done).await
}

/// Approves or rejects a waiting reversal or compensation.
pub async fn decide_action<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path((id, decision)): Path<(String, String)>,
    OperatorForm { page, me, .. }: OperatorForm<Empty>,
) -> Response {
    let verdict = match decision.as_str() {
        "approve" => Verdict::Approve,
        "reject" => Verdict::Reject,
        _ => return failure(&page, &PayError::NotFound),
    };
    let done = if plain_id(&id) {
        state
            .pay
            .decide_action(&me, &id, verdict)
            .await
            .map(|action| match action.status.as_str() {
                "done" => "console-approved",
                "refused" => "console-refused",
                _ => "console-rejected",
            })
    } else {
        Err(PayError::NotFound)
    };
    answer(&state, &page, &me, done).await
}

/// A console page that could not be shown: what went wrong, and the way back to the console.
pub(crate) fn failure(page: &Page, error: &PayError) -> Response {
    let (status, text) = explain(&page.tr, error);
    crate::page::message(page, status, text, "/ops", "link-console")
}

/// The chrome of a console page answering a form: the notice when it was done, the domain's
/// refusal (and its status) when not.
pub(crate) fn headed(
    page: &Page,
    title: &str,
    done: &Result<&'static str, PayError>,
) -> (StatusCode, Chrome) {
    match done {
        Ok(notice) => (
            StatusCode::OK,
            page.chrome(title).with_notice(page.tr.t(notice)),
        ),
        Err(error) => {
            let (status, text) = explain(&page.tr, error);
            (status, page.chrome(title).with_error(None, text))
        }
    }
}
