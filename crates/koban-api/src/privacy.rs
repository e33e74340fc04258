//! The customer's rights over their data: the export of everything Koban holds about them,
//! and closing the account.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use koban_auth::Principal;
use koban_pay::PayError;
use koban_store::LedgerStore;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ApiState;
use crate::extract::{Caller, ClientInfo, Json, json_with_session, session_out};
use crate::problem::ApiError;
use crate::wire::{SessionOut, StepUpOnlyIn, proof};

/// Everything Koban holds about the caller.
#[derive(Serialize, ToSchema)]
pub struct ExportOut {
    /// When the export was made (ms since the Unix epoch).
    pub exported_at: i64,
    /// One array per table about the caller (`profile`, `factors`, `recovery_codes`,
    /// `sessions`, `known_devices`, `recovery_requests`, `notices`, `audit`, `wallets`,
    /// `identity_check`, `handle`, `pay_links`, `payees`, `bank_accounts`, `top_up_cards`,
    /// `bank_operations`, `payment_codes`, `offline_purses`, `held_transfers`, `risk_decisions`, `cards`,
    /// `card_payments`), and `statements`: each wallet's balance and whole statement as CSV.
    /// Times are ms since the Unix epoch, amounts minor units. Secrets (passwords, codes,
    /// factor seeds, card numbers) are never included.
    #[schema(value_type = Object)]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The session, rotated by the step-up.
    pub session: SessionOut,
}

/// Exports everything Koban holds about the caller as JSON (step-up: the whole account leaves
/// in one answer).
#[utoipa::path(post, path = "/v1/me/export", tag = "identity", request_body = StepUpOnlyIn,
    responses((status = 200, body = ExportOut), (status = 403, description = "Step-up needed", body = crate::problem::Problem)),
    security(("session" = [])))]
pub async fn export<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<StepUpOnlyIn>,
) -> Result<Response, ApiError> {
    let session = state
        .auth
        .confirm_export(&me, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    let data = gather_export(&state, &me).await?;
    let out = ExportOut {
        exported_at: state.auth.now_ms(),
        data,
        session: session_out(&session),
    };
    Ok(json_with_session(
        StatusCode::OK,
        &out,
        Some(&session),
        state.config.dev,
    ))
}

/// Closes a customer's account for good (step-up). Refused, with the reason, while the wallet
/// holds money or money is on its way: pay it out first. Every session ends, cards close,
/// payment codes and pay links stop, and the ledger refuses any movement of its wallets; the
/// books are kept under the account's id, and personal data is erased once the legal
/// retention period after closure has passed.
#[utoipa::path(post, path = "/v1/me/close", tag = "identity", request_body = StepUpOnlyIn,
    responses((status = 204, description = "Closed: every session has ended"),
        (status = 403, description = "Step-up needed", body = crate::problem::Problem),
        (status = 409, description = "Money is on the account or on its way", body = crate::problem::Problem)),
    security(("session" = [])))]
pub async fn close<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<StepUpOnlyIn>,
) -> Result<Response, ApiError> {
    // The reasons first, before a code is asked for.
    if me.kind != koban_auth::UserKind::Customer {
        return Err(koban_auth::AuthError::Invalid(
            "only a customer's account closes this way; a shop asks support",
        )
        .into());
    }
    state.pay.closable(&me.user_id).await?;
    state
        .auth
        .confirm_close(&me, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    close_confirmed(&state, &me).await?;
    Ok(crate::extract::clear_session_cookies(
        StatusCode::NO_CONTENT.into_response(),
    ))
}

/// Everything Koban holds about `me` (after the export's step-up): identity's, payments' and
/// cards' sections in one JSON object. The web wallet's download uses it too.
pub async fn gather_export<S: LedgerStore>(
    state: &ApiState<S>,
    me: &Principal,
) -> Result<serde_json::Map<String, serde_json::Value>, PayError> {
    let mut data = serde_json::Map::new();
    state.auth.export_into(me, &mut data).await?;
    state.pay.export_into(me, &mut data).await?;
    state.cards.export_into(me, &mut data).await?;
    Ok(data)
}

/// Closes `me`'s account after its step-up: its wallets first, in the ledger, which refuses
/// while money is on them or on its way and from then on refuses every movement; then its
/// codes, links and cards end, and last the account itself (sessions, sign-in). A closing
/// that stopped half-way is finished by closing again. The web wallet's closing uses it too.
pub async fn close_confirmed<S: LedgerStore>(
    state: &ApiState<S>,
    me: &Principal,
) -> Result<(), PayError> {
    state.pay.close_wallets(&me.user_id).await?;
    state.pay.wind_down(&me.user_id).await?;
    state.cards.close_all_cards(me).await?;
    if !state.auth.close_account(me).await? {
        return Err(PayError::NotFound);
    }
    Ok(())
}
