//! Request extractors: JSON bodies whose errors are problems, the client's network and device,
//! and the caller's session (cookie or bearer token, with CSRF protection for cookies).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use koban_auth::{IssuedSession, Principal, Secret};
use koban_store::LedgerStore;

use crate::ApiState;
use crate::problem::ApiError;
use crate::wire::SessionOut;

pub const SESSION_COOKIE: &str = "koban_session";
pub const CSRF_COOKIE: &str = "koban_csrf";
pub const DEVICE_COOKIE: &str = "koban_device";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A JSON body; a malformed one is a 400 problem. A number written with a zero fraction
/// (`4378.0`, `1e3`) is the integer it equals, as JSON Schema counts it, up to 2^53 (beyond
/// that a float is not exact); any other fraction is refused where an integer is expected.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) =
            axum::Json::<serde_json::Value>::from_request(request, state).await?;
        json_value(value).map(Json)
    }
}

/// A request body's JSON as `T`, whole numbers read as integers (see [`Json`]); a value that
/// does not fit is a 400 problem naming the field, never the value. Every body is an object:
/// an array is refused, though serde would read a struct from one (`[1500]`).
pub fn json_value<T: serde::de::DeserializeOwned>(
    mut value: serde_json::Value,
) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    whole_numbers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|error| {
        ApiError::BadRequest(crate::problem::without_values(
            format!("Failed to deserialize the JSON body into the target type: {error}"),
            "a field of the body is missing, unknown or of the wrong type",
        ))
    })
}

/// Rewrites every number with a zero fraction and a magnitude of at most 2^53 as an integer.
fn whole_numbers(value: &mut serde_json::Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        serde_json::Value::Number(number) if number.is_f64() => {
            let float = number.as_f64().unwrap_or(f64::NAN);
            if float.fract() == 0.0 && float.abs() <= EXACT {
                // Exact: a whole float of at most 2^53 converts without loss.
                *value = if float < 0.0 {
                    serde_json::Value::from(float as i64)
                } else {
                    serde_json::Value::from(float as u64)
                };
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// A query string; one that does not parse is a 400 problem (`application/problem+json`),
/// like every other error, never axum's plain-text rejection.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// A user's id from a path or a body; one that cannot be a user's is not found, like an
/// unknown one.
pub fn user_id(text: &str) -> Result<koban_shared::ids::UserId, ApiError> {
    koban_shared::ids::UserId::parse(text).ok_or_else(|| koban_pay::PayError::NotFound.into())
}

/// A card's id from a path, as [`user_id`].
pub fn card_id(text: &str) -> Result<koban_shared::ids::CardId, ApiError> {
    koban_shared::ids::CardId::parse(text).ok_or_else(|| koban_pay::PayError::NotFound.into())
}

/// The value of the cookie `name`, if the request carries it.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The client's address: the peer, or, behind a trusted proxy, the last `X-Forwarded-For` hop.
fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for
        && let Some(ip) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return ip;
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |info| info.0.ip())
}

/// Where the request comes from.
pub struct ClientInfo(pub koban_auth::Client);

impl<S: LedgerStore> FromRequestParts<ApiState<S>> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState<S>) -> Result<Self, ApiError> {
        let ip = client_ip(parts, state.config.trust_forwarded_for);
        let device =
            cookie_value(&parts.headers, DEVICE_COOKIE).and_then(|c| state.auth.verify_device(c));
        let agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        Ok(ClientInfo(koban_auth::Client::from_ip(ip, device, agent)))
    }
}

/// The signed-in caller.
pub struct Caller(pub Principal);

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

impl<S: LedgerStore> FromRequestParts<ApiState<S>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState<S>) -> Result<Self, ApiError> {
        if let Some(token) = bearer(&parts.headers) {
            return Ok(Caller(state.auth.authenticate(token).await?));
        }
        let token = cookie_value(&parts.headers, SESSION_COOKIE)
            .ok_or(koban_auth::AuthError::Unauthenticated)?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let presented = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !state.auth.csrf_matches(token, presented) {
                return Err(ApiError::Csrf);
            }
        }
        Ok(Caller(state.auth.authenticate(token).await?))
    }
}

/// A merchant's server, authenticated by API key.
pub struct MerchantCaller(pub koban_auth::apikeys::MerchantKey);

impl<S: LedgerStore> FromRequestParts<ApiState<S>> for MerchantCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState<S>) -> Result<Self, ApiError> {
        let key = bearer(&parts.headers).ok_or(koban_auth::AuthError::Unauthenticated)?;
        Ok(MerchantCaller(state.auth.authenticate_api_key(key).await?))
    }
}

fn set_cookie(response: &mut Response, cookie: Cookie<'_>) {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// A JSON response with the cookies of the session that step-up rotated, if any.
pub fn json_with_session<T: serde::Serialize>(
    status: axum::http::StatusCode,
    body: &T,
    session: Option<&IssuedSession>,
    dev: bool,
) -> Response {
    with_cookies(json(status, body), session, dev)
}

/// Adds the cookies of a new session (and of a new device, when the session brings one) to a
/// response.
pub fn with_cookies(
    mut response: Response,
    session: Option<&IssuedSession>,
    dev: bool,
) -> Response {
    let device: Option<&Secret<String>> = session.and_then(|s| s.device_cookie.as_ref());
    if let Some(session) = session {
        let max_age = cookie::time::Duration::hours(12);
        let mut token = Cookie::new(SESSION_COOKIE, session.token.expose().clone());
        token.set_http_only(true);
        token.set_secure(!dev);
        token.set_same_site(SameSite::Strict);
        token.set_path("/");
        token.set_max_age(max_age);
        set_cookie(&mut response, token);
        let mut csrf = Cookie::new(CSRF_COOKIE, session.csrf.expose().clone());
        csrf.set_secure(!dev);
        csrf.set_same_site(SameSite::Strict);
        csrf.set_path("/");
        csrf.set_max_age(max_age);
        set_cookie(&mut response, csrf);
    }
    if let Some(device) = device {
        let mut cookie = Cookie::new(DEVICE_COOKIE, device.expose().clone());
        cookie.set_http_only(true);
        cookie.set_secure(!dev);
        cookie.set_same_site(SameSite::Strict);
        cookie.set_path("/");
        cookie.set_max_age(cookie::time::Duration::days(365));
        set_cookie(&mut response, cookie);
    }
    response
}

/// Clears the session cookies.
pub fn clear_session_cookies(mut response: Response) -> Response {
    for name in [SESSION_COOKIE, CSRF_COOKIE] {
        let mut cookie = Cookie::new(name, "");
        cookie.set_path("/");
        cookie.set_max_age(cookie::time::Duration::ZERO);
        set_cookie(&mut response, cookie);
    }
    response
}

/// A JSON response with a status.
pub fn json<T: serde::Serialize>(status: axum::http::StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}

pub fn session_out(session: &IssuedSession) -> SessionOut {
    SessionOut::from(session)
}
