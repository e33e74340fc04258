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

/// A JSON body; a malformed one is a 400 problem. See [`json_body`] for how it is read.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(request.headers()) {
            return Err(ApiError::BadRequest(
                "send the body as JSON with Content-Type: application/json".into(),
            ));
        }
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|error| {
                crate::problem::rejection(
                    error.status(),
                    error.body_text(),
                    "the body could not be read",
                )
            })?;
        json_body(&body).map(Json)
    }
}

/// `application/json`, or a `+json` type, as axum's own extractor accepts.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// A request body as `T`. Every body is a JSON object (serde would read a struct from an
/// array, `[1500]`, too); a key given twice is refused; a number written with a fraction or an
/// exponent that is exactly an integer of at most 2^53 (`4378.0`, `1.2e3`), as JSON Schema
/// counts it, is read as that integer, decided from the text (`1500.0000000000001` is not
/// one); any other fraction is refused where an integer is expected. A refusal is a 400
/// problem naming the field, never a value.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let not_json = || ApiError::BadRequest("the body is not valid JSON".into());
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ApiError::BadRequest("the body must be a JSON object".into()),
                Err(_) => not_json(),
            },
        );
    }
    let text = integral_numbers(body);
    let mut reader = serde_json::Deserializer::from_slice(&text);
    let value = serde_path_to_error::deserialize(&mut reader).map_err(|error| {
        if error.inner().is_syntax() || error.inner().is_eof() {
            not_json()
        } else {
            refusal(&error)
        }
    })?;
    reader.end().map_err(|_| not_json())?;
    Ok(value)
}

