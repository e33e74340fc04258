//! The conformance suite every backend runs: the same stories, the same assertions.
//!
//! A backend's test binary calls [`conformance_tests!`](crate::conformance_tests) with a factory
//! that returns a fresh, empty store on a manual clock (or `None` to skip, for an unreachable
//! optional database).

use std::collections::HashMap;

use koban_ledger::{
    Account, AccountFlags, AccountId, AccountRejection, Amount, Code, Currency, Metadata, Move,
    NewAccount, PendingOptions, RejectReason, StateChange, StateChangeRejection, TransferId,
    TransferKind, TransferRequest,
};
use rand::{Rng, SeedableRng};

use crate::{LedgerStore, ManualClock, PageRequest};

/// A fresh store and the handle of its manual clock.
pub struct Fixture<S> {
    pub store: S,
    pub clock: ManualClock,
}

/// Generates one `#[tokio::test]` per conformance story for a backend.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!(@tests $factory;
            accounts_open_idempotently, transfers_move_money_and_keep_history,
            bad_input_is_rejected_and_changes_nothing, batches_are_atomic,
            holds_post_void_and_expire, concurrent_transfers_keep_invariants,
            one_bad_batch_does_not_fail_its_neighbours, balance_overflow_is_rejected,
            not_ready_after_shutdown, shutdown_finishes_queued_batches);
    };
    (@tests $factory:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(fixture) = $factory(stringify!($name)).await {
                    $crate::conformance::$name(&fixture).await;
                    $crate::LedgerStore::shutdown(&fixture.store).await;
                }
            }
        )*
    };
}

pub fn account_id(n: u128) -> AccountId {
    AccountId::new(n).expect("non-zero id")
}

pub fn transfer_id(n: u128) -> TransferId {
    TransferId::new(n).expect("non-zero id")
}

pub fn amount(units: u64) -> Amount {
    Amount::new(units).expect("valid amount")
}

/// A wallet: may not go negative.
pub fn wallet(n: u128, currency: Currency) -> NewAccount {
    let flags = AccountFlags {
        debits_must_not_exceed_credits: true,
        ..AccountFlags::default()
    };
    NewAccount {
        id: account_id(n),
        currency,
        code: Code(1),
        flags,
    }
}

/// An issuer account without limits (the source of e-money in tests).
pub fn issuer(n: u128, currency: Currency) -> NewAccount {
    NewAccount {
        id: account_id(n),
        currency,
        code: Code(100),
        flags: AccountFlags::default(),
    }
}

pub fn mv(id: u128, debit: u128, credit: u128, units: u64, currency: Currency) -> TransferRequest {
    TransferRequest::Move(Move {
        id: transfer_id(id),
        debit: account_id(debit),
        credit: account_id(credit),
        amount: amount(units),
        currency,
        code: Code(7),
        reference: None,
        metadata: Metadata::empty(),
        pending: None,
    })
}

pub fn hold(
    id: u128,
    debit: u128,
    credit: u128,
    units: u64,
    timeout_s: Option<u32>,
) -> TransferRequest {
    let TransferRequest::Move(mut m) = mv(id, debit, credit, units, Currency::Jpy) else {
        unreachable!()
    };
    m.pending = Some(PendingOptions { timeout_s });
    TransferRequest::Move(m)
}

async fn open<S: LedgerStore>(store: &S, accounts: Vec<NewAccount>) {
    for result in store.create_accounts(accounts).await.expect("store works") {
        result.expect("account opens");
    }
}

async fn get<S: LedgerStore>(store: &S, id: u128) -> Account {
    store
        .account(account_id(id))
        .await
        .expect("store works")
        .expect("account exists")
}

/// (posted credits - posted debits, pending debits, pending credits)
async fn net<S: LedgerStore>(store: &S, id: u128) -> (i128, u64, u64) {
    let b = get(store, id).await.balance;
    (b.net_credit_posted(), b.debits_pending, b.credits_pending)
}

async fn submit_ok<S: LedgerStore>(
    store: &S,
    batch: Vec<TransferRequest>,
) -> koban_ledger::Applied {
    store
        .submit(batch)
        .await
        .expect("store works")
        .expect("batch applies")
}

async fn submit_rejected<S: LedgerStore>(store: &S, batch: Vec<TransferRequest>) -> RejectReason {
    match store.submit(batch).await.expect("store works") {
        Ok(applied) => panic!("expected a rejection, got {applied:?}"),
        Err(rejection) => rejection.reason,
    }
}

