//! The few HTML pages that e-mailed links open: each shows a button (a GET never changes
//! anything, so mail scanners that follow links do no harm) whose form POST does the action.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use koban_auth::Secret;
use koban_store::LedgerStore;
use serde::Deserialize;

use crate::ApiState;

#[derive(Deserialize)]
pub struct TokenForm {
    token: String,
    password: Option<String>,
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · Koban</title></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    ))
}

fn form(action: &str, token: &str, text: &str, button: &str, password: bool) -> Html<String> {
    let password_field = if password {
        "<p><label>New password (at least 12 characters) <input type=\"password\" name=\"password\" minlength=\"12\" required></label></p>"
    } else {
        ""
    };
    page(
        button,
        &format!(
            "<p>{text}</p><form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"token\" value=\"{}\">{password_field}\
             <button type=\"submit\">{button}</button></form>",
            escape(token)
        ),
    )
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

pub async fn not_me_page(Query(query): Query<TokenQuery>) -> Html<String> {
    form(
        "/not-me",
        query.token.as_deref().unwrap_or(""),
        "If you did not make the change we wrote to you about, freeze your account now. Every session ends at once.",
        "Freeze my account",
        false,
    )
}

pub async fn not_me_submit<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Form(form): Form<TokenForm>,
) -> Response {
    let done = state.auth.not_me(&Secret::new(form.token)).await;
    link_result(
        done.is_ok(),
        "Account frozen",
        "Your account is frozen and every session has ended. Contact support to get back in.",
    )
}

/// The page after a link's form was sent: what happened, or that the link was not valid.
fn link_result(done: bool, title: &str, text: &str) -> Response {
    if done {
        page(title, &format!("<p>{text}</p>")).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            page(
                "Link not valid",
                "<p>This link is used, expired, or not valid.</p>",
            ),
        )
            .into_response()
    }
}

pub async fn cancel_recovery_page(Query(query): Query<TokenQuery>) -> Html<String> {
    form(
        "/recovery/cancel",
        query.token.as_deref().unwrap_or(""),
        "Someone asked to recover your account without its second factor. If it was not you, cancel the request.",
        "Cancel the recovery request",
        false,
    )
}

pub async fn cancel_recovery_submit<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Form(form): Form<TokenForm>,
) -> Response {
    let done = state.auth.cancel_recovery(&Secret::new(form.token)).await;
    link_result(
        done.is_ok(),
        "Request cancelled",
        "The recovery request is cancelled.",
    )
}

pub async fn enrol_operator_page(Query(query): Query<TokenQuery>) -> Html<String> {
    form(
        "/operators/enrol",
        query.token.as_deref().unwrap_or(""),
        "Choose a password for your Koban operator account. You will set up an authenticator app when you first sign in.",
        "Set password",
        true,
    )
}

pub async fn enrol_operator_submit<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    Form(form): Form<TokenForm>,
) -> Response {
    let password = Secret::new(form.password.unwrap_or_default());
    match state
        .auth
        .enrol_operator(&Secret::new(form.token), password)
        .await
    {
        Err(koban_auth::AuthError::Password(rejection)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            page(
                "Password refused",
                &format!("<p>{}</p>", escape(&rejection.to_string())),
            ),
        )
            .into_response(),
        done => link_result(
            done.is_ok(),
            "Password set",
            "Sign in with your e-mail and this password, then set up an authenticator app.",
        ),
    }
}
