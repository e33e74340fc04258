//! The security centre: where the customer is signed in (and signing a device out), the
//! factors that protect the account.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use koban_api::ApiState;
use koban_api::extract::with_cookies;
use koban_pay::PayError;
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::account::Empty;
use crate::page::{Chrome, Page, SignedForm, SignedIn, explain_auth, see_other, with_retry_after};
use crate::stepup::{Answer, Guarded, Stepped, with_step_up};

pub struct SessionLine {
    pub id: String,
    pub current: bool,
    pub device: String,
    pub network: String,
    pub last_seen: String,
}

pub struct FactorLine {
    pub id: String,
    pub kind: String,
    pub label: String,
    pub added: String,
}

pub struct NoticeLine {
    pub subject: String,
    pub when: String,
    pub delivered: bool,
}

#[derive(Template)]
#[template(path = "security.html")]
pub struct SecurityPage {
    pub c: Chrome,
    pub sessions: Vec<SessionLine>,
    pub factors: Vec<FactorLine>,
    pub recovery_codes_left: i64,
    pub email: String,
    pub phone: Option<String>,
    /// When a contact or factor change limits outgoing money, until when.
    pub cooling_off_until: Option<String>,
    pub notices: Vec<NoticeLine>,
    pub new_email: String,
    pub new_phone: String,
}

/// Notices listed in the security centre.
const NOTICES_SHOWN: i64 = 20;

pub(crate) async fn centre_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &koban_auth::Principal,
    c: Chrome,
) -> Result<SecurityPage, koban_auth::AuthError> {
    let tr = page.tr;
    let sessions = state.auth.sessions(me).await?;
    let user = state.auth.me(me).await?;
    let notices = state.auth.notices(me, NOTICES_SHOWN).await?;
    let now = state.auth.now_ms();
    Ok(SecurityPage {
        c,
        sessions: sessions
            .into_iter()
            .map(|s| SessionLine {
                current: s.id == me.session_id,
                id: s.id,
                device: s.user_agent,
                network: s.network,
                last_seen: tr.datetime(s.last_seen_at_ms),
            })
            .collect(),
        factors: user
            .factors
            .into_iter()
            .map(|f| FactorLine {
                id: f.id,
                kind: tr.t(match f.kind.as_str() {
                    "totp" => "factor-totp",
                    "passkey" => "factor-passkey",
                    _ => "factor-other",
                }),
                // An authenticator app's stored label is the kind again, in English: the
                // translated kind says it.
                label: if f.kind == "totp" {
                    String::new()
                } else {
                    f.label
                },
                added: tr.date(f.created_at_ms),
            })
            .collect(),
        recovery_codes_left: user.recovery_codes_left,
        email: user.email,
        phone: user.phone,
        cooling_off_until: user
            .cooling_off_until_ms
            .filter(|until| *until > now)
            .map(|until| tr.datetime(until)),
        notices: notices
            .into_iter()
            .map(|n| NoticeLine {
                subject: n.subject,
                when: tr.datetime(n.created_at_ms),
                delivered: n.delivered,
            })
            .collect(),
        new_email: String::new(),
        new_phone: String::new(),
    })
}

pub async fn centre<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedIn { page, me }: SignedIn,
) -> Response {
    match centre_view(&state, &page, &me, page.chrome("title-security")).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

/// The security centre with a line saying what was just done.
pub(crate) async fn centre_with_notice<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &koban_auth::Principal,
    notice: &str,
) -> Response {
    let c = page.chrome("title-security").with_notice(page.tr.t(notice));
    match centre_view(state, page, me, c).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(page, &error),
    }
}

fn failure(page: &Page, error: &koban_auth::AuthError) -> Response {
    let (status, text) = explain_auth(&page.tr, error);
    crate::page::message(page, status, text, "/security", "link-security")
}

#[derive(Deserialize)]
pub struct ContactForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(flatten)]
    answer: Answer,
}

#[derive(Template)]
#[template(path = "email_confirm.html")]
pub struct EmailConfirmPage {
    pub c: Chrome,
    pub email: String,
}

