//! The step-up round trip every guarded page shares: the domain asks for a confirmation bound
//! to the exact action; the page shows what is being confirmed and asks for a code (or the
//! passkey), carrying the action's own fields; the same request is then repeated with the
//! answer. An expired or spent confirmation is replaced by a fresh one at once.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use koban_auth::{AuthError, Secret, StepUpAnswer, StepUpProof};
use koban_pay::PayError;
use serde::Deserialize;

use crate::page::{Chrome, Page, explain_auth, with_retry_after};

/// The page asking for a code from the authenticator app (or the passkey) to confirm one
/// action, carrying the action's fields so the same request can be repeated with the answer.
#[derive(Template)]
#[template(path = "step_up.html")]
pub struct StepUpPage {
    pub c: Chrome,
    pub action: String,
    pub summary: String,
    pub step_up_id: String,
    pub fields: Vec<(&'static str, String)>,
    /// Passkey options for this action, when the customer has a passkey.
    pub passkey: Option<String>,
}

/// The step-up answer fields of a form (flattened into each guarded form).
#[derive(Deserialize, Default, Clone)]
pub struct Answer {
    #[serde(default)]
    pub step_up_id: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub passkey: String,
}

impl Answer {
    /// The proof to hand to the domain, when the form carried one.
    pub fn proof(&self) -> Option<StepUpProof> {
        if self.step_up_id.is_empty() {
            return None;
        }
        // A passkey's answer, when the page's script put one in; one that does not parse is
        // answered like a wrong code (an empty one).
        let answer = match self.passkey.trim() {
            "" => StepUpAnswer::Code(Secret::new(self.code.trim().replace(' ', ""))),
            json => match serde_json::from_str(json) {
                Ok(assertion) => StepUpAnswer::Passkey(Box::new(assertion)),
                Err(_) => StepUpAnswer::Code(Secret::new(String::new())),
            },
        };
        Some(StepUpProof {
            id: self.step_up_id.clone(),
            answer,
        })
    }
}

/// The options a step-up page's script passes to `navigator.credentials.get()`, when the
/// customer has a passkey: bound to this very action by the domain.
pub fn passkey_options(challenge: &koban_auth::StepUpChallenge) -> Option<String> {
    challenge
        .passkey
        .as_ref()
        .and_then(|options| serde_json::to_string(options).ok())
}

/// What a guarded action came to: done, or a page (the step-up page) to answer with.
pub enum Stepped<T> {
    Done(T),
    Page(Response),
}

/// What to show on the step-up page of one action.
pub struct Guarded {
    /// Where the step-up page's form posts: the action's own address.
    pub action: String,
    /// What is being confirmed, in the visitor's language.
    pub summary: String,
    /// The action's own fields, carried through the step-up page.
    pub fields: Vec<(&'static str, String)>,
}

/// Runs `act` with the form's step-up answer. A first call without one, an expired or spent
/// confirmation (replaced at once), a wrong or reused code, or throttling gives the step-up
/// page; any other refusal is handed back.
pub async fn with_step_up<T, F, Fut>(
    page: &Page,
    answer: &Answer,
    guarded: Guarded,
    act: F,
) -> Result<Stepped<T>, PayError>
where
    F: Fn(Option<StepUpProof>) -> Fut,
    Fut: Future<Output = Result<T, PayError>>,
{
    let proof = answer.proof();
    let answered = proof.is_some();
    let mut result = act(proof).await;
    let mut error_text = None;
    if let Err(PayError::Auth(AuthError::StepUpInvalid)) = &result {
        error_text = Some(page.tr.t("error-step-up-invalid"));
        result = act(None).await;
    }
    let view = |id: String, text: Option<String>, passkey: Option<String>| {
        let mut c = page.chrome("title-step-up");
        if let Some(text) = text {
            c = c.with_error(Some("code"), text);
        }
        StepUpPage {
            c,
            action: guarded.action.clone(),
            summary: guarded.summary.clone(),
            step_up_id: id,
            fields: guarded.fields.clone(),
            passkey,
        }
    };
    match result {
        Ok(value) => Ok(Stepped::Done(value)),
        Err(PayError::Auth(AuthError::StepUpRequired(challenge))) => {
            let text = error_text.or_else(|| answered.then(|| page.tr.t("error-code")));
            let page_view = view(challenge.id.clone(), text, passkey_options(&challenge));
            Ok(Stepped::Page(
                page.render_status(StatusCode::FORBIDDEN, &page_view),
            ))
        }
        Err(PayError::Auth(
            error @ (AuthError::BadCredentials
            | AuthError::CodeReused
            | AuthError::Throttled { .. }),
        )) => {
            let (status, text) = match error {
                AuthError::BadCredentials => (StatusCode::FORBIDDEN, page.tr.t("error-code")),
                _ => explain_auth(&page.tr, &error),
            };
            let page_view = view(answer.step_up_id.clone(), Some(text), None);
            Ok(Stepped::Page(with_retry_after(
                page.render_status(status, &page_view),
                &error,
            )))
        }
        Err(error) => Err(error),
    }
}