/// Why a body does not fit, naming the place by the request's own field names and never
/// repeating what the client wrote: not a value, nor a key the request does not take (a key
/// can be anything, a card number too).
fn refusal(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_path_to_error::Segment;
    let message = error.inner().to_string();
    let message = message.split(" at line ").next().unwrap_or_default();
    let unknown = message.starts_with("unknown field");
    let mut segments: Vec<&Segment> = error.path().iter().collect();
    if unknown {
        segments.pop();
    }
    let named = |text: &str| {
        text.len() <= 40
            && text.starts_with(|c: char| c.is_ascii_lowercase())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let safe = segments.iter().all(|segment| match segment {
        Segment::Seq { .. } => true,
        Segment::Map { key } => named(key),
        Segment::Enum { variant } => named(variant),
        Segment::Unknown => false,
    });
    let place = match (segments.is_empty(), safe) {
        (true, _) => "the body".to_owned(),
        (false, true) => {
            let mut place = String::new();
            for segment in &segments {
                if !place.is_empty() && !matches!(segment, Segment::Seq { .. }) {
                    place.push('.');
                }
                place.push_str(&segment.to_string());
            }
            place
        }
        (false, false) => "a field of the body".to_owned(),
    };
    let what = if unknown {
        let expected = message.find(", expected").map_or("", |at| &message[at..]);
        format!("holds a field this request does not take{expected}")
    } else {
        crate::problem::without_values(message.to_owned(), "not what this field takes")
    };
    ApiError::BadRequest(format!("{place}: {what}"))
}

/// The body with each number token that [`integral`] reads rewritten as its integer digits;
/// strings (keys and values) and every other token as written.
fn integral_numbers(json: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let (mut at, mut copied, mut in_string) = (0, 0, false);
    while at < json.len() {
        let byte = json[at];
        if in_string {
            match byte {
                b'\\' => at += 2,
                b'"' => {
                    in_string = false;
                    at += 1;
                }
                _ => at += 1,
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                at += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                while at < json.len()
                    && matches!(json[at], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    at += 1;
                }
                if let Some(digits) = integral(&json[start..at]) {
                    let out = out.get_or_insert_with(|| Vec::with_capacity(json.len()));
                    out.extend_from_slice(&json[copied..start]);
                    out.extend_from_slice(digits.as_bytes());
                    copied = at;
                }
            }
            _ => at += 1,
        }
    }
    match out {
        Some(mut out) => {
            out.extend_from_slice(&json[copied..]);
            std::borrow::Cow::Owned(out)
        }
        None => std::borrow::Cow::Borrowed(json),
    }
}

/// The integer a JSON number token equals, when it is written with a fraction or an exponent
/// and is exactly an integer of magnitude at most 2^53; `None` for any other token.
fn integral(token: &[u8]) -> Option<String> {
    const EXACT: u64 = 1 << 53;
    let text = std::str::from_utf8(token).ok()?;
    // Only a well-formed JSON number: `1.` or `01.0` stays as written, and is refused.
    if !text.contains(['.', 'e', 'E']) || serde_json::from_str::<serde_json::Number>(text).is_err()
    {
        return None;
    }
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    // The digits, times ten to the power `shift`, are the number; trailing zeros of the digits
    // make up for a negative power (`13364000e-3`).
    let mut shift = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
    let digits = format!("{whole}{fraction}");
    let mut significant = digits.trim_start_matches('0');
    while shift < 0 && significant.ends_with('0') {
        significant = &significant[..significant.len() - 1];
        shift += 1;
    }
    if significant.is_empty() {
        return Some("0".to_owned());
    }
    if shift < 0 || significant.len() > 16 {
        return None;
    }
    let mut value: u64 = significant.parse().ok()?;
    for _ in 0..shift {
        value = value.checked_mul(10).filter(|v| *v <= EXACT)?;
    }
    (value <= EXACT).then(|| {
        if negative {
            format!("-{value}")
        } else {
            value.to_string()
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_that_are_exact_integers_read_as_integers() {
        for (token, integer) in [
            ("4378.0", Some("4378")),
            ("1.2e3", Some("1200")),
            ("1200E0", Some("1200")),
            ("-5.000", Some("-5")),
            ("0.0", Some("0")),
            ("-0.0e-5", Some("0")),
            ("12.5e1", Some("125")),
            ("13364000000e-6", Some("13364")),
            ("1.0e-0", Some("1")),
            ("100e-3", None),
            ("1.", None),
            ("01.0", None),
            ("1.e3", None),
            ("-", None),
            ("9007199254740992.0", Some("9007199254740992")),
            ("1500", None),
            ("1500.0000000000001", None),
            ("0.99999999999999999999", None),
            ("9007199254740993.0", None),
            ("1e16", None),
            ("1.25e1", None),
            ("1e-1", None),
            ("1e99999999999999999999", None),
        ] {
            assert_eq!(integral(token.as_bytes()).as_deref(), integer, "{token}");
        }
        let body = br#"{"note":"1.0 in a string","amount":1.2e3,"list":[2.50, 3.0]}"#;
        assert_eq!(
            &*integral_numbers(body),
            br#"{"note":"1.0 in a string","amount":1200,"list":[2.50, 3]}"#
        );
        let escaped = br#"{"a":"quote \" 1.0","b":7.0}"#;
        assert_eq!(
            &*integral_numbers(escaped),
            br#"{"a":"quote \" 1.0","b":7}"#
        );
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Body {
        amount: i64,
    }

    #[test]
    fn a_body_is_one_object_with_each_key_once() {
        assert_eq!(
            json_body::<Body>(br#" {"amount": 1.5e3} "#).unwrap().amount,
            1500
        );
        let secret = json_body::<Body>(br#"{"4999100012345678": 1}"#).unwrap_err();
        assert!(
            !format!("{secret:?}").contains("4999100012345678"),
            "{secret:?}"
        );
        let named = json_body::<Body>(br#"{"amount": "12"}"#).unwrap_err();
        assert!(
            format!("{named:?}").contains("amount: invalid type"),
            "{named:?}"
        );
        for refused in [
            &br#"[1500]"#[..],
            br#"{"amount":1,"amount":100000}"#,
            br#"{"amount":1500.0000000000001}"#,
            br#"{"amount":1500} {"amount":1}"#,
            br#"{"amount":1.}"#,
            br#"{"amount":01.0}"#,
            br#"{"amount":"#,
            b"",
        ] {
            assert!(
                json_body::<Body>(refused).is_err(),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }
}
