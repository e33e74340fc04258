//! Account pages: the start page, language choice, sign-up and verification, sign-in with a
//! second factor, enrolment of an authenticator app with recovery codes, sign-out, and the
//! development mailbox.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use koban_api::ApiState;
use koban_api::extract::{clear_session_cookies, with_cookies};
use koban_auth::{DisplayName, Email, NewSignup, Secret, SessionLevel, UserKind};
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::page::{
    Chrome, LANG_COOKIE, Page, Posted, explain_auth, see_other, set_cookie, with_retry_after,
};

#[derive(Template)]
#[template(path = "start.html")]
pub struct StartPage {
    pub c: Chrome,
}

/// The start page: signed in, the wallet; otherwise what Koban is, and the ways in.
pub async fn start<S: LedgerStore>(page: Page) -> Response {
    if page.full().is_ok() {
        return see_other("/home");
    }
    page.render(&StartPage {
        c: page.chrome("title-start"),
    })
}

#[derive(Deserialize)]
pub struct LangForm {
    lang: String,
    #[serde(default)]
    back: String,
}

/// Remembers the language chosen, then goes back to the page it was chosen on.
pub async fn set_lang<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Posted { page, form }: Posted<LangForm>,
) -> Response {
    let Some(lang) = crate::i18n::Lang::parse(&form.lang) else {
        return crate::page::refusal(&page, StatusCode::BAD_REQUEST, "error-form");
    };
    // A signed-in customer's notices follow the language of the pages.
    if let Some(me) = page
        .me
        .as_ref()
        .filter(|me| me.level == SessionLevel::SecondFactor)
        && let Err(error) = state.auth.set_lang(me, lang).await
    {
        let (status, text) = explain_auth(&page.tr, &error);
        return crate::page::message(&page, status, text, "/", "link-start");
    }
    let back = if local_path(&form.back) {
        form.back.as_str()
    } else {
        "/"
    };
    let mut response = see_other(back);
    let mut cookie = Cookie::new(LANG_COOKIE, lang.code());
    cookie.set_path("/");
    cookie.set_same_site(SameSite::Lax);
    cookie.set_http_only(true);
    cookie.set_secure(!page.dev);
    cookie.set_max_age(cookie::time::Duration::days(365));
    set_cookie(&mut response, cookie);
    response
}

/// A path of this site and nothing else: `/` then letters, digits, `/`, `_`, `.` and `-`, never
/// `//host` (browsers also drop tabs and newlines, so nothing outside the set is allowed).
pub fn local_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= 200
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'.' | b'-'))
}

// ------------------------------------------------------------------ sign-up

#[derive(Template)]
#[template(path = "signup.html")]
pub struct SignupPage {
    pub c: Chrome,
    pub display_name: String,
    pub email: String,
    /// The account is for a shop (a merchant's dashboard) rather than a wallet.
    pub merchant: bool,
}

pub async fn signup_page<S: LedgerStore>(page: Page) -> Response {
    page.render(&SignupPage {
        c: page.chrome("title-signup"),
        display_name: String::new(),
        email: String::new(),
        merchant: false,
    })
}

#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    /// `merchant` for a shop's account; anything else is a customer's wallet.
    #[serde(default)]
    kind: String,
}

