//! The console pages beside the work queue: the rules in force with a candidate file checked
//! and backtested (nothing goes live from here: loading rules stays an admin's reload), the
//! verification and recovery queues (a legal name masked until a reason is given, which is
//! audited; deciding needs the name seen), and the audit log with a walk of its hash chain.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use koban_api::ApiState;
use koban_auth::{Principal, Role};
use koban_pay::PayError;
use koban_pay::backtest::CandidateReport;
use koban_pay::koban_risk::backtest::Counts;
use koban_shared::ids::UserId;
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::account::Empty;
use crate::console::{failure, headed, seen};
use crate::i18n::Tr;
use crate::page::{Chrome, OperatorForm, OperatorIn, Page, explain, plain_id};

// ---------------------------------------------------------------------------------------------
// Rules

pub struct RuleLine {
    pub name: String,
    pub description: String,
    pub when: String,
    pub action: String,
    pub enabled: bool,
}

pub struct CountsLine {
    pub label: String,
    pub fired: u64,
    pub alert: u64,
    pub challenge: u64,
    pub hold: u64,
    pub deny: u64,
}

impl CountsLine {
    fn new(label: String, c: &Counts) -> CountsLine {
        CountsLine {
            label,
            fired: c.fired,
            alert: c.alert,
            challenge: c.challenge,
            hold: c.hold,
            deny: c.deny,
        }
    }
}

pub struct BacktestView {
    pub events: u64,
    pub sets: Vec<CountsLine>,
    pub rules: Vec<(CountsLine, CountsLine)>,
    pub stricter: u64,
    pub looser: u64,
    pub unrecorded: Vec<String>,
}

