//! The pages through the real router (API and pages together), in-process over a fresh SQLite
//! file and a manual clock, with a small cookie-keeping browser. The browser stories in
//! `web-tests/` cover the same ground in chromium; these check what a browser hides: headers,
//! refusals of forged forms, and that a page moves money only through the domain's checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use koban_api::{ApiConfig, ApiState};
use koban_auth::{Auth, AuthConfig, ServerKeys};
use koban_ledger::{Amount, Currency, Timestamp};
use koban_store::{Clock, LedgerStore, ManualClock};
use koban_store_sqlite::{SqliteConfig, SqliteStore};
use tower::ServiceExt;

/// 2026-11-25T00:00:00Z.
const START_NS: u64 = 1_795_564_800_000_000_000;

struct App {
    router: Router,
    auth: Auth<<SqliteStore as LedgerStore>::Sql>,
    pay: koban_pay::Payments<SqliteStore>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    app_with(koban_pay::PayConfig {
        sandbox: true,
        ..koban_pay::PayConfig::default()
    })
    .await
}

async fn app_with(pay_config: koban_pay::PayConfig) -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let (clock, handle) = Clock::manual(Timestamp::from_nanos(START_NS));
    let store = SqliteStore::open(
        &dir.path().join("koban.db"),
        SqliteConfig {
            clock: clock.clone(),
            ..SqliteConfig::default()
        },
    )
    .expect("sqlite opens");
    let config = AuthConfig {
        dev: true,
        requests_per_network_max: 1_000,
        ..AuthConfig::default()
    };
    let auth = Auth::new(store.sql(), ServerKeys::from_master([7; 32]), clock, config)
        .await
        .expect("auth");
    let pay = koban_pay::Payments::new(store.clone(), auth.clone(), pay_config).expect("payments");
    pay.open_issuer_accounts().await.expect("issuer accounts");
    let router = koban_web::app(ApiState {
        store,
        auth: auth.clone(),
        cards: koban_cards::Cards::new(pay.clone(), koban_cards::CardConfig::default()),
        pay: pay.clone(),
        metrics: None,
        config: ApiConfig {
            dev: true,
            trust_forwarded_for: false,
        },
    });
    App {
        router,
        auth,
        pay,
        clock: handle,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

/// A browser: keeps cookies, sends forms.
struct Browser<'a> {
    app: &'a App,
    cookies: BTreeMap<String, String>,
    accept_language: &'static str,
}

impl<'a> Browser<'a> {
    fn new(app: &'a App) -> Browser<'a> {
        Browser {
            app,
            cookies: BTreeMap::new(),
            accept_language: "en-GB,en;q=0.9",
        }
    }

    async fn send(&mut self, request: axum::http::request::Builder, body: Body) -> Reply {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut request = request
            .header(header::ACCEPT_LANGUAGE, self.accept_language)
            .header(header::COOKIE, cookie.join("; "))
            .body(body)
            .expect("request");
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let response = self
            .app
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("answer");
        for value in response.headers().get_all(header::SET_COOKIE) {
            let text = value.to_str().expect("ascii cookie");
            let pair = text.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.send(Request::get(path), Body::empty()).await
    }

    /// Posts a form with the CSRF token of the page last seen at `from`.
    async fn submit(&mut self, from: &str, action: &str, fields: &[(&str, &str)]) -> Reply {
        let page = self.get(from).await;
        let csrf = hidden(&page.body, "csrf").expect("the page has a form token");
        self.post(action, &csrf, fields).await
    }

    async fn post(&mut self, action: &str, csrf: &str, fields: &[(&str, &str)]) -> Reply {
        let mut all = vec![("csrf", csrf)];
        all.extend_from_slice(fields);
        let body = serde_urlencoded::to_string(&all).expect("form");
        self.send(
            Request::post(action).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
            Body::from(body),
        )
        .await
    }
}

/// The value of the first hidden input named `name`.
fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&#x2f;", "/")
            .replace("&#43;", "+"),
    )
}