pub async fn signup<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Posted { page, form }: Posted<SignupForm>,
) -> Response {
    let again = |page: &Page, field: &'static str, status: StatusCode, text: String| {
        page.render_status(
            status,
            &SignupPage {
                c: page.chrome("title-signup").with_error(Some(field), text),
                display_name: form.display_name.clone(),
                email: form.email.clone(),
                merchant: form.kind == "merchant",
            },
        )
    };
    let Ok(display_name) = DisplayName::parse(&form.display_name) else {
        return again(
            &page,
            "display_name",
            StatusCode::UNPROCESSABLE_ENTITY,
            page.tr.t("error-display-name"),
        );
    };
    let Ok(email) = Email::parse(&form.email) else {
        return again(
            &page,
            "email",
            StatusCode::UNPROCESSABLE_ENTITY,
            page.tr.t("error-email"),
        );
    };
    let signup = NewSignup {
        kind: if form.kind == "merchant" {
            UserKind::Merchant
        } else {
            UserKind::Customer
        },
        email: email.clone(),
        password: Secret::new(form.password.clone()),
        display_name,
        legal_name: None,
        date_of_birth: None,
        phone: None,
        lang: page.tr.lang(),
    };
    if let Err(error) = state.auth.signup(signup, &page.client).await {
        let (status, text) = explain_auth(&page.tr, &error);
        let field = match error {
            koban_auth::AuthError::Password(_) => "password",
            _ => "email",
        };
        return with_retry_after(again(&page, field, status, text), &error);
    }
    // The same answer whether or not the address was already used: no enumeration.
    let view = VerifyPage {
        c: page
            .chrome("title-verify")
            .with_notice(page.tr.t("signup-sent")),
        email: email.as_str().to_owned(),
    };
    page.render(&view)
}

#[derive(Template)]
#[template(path = "verify.html")]
pub struct VerifyPage {
    pub c: Chrome,
    pub email: String,
}

impl VerifyPage {
    /// The development mailbox of the address, in `--dev` only.
    pub fn mailbox_link(&self) -> Option<String> {
        self.c.dev.then(|| {
            format!(
                "/dev/mailbox?{}",
                serde_urlencoded::to_string([("to", self.email.as_str())]).unwrap_or_default()
            )
        })
    }
}

pub async fn verify_page<S: LedgerStore>(page: Page) -> Response {
    page.render(&VerifyPage {
        c: page.chrome("title-verify"),
        email: String::new(),
    })
}

#[derive(Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    code: String,
}

pub async fn verify<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Posted { page, form }: Posted<VerifyForm>,
) -> Response {
    let result = match Email::parse(&form.email) {
        Ok(email) => {
            state
                .auth
                .verify_email(
                    &email,
                    &Secret::new(form.code.trim().to_owned()),
                    &page.client,
                )
                .await
        }
        Err(_) => Err(koban_auth::AuthError::BadCredentials),
    };
    match result {
        Ok(()) => {
            let view = SigninPage {
                c: page
                    .chrome("title-signin")
                    .with_notice(page.tr.t("verify-done")),
                email: form.email.trim().to_owned(),
            };
            page.render(&view)
        }
        Err(error) => {
            let (status, text) = explain_auth(&page.tr, &error);
            let view = VerifyPage {
                c: page.chrome("title-verify").with_error(Some("code"), text),
                email: form.email,
            };
            with_retry_after(page.render_status(status, &view), &error)
        }
    }
}

// ------------------------------------------------------------------ sign-in

#[derive(Template)]
#[template(path = "signin.html")]
pub struct SigninPage {
    pub c: Chrome,
    pub email: String,
}

pub async fn signin_page<S: LedgerStore>(page: Page) -> Response {
    if page.full().is_ok() {
        return see_other("/home");
    }
    page.render(&SigninPage {
        c: page.chrome("title-signin"),
        email: String::new(),
    })
}

#[derive(Deserialize)]
pub struct SigninForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub async fn signin<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Posted { page, form }: Posted<SigninForm>,
) -> Response {
    let result = state
        .auth
        .login(&form.email, Secret::new(form.password), &page.client)
        .await;
    state.pay.score_login(&form.email, &page.client, &result);
    match result {
        Ok(outcome) => {
            // A session this browser already had ends: one browser, one session.
            if let Some(old) = &page.me
                && let Err(error) = state.auth.revoke_session(old, &old.session_id).await
            {
                tracing::warn!(%error, "an earlier session could not be ended");
            }
            let next = if outcome.has_factor {
                "/signin/code"
            } else {
                "/enrol"
            };
            with_cookies(see_other(next), Some(&outcome.session), page.dev)
        }
        Err(error) => {
            let (status, text) = explain_auth(&page.tr, &error);
            let view = SigninPage {
                c: page.chrome("title-signin").with_error(Some("email"), text),
                email: form.email,
            };
            with_retry_after(page.render_status(status, &view), &error)
        }
    }
}

