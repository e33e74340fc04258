//! Offline payments over HTTP: a customer loads a purse for her device's key, a merchant
//! certifies a terminal's key, terminals fetch the revocation list, both sides upload vouchers,
//! operators see the exposure. The protocol is `koban-offline`; the issuer's side
//! `koban_pay::offline`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use koban_pay::offline::{PurseView, TerminalView, VoucherOutcome};
use koban_pay::{PayError, parse_amount};
use koban_store::LedgerStore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::extract::{Caller, ClientInfo, Json, json, json_with_session, session_out};
use crate::payments::IdemKey;
use crate::problem::{ApiError, Problem};
use crate::wire::{SessionOut, StepUpIn, proof};

/// Loads an offline purse.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurseIn {
    /// Minor units moved from the wallet into the purse: its limit (at most the configured
    /// cap, ¥20,000 by default).
    #[schema(example = 5000)]
    pub amount: i64,
    /// The device's P-256 public key, SEC 1 uncompressed (65 bytes), base64url without
    /// padding: what WebCrypto's `exportKey("raw", ...)` gives.
    pub device_key: String,
    pub step_up: Option<StepUpIn>,
}

/// A public key the issuer signs with.
#[derive(Clone, Serialize, ToSchema)]
pub struct IssuerKeyOut {
    pub number: u8,
    /// P-256, SEC 1 uncompressed, base64url.
    pub public_key: String,
}

/// An offline purse.
#[derive(Serialize, ToSchema)]
pub struct PurseOut {
    pub id: String,
    /// The purse certificate, base64url (`koban-offline`'s byte form); only once the money
    /// is in the purse (status `open` or `revoked`).
    pub certificate: Option<String>,
    #[schema(example = 5000)]
    pub limit: u64,
    #[schema(example = "JPY")]
    pub currency: &'static str,
    /// When the device may no longer pay with it (Unix seconds).
    pub not_after: u32,
    /// When what is left goes back to the wallet (Unix seconds).
    pub returns_at: u32,
    /// `loading`, `open`, `revoked` (double spending was found) or `closed`.
    pub status: String,
    /// Paid to merchants from it so far, and what is left of it.
    pub settled: u64,
    pub reserve_left: u64,
    pub issuer_keys: Vec<IssuerKeyOut>,
    /// The session, rotated by the step-up that loaded the purse.
    pub session: Option<SessionOut>,
}

/// Certifies a terminal key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminalIn {
    /// The terminal's P-256 public key, SEC 1 uncompressed, base64url.
    pub terminal_key: String,
}

/// A terminal's certificate and what it needs to check vouchers offline.
#[derive(Serialize, ToSchema)]
pub struct TerminalOut {
    pub id: String,
    /// The terminal certificate, base64url.
    pub certificate: String,
    /// The merchant's name as certified (what customers' devices show).
    pub name: String,
    pub issuer_keys: Vec<IssuerKeyOut>,
    /// Refresh the revocation list at least this often (seconds); older, refuse offline
    /// payments.
    pub list_max_age_s: u32,
}

/// The purses terminals must refuse.
#[derive(Serialize, ToSchema)]
pub struct RevocationsOut {
    /// Purse ids (UUID text) revoked and not yet expired.
    pub purses: Vec<String>,
    /// When the list was made (Unix seconds).
    pub as_of: u32,
    pub issuer_keys: Vec<IssuerKeyOut>,
}

/// Vouchers to settle.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VouchersIn {
    /// Vouchers as their QR text (`KOV1:` and base45), at most 200.
    pub vouchers: Vec<String>,
}

