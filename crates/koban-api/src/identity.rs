//! Identity endpoints: sign-up, sign-in, factors, sessions, contact changes, recovery.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use koban_auth::{BirthDate, DisplayName, Email, LegalName, NewSignup, Phone, Secret, UserKind};
use koban_shared::lang::Lang;
use koban_store::LedgerStore;

use crate::ApiState;
use crate::extract::{
    Caller, ClientInfo, Json, clear_session_cookies, json, session_out, with_cookies,
};
use crate::problem::{ApiError, Problem};
use crate::wire::*;

/// The answer to a request that rotated the session: the new session, and its cookies.
fn rotated(status: StatusCode, session: &koban_auth::IssuedSession, dev: bool) -> Response {
    let out = SessionOnlyOut {
        session: session_out(session),
    };
    with_cookies(json(status, &out), Some(session), dev)
}

/// A body that may be empty (enrolling a first factor needs no step-up) or carry `step_up`.
fn optional_step_up(body: &[u8]) -> Result<StepUpOnlyIn, ApiError> {
    if body.is_empty() {
        return Ok(StepUpOnlyIn::default());
    }
    crate::extract::json_body(body)
}

const ACCEPTED_SIGNUP: Accepted = Accepted {
    status: "accepted",
    detail: "if the address can be used, a verification code is on its way to it",
};

fn optional<T>(
    value: &Option<String>,
    parse: fn(&str) -> Result<T, koban_auth::AuthError>,
) -> Result<Option<T>, ApiError> {
    Ok(value.as_deref().map(parse).transpose()?)
}

/// Opens an account. The answer is the same whether or not the address is already used.
#[utoipa::path(post, path = "/v1/signup", tag = "identity", request_body = SignupIn,
    responses((status = 202, body = Accepted), (status = 422, body = Problem), (status = 429, description = "Too many from this network", body = Problem), (status = 503, body = Problem)))]
pub async fn signup<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    ClientInfo(client): ClientInfo,
    headers: axum::http::HeaderMap,
    Json(body): Json<SignupIn>,
) -> Result<Response, ApiError> {
    let lang = match body.lang.as_deref() {
        Some(code) => {
            Lang::parse(code).ok_or(koban_auth::AuthError::Invalid("lang must be en or ja"))?
        }
        None => Lang::negotiate(
            None,
            headers
                .get(axum::http::header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok()),
        ),
    };
    let kind = match body.kind.as_deref() {
        None => UserKind::Customer,
        Some(kind) => match UserKind::parse(kind)? {
            UserKind::Operator => {
                return Err(
                    koban_auth::AuthError::Invalid("kind must be customer or merchant").into(),
                );
            }
            kind => kind,
        },
    };
    let signup = NewSignup {
        kind,
        email: Email::parse(&body.email)?,
        password: Secret::new(body.password),
        display_name: DisplayName::parse(&body.display_name)?,
        legal_name: optional(&body.legal_name, LegalName::parse)?,
        date_of_birth: optional(&body.date_of_birth, BirthDate::parse)?,
        phone: optional(&body.phone, Phone::parse)?,
        lang,
    };
    state.auth.signup(signup, &client).await?;
    Ok(json(StatusCode::ACCEPTED, &ACCEPTED_SIGNUP))
}

/// Confirms the e-mail address with the code sent to it.
#[utoipa::path(post, path = "/v1/signup/verify", tag = "identity", request_body = EmailCodeIn,
    responses((status = 204), (status = 401, body = Problem), (status = 429, body = Problem)))]
pub async fn verify_email<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    ClientInfo(client): ClientInfo,
    Json(body): Json<EmailCodeIn>,
) -> Result<StatusCode, ApiError> {
    let email = Email::parse(&body.email).map_err(|_| koban_auth::AuthError::BadCredentials)?;
    state
        .auth
        .verify_email(&email, &Secret::new(body.code), &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks e-mail and password. The session it returns can only confirm a second factor (or
/// enrol the first one).
#[utoipa::path(post, path = "/v1/login", tag = "identity", request_body = LoginIn,
    responses((status = 200, body = LoginOut), (status = 401, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem)))]
pub async fn login<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    ClientInfo(client): ClientInfo,
    Json(body): Json<LoginIn>,
) -> Result<Response, ApiError> {
    let result = state
        .auth
        .login(&body.email, Secret::new(body.password), &client)
        .await;
    state.pay.score_login(&body.email, &client, &result);
    let outcome = result?;
    let out = LoginOut {
        session: session_out(&outcome.session),
        next: if outcome.has_factor {
            "second_factor"
        } else {
            "enrol_factor"
        },
    };
    Ok(with_cookies(
        json(StatusCode::OK, &out),
        Some(&outcome.session),
        state.config.dev,
    ))
}