/// Starts changing the e-mail address (step-up); a code goes to the new address.
pub async fn change_email<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { mut page, me, form }: SignedForm<ContactForm>,
) -> Response {
    let Ok(email) = koban_auth::Email::parse(&form.email) else {
        let text = page.tr.t("error-email");
        return contact_error(&state, &page, &me, "new_email", text, &form).await;
    };
    let guarded = Guarded {
        action: "/security/email".into(),
        summary: page.tr.with("step-up-email", &[("email", email.as_str())]),
        fields: vec![("email", form.email.clone())],
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (auth, me, email, client) = (&state.auth, &me, &email, &page.client);
        async move {
            auth.change_email_begin(me, email, proof.as_ref(), client)
                .await
                .map_err(PayError::Auth)
        }
    })
    .await;
    match done {
        Ok(Stepped::Done(session)) => {
            page.rotated(&session);
            let view = EmailConfirmPage {
                c: page.chrome("title-email-confirm"),
                email: email.as_str().to_owned(),
            };
            with_cookies(page.render(&view), Some(&session), page.dev)
        }
        Ok(Stepped::Page(response)) => response,
        Err(error) => {
            let text = crate::page::explain(&page.tr, &error).1;
            contact_error(&state, &page, &me, "new_email", text, &form).await
        }
    }
}

#[derive(Deserialize)]
pub struct EmailCodeForm {
    #[serde(default)]
    code: String,
}

/// Finishes the e-mail change with the code the new address received.
pub async fn confirm_email<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<EmailCodeForm>,
) -> Response {
    let code = koban_auth::Secret::new(form.code.trim().to_owned());
    match state
        .auth
        .change_email_confirm(&me, &code, &page.client)
        .await
    {
        Ok(()) => {
            let c = page
                .chrome("title-security")
                .with_notice(page.tr.t("email-changed"));
            match centre_view(&state, &page, &me, c).await {
                Ok(view) => page.render(&view),
                Err(error) => failure(&page, &error),
            }
        }
        Err(error) => {
            let (status, text) = explain_auth(&page.tr, &error);
            let view = EmailConfirmPage {
                c: page
                    .chrome("title-email-confirm")
                    .with_error(Some("code"), text),
                email: String::new(),
            };
            with_retry_after(page.render_status(status, &view), &error)
        }
    }
}

/// Changes the phone number (step-up; the e-mail address on file is told).
pub async fn change_phone<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { mut page, me, form }: SignedForm<ContactForm>,
) -> Response {
    let Ok(phone) = koban_auth::Phone::parse(&crate::page::normalize_phone(&form.phone)) else {
        let text = page.tr.t("error-phone");
        return contact_error(&state, &page, &me, "new_phone", text, &form).await;
    };
    let guarded = Guarded {
        action: "/security/phone".into(),
        summary: page.tr.with("step-up-phone", &[("phone", phone.as_str())]),
        fields: vec![("phone", form.phone.clone())],
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (auth, me, phone, client) = (&state.auth, &me, &phone, &page.client);
        async move {
            auth.change_phone(me, phone, proof.as_ref(), client)
                .await
                .map_err(PayError::Auth)
        }
    })
    .await;
    match done {
        Ok(Stepped::Done(session)) => {
            page.rotated(&session);
            let c = page
                .chrome("title-security")
                .with_notice(page.tr.t("phone-changed"));
            let me = crate::page::on_session(me, &session);
            match centre_view(&state, &page, &me, c).await {
                Ok(view) => with_cookies(page.render(&view), Some(&session), page.dev),
                Err(error) => failure(&page, &error),
            }
        }
        Ok(Stepped::Page(response)) => response,
        Err(error) => {
            let text = crate::page::explain(&page.tr, &error).1;
            contact_error(&state, &page, &me, "new_phone", text, &form).await
        }
    }
}

#[derive(Deserialize)]
pub struct CodeGuardedForm {
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    code: String,
}

/// Runs a step-up-guarded change whose form asks for the code up front (so a new password is
/// never carried through a second page): the first call asks the domain for its challenge,
/// the second answers it with the code given.
async fn with_code_given<T, F, Fut>(code: &str, act: F) -> Result<T, koban_auth::AuthError>
where
    F: Fn(Option<koban_auth::StepUpProof>) -> Fut,
    Fut: Future<Output = Result<T, koban_auth::AuthError>>,
{
    match act(None).await {
        Err(koban_auth::AuthError::StepUpRequired(challenge)) => {
            if code.trim().is_empty() {
                return Err(koban_auth::AuthError::BadCredentials);
            }
            let answer = Answer {
                step_up_id: challenge.id.clone(),
                code: code.to_owned(),
                passkey: String::new(),
            };
            act(answer.proof()).await
        }
        other => other,
    }
}

