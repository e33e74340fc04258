//! WebAuthn passkeys, with a software authenticator standing in for the browser and device.

use axum::http::StatusCode;
use koban_store::LedgerStore;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

use crate::helpers::{Reply, TestApp, get, post};
use crate::stories;

stories!(passkeys_enrol_sign_in_and_confirm_exactly_one_action);

type Authenticator = WebauthnAuthenticator<SoftPasskey>;

fn origin() -> Url {
    Url::parse("http://localhost:8080").unwrap()
}

fn device() -> Authenticator {
    WebauthnAuthenticator::new(SoftPasskey::new(true))
}

fn register(key: &mut Authenticator, options: &Value) -> Value {
    let options: CreationChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    let credential =
        tokio::task::block_in_place(|| key.do_registration(origin(), options)).unwrap();
    serde_json::to_value(credential).unwrap()
}

fn assert_with(key: &mut Authenticator, options: &Value) -> Value {
    let options: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    let assertion =
        tokio::task::block_in_place(|| key.do_authentication(origin(), options)).unwrap();
    serde_json::to_value(assertion).unwrap()
}

async fn password_session<S: LedgerStore>(app: &TestApp<S>, email: &str, password: &str) -> String {
    let login = app
        .call(post(
            "/v1/login",
            json!({ "email": email, "password": password }),
        ))
        .await;
    assert_eq!(login.status, StatusCode::OK, "{login:?}");
    login.token()
}

async fn passkey_login<S: LedgerStore>(
    app: &TestApp<S>,
    token: &str,
    key: &mut Authenticator,
) -> Reply {
    let start = app
        .call(post("/v1/login/passkey/start", json!({})).bearer(token))
        .await;
    assert_eq!(start.status, StatusCode::OK, "{start:?}");
    let assertion = assert_with(key, &start.body["options"]);
    let body = json!({ "ceremony_id": start.body["ceremony_id"], "credential": assertion });
    app.call(post("/v1/login/passkey/finish", body).bearer(token))
        .await
}

