//! Fraud operation stories: a mule collecting from several victims is held, alerted and made a
//! case within the flush; an analyst freezes the mule, reverses what the mule still holds (and
//! is refused where the money is gone), and compensates a victim with a second approver; every
//! step is in the audit chain. Rules are data: a custom rule decides, an invalid file is refused
//! on reload with the rule named and the live set kept.

use axum::http::StatusCode;
use koban_ledger::Currency;
use koban_pay::IssuerAccount;
use koban_store::LedgerStore;
use serde_json::{Value, json};

use crate::helpers::{TestApp, User, get, post};
use crate::operators::{enrolled_operator, operator};
use crate::payments::idem;
use crate::stories;

stories!(
    a_mule_is_caught_frozen_reversed_and_the_victim_compensated_with_a_second_approver,
    rules_are_data_reloaded_and_an_invalid_file_keeps_the_live_set,
);

impl<S: LedgerStore> TestApp<S> {
    pub(crate) async fn user_id(&self, user: &User) -> String {
        let me = self.call(get("/v1/me").bearer(&user.token)).await;
        me.body["id"].as_str().expect("an id").to_owned()
    }

    pub(crate) async fn balance(&self, token: &str) -> i64 {
        self.wallet(token).await["balance"].as_i64().unwrap()
    }