async fn audit_ok<S: LedgerStore>(store: &S) {
    let report = store.audit().await.expect("audit runs");
    assert!(report.ok(), "audit found problems: {:?}", report.problems);
}

pub async fn accounts_open_idempotently<S: LedgerStore>(f: &Fixture<S>) {
    let store = &f.store;
    open(
        store,
        vec![wallet(1, Currency::Jpy), issuer(2, Currency::Jpy)],
    )
    .await;
    // The same request again returns the same accounts.
    open(store, vec![wallet(1, Currency::Jpy)]).await;
    let conflicting = store
        .create_accounts(vec![wallet(1, Currency::Usd)])
        .await
        .unwrap();
    assert_eq!(conflicting, vec![Err(AccountRejection::Exists)]);
    assert_eq!(get(store, 1).await.currency, Currency::Jpy);
    let both = AccountFlags {
        debits_must_not_exceed_credits: true,
        credits_must_not_exceed_debits: true,
        ..AccountFlags::default()
    };
    let bad = NewAccount {
        id: account_id(3),
        currency: Currency::Jpy,
        code: Code(1),
        flags: both,
    };
    assert!(matches!(
        store.create_accounts(vec![bad]).await.unwrap()[0],
        Err(AccountRejection::Flags(_))
    ));
    assert!(store.account(account_id(3)).await.unwrap().is_none());
    assert!(store.account(account_id(99)).await.unwrap().is_none());
    // Closing needs no pending holds; a closed account takes no transfers.
    submit_ok(store, vec![hold(10, 2, 1, 5, None)]).await;
    let refused = store
        .change_account_state(account_id(1), StateChange::Close)
        .await
        .unwrap();
    assert_eq!(refused, Err(StateChangeRejection::HasPending));
    submit_ok(
        store,
        vec![TransferRequest::Void {
            id: transfer_id(11),
            pending_id: transfer_id(10),
            metadata: Metadata::empty(),
        }],
    )
    .await;
    let closed = store
        .change_account_state(account_id(1), StateChange::Close)
        .await
        .unwrap()
        .unwrap();
    assert!(closed.flags.closed);
    assert_eq!(
        submit_rejected(store, vec![mv(12, 2, 1, 5, Currency::Jpy)]).await,
        RejectReason::CreditAccountClosed
    );
    audit_ok(store).await;
}

