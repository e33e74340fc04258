//! Card endpoints: the holder's issued cards (create, list, activate, reveal with step-up,
//! freeze, controls, close, activity), an operator's freeze, and the card network's API
//! (authorization, increment, reversal, clearing, refund), whose requests are signed with
//! HMAC-SHA256 and a timestamp (`Koban-Network-Id`, `Koban-Timestamp`, `Koban-Signature`).
//!
//! A card number appears in exactly one response, the reveal. Network request bodies are
//! parsed here with errors that name the place, never the value, so a card number sent in a
//! malformed body cannot come back in an error.

use axum::body::Bytes;
use axum::extract::{FromRequest, OriginalUri, Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use koban_auth::Secret;
use koban_cards::card_network::{AuthorizationRequest, Channel, NetworkAnswer};
use koban_cards::issuing::{CardControls, Channels, IssuedCard};
use koban_store::LedgerStore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::extract::Query;
use crate::extract::card_id;
use crate::extract::{Caller, ClientInfo, Json, json, json_with_session, session_out};
use crate::problem::ApiError;
use crate::wire::{SessionOut, StepUpIn, StepUpOnlyIn, proof};

// ---------------------------------------------------------------- wire types

/// Channels a card works through.
#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct ChannelsWire {
    pub online: bool,
    pub in_store: bool,
    pub atm: bool,
}

/// The holder's controls on a card. Amounts are minor units of the card's currency.
#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct CardControlsWire {
    pub channels: ChannelsWire,
    /// The most one authorization may be for; null: only the wallet's limits.
    pub per_transaction_max: Option<u64>,
    /// The most the card may authorize per UTC day; null: only the wallet's limits.
    pub daily_max: Option<u64>,
    /// Merchant category codes (4 digits) the card refuses.
    #[schema(example = json!(["7995"]))]
    pub blocked_mccs: Vec<String>,
    /// ISO 3166 alpha-2 countries the card works in; null: anywhere.
    #[schema(example = json!(["JP"]))]
    pub allowed_countries: Option<Vec<String>>,
}

impl From<&CardControls> for CardControlsWire {
    fn from(c: &CardControls) -> CardControlsWire {
        CardControlsWire {
            channels: ChannelsWire {
                online: c.channels.online,
                in_store: c.channels.in_store,
                atm: c.channels.atm,
            },
            per_transaction_max: c.per_transaction_max,
            daily_max: c.daily_max,
            blocked_mccs: c.blocked_mccs.clone(),
            allowed_countries: c.allowed_countries.clone(),
        }
    }
}

impl From<CardControlsWire> for CardControls {
    fn from(c: CardControlsWire) -> CardControls {
        CardControls {
            channels: Channels {
                online: c.channels.online,
                in_store: c.channels.in_store,
                atm: c.channels.atm,
            },
            per_transaction_max: c.per_transaction_max,
            daily_max: c.daily_max,
            blocked_mccs: c.blocked_mccs,
            allowed_countries: c.allowed_countries,
        }
    }
}

/// A card as shown everywhere: BIN and last four digits at most.
#[derive(Serialize, ToSchema)]
pub struct IssuedCardOut {
    #[schema(example = "card_0192f3a4b5c6d7e8f9a0b1c2d3e4f5a6")]
    pub id: String,
    pub name: String,
    #[schema(example = "499910")]
    pub bin: String,
    #[schema(example = "4242")]
    pub last4: String,
    #[schema(example = "499910••••••4242")]
    pub masked_number: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub currency: &'static str,
    pub physical: bool,
    /// `inactive` (until the holder activates it), `active` or `closed`.
    pub status: String,
    pub frozen: bool,
    pub frozen_by_operator: bool,
    /// Too many wrong security codes: declines until the holder unfreezes it (step-up).
    pub locked: bool,
    pub controls: CardControlsWire,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    /// Present when step-up rotated the session: use this token from now on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionOut>,
}

