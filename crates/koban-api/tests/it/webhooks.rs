//! Webhooks outside development mode: `https://` only, to public addresses, verified against
//! the platform's roots plus the operator's own authorities; and delivery over TLS to a
//! receiver whose certificate a test authority signed.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use koban_auth::AuthConfig;
use koban_store::LedgerStore;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::helpers::{TestApp, get, post, sqlite_app, test_config};
use crate::payments::{qr_pay, verifies};

/// A test certificate authority and a certificate it signed for `localhost` and 127.0.0.1.
struct TestPki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

#[allow(deprecated)] // ring, as the server under test uses
fn test_pki() -> TestPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Koban test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
    )
    .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

type Seen = Arc<Mutex<Vec<(Vec<(String, String)>, String)>>>;

/// An HTTPS receiver on loopback: answers every POST with 200 and keeps its headers and body.
async fn tls_receiver(server: Arc<rustls::ServerConfig>) -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let kept = seen.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, kept) = (acceptor.clone(), kept.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut reader = BufReader::new(tls);
                let mut headers = Vec::new();
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).await.unwrap();
                    let Some((name, value)) = line.trim_end().split_once(": ") else {
                        break;
                    };
                    headers.push((name.to_ascii_lowercase(), value.to_owned()));
                }
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).await.unwrap();
                kept.lock()
                    .unwrap()
                    .push((headers, String::from_utf8(body).unwrap()));
                let mut tls = reader.into_inner();
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, seen)
}

/// A merchant with a webhooks key and a funded customer.
async fn merchant_and_customer<S: LedgerStore>(app: &TestApp<S>) -> (String, String) {
    let shop = app.user_of("merchant", "shop@example.com").await;
    let key = app
        .with_step_up(&shop, &shop.token, "/v1/merchant/api-keys", json!({ "name": "hooks", "environment": "test", "scopes": ["payments:write", "payments:read", "webhooks:manage"] }))
        .await;
    let alice = app.user("alice@example.com").await;
    app.fund(&alice.token, 20_000, "f1").await;
    (key.body["key"].as_str().unwrap().to_owned(), alice.token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_dev_only_https_to_public_addresses_is_accepted() {
    let app = sqlite_app(AuthConfig {
        dev: false,
        ..test_config()
    })
    .await;
    let (api_key, _) = merchant_and_customer(&app).await;
    for url in [
        "http://hooks.example.com/x",
        "https://127.0.0.1:8443/x",
        "https://localhost/x",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://10.0.0.8/x",
        "https://172.20.1.1/x",
        "https://192.168.0.10/x",
        "https://100.64.1.1/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/x",
        "https://[fe80::1]/x",
        "https://224.0.0.1/x",
        "https://0.0.0.0/x",
        "https://2130706433/x",
        "https://user:secret@hooks.example.com/x",
    ] {
        let refused = app
            .call(
                post(
                    "/v1/merchant/webhooks",
                    json!({ "url": url, "event_types": ["payment.succeeded"] }),
                )
                .bearer(&api_key),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {refused:?}"
        );
        assert!(
            !refused.body.to_string().contains("secret"),
            "no credential echoed: {refused:?}"
        );
    }
    let listed = app
        .call(get("/v1/merchant/webhooks").bearer(&api_key))
        .await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(0), "{listed:?}");
    // A public name is accepted; whether it resolves is checked at each delivery.
    let accepted = app
        .call(
            post(
                "/v1/merchant/webhooks",
                json!({ "url": "https://hooks.example.com/koban", "event_types": ["payment.succeeded"] }),
            )
            .bearer(&api_key),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{accepted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_over_tls_to_a_receiver_a_trusted_authority_signed() {
    let pki = test_pki();
    let app = sqlite_app(test_config()).await;
    let pay = koban_pay::Payments::new(
        app.store.clone(),
        app.auth.clone(),
        koban_pay::PayConfig {
            sandbox: true,
            tls_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
            ..koban_pay::PayConfig::default()
        },
    )
    .unwrap();
    let app = app.with_pay(pay);
    let (api_key, customer) = merchant_and_customer(&app).await;
    let (port, seen) = tls_receiver(pki.server.clone()).await;
    let created = app
        .call(
            post(
                "/v1/merchant/webhooks",
                json!({ "url": format!("https://localhost:{port}/hooks"), "event_types": ["payment.succeeded"] }),
            )
            .bearer(&api_key),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let endpoint = created.body["id"].as_str().unwrap().to_owned();

    let paid = qr_pay(&app, &api_key, &customer, 1).await;
    app.pay.tick().await.unwrap();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one delivery over TLS");
        let (headers, body) = &seen[0];
        let mut map = axum::http::HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        assert_eq!(verifies(&secret, &map, body), 1, "{headers:?}");
        assert_eq!(map["host"], format!("localhost:{port}").as_str());
        assert!(body.contains(&paid), "{body}");
    }
    let log = app
        .call(get(&format!("/v1/merchant/webhooks/{endpoint}/deliveries")).bearer(&api_key))
        .await;
    assert_eq!(log.body[0]["status"], "delivered", "{log:?}");
    assert!(log.body[0].get("last_error").is_none(), "{log:?}");

    // A receiver whose certificate no trusted authority signed gets nothing.
    let stranger = test_pki();
    let (other_port, other_seen) = tls_receiver(stranger.server.clone()).await;
    let created = app
        .call(
            post(
                "/v1/merchant/webhooks",
                json!({ "url": format!("https://localhost:{other_port}/hooks"), "event_types": ["payment.succeeded"] }),
            )
            .bearer(&api_key),
        )
        .await;
    let other = created.body["id"].as_str().unwrap().to_owned();
    app.clock.advance_secs(1);
    qr_pay(&app, &api_key, &customer, 2).await;
    app.pay.tick().await.unwrap();
    assert!(other_seen.lock().unwrap().is_empty());
    let log = app
        .call(get(&format!("/v1/merchant/webhooks/{other}/deliveries")).bearer(&api_key))
        .await;
    assert_eq!(
        (
            log.body[0]["status"].as_str(),
            log.body[0]["attempts"].as_i64(),
            log.body[0]["last_status_code"].as_i64(),
            log.body[0]["last_error"].as_str()
        ),
        (Some("pending"), Some(1), None, Some("tls_failed")),
        "an untrusted certificate is a failed attempt, and says so: {log:?}"
    );

    assert_eq!(seen.lock().unwrap().len(), 2, "the trusted one got both");

    // Nothing listening at the address: the log says the connection failed.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let created = app
        .call(
            post(
                "/v1/merchant/webhooks",
                json!({ "url": format!("https://localhost:{closed_port}/hooks"), "event_types": ["payment.succeeded"] }),
            )
            .bearer(&api_key),
        )
        .await;
    let nowhere = created.body["id"].as_str().unwrap().to_owned();
    app.clock.advance_secs(1);
    qr_pay(&app, &api_key, &customer, 3).await;
    app.pay.tick().await.unwrap();
    let log = app
        .call(get(&format!("/v1/merchant/webhooks/{nowhere}/deliveries")).bearer(&api_key))
        .await;
    assert_eq!(log.body[0]["last_error"], "connect_failed", "{log:?}");
}
