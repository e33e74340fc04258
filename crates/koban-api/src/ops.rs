//! Operator, merchant and development endpoints.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use koban_auth::apikeys::{Environment, Scopes};
use koban_auth::{Email, Role};
use koban_store::LedgerStore;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::extract::{
    Caller, ClientInfo, Json, MerchantCaller, Query, json, session_out, with_cookies,
};
use crate::problem::{ApiError, Problem};
use crate::wire::*;

/// Security alerts, newest first (analyst, support, admin).
#[utoipa::path(get, path = "/v1/ops/alerts", tag = "operators", responses((status = 200, body = [AlertOut]), (status = 403, body = Problem)), security(("session" = [])))]
pub async fn alerts<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let out: Vec<AlertOut> = state
        .auth
        .alerts(&me)
        .await?
        .into_iter()
        .map(|a| AlertOut {
            id: a.id,
            kind: a.kind,
            minute: a.minute,
            observed: a.observed,
            baseline: a.baseline,
            raised_at: a.raised_at_ms,
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Pending recovery requests (approver, support, admin).
#[utoipa::path(get, path = "/v1/ops/recovery-requests", tag = "operators", responses((status = 200, body = [RecoveryRequestOut])), security(("session" = [])))]
pub async fn recovery_requests<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let out: Vec<RecoveryRequestOut> = state
        .auth
        .recovery_requests(&me)
        .await?
        .into_iter()
        .map(|r| RecoveryRequestOut {
            id: r.id,
            user_id: r.user_id,
            status: r.status,
            created_at: r.created_at_ms,
            not_before: r.not_before_ms,
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Approves a recovery request after its waiting period (approver, admin).
#[utoipa::path(post, path = "/v1/ops/recovery-requests/{id}/approve", tag = "operators", params(("id" = String, Path)),
    responses((status = 204), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn approve_recovery<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.approve_recovery(&me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Invites an operator (admin, step-up); the enrolment link goes to the new operator's
/// mailbox only, never to the inviter.
#[utoipa::path(post, path = "/v1/ops/operators", tag = "operators", request_body = CreateOperatorIn,
    responses((status = 201, body = OperatorInviteOut), (status = 403, body = Problem)), security(("session" = [])))]
pub async fn create_operator<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<CreateOperatorIn>,
) -> Result<Response, ApiError> {
    let email = Email::parse(&body.email)?;
    let role = Role::parse(&body.role)?;
    let step_up = proof(&body.step_up)?;
    let (invite, session) = state
        .auth
        .create_operator(&email, role, Some((&me, step_up.as_ref(), &client)))
        .await?;
    let out = OperatorInviteOut {
        operator_id: invite.operator_id,
        sent_to: email.as_str().to_owned(),
        session: session.as_ref().map(session_out),
    };
    Ok(with_cookies(
        json(StatusCode::CREATED, &out),
        session.as_ref(),
        state.config.dev,
    ))
}

#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Only entries with a smaller sequence number (for paging back).
    pub before: Option<i64>,
    /// At most this many (1 to 200; default 50).
    pub limit: Option<i64>,
}

/// The audit log, newest first (analyst, admin).
#[utoipa::path(get, path = "/v1/ops/audit", tag = "operators", params(AuditQuery), responses((status = 200, body = [AuditEntryOut])), security(("session" = [])))]
pub async fn audit_log<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    me.operator(&[Role::Analyst])?;
    let entries =
        koban_shared::audit::recent(state.auth.db(), query.before, query.limit.unwrap_or(50))
            .await?;
    let out: Vec<AuditEntryOut> = entries
        .into_iter()
        .map(|e| AuditEntryOut {
            seq: e.seq,
            at: e.at_ms,
            actor: e.actor,
            action: e.action,
            subject: e.subject,
            details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null),
            hash: e.hash.iter().map(|b| format!("{b:02x}")).collect(),
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Creates an API key (merchant, step-up); the key is shown once.
#[utoipa::path(post, path = "/v1/merchant/api-keys", tag = "merchants", request_body = CreateApiKeyIn,
    responses((status = 201, body = CreatedApiKeyOut), (status = 403, body = Problem)), security(("session" = [])))]
pub async fn create_api_key<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<CreateApiKeyIn>,
) -> Result<Response, ApiError> {
    let environment = Environment::parse(&body.environment)?;
    let scopes = Scopes::parse(&body.scopes)?;
    let (view, key, session) = state
        .auth
        .create_api_key(
            &me,
            &body.name,
            environment,
            &scopes,
            proof(&body.step_up)?.as_ref(),
            &client,
        )
        .await?;
    let out = CreatedApiKeyOut {
        key: key.expose().clone(),
        api_key: view.into(),
        session: session_out(&session),
    };
    Ok(with_cookies(
        json(StatusCode::CREATED, &out),
        Some(&session),
        state.config.dev,
    ))
}