fn attribute(html: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

#[tokio::test]
async fn pages_are_html_with_a_strict_policy_in_the_visitors_language() {
    let app = app().await;
    let mut en = Browser::new(&app);
    let start = en.get("/").await;
    assert_eq!(start.status, StatusCode::OK);
    assert!(
        start.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = start.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(start.headers[header::CACHE_CONTROL], "no-store");
    assert!(start.body.contains("<html lang=\"en\">"));
    assert!(start.body.contains("Create an account"));

    let mut ja = Browser::new(&app);
    ja.accept_language = "ja-JP,ja;q=0.9,en;q=0.5";
    let start = ja.get("/").await;
    assert!(start.body.contains("<html lang=\"ja\">"));
    assert!(start.body.contains("アカウントを作成"));
    // The switch is remembered, whatever the browser asks for.
    let switched = ja
        .submit("/", "/lang", &[("lang", "en"), ("back", "/signin")])
        .await;
    assert_eq!(switched.status, StatusCode::SEE_OTHER);
    assert_eq!(switched.headers[header::LOCATION], "/signin");
    assert!(ja.get("/signin").await.body.contains("<html lang=\"en\">"));
    // Only paths of this site are gone back to.
    let away = ja
        .submit("/", "/lang", &[("lang", "ja"), ("back", "//evil.example/")])
        .await;
    assert_eq!(away.headers[header::LOCATION], "/");
    // Browsers drop tabs in URLs: "/\t/evil" would become "//evil".
    let tab = ja
        .submit(
            "/",
            "/lang",
            &[("lang", "ja"), ("back", "/\t/evil.example/")],
        )
        .await;
    assert_eq!(tab.headers[header::LOCATION], "/");

    let css = en.get("/assets/app.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    // The API keeps its JSON answers beside the pages.
    let missing = en.get("/no/such/page").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    // Pages that need a session send a visitor to sign in.
    let home = en.get("/home").await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.headers[header::LOCATION], "/signin");
}

#[tokio::test]
async fn a_form_without_its_token_or_from_another_site_changes_nothing() {
    let app = app().await;
    let mut browser = Browser::new(&app);
    browser.get("/signup").await;
    let fields = [
        ("display_name", "Mallory"),
        ("email", "forged@example.com"),
        ("password", "lantern pebble orchard"),
    ];
    let forged = browser.post("/signup", "kbf_not-the-token", &fields).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let csrf = hidden(&browser.get("/signup").await.body, "csrf").unwrap();
    let cross_site = browser
        .send(
            Request::post("/signup")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header("sec-fetch-site", "cross-site"),
            Body::from(
                serde_urlencoded::to_string([
                    ("csrf", csrf.as_str()),
                    ("display_name", "M"),
                    ("email", "forged@example.com"),
                    ("password", "lantern pebble orchard"),
                ])
                .unwrap(),
            ),
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert!(
        app.auth
            .mailbox("forged@example.com", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        app.auth.deliver_outbox(50).await.unwrap() == 0,
        "nothing was queued either"
    );

    // The same form with its token works.
    let real = browser.post("/signup", &csrf, &fields).await;
    assert_eq!(real.status, StatusCode::OK, "{}", real.body);
    assert_eq!(app.auth.deliver_outbox(50).await.unwrap(), 1);
}

async fn signed_up<'a>(app: &'a App, name: &str, email: &str) -> (Browser<'a>, Vec<u8>) {
    signed_up_as(app, name, email, "customer").await
}

/// Signs up on the pages as a customer or (`kind` = `merchant`) a shop, with TOTP.
async fn signed_up_as<'a>(
    app: &'a App,
    name: &str,
    email: &str,
    kind: &str,
) -> (Browser<'a>, Vec<u8>) {
    let mut browser = Browser::new(app);
    let password = "lantern pebble orchard";
    let signed = browser
        .submit(
            "/signup",
            "/signup",
            &[
                ("kind", kind),
                ("display_name", name),
                ("email", email),
                ("password", password),
            ],
        )
        .await;
    assert_eq!(signed.status, StatusCode::OK);
    app.auth.deliver_outbox(50).await.unwrap();
    let mail = app.auth.mailbox(email, 10).await.unwrap();
    let code: String = mail[0]
        .body
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a code in the mail")
        .to_owned();
    let verified = browser
        .submit(
            "/signup/verify",
            "/signup/verify",
            &[("email", email), ("code", &code)],
        )
        .await;
    assert!(
        verified.body.contains("Your address is confirmed"),
        "{}",
        verified.body
    );
    let signin = browser
        .submit(
            "/signin",
            "/signin",
            &[("email", email), ("password", password)],
        )
        .await;
    assert_eq!(signin.headers[header::LOCATION], "/enrol");
    let (seed, confirmed) = enrol_totp(app, &mut browser).await;
    assert_eq!(
        confirmed.body.matches("<li><code>").count(),
        10,
        "ten recovery codes"
    );
    app.clock.advance_secs(30);
    (browser, seed)
}

/// An operator invited as `koban admin create` does, enrolled with TOTP through the pages.
async fn operator<'a>(app: &'a App, email: &str, role: koban_auth::Role) -> Browser<'a> {
    let (invite, _) = app
        .auth
        .create_operator(&koban_auth::Email::parse(email).unwrap(), role, None)
        .await
        .unwrap();
    let link = invite.enrolment_link.expose().clone();
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let password = "operator passphrase, long enough";
    app.auth
        .enrol_operator(
            &koban_auth::Secret::new(token),
            koban_auth::Secret::new(password.to_owned()),
        )
        .await
        .unwrap();
    let mut browser = Browser::new(app);
    let signin = browser
        .submit(
            "/signin",
            "/signin",
            &[("email", email), ("password", password)],
        )
        .await;
    assert_eq!(
        signin.headers[header::LOCATION],
        "/enrol",
        "{}",
        signin.body
    );
    enrol_totp(app, &mut browser).await;
    app.clock.advance_secs(30);
    browser
}