pub fn issued_card_out(card: &IssuedCard) -> IssuedCardOut {
    IssuedCardOut {
        id: card.id.to_string(),
        name: card.name.clone(),
        bin: card.bin.clone(),
        last4: card.last4.clone(),
        masked_number: card.masked(),
        exp_month: card.exp_month,
        exp_year: card.exp_year,
        currency: card.currency.code(),
        physical: card.physical,
        status: card.status.clone(),
        frozen: card.frozen_by_holder || card.frozen_by_operator,
        frozen_by_operator: card.frozen_by_operator,
        locked: card.locked,
        controls: (&card.controls).into(),
        created_at: card.created_at_ms,
        activated_at: card.activated_at_ms,
        session: None,
    }
}

/// A card after a change that step-up confirmed, with the rotated session.
fn changed_out(change: &koban_cards::issuing::CardChange) -> IssuedCardOut {
    IssuedCardOut {
        session: change.session.as_ref().map(session_out),
        ..issued_card_out(&change.card)
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCardIn {
    /// What the holder calls it, e.g. the shop it is for.
    #[schema(example = "Online shopping")]
    pub name: String,
    /// A physical card is activated with the code from its letter (the sandbox mails it).
    #[serde(default)]
    pub physical: bool,
    pub currency: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateCardIn {
    /// For a physical card: the code from its letter.
    pub activation_code: Option<String>,
    pub step_up: Option<StepUpIn>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardControlsIn {
    pub controls: CardControlsWire,
    pub step_up: Option<StepUpIn>,
}

/// The full card details: only here, after step-up.
#[derive(Serialize, ToSchema)]
pub struct CardDetailsOut {
    pub card: IssuedCardOut,
    #[schema(example = "4999100123454242")]
    pub number: String,
    pub exp_month: i64,
    pub exp_year: i64,
    #[schema(example = "123")]
    pub security_code: String,
    /// Step-up rotated the session: use this token from now on.
    pub session: SessionOut,
}

#[derive(Serialize, ToSchema)]
pub struct CardActivityOut {
    pub authorization_id: String,
    /// `approved` (open), `closed`, `reversed`, `expired` or `declined`.
    pub status: String,
    /// ISO 8583 response code given.
    pub response_code: String,
    pub amount: u64,
    pub held: u64,
    pub captured: u64,
    pub refunded: u64,
    pub currency: String,
    pub merchant_name: String,
    pub mcc: String,
    pub country: String,
    pub channel: String,
    pub created_at: i64,
}

#[derive(Deserialize, IntoParams)]
pub struct ActivityQuery {
    /// At most this many, newest first (1 to 200, default 50).
    pub limit: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorFreezeIn {
    pub frozen: bool,
    pub reason: String,
}

/// An authorization request from the card network.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationIn {
    /// The network's unique reference; a retry carries the same one.
    #[schema(example = "net-20261125-000001")]
    pub network_ref: String,
    #[schema(example = "4999100123454242")]
    pub pan: String,
    pub exp_month: i64,
    pub exp_year: i64,
    /// Required for `online`.
    pub security_code: Option<String>,
    #[schema(example = 1200)]
    pub amount: i64,
    #[schema(example = "JPY")]
    pub currency: String,
    pub merchant_id: String,
    pub merchant_name: String,
    #[schema(example = "5411")]
    pub mcc: String,
    #[schema(example = "JP")]
    pub country: String,
    /// `online`, `in_store` or `atm`.
    pub channel: String,
    /// The shopper's IP address as the acquirer saw it (online).
    pub client_ip: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementIn {
    pub increment_id: String,
    pub amount: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReversalIn {
    pub reversal_id: String,
    /// Part of what is held; absent: all of it.
    pub amount: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearingIn {
    pub clearing_id: String,
    pub amount: i64,
    /// The last capture: release whatever remains held.
    #[serde(default)]
    pub r#final: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardRefundIn {
    pub refund_id: String,
    pub amount: i64,
}

/// The issuer's answer to a network message.
#[derive(Serialize, ToSchema)]
pub struct NetworkAnswerOut {
    pub approved: bool,
    /// ISO 8583: 00 approved, 05 do not honour, 12 invalid transaction, 13 invalid amount,
    /// 14 invalid card, 51 insufficient funds, 54 expired card, 57 not permitted, 61 over
    /// limit, 62 restricted card, 78 not activated, N7 security code mismatch.
    #[schema(example = "00")]
    pub response_code: &'static str,
    #[schema(example = "approved")]
    pub reason: &'static str,
    pub authorization_id: Option<String>,
    /// `approved` (open), `closed`, `reversed`, `expired` or `declined`.
    pub status: String,
    pub held: u64,
    pub captured: u64,
    pub refunded: u64,
    pub currency: Option<&'static str>,
    /// This message was answered before (a retry).
    pub replayed: bool,
}

fn answer_out(a: NetworkAnswer) -> NetworkAnswerOut {
    NetworkAnswerOut {
        approved: a.approved,
        response_code: a.response_code.code(),
        reason: a.response_code.reason(),
        authorization_id: a.authorization_id,
        status: a.status,
        held: a.held,
        captured: a.captured,
        refunded: a.refunded,
        currency: a.currency.map(|c| c.code()),
        replayed: a.replayed,
    }
}

// ---------------------------------------------------------------- holder

/// Issues a virtual card (verified customers); it starts inactive.
#[utoipa::path(post, path = "/v1/cards", tag = "cards", request_body = CreateCardIn,
    responses((status = 201, body = IssuedCardOut), (status = 422, body = crate::problem::Problem), (status = 503, body = crate::problem::Problem)),
    security(("session" = [])))]
pub async fn create_card<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Json(body): Json<CreateCardIn>,
) -> Result<Response, ApiError> {
    let currency = match body.currency.as_deref() {
        Some(code) => Some(state.pay.currency_enabled(code)?),
        None => None,
    };
    let card = state
        .cards
        .create_card(&me, &body.name, body.physical, currency)
        .await?;
    Ok(json(StatusCode::CREATED, &issued_card_out(&card)))
}

/// The caller's cards, newest first.
#[utoipa::path(get, path = "/v1/cards", tag = "cards",
    responses((status = 200, body = [IssuedCardOut])), security(("session" = [])))]
pub async fn cards<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let out: Vec<_> = state
        .cards
        .cards_of(&me)
        .await?
        .iter()
        .map(issued_card_out)
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// One card (masked).
#[utoipa::path(get, path = "/v1/cards/{id}", tag = "cards",
    responses((status = 200, body = IssuedCardOut), (status = 404, body = crate::problem::Problem)), security(("session" = [])))]
