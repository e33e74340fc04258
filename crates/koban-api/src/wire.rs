//! Wire types: what the API reads and writes as JSON. Domain types are converted to and from
//! these here and nowhere else.

use koban_auth::{IssuedSession, SessionLevel};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A second-factor confirmation of a pending sensitive action: the `id` from the
/// `step-up-required` problem and either a TOTP or recovery `code`, or a `passkey` assertion
/// (the result of `navigator.credentials.get()` with the problem's `step_up.passkey` options).
#[derive(Deserialize, ToSchema)]
#[serde(try_from = "StepUpWire")]
pub struct StepUpIn {
    pub id: String,
    #[schema(example = "123456")]
    pub code: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<serde_json::Value>,
}

/// A step-up answer as sent, checked for its shape whether or not the request needs one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepUpWire {
    id: String,
    code: Option<String>,
    passkey: Option<serde_json::Value>,
}

impl TryFrom<StepUpWire> for StepUpIn {
    type Error = &'static str;

    fn try_from(wire: StepUpWire) -> Result<StepUpIn, &'static str> {
        match (&wire.code, &wire.passkey) {
            (Some(_), None) | (None, Some(serde_json::Value::Object(_))) => Ok(StepUpIn {
                id: wire.id,
                code: wire.code,
                passkey: wire.passkey,
            }),
            (None, Some(_)) => Err("step_up.passkey is not a WebAuthn assertion"),
            _ => Err("step_up needs either code or passkey"),
        }
    }
}

impl StepUpIn {
    pub fn proof(&self) -> Result<koban_auth::StepUpProof, koban_auth::AuthError> {
        let answer = match (&self.code, &self.passkey) {
            (Some(code), None) => {
                koban_auth::StepUpAnswer::Code(koban_auth::Secret::new(code.clone()))
            }
            (None, Some(passkey)) => koban_auth::StepUpAnswer::Passkey(Box::new(
                serde_json::from_value(passkey.clone()).map_err(|_| {
                    koban_auth::AuthError::Invalid("step_up.passkey is not a WebAuthn assertion")
                })?,
            )),
            _ => {
                return Err(koban_auth::AuthError::Invalid(
                    "step_up needs either code or passkey",
                ));
            }
        };
        Ok(koban_auth::StepUpProof {
            id: self.id.clone(),
            answer,
        })
    }
}

pub fn proof(
    step_up: &Option<StepUpIn>,
) -> Result<Option<koban_auth::StepUpProof>, koban_auth::AuthError> {
    step_up.as_ref().map(StepUpIn::proof).transpose()
}

