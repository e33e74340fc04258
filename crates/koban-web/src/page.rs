//! What every page shares: the visitor (language, session, client), CSRF protection of every
//! form, the layout's context, rendering, and errors as sentences in the visitor's language.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use koban_api::ApiState;
use koban_api::extract::{ClientInfo, SESSION_COOKIE, cookie_value};
use koban_auth::apikeys::MerchantKey;
use koban_auth::{AuthError, Principal, SessionLevel, UserKind};
use koban_pay::PayError;
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::i18n::{Lang, Tr};

/// The remembered language choice.
pub const LANG_COOKIE: &str = "koban_lang";
/// The anti-CSRF value of a visitor without a session (double submit: cookie and form field).
pub const FORM_COOKIE: &str = "koban_form";

/// The visitor of a page: language, client, and session if any.
pub struct Page {
    pub tr: Tr,
    pub client: koban_auth::Client,
    /// The session cookie's token, when one came.
    pub token: Option<String>,
    /// The signed-in principal, at any level, when the session is live.
    pub me: Option<Principal>,
    /// The value every form of this page carries in its `csrf` field.
    pub csrf: String,
    /// A new form cookie to set with this answer.
    new_form_cookie: Option<String>,
    pub dev: bool,
    back: String,
}

impl<S: LedgerStore> FromRequestParts<ApiState<S>> for Page {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState<S>) -> Result<Page, Response> {
        let chosen = cookie_value(&parts.headers, LANG_COOKIE);
        let accept = parts
            .headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        let tr = Tr::new(Lang::negotiate(chosen, accept));
        let ClientInfo(client) = ClientInfo::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let back = if parts.method == axum::http::Method::GET {
            parts.uri.path().to_owned()
        } else {
            "/".to_owned()
        };
        let token = cookie_value(&parts.headers, SESSION_COOKIE).map(str::to_owned);
        let me = match &token {
            Some(token) => match state.auth.authenticate(token).await {
                Ok(me) => Some(me),
                Err(AuthError::Store(error)) => {
                    tracing::warn!(%error, "a page's session could not be read");
                    None
                }
                Err(_) => None,
            },
            None => None,
        };
        let (csrf, new_form_cookie) = match (&token, &me) {
            (Some(token), Some(_)) => (state.auth.csrf_for(token).expose().clone(), None),
            _ => match cookie_value(&parts.headers, FORM_COOKIE) {
                Some(value) if value.starts_with("kbf_") => (value.to_owned(), None),
                _ => {
                    let value = koban_auth::secret::random_token("kbf_").expose().clone();
                    (value.clone(), Some(value))
                }
            },
        };
        Ok(Page {
            tr,
            client,
            token,
            me,
            csrf,
            new_form_cookie,
            dev: state.config.dev,
            back,
        })
    }
}

impl Page {
    /// The principal of a session that passed its second factor, else where to go instead.
    pub fn full(&self) -> Result<&Principal, Redirect> {
        match &self.me {
            Some(me) if me.level == SessionLevel::SecondFactor => Ok(me),
            Some(me) if me.has_factor => Err(Redirect::to("/signin/code")),
            Some(_) => Err(Redirect::to("/enrol")),
            None => Err(Redirect::to("/signin")),
        }
    }

    /// After a step that replaced the session (step-up, enrolment): forms on the answer carry
    /// the new session's token.
    pub fn rotated(&mut self, session: &koban_auth::IssuedSession) {
        self.csrf = session.csrf.expose().clone();
        self.token = Some(session.token.expose().clone());
    }

    /// The layout's context for a page titled by the message `title`.
    pub fn chrome(&self, title: &str) -> Chrome {
        Chrome {
            tr: self.tr,
            title: self.tr.t(title),
            csrf: self.csrf.clone(),
            signed_in: self
                .me
                .as_ref()
                .is_some_and(|me| me.level == SessionLevel::SecondFactor),
            merchant: self
                .me
                .as_ref()
                .is_some_and(|me| me.kind == UserKind::Merchant),
            operator: self
                .me
                .as_ref()
                .is_some_and(|me| me.kind == UserKind::Operator),
            dev: self.dev,
            back: self.back.clone(),
            errors: Vec::new(),
            notice: None,
        }
    }

    /// A rendered page with status 200.
    pub fn render<T: Template>(&self, page: &T) -> Response {
        self.render_status(StatusCode::OK, page)
    }