#[derive(Template)]
#[template(path = "code.html")]
pub struct CodePage {
    pub c: Chrome,
}

/// The second step of signing in: a code from the authenticator app or a recovery code.
pub async fn code_page<S: LedgerStore>(page: Page) -> Response {
    match &page.me {
        Some(me) if me.level == SessionLevel::Password && me.has_factor => page.render(&CodePage {
            c: page.chrome("title-code"),
        }),
        _ => see_other("/signin"),
    }
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

pub async fn code<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Posted { page, form }: Posted<CodeForm>,
) -> Response {
    let Some(me) = &page.me else {
        return see_other("/signin");
    };
    let code = Secret::new(form.code.trim().replace(' ', ""));
    match state.auth.second_factor(me, &code, &page.client).await {
        Ok(session) => with_cookies(see_other("/home"), Some(&session), page.dev),
        Err(error) => {
            let (status, text) = explain_auth(&page.tr, &error);
            let text = match error {
                koban_auth::AuthError::BadCredentials => page.tr.t("error-code"),
                _ => text,
            };
            let view = CodePage {
                c: page.chrome("title-code").with_error(Some("code"), text),
            };
            with_retry_after(page.render_status(status, &view), &error)
        }
    }
}

pub async fn signout<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Posted { page, .. }: Posted<Empty>,
) -> Response {
    if let Some(me) = &page.me
        && let Err(error) = state.auth.revoke_session(me, &me.session_id).await
    {
        tracing::warn!(%error, "a session could not be ended");
    }
    clear_session_cookies(see_other("/"))
}

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub struct Empty {}

// ------------------------------------------------------------------ enrolment

#[derive(Template)]
#[template(path = "enrol.html")]
pub struct EnrolPage {
    pub c: Chrome,
}

/// After the first sign-in: why a second factor, and the button that starts enrolment.
pub async fn enrol_page<S: LedgerStore>(page: Page) -> Response {
    match &page.me {
        Some(me) if !me.has_factor => page.render(&EnrolPage {
            c: page.chrome("title-enrol"),
        }),
        Some(_) => see_other("/home"),
        None => see_other("/signin"),
    }
}

#[derive(Template)]
#[template(path = "totp.html")]
pub struct TotpPage {
    pub c: Chrome,
    pub factor_id: String,
    /// The QR code as a `data:` image, shown only right after enrolment starts.
    pub qr: Option<String>,
    /// The key to type in by hand when the camera cannot be used.
    pub setup_key: Option<String>,
    /// Added from the security centre to an account that has a factor (rather than the
    /// first factor right after sign-up): starting again goes through the centre.
    pub further: bool,
}

impl TotpPage {
    /// The page right after enrolment starts: the QR code and the key to type in.
    pub fn started(c: Chrome, enrolment: &koban_auth::TotpEnrollment, further: bool) -> TotpPage {
        let qr = crate::page::data_url("image/svg+xml", enrolment.qr_svg.expose().as_bytes());
        let key = enrolment
            .otpauth_uri
            .expose()
            .split_once("secret=")
            .map(|(_, rest)| rest.split('&').next().unwrap_or("").to_owned());
        TotpPage {
            c,
            factor_id: enrolment.factor_id.clone(),
            qr: Some(qr),
            setup_key: key,
            further,
        }
    }
}