pub async fn card<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(
        StatusCode::OK,
        &issued_card_out(&state.cards.card(&me, &card_id(&id)?).await?),
    ))
}

/// Activates a card: step-up bound to this card, and for a physical card the code from its
/// letter. Without `step_up` the answer is 403 `step-up-required` with the challenge.
#[utoipa::path(post, path = "/v1/cards/{id}/activate", tag = "cards", request_body = ActivateCardIn,
    responses((status = 200, body = IssuedCardOut), (status = 403, body = crate::problem::Problem)), security(("session" = [])))]
pub async fn activate_card<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Path(id): Path<String>,
    Json(body): Json<ActivateCardIn>,
) -> Result<Response, ApiError> {
    let code = body.activation_code.map(Secret::new);
    let change = state
        .cards
        .activate_card(
            &me,
            &card_id(&id)?,
            code.as_ref(),
            proof(&body.step_up)?.as_ref(),
            &client,
        )
        .await?;
    Ok(json_with_session(
        StatusCode::OK,
        &changed_out(&change),
        change.session.as_ref(),
        state.config.dev,
    ))
}

/// The full number, expiry and security code, after step-up bound to "reveal card X"; at
/// most 5 an hour per card, recorded in the audit log, and the holder is told.
#[utoipa::path(post, path = "/v1/cards/{id}/reveal", tag = "cards", request_body = StepUpOnlyIn,
    responses((status = 200, body = CardDetailsOut), (status = 403, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("session" = [])))]
pub async fn reveal_card<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Path(id): Path<String>,
    Json(body): Json<StepUpOnlyIn>,
) -> Result<Response, ApiError> {
    let revealed = state
        .cards
        .reveal_card(&me, &card_id(&id)?, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    let out = CardDetailsOut {
        card: issued_card_out(&revealed.card),
        number: revealed.pan.expose().clone(),
        exp_month: revealed.card.exp_month,
        exp_year: revealed.card.exp_year,
        security_code: revealed.security_code.expose().clone(),
        session: session_out(&revealed.session),
    };
    Ok(json_with_session(
        StatusCode::OK,
        &out,
        Some(&revealed.session),
        state.config.dev,
    ))
}

/// Freezes a card at once (no step-up).
#[utoipa::path(post, path = "/v1/cards/{id}/freeze", tag = "cards",
    responses((status = 200, body = IssuedCardOut)), security(("session" = [])))]