pub async fn transfers_move_money_and_keep_history<S: LedgerStore>(f: &Fixture<S>) {
    let store = &f.store;
    open(
        store,
        vec![
            issuer(1, Currency::Jpy),
            wallet(2, Currency::Jpy),
            wallet(3, Currency::Jpy),
        ],
    )
    .await;
    let funded = submit_ok(store, vec![mv(100, 1, 2, 10_000, Currency::Jpy)]).await;
    assert!(!funded.replayed);
    let before_spend = funded.transfers[0].timestamp;
    f.clock.advance_secs(10);
    for i in 0..5u128 {
        submit_ok(store, vec![mv(200 + i, 2, 3, 1_000, Currency::Jpy)]).await;
    }
    assert_eq!(net(store, 1).await, (-10_000, 0, 0));
    assert_eq!(net(store, 2).await, (5_000, 0, 0));
    assert_eq!(net(store, 3).await, (5_000, 0, 0));
    let transfer = store
        .transfer(transfer_id(202))
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(
        (transfer.debit, transfer.credit, transfer.amount),
        (account_id(2), account_id(3), amount(1_000))
    );
    assert_eq!(transfer.kind, TransferKind::Posted);

    // History of account 2, newest first, in pages of 4: 204..200 then the funding.
    let first = store
        .account_transfers(account_id(2), PageRequest::new(None, 4).unwrap())
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<u128> = first.transfers.iter().map(|t| t.id.get()).collect();
    assert_eq!(ids, vec![204, 203, 202, 201]);
    let second = store
        .account_transfers(
            account_id(2),
            PageRequest::new(first.next_cursor, 4).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<u128> = second.transfers.iter().map(|t| t.id.get()).collect();
    assert_eq!(ids, vec![200, 100]);
    assert_eq!(second.next_cursor, None);
    assert!(
        store
            .account_transfers(account_id(77), PageRequest::new(None, 4).unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(PageRequest::new(None, 0).is_err() && PageRequest::new(None, 201).is_err());
    // A cursor that belongs to another account's history gives nothing.
    let foreign = store
        .account_transfers(
            account_id(3),
            PageRequest::new(Some(transfer_id(100)), 4).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(foreign.transfers.is_empty());

    // Balance at a past point: right after funding, account 2 held 10,000.
    let past = store
        .balance_at(account_id(2), before_spend)
        .await
        .unwrap()
        .expect("account existed");
    assert_eq!(past.net_credit_posted(), 10_000);
    let now = store
        .balance_at(account_id(2), koban_ledger::Timestamp::from_nanos(u64::MAX))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.net_credit_posted(), 5_000);
    let before_open = store
        .balance_at(account_id(2), koban_ledger::Timestamp::from_nanos(1))
        .await
        .unwrap();
    assert_eq!(before_open, None);
    audit_ok(store).await;
}

pub async fn bad_input_is_rejected_and_changes_nothing<S: LedgerStore>(f: &Fixture<S>) {
    let store = &f.store;
    open(
        store,
        vec![
            issuer(1, Currency::Jpy),
            wallet(2, Currency::Jpy),
            wallet(3, Currency::Usd),
            wallet(4, Currency::Jpy),
        ],
    )
    .await;
    submit_ok(store, vec![mv(100, 1, 2, 500, Currency::Jpy)]).await;
    let snapshot = async || {
        (
            net(store, 1).await,
            net(store, 2).await,
            net(store, 3).await,
            net(store, 4).await,
        )
    };
    let before = snapshot().await;
    let cases = [
        (
            mv(101, 2, 99, 1, Currency::Jpy),
            RejectReason::CreditAccountNotFound,
        ),
        (
            mv(102, 98, 2, 1, Currency::Jpy),
            RejectReason::DebitAccountNotFound,
        ),
        (
            mv(103, 2, 3, 1, Currency::Jpy),
            RejectReason::CurrencyMismatch,
        ),
        (
            mv(104, 2, 4, 1, Currency::Usd),
            RejectReason::CurrencyMismatch,
        ),
        (
            mv(105, 2, 4, 501, Currency::Jpy),
            RejectReason::ExceedsCredits,
        ),
        (mv(106, 2, 2, 1, Currency::Jpy), RejectReason::SameAccount),
        (
            mv(100, 1, 2, 501, Currency::Jpy),
            RejectReason::IdempotencyConflict,
        ),
        (
            mv(100, 1, 4, 500, Currency::Jpy),
            RejectReason::IdempotencyConflict,
        ),
        (
            hold(107, 1, 2, 1, Some(koban_ledger::HOLD_TIMEOUT_S_MAX + 1)),
            RejectReason::TimeoutTooLong,
        ),
        (
            TransferRequest::Void {
                id: transfer_id(108),
                pending_id: transfer_id(999),
                metadata: Metadata::empty(),
            },
            RejectReason::PendingNotFound,
        ),
        (
            TransferRequest::Post {
                id: transfer_id(109),
                pending_id: transfer_id(100),
                amount: None,
                metadata: Metadata::empty(),
            },
            RejectReason::PendingNotFound,
        ),
    ];
    for (request, reason) in cases {
        assert_eq!(
            submit_rejected(store, vec![request.clone()]).await,
            reason,
            "{request:?}"
        );
    }
    let TransferRequest::Move(mut with_reference) = mv(110, 1, 2, 1, Currency::Jpy) else {
        unreachable!()
    };
    with_reference.reference = Some(transfer_id(4242));
    assert_eq!(
        submit_rejected(store, vec![TransferRequest::Move(with_reference)]).await,
        RejectReason::ReferenceNotFound
    );
    assert_eq!(
        submit_rejected(store, vec![]).await,
        RejectReason::BatchEmpty
    );
    let too_many: Vec<_> = (0..=128u128)
        .map(|i| mv(1000 + i, 1, 2, 1, Currency::Jpy))
        .collect();
    assert_eq!(
        submit_rejected(store, too_many).await,
        RejectReason::BatchTooLarge
    );
    assert_eq!(
        submit_rejected(
            store,
            vec![
                mv(111, 1, 2, 1, Currency::Jpy),
                mv(111, 1, 2, 1, Currency::Jpy)
            ]
        )
        .await,
        RejectReason::DuplicateIdInBatch
    );
    // Frozen accounts neither send nor receive.
    store
        .change_account_state(account_id(2), StateChange::Freeze)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        submit_rejected(store, vec![mv(112, 2, 4, 1, Currency::Jpy)]).await,
        RejectReason::DebitAccountFrozen
    );
    assert_eq!(
        submit_rejected(store, vec![mv(113, 1, 2, 1, Currency::Jpy)]).await,
        RejectReason::CreditAccountFrozen
    );
    store
        .change_account_state(account_id(2), StateChange::Unfreeze)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot().await, before);
    for id in 101..=113u128 {
        assert!(
            store.transfer(transfer_id(id)).await.unwrap().is_none(),
            "rejected transfer {id} was recorded"
        );
    }
    // Values that cannot be built at all: zero, negative, oversized amounts and metadata.
    assert!(
        Amount::new(0).is_err() && Amount::from_i64(-5).is_err() && Amount::new(u64::MAX).is_err()
    );
    assert!(Metadata::parse((0..17).map(|i| (format!("k{i}"), "v"))).is_err());
    assert!(Metadata::parse([("note", "x".repeat(257))]).is_err());
    // An idempotent retry returns the original and moves nothing.
    let replay = submit_ok(store, vec![mv(100, 1, 2, 500, Currency::Jpy)]).await;
    assert!(replay.replayed);
    assert_eq!(replay.transfers[0].id, transfer_id(100));
    assert_eq!(snapshot().await, before);
    audit_ok(store).await;
}

pub async fn batches_are_atomic<S: LedgerStore>(f: &Fixture<S>) {
    let store = &f.store;
    open(
        store,
        vec![
            issuer(1, Currency::Jpy),
            wallet(2, Currency::Jpy),
            wallet(3, Currency::Jpy),
            wallet(4, Currency::Jpy),
        ],
    )
    .await;
    submit_ok(store, vec![mv(100, 1, 2, 1_000, Currency::Jpy)]).await;
    // A payment with a fee leg: the second leg overdraws, so neither applies.
    let rejection = store
        .submit(vec![
            mv(200, 2, 3, 900, Currency::Jpy),
            mv(201, 2, 4, 200, Currency::Jpy),
        ])
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (rejection.index, rejection.reason),
        (1, RejectReason::ExceedsCredits)
    );
    assert_eq!(net(store, 2).await.0, 1_000);
    assert_eq!(net(store, 3).await.0, 0);
    assert!(store.transfer(transfer_id(200)).await.unwrap().is_none());
    let applied = submit_ok(
        store,
        vec![
            mv(200, 2, 3, 900, Currency::Jpy),
            mv(201, 2, 4, 100, Currency::Jpy),
        ],
    )
    .await;
    assert_eq!(applied.transfers.len(), 2);
    assert_eq!(
        (
            net(store, 2).await.0,
            net(store, 3).await.0,
            net(store, 4).await.0
        ),
        (0, 900, 100)
    );
    // Retrying the whole batch replays it; mixing an old id with a new one is refused.
    assert!(
        submit_ok(
            store,
            vec![
                mv(200, 2, 3, 900, Currency::Jpy),
                mv(201, 2, 4, 100, Currency::Jpy)
            ]
        )
        .await
        .replayed
    );
    let mixed = submit_rejected(
        store,
        vec![
            mv(200, 2, 3, 900, Currency::Jpy),
            mv(202, 1, 4, 1, Currency::Jpy),
        ],
    )
    .await;
    assert_eq!(mixed, RejectReason::IdempotencyConflict);
    assert_eq!(net(store, 4).await.0, 100);
    audit_ok(store).await;
}

