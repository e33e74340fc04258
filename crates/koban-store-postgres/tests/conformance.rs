//! The shared conformance suite against PostgreSQL, each test in a schema of its own, plus
//! tests of several writer processes (stood in for by separate pools) on one database.

use koban_ledger::{Currency, Timestamp, TransferRequest};
use koban_store::conformance::{Fixture, account_id, issuer, mv, transfer_id, wallet};
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use koban_store::{Clock, LedgerStore, conformance_tests};
use koban_store_postgres::{PgConfig, PgStore};

fn database_url() -> String {
    std::env::var("KOBAN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A unique schema per test and run, so tests run in parallel and reruns start empty.
fn schema_for(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t_{}_{}_{}",
        name.chars().take(30).collect::<String>(),
        std::process::id(),
        nanos % 1_000_000_000
    )
}

/// Connects a store on `schema`, or returns `None` (printing why) when PostgreSQL is not
/// reachable outside CI. In CI an unreachable database fails the test.
async fn connect(schema: &str, clock: Clock) -> Option<PgStore> {
    let config = PgConfig {
        clock,
        schema: Some(schema.to_owned()),
        connections_max: 4,
        ..PgConfig::default()
    };
    match PgStore::connect(&database_url(), config).await {
        Ok(store) => Some(store),
        Err(error) if std::env::var("CI").is_err() => {
            eprintln!(
                "SKIPPED: PostgreSQL at {} is not reachable ({error}); set KOBAN_TEST_DATABASE_URL",
                database_url()
            );
            None
        }
        Err(error) => panic!("PostgreSQL is required in CI: {error}"),
    }
}

async fn fresh(name: &str) -> Option<Fixture<PgStore>> {
    let (clock, handle) = Clock::manual(Timestamp::from_nanos(1_700_000_000_000_000_000));
    let store = connect(&schema_for(name), clock).await?;
    Some(Fixture {
        store,
        clock: handle,
    })
}

conformance_tests!(fresh);

/// Two stores with separate pools and committers stand in for two service instances writing
/// the same accounts at once: no lost update, no deadlock, no money created or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_accounts_safely() {
    let schema = schema_for("two_instances");
    let Some(first) = connect(&schema, Clock::system()).await else {
        return;
    };
    let Some(second) = connect(&schema, Clock::system()).await else {
        return;
    };
    let accounts = vec![
        issuer(1, Currency::Jpy),
        wallet(2, Currency::Jpy),
        wallet(3, Currency::Jpy),
        wallet(4, Currency::Jpy),
    ];
    for result in first.create_accounts(accounts).await.unwrap() {
        result.unwrap();
    }
    first
        .submit(vec![
            mv(1, 1, 2, 500, Currency::Jpy),
            mv(2, 1, 3, 500, Currency::Jpy),
            mv(3, 1, 4, 500, Currency::Jpy),
        ])
        .await
        .unwrap()
        .unwrap();
    let mut handles = Vec::new();
    for task in 0..24u128 {
        let store = if task % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        handles.push(tokio::spawn(async move {
            let mut applied = Vec::new();
            for i in 0..30u128 {
                // Opposite directions on purpose: a writer that locked in request order would deadlock.
                let (debit, credit) = match (task + i) % 3 {
                    0 => (2, 3),
                    1 => (3, 4),
                    _ => (4, 2),
                };
                let (debit, credit) = if task % 2 == 0 {
                    (debit, credit)
                } else {
                    (credit, debit)
                };
                let id = 1_000 + task * 100 + i;
                let units = u64::try_from(1 + (task * 7 + i * 13) % 90).unwrap();
                match store
                    .submit(vec![mv(id, debit, credit, units, Currency::Jpy)])
                    .await
                {
                    Ok(Ok(_)) => applied.push(transfer_id(id)),
                    Ok(Err(rejection)) => {
                        assert_eq!(rejection.reason, koban_ledger::RejectReason::ExceedsCredits)
                    }
                    Err(error) => panic!("store error: {error}"),
                }
            }
            applied
        }));
    }
    let mut applied = Vec::new();
    for handle in handles {
        applied.extend(handle.await.unwrap());
    }
    let mut total = 0i128;
    for id in 2..=4 {
        let balance = second
            .account(account_id(id))
            .await
            .unwrap()
            .unwrap()
            .balance
            .net_credit_posted();
        assert!(balance >= 0);
        total += balance;
    }
    assert_eq!(total, 1_500);
    let count = u64::try_from(applied.len()).unwrap();
    assert_eq!(
        second.count_transfers_present(applied).await.unwrap(),
        count
    );
    let report = first.audit().await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

/// The same new transfer id submitted through two instances at once is recorded once; the
/// loser of the race sees an idempotent replay (or, with other content, a conflict).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_from_two_instances_is_recorded_once() {
    let schema = schema_for("same_id");
    let Some(first) = connect(&schema, Clock::system()).await else {
        return;
    };
    let Some(second) = connect(&schema, Clock::system()).await else {
        return;
    };
    let accounts = vec![
        issuer(1, Currency::Jpy),
        wallet(2, Currency::Jpy),
        wallet(3, Currency::Jpy),
    ];
    for result in first.create_accounts(accounts).await.unwrap() {
        result.unwrap();
    }
    for round in 0..20u128 {
        let id = 500 + round;
        let request: TransferRequest = mv(id, 1, 2, 10, Currency::Jpy);
        let (a, b) = tokio::join!(
            first.submit(vec![request.clone()]),
            second.submit(vec![request])
        );
        let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
        assert!(
            a.replayed != b.replayed,
            "exactly one of the two applied it"
        );
        let conflicting = mv(id, 1, 3, 10, Currency::Jpy);
        let rejected = first.submit(vec![conflicting]).await.unwrap().unwrap_err();
        assert_eq!(
            rejected.reason,
            koban_ledger::RejectReason::IdempotencyConflict
        );
    }
    assert_eq!(
        second
            .account(account_id(2))
            .await
            .unwrap()
            .unwrap()
            .balance
            .credits_posted,
        200
    );
    assert!(first.audit().await.unwrap().ok());
}

