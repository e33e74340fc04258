//! Notifications through an SMTP relay: delivered when the relay answers, retried with backoff
//! when it does not, and never written to the local mailbox.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use koban_auth::outbox::{SmtpConfig, SmtpSecurity};
use koban_auth::{
    Auth, AuthConfig, Client, DisplayName, Email, NewSignup, Secret, ServerKeys, UserKind,
};
use koban_ledger::Timestamp;
use koban_store::sql::{SqlDb, SqlTxExt};
use koban_store::{Clock, LedgerStore};
use koban_store_sqlite::{SqliteConfig, SqliteStore};

/// A minimal SMTP server that accepts every message and keeps what it was sent.
fn fake_relay() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = stream.write_all(b"220 fake ESMTP\r\n");
            let mut data = None::<String>;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(body) = data.as_mut() {
                    if line == ".\r\n" {
                        kept.lock().unwrap().push(std::mem::take(body));
                        data = None;
                        let _ = stream.write_all(b"250 queued\r\n");
                    } else {
                        body.push_str(&line);
                    }
                } else {
                    let reply: &[u8] =
                        match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                            "EHLO" | "HELO" => b"250 fake\r\n",
                            "DATA" => {
                                data = Some(String::new());
                                b"354 go on\r\n"
                            }
                            "QUIT" => b"221 bye\r\n",
                            _ => b"250 ok\r\n",
                        };
                    let _ = stream.write_all(reply);
                }
                line.clear();
            }
        }
    });
    (port, received)
}

async fn auth_with_relay(
    port: u16,
    dir: &tempfile::TempDir,
) -> (Auth<<SqliteStore as LedgerStore>::Sql>, SqliteStore) {
    let smtp = SmtpConfig::parse(
        &format!("smtp://127.0.0.1:{port}"),
        "Koban <no-reply@koban.example>",
        None,
    )
    .unwrap();
    auth_with(smtp, dir).await
}

async fn auth_with(
    smtp: SmtpConfig,
    dir: &tempfile::TempDir,
) -> (Auth<<SqliteStore as LedgerStore>::Sql>, SqliteStore) {
    let store = SqliteStore::open(&dir.path().join("k.db"), SqliteConfig::default()).unwrap();
    let config = AuthConfig {
        smtp: Some(smtp),
        ..AuthConfig::default()
    };
    let (clock, _) = Clock::manual(Timestamp::from_nanos(1_795_564_800_000_000_000));
    (
        Auth::new(store.sql(), ServerKeys::from_master([9; 32]), clock, config)
            .await
            .unwrap(),
        store,
    )
}

fn signup(email: &str) -> NewSignup {
    NewSignup {
        kind: UserKind::Customer,
        email: Email::parse(email).unwrap(),
        password: Secret::new("lantern pebble orchard".into()),
        display_name: DisplayName::parse("Relay Test").unwrap(),
        legal_name: None,
        date_of_birth: None,
        phone: None,
        lang: koban_shared::lang::Lang::En,
    }
}