/// The merchant's API keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/merchant/api-keys", tag = "merchants", responses((status = 200, body = [ApiKeyOut])), security(("session" = [])))]
pub async fn api_keys<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let out: Vec<ApiKeyOut> = state
        .auth
        .api_keys(&me)
        .await?
        .into_iter()
        .map(ApiKeyOut::from)
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Replaces a key (step-up); the old one works for `overlap_s` more seconds.
#[utoipa::path(post, path = "/v1/merchant/api-keys/{id}/rotate", tag = "merchants", params(("id" = String, Path)), request_body = RotateApiKeyIn,
    responses((status = 201, body = CreatedApiKeyOut), (status = 403, body = Problem), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn rotate_api_key<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Path(id): Path<String>,
    Json(body): Json<RotateApiKeyIn>,
) -> Result<Response, ApiError> {
    let overlap_s = body.overlap_s.unwrap_or(86_400);
    let (view, key, session) = state
        .auth
        .rotate_api_key(&me, &id, overlap_s, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    let out = CreatedApiKeyOut {
        key: key.expose().clone(),
        api_key: view.into(),
        session: session_out(&session),
    };
    Ok(with_cookies(
        json(StatusCode::CREATED, &out),
        Some(&session),
        state.config.dev,
    ))
}

/// Revokes a key at once.
#[utoipa::path(delete, path = "/v1/merchant/api-keys/{id}", tag = "merchants", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn revoke_api_key<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.revoke_api_key(&me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which merchant and scopes an API key stands for.
#[utoipa::path(get, path = "/v1/merchant/whoami", tag = "merchants", responses((status = 200, body = WhoAmIOut), (status = 401, body = Problem)), security(("api_key" = [])))]
pub async fn whoami(MerchantCaller(key): MerchantCaller) -> Response {
    let out = WhoAmIOut {
        merchant_id: key.merchant_id.to_string(),
        key_id: key.key_id,
        environment: key.environment.as_str(),
        scopes: key.scopes.as_slice().to_vec(),
    };
    json(StatusCode::OK, &out)
}

#[derive(Deserialize, IntoParams)]
pub struct MailboxQuery {
    /// The recipient's address.
    pub to: String,
}

/// Development only (`koban serve --dev`): messages delivered to the local mailbox.
#[utoipa::path(get, path = "/v1/dev/mailbox", tag = "development", params(MailboxQuery), responses((status = 200, body = [MailOut]), (status = 404, body = Problem)))]
pub async fn mailbox<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Query(query): Query<MailboxQuery>,
) -> Result<Response, ApiError> {
    if !state.config.dev {
        return Err(ApiError::NotFound);
    }
    let out: Vec<MailOut> = state
        .auth
        .mailbox(&query.to, 50)
        .await?
        .into_iter()
        .map(|m| MailOut {
            id: m.id,
            to: m.recipient,
            subject: m.subject,
            body: m.body,
            delivered_at: m.delivered_at_ms,
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}