/// The answer for one voucher.
#[derive(Serialize, ToSchema)]
pub struct VoucherResultOut {
    pub purse: Option<String>,
    pub counter: Option<u32>,
    pub amount: Option<u64>,
    /// `paid`, `unpaid` (decided: see reason), `reported` (a customer's copy, checked for
    /// double spending, paid when the terminal uploads it) or `refused`.
    pub status: &'static str,
    /// Why not paid or refused, or what a report found: `guarantee_exhausted`,
    /// `merchant_cap`, `challenge_already_paid`, `above_limit`, `outside_validity`, `late`,
    /// `malformed`, `unknown_issuer`, `bad_issuer_signature`, `bad_device_signature`,
    /// `unknown_purse`, `unknown_terminal`, `not_yours`, `counter_reused`,
    /// `cumulative_inconsistent`, `over_limit`.
    pub reason: Option<&'static str>,
    /// Decided before: nothing moved now.
    pub repeated: bool,
}

#[derive(Serialize, ToSchema)]
pub struct VouchersOut {
    pub results: Vec<VoucherResultOut>,
}

/// The issuer's exposure to offline payments.
#[derive(Serialize, ToSchema)]
pub struct ExposureOut {
    pub purses_open: i64,
    pub purses_revoked: i64,
    /// Customers' money held in reserves.
    pub reserve_minor: i64,
    /// What Koban could still lose: the guarantees left of every purse not closed.
    pub exposure_minor: i64,
    /// Paid to merchants from fraud losses so far.
    pub losses_minor: i64,
    /// The most one purse can cost Koban under the current settings.
    pub bound_per_purse_minor: u64,
}

/// A P-256 public key, uncompressed, in base64url; `refusal` says which field it was.
fn key65(text: &str, refusal: &'static str) -> Result<[u8; 65], ApiError> {
    URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 65]>::try_from(bytes).ok())
        .filter(|key| key[0] == 0x04)
        .ok_or_else(|| PayError::Invalid(refusal).into())
}

async fn issuer_keys<S: LedgerStore>(state: &ApiState<S>) -> Result<Vec<IssuerKeyOut>, ApiError> {
    let (_, _, keys) = state.pay.offline_issuer().await?;
    Ok(keys
        .iter()
        .map(|(number, key)| IssuerKeyOut {
            number: *number,
            public_key: URL_SAFE_NO_PAD.encode(key),
        })
        .collect())
}

fn purse_out(
    purse: PurseView,
    issuer_keys: Vec<IssuerKeyOut>,
    session: Option<&koban_auth::IssuedSession>,
) -> PurseOut {
    PurseOut {
        id: uuid::Uuid::from_bytes(purse.id).to_string(),
        certificate: (!purse.certificate.is_empty())
            .then(|| URL_SAFE_NO_PAD.encode(&purse.certificate)),
        limit: purse.limit,
        currency: purse.currency.code(),
        not_after: purse.not_after,
        returns_at: purse.deadline,
        status: purse.status,
        settled: purse.settled,
        reserve_left: purse.reserve_left,
        issuer_keys,
        session: session.map(session_out),
    }
}

/// Loads an offline purse for the caller's device: the amount moves from the wallet into the
/// purse's reserve, and the device's key is certified to spend it offline for 72 hours
/// (always step-up: the key is a new place for money to go). One purse at a time; what is left
/// returns to the wallet after the settlement window.
#[utoipa::path(post, path = "/v1/offline/purses", tag = "offline", request_body = PurseIn,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = PurseOut), (status = 403, description = "Step-up needed", body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("session" = [])))]
pub async fn load_purse<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    IdemKey(key): IdemKey,
    Json(body): Json<PurseIn>,
) -> Result<Response, ApiError> {
    let amount = parse_amount(body.amount)?;
    let device_key = key65(
        &body.device_key,
        "device_key must be a P-256 public key, uncompressed (65 bytes), base64url",
    )?;
    let (purse, session) = state
        .pay
        .load_purse(
            &me,
            amount,
            device_key,
            &key,
            proof(&body.step_up)?.as_ref(),
            &client,
        )
        .await?;
    let out = purse_out(purse, issuer_keys(&state).await?, session.as_ref());
    Ok(json_with_session(
        StatusCode::CREATED,
        &out,
        session.as_ref(),
        state.config.dev,
    ))
}

