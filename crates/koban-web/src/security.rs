//! The security centre: where the customer is signed in (and signing a device out), the
//! factors that protect the account.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use koban_api::ApiState;
use koban_api::extract::with_cookies;
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::account::Empty;
use crate::page::{Chrome, Page, Posted, explain_auth, see_other, with_retry_after};
use crate::wallet::{StepUpPage, passkey_options, proof_of};

pub struct SessionLine {
    pub id: String,
    pub current: bool,
    pub device: String,
    pub network: String,
    pub last_seen: String,
}

pub struct FactorLine {
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

async fn centre_view<S: LedgerStore>(
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
                kind: tr.t(match f.kind.as_str() {
                    "totp" => "factor-totp",
                    "passkey" => "factor-passkey",
                    _ => "factor-other",
                }),
                label: f.label,
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

pub async fn centre<S: LedgerStore>(State(state): State<ApiState<S>>, page: Page) -> Response {
    let me = match page.full() {
        Ok(me) => me.clone(),
        Err(redirect) => return redirect.into_response(),
    };
    match centre_view(&state, &page, &me, page.chrome("title-security")).await {
        Ok(view) => page.render(&view),
        Err(error) => failure(&page, &error),
    }
}

fn failure(page: &Page, error: &koban_auth::AuthError) -> Response {
    let (status, text) = explain_auth(&page.tr, error);
    page.render_status(
        status,
        &crate::page::MessagePage {
            c: page.chrome("title-problem"),
            text,
            link: "/security",
            link_text: page.tr.t("link-security"),
        },
    )
}

#[derive(Deserialize)]
pub struct ContactForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    step_up_id: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    passkey: String,
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
    Posted { mut page, form }: Posted<ContactForm>,
) -> Response {
    let me = match page.full() {
        Ok(me) => me.clone(),
        Err(redirect) => return redirect.into_response(),
    };
    let Ok(email) = koban_auth::Email::parse(&form.email) else {
        return contact_error(
            &state,
            &page,
            &me,
            "new_email",
            page.tr.t("error-email"),
            &form,
        )
        .await;
    };
    let summary = page.tr.with("step-up-email", &[("email", email.as_str())]);
    let fields = vec![("email", form.email.clone())];
    let proof = proof_of(&form.step_up_id, &form.code, &form.passkey);
    let result = state
        .auth
        .change_email_begin(&me, &email, proof.as_ref(), &page.client)
        .await;
    match result {
        Ok(session) => {
            page.rotated(&session);
            let view = EmailConfirmPage {
                c: page.chrome("title-email-confirm"),
                email: email.as_str().to_owned(),
            };
            with_cookies(page.render(&view), Some(&session), page.dev)
        }
        Err(error) => {
            let answered = proof.is_some();
            match step_up_answer(
                &page,
                error,
                "/security/email",
                summary,
                fields,
                &form.step_up_id,
                answered,
            ) {
                Ok(response) => response,
                Err(error) => {
                    let (_, text) = explain_auth(&page.tr, &error);
                    contact_error(&state, &page, &me, "new_email", text, &form).await
                }
            }
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
    Posted { page, form }: Posted<EmailCodeForm>,
) -> Response {
    let me = match page.full() {
        Ok(me) => me.clone(),
        Err(redirect) => return redirect.into_response(),
    };
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
    Posted { mut page, form }: Posted<ContactForm>,
) -> Response {
    let me = match page.full() {
        Ok(me) => me.clone(),
        Err(redirect) => return redirect.into_response(),
    };
    let Ok(phone) = koban_auth::Phone::parse(&crate::page::normalize_phone(&form.phone)) else {
        return contact_error(
            &state,
            &page,
            &me,
            "new_phone",
            page.tr.t("error-phone"),
            &form,
        )
        .await;
    };
    let summary = page.tr.with("step-up-phone", &[("phone", phone.as_str())]);
    let fields = vec![("phone", form.phone.clone())];
    let proof = proof_of(&form.step_up_id, &form.code, &form.passkey);
    match state
        .auth
        .change_phone(&me, &phone, proof.as_ref(), &page.client)
        .await
    {
        Ok(session) => {
            page.rotated(&session);
            let c = page
                .chrome("title-security")
                .with_notice(page.tr.t("phone-changed"));
            let me = state
                .auth
                .authenticate(session.token.expose())
                .await
                .unwrap_or(me);
            match centre_view(&state, &page, &me, c).await {
                Ok(view) => with_cookies(page.render(&view), Some(&session), page.dev),
                Err(error) => failure(&page, &error),
            }
        }
        Err(error) => {
            let answered = proof.is_some();
            match step_up_answer(
                &page,
                error,
                "/security/phone",
                summary,
                fields,
                &form.step_up_id,
                answered,
            ) {
                Ok(response) => response,
                Err(error) => {
                    let (_, text) = explain_auth(&page.tr, &error);
                    contact_error(&state, &page, &me, "new_phone", text, &form).await
                }
            }
        }
    }
}

/// The step-up page for a refusal that asks for one (or a wrong code); other refusals are
/// handed back.
fn step_up_answer(
    page: &Page,
    error: koban_auth::AuthError,
    action: &str,
    summary: String,
    fields: Vec<(&'static str, String)>,
    step_up_id: &str,
    answered: bool,
) -> Result<Response, koban_auth::AuthError> {
    use koban_auth::AuthError as A;
    let (id, status, text, passkey) = match &error {
        A::StepUpRequired(challenge) => (
            challenge.id.clone(),
            StatusCode::FORBIDDEN,
            answered.then(|| page.tr.t("error-code")),
            passkey_options(challenge),
        ),
        A::StepUpInvalid => (
            String::new(),
            StatusCode::FORBIDDEN,
            Some(page.tr.t("error-step-up-invalid")),
            None,
        ),
        A::BadCredentials => (
            step_up_id.to_owned(),
            StatusCode::FORBIDDEN,
            Some(page.tr.t("error-code")),
            None,
        ),
        A::CodeReused | A::Throttled { .. } => {
            let (status, text) = explain_auth(&page.tr, &error);
            (step_up_id.to_owned(), status, Some(text), None)
        }
        _ => return Err(error),
    };
    let mut c = page.chrome("title-step-up");
    if let Some(text) = text {
        c = c.with_error(Some("code"), text);
    }
    let view = StepUpPage {
        c,
        action: action.to_owned(),
        summary,
        step_up_id: id,
        fields,
        passkey,
    };
    Ok(with_retry_after(page.render_status(status, &view), &error))
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
    Posted { page, .. }: Posted<Empty>,
) -> Response {
    let me = match page.full() {
        Ok(me) => me.clone(),
        Err(redirect) => return redirect.into_response(),
    };
    match state.auth.revoke_session(&me, &id).await {
        Ok(()) if id == me.session_id => {
            koban_api::extract::clear_session_cookies(see_other("/signin"))
        }
        Ok(()) => see_other("/security"),
        Err(error) => {
            let (status, text) = explain_auth(&page.tr, &error);
            page.render_status(
                status,
                &crate::page::MessagePage {
                    c: page.chrome("title-problem"),
                    text,
                    link: "/security",
                    link_text: page.tr.t("link-security"),
                },
            )
        }
    }
}

#[derive(Template)]
#[template(path = "not_me.html")]
pub struct NotMePage {
    pub c: Chrome,
    pub frozen: bool,
}

/// "This was not me": what freezing does, and the one button that does it.
pub async fn not_me_page<S: LedgerStore>(page: Page) -> Response {
    if let Err(redirect) = page.full() {
        return redirect.into_response();
    }
    page.render(&NotMePage {
        c: page.chrome("title-not-me"),
        frozen: false,
    })
}

/// Freezes the account at once: every session ends, including this one, and the page says
/// what happens next.
pub async fn not_me<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Posted { page, .. }: Posted<Empty>,
) -> Response {
    let me = match page.full() {
        Ok(me) => me.clone(),
        Err(redirect) => return redirect.into_response(),
    };
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
            page.render_status(
                status,
                &crate::page::MessagePage {
                    c: page.chrome("title-problem"),
                    text,
                    link: "/security",
                    link_text: page.tr.t("link-security"),
                },
            )
        }
    }
}