impl BacktestView {
    fn new(tr: &Tr, r: &CandidateReport) -> BacktestView {
        let report = &r.report;
        BacktestView {
            events: report.events,
            sets: vec![
                CountsLine::new(tr.t("rules-live"), &report.live),
                CountsLine::new(tr.t("rules-candidate"), &report.candidate),
            ],
            rules: report
                .rules
                .iter()
                .map(|rule| {
                    (
                        CountsLine::new(rule.rule.clone(), &rule.live),
                        CountsLine::new(rule.rule.clone(), &rule.candidate),
                    )
                })
                .collect(),
            stricter: report.stricter,
            looser: report.looser,
            unrecorded: r
                .unrecorded_features
                .iter()
                .map(|u| format!("{} · {} ({})", u.rule, u.feature, u.events))
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "rules.html")]
pub struct RulesPage {
    pub c: Chrome,
    pub digest: String,
    pub rules: Vec<RuleLine>,
    pub candidate: String,
    pub result: Option<BacktestView>,
}

fn rules_page<S: LedgerStore>(
    state: &ApiState<S>,
    me: &Principal,
    c: Chrome,
    candidate: String,
    result: Option<BacktestView>,
) -> Result<RulesPage, PayError> {
    me.operator(koban_pay::cases::OPERATORS)?;
    let set = state.pay.risk_rules().current();
    Ok(RulesPage {
        c,
        digest: set.digest(),
        rules: set
            .rules()
            .iter()
            .map(|r| RuleLine {
                name: r.name.clone(),
                description: r.description.clone(),
                when: r.when.clone(),
                action: r.action.as_str().to_owned(),
                enabled: r.enabled,
            })
            .collect(),
        candidate,
        result,
    })
}

pub async fn rules<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    OperatorIn { page, me }: OperatorIn,
) -> Response {
    match rules_page(&state, &me, page.chrome("title-rules"), String::new(), None) {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

#[derive(Deserialize, Default)]
pub struct CandidateForm {
    #[serde(default)]
    rules: String,
}

/// Checks a candidate file and backtests it; a refusal names the rule and the problem.
pub async fn backtest<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    OperatorForm { page, me, form }: OperatorForm<CandidateForm>,
) -> Response {
    let tr = &page.tr;
    let (status, c, result) = match state.pay.backtest_candidate(&me, &form.rules).await {
        Ok(report) => (
            StatusCode::OK,
            page.chrome("title-rules")
                .with_notice(tr.t("rules-backtested")),
            Some(BacktestView::new(tr, &report)),
        ),
        Err(PayError::RulesInvalid(problem)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            page.chrome("title-rules").with_error(
                Some("rules"),
                tr.with("rules-invalid", &[("problem", &problem)]),
            ),
            None,
        ),
        Err(error) => {
            let (status, text) = explain(tr, &error);
            (
                status,
                page.chrome("title-rules").with_error(None, text),
                None,
            )
        }
    };
    match rules_page(&state, &me, c, form.rules, result) {
        Ok(view) => page.render_status(status, &view),
        Err(error) => failure(&page, &error),
    }
}

// ---------------------------------------------------------------------------------------------
// Verification and recovery queues

pub struct KycLine {
    pub user: String,
    pub name: String,
    pub revealed: bool,
    pub since: String,
}

pub struct RecoveryLine {
    pub id: String,
    pub user: String,
    pub asked: String,
    pub ready: bool,
    pub not_before: String,
}

#[derive(Template)]
#[template(path = "queues.html")]
pub struct QueuesPage {
    pub c: Chrome,
    pub kyc: Option<Vec<KycLine>>,
    pub recovery: Option<Vec<RecoveryLine>>,
    /// Support lists recovery requests; only an approver (or admin) approves them.
    pub approves_recovery: bool,
}

async fn queues_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &Principal,
    c: Chrome,
    revealed: Option<(&str, String)>,
) -> Result<QueuesPage, PayError> {
    let tr = &page.tr;
    let now = state.auth.now_ms();
    let kyc = seen(state.pay.pending_kyc(me).await)?;
    let recovery = seen(
        state
            .auth
            .recovery_requests(me)
            .await
            .map_err(PayError::Auth),
    )?;
    Ok(QueuesPage {
        c,
        approves_recovery: me.operator(&[Role::Approver]).is_ok(),
        kyc: kyc.map(|list| {
            list.into_iter()
                .map(|(user, name, at)| {
                    let shown = revealed.as_ref().filter(|(u, n)| *u == user && *n == name);
                    KycLine {
                        revealed: shown.is_some(),
                        name: if shown.is_some() {
                            name
                        } else {
                            koban_pay::mask_name(&name)
                        },
                        since: tr.datetime(at),
                        user,
                    }
                })
                .collect()
        }),
        recovery: recovery.map(|list| {
            list.into_iter()
                .map(|r| RecoveryLine {
                    ready: r.not_before_ms <= now,
                    not_before: tr.datetime(r.not_before_ms),
                    asked: tr.datetime(r.created_at_ms),
                    id: r.id,
                    user: r.user_id,
                })
                .collect()
        }),
    })
}

pub async fn queues<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    OperatorIn { page, me }: OperatorIn,
) -> Response {
    match queues_view(&state, &page, &me, page.chrome("title-queues"), None).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

#[derive(Deserialize, Default)]
pub struct ReasonForm {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    name: String,
}

async fn queues_answer<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &Principal,
    done: Result<&'static str, PayError>,
    revealed: Option<(&str, String)>,
) -> Response {
    let (status, c) = headed(page, "title-queues", &done);
    match queues_view(state, page, me, c, revealed).await {
        Ok(view) => page.render_status(status, &view),
        Err(error) => failure(page, &error),
    }
}

/// Shows a pending legal name in full after recording why.
pub async fn reveal_kyc<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(user): Path<String>,
    OperatorForm { page, me, form }: OperatorForm<ReasonForm>,
) -> Response {
    let revealed = if let Some(id) = UserId::parse(&user) {
        state.pay.reveal_kyc_name(&me, &id, &form.reason).await
    } else {
        Err(PayError::NotFound)
    };
    match revealed {
        Ok(name) => {
            queues_answer(
                &state,
                &page,
                &me,
                Ok("queues-revealed"),
                Some((&user, name)),
            )
            .await
        }
        Err(error) => queues_answer(&state, &page, &me, Err(error), None).await,
    }
}