/// Completes sign-in with a TOTP or recovery code; returns a new session.
#[utoipa::path(post, path = "/v1/login/second-factor", tag = "identity", request_body = CodeIn,
    responses((status = 200, body = SessionOnlyOut), (status = 401, body = Problem),
        (status = 409, description = "This session has confirmed its second factor already", body = Problem),
        (status = 429, body = Problem)),
    security(("session" = [])))]
pub async fn second_factor<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<CodeIn>,
) -> Result<Response, ApiError> {
    let session = state
        .auth
        .second_factor(&me, &Secret::new(body.code), &client)
        .await?;
    Ok(rotated(StatusCode::OK, &session, state.config.dev))
}

/// Ends the current session.
#[utoipa::path(post, path = "/v1/logout", tag = "identity", responses((status = 204)), security(("session" = [])))]
pub async fn logout<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    state.auth.revoke_session(&me, &me.session_id).await?;
    Ok(clear_session_cookies(
        StatusCode::NO_CONTENT.into_response(),
    ))
}

/// The signed-in account.
#[utoipa::path(get, path = "/v1/me", tag = "identity", responses((status = 200, body = MeOut), (status = 401, body = Problem)), security(("session" = [])))]
pub async fn me<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let view = state.auth.me(&me).await?;
    let out = MeOut {
        id: view.id,
        kind: view.kind.as_str(),
        role: view.role.map(|r| r.as_str()),
        email: view.email,
        email_verified: view.email_verified,
        phone: view.phone,
        display_name: view.display_name,
        legal_name: view.legal_name,
        date_of_birth: view.date_of_birth,
        status: view.status,
        cooling_off_until: view.cooling_off_until_ms,
        cooling_off_limit_minor: state.auth.outgoing_limit(&me),
        factors: view
            .factors
            .into_iter()
            .map(|f| FactorOut {
                id: f.id,
                kind: f.kind,
                label: f.label,
                created_at: f.created_at_ms,
            })
            .collect(),
        recovery_codes_left: view.recovery_codes_left,
        can_move_money: me.can_move_money().is_ok(),
    };
    Ok(json(StatusCode::OK, &out))
}

/// The caller's live sessions.
#[utoipa::path(get, path = "/v1/sessions", tag = "identity", responses((status = 200, body = [SessionInfoOut])), security(("session" = [])))]
pub async fn sessions<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let rows = state.auth.sessions(&me).await?;
    let out: Vec<SessionInfoOut> = rows
        .into_iter()
        .map(|s| SessionInfoOut {
            current: s.id == me.session_id,
            id: s.id,
            level: level_name(s.level),
            network: s.network,
            user_agent: s.user_agent,
            created_at: s.created_at_ms,
            last_seen_at: s.last_seen_at_ms,
            expires_at: s.expires_at_ms,
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Ends one of the caller's sessions (sign a device out).
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "identity", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("session" = [])))]
pub async fn revoke_session<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.revoke_session(&me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts TOTP enrolment. The first factor needs only the password step; another needs step-up.
#[utoipa::path(post, path = "/v1/factors/totp", tag = "factors", request_body = StepUpOnlyIn,
    responses((status = 201, body = TotpEnrollmentOut), (status = 403, body = Problem)), security(("session" = [])))]
pub async fn totp_begin<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body = optional_step_up(&body)?;
    let enrolment = state
        .auth
        .totp_begin(&me, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    let out = TotpEnrollmentOut {
        factor_id: enrolment.factor_id,
        otpauth_uri: enrolment.otpauth_uri.expose().clone(),
        qr_svg: enrolment.qr_svg.expose().clone(),
        session: enrolment.session.as_ref().map(session_out),
    };
    Ok(with_cookies(
        json(StatusCode::CREATED, &out),
        enrolment.session.as_ref(),
        state.config.dev,
    ))
}