pub async fn holds_post_void_and_expire<S: LedgerStore>(f: &Fixture<S>) {
    let store = &f.store;
    let post = |id: u128, pending: u128, units: Option<u64>| TransferRequest::Post {
        id: transfer_id(id),
        pending_id: transfer_id(pending),
        amount: units.map(amount),
        metadata: Metadata::empty(),
    };
    let void = |id: u128, pending: u128| TransferRequest::Void {
        id: transfer_id(id),
        pending_id: transfer_id(pending),
        metadata: Metadata::empty(),
    };
    open(
        store,
        vec![
            issuer(1, Currency::Jpy),
            wallet(2, Currency::Jpy),
            wallet(3, Currency::Jpy),
        ],
    )
    .await;
    submit_ok(store, vec![mv(100, 1, 2, 1_000, Currency::Jpy)]).await;
    submit_ok(store, vec![hold(200, 2, 3, 600, None)]).await;
    assert_eq!(net(store, 2).await, (1_000, 600, 0));
    // Held money cannot be spent twice.
    assert_eq!(
        submit_rejected(store, vec![mv(201, 2, 3, 401, Currency::Jpy)]).await,
        RejectReason::ExceedsCredits
    );
    assert_eq!(
        submit_rejected(store, vec![post(202, 200, Some(601))]).await,
        RejectReason::PostExceedsPending
    );
    // Partial post: 450 moves, 150 is released.
    submit_ok(store, vec![post(203, 200, Some(450))]).await;
    assert_eq!(net(store, 2).await, (550, 0, 0));
    assert_eq!(net(store, 3).await, (450, 0, 0));
    assert_eq!(
        submit_rejected(store, vec![post(204, 200, None)]).await,
        RejectReason::PendingAlreadyPosted
    );
    assert_eq!(
        submit_rejected(store, vec![void(205, 200)]).await,
        RejectReason::PendingAlreadyPosted
    );
    assert!(
        submit_ok(store, vec![post(203, 200, Some(450))])
            .await
            .replayed
    );
    // Void releases everything.
    submit_ok(store, vec![hold(300, 2, 3, 100, None)]).await;
    submit_ok(store, vec![void(301, 300)]).await;
    assert_eq!(
        submit_rejected(store, vec![post(302, 300, None)]).await,
        RejectReason::PendingAlreadyVoided
    );
    assert_eq!(net(store, 2).await, (550, 0, 0));
    // A hold with a timeout releases itself once the sweep runs after the timeout.
    submit_ok(store, vec![hold(400, 2, 3, 500, Some(60))]).await;
    assert_eq!(store.expire_holds(100).await.unwrap(), 0);
    f.clock.advance_secs(61);
    assert_eq!(
        submit_rejected(store, vec![post(401, 400, None)]).await,
        RejectReason::PendingExpired
    );
    assert_eq!(
        net(store, 2).await,
        (550, 500, 0),
        "an expired hold still reserves until swept"
    );
    assert_eq!(store.expire_holds(100).await.unwrap(), 1);
    assert_eq!(store.expire_holds(100).await.unwrap(), 0);
    assert_eq!(net(store, 2).await, (550, 0, 0));
    assert_eq!(net(store, 3).await, (450, 0, 0));
    assert_eq!(
        submit_rejected(store, vec![void(402, 400)]).await,
        RejectReason::PendingExpired
    );
    // The expiry is a transfer of its own in the account's history.
    let page = store
        .account_transfers(account_id(2), PageRequest::new(None, 1).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        page.transfers[0].kind,
        TransferKind::ExpirePending {
            pending_id: transfer_id(400)
        }
    );
    audit_ok(store).await;
}

