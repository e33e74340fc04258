//! The shared conformance suite against the embedded SQLite backend, and what only this
//! backend does (its writer's account cache).

use koban_ledger::{Currency, RejectReason, Timestamp};
use koban_store::conformance::{Fixture, account_id, issuer, mv, wallet};
use koban_store::{Clock, LedgerStore, conformance_tests};
use koban_store_sqlite::{SqliteConfig, SqliteStore};

/// A store on a fresh file at `path`, on a manual clock.
fn open_at(path: &std::path::Path) -> (SqliteStore, koban_store::ManualClock) {
    let (clock, handle) = Clock::manual(Timestamp::from_nanos(1_700_000_000_000_000_000));
    let store = SqliteStore::open(
        path,
        SqliteConfig {
            clock,
            ..SqliteConfig::default()
        },
    )
    .expect("store opens");
    (store, handle)
}

async fn fresh(_name: &str) -> Option<Fixture<SqliteStore>> {
    let dir = tempfile::tempdir().expect("temp dir");
    // The directory must outlive the store; tests are short, so it is left for the OS to clean.
    let (store, clock) = open_at(&dir.keep().join("ledger.db"));
    Some(Fixture { store, clock })
}

conformance_tests!(fresh);

#[test]
fn urls_map_to_paths() {
    use koban_store_sqlite::path_from_url;
    assert_eq!(
        path_from_url("sqlite://./koban-data/koban.db")
            .unwrap()
            .to_str(),
        Some("./koban-data/koban.db")
    );
    assert_eq!(
        path_from_url("sqlite:///tmp/x.db").unwrap().to_str(),
        Some("/tmp/x.db")
    );
    assert!(path_from_url("sqlite::memory:").is_err());
    assert!(path_from_url("postgres://x").is_err());
}

// The writer keeps the accounts it committed in memory; a write to the same database file by
// any other connection (another process, an operator's tool) must make it read them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_another_connection_is_seen_by_the_next_group() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger.db");
    let (store, _clock) = open_at(&path);
    let opened = store
        .create_accounts(vec![
            issuer(1, Currency::Jpy),
            wallet(2, Currency::Jpy),
            wallet(3, Currency::Jpy),
        ])
        .await
        .expect("store works");
    assert!(opened.iter().all(Result::is_ok));
    // Wallet 2 holds 10,000 as far as the writer knows.
    store
        .submit(vec![mv(100, 1, 2, 10_000, Currency::Jpy)])
        .await
        .expect("store works")
        .expect("funded");

    // Another connection leaves wallet 2 with 3,000.
    let other = rusqlite::Connection::open(&path).expect("second connection");
    other
        .busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy timeout");
    let changed = other
        .execute(
            "UPDATE accounts SET credits_posted = 3000 WHERE id = ?1",
            [&account_id(2).to_bytes()[..]],
        )
        .expect("update");
    assert_eq!(changed, 1);

    // Spending 5,000 must be refused: the writer reads the 3,000, not its memory of 10,000.
    let refused = store
        .submit(vec![mv(200, 2, 3, 5_000, Currency::Jpy)])
        .await
        .expect("store works");
    assert_eq!(
        refused.map(|_| ()).map_err(|r| r.reason),
        Err(RejectReason::ExceedsCredits)
    );
    // And what the writer then writes starts from 3,000.
    store
        .submit(vec![mv(201, 2, 3, 1_000, Currency::Jpy)])
        .await
        .expect("store works")
        .expect("within the balance");
    let wallet2 = store
        .account(account_id(2))
        .await
        .expect("store works")
        .expect("exists");
    assert_eq!(
        (
            wallet2.balance.credits_posted,
            wallet2.balance.debits_posted
        ),
        (3_000, 1_000)
    );
    store.shutdown().await;
}

// An unsynced transaction commits as any other, and leaves its connection synchronous again:
// the next ordinary transaction on it is flushed to disk before it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_transaction_commits_and_sets_its_connection_back_to_full() {
    use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _clock) = open_at(&dir.path().join("ledger.db"));
    let db = store.sql();
    let synchronous = async || {
        let mut tx = db.begin().await.unwrap();
        let level = tx
            .query_one("PRAGMA synchronous", vec![])
            .await
            .unwrap()
            .i64(0)
            .unwrap();
        tx.commit().await.unwrap();
        level
    };
    assert_eq!(synchronous().await, 2, "FULL");
    for commit in [true, false] {
        let mut tx = db.begin_unsynced().await.unwrap();
        assert_eq!(
            tx.query_one("PRAGMA synchronous", vec![])
                .await
                .unwrap()
                .i64(0)
                .unwrap(),
            1,
            "NORMAL within it"
        );
        tx.execute(
            "INSERT INTO outbox (id, recipient, subject, body, created_at, attempts, next_attempt_at) \
             VALUES ($1, 'a@example.com', 's', 'b', 0, 0, 0)",
            koban_store::params![if commit { "kept" } else { "rolled-back" }],
        )
        .await
        .unwrap();
        if commit {
            tx.commit().await.unwrap();
        } else {
            drop(tx);
        }
        // Committed or rolled back, the connection is FULL again.
        assert_eq!(synchronous().await, 2);
    }
    let rows = db.read("SELECT id FROM outbox", vec![]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].text(0).unwrap(), "kept");
}

// Commits do not checkpoint (their threshold is far above what this test writes): the
// checkpointer thread copies the WAL into the database file by itself, soon after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpointer_moves_committed_pages_into_the_file() {
    use koban_store::sql::{SqlDb, SqlTx};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger.db");
    let (store, _clock) = open_at(&path);
    let db = store.sql();
    let file_len = || std::fs::metadata(&path).expect("the file").len();
    // Long enough that the rows fill pages of their own.
    let body = "x".repeat(2_000);
    let before = file_len();
    for n in 0..200 {
        let mut tx = db.begin().await.unwrap();
        tx.execute(
            "INSERT INTO outbox (id, recipient, subject, body, created_at, attempts, next_attempt_at) \
             VALUES ($1, 'a@example.com', 's', $2, 0, 0, 0)",
            koban_store::params![format!("n{n}"), body.as_str()],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while file_len() < before + 200 * 2_000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        file_len() >= before + 200 * 2_000,
        "the file grew from {before} to {} bytes only",
        file_len()
    );
    store.shutdown().await;
}
