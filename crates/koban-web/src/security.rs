//! The security centre: where the customer is signed in (and signing a device out), the
//! factors that protect the account.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use koban_api::ApiState;
use koban_store::LedgerStore;

use crate::account::Empty;
use crate::page::{Chrome, Page, Posted, explain_auth, see_other};

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

#[derive(Template)]
#[template(path = "security.html")]
pub struct SecurityPage {
    pub c: Chrome,
    pub sessions: Vec<SessionLine>,
    pub factors: Vec<FactorLine>,
    pub recovery_codes_left: i64,
}

pub async fn centre<S: LedgerStore>(State(state): State<ApiState<S>>, page: Page) -> Response {
    let me = match page.full() {
        Ok(me) => me.clone(),
        Err(redirect) => return redirect.into_response(),
    };
    let tr = page.tr;
    let loaded = async {
        let sessions = state.auth.sessions(&me).await?;
        let user = state.auth.me(&me).await?;
        Ok::<_, koban_auth::AuthError>((sessions, user))
    }
    .await;
    match loaded {
        Ok((sessions, user)) => page.render(&SecurityPage {
            c: page.chrome("title-security"),
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
        }),
        Err(error) => {
            let (status, text) = explain_auth(&tr, &error);
            page.render_status(
                status,
                &crate::page::MessagePage {
                    c: page.chrome("title-problem"),
                    text,
                    link: "/home",
                    link_text: tr.t("link-home"),
                },
            )
        }
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