pub async fn freeze_card<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(
        StatusCode::OK,
        &issued_card_out(&state.cards.freeze_card(&me, &card_id(&id)?).await?),
    ))
}

/// Unfreezes a card and clears a lock after wrong security codes (step-up).
#[utoipa::path(post, path = "/v1/cards/{id}/unfreeze", tag = "cards", request_body = StepUpOnlyIn,
    responses((status = 200, body = IssuedCardOut), (status = 403, body = crate::problem::Problem)), security(("session" = [])))]
pub async fn unfreeze_card<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Path(id): Path<String>,
    Json(body): Json<StepUpOnlyIn>,
) -> Result<Response, ApiError> {
    let change = state
        .cards
        .change_card(
            &me,
            &card_id(&id)?,
            None,
            true,
            proof(&body.step_up)?.as_ref(),
            &client,
        )
        .await?;
    Ok(json_with_session(
        StatusCode::OK,
        &changed_out(&change),
        change.session.as_ref(),
        state.config.dev,
    ))
}

/// Replaces a card's controls (step-up bound to the new controls).
#[utoipa::path(post, path = "/v1/cards/{id}/controls", tag = "cards", request_body = CardControlsIn,
    responses((status = 200, body = IssuedCardOut), (status = 403, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("session" = [])))]
pub async fn set_card_controls<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Path(id): Path<String>,
    Json(body): Json<CardControlsIn>,
) -> Result<Response, ApiError> {
    let change = state
        .cards
        .change_card(
            &me,
            &card_id(&id)?,
            Some(body.controls.into()),
            false,
            proof(&body.step_up)?.as_ref(),
            &client,
        )
        .await?;
    Ok(json_with_session(
        StatusCode::OK,
        &changed_out(&change),
        change.session.as_ref(),
        state.config.dev,
    ))
}

/// Closes a card for good.
#[utoipa::path(post, path = "/v1/cards/{id}/close", tag = "cards",
    responses((status = 200, body = IssuedCardOut)), security(("session" = [])))]
pub async fn close_card<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(
        StatusCode::OK,
        &issued_card_out(&state.cards.close_card(&me, &card_id(&id)?).await?),
    ))
}

/// The card's authorizations, newest first.
#[utoipa::path(get, path = "/v1/cards/{id}/activity", tag = "cards", params(ActivityQuery),
    responses((status = 200, body = [CardActivityOut])), security(("session" = [])))]
pub async fn card_activity<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Query(query): Query<ActivityQuery>,
) -> Result<Response, ApiError> {
    let out: Vec<_> = state
        .cards
        .card_activity(&me, &card_id(&id)?, query.limit.unwrap_or(50))
        .await?
        .into_iter()
        .map(|a| CardActivityOut {
            authorization_id: a.authorization_id,
            status: a.status,
            response_code: a.response_code,
            amount: a.amount,
            held: a.held,
            captured: a.captured,
            refunded: a.refunded,
            currency: a.currency,
            merchant_name: a.merchant_name,
            mcc: a.mcc,
            country: a.country,
            channel: a.channel,
            created_at: a.created_at_ms,
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// An operator freezes or unfreezes a card, with a reason (analyst, support).
#[utoipa::path(post, path = "/v1/ops/cards/{id}/freeze", tag = "operators", request_body = OperatorFreezeIn,
    responses((status = 200, body = IssuedCardOut)), security(("session" = [])))]
pub async fn operator_freeze_card<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Json(body): Json<OperatorFreezeIn>,
) -> Result<Response, ApiError> {
    let card = state
        .cards
        .operator_freeze_card(&me, &card_id(&id)?, body.frozen, &body.reason)
        .await?;
    Ok(json(StatusCode::OK, &issued_card_out(&card)))
}

// ---------------------------------------------------------------- card network

/// A card-network message: the signature checked (network id, timestamp, HMAC over method,
/// path and body, not seen before), then the body parsed, with errors that give the place,
/// never the value.
pub struct Signed<T>(pub T);