    /// A transfer to a new payee, confirmed with step-up (which rotates the session: the
    /// sender's token is updated); returns the reply body.
    async fn send_new(&self, from: &mut User, to: &str, amount: i64, key: &str) -> Value {
        let (reply, token) = self
            .stepped(
                from,
                &from.token,
                "/v1/transfers",
                key,
                json!({ "to": to, "amount": amount }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        from.token = token;
        reply.body
    }
}

async fn a_mule_is_caught_frozen_reversed_and_the_victim_compensated_with_a_second_approver<
    S: LedgerStore,
>(
    app: TestApp<S>,
) {
    let analyst = operator(&app, "analyst@example.com", "analyst").await;
    // An admin: admins may do everything an approver may.
    let mut approver_a = operator(&app, "approver.a@example.com", "admin").await;
    let approver_b = operator(&app, "approver.b@example.com", "approver").await;
    let mut mule = app.user("mule@example.com").await;
    let mule_id = app.user_id(&mule).await;
    app.user("accomplice@example.com").await;
    let mut victims = Vec::new();
    for i in 0..6 {
        let victim = app.user(&format!("victim{i}@example.com")).await;
        app.fund(&victim.token, 10_000, &format!("fund-{i}")).await;
        victims.push(victim);
    }

    // Five victims pay the fresh account: each needs step-up (a new payee) and goes through.
    let mut transfers = Vec::new();
    for (i, victim) in victims.iter_mut().take(5).enumerate() {
        let body = app
            .send_new(victim, "mule@example.com", 5_000, &format!("to-mule-{i}"))
            .await;
        assert_eq!(body["status"], "completed", "sender {i}: {body}");
        transfers.push(body["id"].as_str().unwrap().to_owned());
        // Written as the worker would: the next decision reads these windows from the
        // database (the other stories read them from the unwritten queue).
        app.pay.flush_records().await.unwrap();
    }
    // The sixth finds five senders to an account younger than a week: held in suspense.
    let held = app
        .send_new(&mut victims[5], "mule@example.com", 5_000, "to-mule-5")
        .await;
    assert_eq!(held["status"], "held", "{held}");
    let suspense = app
        .store
        .account(IssuerAccount::Suspense.id(Currency::Jpy))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(suspense.balance.credits_pending, 5_000);
    assert_eq!(app.balance(&mule.token).await, 25_000);

    // The mule moves most of it on before anyone acts.
    let onward = app
        .send_new(&mut mule, "accomplice@example.com", 19_000, "onward")
        .await;
    assert_eq!(onward["status"], "completed", "{onward}");

    // The analyst sees alerts and one case for the mule: the payments' decisions were
    // written before they answered, so nothing is left to write.
    let (written, _) = app.pay.flush_records().await.unwrap();
    assert_eq!(
        written, 0,
        "every decision of an answered payment is written"
    );
    // The held decision saw five earlier senders to a fresh account, from the database.
    let mut tx = koban_store::sql::SqlDb::begin_read(app.auth.db())
        .await
        .unwrap();
    let rows = koban_store::sql::SqlTx::query(
        &mut tx,
        "SELECT action, features, fired FROM risk_events WHERE kind = 'p2p' AND payee = $1 ORDER BY at",
        vec![mule_id.as_str().into()],
    )
    .await
    .unwrap();
    koban_store::sql::SqlTx::commit(tx).await.unwrap();
    assert_eq!(
        rows.len(),
        6,
        "one record per transfer, step-up retries included"
    );
    let last: Value = serde_json::from_str(&rows[5].text(1).unwrap()).unwrap();
    assert_eq!(rows[5].text(0).unwrap(), "hold");
    assert_eq!(last["payee_senders_1h"], 5, "{last}");
    assert_eq!(last["payee_new"], true);
    assert!(last["payee_age_s"].as_i64().unwrap() < 3_600, "{last}");
    assert_eq!(last["customer_count_1h"], 0, "each victim sent once");
    assert_eq!(
        last["device_known"], false,
        "bearer clients carry no device cookie"
    );
    assert!(rows[5].text(2).unwrap().contains("p2p.fan_in_young_payee"));
    let third: Value = serde_json::from_str(&rows[2].text(1).unwrap()).unwrap();
    assert_eq!(third["payee_senders_1h"], 2);
    assert!(rows[2].text(2).unwrap().contains("p2p.fan_in_alert"));
    // Windows no live rule reads for a P2P transfer are not computed, and not recorded.
    assert!(last.get("network_count_24h").is_none(), "{last}");
    let customer_cannot = app.call(get("/v1/ops/cases").bearer(&mule.token)).await;
    assert_eq!(customer_cannot.status, StatusCode::FORBIDDEN);
    let cases = app.call(get("/v1/ops/cases").bearer(&analyst.token)).await;
    assert_eq!(cases.status, StatusCode::OK, "{cases:?}");
    let case = cases
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["subject"] == mule_id.as_str())
        .unwrap_or_else(|| panic!("a case for the mule: {}", cases.body))
        .clone();
    assert_eq!(case["subject_role"], "payee");
    assert!(case["alerts"].as_i64().unwrap() >= 1, "{case}");
    assert!(case["first_event_at"].as_i64() <= case["first_alert_at"].as_i64());
    let case_id = case["id"].as_str().unwrap().to_owned();
    let alerts = app
        .call(get("/v1/ops/risk/alerts").bearer(&analyst.token))
        .await;
    assert!(
        alerts.body.to_string().contains("p2p.fan_in_young_payee"),
        "{}",
        alerts.body
    );
    let detail = app
        .call(get(&format!("/v1/ops/cases/{case_id}")).bearer(&analyst.token))
        .await;
    assert_eq!(detail.status, StatusCode::OK, "{detail:?}");
    let timeline = detail.body["timeline"].as_array().unwrap();
    let payments_in = timeline
        .iter()
        .filter(|e| e["source"] == "event" && e["what"] == "p2p")
        .count();
    assert_eq!(payments_in, 7, "six in, one onward: {}", detail.body);
    assert!(timeline.iter().any(|e| e["source"] == "alert"));

    // Assign, comment.
    let assigned = app
        .call(post(&format!("/v1/ops/cases/{case_id}/assign"), json!({})).bearer(&analyst.token))
        .await;
    assert_eq!(assigned.status, StatusCode::OK, "{assigned:?}");
    let commented = app
        .call(
            post(
                &format!("/v1/ops/cases/{case_id}/comments"),
                json!({ "body": "fan-in from six fresh victims" }),
            )
            .bearer(&analyst.token),
        )
        .await;
    assert_eq!(commented.status, StatusCode::NO_CONTENT, "{commented:?}");

    // Freeze the mule: nothing leaves the wallet any more.
    let frozen = app
        .call(
            post(
                &format!("/v1/ops/customers/{mule_id}/freeze"),
                json!({ "reason": "suspected mule" }),
            )
            .bearer(&analyst.token),
        )
        .await;
    assert_eq!(
        (frozen.status, frozen.body["wallets"].as_i64()),
        (StatusCode::OK, Some(1)),
        "{frozen:?}"
    );
    let blocked = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "accomplice@example.com", "amount": 100 }),
            )
            .bearer(&mule.token),
            "after-freeze",
        ))
        .await;
    assert_eq!(blocked.status, StatusCode::FORBIDDEN, "{blocked:?}");
    assert_eq!(app.balance(&mule.token).await, 6_000);

    // Reverse the first victim's transfer: the mule still holds it.
    let reversed = app
        .call(
            post(
                &format!("/v1/ops/transfers/{}/reverse", transfers[0]),
                json!({ "case_id": case_id, "note": "victim 0 did not make it" }),
            )
            .bearer(&analyst.token),
        )
        .await;
    assert_eq!(
        (reversed.status, reversed.body["status"].as_str()),
        (StatusCode::OK, Some("done")),
        "{reversed:?}"
    );
    assert_eq!(app.balance(&victims[0].token).await, 10_000);
    assert_eq!(app.balance(&mule.token).await, 1_000);
    let again = app
        .call(
            post(
                &format!("/v1/ops/transfers/{}/reverse", transfers[0]),
                json!({ "note": "twice" }),
            )
            .bearer(&analyst.token),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");
    // The second victim's money is gone from the mule: refused, nothing moves.
    let gone = app
        .call(
            post(
                &format!("/v1/ops/transfers/{}/reverse", transfers[1]),
                json!({ "case_id": case_id, "note": "victim 1" }),
            )
            .bearer(&analyst.token),
        )
        .await;
    assert_eq!(gone.status, StatusCode::CONFLICT, "{gone:?}");
    assert_eq!(app.balance(&mule.token).await, 1_000);
    assert_eq!(app.balance(&victims[1].token).await, 5_000);
    // The mule stays frozen after the reversal.
    let still = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "accomplice@example.com", "amount": 100 }),
            )
            .bearer(&mule.token),
            "after-reversal",
        ))
        .await;
    assert_eq!(still.status, StatusCode::FORBIDDEN, "{still:?}");

    // A compensation pays for a loss the ledger shows: victim 1's 5,000, which the mule no
    // longer holds. Never more than that, and always with a second operator, however small.
    let victim_1 = app.user_id(&victims[1]).await;
    let compensation = json!({ "customer": victim_1, "amount": 5_000, "case_id": case_id, "transfers": [transfers[1]], "note": "lost to the mule" });
    let no_key = app
        .call(post("/v1/ops/compensations", compensation.clone()).bearer(&approver_a.token))
        .await;
    assert_eq!(no_key.status, StatusCode::BAD_REQUEST, "{no_key:?}");
    let more = app
        .call(idem(
            post(
                "/v1/ops/compensations",
                json!({ "customer": victim_1, "amount": 5_001, "case_id": case_id, "transfers": [transfers[1]], "note": "x" }),
            )
            .bearer(&approver_a.token),
            "comp-more",
        ))
        .await;
    assert_eq!(
        (more.status, more.body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("more_than_lost")),
        "{more:?}"
    );
    let requested = app
        .call(idem(
            post("/v1/ops/compensations", compensation.clone()).bearer(&approver_a.token),
            "comp-1",
        ))
        .await;
    assert_eq!(
        (requested.status, requested.body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("pending")),
        "{requested:?}"
    );
    assert_eq!(requested.body["covers"], json!([transfers[1]]));
    assert_eq!(app.balance(&victims[1].token).await, 5_000);
    let action = requested.body["id"].as_str().unwrap().to_owned();
    // A retry with the same key answers the same request; the same key for another one is
    // refused.
    let retry = app
        .call(idem(
            post("/v1/ops/compensations", compensation.clone()).bearer(&approver_a.token),
            "comp-1",
        ))
        .await;
    assert_eq!(retry.body["id"], action.as_str(), "{retry:?}");
    let reused = app
        .call(idem(
            post(
                "/v1/ops/compensations",
                json!({ "customer": victim_1, "amount": 4_000, "case_id": case_id, "transfers": [transfers[1]], "note": "x" }),
            )
            .bearer(&approver_a.token),
            "comp-1",
        ))
        .await;
    assert_eq!(
        reused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{reused:?}"
    );
    // The pending request holds the loss: a second one for the same transfer is refused.
    let doubled = app
        .call(idem(
            post("/v1/ops/compensations", compensation.clone()).bearer(&analyst.token),
            "comp-double",
        ))
        .await;
    assert_eq!(
        (doubled.status, doubled.body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("more_than_lost")),
        "{doubled:?}"
    );
    let own = app
        .call(
            post(&format!("/v1/ops/risk-actions/{action}/approve"), json!({}))
                .bearer(&approver_a.token),
        )
        .await;
    assert_eq!(own.status, StatusCode::FORBIDDEN, "{own:?}");
    let not_approver = app
        .call(
            post(&format!("/v1/ops/risk-actions/{action}/approve"), json!({}))
                .bearer(&analyst.token),
        )
        .await;
    assert_eq!(not_approver.status, StatusCode::FORBIDDEN);
    // Nor through an account of the requester's making: an approver they invite (at an
    // address whose mailbox, and so whose enrolment link, they hold) is refused, and nothing
    // moves.
    let invited = app
        .with_step_up(
            &approver_a,
            &approver_a.token,
            "/v1/ops/operators",
            json!({ "email": "puppet@example.com", "role": "approver" }),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{invited:?}");
    if let Some(token) = invited.body["session"]["token"].as_str() {
        approver_a.token = token.to_owned();
    }
    let mail = app.mail("puppet@example.com").await;
    let link = mail
        .iter()
        .find_map(|(_, body)| body.split_whitespace().find(|w| w.contains("token=kop_")))
        .unwrap()
        .to_owned();
    let puppet = enrolled_operator(&app, &link, "puppet@example.com").await;
    let by_puppet = app
        .call(
            post(&format!("/v1/ops/risk-actions/{action}/approve"), json!({}))
                .bearer(&puppet.token),
        )
        .await;
    assert_eq!(by_puppet.status, StatusCode::FORBIDDEN, "{by_puppet:?}");
    assert_eq!(app.balance(&victims[1].token).await, 5_000);
    // The same for the sixth victim's held transfer: the admin asks for its release, and
    // their invitee cannot be the second pair of eyes; each refusal is an alert on them.
    let release = format!(
        "/v1/ops/held-transfers/{}/release",
        held["id"].as_str().unwrap()
    );
    let asked = app
        .call(post(&release, json!({})).bearer(&approver_a.token))
        .await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{asked:?}");
    let by_puppet = app
        .call(post(&release, json!({})).bearer(&puppet.token))
        .await;
    assert_eq!(by_puppet.status, StatusCode::FORBIDDEN, "{by_puppet:?}");
    let still = app
        .call(get("/v1/ops/held-transfers").bearer(&analyst.token))
        .await;
    assert!(
        still
            .body
            .to_string()
            .contains(held["id"].as_str().unwrap()),
        "still held: {still:?}"
    );
    let alerts = app
        .call(get("/v1/ops/risk/alerts").bearer(&analyst.token))
        .await;
    assert!(
        alerts.body.to_string().contains("ops.four_eyes_refused"),
        "{alerts:?}"
    );
    let pending = app
        .call(get("/v1/ops/risk-actions").bearer(&analyst.token))
        .await;
    assert_eq!(pending.body.as_array().unwrap().len(), 1, "{pending:?}");
    let approved = app
        .call(
            post(&format!("/v1/ops/risk-actions/{action}/approve"), json!({}))
                .bearer(&approver_b.token),
        )
        .await;
    assert_eq!(
        (approved.status, approved.body["status"].as_str()),
        (StatusCode::OK, Some("done")),
        "{approved:?}"
    );
    assert_eq!(app.balance(&victims[1].token).await, 10_000);
    let twice = app
        .call(
            post(&format!("/v1/ops/risk-actions/{action}/approve"), json!({}))
                .bearer(&approver_b.token),
        )
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    let losses = app
        .store
        .account(IssuerAccount::FraudLosses.id(Currency::Jpy))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(losses.balance.debits_posted, 5_000);
    // A bad compensation changes nothing.
    let bystander = app.user("bystander@example.com").await;
    let bystander_id = app.user_id(&bystander).await;
    // Someone who only tried to pay the mule (refused): the ledger shows no loss of theirs.
    let tried = app.user("tried@example.com").await;
    app.fund(&tried.token, 10_000, "fund-tried").await;
    let attempt = app
        .call(idem(
            post(
                "/v1/transfers",
                json!({ "to": "mule@example.com", "amount": 5_000 }),
            )
            .bearer(&tried.token),
            "tried-once",
        ))
        .await;
    assert_eq!(attempt.status, StatusCode::FORBIDDEN, "{attempt:?}");
    let tried_id = app.user_id(&tried).await;
    let victim_0 = app.user_id(&victims[0]).await;
    let victim_2 = app.user_id(&victims[2]).await;
    for (n, bad) in [
        json!({ "customer": victim_1, "amount": 0, "case_id": case_id, "transfers": [transfers[1]], "note": "x" }),
        json!({ "customer": victim_1, "amount": 10, "case_id": "no-such-case", "transfers": [transfers[1]], "note": "x" }),
        json!({ "customer": "nobody", "amount": 10, "case_id": case_id, "transfers": [transfers[1]], "note": "x" }),
        json!({ "customer": victim_1, "amount": 10, "case_id": case_id, "transfers": [transfers[1]], "note": "" }),
        // No transfer named, or not a transfer id.
        json!({ "customer": victim_1, "amount": 10, "case_id": case_id, "transfers": [], "note": "x" }),
        json!({ "customer": victim_1, "amount": 10, "case_id": case_id, "transfers": ["x"], "note": "x" }),
        // Already paid back in full: by this compensation, or by the reversal.
        json!({ "customer": victim_1, "amount": 1, "case_id": case_id, "transfers": [transfers[1]], "note": "x" }),
        json!({ "customer": victim_0, "amount": 1, "case_id": case_id, "transfers": [transfers[0]], "note": "x" }),
        // Another victim's loss named for this one.
        json!({ "customer": victim_1, "amount": 10, "case_id": case_id, "transfers": [transfers[2]], "note": "x" }),
        // Someone the case is not about, someone who only tried, and the mule itself.
        json!({ "customer": bystander_id, "amount": 10, "case_id": case_id, "transfers": [transfers[2]], "note": "x" }),
        json!({ "customer": tried_id, "amount": 10, "case_id": case_id, "transfers": [transfers[2]], "note": "x" }),
        json!({ "customer": mule_id, "amount": 10, "case_id": case_id, "transfers": [transfers[2]], "note": "x" }),
        // Named twice.
        json!({ "customer": victim_2, "amount": 10, "case_id": case_id, "transfers": [transfers[2], transfers[2]], "note": "x" }),
    ]
    .into_iter()
    .enumerate()
    {
        let refused = app
            .call(idem(
                post("/v1/ops/compensations", bad.clone()).bearer(&analyst.token),
                &format!("bad-{n}"),
            ))
            .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad} {refused:?}"
        );
    }
    // Without the transfers field the body is not a compensation request at all.
    let unnamed = app
        .call(idem(
            post(
                "/v1/ops/compensations",
                json!({ "customer": victim_1, "amount": 10, "case_id": case_id, "note": "x" }),
            )
            .bearer(&analyst.token),
            "bad-unnamed",
        ))
        .await;
    assert_eq!(unnamed.status, StatusCode::BAD_REQUEST, "{unnamed:?}");
    assert_eq!(app.balance(&victims[1].token).await, 10_000);
    assert_eq!(app.balance(&tried.token).await, 10_000);
    // A rejected request moves nothing, cannot be approved later, and gives its claim back:
    // the same loss can then be compensated.
    let small = app
        .call(idem(
            post(
                "/v1/ops/compensations",
                json!({ "customer": victim_2, "amount": 5_000, "case_id": case_id, "transfers": [transfers[2]], "note": "more" }),
            )
            .bearer(&analyst.token),
            "comp-small",
        ))
        .await;
    assert_eq!(
        (small.status, small.body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("pending")),
        "{small:?}"
    );
    let small_id = small.body["id"].as_str().unwrap().to_owned();
    let rejected = app
        .call(
            post(
                &format!("/v1/ops/risk-actions/{small_id}/reject"),
                json!({}),
            )
            .bearer(&approver_b.token),
        )
        .await;
    assert_eq!(rejected.body["status"], "rejected", "{rejected:?}");
    let late = app
        .call(
            post(
                &format!("/v1/ops/risk-actions/{small_id}/approve"),
                json!({}),
            )
            .bearer(&approver_a.token),
        )
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{late:?}");
    assert_eq!(app.balance(&victims[2].token).await, 5_000);
    let again = app
        .call(idem(
            post(
                "/v1/ops/compensations",
                json!({ "customer": victim_2, "amount": 5_000, "case_id": case_id, "transfers": [transfers[2]], "note": "after the rejection" }),
            )
            .bearer(&analyst.token),
            "comp-again",
        ))
        .await;
    assert_eq!(again.body["status"], "pending", "{again:?}");
    // A compensation asked for before compensations named their losses is never carried out.
    {
        use koban_store::sql::{SqlDb, SqlTx};
        let mut tx = app.auth.db().begin().await.unwrap();
        tx.execute(
            "INSERT INTO risk_actions (id, kind, case_id, customer, amount, currency, note, status, requested_by, requested_at) \
             VALUES ('legacy-1', 'compensate', $1, $2, 1000, 'JPY', 'asked before losses were named', 'pending', 'someone-else', 0)",
            koban_store::params![case_id.as_str(), victim_2.as_str()],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let legacy = app
        .call(post("/v1/ops/risk-actions/legacy-1/approve", json!({})).bearer(&approver_b.token))
        .await;
    assert_eq!(legacy.status, StatusCode::CONFLICT, "{legacy:?}");
    assert_eq!(app.balance(&victims[2].token).await, 5_000);

    // The held sixth transfer is voided: the victim has the money back.
    let void = app
        .call(
            post(
                &format!(
                    "/v1/ops/held-transfers/{}/void",
                    held["id"].as_str().unwrap()
                ),
                json!({}),
            )
            .bearer(&analyst.token),
        )
        .await;
    assert_eq!(void.status, StatusCode::OK, "{void:?}");
    assert_eq!(app.balance(&victims[5].token).await, 10_000);

    let closed = app
        .call(
            post(
                &format!("/v1/ops/cases/{case_id}/close"),
                json!({ "outcome": "fraud_confirmed" }),
            )
            .bearer(&analyst.token),
        )
        .await;
    assert_eq!(closed.body["outcome"], "fraud_confirmed", "{closed:?}");
    let stats = app
        .call(get("/v1/ops/risk/stats").bearer(&analyst.token))
        .await;
    assert_eq!(stats.status, StatusCode::OK, "{stats:?}");
    assert_eq!(stats.body["amount_compensated"], 5_000);
    assert_eq!(stats.body["amount_reversed"], 5_000);
    assert!(stats.body["time_to_detect_s"]["count"].as_u64().unwrap() >= 1);

    // Every step is in the audit chain, and the chain verifies.
    let audit = app
        .call(get("/v1/ops/audit?limit=200").bearer(&analyst.token))
        .await
        .body
        .to_string();
    for action in [
        "risk.case_assigned",
        "risk.case_commented",
        "risk.account_frozen",
        "risk.reversal_requested",
        "risk.reversal_done",
        "risk.reversal_refused",
        "risk.compensation_requested",
        "risk.compensation_done",
        "risk.action_rejected",
        "risk.case_closed",
    ] {
        assert!(audit.contains(action), "{action} in {audit}");
    }
    let report = koban_shared::audit::verify(app.auth.db(), app.auth.audit_key(), &[])
        .await
        .unwrap();
    assert!(report.first_broken.is_none(), "{report:?}");
    app.assert_money_invariants().await;
}

async fn rules_are_data_reloaded_and_an_invalid_file_keeps_the_live_set<S: LedgerStore>(
    app: TestApp<S>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    let custom = format!(
        "{}\n[[rule]]\nname = \"custom.deny_7777\"\ndescription = \"a test rule\"\nwhen = 'event == \"p2p\" && amount == 7777'\naction = \"deny\"\nscore = 10\nreason = \"test\"\n",
        koban_pay::koban_risk::DEFAULT_RULES
    );
    std::fs::write(&path, &custom).unwrap();
    let rules = koban_pay::RiskRules::load(Some(&path)).unwrap();
    let pay = app.pay.clone().with_risk_rules(rules);
    let app = app.with_pay(pay);
    let admin = operator(&app, "admin@example.com", "admin").await;
    let analyst = operator(&app, "analyst@example.com", "analyst").await;
    let mut alice = app.user("alice@example.com").await;
    app.user("bob@example.com").await;
    app.fund(&alice.token, 50_000, "f").await;
    // Bob becomes a known payee first.
    app.send_new(&mut alice, "bob@example.com", 100, "first")
        .await;

    let send = |key: &'static str, amount: i64| {
        idem(
            post(
                "/v1/transfers",
                json!({ "to": "bob@example.com", "amount": amount }),
            )
            .bearer(&alice.token),
            key,
        )
    };
    let declined = app.call(send("k1", 7_777)).await;
    assert_eq!(
        (declined.status, declined.problem()),
        (StatusCode::UNPROCESSABLE_ENTITY, "payment-declined"),
        "{declined:?}"
    );
    assert_eq!(declined.body["code"], "risk_declined", "no rule is named");
    assert!(!declined.body.to_string().contains("custom.deny_7777"));
    let allowed = app.call(send("k2", 7_776)).await;
    assert_eq!(allowed.status, StatusCode::CREATED, "{allowed:?}");

    let before = app
        .call(get("/v1/ops/risk/rules").bearer(&analyst.token))
        .await;
    let digest = before.body["digest"].as_str().unwrap().to_owned();
    assert!(before.body.to_string().contains("custom.deny_7777"));

    // An invalid file: refused with the rule and the problem named; the live set stays.
    std::fs::write(
        &path,
        custom.replace("amount == 7777", "amount == 7777 && no_such_feature > 1"),
    )
    .unwrap();
    let not_admin = app
        .call(post("/v1/ops/risk/rules/reload", json!({})).bearer(&analyst.token))
        .await;
    assert_eq!(not_admin.status, StatusCode::FORBIDDEN);
    let refused = app
        .call(post("/v1/ops/risk/rules/reload", json!({})).bearer(&admin.token))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{refused:?}"
    );
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("custom.deny_7777") && detail.contains("no_such_feature"),
        "{detail}"
    );
    let after = app
        .call(get("/v1/ops/risk/rules").bearer(&analyst.token))
        .await;
    assert_eq!(after.body["digest"], digest.as_str());
    assert_eq!(
        app.call(send("k3", 7_777)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // A valid file without the rule: reloaded, and the same payment goes through.
    std::fs::write(&path, koban_pay::koban_risk::DEFAULT_RULES).unwrap();
    let reloaded = app
        .call(post("/v1/ops/risk/rules/reload", json!({})).bearer(&admin.token))
        .await;
    assert_eq!(reloaded.status, StatusCode::OK, "{reloaded:?}");
    assert_ne!(reloaded.body["digest"], digest.as_str());
    assert_eq!(
        app.call(send("k4", 7_777)).await.status,
        StatusCode::CREATED
    );

    // Each decision was recorded with the rules that fired and the features they saw.
    app.pay.flush_records().await.unwrap();
    let mut tx = koban_store::sql::SqlDb::begin_read(app.auth.db())
        .await
        .unwrap();
    let rows = koban_store::sql::SqlTx::query(
        &mut tx,
        "SELECT action, fired, features FROM risk_events WHERE kind = 'p2p' AND amount = 7777 ORDER BY at",
        vec![],
    )
    .await
    .unwrap();
    koban_store::sql::SqlTx::commit(tx).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].text(0).unwrap(), "deny");
    assert!(rows[0].text(1).unwrap().contains("custom.deny_7777"));
    assert!(rows[0].text(2).unwrap().contains("\"amount\":7777"));
    assert_eq!(
        rows[2].text(0).unwrap(),
        "allow",
        "{}",
        rows[2].text(1).unwrap()
    );
    let audit = app
        .call(get("/v1/ops/audit").bearer(&analyst.token))
        .await
        .body
        .to_string();
    assert!(audit.contains("risk.rules_refused") && audit.contains("risk.rules_reloaded"));
}