    pub fn render_status<T: Template>(&self, status: StatusCode, page: &T) -> Response {
        let mut response = match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(error) => {
                tracing::error!(%error, "a page could not be rendered");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Html(self.tr.t("error-internal")),
                )
                    .into_response()
            }
        };
        if let Some(value) = &self.new_form_cookie {
            let mut cookie = Cookie::new(FORM_COOKIE, value.clone());
            cookie.set_http_only(true);
            cookie.set_secure(!self.dev);
            cookie.set_same_site(SameSite::Strict);
            cookie.set_path("/");
            set_cookie(&mut response, cookie);
        }
        response
    }

    fn csrf_ok<S: LedgerStore>(&self, presented: &str, state: &ApiState<S>) -> bool {
        match (&self.token, &self.me) {
            (Some(token), Some(_)) => state.auth.csrf_matches(token, presented),
            // A new form cookie was made for this very request: nothing can match it yet.
            _ => {
                self.new_form_cookie.is_none()
                    && koban_auth::secret::constant_time_eq(
                        self.csrf.as_bytes(),
                        presented.as_bytes(),
                    )
            }
        }
    }
}

pub fn set_cookie(response: &mut Response, cookie: Cookie<'_>) {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

#[derive(Deserialize, Default)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// A form POST from one of Koban's own pages: the CSRF field matched, and the fields parsed.
pub struct Posted<T> {
    pub page: Page,
    pub form: T,
}

/// The most a page's form may send, in bytes (a candidate rules file is the largest form).
pub const FORM_BYTES_MAX: usize = 64 * 1024;

impl<S: LedgerStore, T: serde::de::DeserializeOwned> FromRequest<ApiState<S>> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ApiState<S>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let page = Page::from_request_parts(&mut parts, state).await?;
        // A browser says where a request comes from; a form sent from another site is refused
        // even before the token is compared.
        let cross_site = parts
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|site| site == "cross-site" || site == "same-site");
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|_| refusal(&page, StatusCode::PAYLOAD_TOO_LARGE, "error-form"))?;
        if bytes.len() > FORM_BYTES_MAX {
            return Err(refusal(&page, StatusCode::PAYLOAD_TOO_LARGE, "error-form"));
        }
        let csrf: CsrfOnly = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        if cross_site || !page.csrf_ok(&csrf.csrf, state) {
            return Err(refusal(&page, StatusCode::FORBIDDEN, "error-csrf"));
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| refusal(&page, StatusCode::BAD_REQUEST, "error-form"))?;
        Ok(Posted { page, form })
    }
}

/// A visitor whose session passed its second factor. Anyone else is sent where they belong
/// (to sign in, to the second step, or to enrol a factor) before the handler runs.
pub struct SignedIn {
    pub page: Page,
    pub me: Principal,
}

impl<S: LedgerStore> FromRequestParts<ApiState<S>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState<S>,
    ) -> Result<SignedIn, Response> {
        let page = Page::from_request_parts(parts, state).await?;
        let me = page.full().map_err(IntoResponse::into_response)?.clone();
        Ok(SignedIn { page, me })
    }
}

/// A form from a signed-in customer: [`Posted`] and [`SignedIn`] together.
pub struct SignedForm<T> {
    pub page: Page,
    pub me: Principal,
    pub form: T,
}

impl<S: LedgerStore, T: serde::de::DeserializeOwned> FromRequest<ApiState<S>> for SignedForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ApiState<S>) -> Result<Self, Response> {
        let Posted { page, form } = Posted::from_request(request, state).await?;
        let me = page.full().map_err(IntoResponse::into_response)?.clone();
        Ok(SignedForm { page, me, form })
    }
}

/// A merchant signed in to its dashboard: [`SignedIn`] for a merchant account, with the key the
/// merchant operations take. Anyone else is sent to their own home.
pub struct MerchantIn {
    pub page: Page,
    pub me: Principal,
    pub merchant: MerchantKey,
}

impl<S: LedgerStore> FromRequestParts<ApiState<S>> for MerchantIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState<S>) -> Result<Self, Response> {
        let SignedIn { page, me } = SignedIn::from_request_parts(parts, state).await?;
        let merchant = MerchantKey::for_session(&me).map_err(|_| see_other("/home"))?;
        Ok(MerchantIn { page, me, merchant })
    }
}