/// Confirms TOTP enrolment with a code from the app. The first factor returns the recovery
/// codes (once) and a full session.
#[utoipa::path(post, path = "/v1/factors/totp/{id}/confirm", tag = "factors", params(("id" = String, Path)), request_body = CodeIn,
    responses((status = 200, body = TotpConfirmedOut), (status = 401, body = Problem), (status = 429, body = Problem)), security(("session" = [])))]
pub async fn totp_confirm<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Path(id): Path<String>,
    Json(body): Json<CodeIn>,
) -> Result<Response, ApiError> {
    let enrolled = state
        .auth
        .totp_confirm(&me, &id, &Secret::new(body.code), &client)
        .await?;
    let out = TotpConfirmedOut {
        recovery_codes: enrolled
            .recovery_codes
            .as_ref()
            .map(|codes| codes.iter().map(|c| c.expose().clone()).collect()),
        session: enrolled.session.as_ref().map(session_out),
    };
    Ok(with_cookies(
        json(StatusCode::OK, &out),
        enrolled.session.as_ref(),
        state.config.dev,
    ))
}

/// Removes a factor (step-up); the last one cannot be removed.
#[utoipa::path(post, path = "/v1/factors/{id}/remove", tag = "factors", params(("id" = String, Path)), request_body = StepUpOnlyIn,
    responses((status = 200, body = SessionOnlyOut), (status = 403, body = Problem), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn remove_factor<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Path(id): Path<String>,
    Json(body): Json<StepUpOnlyIn>,
) -> Result<Response, ApiError> {
    let session = state
        .auth
        .remove_factor(&me, &id, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    Ok(rotated(StatusCode::OK, &session, state.config.dev))
}

/// Replaces the recovery codes (step-up).
#[utoipa::path(post, path = "/v1/factors/recovery-codes", tag = "factors", request_body = StepUpOnlyIn,
    responses((status = 200, body = RecoveryCodesOut), (status = 403, body = Problem)), security(("session" = [])))]
pub async fn recovery_codes<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<StepUpOnlyIn>,
) -> Result<Response, ApiError> {
    let (codes, session) = state
        .auth
        .regenerate_recovery_codes(&me, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    let out = RecoveryCodesOut {
        recovery_codes: codes.iter().map(|c| c.expose().clone()).collect(),
        session: session_out(&session),
    };
    Ok(with_cookies(
        json(StatusCode::OK, &out),
        Some(&session),
        state.config.dev,
    ))
}

/// Starts an e-mail change (step-up); a code goes to the new address.
#[utoipa::path(post, path = "/v1/me/email", tag = "identity", request_body = ChangeEmailIn,
    responses((status = 202, body = SessionOnlyOut), (status = 403, body = Problem)), security(("session" = [])))]
pub async fn change_email<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<ChangeEmailIn>,
) -> Result<Response, ApiError> {
    let email = Email::parse(&body.email)?;
    let session = state
        .auth
        .change_email_begin(&me, &email, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    Ok(rotated(StatusCode::ACCEPTED, &session, state.config.dev))
}

/// Finishes an e-mail change with the code sent to the new address.
#[utoipa::path(post, path = "/v1/me/email/confirm", tag = "identity", request_body = CodeIn,
    responses((status = 204), (status = 401, body = Problem), (status = 409, body = Problem), (status = 429, body = Problem)), security(("session" = [])))]
pub async fn confirm_email<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<CodeIn>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .change_email_confirm(&me, &Secret::new(body.code), &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the phone number (step-up).
#[utoipa::path(post, path = "/v1/me/phone", tag = "identity", request_body = ChangePhoneIn,
    responses((status = 200, body = SessionOnlyOut), (status = 403, body = Problem)), security(("session" = [])))]