/// A post racing the hold it posts, through two instances: the post either finds the hold
/// (and posts it) or does not (pending_not_found); it never fails for want of the hold's
/// accounts, which it could not have locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_racing_its_hold_across_instances_gets_a_true_answer() {
    let schema = schema_for("post_race");
    let Some(first) = connect(&schema, Clock::system()).await else {
        return;
    };
    let Some(second) = connect(&schema, Clock::system()).await else {
        return;
    };
    let accounts = vec![issuer(1, Currency::Jpy), wallet(2, Currency::Jpy)];
    for result in first.create_accounts(accounts).await.unwrap() {
        result.unwrap();
    }
    let mut posted = 0;
    for round in 0..40u128 {
        let pending = 10_000 + round;
        let hold = koban_store::conformance::hold(pending, 1, 2, 10, None);
        let post = TransferRequest::Post {
            id: transfer_id(20_000 + round),
            pending_id: transfer_id(pending),
            amount: None,
            metadata: koban_ledger::Metadata::empty(),
        };
        let (held, post_outcome) =
            tokio::join!(first.submit(vec![hold]), second.submit(vec![post]));
        held.unwrap().unwrap();
        match post_outcome.unwrap() {
            Ok(_) => posted += 1,
            Err(rejection) => assert_eq!(
                rejection.reason,
                koban_ledger::RejectReason::PendingNotFound
            ),
        }
    }
    let wallet = second
        .account(account_id(2))
        .await
        .unwrap()
        .unwrap()
        .balance;
    assert_eq!(wallet.credits_posted, 10 * posted);
    assert_eq!(wallet.credits_pending, 10 * (40 - posted));
    assert!(first.audit().await.unwrap().ok());
}

