//! Several instances on one PostgreSQL database, as an attacker with one session would try
//! them: concurrent requests spread over the instances must meet the same limits and locks
//! as on one instance. Each instance here has its own memory (locks, queues, caches), as
//! separate processes do. SQLite is served by one process; only the lease story runs on both.

use std::sync::Arc;

use axum::http::StatusCode;
use futures_util::future::join_all;
use serde_json::json;

use crate::cards::{code, purchase, unissued_pan};
use crate::helpers::{TestApp, pg_instances, post};
use crate::operators::operator;
use crate::payments::idem;
use crate::stories;
use koban_shared::lease::Lease;
use koban_store::LedgerStore;
use koban_store::sql::{SqlDb, SqlTx};
use koban_store_postgres::PgStore;

/// The daily limit of an unverified wallet.
const DAILY_LIMIT: i64 = 50_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_spread_over_instances_keeps_the_daily_limit() {
    let Some(apps) = pg_instances("burst_limit", 2).await else {
        return;
    };
    let apps = Arc::new(apps);
    for round in 0..5 {
        // A payee per round: an unverified wallet may hold at most 100,000.
        let payee = format!("payee{round}@example.com");
        apps[0].user(&payee).await;
        let payer = format!("payer{round}@example.com");
        let token = payer_of(&apps[0], &payer, &payee, 60_000).await;

        // Eight transfers of 9,000 at once (below the amount that asks for step-up), four
        // through each instance, each on a task of its own: 72,000 asked for against 49,000
        // left of the day's limit.
        let amount = 9_000;
        let calls = (0..8).map(|i| {
            let (apps, token, payee) = (apps.clone(), token.clone(), payee.clone());
            tokio::spawn(async move {
                let body = json!({ "to": payee, "amount": amount });
                let call = post("/v1/transfers", body).bearer(&token);
                apps[i % 2].call(idem(call, &format!("burst-{i}"))).await
            })
        });
        let replies: Vec<_> = join_all(calls)
            .await
            .into_iter()
            .map(|reply| reply.expect("the task ends"))
            .collect();
        let mut moved = 1_000;
        let mut refused_by_limit = 0;
        for reply in &replies {
            match reply.status {
                StatusCode::CREATED => moved += amount,
                _ if reply.body["code"] == "daily_limit" => refused_by_limit += 1,
                _ => panic!("an answer other than moved or over the limit: {reply:?}"),
            }
        }
        assert!(
            moved <= DAILY_LIMIT,
            "round {round}: {moved} left the wallet today against a limit of {DAILY_LIMIT}"
        );
        // 1,000 + 5 × 9,000 is within the limit, a sixth is not: five go, three are refused.
        assert_eq!((moved, refused_by_limit), (46_000, 3), "{replies:?}");
        let wallet = apps[1].wallet(&token).await;
        assert_eq!(wallet["balance"].as_i64(), Some(60_000 - moved), "{wallet}");
    }
    for app in apps.iter() {
        app.assert_money_invariants().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_at_two_instances_moves_money_once_and_tells_once() {
    let Some(apps) = pg_instances("same_key", 2).await else {
        return;
    };
    let (a, b) = (&apps[0], &apps[1]);
    a.user("bob@example.com").await;
    let token = payer_of(a, "alice@example.com", "bob@example.com", 20_000).await;
    let notices_before = sent_notices(&apps, "alice@example.com").await;

    for round in 0..5 {
        let key = format!("same-{round}");
        let body = json!({ "to": "bob@example.com", "amount": 100 });
        let call = |app: &'static str| {
            let app = if app == "a" { a } else { b };
            app.call(idem(
                post("/v1/transfers", body.clone()).bearer(&token),
                &key,
            ))
        };
        let (one, two) = tokio::join!(call("a"), call("b"));
        let mut statuses = [one.status, two.status];
        statuses.sort();
        // Whichever comes second is told the first is in flight, or gets its answer.
        assert!(
            statuses == [StatusCode::OK, StatusCode::CREATED]
                || statuses == [StatusCode::CREATED, StatusCode::CONFLICT],
            "{one:?} {two:?}"
        );
        if let Some(done) = [&one, &two]
            .into_iter()
            .find(|r| r.status == StatusCode::OK)
        {
            assert_eq!(done.body["replayed"], true, "{done:?}");
        }
    }
    let wallet = a.wallet(&token).await;
    assert_eq!(wallet["balance"].as_i64(), Some(20_000 - 1_000 - 5 * 100));
    assert_eq!(
        sent_notices(&apps, "alice@example.com").await,
        notices_before + 5,
        "one \"you sent money\" notice per transfer"
    );
    for app in &apps {
        app.assert_money_invariants().await;
    }
}

/// Signs `payer` up with `funds` in the wallet and makes `payee` a known payee of theirs (a
/// first transfer of 1,000 with step-up), so that later small transfers need none; answers
/// the payer's token from then on.
async fn payer_of(app: &TestApp<PgStore>, payer: &str, payee: &str, funds: i64) -> String {
    let user = app.user(payer).await;
    // At most 50,000 a time, as the payment stories fund.
    let mut left = funds;
    while left > 0 {
        let now = left.min(50_000);
        app.fund(&user.token, now, &format!("funds-{left}")).await;
        left -= now;
    }
    let first = json!({ "to": payee, "amount": 1_000 });
    let (sent, token) = app
        .stepped(&user, &user.token, "/v1/transfers", "first", first)
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{sent:?}");
    token
}

/// How many "you sent money" notices `to` has, once every instance wrote its queue.
async fn sent_notices(apps: &[TestApp<PgStore>], to: &str) -> usize {
    for app in apps {
        app.pay.flush_records().await.expect("notices written");
    }
    apps[0]
        .mail(to)
        .await
        .iter()
        .filter(|(subject, _)| subject == "You sent money")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_security_codes_at_two_instances_meet_one_limit() {
    let Some(apps) = pg_instances("card_codes", 2).await else {
        return;
    };
    let apps = Arc::new(apps);
    let admin = operator(&apps[0], "admin@example.com", "admin").await;
    for round in 0..3 {
        let mut holder = apps[0]
            .holder(&format!("holder{round}@example.com"), &admin, 5_000)
            .await;
        let card = apps[0].ready_card(&mut holder, "Target").await;
        let wrong: Vec<String> = (100..130)
            .map(|n| n.to_string())
            .filter(|c| *c != card.cvc)
            .take(10)
            .collect();
        // Ten wrong codes at once, five through each instance, each on a task of its own.
        let guesses = (0..10).map(|i| {
            let apps = apps.clone();
            let mut attempt = purchase(&card, &format!("guess-{round}-{i}"), 100);
            attempt["security_code"] = json!(wrong[i]);
            attempt["merchant_id"] = json!(format!("mer-guess-{i}"));
            attempt["client_ip"] = json!(format!("198.51.100.{}", 100 + i));
            tokio::spawn(async move { apps[i % 2].authorize(attempt).await })
        });
        let answers: Vec<_> = join_all(guesses)
            .await
            .into_iter()
            .map(|answer| answer.expect("the task ends"))
            .collect();
        let checked = answers.iter().filter(|a| code(a) == "N7").count();
        let locked = answers.iter().filter(|a| code(a) == "62").count();
        // Three are checked (N7); the others find the card locked (62).
        assert_eq!((checked, locked), (3, 7), "round {round}: {answers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_reload_on_one_instance_is_in_force_on_the_others() {
    let Some(mut apps) = pg_instances("rules_reload", 2).await else {
        return;
    };
    // The first instance reads its rules from a file; an operator changes the file (payments
    // of 500 or more are declined) and reloads on that instance only.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    std::fs::write(&file, koban_pay::koban_risk::DEFAULT_RULES).unwrap();
    let rules = koban_pay::RiskRules::load(Some(&file)).unwrap();
    let a = apps.remove(0);
    let pay = a.pay.clone().with_risk_rules(rules);
    let a = a.with_pay(pay);
    let b = &apps[0];
    a.user("bob@example.com").await;
    let token = payer_of(&a, "alice@example.com", "bob@example.com", 20_000).await;
    let strict = format!(
        "{}\n[[rule]]\nname = \"test.no_large_p2p\"\ndescription = \"test\"\nwhen = 'event == \"p2p\" && amount >= 500'\naction = \"deny\"\nscore = 100\nreason = \"test\"\n",
        koban_pay::koban_risk::DEFAULT_RULES
    );
    std::fs::write(&file, &strict).unwrap();
    let admin = operator(&a, "admin@example.com", "admin").await;
    let reloaded = a
        .call(post("/v1/ops/risk/rules/reload", json!({})).bearer(&admin.token))
        .await;
    assert!(reloaded.status.is_success(), "{reloaded:?}");
    let digest = a.pay.risk_rules().current().digest();
    assert_ne!(b.pay.risk_rules().current().digest(), digest);

    // The other instance takes it at its next poll (its worker asks every 2 seconds).
    let taken = b.pay.sync_risk_rules().await.unwrap().expect("a newer set");
    assert_eq!(taken.digest(), digest);
    assert_eq!(
        b.pay.sync_risk_rules().await.unwrap().map(|s| s.digest()),
        None
    );
    let body = json!({ "to": "bob@example.com", "amount": 600 });
    let refused = b
        .call(idem(post("/v1/transfers", body).bearer(&token), "after"))
        .await;
    assert_eq!(refused.body["code"], "risk_declined", "{refused:?}");
    // A decision records the digest of the set it was made under.
    b.pay.flush_records().await.unwrap();
    let recorded: Vec<String> = b
        .pay
        .db()
        .read(
            "SELECT rules_digest FROM risk_events WHERE kind = 'p2p' AND amount = 600",
            vec![],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.text(0).unwrap())
        .collect();
    assert_eq!(recorded, [digest]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_testing_spread_over_instances_is_stopped_as_on_one() {
    let Some(apps) = pg_instances("card_testing", 2).await else {
        return;
    };
    let (a, b) = (&apps[0], &apps[1]);
    let admin = operator(a, "admin@example.com", "admin").await;
    let mut alice = a.holder("alice@example.com", &admin, 5_000).await;
    let card = a.ready_card(&mut alice, "Genuine").await;
    // Ten never-issued numbers from one merchant, taking turns between the instances: the
    // first five are checked (14), then the merchant is declined everywhere (05), as on one
    // instance; counted per instance, each would have seen only five.
    let mut answers = Vec::new();
    for i in 0..10u64 {
        let app = if i % 2 == 0 { a } else { b };
        let mut attempt = purchase(&card, &format!("test-{i}"), 1);
        attempt["pan"] = json!(unissued_pan(3_000 + i));
        attempt["merchant_id"] = json!("mer-tester");
        attempt["client_ip"] = json!(format!("192.0.2.{i}"));
        answers.push(code(&app.authorize(attempt).await).to_owned());
    }
    assert_eq!(
        answers,
        ["14", "14", "14", "14", "14", "05", "05", "05", "05", "05"]
    );
    // The genuine card at that merchant is declined too, on either instance.
    for (i, app) in [a, b].into_iter().enumerate() {
        let mut genuine = purchase(&card, &format!("genuine-{i}"), 100);
        genuine["merchant_id"] = json!("mer-tester");
        assert_eq!(code(&app.authorize(genuine).await), "05");
    }
    // One alert, however many instances saw the source cross the line.
    let actions = a
        .call(crate::helpers::get("/v1/ops/audit?limit=200").bearer(&admin.token))
        .await;
    let alerts = actions
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "alert.card_testing")
        .count();
    assert_eq!(alerts, 1, "{actions:?}");
}

stories!(a_lease_is_held_by_one_instance_at_a_time_and_changes_hands_with_a_new_fence);

/// Two holders of one lease stand in for two instances (each names itself afresh).
async fn a_lease_is_held_by_one_instance_at_a_time_and_changes_hands_with_a_new_fence<
    S: LedgerStore,
>(
    app: TestApp<S>,
) {
    let db = app.pay.db();
    let mut first = Lease::new("test_job");
    let mut second = Lease::new("test_job");
    assert!(first.hold(db).await.unwrap());
    let fence = first.fence().expect("held");
    assert!(!second.hold(db).await.unwrap());
    // Renewing keeps the fence; the other keeps being refused.
    assert!(first.hold(db).await.unwrap());
    assert_eq!(first.fence(), Some(fence));
    assert!(!Lease::new("test_job").hold(db).await.unwrap());
    // Another job's lease is its own.
    assert!(Lease::new("other_job").hold(db).await.unwrap());

    // Given up at shutdown: the next to ask takes it, with a new fence.
    first.release(db).await.unwrap();
    let mut third = Lease::new("test_job");
    assert!(third.hold(db).await.unwrap());
    assert_eq!(third.fence(), Some(fence + 1));
    assert!(!first.hold(db).await.unwrap());

    // A holder that died stops renewing; once its lease has run out, another takes it over.
    let mut tx = db.begin().await.unwrap();
    tx.execute(
        "UPDATE leases SET expires_at = 1 WHERE name = 'test_job'",
        vec![],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut fourth = Lease::new("test_job");
    assert!(fourth.hold(db).await.unwrap());
    assert_eq!(fourth.fence(), Some(fence + 2));
}
