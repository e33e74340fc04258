//! The shared conformance suite against the embedded SQLite backend.

use koban_ledger::Timestamp;
use koban_store::conformance::Fixture;
use koban_store::{Clock, conformance_tests};
use koban_store_sqlite::{SqliteConfig, SqliteStore};

async fn fresh(_name: &str) -> Option<Fixture<SqliteStore>> {
    let dir = tempfile::tempdir().expect("temp dir");
    // The directory must outlive the store; tests are short, so it is left for the OS to clean.
    let path = dir.keep().join("ledger.db");
    let (clock, handle) = Clock::manual(Timestamp::from_nanos(1_700_000_000_000_000_000));
    let store = SqliteStore::open(
        &path,
        SqliteConfig {
            clock,
            ..SqliteConfig::default()
        },
    )
    .expect("store opens");
    Some(Fixture {
        store,
        clock: handle,
    })
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
