//! Second factors in the security centre: adding an authenticator app or a passkey to an
//! account that already has one, and removing one. Each change is confirmed with a factor the
//! account already has (step-up); the last factor cannot be removed. The first factor is
//! enrolled in `account` right after sign-up.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use koban_api::ApiState;
use koban_api::extract::with_cookies;
use koban_pay::PayError;
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::account::TotpPage;
use crate::page::{Chrome, SignedForm, explain};
use crate::stepup::{Answer, Guarded, Stepped, with_step_up};

/// A form whose only fields are the step-up answer.
#[derive(Deserialize, Default)]
pub struct GuardedOnly {
    #[serde(flatten)]
    answer: Answer,
}

/// Adds an authenticator app: confirmed with a factor the account has, then the app's QR code
/// and the code it shows, as at enrolment.
pub async fn add_totp<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { mut page, me, form }: SignedForm<GuardedOnly>,
) -> Response {
    let guarded = Guarded {
        action: "/security/factors/totp".into(),
        summary: page.tr.t("step-up-add-totp"),
        fields: vec![],
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (auth, me, client) = (&state.auth, &me, &page.client);
        async move {
            auth.totp_begin(me, proof.as_ref(), client)
                .await
                .map_err(PayError::Auth)
        }
    })
    .await;
    match done {
        Ok(Stepped::Done(enrolment)) => {
            if let Some(session) = &enrolment.session {
                page.rotated(session);
            }
            let view = TotpPage::started(page.chrome("title-totp-add"), &enrolment, true);
            with_cookies(page.render(&view), enrolment.session.as_ref(), page.dev)
        }
        Ok(Stepped::Page(response)) => response,
        Err(error) => refused(&page, &error),
    }
}

#[derive(Template)]
#[template(path = "passkey_add.html")]
pub struct PasskeyAddPage {
    pub c: Chrome,
    pub ceremony_id: String,
    /// The options for `navigator.credentials.create()`, as JSON.
    pub options: String,
}

/// Adds a passkey: confirmed with a factor the account has, then a page whose button asks the
/// browser to make the passkey (only script can talk to an authenticator).
pub async fn add_passkey<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    SignedForm { mut page, me, form }: SignedForm<GuardedOnly>,
) -> Response {
    let guarded = Guarded {
        action: "/security/factors/passkey".into(),
        summary: page.tr.t("step-up-add-passkey"),
        fields: vec![],
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (auth, me, client) = (&state.auth, &me, &page.client);
        async move {
            auth.passkey_register_start(me, proof.as_ref(), client)
                .await
                .map_err(PayError::Auth)
        }
    })
    .await;
    match done {
        Ok(Stepped::Done(started)) => {
            if let Some(session) = &started.session {
                page.rotated(session);
            }
            let Ok(options) = serde_json::to_string(&started.options) else {
                return refused(
                    &page,
                    &PayError::Auth(koban_auth::AuthError::Internal("options do not serialise")),
                );
            };
            let view = PasskeyAddPage {
                c: page.chrome("title-passkey-add"),
                ceremony_id: started.ceremony_id,
                options,
            };
            with_cookies(page.render(&view), started.session.as_ref(), page.dev)
        }
        Ok(Stepped::Page(response)) => response,
        Err(error) => refused(&page, &error),
    }
}

/// Removes a factor, confirmed with a factor the account has (this one too); the last one
/// stays. Every other session ends, and the customer is told by e-mail.
pub async fn remove<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
    SignedForm { mut page, me, form }: SignedForm<GuardedOnly>,
) -> Response {
    if !crate::page::plain_id(&id) {
        return refused(&page, &PayError::NotFound);
    }
    let guarded = Guarded {
        action: format!("/security/factors/{id}/remove"),
        summary: page.tr.t("step-up-remove-factor"),
        fields: vec![],
    };
    let done = with_step_up(&page, &form.answer, guarded, |proof| {
        let (auth, me, client, id) = (&state.auth, &me, &page.client, &id);
        async move {
            auth.remove_factor(me, id, proof.as_ref(), client)
                .await
                .map_err(PayError::Auth)
        }
    })
    .await;
    match done {
        Ok(Stepped::Done(session)) => {
            page.rotated(&session);
            let me = crate::page::on_session(me, &session);
            let view = crate::security::centre_with_notice(&state, &page, &me, "factor-removed");
            with_cookies(view.await, Some(&session), page.dev)
        }
        Ok(Stepped::Page(response)) => response,
        Err(error) => refused(&page, &error),
    }
}

fn refused(page: &crate::page::Page, error: &PayError) -> Response {
    let (status, text) = explain(&page.tr, error);
    crate::page::message(page, status, text, "/security", "link-security")
}
