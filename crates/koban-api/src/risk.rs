//! Fraud operations for operators: risk alerts, cases and their timelines, freezing customers,
//! reversals and compensations (with maker-checker approval), the measures of the operation,
//! and the live rule set (shown and reloaded).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use koban_auth::Role;
use koban_pay::merchant::parse_transfer_id;
use koban_store::LedgerStore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::extract::{Caller, Json, Query, json};
use crate::payments::IdemKey;
use crate::problem::{ApiError, Problem};

#[derive(Serialize, ToSchema)]
pub struct RiskAlertOut {
    pub id: String,
    pub at: i64,
    pub rule: String,
    pub reason: String,
    /// alert | hold | deny: the action of the rule that raised it.
    pub action: String,
    pub score: i64,
    /// The customer (victim or suspected mule), `network:<prefix>`, or `global`.
    pub subject: String,
    pub case_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct CaseOut {
    pub id: String,
    pub subject: String,
    /// customer | payee (a suspected mule) | network (attempts on no known account) | global
    pub subject_role: String,
    /// open | closed
    pub status: String,
    /// fraud_confirmed | false_positive, once closed
    pub outcome: Option<String>,
    pub assignee: Option<String>,
    /// The subject's first event in the day before the first alert: time to detect starts here.
    pub first_event_at: i64,
    pub first_alert_at: i64,
    pub closed_at: Option<i64>,
    pub alerts: i64,
}

#[derive(Serialize, ToSchema)]
pub struct TimelineEntryOut {
    pub at: i64,
    /// event | alert | audit | comment
    pub source: String,
    /// The event kind, rule, audit action or comment author.
    pub what: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct CaseDetailOut {
    pub case: CaseOut,
    /// Oldest first: scored logins, links, top-ups and payments (with their decisions and the
    /// rules that fired), alerts, audit entries (contact, factor and state changes), comments.
    pub timeline: Vec<TimelineEntryOut>,
}

#[derive(Serialize, ToSchema)]
pub struct RiskActionOut {
    pub id: String,
    /// reverse | compensate
    pub kind: String,
    pub case_id: Option<String>,
    pub transfer_id: Option<String>,
    /// The customer who gets the money (the payer of a reversed transfer, or the victim).
    pub customer: String,
    pub amount: i64,
    pub currency: String,
    pub note: String,
    /// pending (waits for an approver) | done | rejected | refused (the ledger said no)
    pub status: String,
    pub requested_by: String,
    pub approved_by: Option<String>,
    pub ledger_id: Option<String>,
    /// A compensation's covered transfers (the losses it pays for).
    pub covers: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CountOut {
    pub name: String,
    pub count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct DistributionOut {
    pub count: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct RiskStatsOut {
    /// In the last 24 hours.
    pub alerts_by_rule: Vec<CountOut>,
    /// In the last 24 hours.
    pub decisions_by_action: Vec<CountOut>,
    pub cases_open: i64,
    pub holds_pending: i64,
    pub amount_held: i64,
    /// Per currency: what compensation cost the issuer (the fraud-losses account).
    pub amount_lost: Vec<CountOut>,
    pub amount_compensated: i64,
    pub amount_reversed: i64,
    /// Seconds from a case's first event to its first alert.
    pub time_to_detect_s: DistributionOut,
}

#[derive(Serialize, ToSchema)]
pub struct RuleOut {
    pub name: String,
    pub description: String,
    pub when: String,
    pub action: String,
    pub score: i64,
    pub reason: String,
    pub case: String,
    pub enabled: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RuleSetOut {
    pub digest: String,
    /// The file the set is read from; none: the built-in default set.
    pub path: Option<String>,
    pub rules: Vec<RuleOut>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignIn {
    /// An operator's id; omitted: the caller.
    pub assignee: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentIn {
    pub body: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseCaseIn {
    /// fraud_confirmed | false_positive
    pub outcome: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeIn {
    pub reason: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReverseIn {
    pub case_id: Option<String>,
    pub note: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompensateIn {
    /// The victim's user id.
    pub customer: String,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217; the default wallet currency when omitted.
    pub currency: Option<String>,
    pub case_id: String,
    /// The transfers the victim lost that this compensation pays for (1 to 20 ids): each out
    /// of the victim's wallet to another customer, and the case's.
    pub transfers: Vec<String>,
    pub note: String,
}

#[derive(Serialize, ToSchema)]
pub struct FrozenOut {
    pub wallets: usize,
    pub frozen: bool,
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// open | closed | all for cases (default open); pending | done | rejected | refused | all
    /// for actions (default pending).
    pub status: Option<String>,
    /// At most this many (default 50).
    pub limit: Option<i64>,
}

fn case_out(c: koban_pay::cases::Case) -> CaseOut {
    CaseOut {
        id: c.id,
        subject: c.subject,
        subject_role: c.subject_role,
        status: c.status,
        outcome: c.outcome,
        assignee: c.assignee,
        first_event_at: c.first_event_at,
        first_alert_at: c.first_alert_at,
        closed_at: c.closed_at,
        alerts: c.alerts,
    }
}

fn action_out(a: koban_pay::fraud::RiskAction) -> RiskActionOut {
    RiskActionOut {
        id: a.id,
        kind: a.kind,
        case_id: a.case_id,
        transfer_id: a.transfer_id,
        customer: a.customer.to_string(),
        amount: a.amount,
        currency: a.currency,
        note: a.note,
        status: a.status,
        requested_by: a.requested_by,
        approved_by: a.approved_by,
        ledger_id: a.ledger_id,
        covers: a.covers,
    }
}

fn counts(pairs: Vec<(String, i64)>) -> Vec<CountOut> {
    pairs
        .into_iter()
        .map(|(name, count)| CountOut { name, count })
        .collect()
}

/// Risk alerts, newest first (analyst, approver, admin).
#[utoipa::path(get, path = "/v1/ops/risk/alerts", tag = "fraud", params(ListQuery),
    responses((status = 200, body = [RiskAlertOut]), (status = 403, body = Problem)), security(("session" = [])))]
pub async fn risk_alerts<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let out: Vec<RiskAlertOut> = state
        .pay
        .risk_alerts(&me, query.limit.unwrap_or(50))
        .await?
        .into_iter()
        .map(|a| RiskAlertOut {
            id: a.id,
            at: a.at,
            rule: a.rule,
            reason: a.reason,
            action: a.action,
            score: a.score,
            subject: a.subject,
            case_id: a.case_id,
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Cases, newest first (analyst, approver, admin).
#[utoipa::path(get, path = "/v1/ops/cases", tag = "fraud", params(ListQuery),
    responses((status = 200, body = [CaseOut]), (status = 403, body = Problem)), security(("session" = [])))]
pub async fn cases<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let out: Vec<CaseOut> = state
        .pay
        .cases(&me, query.status.as_deref(), query.limit.unwrap_or(50))
        .await?
        .into_iter()
        .map(case_out)
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// One case with its timeline (analyst, approver, admin).
#[utoipa::path(get, path = "/v1/ops/cases/{id}", tag = "fraud", params(("id" = String, Path)),
    responses((status = 200, body = CaseDetailOut), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn case<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let detail = state.pay.case(&me, &id).await?;
    let out = CaseDetailOut {
        case: case_out(detail.case),
        timeline: detail
            .timeline
            .into_iter()
            .map(|e| TimelineEntryOut {
                at: e.at,
                source: e.source.to_owned(),
                what: e.what,
                detail: e.detail,
            })
            .collect(),
    };
    Ok(json(StatusCode::OK, &out))
}

/// Assigns a case (to the caller when no assignee is given).
#[utoipa::path(post, path = "/v1/ops/cases/{id}/assign", tag = "fraud", params(("id" = String, Path)), request_body = AssignIn,
    responses((status = 200, body = CaseOut), (status = 404, body = Problem), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn assign_case<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Json(body): Json<AssignIn>,
) -> Result<Response, ApiError> {
    let case = state
        .pay
        .assign_case(&me, &id, body.assignee.as_deref())
        .await?;
    Ok(json(StatusCode::OK, &case_out(case)))
}

/// Adds a comment to a case.
#[utoipa::path(post, path = "/v1/ops/cases/{id}/comments", tag = "fraud", params(("id" = String, Path)), request_body = CommentIn,
    responses((status = 204), (status = 404, body = Problem), (status = 422, body = Problem)), security(("session" = [])))]
pub async fn comment_case<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Json(body): Json<CommentIn>,
) -> Result<StatusCode, ApiError> {
    state.pay.comment_case(&me, &id, &body.body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Closes a case with its outcome.
#[utoipa::path(post, path = "/v1/ops/cases/{id}/close", tag = "fraud", params(("id" = String, Path)), request_body = CloseCaseIn,
    responses((status = 200, body = CaseOut), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn close_case<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Json(body): Json<CloseCaseIn>,
) -> Result<Response, ApiError> {
    let outcome = koban_pay::cases::Outcome::parse(&body.outcome)?;
    let case = state.pay.close_case(&me, &id, outcome).await?;
    Ok(json(StatusCode::OK, &case_out(case)))
}

async fn set_frozen<S: LedgerStore>(
    state: ApiState<S>,
    me: koban_auth::Principal,
    user_id: String,
    body: FreezeIn,
    freeze: bool,
) -> Result<Response, ApiError> {
    let wallets = state
        .pay
        .freeze_customer(
            &me,
            &crate::extract::user_id(&user_id)?,
            freeze,
            &body.reason,
        )
        .await?;
    Ok(json(
        StatusCode::OK,
        &FrozenOut {
            wallets,
            frozen: freeze,
        },
    ))
}

/// Freezes every wallet of a customer: nothing in, nothing out; pending holds stay.
#[utoipa::path(post, path = "/v1/ops/customers/{id}/freeze", tag = "fraud", params(("id" = String, Path)), request_body = FreezeIn,
    responses((status = 200, body = FrozenOut), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn freeze_customer<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Json(body): Json<FreezeIn>,
) -> Result<Response, ApiError> {
    set_frozen(state, me, id, body, true).await
}

/// Unfreezes every wallet of a customer.
#[utoipa::path(post, path = "/v1/ops/customers/{id}/unfreeze", tag = "fraud", params(("id" = String, Path)), request_body = FreezeIn,
    responses((status = 200, body = FrozenOut), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn unfreeze_customer<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Json(body): Json<FreezeIn>,
) -> Result<Response, ApiError> {
    set_frozen(state, me, id, body, false).await
}

/// Reverses a completed transfer between customers while the receiver still holds the funds,
/// and freezes the receiver. At most one reversal per transfer is pending or done. When it,
/// with the reversals of the last 24 hours for the same payer or by the same operator, reaches
/// the approval threshold, it waits for an approver (202).
#[utoipa::path(post, path = "/v1/ops/transfers/{id}/reverse", tag = "fraud", params(("id" = String, Path)), request_body = ReverseIn,
    responses((status = 200, body = RiskActionOut), (status = 202, body = RiskActionOut), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn reverse_transfer<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Json(body): Json<ReverseIn>,
) -> Result<Response, ApiError> {
    let transfer = parse_transfer_id(&id).map_err(|_| ApiError::NotFound)?;
    let action = state
        .pay
        .request_reversal(&me, transfer, body.case_id.as_deref(), &body.note)
        .await?;
    Ok(action_reply(action))
}

fn action_reply(action: koban_pay::fraud::RiskAction) -> Response {
    let status = if action.status == "pending" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    json(status, &action_out(action))
}

/// Asks to compensate a victim (the case's subject, or a customer who paid it) from the
/// fraud-losses account, for transfers they lost, with the case attached. The amount is at
/// most what those transfers lost less what was already reversed or compensated (else 422,
/// code `more_than_lost`). It always waits for a second operator, an approver (202). Needs an
/// `Idempotency-Key`: a retry answers the first request.
#[utoipa::path(post, path = "/v1/ops/compensations", tag = "fraud", request_body = CompensateIn,
    params(("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters")),
    responses((status = 202, body = RiskActionOut), (status = 200, body = RiskActionOut, description = "a retry of a request already decided"), (status = 422, body = Problem)), security(("session" = [])))]
pub async fn compensate<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    IdemKey(key): IdemKey,
    Json(body): Json<CompensateIn>,
) -> Result<Response, ApiError> {
    let amount = koban_pay::parse_amount(body.amount)?;
    let currency = match body.currency.as_deref() {
        Some(code) => state.pay.currency_enabled(code)?,
        None => state.pay.config().currencies[0],
    };
    let transfers = body
        .transfers
        .iter()
        .map(|t| parse_transfer_id(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| koban_pay::PayError::Invalid("transfers must be transfer ids"))?;
    let action = state
        .pay
        .request_compensation(
            &me,
            &koban_shared::ids::UserId::parse(&body.customer).ok_or(
                koban_pay::PayError::Invalid("customer must be a customer's id"),
            )?,
            amount,
            currency,
            &body.case_id,
            &transfers,
            &body.note,
            &key,
        )
        .await?;
    Ok(action_reply(action))
}

/// Reversals and compensations (default: those waiting for approval).
#[utoipa::path(get, path = "/v1/ops/risk-actions", tag = "fraud", params(ListQuery),
    responses((status = 200, body = [RiskActionOut])), security(("session" = [])))]
pub async fn risk_actions<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let out: Vec<RiskActionOut> = state
        .pay
        .risk_actions(&me, query.status.as_deref())
        .await?
        .into_iter()
        .map(action_out)
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Approves a pending reversal or compensation (approver; not the requester) and carries it out.
#[utoipa::path(post, path = "/v1/ops/risk-actions/{id}/approve", tag = "fraud", params(("id" = String, Path)),
    responses((status = 200, body = RiskActionOut), (status = 403, body = Problem), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn approve_action<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let action = state
        .pay
        .decide_action(&me, &id, koban_pay::fraud::Verdict::Approve)
        .await?;
    Ok(json(StatusCode::OK, &action_out(action)))
}

/// Rejects a pending reversal or compensation (approver; not the requester).
#[utoipa::path(post, path = "/v1/ops/risk-actions/{id}/reject", tag = "fraud", params(("id" = String, Path)),
    responses((status = 200, body = RiskActionOut), (status = 403, body = Problem), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn reject_action<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let action = state
        .pay
        .decide_action(&me, &id, koban_pay::fraud::Verdict::Reject)
        .await?;
    Ok(json(StatusCode::OK, &action_out(action)))
}

/// The measures of the fraud operation.
#[utoipa::path(get, path = "/v1/ops/risk/stats", tag = "fraud",
    responses((status = 200, body = RiskStatsOut)), security(("session" = [])))]
pub async fn risk_stats<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let s = state.pay.risk_stats(&me).await?;
    let out = RiskStatsOut {
        alerts_by_rule: counts(s.alerts_by_rule),
        decisions_by_action: counts(s.decisions_by_action),
        cases_open: s.cases_open,
        holds_pending: s.holds_pending,
        amount_held: s.amount_held,
        amount_lost: counts(s.amount_lost),
        amount_compensated: s.amount_compensated,
        amount_reversed: s.amount_reversed,
        time_to_detect_s: DistributionOut {
            count: s.time_to_detect_s.count,
            p50: s.time_to_detect_s.p50,
            p90: s.time_to_detect_s.p90,
            max: s.time_to_detect_s.max,
        },
    };
    Ok(json(StatusCode::OK, &out))
}

fn rules_out<S: LedgerStore>(state: &ApiState<S>) -> RuleSetOut {
    let rules = state.pay.risk_rules();
    let set = rules.current();
    RuleSetOut {
        digest: set.digest(),
        path: rules.path().map(|p| p.display().to_string()),
        rules: set
            .rules()
            .iter()
            .map(|r| RuleOut {
                name: r.name.clone(),
                description: r.description.clone(),
                when: r.when.clone(),
                action: r.action.as_str().to_owned(),
                score: r.score,
                reason: r.reason.clone(),
                case: match r.case_by {
                    koban_pay::koban_risk::CaseBy::Customer => "customer".into(),
                    koban_pay::koban_risk::CaseBy::Payee => "payee".into(),
                },
                enabled: r.enabled,
            })
            .collect(),
    }
}

/// The live rule set.
#[utoipa::path(get, path = "/v1/ops/risk/rules", tag = "fraud",
    responses((status = 200, body = RuleSetOut)), security(("session" = [])))]
pub async fn rules<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    me.operator(koban_pay::cases::OPERATORS)?;
    Ok(json(StatusCode::OK, &rules_out(&state)))
}

/// Reads the rules file again (admin). An invalid file is refused with the rule and the
/// problem named, and the live set stays as it was.
#[utoipa::path(post, path = "/v1/ops/risk/rules/reload", tag = "fraud",
    responses((status = 200, body = RuleSetOut), (status = 422, body = Problem)), security(("session" = [])))]
pub async fn reload_rules<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    me.operator(&[Role::Admin])?;
    state.pay.reload_risk_rules(&me.actor()).await?;
    Ok(json(StatusCode::OK, &rules_out(&state)))
}
