//! The test application: the real router over a fresh SQLite file or PostgreSQL schema, a
//! manual clock, and a small client that calls the router in-process.

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use koban_api::{ApiConfig, ApiState};
use koban_auth::{Auth, AuthConfig, ServerKeys};
use koban_ledger::Timestamp;
use koban_store::{Clock, LedgerStore, ManualClock};
use koban_store_postgres::{PgConfig, PgStore};
use koban_store_sqlite::{SqliteConfig, SqliteStore};
use serde_json::{Value, json};
use tower::ServiceExt;

/// 2026-11-25T00:00:00Z: a realistic "now", since TOTP codes depend on it.
const START_NS: u64 = 1_795_564_800_000_000_000;

pub struct TestApp<S: LedgerStore> {
    pub router: Router,
    pub auth: Auth<S::Sql>,
    pub pay: koban_pay::Payments<S>,
    pub cards: koban_cards::Cards<S>,
    pub clock: ManualClock,
    pub store: S,
    /// The PostgreSQL schema the app serves from (`None` on SQLite).
    pub schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

pub fn test_config() -> AuthConfig {
    AuthConfig {
        dev: true,
        // Stories sign many people up from one test address.
        requests_per_network_max: 1_000,
        ..AuthConfig::default()
    }
}

/// The one manual clock of a test app: identity, payments and the ledger all read it.
fn manual_clock() -> (Clock, ManualClock) {
    Clock::manual(Timestamp::from_nanos(START_NS))
}

async fn build<S: LedgerStore>(
    store: S,
    (clock, handle): (Clock, ManualClock),
    config: AuthConfig,
    dir: Option<tempfile::TempDir>,
) -> TestApp<S> {
    let auth = Auth::new(
        store.sql(),
        ServerKeys::from_master([42; 32]),
        clock,
        config,
    )
    .await
    .expect("auth starts");
    let pay = koban_pay::Payments::new(
        store.clone(),
        auth.clone(),
        koban_pay::PayConfig {
            sandbox: true,
            settle_after_s: 5,
            // Small enough for stories to reach with an unverified wallet.
            review_new_payee_from_minor: 20_000,
            ..koban_pay::PayConfig::default()
        },
    )
    .expect("payments start");
    let cards = koban_cards::Cards::new(pay.clone(), koban_cards::CardConfig::default())
        .with_keys(koban_cards::card_keys::CardKeys::generate());
    pay.open_issuer_accounts()
        .await
        .expect("issuer accounts open");
    let router = test_router(&store, &auth, &pay, &cards);
    TestApp {
        router,
        auth,
        pay,
        cards,
        clock: handle,
        store,
        schema: None,
        _dir: dir,
    }
}

fn test_router<S: LedgerStore>(
    store: &S,
    auth: &Auth<S::Sql>,
    pay: &koban_pay::Payments<S>,
    cards: &koban_cards::Cards<S>,
) -> Router {
    koban_api::router(ApiState {
        store: store.clone(),
        auth: auth.clone(),
        pay: pay.clone(),
        cards: cards.clone(),
        metrics: None,
        config: ApiConfig {
            dev: true,
            trust_forwarded_for: false,
        },
    })
}

impl<S: LedgerStore> TestApp<S> {
    /// The same app (database, clock, identity) serving through other payments (the cards
    /// keep their keys and move onto them).
    pub fn with_pay(mut self, pay: koban_pay::Payments<S>) -> TestApp<S> {
        let mut cards = koban_cards::Cards::new(pay.clone(), self.cards.config().clone());
        if let Some(keys) = self.cards.keys_configured() {
            cards = cards.with_keys(keys.clone());
        }
        self.pay = pay;
        self.with_cards(cards)
    }

    /// The same app (database, clock, identity, payments) serving through other cards, for
    /// example with rotated card keys.
    pub fn with_cards(mut self, cards: koban_cards::Cards<S>) -> TestApp<S> {
        self.router = test_router(&self.store, &self.auth, &self.pay, &cards);
        self.cards = cards;
        self
    }
}

pub async fn sqlite_app(config: AuthConfig) -> TestApp<SqliteStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let clocks = manual_clock();
    let sqlite = SqliteConfig {
        clock: clocks.0.clone(),
        ..SqliteConfig::default()
    };
    let store = SqliteStore::open(&dir.path().join("koban.db"), sqlite).expect("sqlite opens");
    build(store, clocks, config, Some(dir)).await
}