impl<S: LedgerStore, T: DeserializeOwned> FromRequest<ApiState<S>> for Signed<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState<S>) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.path().to_owned(), |o| o.0.path().to_owned());
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or(ApiError::Auth(koban_auth::AuthError::Unauthenticated))
        };
        let network = header("koban-network-id")?;
        let timestamp: i64 = header("koban-timestamp")?
            .parse()
            .map_err(|_| ApiError::BadRequest("Koban-Timestamp is Unix seconds".into()))?;
        let signature = header("koban-signature")?;
        let method = parts.method.clone();
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|_| ApiError::BadRequest("the body could not be read".into()))?;
        state.cards.verify_network_request(
            &network,
            timestamp,
            &signature,
            method.as_str(),
            &path,
            &body,
        )?;
        crate::extract::json_body(&body).map(Signed)
    }
}

fn network_answer(answer: NetworkAnswer) -> Response {
    json(StatusCode::OK, &answer_out(answer))
}

/// Authorizes a card payment. Approved: a hold on the wallet until clearing, reversal or
/// expiry. Declined: an ISO 8583 response code. Signed by the network.
#[utoipa::path(post, path = "/v1/network/authorizations", tag = "card network", request_body = AuthorizationIn,
    responses((status = 200, body = NetworkAnswerOut), (status = 401, body = crate::problem::Problem)),
    security(("network_signature" = [])))]
pub async fn authorize<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Signed(input): Signed<AuthorizationIn>,
) -> Result<Response, ApiError> {
    let request = AuthorizationRequest {
        network_ref: input.network_ref,
        pan: Secret::new(input.pan),
        exp_month: input.exp_month,
        exp_year: input.exp_year,
        security_code: input.security_code.map(Secret::new),
        amount: input.amount,
        currency: input.currency,
        merchant_id: input.merchant_id,
        merchant_name: input.merchant_name,
        mcc: input.mcc,
        country: input.country,
        channel: Channel::parse(&input.channel)?,
        client_ip: input.client_ip,
    };
    let answer = state.cards.authorize_card(&request).await?;
    Ok(network_answer(answer))
}

/// Raises an open authorization (incremental authorization).
#[utoipa::path(post, path = "/v1/network/authorizations/{id}/increments", tag = "card network", request_body = IncrementIn,
    responses((status = 200, body = NetworkAnswerOut)), security(("network_signature" = [])))]
pub async fn increment<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    Signed(input): Signed<IncrementIn>,
) -> Result<Response, ApiError> {
    let answer = state
        .cards
        .increment_authorization(&id, &input.increment_id, input.amount)
        .await?;
    Ok(network_answer(answer))
}

/// Releases all or part of an open authorization.
#[utoipa::path(post, path = "/v1/network/authorizations/{id}/reversals", tag = "card network", request_body = ReversalIn,
    responses((status = 200, body = NetworkAnswerOut)), security(("network_signature" = [])))]
pub async fn reverse<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    Signed(input): Signed<ReversalIn>,
) -> Result<Response, ApiError> {
    let answer = state
        .cards
        .reverse_authorization(&id, &input.reversal_id, input.amount)
        .await?;
    Ok(network_answer(answer))
}

/// Clearing: captures all or part of an open authorization (several for split shipments;
/// `final` releases the rest).
#[utoipa::path(post, path = "/v1/network/authorizations/{id}/clearings", tag = "card network", request_body = ClearingIn,
    responses((status = 200, body = NetworkAnswerOut)), security(("network_signature" = [])))]
pub async fn clear<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    Signed(input): Signed<ClearingIn>,
) -> Result<Response, ApiError> {
    let answer = state
        .cards
        .capture_authorization(&id, &input.clearing_id, input.amount, input.r#final)
        .await?;
    Ok(network_answer(answer))
}

/// A merchant's refund of a captured card payment (credit to the wallet).
#[utoipa::path(post, path = "/v1/network/authorizations/{id}/refunds", tag = "card network", request_body = CardRefundIn,
    responses((status = 200, body = NetworkAnswerOut)), security(("network_signature" = [])))]
pub async fn refund<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    Signed(input): Signed<CardRefundIn>,
) -> Result<Response, ApiError> {
    let answer = state
        .cards
        .refund_authorization(&id, &input.refund_id, input.amount)
        .await?;
    Ok(network_answer(answer))
}