pub async fn change_phone<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<ChangePhoneIn>,
) -> Result<Response, ApiError> {
    let phone = Phone::parse(&body.phone)?;
    let session = state
        .auth
        .change_phone(&me, &phone, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    Ok(rotated(StatusCode::OK, &session, state.config.dev))
}

/// Changes the password (step-up bound to the new password).
#[utoipa::path(post, path = "/v1/me/password", tag = "identity", request_body = ChangePasswordIn,
    responses((status = 200, body = SessionOnlyOut), (status = 403, body = Problem), (status = 422, body = Problem)), security(("session" = [])))]
pub async fn change_password<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<ChangePasswordIn>,
) -> Result<Response, ApiError> {
    let session = state
        .auth
        .change_password(
            &me,
            Secret::new(body.new_password),
            proof(&body.step_up)?.as_ref(),
            &client,
        )
        .await?;
    Ok(rotated(StatusCode::OK, &session, state.config.dev))
}

/// "This was not me": freezes the account and ends every session.
#[utoipa::path(post, path = "/v1/not-me", tag = "recovery", request_body = TokenIn, responses((status = 204), (status = 404, body = Problem)))]
pub async fn not_me<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Json(body): Json<TokenIn>,
) -> Result<StatusCode, ApiError> {
    state.auth.not_me(&Secret::new(body.token)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a reset code to the address on file, if any (same answer either way).
#[utoipa::path(post, path = "/v1/password/forgot", tag = "recovery", request_body = EmailIn,
    responses((status = 202, body = Accepted), (status = 422, description = "Not an e-mail address", body = Problem),
        (status = 429, description = "Too many from this network", body = Problem)))]
pub async fn forgot_password<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    ClientInfo(client): ClientInfo,
    Json(body): Json<EmailIn>,
) -> Result<Response, ApiError> {
    // A malformed address is refused: that tells nothing about which accounts exist.
    let email = Email::parse(&body.email)?;
    state.auth.forgot_password(&email, &client).await?;
    Ok(json(
        StatusCode::ACCEPTED,
        &Accepted {
            status: "accepted",
            detail: "if there is an account for this address, a code is on its way to it",
        },
    ))
}

/// Resets the password with the e-mailed code and a second factor.
#[utoipa::path(post, path = "/v1/password/reset", tag = "recovery", request_body = ResetIn,
    responses((status = 204), (status = 401, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn reset_password<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    ClientInfo(client): ClientInfo,
    Json(body): Json<ResetIn>,
) -> Result<StatusCode, ApiError> {
    let email = Email::parse(&body.email).map_err(|_| koban_auth::AuthError::BadCredentials)?;
    let result = state
        .auth
        .reset_password(
            &email,
            &Secret::new(body.code),
            &Secret::new(body.second_factor_code),
            Secret::new(body.new_password),
            &client,
        )
        .await;
    // A wrong or refused reset code is a failed credential on the account, scored as a
    // failed sign-in (the guessing rules see it); a successful reset is not a sign-in.
    if result.is_err() {
        state.pay.score_login(email.as_str(), &client, &result);
    }
    result?;
    Ok(StatusCode::NO_CONTENT)
}

/// Files a recovery request for an account whose factors are lost (same answer either way).
#[utoipa::path(post, path = "/v1/recovery-requests", tag = "recovery", request_body = EmailIn,
    responses((status = 202, body = Accepted), (status = 422, description = "Not an e-mail address", body = Problem),
        (status = 429, description = "Too many from this network", body = Problem)))]
pub async fn request_recovery<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    ClientInfo(client): ClientInfo,
    Json(body): Json<EmailIn>,
) -> Result<Response, ApiError> {
    let email = Email::parse(&body.email)?;
    state.auth.request_recovery(&email, &client).await?;
    Ok(json(
        StatusCode::ACCEPTED,
        &Accepted {
            status: "accepted",
            detail: "if there is an account for this address, its owner has been told about the request",
        },
    ))
}