pub async fn totp_begin<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Posted { mut page, .. }: Posted<Empty>,
) -> Response {
    let Some(me) = page.me.clone() else {
        return see_other("/signin");
    };
    match state.auth.totp_begin(&me, None, &page.client).await {
        Ok(enrolment) => {
            if let Some(session) = &enrolment.session {
                page.rotated(session);
            }
            let view = TotpPage::started(page.chrome("title-totp"), &enrolment, false);
            with_cookies(page.render(&view), enrolment.session.as_ref(), page.dev)
        }
        Err(error) => {
            let (status, text) = explain_auth(&page.tr, &error);
            let view = EnrolPage {
                c: page.chrome("title-enrol").with_error(None, text),
            };
            page.render_status(status, &view)
        }
    }
}

#[derive(Template)]
#[template(path = "recovery.html")]
pub struct RecoveryPage {
    pub c: Chrome,
    pub codes: Vec<String>,
}

impl RecoveryPage {
    /// The codes as a text file to download, without script.
    pub fn download(&self) -> String {
        let text = format!("Koban recovery codes\n\n{}\n", self.codes.join("\n"));
        crate::page::data_url("text/plain;charset=utf-8", text.as_bytes())
    }
}

#[derive(Deserialize)]
pub struct TotpConfirmForm {
    #[serde(default)]
    factor_id: String,
    #[serde(default)]
    code: String,
}

pub async fn totp_confirm<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Posted { mut page, form }: Posted<TotpConfirmForm>,
) -> Response {
    let Some(me) = page.me.clone() else {
        return see_other("/signin");
    };
    let code = Secret::new(form.code.trim().replace(' ', ""));
    match state
        .auth
        .totp_confirm(&me, &form.factor_id, &code, &page.client)
        .await
    {
        Ok(enrolled) => {
            if let Some(session) = &enrolled.session {
                page.rotated(session);
            }
            let Some(codes) = enrolled.recovery_codes.as_ref() else {
                // A further factor: the recovery codes stay as they were.
                return crate::security::centre_with_notice(
                    &state,
                    &page,
                    &me,
                    "factor-totp-added",
                )
                .await;
            };
            let view = RecoveryPage {
                c: page.chrome("title-recovery"),
                codes: codes.iter().map(|c| c.expose().clone()).collect(),
            };
            with_cookies(page.render(&view), enrolled.session.as_ref(), page.dev)
        }
        Err(error) => {
            let (status, text) = explain_auth(&page.tr, &error);
            let text = match error {
                koban_auth::AuthError::BadCredentials => page.tr.t("error-code"),
                _ => text,
            };
            let view = TotpPage {
                c: page.chrome("title-totp").with_error(Some("code"), text),
                factor_id: form.factor_id,
                qr: None,
                setup_key: None,
                further: me.has_factor,
            };
            with_retry_after(page.render_status(status, &view), &error)
        }
    }
}

// ------------------------------------------------------------------ development mailbox

#[derive(Template)]
#[template(path = "mailbox.html")]
pub struct MailboxPage {
    pub c: Chrome,
    pub to: String,
    pub messages: Vec<(String, String)>,
}

#[derive(Deserialize)]
pub struct MailboxQuery {
    #[serde(default)]
    to: String,
}

/// `--dev` only: the messages the local mailbox holds for an address.
pub async fn mailbox<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    page: Page,
    Query(query): Query<MailboxQuery>,
) -> Response {
    if !state.config.dev {
        return StatusCode::NOT_FOUND.into_response();
    }
    let messages = if query.to.is_empty() {
        Vec::new()
    } else {
        match state.auth.mailbox(&query.to, 50).await {
            Ok(mail) => mail.into_iter().map(|m| (m.subject, m.body)).collect(),
            Err(error) => {
                let (status, _) = explain_auth(&page.tr, &error);
                return crate::page::refusal(&page, status, "error-internal");
            }
        }
    };
    page.render(&MailboxPage {
        c: page.chrome("title-mailbox"),
        to: query.to,
        messages,
    })
}