/// A new password (with a code from the app); every other session ends.
pub async fn change_password<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { mut page, me, form }: SignedForm<CodeGuardedForm>,
) -> Response {
    let result = with_code_given(&form.code, |proof| {
        let (auth, me, client) = (&state.auth, &me, &page.client);
        let password = koban_auth::Secret::new(form.new_password.clone());
        async move {
            auth.change_password(me, password, proof.as_ref(), client)
                .await
        }
    })
    .await;
    match result {
        Ok(session) => {
            page.rotated(&session);
            let c = page
                .chrome("title-security")
                .with_notice(page.tr.t("password-changed"));
            let me = crate::page::on_session(me, &session);
            match centre_view(&state, &page, &me, c).await {
                Ok(view) => with_cookies(page.render(&view), Some(&session), page.dev),
                Err(error) => failure(&page, &error),
            }
        }
        Err(error) => {
            let (status, text) = explain_auth(&page.tr, &error);
            let field = match error {
                koban_auth::AuthError::Password(_) => "new_password",
                koban_auth::AuthError::BadCredentials => {
                    return code_refused(&state, &page, &me, "password_code").await;
                }
                _ => "password_code",
            };
            let c = page.chrome("title-security").with_error(Some(field), text);
            match centre_view(&state, &page, &me, c).await {
                Ok(view) => with_retry_after(page.render_status(status, &view), &error),
                Err(error) => failure(&page, &error),
            }
        }
    }
}

/// New recovery codes (with a code from the app): the old ones stop working.
pub async fn recovery_codes<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { mut page, me, form }: SignedForm<CodeGuardedForm>,
) -> Response {
    let result = with_code_given(&form.code, |proof| {
        let (auth, me, client) = (&state.auth, &me, &page.client);
        async move {
            auth.regenerate_recovery_codes(me, proof.as_ref(), client)
                .await
        }
    })
    .await;
    match result {
        Ok((codes, session)) => {
            page.rotated(&session);
            let view = crate::account::RecoveryPage {
                c: page.chrome("title-recovery"),
                codes: codes.iter().map(|c| c.expose().clone()).collect(),
            };
            with_cookies(page.render(&view), Some(&session), page.dev)
        }
        Err(koban_auth::AuthError::BadCredentials) => {
            code_refused(&state, &page, &me, "recovery_code").await
        }
        Err(error) => {
            let (status, text) = explain_auth(&page.tr, &error);
            let c = page
                .chrome("title-security")
                .with_error(Some("recovery_code"), text);
            match centre_view(&state, &page, &me, c).await {
                Ok(view) => with_retry_after(page.render_status(status, &view), &error),
                Err(error) => failure(&page, &error),
            }
        }
    }
}

async fn code_refused<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &koban_auth::Principal,
    field: &'static str,
) -> Response {
    let c = page
        .chrome("title-security")
        .with_error(Some(field), page.tr.t("error-code"));
    match centre_view(state, page, me, c).await {
        Ok(view) => page.render_status(StatusCode::FORBIDDEN, &view),
        Err(error) => failure(page, &error),
    }
}

async fn contact_error<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &koban_auth::Principal,
    field: &'static str,
    text: String,
    form: &ContactForm,
) -> Response {
    let c = page.chrome("title-security").with_error(Some(field), text);
    match centre_view(state, page, me, c).await {
        Ok(mut view) => {
            view.new_email = form.email.clone();
            view.new_phone = form.phone.clone();
            page.render_status(StatusCode::UNPROCESSABLE_ENTITY, &view)
        }
        Err(error) => failure(page, &error),
    }
}

/// Signs one of the customer's sessions out (the current one too, which then signs in again).
pub async fn end_session<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { page, me, .. }: SignedForm<Empty>,
) -> Response {
    match state.auth.revoke_session(&me, &id).await {
        Ok(()) if id == me.session_id => {
            koban_api::extract::clear_session_cookies(see_other("/signin"))
        }
        Ok(()) => see_other("/security"),
        Err(error) => {
            let (status, text) = explain_auth(&page.tr, &error);
            crate::page::message(&page, status, text, "/security", "link-security")
        }
    }
}

/// Signs out every device but this one.
pub async fn end_other_sessions<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, .. }: SignedForm<Empty>,
) -> Response {
    match state.auth.revoke_other_sessions(&me).await {
        Ok(_) => centre_with_notice(&state, &page, &me, "security-others-ended").await,
        Err(error) => failure(&page, &error),
    }
}