/// A form from a merchant's dashboard: [`Posted`] and [`MerchantIn`] together.
pub struct MerchantForm<T> {
    pub page: Page,
    pub merchant: MerchantKey,
    pub form: T,
}

impl<S: LedgerStore, T: serde::de::DeserializeOwned> FromRequest<ApiState<S>> for MerchantForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ApiState<S>) -> Result<Self, Response> {
        let Posted { page, form } = Posted::from_request(request, state).await?;
        let me = page.full().map_err(IntoResponse::into_response)?;
        let merchant = MerchantKey::for_session(me).map_err(|_| see_other("/home"))?;
        Ok(MerchantForm {
            page,
            merchant,
            form,
        })
    }
}

/// An operator signed in to the console: [`SignedIn`] for an operator account (which role may
/// do what is the domain's to check). Anyone else is sent to their own home.
pub struct OperatorIn {
    pub page: Page,
    pub me: Principal,
}

impl<S: LedgerStore> FromRequestParts<ApiState<S>> for OperatorIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState<S>) -> Result<Self, Response> {
        let SignedIn { page, me } = SignedIn::from_request_parts(parts, state).await?;
        if me.kind != UserKind::Operator {
            return Err(see_other("/home"));
        }
        Ok(OperatorIn { page, me })
    }
}

/// A form from the console: [`Posted`] and [`OperatorIn`] together.
pub struct OperatorForm<T> {
    pub page: Page,
    pub me: Principal,
    pub form: T,
}

impl<S: LedgerStore, T: serde::de::DeserializeOwned> FromRequest<ApiState<S>> for OperatorForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ApiState<S>) -> Result<Self, Response> {
        let SignedForm { page, me, form } = SignedForm::from_request(request, state).await?;
        if me.kind != UserKind::Operator {
            return Err(see_other("/home"));
        }
        Ok(OperatorForm { page, me, form })
    }
}

/// A page that only says what went wrong, with a way back.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub c: Chrome,
    pub text: String,
    pub link: &'static str,
    pub link_text: String,
}

pub fn refusal(page: &Page, status: StatusCode, message: &str) -> Response {
    let view = MessagePage {
        c: page.chrome("title-problem"),
        text: page.tr.t(message),
        link: "/",
        link_text: page.tr.t("link-start"),
    };
    page.render_status(status, &view)
}

/// A message on a page, tied to a field when it is about one.
#[derive(Clone, Debug)]
pub struct FieldError {
    /// The `id` of the field it is about; the error summary links to it.
    pub field: Option<&'static str>,
    pub text: String,
}

/// The layout's context, the same on every page.
pub struct Chrome {
    pub tr: Tr,
    pub title: String,
    pub csrf: String,
    pub signed_in: bool,
    /// A merchant's session: the dashboard's navigation rather than the wallet's.
    pub merchant: bool,
    /// An operator's session: the console's navigation.
    pub operator: bool,
    pub dev: bool,
    /// Where the language switch returns to: this page, when a GET can show it again.
    pub back: String,
    pub errors: Vec<FieldError>,
    /// A confirmation shown above the page (not an error).
    pub notice: Option<String>,
}

impl Chrome {
    pub fn t(&self, key: &str) -> String {
        self.tr.t(key)
    }

    /// The message `key` with one argument.
    pub fn t1(&self, key: &str, name: &str, value: &str) -> String {
        self.tr.with(key, &[(name, value)])
    }

    pub fn lang(&self) -> &'static str {
        self.tr.lang().code()
    }

    /// The error about `field`, if any.
    pub fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == Some(field))
            .map(|e| e.text.as_str())
    }

    /// `aria-describedby` and `aria-invalid` of a field with an error.
    pub fn invalid(&self, field: &str) -> bool {
        self.error_for(field).is_some()
    }

    pub fn with_error(mut self, field: Option<&'static str>, text: String) -> Chrome {
        self.errors.push(FieldError { field, text });
        self
    }

    pub fn with_notice(mut self, text: String) -> Chrome {
        self.notice = Some(text);
        self
    }
}