fn client() -> Client {
    Client::from_ip("192.0.2.1".parse().unwrap(), None, "test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_through_the_relay_and_not_to_the_mailbox() {
    let (port, received) = fake_relay();
    let dir = tempfile::tempdir().unwrap();
    let (auth, _store) = auth_with_relay(port, &dir).await;
    auth.signup(signup("relay@example.com"), &client())
        .await
        .unwrap();
    assert_eq!(auth.deliver_outbox(10).await.unwrap(), 1);
    let sent = received.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains("To: relay@example.com"), "{}", sent[0]);
    assert!(sent[0].contains("Subject: Your Koban verification code"));
    assert!(
        auth.mailbox("relay@example.com", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(auth.outbox_pending().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_is_down_means_a_retry_later_not_a_lost_message() {
    // A port with nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let (auth, _store) = auth_with_relay(port, &dir).await;
    auth.signup(signup("later@example.com"), &client())
        .await
        .unwrap();
    assert_eq!(auth.deliver_outbox(10).await.unwrap(), 0);
    assert_eq!(auth.outbox_pending().await.unwrap(), 1, "the message waits");
    let mut tx = auth.db().begin().await.unwrap();
    let row = tx
        .query_one(
            "SELECT attempts, next_attempt_at - created_at FROM outbox",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(row.i64(0).unwrap(), 1);
    assert!(row.i64(1).unwrap() >= 1_000, "retried after a backoff");
    drop(tx);
    // Not due yet: nothing is attempted.
    assert_eq!(auth.deliver_outbox(10).await.unwrap(), 0);
    let mut tx = auth.db().begin().await.unwrap();
    let attempts = tx
        .query_one("SELECT attempts FROM outbox", vec![])
        .await
        .unwrap()
        .i64(0)
        .unwrap();
    assert_eq!(attempts, 1);
}

/// A test certificate authority (PEM) and a server certificate it signed for `localhost`.
#[allow(deprecated)] // ring, as the server under test uses
fn test_pki() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    (ca.pem(), Arc::new(server))
}

/// What a TLS relay saw: the messages, the credentials given with AUTH PLAIN, and whether a
/// message was sent before TLS started.
#[derive(Default)]
struct Seen {
    messages: Mutex<Vec<String>>,
    credentials: Mutex<Vec<String>>,
    sent_in_clear: AtomicBool,
}

/// One SMTP session over `io`. With `offer_starttls`, returns the stream when the client
/// asks for STARTTLS (the caller wraps it in TLS and runs a new session).
async fn session<IO>(io: IO, seen: Arc<Seen>, offer_starttls: bool) -> Option<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use base64::Engine;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut io = tokio::io::BufReader::new(io);
    let mut data = None::<String>;
    let mut line = String::new();
    while io.read_line(&mut line).await.unwrap_or(0) > 0 {
        let reply: &[u8] = if let Some(body) = data.as_mut() {
            if line == ".\r\n" {
                seen.messages.lock().unwrap().push(std::mem::take(body));
                if offer_starttls {
                    seen.sent_in_clear.store(true, Ordering::SeqCst);
                }
                data = None;
                b"250 queued\r\n"
            } else {
                body.push_str(&line);
                b""
            }
        } else {
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" if offer_starttls => b"250-fake\r\n250 STARTTLS\r\n",
                "EHLO" => b"250-fake\r\n250 AUTH PLAIN LOGIN\r\n",
                "STAR" if offer_starttls => {
                    io.write_all(b"220 go ahead\r\n").await.unwrap();
                    return Some(io.into_inner());
                }
                "AUTH" => {
                    let encoded = line.trim_end().rsplit(' ').next().unwrap_or("");
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .unwrap_or_default();
                    seen.credentials
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&decoded).replace('\0', "|"));
                    b"235 ok\r\n"
                }
                "DATA" => {
                    data = Some(String::new());
                    b"354 go on\r\n"
                }
                "QUIT" => b"221 bye\r\n",
                _ => b"250 ok\r\n",
            }
        };
        if !reply.is_empty() {
            io.write_all(reply).await.unwrap();
            io.flush().await.unwrap();
        }
        line.clear();
    }
    None
}

/// A relay on loopback with TLS from the first byte (`starttls` false) or after STARTTLS.
async fn tls_relay(server: Arc<rustls::ServerConfig>, starttls: bool) -> (u16, Arc<Seen>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let kept = seen.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), kept.clone());
            tokio::spawn(async move {
                if starttls {
                    tcp.write_all(b"220 fake ESMTP\r\n").await.unwrap();
                    let Some(tcp) = session(tcp, seen.clone(), true).await else {
                        return;
                    };
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    session(tls, seen, false).await;
                } else {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    tls.write_all(b"220 fake ESMTP\r\n").await.unwrap();
                    session(tls, seen, false).await;
                }
            });
        }
    });
    (port, seen)
}