/// Sets up an authenticator app on the enrolment pages; answers its seed and the page with
/// the recovery codes.
async fn enrol_totp(app: &App, browser: &mut Browser<'_>) -> (Vec<u8>, Reply) {
    let started = browser.submit("/enrol", "/enrol/totp", &[]).await;
    let key = attribute(&started.body, "data-setup-key").expect("a setup key");
    let seed = koban_auth::totp::seed_from_uri(&format!("otpauth://totp/k?secret={key}")).unwrap();
    let factor = hidden(&started.body, "factor_id").unwrap();
    let csrf = hidden(&started.body, "csrf").unwrap();
    let code = koban_auth::totp::code_at(&seed, now_s(app)).unwrap();
    let confirmed = browser
        .post(
            "/enrol/totp/confirm",
            &csrf,
            &[("factor_id", &factor), ("code", &code)],
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    (seed, confirmed)
}

/// The posted balance of the session's customer.
async fn balance(app: &App, token: &str) -> i128 {
    let me = app.auth.authenticate(token).await.unwrap();
    app.pay
        .wallet_view(&me, Currency::Jpy)
        .await
        .unwrap()
        .account
        .balance
        .net_credit_posted()
}

fn now_s(app: &App) -> u64 {
    u64::try_from(app.auth.now_ms() / 1000).unwrap()
}

#[tokio::test]
async fn money_moves_from_a_page_only_through_the_same_step_up_as_the_api() {
    let app = app().await;
    let (mut hanako, seed) = signed_up(&app, "Hanako Suzuki", "hanako@example.com").await;
    let (mut taro, _) = signed_up(&app, "Taro Yamada", "taro@example.com").await;
    let home = hanako.get("/home").await;
    assert!(
        home.body.contains("data-testid=\"balance\">¥0<"),
        "{}",
        home.body
    );

    let me = app
        .auth
        .authenticate(&hanako.cookies["koban_session"])
        .await
        .unwrap();
    let key = koban_pay::IdempotencyKey::parse("faucet-1").unwrap();
    app.pay
        .faucet(&me, Currency::Jpy, Amount::new(10_000).unwrap(), &key)
        .await
        .unwrap();

    // Confirmation of payee shows the masked name before anything moves.
    let check = hanako
        .submit(
            "/send",
            "/send/check",
            &[
                ("to", "taro@example.com"),
                ("amount", "１，５００円"),
                ("message", "Lunch"),
            ],
        )
        .await;
    assert_eq!(check.status, StatusCode::OK, "{}", check.body);
    assert!(check.body.contains("T*** Y*****"));
    let csrf = hidden(&check.body, "csrf").unwrap();
    let idem = hidden(&check.body, "key").unwrap();
    let fields = [
        ("to", "taro@example.com"),
        ("amount", "1500"),
        ("message", "Lunch"),
        ("key", idem.as_str()),
    ];
    let asked = hanako.post("/send/confirm", &csrf, &fields).await;
    assert_eq!(
        asked.status,
        StatusCode::FORBIDDEN,
        "a new payee needs step-up"
    );
    let step_up = hidden(&asked.body, "step_up_id").unwrap();
    assert_eq!(
        balance(&app, &taro.cookies["koban_session"]).await,
        0,
        "nothing moved before step-up"
    );

    let wrong = [
        fields.as_slice(),
        &[("step_up_id", step_up.as_str()), ("code", "000000")],
    ]
    .concat();
    let refused = hanako.post("/send/confirm", &csrf, &wrong).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.body.contains("The code is not right"),
        "{}",
        refused.body
    );
    assert_eq!(balance(&app, &taro.cookies["koban_session"]).await, 0);

    let code = koban_auth::totp::code_at(&seed, now_s(&app)).unwrap();
    let right = [
        fields.as_slice(),
        &[("step_up_id", step_up.as_str()), ("code", code.as_str())],
    ]
    .concat();
    let sent = hanako.post("/send/confirm", &csrf, &right).await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    assert!(sent.body.contains("¥1,500"));
    // Step-up rotated the session; the page's cookies follow it, and a repeat is a replay.
    let csrf = hidden(&hanako.get("/send").await.body, "csrf").unwrap();
    let again = hanako.post("/send/confirm", &csrf, &fields).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(
        balance(&app, &hanako.cookies["koban_session"]).await,
        8_500,
        "the payer is debited once"
    );
    assert_eq!(balance(&app, &taro.cookies["koban_session"]).await, 1_500);

    taro.accept_language = "ja";
    let home = taro.get("/home").await;
    assert!(home.body.contains("¥1,500"));
    assert!(
        home.body.contains("H***** S*****"),
        "the payer's name is masked"
    );
    assert!(
        home.body.contains("2026年11月25日"),
        "dates in Japanese: {}",
        home.body
    );
    let csv = taro
        .get("/statement.csv?from=2026-11-01&to=2026-11-30")
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.body.lines().count() >= 2, "{}", csv.body);
}