/// The caller's offline purses, newest first.
#[utoipa::path(get, path = "/v1/offline/purses", tag = "offline",
    responses((status = 200, body = [PurseOut])), security(("session" = [])))]
pub async fn purses<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let purses = state.pay.purses(&me).await?;
    let keys = issuer_keys(&state).await?;
    let out: Vec<PurseOut> = purses
        .into_iter()
        .map(|purse| purse_out(purse, keys.clone(), None))
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Certifies a terminal key for the signed-in merchant, under its name.
#[utoipa::path(post, path = "/v1/offline/terminals", tag = "offline", request_body = TerminalIn,
    responses((status = 201, body = TerminalOut), (status = 422, body = Problem)),
    security(("session" = [])))]
pub async fn register_terminal<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Json(body): Json<TerminalIn>,
) -> Result<Response, ApiError> {
    let terminal_key = key65(
        &body.terminal_key,
        "terminal_key must be a P-256 public key, uncompressed (65 bytes), base64url",
    )?;
    let TerminalView {
        id,
        certificate,
        name,
    } = state.pay.register_terminal(&me, terminal_key).await?;
    let out = TerminalOut {
        id: uuid::Uuid::from_bytes(id).to_string(),
        certificate: URL_SAFE_NO_PAD.encode(certificate),
        name,
        issuer_keys: issuer_keys(&state).await?,
        list_max_age_s: state.pay.config().offline.list_max_age_s,
    };
    Ok(json(StatusCode::CREATED, &out))
}

/// The purses terminals must refuse, with the issuer's keys (signed-in merchants).
#[utoipa::path(get, path = "/v1/offline/revocations", tag = "offline",
    responses((status = 200, body = RevocationsOut)), security(("session" = [])))]
pub async fn revocations<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let purses = state
        .pay
        .revoked_purses(&me)
        .await?
        .into_iter()
        .map(|id| uuid::Uuid::from_bytes(id).to_string())
        .collect();
    let out = RevocationsOut {
        purses,
        as_of: u32::try_from(state.auth.now_ms() / 1000).unwrap_or(u32::MAX),
        issuer_keys: issuer_keys(&state).await?,
    };
    Ok(json(StatusCode::OK, &out))
}

/// Uploads vouchers: a merchant's (its terminals took them: decided and paid) or a customer's
/// own copies (checked for double spending; paid when the terminal uploads them). Each is
/// answered on its own; sending one again answers the same.
#[utoipa::path(post, path = "/v1/offline/vouchers", tag = "offline", request_body = VouchersIn,
    responses((status = 200, body = VouchersOut), (status = 422, body = Problem)),
    security(("session" = [])))]
pub async fn upload_vouchers<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Json(body): Json<VouchersIn>,
) -> Result<Response, ApiError> {
    let results = state
        .pay
        .upload_vouchers(&me, &body.vouchers)
        .await?
        .into_iter()
        .map(
            |VoucherOutcome {
                 purse,
                 counter,
                 amount,
                 status,
                 reason,
                 repeated,
             }| VoucherResultOut {
                purse: purse.map(|id| uuid::Uuid::from_bytes(id).to_string()),
                counter,
                amount,
                status,
                reason,
                repeated,
            },
        )
        .collect();
    Ok(json(StatusCode::OK, &VouchersOut { results }))
}

/// The issuer's exposure to offline payments (operators).
#[utoipa::path(get, path = "/v1/ops/offline/exposure", tag = "operators",
    responses((status = 200, body = ExposureOut), (status = 403, body = Problem)), security(("session" = [])))]
pub async fn exposure<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let e = state.pay.offline_exposure(&me).await?;
    Ok(json(
        StatusCode::OK,
        &ExposureOut {
            purses_open: e.purses_open,
            purses_revoked: e.purses_revoked,
            reserve_minor: e.reserve_minor,
            exposure_minor: e.exposure_minor,
            losses_minor: e.losses_minor,
            bound_per_purse_minor: e.bound_per_purse_minor,
        },
    ))
}