/// A refusal as a sentence in the visitor's language, and the HTTP status that goes with it.
pub fn explain(tr: &Tr, error: &PayError) -> (StatusCode, String) {
    use StatusCode as S;
    match error {
        PayError::Auth(auth) => explain_auth(tr, auth),
        PayError::Invalid(detail) => (S::UNPROCESSABLE_ENTITY, invalid(tr, detail)),
        PayError::NotFound => (S::NOT_FOUND, tr.t("error-not-found")),
        PayError::InsufficientFunds => (S::UNPROCESSABLE_ENTITY, tr.t("error-insufficient-funds")),
        PayError::Limit { code, .. } => (
            S::UNPROCESSABLE_ENTITY,
            tr.t(match *code {
                "daily_limit" => "error-daily-limit",
                "balance_limit" => "error-balance-limit",
                "new_source_limit" => "error-new-source-limit",
                "verification_required" => "error-verification-required",
                _ => "error-limit",
            }),
        ),
        PayError::Declined { .. } => (S::UNPROCESSABLE_ENTITY, tr.t("error-declined")),
        PayError::Conflict(detail) => (S::CONFLICT, invalid(tr, detail)),
        PayError::IdempotencyMismatch | PayError::InFlight => {
            (S::CONFLICT, tr.t("error-in-flight"))
        }
        PayError::Gone(_) => (S::GONE, tr.t("error-gone")),
        PayError::Frozen => (S::FORBIDDEN, tr.t("error-frozen")),
        PayError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, tr.t("error-unavailable")),
        PayError::ChallengeRequired { .. } | PayError::RulesInvalid(_) => {
            (S::UNPROCESSABLE_ENTITY, tr.t("error-internal"))
        }
    }
}