#[tokio::test]
async fn a_used_code_says_to_wait_for_the_next_one() {
    let app = app().await;
    let (mut hanako, seed) = signed_up(&app, "Hanako Suzuki", "hanako@example.com").await;
    let code = koban_auth::totp::code_at(&seed, now_s(&app)).unwrap();
    for attempt in 0..2 {
        let out = hanako.submit("/home", "/signout", &[]).await;
        assert_eq!(out.headers[header::LOCATION], "/");
        let signin = hanako
            .submit(
                "/signin",
                "/signin",
                &[
                    ("email", "hanako@example.com"),
                    ("password", "lantern pebble orchard"),
                ],
            )
            .await;
        assert_eq!(signin.headers[header::LOCATION], "/signin/code");
        let answer = hanako
            .submit("/signin/code", "/signin/code", &[("code", &code)])
            .await;
        if attempt == 0 {
            assert_eq!(answer.headers[header::LOCATION], "/home", "{}", answer.body);
        } else {
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
            assert!(
                answer
                    .body
                    .contains("This code was already used. Wait for the next code"),
                "{}",
                answer.body
            );
        }
    }
    // A funding source id that is not one is not put into a page.
    app.clock.advance_secs(30);
    let code = koban_auth::totp::code_at(&seed, now_s(&app)).unwrap();
    hanako
        .submit("/signin/code", "/signin/code", &[("code", &code)])
        .await;
    let odd = hanako.get("/bank/..%2F..%2Fsignout/confirm").await;
    assert_eq!(odd.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_customer_is_kept_out_of_the_merchant_and_operator_pages() {
    let app = app().await;
    let (mut browser, _) = signed_up(&app, "Aiko Tanaka", "aiko@example.com").await;
    for path in [
        "/merchant",
        "/merchant/terminal",
        "/merchant/keys",
        "/merchant/webhooks",
    ] {
        let reply = browser.get(path).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(reply.headers[header::LOCATION], "/home", "{path}");
    }
    // A form to the terminal with her own valid token is sent home too, and charges nothing.
    let charged = browser
        .submit(
            "/home",
            "/merchant/terminal",
            &[
                ("amount", "500"),
                ("code", "123456789012345678"),
                ("key", "aiko-terminal-1"),
            ],
        )
        .await;
    assert_eq!(charged.status, StatusCode::SEE_OTHER);
    assert_eq!(charged.headers[header::LOCATION], "/home");
    let refund = browser
        .submit(
            "/home",
            "/merchant/payments/01a249ee-5777-745e-8ef7-6323c56dc8bc/refund",
            &[("amount", "1"), ("key", "aiko-refund-1")],
        )
        .await;
    assert_eq!(refund.status, StatusCode::SEE_OTHER);
    let released = browser
        .submit(
            "/home",
            "/ops/held/01a249ee-5777-745e-8ef7-6323c56dc8bc/release",
            &[],
        )
        .await;
    assert_eq!(released.status, StatusCode::SEE_OTHER);
    assert_eq!(released.headers[header::LOCATION], "/home");
    // Signed out, the dashboard asks for a sign-in.
    let mut stranger = Browser::new(&app);
    let reply = stranger.get("/merchant").await;
    assert_eq!(reply.headers[header::LOCATION], "/signin");
}

#[tokio::test]
async fn operators_see_names_masked_until_a_reason_is_audited_and_try_rules_without_loading_them() {
    let app = app().await;
    let (aiko, _) = signed_up(&app, "Aiko Tanaka", "aiko@example.com").await;
    let me = app
        .auth
        .authenticate(&aiko.cookies["koban_session"])
        .await
        .unwrap();
    app.pay
        .submit_kyc(&me, &koban_auth::LegalName::parse("Tanaka Aiko").unwrap())
        .await
        .unwrap();
    let mut approver = operator(&app, "approver@koban.test", koban_auth::Role::Approver).await;

    // The queue shows the name masked; approving without having seen it decides nothing.
    let queue = approver.get("/ops/queues").await;
    assert_eq!(queue.status, StatusCode::OK, "{}", queue.body);
    assert!(!queue.body.contains("Tanaka Aiko"), "{}", queue.body);
    assert!(queue.body.contains("T*****"), "{}", queue.body);
    let user = me.user_id.clone();
    let blind = approver
        .submit(
            "/ops/queues",
            &format!("/ops/kyc/{user}/approve"),
            &[("name", "Someone Else")],
        )
        .await;
    assert_eq!(blind.status, StatusCode::NOT_FOUND, "{}", blind.body);
    // No reason, no name.
    let silent = approver
        .submit(
            "/ops/queues",
            &format!("/ops/kyc/{user}/reveal"),
            &[("reason", "  ")],
        )
        .await;
    assert_eq!(silent.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!silent.body.contains("Tanaka Aiko"));
    let shown = approver
        .submit(
            "/ops/queues",
            &format!("/ops/kyc/{user}/reveal"),
            &[("reason", "comparing with the licence photo")],
        )
        .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert!(shown.body.contains("Tanaka Aiko"), "{}", shown.body);
    let approved = approver
        .submit(
            "/ops/queues",
            &format!("/ops/kyc/{user}/approve"),
            &[("name", "Tanaka Aiko")],
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert!(approved.body.contains("Verified"), "{}", approved.body);
    assert_eq!(
        app.pay.holder(&user).await.unwrap().tier,
        koban_pay::wallets::Tier::Verified
    );

    // The analyst's audit log holds the reveal with its reason, and the chain holds.
    let mut analyst = operator(&app, "analyst@koban.test", koban_auth::Role::Analyst).await;
    let log = analyst.get("/ops/audit").await;
    assert_eq!(log.status, StatusCode::OK);
    // A page's address with a bad parameter shows the page, not a plain-text error.
    let odd = analyst.get("/ops/audit?before=abc").await;
    assert_eq!(odd.status, StatusCode::OK);
    assert!(odd.body.contains("kyc.name_revealed"), "{}", odd.body);
    assert!(log.body.contains("kyc.name_revealed"), "{}", log.body);
    assert!(log.body.contains("comparing with the licence photo"));
    let checked = analyst.submit("/ops/audit", "/ops/audit/verify", &[]).await;
    assert!(
        checked.body.contains("data-testid=\"chain-intact\""),
        "{}",
        checked.body
    );
    // The approver's role does not read the audit log; the analyst's does not work the queue.
    let refused = approver.get("/ops/audit").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let queues = analyst.get("/ops/queues").await;
    assert!(queues.body.contains("Your role does not work these queues"));

    // A broken rules file is refused with the rule and the problem named; a valid one is
    // backtested and nothing goes live.
    let live = app.pay.risk_rules().current().digest();
    let broken = "version = \"t\"\n[[rule]]\nname = \"too_fast\"\ndescription = \"d\"\nwhen = \"amount >\"\naction = \"hold\"\nscore = 10\nreason = \"r\"\n";
    let refused = analyst
        .submit("/ops/rules", "/ops/rules", &[("rules", broken)])
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert!(refused.body.contains("too_fast"), "{}", refused.body);
    assert!(refused.body.contains("aria-invalid=\"true\""));
    let valid = koban_pay::koban_risk::DEFAULT_RULES;
    let tried = analyst
        .submit("/ops/rules", "/ops/rules", &[("rules", valid)])
        .await;
    assert_eq!(tried.status, StatusCode::OK, "{}", tried.body);
    assert!(
        tried.body.contains("data-testid=\"backtest\""),
        "{}",
        tried.body
    );
    assert_eq!(app.pay.risk_rules().current().digest(), live);
}

#[tokio::test]
async fn a_shop_signs_up_on_the_same_page_and_lands_on_its_dashboard() {
    let app = app().await;
    let (mut shop, _) = signed_up_as(&app, "Koban Bakery", "bakery@example.com", "merchant").await;
    let home = shop.get("/home").await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.headers[header::LOCATION], "/merchant");
    let dashboard = shop.get("/merchant").await;
    assert_eq!(dashboard.status, StatusCode::OK, "{}", dashboard.body);
    assert!(
        dashboard.body.contains("No payouts yet"),
        "{}",
        dashboard.body
    );
    let me = app
        .auth
        .authenticate(&shop.cookies["koban_session"])
        .await
        .unwrap();
    assert_eq!(me.kind, koban_auth::UserKind::Merchant);
    // A shop has no faucet and no wallet pages of a customer's: the domain says so.
    let key = koban_pay::IdempotencyKey::parse("shop-faucet-1").unwrap();
    assert!(
        app.pay
            .faucet(&me, Currency::Jpy, Amount::new(100).unwrap(), &key)
            .await
            .is_err()
    );
    // Without a linked bank account, a payout from the dashboard is refused before any
    // confirmation is asked, and nothing moves.
    let refused = shop
        .submit(
            "/payout",
            "/payout",
            &[
                ("source_id", "nothing"),
                ("amount", "100"),
                ("key", "shop-payout-1"),
            ],
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("Confirm with your code"));
}

#[tokio::test]
async fn at_the_iso20022_bank_a_top_up_shows_where_to_pay_and_what_to_quote() {
    let app = app_with(koban_pay::PayConfig {
        file_bank: Some(koban_pay::connectors::FileBank {
            account: koban_pay::iso20022::ZenginAccount::parse("0001-001-0000001").unwrap(),
            name: "Koban".into(),
            outbox: None,
        }),
        ..koban_pay::PayConfig::default()
    })
    .await;
    let (mut hanako, seed) = signed_up(&app, "Hanako Suzuki", "hanako@example.com").await;
    let me = app
        .auth
        .authenticate(&hanako.cookies["koban_session"])
        .await
        .unwrap();
    let name = koban_auth::LegalName::parse("Hanako Suzuki").unwrap();
    app.pay.submit_kyc(&me, &name).await.unwrap();
    let support = operator(&app, "support@example.com", koban_auth::Role::Support).await;
    let support = app
        .auth
        .authenticate(&support.cookies["koban_session"])
        .await
        .unwrap();
    app.pay
        .decide_kyc(&support, &me.user_id, "Hanako Suzuki", true)
        .await
        .unwrap();

    // The account is asked for as bank, branch and number, and linked at the ISO 20022 bank.
    let page = hanako.get("/bank").await;
    assert!(page.body.contains("0001-123-1234567"), "{}", page.body);
    let asked = hanako
        .submit(
            "/bank",
            "/bank/link",
            &[("account_number", "0005-123-7654321")],
        )
        .await;
    assert_eq!(asked.status, StatusCode::FORBIDDEN, "{}", asked.body);
    let csrf = hidden(&asked.body, "csrf").unwrap();
    let step_up = hidden(&asked.body, "step_up_id").unwrap();
    let code = koban_auth::totp::code_at(&seed, now_s(&app)).unwrap();
    let linked = hanako
        .post(
            "/bank/link",
            &csrf,
            &[
                ("account_number", "0005-123-7654321"),
                ("step_up_id", step_up.as_str()),
                ("code", code.as_str()),
            ],
        )
        .await;
    assert_eq!(linked.status, StatusCode::SEE_OTHER, "{}", linked.body);
    let next = linked.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!next.contains("sandbox"), "{next}");
    let source = next.split('/').nth(2).unwrap().to_owned();

    // The micro-deposits went out in a pain.001; the customer reads them on their statement.
    let file = app.pay.make_payment_file().await.unwrap().expect("a file");
    let amounts: Vec<i64> = file
        .content
        .split("<InstdAmt Ccy=\"JPY\">")
        .skip(1)
        .map(|rest| rest.split('<').next().unwrap().parse().unwrap())
        .collect();
    let me = app
        .auth
        .authenticate(&hanako.cookies["koban_session"])
        .await
        .unwrap();
    app.pay
        .link_bank_confirm(
            &me,
            &source,
            amounts[0],
            amounts[1],
            &koban_auth::Client::from_ip([127, 0, 0, 1].into(), None, "test"),
        )
        .await
        .unwrap();

    for (language, pay_to, reference) in [
        ("en-GB", "Pay to", "Reference"),
        ("ja", "お振込先", "参照番号"),
    ] {
        hanako.accept_language = if language == "ja" {
            "ja"
        } else {
            "en-GB,en;q=0.9"
        };
        let form = hanako.get("/topup").await;
        let key = hidden(&form.body, "key").unwrap();
        let csrf = hidden(&form.body, "csrf").unwrap();
        let done = hanako
            .post(
                "/topup",
                &csrf,
                &[
                    ("source", &format!("bank:{source}")),
                    ("amount", "3000"),
                    ("key", key.as_str()),
                ],
            )
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert!(done.body.contains(pay_to), "{}", done.body);
        assert!(done.body.contains(reference), "{}", done.body);
        assert!(
            done.body.contains("0001-001-0000001 Koban"),
            "{}",
            done.body
        );
        let quoted = done.body.split("<strong>").nth(1).unwrap();
        assert!(quoted.starts_with("KB") && quoted[2..12].bytes().all(|b| b.is_ascii_digit()));
    }
}

#[tokio::test]
async fn a_customer_downloads_her_data_and_closes_her_account_from_the_security_page() {
    let app = app().await;
    let (mut hanako, seed) = signed_up(&app, "Hanako Suzuki", "hanako@example.com").await;
    let centre = hanako.get("/security").await;
    assert!(centre.body.contains("Download my data"), "{}", centre.body);

    // The download needs a code from the app, and is one JSON file of her data.
    let without = hanako.submit("/security", "/security/export", &[]).await;
    assert_eq!(without.status, StatusCode::FORBIDDEN, "{}", without.body);
    app.clock.advance_secs(30);
    let code = koban_auth::totp::code_at(&seed, now_s(&app)).unwrap();
    let download = hanako
        .submit("/security", "/security/export", &[("code", &code)])
        .await;
    assert_eq!(download.status, StatusCode::OK, "{}", download.body);
    assert_eq!(
        download.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"koban-data.json\""
    );
    let data: serde_json::Value = serde_json::from_str(&download.body).unwrap();
    assert_eq!(data["data"]["profile"][0]["email"], "hanako@example.com");
    assert_eq!(data["data"]["profile"][0]["display_name"], "Hanako Suzuki");

    // Closing is refused, with the reason, while money is on the account.
    let me = app
        .auth
        .authenticate(&hanako.cookies["koban_session"])
        .await
        .unwrap();
    let key = koban_pay::IdempotencyKey::parse("faucet-1").unwrap();
    app.pay
        .faucet(&me, Currency::Jpy, Amount::new(500).unwrap(), &key)
        .await
        .unwrap();
    app.clock.advance_secs(30);
    let code = koban_auth::totp::code_at(&seed, now_s(&app)).unwrap();
    let refused = hanako
        .submit("/security", "/security/close", &[("code", &code)])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(
        refused.body.contains("still holds money"),
        "{}",
        refused.body
    );
    assert!(balance(&app, &hanako.cookies["koban_session"]).await == 500);

    // An empty account closes: the page says so, and he is signed out for good.
    let (mut taro, taro_seed) = signed_up(&app, "Taro Yamada", "taro@example.com").await;
    let code = koban_auth::totp::code_at(&taro_seed, now_s(&app)).unwrap();
    let closed = taro
        .submit("/security", "/security/close", &[("code", &code)])
        .await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert!(
        closed.body.contains("Your account is closed"),
        "{}",
        closed.body
    );
    let after = taro.get("/home").await;
    assert_ne!(after.status, StatusCode::OK);
    let signin = taro
        .submit(
            "/signin",
            "/signin",
            &[
                ("email", "taro@example.com"),
                ("password", "lantern pebble orchard"),
            ],
        )
        .await;
    assert_ne!(
        signin
            .headers
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap()),
        Some("/signin/code"),
        "a closed account cannot sign in"
    );
}