#[derive(Template)]
#[template(path = "not_me.html")]
pub struct NotMePage {
    pub c: Chrome,
    pub frozen: bool,
}

/// "This was not me": what freezing does, and the one button that does it.
pub async fn not_me_page<S: LedgerStore>(SignedIn { page, .. }: SignedIn) -> Response {
    page.render(&NotMePage {
        c: page.chrome("title-not-me"),
        frozen: false,
    })
}

/// Freezes the account at once: every session ends, including this one, and the page says
/// what happens next.
pub async fn not_me<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, .. }: SignedForm<Empty>,
) -> Response {
    match state.auth.freeze_own_account(&me).await {
        Ok(()) => {
            let view = NotMePage {
                c: page.chrome("title-frozen"),
                frozen: true,
            };
            koban_api::extract::clear_session_cookies(page.render(&view))
        }
        Err(error) => {
            let (status, text) = explain_auth(&page.tr, &error);
            crate::page::message(&page, status, text, "/security", "link-security")
        }
    }
}

/// The security centre again, with `text` as the error of `field`.
async fn centre_with_error<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &koban_auth::Principal,
    field: &'static str,
    (status, text): (StatusCode, String),
) -> Response {
    let c = page.chrome("title-security").with_error(Some(field), text);
    match centre_view(state, page, me, c).await {
        Ok(view) => page.render_status(status, &view),
        Err(error) => failure(page, &error),
    }
}

/// Downloads everything Koban holds about the customer as a JSON file (with a code from the
/// app: everything leaves at once).
pub async fn export<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { mut page, me, form }: SignedForm<CodeGuardedForm>,
) -> Response {
    let result = with_code_given(&form.code, |proof| {
        let (auth, me, client) = (&state.auth, &me, &page.client);
        async move { auth.confirm_export(me, proof.as_ref(), client).await }
    })
    .await;
    let session = match result {
        Ok(session) => session,
        Err(koban_auth::AuthError::BadCredentials) => {
            return code_refused(&state, &page, &me, "export_code").await;
        }
        Err(error) => {
            let explained = explain_auth(&page.tr, &error);
            return centre_with_error(&state, &page, &me, "export_code", explained).await;
        }
    };
    page.rotated(&session);
    let data = match koban_api::privacy::gather_export(&state, &me).await {
        Ok(data) => data,
        Err(error) => {
            let explained = crate::page::explain(&page.tr, &error);
            return centre_with_error(&state, &page, &me, "export_code", explained).await;
        }
    };
    let body = serde_json::json!({ "exported_at": state.auth.now_ms(), "data": data });
    let mut response = (
        StatusCode::OK,
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"koban-data.json\"",
            ),
        ],
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
        .into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    with_cookies(response, Some(&session), page.dev)
}

/// Closes the account for good (with a code from the app), once no money is on it or on its
/// way; the page says so and every session ends.
pub async fn close<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { page, me, form }: SignedForm<CodeGuardedForm>,
) -> Response {
    // The reason first, before a code is asked for.
    if state.pay.closable(&me.user_id).await.is_err() {
        let refused = (StatusCode::CONFLICT, page.tr.t("privacy-close-refused"));
        return centre_with_error(&state, &page, &me, "close_code", refused).await;
    }
    let result = with_code_given(&form.code, |proof| {
        let (auth, me, client) = (&state.auth, &me, &page.client);
        async move { auth.confirm_close(me, proof.as_ref(), client).await }
    })
    .await;
    match result {
        Ok(_) => {}
        Err(koban_auth::AuthError::BadCredentials) => {
            return code_refused(&state, &page, &me, "close_code").await;
        }
        Err(error) => {
            let explained = explain_auth(&page.tr, &error);
            return centre_with_error(&state, &page, &me, "close_code", explained).await;
        }
    }
    match koban_api::privacy::close_confirmed(&state, &me).await {
        Ok(()) => {
            let view = crate::page::MessagePage {
                c: page.chrome("title-closed"),
                text: page.tr.t("privacy-closed"),
                link: "/",
                link_text: page.tr.t("link-start"),
            };
            koban_api::extract::clear_session_cookies(page.render(&view))
        }
        Err(PayError::Conflict(_)) => {
            let refused = (StatusCode::CONFLICT, page.tr.t("privacy-close-refused"));
            centre_with_error(&state, &page, &me, "close_code", refused).await
        }
        Err(error) => {
            let explained = crate::page::explain(&page.tr, &error);
            centre_with_error(&state, &page, &me, "close_code", explained).await
        }
    }
}