fn schema_for(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t_api_{}_{}_{}",
        name.chars().take(24).collect::<String>(),
        std::process::id(),
        nanos % 1_000_000_000
    )
}

/// A PostgreSQL app in a fresh schema, or `None` (printing why) outside CI without a server.
pub fn postgres_url() -> String {
    std::env::var("KOBAN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub async fn pg_app(name: &str, config: AuthConfig) -> Option<TestApp<PgStore>> {
    pg_app_at(
        &postgres_url(),
        name,
        config,
        PgConfig::default().acquire_timeout,
    )
    .await
}

/// [`pg_app`] through `url` (a proxy in front of the test server, for instance), waiting at
/// most `acquire_timeout` for a connection.
pub async fn pg_app_at(
    url: &str,
    name: &str,
    config: AuthConfig,
    acquire_timeout: std::time::Duration,
) -> Option<TestApp<PgStore>> {
    let url = url.to_owned();
    let clocks = manual_clock();
    let schema = schema_for(name);
    let pg = PgConfig {
        schema: Some(schema.clone()),
        connections_max: 4,
        clock: clocks.0.clone(),
        acquire_timeout,
        ..PgConfig::default()
    };
    match PgStore::connect(&url, pg).await {
        Ok(store) => {
            let mut app = build(store, clocks, config, None).await;
            app.schema = Some(schema);
            Some(app)
        }
        Err(error) if std::env::var("CI").is_err() => {
            eprintln!(
                "SKIPPED: PostgreSQL at {url} is not reachable ({error}); set KOBAN_TEST_DATABASE_URL"
            );
            None
        }
        Err(error) => panic!("PostgreSQL is required in CI: {error}"),
    }
}

/// `count` instances serving from one fresh PostgreSQL schema, as separate processes would:
/// each has its own store (committer, pool), identity, payments and cards, so its own locks,
/// queues and caches; they share the database, the master key, the card keys and the clock.
/// `None` (printing why) outside CI without a server.
pub async fn pg_instances(name: &str, count: usize) -> Option<Vec<TestApp<PgStore>>> {
    let first = pg_app(name, test_config()).await?;
    let schema = first.schema.clone().expect("a PostgreSQL app has a schema");
    let keys = first.cards.keys_configured().expect("card keys").clone();
    let mut apps = vec![first];
    while apps.len() < count {
        let clock = apps[0].clock.clone();
        let pg = PgConfig {
            schema: Some(schema.clone()),
            connections_max: 4,
            clock: clock.clock(),
            ..PgConfig::default()
        };
        let store = PgStore::connect(&postgres_url(), pg)
            .await
            .expect("another instance connects");
        let app = build(store, (clock.clock(), clock), test_config(), None).await;
        let cards = koban_cards::Cards::new(app.pay.clone(), app.cards.config().clone())
            .with_keys(keys.clone());
        apps.push(app.with_cards(cards));
    }
    Some(apps)
}

/// Runs each named story against SQLite and PostgreSQL.
#[macro_export]
macro_rules! stories {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::sqlite_app($crate::helpers::test_config()).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::helpers::pg_app(stringify!($name), $crate::helpers::test_config()).await {
                    super::$name(app).await
                }
            }
        }
    )* };
}

/// One request to the app.
pub struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    headers: Vec<(String, String)>,
    ip: IpAddr,
}

pub fn get(path: &str) -> Call {
    Call {
        method: Method::GET,
        path: path.into(),
        body: None,
        headers: vec![],
        ip: IpAddr::from([127, 0, 0, 1]),
    }
}

pub fn post(path: &str, body: Value) -> Call {
    Call {
        method: Method::POST,
        path: path.into(),
        body: Some(body),
        headers: vec![],
        ip: IpAddr::from([127, 0, 0, 1]),
    }
}

pub fn delete(path: &str) -> Call {
    Call {
        method: Method::DELETE,
        path: path.into(),
        body: None,
        headers: vec![],
        ip: IpAddr::from([127, 0, 0, 1]),
    }
}

