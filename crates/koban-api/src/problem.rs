//! RFC 9457 problem details: the one place where errors become HTTP responses.

use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use koban_auth::AuthError;
use koban_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

const TYPE_BASE: &str = "https://koban.example/problems/";

/// A problem document (`application/problem+json`).
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; stable, for programs to branch on.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    /// What was wrong and what the caller can do. Never a secret, never whether an account exists.
    pub detail: String,
    /// Seconds to wait before retrying (429 and 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// For refused payments: a stable reason code (`daily_limit`, `code_limit`,
    /// `insufficient_funds`, `risk_declined`, ...). Risk refusals never name the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// For `card-challenge-required`: repeat the request with `challenge: {id, code}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<CardChallengeOut>,
    /// For `step-up-required`: the pending confirmation to repeat the request with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_up: Option<StepUpChallengeOut>,
}

#[derive(Serialize, ToSchema)]
pub struct CardChallengeOut {
    pub id: String,
    pub expires_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct StepUpChallengeOut {
    pub id: String,
    pub action: &'static str,
    /// What is being confirmed, in words.
    pub summary: String,
    pub expires_at: i64,
    pub methods: Vec<&'static str>,
    /// When the user has a passkey: options for `navigator.credentials.get()`, bound to this
    /// action; answer with `step_up.passkey`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<serde_json::Value>,
}

/// Every error an endpoint can answer with.
#[derive(Debug)]
pub enum ApiError {
    Auth(AuthError),
    /// The request body or parameters could not be read.
    BadRequest(String),
    /// The request body is larger than the limit.
    TooLarge,
    NotFound,
    /// A state-changing request authenticated by cookie came without a matching CSRF token.
    Csrf,
    /// The API key lacks a scope.
    Scope(&'static str),
    Pay(koban_pay::PayError),
    /// A money-moving POST came without an `Idempotency-Key` header.
    IdempotencyKeyMissing,
}

impl From<koban_pay::PayError> for ApiError {
    fn from(error: koban_pay::PayError) -> ApiError {
        match error {
            koban_pay::PayError::Auth(auth) => ApiError::Auth(auth),
            other => ApiError::Pay(other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        ApiError::Auth(error)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::Auth(AuthError::Store(error))
    }
}

/// A parser's message, unless it quotes part of the input (which may be a password or code):
/// then only `generic`.
pub fn without_values(message: String, generic: &str) -> String {
    // serde names fields in backticks ("missing field `email`") but also quotes a mistyped
    // value after "invalid type"/"invalid value": keep the field path, drop the value.
    for marker in [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
    ] {
        if let Some(at) = message.find(marker) {
            return format!("{}{marker}: {generic}", &message[..at]);
        }
    }
    if message.contains('"') || message.contains('\'') {
        generic.to_owned()
    } else {
        message
    }
}

pub(crate) fn rejection(status: StatusCode, text: String, generic: &str) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge
    } else {
        ApiError::BadRequest(without_values(text, generic))
    }
}

impl From<FormRejection> for ApiError {
    fn from(error: FormRejection) -> ApiError {
        rejection(
            error.status(),
            error.body_text(),
            "the form could not be read",
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(error: QueryRejection) -> ApiError {
        rejection(
            error.status(),
            error.body_text(),
            "a query parameter is missing or not valid",
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(error: PathRejection) -> ApiError {
        rejection(error.status(), error.body_text(), "the path is not valid")
    }
}

fn problem(status: StatusCode, kind: &str, title: &'static str, detail: String) -> Problem {
    Problem {
        kind: format!("{TYPE_BASE}{kind}"),
        title,
        status: status.as_u16(),
        detail,
        retry_after_s: None,
        code: None,
        challenge: None,
        step_up: None,
    }
}

fn refused(kind: &str, title: &'static str, code: &'static str, detail: String) -> Problem {
    Problem {
        code: Some(code),
        ..problem(StatusCode::UNPROCESSABLE_ENTITY, kind, title, detail)
    }
}

fn pay_problem(error: &koban_pay::PayError) -> Problem {
    use StatusCode as S;
    use koban_pay::PayError as P;
    let detail = error.to_string();
    match error {
        P::Invalid(_) => problem(
            S::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "Invalid request",
            detail,
        ),
        P::RulesInvalid(_) => problem(
            S::UNPROCESSABLE_ENTITY,
            "rules-invalid",
            "Risk rules not valid",
            detail,
        ),
        P::NotFound => problem(S::NOT_FOUND, "not-found", "Not found", detail),
        P::InsufficientFunds => refused(
            "insufficient-funds",
            "Insufficient funds",
            "insufficient_funds",
            detail,
        ),
        P::Limit { code, .. } => refused("limit-exceeded", "Limit exceeded", code, detail),
        P::Declined { code } => refused("payment-declined", "Payment declined", code, detail),
        P::Conflict(_) => problem(S::CONFLICT, "conflict", "Conflict", detail),
        P::IdempotencyMismatch => problem(
            S::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            detail,
        ),
        P::InFlight => problem(
            S::CONFLICT,
            "idempotency-in-progress",
            "Request in progress",
            detail,
        ),
        P::Gone(_) => problem(S::GONE, "gone", "No longer valid", detail),
        P::Frozen => problem(S::FORBIDDEN, "account-frozen", "Account frozen", detail),
        P::Unavailable(_) => problem(
            S::SERVICE_UNAVAILABLE,
            "not-configured",
            "Not available on this server",
            detail,
        ),
        P::ChallengeRequired { id, expires_at_ms } => Problem {
            challenge: Some(CardChallengeOut {
                id: id.clone(),
                expires_at: *expires_at_ms,
            }),
            ..problem(
                S::FORBIDDEN,
                "card-challenge-required",
                "Card confirmation required",
                detail,
            )
        },
        P::Auth(_) => problem(
            S::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "something went wrong on our side; try again".into(),
        ),
    }
}

impl ApiError {
    fn problem(&self) -> Problem {
        use StatusCode as S;
        let auth = match self {
            ApiError::BadRequest(detail) => {
                return problem(S::BAD_REQUEST, "bad-request", "Bad request", detail.clone());
            }
            ApiError::TooLarge => {
                return problem(
                    S::PAYLOAD_TOO_LARGE,
                    "too-large",
                    "Body too large",
                    "the request body is larger than 64 KiB".into(),
                );
            }
            ApiError::NotFound => {
                return problem(
                    S::NOT_FOUND,
                    "not-found",
                    "Not found",
                    "there is nothing here".into(),
                );
            }
            ApiError::Csrf => {
                return problem(
                    S::FORBIDDEN,
                    "csrf",
                    "Missing CSRF token",
                    "requests authenticated by cookie must send the session's X-CSRF-Token header"
                        .into(),
                );
            }
            ApiError::Scope(scope) => {
                return problem(
                    S::FORBIDDEN,
                    "scope",
                    "Missing scope",
                    format!("this API key lacks the {scope} scope"),
                );
            }
            ApiError::Pay(pay) => return pay_problem(pay),
            ApiError::IdempotencyKeyMissing => {
                return problem(
                        S::BAD_REQUEST,
                        "idempotency-key-missing",
                        "Idempotency-Key missing",
                        "send an Idempotency-Key header (1 to 255 printable characters) with every request that moves money".into(),
                    );
            }
            ApiError::Auth(auth) => auth,
        };
        auth_problem(auth)
    }
}

fn auth_problem(auth: &AuthError) -> Problem {
    use StatusCode as S;
    let detail = auth.to_string();
    match auth {
        AuthError::Invalid(_) => problem(S::UNPROCESSABLE_ENTITY, "invalid-request", "Invalid request", detail),
        AuthError::Password(_) => problem(S::UNPROCESSABLE_ENTITY, "weak-password", "Password refused", detail),
        AuthError::BadCredentials => problem(S::UNAUTHORIZED, "invalid-credentials", "Not signed in", detail),
        AuthError::CodeReused => problem(S::UNAUTHORIZED, "code-already-used", "Code already used", detail),
        AuthError::Throttled { retry_after_s } => Problem {
            retry_after_s: Some(*retry_after_s),
            ..problem(S::TOO_MANY_REQUESTS, "throttled", "Too many attempts", detail)
        },
        // A concurrent writer raced this request (a serialization failure or a deadlock the
        // database ended): nothing was decided, and the same request may be sent again.
        AuthError::Busy | AuthError::Store(StoreError::Busy | StoreError::Conflict) => Problem {
            retry_after_s: Some(1),
            ..problem(S::SERVICE_UNAVAILABLE, "busy", "Busy", "the service is busy; try again shortly".into())
        },
        AuthError::Store(StoreError::Unavailable) => Problem {
            retry_after_s: Some(2),
            ..problem(S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", "the service cannot reach its database (or every connection is busy); the request may not have been carried out: try again shortly, with the same Idempotency-Key for a payment".into())
        },
        AuthError::Unauthenticated => problem(S::UNAUTHORIZED, "unauthenticated", "Not signed in", detail),
        AuthError::SecondFactorRequired => problem(S::FORBIDDEN, "second-factor-required", "Second factor required", detail),
        AuthError::EnrolmentRequired => problem(S::FORBIDDEN, "enrolment-required", "Second factor not enrolled", detail),
        AuthError::EmailNotVerified => problem(S::FORBIDDEN, "email-not-verified", "E-mail not verified", detail),
        AuthError::Forbidden(_) => problem(S::FORBIDDEN, "forbidden", "Forbidden", detail),
        AuthError::StepUpRequired(challenge) => Problem {
            step_up: Some(StepUpChallengeOut {
                id: challenge.id.clone(),
                action: challenge.action,
                summary: challenge.summary.clone(),
                expires_at: challenge.expires_at_ms,
                methods: challenge.methods.clone(),
                passkey: challenge.passkey.as_ref().and_then(|p| serde_json::to_value(p).ok()),
            }),
            ..problem(S::FORBIDDEN, "step-up-required", "Confirmation required",
                "repeat the same request with step_up: {id, code} (a TOTP or recovery code) or {id, passkey}".into())
        },
        AuthError::StepUpInvalid => problem(S::FORBIDDEN, "step-up-invalid", "Confirmation not valid", detail),
        AuthError::PasskeyRefused(_) => problem(S::UNPROCESSABLE_ENTITY, "passkey-refused", "Passkey not accepted", detail),
        AuthError::NotFound => problem(S::NOT_FOUND, "not-found", "Not found", "not found, or the link is used or expired".into()),
        AuthError::Conflict(_) => problem(S::CONFLICT, "conflict", "Conflict", detail),
        AuthError::Frozen => problem(S::FORBIDDEN, "account-frozen", "Account frozen", detail),
        AuthError::Internal(_) | AuthError::Store(_) => {
            problem(S::INTERNAL_SERVER_ERROR, "internal", "Internal error", "something went wrong on our side; try again".into())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if problem.status >= 500 {
            tracing::error!(error = ?self, "request failed");
        }
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response =
            (status, serde_json::to_string(&problem).unwrap_or_default()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = problem.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The answer to a path nobody serves.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raced_or_busy_store_asks_for_a_retry_not_an_internal_error() {
        for error in [StoreError::Conflict, StoreError::Busy] {
            let problem = ApiError::from(error).problem();
            assert_eq!((problem.status, problem.retry_after_s), (503, Some(1)));
        }
        let unavailable = ApiError::from(StoreError::Unavailable).problem();
        assert_eq!(
            (unavailable.status, unavailable.retry_after_s),
            (503, Some(2))
        );
        let broken = ApiError::from(StoreError::Database("disk full".into())).problem();
        assert_eq!(broken.status, 500);
        assert!(!broken.detail.contains("disk"), "no internal detail leaks");
    }
}
