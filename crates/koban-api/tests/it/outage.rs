//! The database goes away and comes back, through a proxy the test cuts and restores (the
//! shared test server itself is never stopped): meanwhile requests answer 503 with a problem
//! and `Retry-After`, `/readyz` says not ready and nothing is half done; afterwards the
//! service works again by itself, with no restart.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::helpers::{get, pg_app_at, post, postgres_url, test_config};
use crate::payments::idem;

/// A TCP proxy to the database that can be cut (every connection dropped, new ones closed at
/// once) and restored.
struct Proxy {
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    /// Listens on a free loopback port in front of `target`.
    async fn start(target: SocketAddr) -> (Proxy, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (is_cut, all) = (cut.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                all.lock().unwrap().push(link.abort_handle());
            }
        });
        (Proxy { cut, links }, addr)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_answers_503_and_the_service_recovers_by_itself() {
    let url = postgres_url();
    let Some((head, rest)) = url.split_once('@') else {
        panic!("a test URL with user@host:port/db");
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut targets) = tokio::net::lookup_host(authority).await else {
        eprintln!("SKIPPED: {authority} does not resolve");
        return;
    };
    let target = targets.next().expect("an address");
    let (proxy, addr) = Proxy::start(target).await;
    let through = format!("{head}@{addr}/{path}");
    let Some(app) = pg_app_at(&through, "outage", test_config(), Duration::from_secs(1)).await
    else {
        return;
    };
    let alice = app.user("alice@example.com").await;
    app.user("bob@example.com").await;
    app.fund(&alice.token, 10_000, "f1").await;
    let first = json!({ "to": "bob@example.com", "amount": 1_000 });
    let (sent, token) = app
        .stepped(&alice, &alice.token, "/v1/transfers", "first", first)
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{sent:?}");

    proxy.cut();
    let read = app.call(get("/v1/wallet").bearer(&token)).await;
    assert_eq!(
        (read.status, read.problem()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{read:?}"
    );
    assert!(read.retry_after() > 0, "{read:?}");
    let body = json!({ "to": "bob@example.com", "amount": 500 });
    let transfer = app
        .call(idem(
            post("/v1/transfers", body.clone()).bearer(&token),
            "during",
        ))
        .await;
    assert_eq!(
        (transfer.status, transfer.problem()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{transfer:?}"
    );
    let ready = app.call(get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);

    // Back: the pool reconnects by itself; the refused transfer is retried with its key.
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let read = app.call(get("/v1/wallet").bearer(&token)).await;
        if read.status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "not recovered: {read:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.call(get("/readyz")).await.status, StatusCode::OK);
    let retried = app
        .call(idem(post("/v1/transfers", body).bearer(&token), "during"))
        .await;
    assert_eq!(retried.status, StatusCode::CREATED, "{retried:?}");
    let wallet = app.wallet(&token).await;
    assert_eq!(wallet["balance"].as_i64(), Some(10_000 - 1_000 - 500));
    app.assert_money_invariants().await;
}