/// Cancels a pending recovery request with the link sent to the owner.
#[utoipa::path(post, path = "/v1/recovery-requests/cancel", tag = "recovery", request_body = TokenIn, responses((status = 204), (status = 404, body = Problem)))]
pub async fn cancel_recovery<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Json(body): Json<TokenIn>,
) -> Result<StatusCode, ApiError> {
    state.auth.cancel_recovery(&Secret::new(body.token)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An invited operator sets a password with the enrolment link.
#[utoipa::path(post, path = "/v1/operators/enrol", tag = "operators", request_body = EnrolOperatorIn,
    responses((status = 204), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn enrol_operator<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Json(body): Json<EnrolOperatorIn>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .enrol_operator(&Secret::new(body.token), Secret::new(body.password))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn options_json<T: serde::Serialize>(options: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(options)
        .map_err(|_| ApiError::Auth(koban_auth::AuthError::Internal("options do not serialise")))
}

fn credential<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|_| {
        ApiError::Auth(koban_auth::AuthError::Invalid(
            "credential is not what the browser's WebAuthn call returns",
        ))
    })
}

/// Starts registering a passkey. The first factor needs only the password step; another
/// needs step-up.
#[utoipa::path(post, path = "/v1/factors/passkeys/register/start", tag = "factors", request_body = StepUpOnlyIn,
    responses((status = 201, body = PasskeyStartOut), (status = 403, body = Problem), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn passkey_register_start<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body = optional_step_up(&body)?;
    let started = state
        .auth
        .passkey_register_start(&me, proof(&body.step_up)?.as_ref(), &client)
        .await?;
    let out = PasskeyStartOut {
        ceremony_id: started.ceremony_id,
        options: options_json(&started.options)?,
        session: started.session.as_ref().map(session_out),
    };
    Ok(with_cookies(
        json(StatusCode::CREATED, &out),
        started.session.as_ref(),
        state.config.dev,
    ))
}

/// Finishes registering a passkey. The first factor returns the recovery codes (once) and a
/// full session.
#[utoipa::path(post, path = "/v1/factors/passkeys/register/finish", tag = "factors", request_body = PasskeyFinishIn,
    responses((status = 200, body = TotpConfirmedOut), (status = 401, body = Problem), (status = 404, body = Problem), (status = 429, body = Problem)), security(("session" = [])))]
pub async fn passkey_register_finish<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<PasskeyFinishIn>,
) -> Result<Response, ApiError> {
    let registration = credential(body.credential)?;
    let enrolled = state
        .auth
        .passkey_register_finish(&me, &body.ceremony_id, &registration, &client)
        .await?;
    let out = TotpConfirmedOut {
        recovery_codes: enrolled
            .recovery_codes
            .as_ref()
            .map(|codes| codes.iter().map(|c| c.expose().clone()).collect()),
        session: enrolled.session.as_ref().map(session_out),
    };
    Ok(with_cookies(
        json(StatusCode::OK, &out),
        enrolled.session.as_ref(),
        state.config.dev,
    ))
}

/// Starts signing in with a passkey as the second factor.
#[utoipa::path(post, path = "/v1/login/passkey/start", tag = "identity",
    responses((status = 200, body = PasskeyStartOut), (status = 409, body = Problem)), security(("session" = [])))]
pub async fn passkey_login_start<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
) -> Result<Response, ApiError> {
    let started = state.auth.passkey_login_start(&me).await?;
    let out = PasskeyStartOut {
        ceremony_id: started.ceremony_id,
        options: options_json(&started.options)?,
        session: None,
    };
    Ok(json(StatusCode::OK, &out))
}

/// Completes sign-in with a passkey assertion; returns a new session.
#[utoipa::path(post, path = "/v1/login/passkey/finish", tag = "identity", request_body = PasskeyFinishIn,
    responses((status = 200, body = SessionOnlyOut), (status = 401, body = Problem),
        (status = 409, description = "This session has confirmed its second factor already", body = Problem), (status = 429, body = Problem)), security(("session" = [])))]
pub async fn passkey_login_finish<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Caller(me): Caller,
    ClientInfo(client): ClientInfo,
    Json(body): Json<PasskeyFinishIn>,
) -> Result<Response, ApiError> {
    let assertion = credential(body.credential)?;
    let session = state
        .auth
        .passkey_login_finish(&me, &body.ceremony_id, &assertion, &client)
        .await?;
    let out = SessionOnlyOut {
        session: session_out(&session),
    };
    Ok(with_cookies(
        json(StatusCode::OK, &out),
        Some(&session),
        state.config.dev,
    ))
}