pub async fn concurrent_transfers_keep_invariants<S: LedgerStore>(f: &Fixture<S>) {
    let store = &f.store;
    open(
        store,
        vec![
            issuer(1, Currency::Jpy),
            wallet(2, Currency::Jpy),
            wallet(3, Currency::Jpy),
            wallet(4, Currency::Jpy),
        ],
    )
    .await;
    submit_ok(
        store,
        vec![
            mv(1, 1, 2, 1_000, Currency::Jpy),
            mv(2, 1, 3, 1_000, Currency::Jpy),
            mv(3, 1, 4, 1_000, Currency::Jpy),
        ],
    )
    .await;
    let tasks = 32u128;
    let per_task = 40u128;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(u64::try_from(task).unwrap());
            let mut applied = Vec::new();
            for i in 0..per_task {
                let debit = rng.random_range(2..=4u128);
                let credit = if debit == 4 { 2 } else { debit + 1 };
                let id = 10_000 + task * 1_000 + i;
                let units = rng.random_range(1..=400u64);
                if let Ok(Ok(_)) = store
                    .submit(vec![mv(id, debit, credit, units, Currency::Jpy)])
                    .await
                {
                    applied.push(transfer_id(id));
                }
            }
            applied
        }));
    }
    let mut applied = Vec::new();
    for handle in handles {
        applied.extend(handle.await.expect("task completes"));
    }
    assert!(!applied.is_empty());
    let mut total = 0i128;
    for id in 2..=4 {
        let (balance, _, _) = net(store, id).await;
        assert!(balance >= 0, "wallet {id} went negative: {balance}");
        total += balance;
    }
    assert_eq!(total, 3_000, "money was created or lost");
    let count = u64::try_from(applied.len()).unwrap();
    assert_eq!(store.count_transfers_present(applied).await.unwrap(), count);
    audit_ok(store).await;
}