/// A domain's own validation message: in English as written; in Japanese a general sentence
/// followed by the English detail, which names the field and the rule.
fn invalid(tr: &Tr, detail: &str) -> String {
    match tr.lang() {
        Lang::En => capitalised(detail),
        Lang::Ja => format!("{} ({detail})", tr.t("error-invalid")),
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

pub fn explain_auth(tr: &Tr, error: &AuthError) -> (StatusCode, String) {
    use StatusCode as S;
    match error {
        AuthError::Invalid(detail) => (S::UNPROCESSABLE_ENTITY, invalid(tr, detail)),
        AuthError::Password(rejection) => (
            S::UNPROCESSABLE_ENTITY,
            tr.t(match rejection {
                koban_auth::PasswordRejection::TooShort => "error-password-short",
                koban_auth::PasswordRejection::TooLong => "error-password-long",
                koban_auth::PasswordRejection::Common => "error-password-common",
                koban_auth::PasswordRejection::ContainsPersonalData => "error-password-personal",
            }),
        ),
        AuthError::BadCredentials => (S::UNAUTHORIZED, tr.t("error-bad-credentials")),
        AuthError::CodeReused => (S::UNAUTHORIZED, tr.t("error-code-reused")),
        AuthError::Throttled { retry_after_s } => (
            S::TOO_MANY_REQUESTS,
            tr.with(
                "error-throttled",
                &[("seconds", &retry_after_s.to_string())],
            ),
        ),
        AuthError::Busy | AuthError::Store(koban_store::StoreError::Busy) => {
            (S::SERVICE_UNAVAILABLE, tr.t("error-busy"))
        }
        AuthError::Unauthenticated => (S::UNAUTHORIZED, tr.t("error-signed-out")),
        AuthError::SecondFactorRequired | AuthError::EnrolmentRequired => {
            (S::FORBIDDEN, tr.t("error-second-factor"))
        }
        AuthError::EmailNotVerified => (S::FORBIDDEN, tr.t("error-email-not-verified")),
        // Why, in the visitor's language, where the domain's reason is one people meet on
        // the pages; otherwise a general sentence.
        AuthError::Forbidden(detail) => (
            S::FORBIDDEN,
            tr.t(match *detail {
                "a second operator must approve what you requested" => "error-forbidden-own",
                "an operator cannot approve a request about their own account" => {
                    "error-forbidden-own-account"
                }
                "this needs an operator with another role" => "error-forbidden-role",
                "an operator who invited the requester, or whom the requester invited, cannot approve it" => {
                    "error-forbidden-invited"
                }
                _ => "error-forbidden",
            }),
        ),
        AuthError::StepUpRequired(_) | AuthError::StepUpInvalid => {
            (S::FORBIDDEN, tr.t("error-step-up-invalid"))
        }
        AuthError::NotFound => (S::NOT_FOUND, tr.t("error-not-found")),
        AuthError::Conflict(detail) => (S::CONFLICT, invalid(tr, detail)),
        AuthError::PasskeyRefused(_) => (S::UNPROCESSABLE_ENTITY, tr.t("error-passkey-refused")),
        AuthError::Frozen => (S::FORBIDDEN, tr.t("error-frozen")),
        AuthError::Internal(_) | AuthError::Store(_) => {
            tracing::error!(error = ?error, "a page's request failed");
            (S::INTERNAL_SERVER_ERROR, tr.t("error-internal"))
        }
    }
}

/// `Retry-After` on a throttled answer.
pub fn with_retry_after(mut response: Response, error: &AuthError) -> Response {
    if let AuthError::Throttled { retry_after_s } = error {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
    }
    response
}

/// The currency of the wallets the pages show (the first one configured).
pub fn wallet_currency<S: koban_store::LedgerStore>(
    pay: &koban_pay::Payments<S>,
) -> koban_ledger::Currency {
    pay.config().currencies[0]
}

/// A ledger timestamp in milliseconds since the epoch.
pub fn millis(at: koban_ledger::Timestamp) -> i64 {
    i64::try_from(at.nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A page that only says what went wrong, with a link back to `link` labelled by the message
/// `link_text`.
pub fn message(
    page: &Page,
    status: StatusCode,
    text: String,
    link: &'static str,
    link_text: &str,
) -> Response {
    let view = MessagePage {
        c: page.chrome("title-problem"),
        text,
        link,
        link_text: page.tr.t(link_text),
    };
    page.render_status(status, &view)
}

/// A `data:` URL holding `bytes` of media type `kind` (QR codes, barcodes, a text file to
/// download), so a page shows or offers them without a second request.
pub fn data_url(kind: &str, bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        "data:{kind};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A redirect after a form was handled (303: the browser follows with a GET).
pub fn see_other(path: &str) -> Response {
    Redirect::to(path).into_response()
}

/// An id as Koban makes them (a UUID's text, or a prefix and hex like `card_01a2...`): anything else is not put into a page or an
/// address, where it could become part of a form's target or a redirect.
pub fn plain_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A full-width digit (as a Japanese input method types it) as its ASCII twin.
pub fn half_width_digit(c: char) -> Option<char> {
    char::from_u32(u32::from(c).checked_sub(u32::from('０'))? + u32::from('0'))
        .filter(char::is_ascii_digit)
}

/// The principal of the session a step-up replaced: the same person, on the new session
/// (no need to read it back from the database).
pub fn on_session(me: Principal, session: &koban_auth::IssuedSession) -> Principal {
    Principal {
        session_id: session.session_id.clone(),
        level: session.level,
        ..me
    }
}

/// A phone number as people type it, in E.164: spaces, hyphens, dots and brackets dropped,
/// full-width digits read as digits, and a domestic number (leading 0) read as Japanese
/// (`090-1234-5678` is `+819012345678`). Anything else is passed on for the domain to judge.
pub fn normalize_phone(text: &str) -> String {
    let kept: String = text
        .trim()
        .chars()
        .filter_map(|c| match c {
            '０'..='９' => crate::page::half_width_digit(c),
            '＋' => Some('+'),
            ' ' | '-' | '.' | '(' | ')' | '\u{3000}' | 'ー' | '－' => None,
            c => Some(c),
        })
        .collect();
    match kept.strip_prefix('0') {
        Some(rest) if !rest.starts_with('0') && rest.bytes().all(|b| b.is_ascii_digit()) => {
            format!("+81{rest}")
        }
        _ => kept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_read_as_people_type_them() {
        assert_eq!(normalize_phone("090-1234-5678"), "+819012345678");
        assert_eq!(normalize_phone("+81 90 1234 5678"), "+819012345678");
        assert_eq!(
            normalize_phone("０９０ー１２３４ー５６７８"),
            "+819012345678"
        );
        assert_eq!(normalize_phone("+1 (415) 555-0100"), "+14155550100");
        assert_eq!(
            normalize_phone("0012345"),
            "0012345",
            "an international prefix is not guessed"
        );
        assert_eq!(
            normalize_phone("not a number"),
            "notanumber",
            "left for the domain to refuse"
        );
    }

    #[test]
    fn only_plain_ids_reach_addresses() {
        assert!(plain_id("card_01a2494a75f6721e94d0b1fcdc826f6e"));
        assert!(plain_id("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"));
        assert!(!plain_id("../../signout"));
        assert!(!plain_id(""));
        assert!(!plain_id("a\r\nb"));
    }
}