/// Approves or rejects a verification request for the name the operator saw.
pub async fn decide_kyc<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path((user, decision)): Path<(String, String)>,
    OperatorForm { page, me, form }: OperatorForm<ReasonForm>,
) -> Response {
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return failure(&page, &PayError::NotFound),
    };
    let done = if let Some(id) = UserId::parse(&user) {
        state
            .pay
            .decide_kyc(&me, &id, &form.name, approve)
            .await
            .map(|()| {
                if approve {
                    "queues-kyc-approved"
                } else {
                    "queues-kyc-rejected"
                }
            })
    } else {
        Err(PayError::NotFound)
    };
    queues_answer(&state, &page, &me, done, None).await
}

/// Approves an account recovery after its waiting period.
pub async fn approve_recovery<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    OperatorForm { page, me, .. }: OperatorForm<Empty>,
) -> Response {
    let done = if plain_id(&id) {
        state
            .auth
            .approve_recovery(&me, &id)
            .await
            .map(|()| "queues-recovery-approved")
            .map_err(PayError::Auth)
    } else {
        Err(PayError::NotFound)
    };
    queues_answer(&state, &page, &me, done, None).await
}

// ---------------------------------------------------------------------------------------------
// Audit log

pub struct AuditLine {
    pub seq: i64,
    pub when: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub c: Chrome,
    pub entries: Vec<AuditLine>,
    /// The `before` of the next (older) page.
    pub older: Option<i64>,
    /// The result of a walk of the chain, when one was asked for: (entries, problem).
    pub check: Option<(u64, Option<String>)>,
}

/// Entries per page of the audit log.
const AUDIT_PAGE: u8 = 50;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    before: Option<i64>,
}

async fn audit_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &Principal,
    c: Chrome,
    before: Option<i64>,
    check: Option<(u64, Option<String>)>,
) -> Result<AuditPage, PayError> {
    me.operator(&[Role::Analyst])?;
    let tr = &page.tr;
    let entries =
        koban_shared::audit::recent(state.auth.db(), before, i64::from(AUDIT_PAGE)).await?;
    let older = if entries.len() == usize::from(AUDIT_PAGE) {
        entries.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(AuditPage {
        c,
        entries: entries
            .into_iter()
            .map(|e| AuditLine {
                seq: e.seq,
                when: tr.datetime(e.at_ms),
                actor: e.actor,
                action: e.action,
                subject: e.subject,
                details: e.details,
            })
            .collect(),
        older,
        check,
    })
}

pub async fn audit<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
    OperatorIn { page, me }: OperatorIn,
) -> Response {
    // A page's address typed or cut wrong shows the newest entries, never a plain-text error.
    let query = query.map(|Query(query)| query).unwrap_or_default();
    match audit_view(
        &state,
        &page,
        &me,
        page.chrome("title-audit"),
        query.before,
        None,
    )
    .await
    {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

/// Walks the whole hash chain and shows what it found above the newest entries.
pub async fn verify_audit<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    OperatorForm { page, me, .. }: OperatorForm<Empty>,
) -> Response {
    let walked = state.auth.verify_audit(&me).await;
    let (c, check) = match walked {
        Ok(report) => {
            let problem = report
                .first_broken
                .map(|(seq, why)| format!("#{seq}: {why}"))
                .or_else(|| {
                    report
                        .ledger_broken
                        .map(|(seq, why)| format!("#{seq} (ledger checkpoint): {why}"))
                });
            (page.chrome("title-audit"), Some((report.entries, problem)))
        }
        Err(error) => {
            let (_, text) = explain(&page.tr, &PayError::Auth(error));
            (page.chrome("title-audit").with_error(None, text), None)
        }
    };
    match audit_view(&state, &page, &me, c, None, check).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}