async fn passkeys_enrol_sign_in_and_confirm_exactly_one_action<S: LedgerStore>(app: TestApp<S>) {
    let (email, password) = ("passkey@example.com", "lantern pebble orchard");
    app.signup("customer", email, password).await;
    let code = app.latest_code(email).await;
    app.call(post(
        "/v1/signup/verify",
        json!({ "email": email, "code": code }),
    ))
    .await;

    // A passkey made on a page of another origin (here another port) is refused, and the
    // answer says why.
    let partial = password_session(&app, email, password).await;
    let start = app
        .call(post("/v1/factors/passkeys/register/start", json!({})).bearer(&partial))
        .await;
    let options: CreationChallengeResponse =
        serde_json::from_value(start.body["options"].clone()).unwrap();
    let elsewhere = Url::parse("http://localhost:9999").unwrap();
    let credential =
        tokio::task::block_in_place(|| device().do_registration(elsewhere, options)).unwrap();
    let refused = app
        .call(
            post(
                "/v1/factors/passkeys/register/finish",
                json!({ "ceremony_id": start.body["ceremony_id"], "credential": credential }),
            )
            .bearer(&partial),
        )
        .await;
    assert_eq!(
        (refused.status, refused.problem()),
        (StatusCode::UNPROCESSABLE_ENTITY, "passkey-refused"),
        "{refused:?}"
    );
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("made for another site"),
        "{refused:?}"
    );

    // Enrol a passkey as the first factor.
    let partial = password_session(&app, email, password).await;
    let mut phone = device();
    let start = app
        .call(post("/v1/factors/passkeys/register/start", json!({})).bearer(&partial))
        .await;
    assert_eq!(start.status, StatusCode::CREATED, "{start:?}");
    let credential = register(&mut phone, &start.body["options"]);
    let finish = app
        .call(post("/v1/factors/passkeys/register/finish", json!({ "ceremony_id": start.body["ceremony_id"], "credential": credential.clone() })).bearer(&partial))
        .await;
    assert_eq!(finish.status, StatusCode::OK, "{finish:?}");
    assert_eq!(finish.body["recovery_codes"].as_array().unwrap().len(), 10);
    let full = finish.token();
    let me = app.call(get("/v1/me").bearer(&full)).await;
    assert_eq!(me.body["factors"][0]["kind"], "passkey");
    assert_eq!(me.body["can_move_money"], true);

    // Sign in with it.
    let partial = password_session(&app, email, password).await;
    let signed_in = passkey_login(&app, &partial, &mut phone).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{signed_in:?}");
    assert_eq!(signed_in.body["session"]["level"], "second_factor");
    let full = signed_in.token();

    // An assertion answers one ceremony only: replayed against a new one it fails.
    let partial = password_session(&app, email, password).await;
    let first = app
        .call(post("/v1/login/passkey/start", json!({})).bearer(&partial))
        .await;
    let assertion = assert_with(&mut phone, &first.body["options"]);
    let ok = app
        .call(post("/v1/login/passkey/finish", json!({ "ceremony_id": first.body["ceremony_id"], "credential": assertion.clone() })).bearer(&partial))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let partial = password_session(&app, email, password).await;
    let second = app
        .call(post("/v1/login/passkey/start", json!({})).bearer(&partial))
        .await;
    let replay = app
        .call(
            post(
                "/v1/login/passkey/finish",
                json!({ "ceremony_id": second.body["ceremony_id"], "credential": assertion }),
            )
            .bearer(&partial),
        )
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{replay:?}");
    // Another authenticator, not registered here, fails too.
    let mut stranger = device();
    let stranger_start = app
        .call(post("/v1/login/passkey/start", json!({})).bearer(&partial))
        .await;
    let options: RequestChallengeResponse =
        serde_json::from_value(stranger_start.body["options"].clone()).unwrap();
    let refused = tokio::task::block_in_place(|| stranger.do_authentication(origin(), options));
    assert!(
        refused.is_err(),
        "a key that holds no credential of this account cannot answer"
    );
    // A registration answer replayed at registration is refused: the ceremony was used.
    let again = app
        .call(
            post(
                "/v1/factors/passkeys/register/finish",
                json!({ "ceremony_id": start.body["ceremony_id"], "credential": credential }),
            )
            .bearer(&full),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // Step-up with the passkey, bound to one action.
    let first = app
        .call(post("/v1/me/phone", json!({ "phone": "+819011112222" })).bearer(&full))
        .await;
    assert_eq!(first.problem(), "step-up-required");
    assert!(
        first.body["step_up"]["methods"]
            .as_array()
            .unwrap()
            .contains(&json!("passkey"))
    );
    let assertion = assert_with(&mut phone, &first.body["step_up"]["passkey"]);
    let swapped = json!({ "phone": "+819099998888", "step_up": { "id": first.body["step_up"]["id"], "passkey": assertion.clone() } });
    let refused = app.call(post("/v1/me/phone", swapped).bearer(&full)).await;
    assert_eq!(
        refused.problem(),
        "step-up-invalid",
        "an assertion for one number cannot set another"
    );
    let second = app
        .call(post("/v1/me/phone", json!({ "phone": "+819011112222" })).bearer(&full))
        .await;
    let assertion = assert_with(&mut phone, &second.body["step_up"]["passkey"]);
    let done = app
        .call(post("/v1/me/phone", json!({ "phone": "+819011112222", "step_up": { "id": second.body["step_up"]["id"], "passkey": assertion } })).bearer(&full))
        .await;
    assert_eq!(done.status, StatusCode::OK, "{done:?}");
    let full = done.token();

    // Several passkeys per account: a second one, added with step-up by the first.
    let start = app
        .call(post("/v1/factors/passkeys/register/start", json!({})).bearer(&full))
        .await;
    assert_eq!(start.problem(), "step-up-required");
    let assertion = assert_with(&mut phone, &start.body["step_up"]["passkey"]);
    let start = app
        .call(
            post(
                "/v1/factors/passkeys/register/start",
                json!({ "step_up": { "id": start.body["step_up"]["id"], "passkey": assertion } }),
            )
            .bearer(&full),
        )
        .await;
    assert_eq!(start.status, StatusCode::CREATED, "{start:?}");
    let full = start.token();
    let mut laptop = device();
    let credential = register(&mut laptop, &start.body["options"]);
    let finish = app
        .call(
            post(
                "/v1/factors/passkeys/register/finish",
                json!({ "ceremony_id": start.body["ceremony_id"], "credential": credential }),
            )
            .bearer(&full),
        )
        .await;
    assert_eq!(finish.status, StatusCode::OK, "{finish:?}");
    assert!(finish.body["recovery_codes"].is_null());
    let me = app.call(get("/v1/me").bearer(&full)).await;
    assert_eq!(me.body["factors"].as_array().unwrap().len(), 2);
    // Either key signs in.
    let partial = password_session(&app, email, password).await;
    assert_eq!(
        passkey_login(&app, &partial, &mut laptop).await.status,
        StatusCode::OK
    );
}