pub async fn one_bad_batch_does_not_fail_its_neighbours<S: LedgerStore>(f: &Fixture<S>) {
    let store = &f.store;
    open(
        store,
        vec![issuer(1, Currency::Jpy), wallet(2, Currency::Jpy)],
    )
    .await;
    // Submitted together, these land in the same groups; every odd one is bad.
    let mut handles = Vec::new();
    for i in 0..200u128 {
        let store = store.clone();
        let request = if i % 2 == 0 {
            mv(100 + i, 1, 2, 10, Currency::Jpy)
        } else {
            mv(100 + i, 2, 1, 1_000_000, Currency::Jpy)
        };
        handles.push(tokio::spawn(async move {
            (i, store.submit(vec![request]).await)
        }));
    }
    let mut outcomes = HashMap::new();
    for handle in handles {
        let (i, outcome) = handle.await.unwrap();
        outcomes.insert(
            i,
            outcome
                .expect("store works")
                .map(|_| ())
                .map_err(|r| r.reason),
        );
    }
    for (i, outcome) in outcomes {
        if i % 2 == 0 {
            assert_eq!(outcome, Ok(()), "good transfer {i} failed");
        } else {
            assert_eq!(
                outcome,
                Err(RejectReason::ExceedsCredits),
                "bad transfer {i}"
            );
        }
    }
    assert_eq!(net(store, 2).await.0, 1_000);
    audit_ok(store).await;
}

pub async fn balance_overflow_is_rejected<S: LedgerStore>(f: &Fixture<S>) {
    let store = &f.store;
    open(
        store,
        vec![issuer(1, Currency::Jpy), issuer(2, Currency::Jpy)],
    )
    .await;
    submit_ok(
        store,
        vec![mv(10, 1, 2, koban_ledger::AMOUNT_MAX, Currency::Jpy)],
    )
    .await;
    assert_eq!(
        submit_rejected(store, vec![mv(11, 1, 2, 1, Currency::Jpy)]).await,
        RejectReason::BalanceOverflow
    );
    let b = get(store, 2).await.balance;
    assert_eq!(b.credits_posted, koban_ledger::AMOUNT_MAX);
    audit_ok(store).await;
}

pub async fn not_ready_after_shutdown<S: LedgerStore>(f: &Fixture<S>) {
    let store = &f.store;
    store.ping().await.expect("ready while running");
    open(
        store,
        vec![issuer(1, Currency::Jpy), wallet(2, Currency::Jpy)],
    )
    .await;
    store.shutdown().await;
    assert!(
        store.ping().await.is_err(),
        "a store whose writer stopped must not report ready"
    );
    let refused = store.submit(vec![mv(10, 1, 2, 5, Currency::Jpy)]).await;
    assert!(
        matches!(refused, Err(crate::StoreError::ShuttingDown)),
        "{refused:?}"
    );
}

pub async fn shutdown_finishes_queued_batches<S: LedgerStore>(f: &Fixture<S>) {
    let store = &f.store;
    open(
        store,
        vec![issuer(1, Currency::Jpy), wallet(2, Currency::Jpy)],
    )
    .await;
    let mut handles = Vec::new();
    for i in 0..300u128 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            (
                i,
                store
                    .submit(vec![mv(1_000 + i, 1, 2, 1, Currency::Jpy)])
                    .await,
            )
        }));
    }
    // Shut down while submissions are still arriving: each one is either applied and durable,
    // or refused as "shutting down"; none is left without an answer or answered wrongly.
    tokio::task::yield_now().await;
    store.shutdown().await;
    let (mut applied, mut refused) = (Vec::new(), 0u64);
    for handle in handles {
        match handle.await.expect("task completes") {
            (i, Ok(Ok(_))) => applied.push(transfer_id(1_000 + i)),
            (_, Err(crate::StoreError::ShuttingDown)) => refused += 1,
            (i, other) => panic!("submission {i} got {other:?}"),
        }
    }
    let count = u64::try_from(applied.len()).unwrap();
    assert_eq!(count + refused, 300);
    assert_eq!(store.count_transfers_present(applied).await.unwrap(), count);
    assert_eq!(get(store, 2).await.balance.credits_posted, count);
    audit_ok(store).await;
}