/// The start of a WebAuthn ceremony: pass `options` to `navigator.credentials.create()`
/// (registration) or `.get()` (authentication), then send the result with `ceremony_id`.
#[derive(Serialize, ToSchema)]
pub struct PasskeyStartOut {
    pub ceremony_id: String,
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    pub session: Option<SessionOut>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyFinishIn {
    pub ceremony_id: String,
    /// What the browser's WebAuthn call returned.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupIn {
    /// `customer` (the default) or `merchant`.
    pub kind: Option<String>,
    #[schema(example = "hanako@example.com")]
    pub email: String,
    /// 12 to 256 characters; not a common password; not containing your e-mail or name.
    pub password: String,
    pub display_name: String,
    pub legal_name: Option<String>,
    #[schema(example = "1990-04-01")]
    pub date_of_birth: Option<String>,
    #[schema(example = "+819012345678")]
    pub phone: Option<String>,
    /// The language of notice e-mails: `en` or `ja`. Without it, the best of the request's
    /// `Accept-Language`, else English.
    #[schema(example = "ja")]
    pub lang: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub status: &'static str,
    pub detail: &'static str,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailCodeIn {
    pub email: String,
    pub code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailIn {
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginIn {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeIn {
    /// A TOTP code or a recovery code.
    pub code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenIn {
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetIn {
    pub email: String,
    /// The code e-mailed to the address on file.
    pub code: String,
    /// A TOTP code or a recovery code.
    pub second_factor_code: String,
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolOperatorIn {
    pub token: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct StepUpOnlyIn {
    pub step_up: Option<StepUpIn>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeEmailIn {
    pub email: String,
    pub step_up: Option<StepUpIn>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePhoneIn {
    pub phone: String,
    pub step_up: Option<StepUpIn>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordIn {
    pub new_password: String,
    pub step_up: Option<StepUpIn>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyIn {
    pub name: String,
    /// `live` or `test`.
    pub environment: String,
    pub scopes: Vec<String>,
    pub step_up: Option<StepUpIn>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateApiKeyIn {
    /// Seconds the old key keeps working (at most 604800).
    pub overlap_s: Option<i64>,
    pub step_up: Option<StepUpIn>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOperatorIn {
    pub email: String,
    /// `admin`, `analyst`, `support` or `approver`.
    pub role: String,
    pub step_up: Option<StepUpIn>,
}

/// A session just issued. Browsers also get it as an HttpOnly cookie; API clients send
/// `Authorization: Bearer <token>`. Cookie-authenticated requests that change state must send
/// `X-CSRF-Token: <csrf_token>`.
#[derive(Serialize, ToSchema)]
pub struct SessionOut {
    pub token: String,
    pub csrf_token: String,
    /// `password` (a second factor is still needed) or `second_factor`.
    pub level: &'static str,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
}

pub fn level_name(level: SessionLevel) -> &'static str {
    match level {
        SessionLevel::Password => "password",
        SessionLevel::SecondFactor => "second_factor",
    }
}

impl From<&IssuedSession> for SessionOut {
    fn from(session: &IssuedSession) -> SessionOut {
        SessionOut {
            token: session.token.expose().clone(),
            csrf_token: session.csrf.expose().clone(),
            level: level_name(session.level),
            expires_at: session.expires_at_ms,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct LoginOut {
    pub session: SessionOut,
    /// What to do next: `second_factor` (POST /v1/login/second-factor) or `enrol_factor`
    /// (POST /v1/factors/totp).
    pub next: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct SessionOnlyOut {
    /// The new session: the one used for this request has ended.
    pub session: SessionOut,
}

#[derive(Serialize, ToSchema)]
pub struct FactorOut {
    pub id: String,
    pub kind: String,
    pub label: String,
    pub created_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct MeOut {
    pub id: String,
    pub kind: &'static str,
    pub role: Option<&'static str>,
    pub email: String,
    pub email_verified: bool,
    pub phone: Option<String>,
    pub display_name: String,
    pub legal_name: Option<String>,
    pub date_of_birth: Option<String>,
    pub status: String,
    /// While set, outgoing money is limited to `cooling_off_limit_minor`.
    pub cooling_off_until: Option<i64>,
    pub cooling_off_limit_minor: Option<i64>,
    pub factors: Vec<FactorOut>,
    pub recovery_codes_left: i64,
    /// Whether this session may move money (second factor done, e-mail verified).
    pub can_move_money: bool,
}

#[derive(Serialize, ToSchema)]
pub struct SessionInfoOut {
    pub id: String,
    pub current: bool,
    pub level: &'static str,
    pub network: String,
    pub user_agent: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct TotpEnrollmentOut {
    pub factor_id: String,
    /// Shown once: add it to an authenticator app.
    pub otpauth_uri: String,
    /// The same URI as an SVG QR code.
    pub qr_svg: String,
    pub session: Option<SessionOut>,
}

#[derive(Serialize, ToSchema)]
pub struct TotpConfirmedOut {
    /// Shown once, when this was the first factor.
    pub recovery_codes: Option<Vec<String>>,
    pub session: Option<SessionOut>,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodesOut {
    pub recovery_codes: Vec<String>,
    pub session: SessionOut,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyOut {
    pub id: String,
    pub name: String,
    pub environment: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl From<koban_auth::apikeys::ApiKeyView> for ApiKeyOut {
    fn from(v: koban_auth::apikeys::ApiKeyView) -> ApiKeyOut {
        ApiKeyOut {
            id: v.id,
            name: v.name,
            environment: v.environment,
            prefix: v.prefix,
            scopes: v.scopes,
            created_at: v.created_at_ms,
            expires_at: v.expires_at_ms,
            revoked_at: v.revoked_at_ms,
            last_used_at: v.last_used_at_ms,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedApiKeyOut {
    /// The key itself, shown this once. Send it as `Authorization: Bearer <key>`.
    pub key: String,
    pub api_key: ApiKeyOut,
    pub session: SessionOut,
}

#[derive(Serialize, ToSchema)]
pub struct WhoAmIOut {
    pub merchant_id: String,
    pub key_id: String,
    pub environment: &'static str,
    pub scopes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AlertOut {
    pub id: String,
    pub kind: String,
    pub minute: i64,
    pub observed: i64,
    pub baseline: i64,
    pub raised_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryRequestOut {
    pub id: String,
    pub user_id: String,
    pub status: String,
    pub created_at: i64,
    pub not_before: i64,
}

#[derive(Serialize, ToSchema)]
pub struct OperatorInviteOut {
    pub operator_id: String,
    /// Where the enrolment link was sent: only the new operator's mailbox holds it.
    pub sent_to: String,
    pub session: Option<SessionOut>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntryOut {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: serde_json::Value,
    /// Hex SHA-256 of this entry, chained to the previous one.
    pub hash: String,
}

#[derive(Serialize, ToSchema)]
pub struct MailOut {
    pub id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub delivered_at: i64,
}