impl Call {
    pub fn bearer(mut self, token: &str) -> Call {
        self.headers
            .push(("authorization".into(), format!("Bearer {token}")));
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn ip(mut self, ip: &str) -> Call {
        self.ip = ip.parse().expect("an IP address");
        self
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The problem type's last path segment (`throttled`, `step-up-required`, ...).
    pub fn problem(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|t| t.rsplit('/').next())
            .unwrap_or("")
    }
    pub fn token(&self) -> String {
        self.body["session"]["token"]
            .as_str()
            .expect("a session token")
            .to_owned()
    }
    pub fn retry_after(&self) -> u64 {
        self.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After")
    }
    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

/// A customer with a verified address and a TOTP factor, signed in fully.
#[derive(Clone, Debug)]
pub struct User {
    pub email: String,
    pub password: String,
    pub seed: Vec<u8>,
    pub token: String,
    pub recovery_codes: Vec<String>,
}

pub fn six_digits(text: &str) -> String {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(5))
        .find(|&i| {
            bytes[i..i + 6].iter().all(u8::is_ascii_digit)
                && (i + 6 == bytes.len() || !bytes[i + 6].is_ascii_digit())
                && (i == 0 || !bytes[i - 1].is_ascii_digit())
        })
        .map(|i| text[i..i + 6].to_owned())
        .expect("a six-digit code in the message")
}

impl<S: LedgerStore> TestApp<S> {
    /// The SQLite database file (`None` on PostgreSQL).
    pub fn database_file(&self) -> Option<std::path::PathBuf> {
        self._dir.as_ref().map(|dir| dir.path().join("koban.db"))
    }

    /// The outbox's notices to `address` with `subject` (sealed: found by the address's
    /// blind index and opened).
    pub async fn notices_to(&self, address: &str, subject: &str) -> Vec<String> {
        use koban_shared::personal::{self, Index};
        use koban_store::sql::SqlDb;
        let vault = self.pay.auth().vault();
        let rows = self
            .pay
            .db()
            .read(
                "SELECT id, subject FROM outbox WHERE recipient_index = $1",
                vec![vault.index(Index::Email, address).into()],
            )
            .await
            .unwrap();
        rows.iter()
            .filter(|row| {
                vault
                    .open(&personal::OUTBOX_SUBJECT, &row.text(1).unwrap())
                    .unwrap()
                    == subject
            })
            .map(|row| row.text(0).unwrap())
            .collect()
    }