async fn delivered_over(url: &str, ca_pem: Option<String>, seen: &Seen) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let mut smtp = SmtpConfig::parse(url, "Koban <no-reply@koban.example>", None).unwrap();
    smtp.ca_pem = ca_pem.map(String::into_bytes);
    let (auth, _store) = auth_with(smtp, &dir).await;
    auth.signup(signup("tls@example.com"), &client())
        .await
        .unwrap();
    let delivered = auth.deliver_outbox(10).await.unwrap();
    if delivered == 1 {
        let messages = seen.messages.lock().unwrap();
        assert!(messages[0].contains("To: tls@example.com"), "{messages:?}");
    }
    delivered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_over_implicit_tls_with_credentials() {
    let (ca, server) = test_pki();
    let (port, seen) = tls_relay(server, false).await;
    let url = format!("smtps://koban%40mail.example:p%40ss%20word@localhost:{port}");
    assert_eq!(delivered_over(&url, Some(ca), &seen).await, 1);
    assert_eq!(
        *seen.credentials.lock().unwrap(),
        vec!["|koban@mail.example|p@ss word".to_owned()],
        "AUTH PLAIN with the decoded user name and password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_over_starttls_and_never_in_clear() {
    let (ca, server) = test_pki();
    let (port, seen) = tls_relay(server, true).await;
    let url = format!("smtp://koban:secret@localhost:{port}?tls=required");
    assert_eq!(delivered_over(&url, Some(ca), &seen).await, 1);
    assert!(!seen.sent_in_clear.load(Ordering::SeqCst));
    assert_eq!(seen.credentials.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_certificate_no_trusted_authority_signed_gets_nothing() {
    let (_, server) = test_pki();
    let (other_ca, _) = test_pki();
    for starttls in [false, true] {
        let (port, seen) = tls_relay(server.clone(), starttls).await;
        let url = if starttls {
            format!("smtp://koban:secret@localhost:{port}?tls=required")
        } else {
            format!("smtps://koban:secret@localhost:{port}")
        };
        assert_eq!(
            delivered_over(&url, Some(other_ca.clone()), &seen).await,
            0,
            "starttls {starttls}"
        );
        assert!(seen.messages.lock().unwrap().is_empty());
        assert!(
            seen.credentials.lock().unwrap().is_empty(),
            "no password sent"
        );
    }
}

#[test]
fn smtp_urls_say_how_to_protect_credentials_and_never_repeat_them() {
    let from = "Koban <no-reply@koban.example>";
    let tls = SmtpConfig::parse("smtps://u:pw@mail.example", from, None).unwrap();
    assert_eq!((tls.port, tls.security), (465, SmtpSecurity::Tls));
    let start = SmtpConfig::parse("smtp://u:pw@mail.example?tls=required", from, None).unwrap();
    assert_eq!((start.port, start.security), (587, SmtpSecurity::StartTls));
    let plain = SmtpConfig::parse("smtp://127.0.0.1:2525", from, None).unwrap();
    assert_eq!(
        (plain.port, plain.security, plain.credentials.is_none()),
        (2525, SmtpSecurity::Plain, true)
    );
    let from_file = SmtpConfig::parse(
        "smtps://u@mail.example",
        from,
        Some(Secret::new("filed".into())),
    )
    .unwrap();
    assert_eq!(from_file.credentials.unwrap().1.expose(), "filed");
    let sidecar = SmtpConfig::parse("smtp://relay.internal?tls=none", from, None).unwrap();
    assert_eq!(sidecar.security, SmtpSecurity::Plain);
    for url in [
        "smtp://mail.example",
        "smtp://mail.example?TLS=required",
        "smtp://mail.example?starttls=required",
        "smtp://mail.example?tls=required&tls=none",
        "smtps://mail.example?tls=wrapper",
        "smtp://u:hunter2@mail.example?tls=none",
        "smtp://u:hunter2@mail.example",
        "smtps://u@mail.example",
        "smtps://:hunter2@mail.example",
        "http://mail.example",
        "smtp://mail.example?tls=opportunistic",
        "smtps://mail.example/path",
        "smtps://",
        "hunter2",
    ] {
        let error = SmtpConfig::parse(url, from, None).unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{url}: {error}");
    }
    let debug = format!("{:?}", tls.credentials);
    assert!(!debug.contains("pw"), "{debug}");
}