/// Asks `store` for `keys` until it gets them (a release runs in a task of its own), at most
/// five seconds.
async fn hold_soon(store: &PgStore, keys: &[&[u8]]) -> koban_store::sql::Held {
    let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    for _ in 0..500 {
        if let Some(held) = store.sql().try_hold(keys.clone()).await.unwrap() {
            return held;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the keys were not given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_one_instance_excludes_the_others_until_given_back_or_expired() {
    let schema = schema_for("instance_locks");
    let Some(first) = connect(&schema, Clock::system()).await else {
        return;
    };
    let Some(second) = connect(&schema, Clock::system()).await else {
        return;
    };
    let key = |k: &[u8]| vec![k.to_vec()];
    let held = first.sql().try_hold(key(b"w1")).await.unwrap();
    assert!(held.is_some());
    // Another instance gets none of a set that contains a held key, not even the free one.
    let both = vec![b"w1".to_vec(), b"w2".to_vec()];
    assert!(second.sql().try_hold(both.clone()).await.unwrap().is_none());
    let free = hold_soon(&first, &[b"w2"]).await;
    drop(free);
    // The holder's own instance may take over a key its earlier holder has not given back
    // (its callers serialise each key in memory first).
    let again = first.sql().try_hold(key(b"w1")).await.unwrap();
    assert!(again.is_some());
    drop(held);
    // The earlier holder's release does not free the key its successor took over.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(second.sql().try_hold(key(b"w1")).await.unwrap().is_none());
    drop(again);
    let given_back = hold_soon(&second, &[b"w1", b"w2"]).await;
    // A holder that never gives its key back (its process died) loses it once the lease ends.
    std::mem::forget(given_back);
    assert!(first.sql().try_hold(key(b"w1")).await.unwrap().is_none());
    let mut tx = first.sql().begin().await.unwrap();
    tx.execute(
        "UPDATE instance_locks SET expires_at = now() - interval '1 second'",
        vec![],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(first.sql().try_hold(both).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_locks_back_waits_in_key_order_and_never_deadlocks_with_a_taker() {
    let schema = schema_for("lock_order");
    let Some(store) = connect(&schema, Clock::system()).await else {
        return;
    };
    let count_left = || async {
        let mut tx = store.sql().begin().await.unwrap();
        let left = tx
            .query_one(
                "SELECT COUNT(*) FROM instance_locks WHERE key IN ('\\x6b31', '\\x6b32')",
                vec![],
            )
            .await
            .unwrap()
            .i64(0)
            .unwrap();
        tx.commit().await.unwrap();
        left
    };
    let held = store
        .sql()
        .try_hold(vec![b"k1".to_vec(), b"k2".to_vec()])
        .await
        .unwrap()
        .expect("free keys are taken");
    // A new version of k1's row lies after k2's on disk: a release that deletes in the order
    // rows lie would lock k2 first.
    const TOUCH_K1: &str =
        "UPDATE instance_locks SET expires_at = expires_at WHERE key = '\\x6b31'";
    const TOUCH_K2: &str =
        "UPDATE instance_locks SET expires_at = expires_at WHERE key = '\\x6b32'";
    let mut setup = store.sql().begin().await.unwrap();
    setup
        .execute(
            "CREATE TEMP TABLE k1_row ON COMMIT DROP AS SELECT * FROM instance_locks WHERE key = '\\x6b31'",
            vec![],
        )
        .await
        .unwrap();
    setup
        .execute("DELETE FROM instance_locks WHERE key = '\\x6b31'", vec![])
        .await
        .unwrap();
    setup
        .execute("INSERT INTO instance_locks SELECT * FROM k1_row", vec![])
        .await
        .unwrap();
    setup.commit().await.unwrap();
    // Another holder (as a taker does) has k1 locked when the release starts, and wants k2
    // next.
    let mut taker = store.sql().begin().await.unwrap();
    taker.execute(TOUCH_K1, vec![]).await.unwrap();
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Waits for the release only if the release took k2 before k1: then each waits for the
    // other, and PostgreSQL ends one of them after a second.
    let second = taker.execute(TOUCH_K2, vec![]).await;
    assert!(second.is_ok(), "the taker was ended: {second:?}");
    taker.commit().await.unwrap();
    let mut left = i64::MAX;
    for _ in 0..30 {
        left = count_left().await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the release was ended and its locks left behind");
}