    /// Deletes the outbox's notices to `address` with `subject`, as a crash before they were
    /// written would have lost them.
    pub async fn lose_notices(&self, address: &str, subject: &str) {
        use koban_store::sql::{SqlDb, SqlTx};
        let ids = self.notices_to(address, subject).await;
        let mut tx = self.pay.db().begin().await.unwrap();
        for id in ids {
            tx.execute("DELETE FROM outbox WHERE id = $1", vec![id.into()])
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

impl<S: LedgerStore> TestApp<S> {
    pub async fn call(&self, call: Call) -> Reply {
        let mut request = Request::builder().method(call.method).uri(&call.path);
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        let body = match call.body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).expect("a request");
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(call.ip, 40_000)));
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Posts an XML document (a bank file) as the body.
    pub async fn call_xml(&self, path: &str, token: &str, xml: &str) -> Reply {
        self.call_raw(
            path,
            token,
            "application/xml",
            &[],
            Body::from(xml.to_owned()),
        )
        .await
    }

    /// Posts raw bytes as a JSON body (for bodies `serde_json` cannot make, like bad UTF-8).
    pub async fn call_bytes(&self, path: &str, token: &str, bytes: &'static [u8]) -> Reply {
        let key = [("idempotency-key", "raw-bytes")];
        self.call_raw(path, token, "application/json", &key, Body::from(bytes))
            .await
    }

    /// Posts `body` as it is, with its content type and headers, from 127.0.0.1.
    async fn call_raw(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Reply {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", content_type)
            .header("authorization", format!("Bearer {token}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(body).expect("a request");
        request.extensions_mut().insert(ConnectInfo(SocketAddr::new(
            IpAddr::from([127, 0, 0, 1]),
            40_000,
        )));
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// Delivers the outbox and returns `to`'s messages, newest first, as (subject, body).
    pub async fn mail(&self, to: &str) -> Vec<(String, String)> {
        while self
            .auth
            .deliver_outbox(100)
            .await
            .expect("outbox delivers")
            > 0
        {}
        self.auth
            .mailbox(to, 200)
            .await
            .expect("mailbox")
            .into_iter()
            .map(|m| (m.subject, m.body))
            .collect()
    }

    pub async fn latest_code(&self, to: &str) -> String {
        six_digits(&self.mail(to).await.first().expect("a message").1)
    }

    pub fn now_s(&self) -> u64 {
        self.auth.now_ms() as u64 / 1000
    }

    pub fn totp(&self, seed: &[u8]) -> String {
        koban_auth::totp::code_at(seed, self.now_s()).expect("a code")
    }

    /// Moves to the next TOTP step, so a new code is accepted.
    pub fn next_step(&self) {
        self.clock.advance_secs(30);
    }

    pub async fn signup(&self, kind: &str, email: &str, password: &str) -> Reply {
        self.call(post("/v1/signup", json!({ "kind": kind, "email": email, "password": password, "display_name": "Test Person" }))).await
    }

    /// Signs up, verifies the address, enrols TOTP; returns the fully signed-in user.
    pub async fn user_of(&self, kind: &str, email: &str) -> User {
        let password = format!("correct horse battery {}", email.len());
        assert_eq!(
            self.signup(kind, email, &password).await.status,
            StatusCode::ACCEPTED
        );
        let code = self.latest_code(email).await;
        let verified = self
            .call(post(
                "/v1/signup/verify",
                json!({ "email": email, "code": code }),
            ))
            .await;
        assert_eq!(verified.status, StatusCode::NO_CONTENT, "{verified:?}");
        let login = self
            .call(post(
                "/v1/login",
                json!({ "email": email, "password": password }),
            ))
            .await;
        assert_eq!(login.status, StatusCode::OK, "{login:?}");
        assert_eq!(login.body["next"], "enrol_factor");
        let (seed, token, recovery_codes) = self.enrol_totp(&login.token()).await;
        User {
            email: email.into(),
            password,
            seed,
            token,
            recovery_codes,
        }
    }

    pub async fn user(&self, email: &str) -> User {
        self.user_of("customer", email).await
    }

    /// Enrols a first TOTP factor with a password-level session.
    pub async fn enrol_totp(&self, token: &str) -> (Vec<u8>, String, Vec<String>) {
        let begun = self
            .call(post("/v1/factors/totp", json!({})).bearer(token))
            .await;
        assert_eq!(begun.status, StatusCode::CREATED, "{begun:?}");
        let seed = koban_auth::totp::seed_from_uri(begun.body["otpauth_uri"].as_str().unwrap())
            .expect("a seed");
        let id = begun.body["factor_id"].as_str().unwrap().to_owned();
        let confirmed = self
            .call(
                post(
                    &format!("/v1/factors/totp/{id}/confirm"),
                    json!({ "code": self.totp(&seed) }),
                )
                .bearer(token),
            )
            .await;
        assert_eq!(confirmed.status, StatusCode::OK, "{confirmed:?}");
        let codes = confirmed.body["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        self.next_step();
        (seed, confirmed.token(), codes)
    }

    /// Signs in with password and TOTP; returns the full session token.
    pub async fn login(&self, user: &User) -> String {
        self.login_from(user, "127.0.0.1").await.0
    }

    /// Signs in from `ip`; returns the full session token and the device cookie
    /// (`koban_device=...`) the completed sign-in set.
    pub async fn login_from(&self, user: &User, ip: &str) -> (String, String) {
        let login = self
            .call(
                post(
                    "/v1/login",
                    json!({ "email": user.email, "password": user.password }),
                )
                .ip(ip),
            )
            .await;
        assert_eq!(login.status, StatusCode::OK, "{login:?}");
        let done = self
            .call(
                post(
                    "/v1/login/second-factor",
                    json!({ "code": self.totp(&user.seed) }),
                )
                .bearer(&login.token())
                .ip(ip),
            )
            .await;
        assert_eq!(done.status, StatusCode::OK, "{done:?}");
        self.next_step();
        let device = done
            .cookies()
            .into_iter()
            .find(|c| c.starts_with("koban_device="))
            .map(|c| c.split(';').next().unwrap().to_owned())
            .expect("a completed sign-in sets a device cookie");
        (done.token(), device)
    }

    /// Makes a request needing step-up twice: first to get the challenge, then confirmed with
    /// a fresh TOTP code. Returns the second reply.
    pub async fn with_step_up(&self, user: &User, token: &str, path: &str, body: Value) -> Reply {
        let first = self.call(post(path, body.clone()).bearer(token)).await;
        assert_eq!(first.problem(), "step-up-required", "{first:?}");
        let mut confirmed = body;
        confirmed["step_up"] =
            json!({ "id": first.body["step_up"]["id"], "code": self.totp(&user.seed) });
        let reply = self.call(post(path, confirmed).bearer(token)).await;
        self.next_step();
        reply
    }
}
