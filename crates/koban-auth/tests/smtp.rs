//! Notifications through an SMTP relay: delivered when the relay answers, retried with backoff
//! when it does not, and never written to the local mailbox.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use koban_auth::outbox::SmtpConfig;
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
    let store = SqliteStore::open(&dir.path().join("k.db"), SqliteConfig::default()).unwrap();
    let config = AuthConfig {
        smtp: Some(
            SmtpConfig::parse(
                &format!("smtp://127.0.0.1:{port}"),
                "Koban <no-reply@koban.example>",
            )
            .unwrap(),
        ),
        ..AuthConfig::default()
    };
    let (clock, _) = Clock::manual(Timestamp::from_nanos(1_795_564_800_000_000_000));
    (
        Auth::new(store.sql(), ServerKeys::from_master([9; 32]), clock, config).unwrap(),
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
