//! The ISO 20022 file bank: linking by micro-deposits sent in a `pain.001`, top-ups paid in by
//! the customer's own transfer and settled by the bank's `camt.053`, payouts sent in a
//! `pain.001` and settled (or returned) by the bank's files, and every line that matches
//! nothing kept for an operator. The files Koban writes, and the statements the tests play as
//! the bank, validate against the published ISO 20022 schemas (`contract/iso20022`).

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use koban_store::LedgerStore;
use serde_json::json;

use crate::helpers::{TestApp, get, post};
use crate::operators::operator;
use crate::payments::idem;
use crate::stories;

stories!(iso20022_files_link_top_up_pay_out_and_flag_what_matches_nothing);

/// The issuer's account at the bank in these stories.
const ISSUER: &str = "0001-001-0000001";

/// Checks `xml` against a schema in `contract/iso20022` with `xmllint`; panics with its
/// complaint.
fn assert_valid(xml: &str, xsd: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file.xml");
    std::fs::write(&file, xml).unwrap();
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(root.join("contract/iso20022").join(xsd))
        .arg(&file)
        .output()
        .expect("xmllint runs (apt-get install libxml2-utils)");
    assert!(
        out.status.success(),
        "{xsd}: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The texts of every `<name ...>text</name>` in `xml`, in order.
fn texts(xml: &str, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&format!("<{name}")) {
        rest = &rest[at..];
        let Some(open_end) = rest.find('>') else {
            break;
        };
        let Some(close) = rest.find(&format!("</{name}>")) else {
            break;
        };
        found.push(rest[open_end + 1..close].to_owned());
        rest = &rest[close..];
    }
    found
}

/// A booked (or pending) line of a statement the bank sends.
struct Line<'a> {
    bank_ref: &'a str,
    credit: bool,
    amount: i64,
    status: &'a str,
    end_to_end: Option<&'a str>,
    remittance: Option<&'a str>,
    /// A return of an earlier payout (camt's return information).
    returned: bool,
    /// The payer's account of a credit, when the bank gives it.
    payer_account: Option<&'a str>,
}

fn entry(line: &Line<'_>) -> String {
    let indicator = if line.credit { "CRDT" } else { "DBIT" };
    let refs = line
        .end_to_end
        .map(|id| {
            format!(
                "<Refs><AcctSvcrRef>{}</AcctSvcrRef><EndToEndId>{id}</EndToEndId></Refs>",
                line.bank_ref
            )
        })
        .unwrap_or_else(|| format!("<Refs><AcctSvcrRef>{}</AcctSvcrRef></Refs>", line.bank_ref));
    let party = match (line.credit, line.payer_account) {
        (true, Some(account)) => format!(
            "<RltdPties><Dbtr><Pty><Nm>SUZUKI HANAKO</Nm></Pty></Dbtr>\
             <DbtrAcct><Id><Othr><Id>{account}</Id></Othr></Id></DbtrAcct></RltdPties>"
        ),
        (true, None) => {
            "<RltdPties><Dbtr><Pty><Nm>SUZUKI HANAKO</Nm></Pty></Dbtr></RltdPties>".into()
        }
        (false, _) => {
            "<RltdPties><Cdtr><Pty><Nm>ALICE EXAMPLE</Nm></Pty></Cdtr></RltdPties>".into()
        }
    };
    let remittance = line
        .remittance
        .map(|text| format!("<RmtInf><Ustrd>{text}</Ustrd></RmtInf>"))
        .unwrap_or_default();
    let returned = if line.returned {
        "<RtrInf><Rsn><Cd>AC04</Cd></Rsn></RtrInf>"
    } else {
        ""
    };
    format!(
        "<Ntry><Amt Ccy=\"JPY\">{amount}</Amt><CdtDbtInd>{indicator}</CdtDbtInd>{reversal}<Sts><Cd>{status}</Cd></Sts>\
         <BookgDt><Dt>2026-12-08</Dt></BookgDt><ValDt><Dt>2026-12-08</Dt></ValDt><AcctSvcrRef>{bank_ref}</AcctSvcrRef>\
         <BkTxCd/><NtryDtls><TxDtls>{refs}<Amt Ccy=\"JPY\">{amount}</Amt><CdtDbtInd>{indicator}</CdtDbtInd>\
         {party}{remittance}{returned}</TxDtls></NtryDtls></Ntry>",
        amount = line.amount,
        reversal = if line.returned {
            "<RvslInd>true</RvslInd>"
        } else {
            ""
        },
        status = line.status,
        bank_ref = line.bank_ref,
    )
}

/// A `camt.053.001.08` statement of `account` with `lines`.
fn camt053(message_id: &str, account: &str, lines: &[Line<'_>]) -> String {
    let entries: String = lines.iter().map(entry).collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.08\"><BkToCstmrStmt>\
         <GrpHdr><MsgId>{message_id}</MsgId><CreDtTm>2026-12-08T06:00:00Z</CreDtTm></GrpHdr>\
         <Stmt><Id>{message_id}-1</Id><CreDtTm>2026-12-08T06:00:00Z</CreDtTm>\
         <Acct><Id><Othr><Id>{account}</Id></Othr></Id><Ccy>JPY</Ccy></Acct>\
         <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy=\"JPY\">1000000</Amt>\
         <CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-12-08</Dt></Dt></Bal>{entries}</Stmt></BkToCstmrStmt></Document>\n"
    )
}

/// A `camt.054.001.08` notification of `account` with `lines`.
fn camt054(message_id: &str, account: &str, lines: &[Line<'_>]) -> String {
    let entries: String = lines.iter().map(entry).collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.054.001.08\"><BkToCstmrDbtCdtNtfctn>\
         <GrpHdr><MsgId>{message_id}</MsgId><CreDtTm>2026-12-08T06:00:00Z</CreDtTm></GrpHdr>\
         <Ntfctn><Id>{message_id}-1</Id><CreDtTm>2026-12-08T06:00:00Z</CreDtTm>\
         <Acct><Id><Othr><Id>{account}</Id></Othr></Id><Ccy>JPY</Ccy></Acct>{entries}</Ntfctn>\
         </BkToCstmrDbtCdtNtfctn></Document>\n"
    )
}

/// The files in the outbox folder, by name (no half-written ones).
fn outbox_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "xml")),
        "only finished .xml files: {files:?}"
    );
    files
}

async fn iso20022_files_link_top_up_pay_out_and_flag_what_matches_nothing<S: LedgerStore>(
    app: TestApp<S>,
) {
    let outbox = tempfile::tempdir().unwrap();
    let pay = koban_pay::Payments::new(
        app.store.clone(),
        app.auth.clone(),
        koban_pay::PayConfig {
            sandbox: true,
            settle_after_s: 5,
            file_bank: Some(koban_pay::connectors::FileBank {
                account: koban_pay::iso20022::ZenginAccount::parse(ISSUER).unwrap(),
                name: "Koban".into(),
                outbox: Some(outbox.path().to_owned()),
            }),
            ..koban_pay::PayConfig::default()
        },
    )
    .unwrap();
    let app = app.with_pay(pay);
    let admin = operator(&app, "admin@example.com", "admin").await;
    let alice = app.user("alice@example.com").await;
    app.verified(&alice, &admin, "Alice Example").await;
    let token = alice.token.clone();

    // An account number that is not bank, branch and number is refused before any step-up.
    let bad = app
        .call(
            post(
                "/v1/funding-sources/bank",
                json!({ "bank": "iso20022", "account_number": "12345" }),
            )
            .bearer(&token),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
    assert!(bad.problem().contains("unprocessable") || bad.status.is_client_error());

    // Linking sends the two micro-deposits in the next pain.001, to the customer's account
    // in their verified legal name.
    let (started, token) = app
        .stepped(
            &alice,
            &token,
            "/v1/funding-sources/bank",
            "l1",
            json!({ "bank": "iso20022", "account_number": "0005 123 7654321" }),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{started:?}");
    assert_eq!(started.body["bank"], "iso20022");
    let source = started.body["id"].as_str().unwrap().to_owned();
    // Transfers wait a minute for others to share their file.
    app.pay.tick().await.unwrap();
    assert!(outbox_files(outbox.path()).is_empty());
    app.clock.advance_secs(61);
    app.pay.tick().await.unwrap();
    let files = outbox_files(outbox.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let first = std::fs::read_to_string(&files[0]).unwrap();
    assert_valid(&first, "pain.001.001.09.xsd");
    assert_eq!(texts(&first, "Nm")[2..], ["Alice Example", "Alice Example"]);
    assert!(first.contains("<MmbId>0005123</MmbId>") && first.contains("<Id>7654321</Id>"));
    assert!(first.contains("<MmbId>0001001</MmbId>") && first.contains("<Id>0000001</Id>"));
    let micro_ids = texts(&first, "EndToEndId");
    let amounts: Vec<i64> = texts(&first, "InstdAmt")
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!((micro_ids.len(), amounts.len()), (2, 2));
    // The operators' API has the same file, noted as written.
    let listed = app
        .call(get("/v1/ops/bank/files").bearer(&admin.token))
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert!(listed.body[0]["written_at"].is_i64());
    let id = listed.body[0]["id"].as_str().unwrap();
    let download = app
        .call(get(&format!("/v1/ops/bank/files/{id}")).bearer(&admin.token))
        .await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.body.as_str(), Some(first.as_str()));
    let customer = app.call(get("/v1/ops/bank/files").bearer(&token)).await;
    assert_eq!(customer.status, StatusCode::FORBIDDEN);

    let confirmed = app
        .call(
            post(
                &format!("/v1/funding-sources/{source}/confirm"),
                json!({ "amounts": amounts }),
            )
            .bearer(&token),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{confirmed:?}");
    assert_eq!(confirmed.body["status"], "verified");

    // A top-up tells the customer where to send the money and what to quote; it waits for
    // the bank's statement, however long the sandbox's settlement time.
    let topup = app
        .call(idem(
            post(
                "/v1/topups",
                json!({ "source_id": source, "amount": 5_000 }),
            )
            .bearer(&token),
            "t1",
        ))
        .await;
    assert_eq!(topup.status, StatusCode::ACCEPTED, "{topup:?}");
    let reference = topup.body["pay_in"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reference.starts_with("KB") && reference.len() == 12,
        "{reference}"
    );
    assert!(
        topup.body["pay_in"]["pay_to"]
            .as_str()
            .unwrap()
            .contains(ISSUER)
    );
    let replay = app
        .call(idem(
            post(
                "/v1/topups",
                json!({ "source_id": source, "amount": 5_000 }),
            )
            .bearer(&token),
            "t1",
        ))
        .await;
    assert_eq!(replay.body["pay_in"]["reference"], reference.as_str());
    // A second top-up, which a third party will pay from an account that is not Alice's.
    let second = app
        .call(idem(
            post(
                "/v1/topups",
                json!({ "source_id": source, "amount": 2_000 }),
            )
            .bearer(&token),
            "t2",
        ))
        .await;
    assert_eq!(second.status, StatusCode::ACCEPTED, "{second:?}");
    let second_ref = second.body["pay_in"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second_ref, reference);
    app.settle().await;
    let wallet = app.wallet(&token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["pending_in"].as_i64()),
        (Some(0), Some(7_000))
    );

    // A payout goes out in the next pain.001, its hold kept until the bank's statement.
    app.fund(&token, 20_000, "f1").await;
    let (payout, token) = app
        .stepped(
            &alice,
            &token,
            "/v1/payouts",
            "p1",
            json!({ "source_id": source, "amount": 3_000 }),
        )
        .await;
    assert_eq!(payout.status, StatusCode::ACCEPTED, "{payout:?}");
    app.clock.advance_secs(61);
    app.pay.tick().await.unwrap();
    let files = outbox_files(outbox.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let second = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .find(|text| *text != first)
        .unwrap();
    assert_valid(&second, "pain.001.001.09.xsd");
    let payout_ref = texts(&second, "EndToEndId").remove(0);
    assert!(payout_ref.starts_with("KB"), "{payout_ref}");
    assert_eq!(texts(&second, "InstdAmt"), ["3000"]);
    let wallet = app.wallet(&token).await;
    assert_eq!(
        (wallet["available"].as_i64(), wallet["pending_out"].as_i64()),
        (Some(17_000), Some(3_000))
    );

    // The bank's statement: the top-up paid in, the payout and the micro-deposits booked,
    // a stray credit with no reference, one quoting an unknown reference, and a pending line.
    let statement = camt053(
        "BANK-STMT-1",
        "0000001",
        &[
            Line {
                bank_ref: "B-1",
                credit: true,
                amount: 5_000,
                status: "BOOK",
                end_to_end: None,
                remittance: Some(&format!("TOPUP {} SUZUKI", reference.to_lowercase())),
                returned: false,
                payer_account: Some("7654321"),
            },
            Line {
                bank_ref: "B-2",
                credit: false,
                amount: 3_000,
                status: "BOOK",
                end_to_end: Some(&payout_ref),
                remittance: None,
                returned: false,
                payer_account: None,
            },
            Line {
                bank_ref: "B-3",
                credit: false,
                amount: amounts[0],
                status: "BOOK",
                end_to_end: Some(&micro_ids[0]),
                remittance: None,
                returned: false,
                payer_account: None,
            },
            Line {
                bank_ref: "B-4",
                credit: false,
                amount: amounts[1],
                status: "BOOK",
                end_to_end: Some(&micro_ids[1]),
                remittance: None,
                returned: false,
                payer_account: None,
            },
            Line {
                bank_ref: "B-5",
                credit: true,
                amount: 777,
                status: "BOOK",
                end_to_end: None,
                remittance: Some("GIFT"),
                returned: false,
                payer_account: None,
            },
            Line {
                bank_ref: "B-6",
                credit: true,
                amount: 1_000,
                status: "BOOK",
                end_to_end: None,
                remittance: Some("KB9999999999"),
                returned: false,
                payer_account: None,
            },
            Line {
                bank_ref: "B-9",
                credit: true,
                amount: 2_000,
                status: "BOOK",
                end_to_end: None,
                remittance: Some(&second_ref),
                returned: false,
                payer_account: Some("1111111"),
            },
            Line {
                bank_ref: "B-7",
                credit: true,
                amount: 2_000,
                status: "PDNG",
                end_to_end: None,
                remittance: Some(&reference),
                returned: false,
                payer_account: None,
            },
        ],
    );
    assert_valid(&statement, "camt.053.001.08.xsd");
    // Only an admin imports, and only the issuer's own account's statements.
    let analyst = operator(&app, "analyst@example.com", "analyst").await;
    let refused = app
        .call_xml("/v1/ops/bank/statements", &analyst.token, &statement)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let other = camt053("BANK-STMT-X", "9999999", &[]);
    let other = app
        .call_xml("/v1/ops/bank/statements", &admin.token, &other)
        .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{other:?}");
    let junk = app
        .call_xml("/v1/ops/bank/statements", &admin.token, "<Document/>")
        .await;
    assert_eq!(junk.status, StatusCode::UNPROCESSABLE_ENTITY, "{junk:?}");

    let imported = app
        .call_xml("/v1/ops/bank/statements", &admin.token, &statement)
        .await;
    assert_eq!(imported.status, StatusCode::OK, "{imported:?}");
    assert_eq!(
        imported.body,
        json!({
            "message_id": "BANK-STMT-1", "lines": 8, "already_imported": 0, "not_booked": 1,
            "settled": 2, "failed": 0, "matched": 4, "unmatched": 3,
        })
    );
    let wallet = app.wallet(&token).await;
    assert_eq!(
        (wallet["balance"].as_i64(), wallet["pending_in"].as_i64()),
        (Some(22_000), Some(2_000))
    );
    let operations = app.call(get("/v1/bank-operations").bearer(&token)).await;
    let mut statuses: Vec<(i64, &str)> = operations
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["amount"].as_i64().unwrap(), o["status"].as_str().unwrap()))
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [(2_000, "pending"), (3_000, "settled"), (5_000, "settled")]
    );
    // The same file again, and a notification of a line already stated, change nothing.
    let again = app
        .call_xml("/v1/ops/bank/statements", &admin.token, &statement)
        .await;
    assert_eq!(again.body["already_imported"], 7, "{again:?}");
    assert_eq!(
        (
            again.body["settled"].as_i64(),
            again.body["unmatched"].as_i64()
        ),
        (Some(0), Some(0))
    );
    // A crash after the top-up's line settled it, before the line was marked: the next import
    // of the file finds the line half-done, sees that it settled its top-up, and marks it so
    // (nothing moves twice, and the line does not land in the operators' queue).
    {
        use koban_store::sql::{SqlDb, SqlTx};
        let mut tx = app.auth.db().begin().await.unwrap();
        let changed = tx
            .execute(
                "UPDATE bank_statement_lines SET state = 'unmatched', reason = 'settling' WHERE bank_reference = 'B-1'",
                vec![],
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(changed, 1);
    }
    let recovered = app
        .call_xml("/v1/ops/bank/statements", &admin.token, &statement)
        .await;
    assert_eq!(
        (
            recovered.body["matched"].as_i64(),
            recovered.body["settled"].as_i64(),
            recovered.body["unmatched"].as_i64()
        ),
        (Some(1), Some(0), Some(0)),
        "{recovered:?}"
    );
    assert_eq!(app.wallet(&token).await["balance"].as_i64(), Some(22_000));
    let notification = camt054(
        "BANK-NTF-1",
        "0000001",
        &[Line {
            bank_ref: "B-5",
            credit: true,
            amount: 777,
            status: "BOOK",
            end_to_end: None,
            remittance: Some("GIFT"),
            returned: false,
            payer_account: None,
        }],
    );
    assert_valid(&notification, "camt.054.001.08.xsd");
    let again = app
        .call_xml("/v1/ops/bank/statements", &admin.token, &notification)
        .await;
    assert_eq!(again.body["already_imported"], 1, "{again:?}");
    assert_eq!(app.wallet(&token).await["balance"].as_i64(), Some(22_000));

    // The lines that matched nothing wait for an operator, each with its reason.
    let queue = app
        .call(get("/v1/ops/bank/statement-lines?state=unmatched").bearer(&analyst.token))
        .await;
    assert_eq!(queue.status, StatusCode::OK, "{queue:?}");
    let lines = queue.body.as_array().unwrap();
    let id_of = |bank_ref: &str| -> String {
        lines
            .iter()
            .find(|l| l["bank_reference"] == bank_ref)
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no line {bank_ref}: {lines:?}"))
    };
    let mut reasons: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["bank_reference"].as_str().unwrap(),
                l["reason"].as_str().unwrap(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("B-5", "no_reference"),
            ("B-6", "unknown_reference"),
            ("B-9", "payer_differs")
        ]
    );
    let (stray, third_party) = (id_of("B-5"), id_of("B-9"));
    let customer = app
        .call(get("/v1/ops/bank/statement-lines").bearer(&token))
        .await;
    assert_eq!(customer.status, StatusCode::FORBIDDEN);
    let resolve = |id: &str, body: serde_json::Value| {
        app.call(
            post(&format!("/v1/ops/bank/statement-lines/{id}/resolve"), body).bearer(&admin.token),
        )
    };
    let empty = resolve(&stray, json!({ "note": " " })).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY, "{empty:?}");
    // A third party's payment cannot be settled from its line, only sent back.
    let refused = resolve(
        &third_party,
        json!({ "note": "looks fine", "settle": true }),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    let resolved = resolve(&stray, json!({ "note": "returned to the sender, case 41" })).await;
    assert_eq!(resolved.status, StatusCode::OK, "{resolved:?}");
    assert_eq!(resolved.body["state"], "resolved");
    let twice = resolve(&stray, json!({ "note": "again" })).await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{twice:?}");
    let unknown = resolve("0123", json!({ "note": "what" })).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{unknown:?}");
    let matched = app
        .call(get("/v1/ops/bank/statement-lines?state=matched").bearer(&admin.token))
        .await;
    assert_eq!(matched.body.as_array().unwrap().len(), 4);

    // The same credit notified under another bank reference is the same top-up seen again:
    // it settles nothing and says so.
    let seen_again = camt054(
        "BANK-NTF-3",
        "0000001",
        &[Line {
            bank_ref: "N-1",
            credit: true,
            amount: 5_000,
            status: "BOOK",
            end_to_end: None,
            remittance: Some(&reference),
            returned: false,
            payer_account: Some("7654321"),
        }],
    );
    let imported = app
        .call_xml("/v1/ops/bank/statements", &admin.token, &seen_again)
        .await;
    assert_eq!(imported.body["unmatched"], 1, "{imported:?}");
    let queue = app
        .call(get("/v1/ops/bank/statement-lines?state=unmatched").bearer(&admin.token))
        .await;
    assert!(
        queue
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["bank_reference"] == "N-1" && l["reason"] == "duplicate"),
        "{queue:?}"
    );

    // A top-up whose line does not show who paid (a name in kana, no account) waits for an
    // operator, who checks and settles it from the line.
    let third = app
        .call(idem(
            post(
                "/v1/topups",
                json!({ "source_id": source, "amount": 1_500 }),
            )
            .bearer(&token),
            "t3",
        ))
        .await;
    let third_ref = third.body["pay_in"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let kana = camt054(
        "BANK-NTF-4",
        "0000001",
        &[Line {
            bank_ref: "N-2",
            credit: true,
            amount: 1_500,
            status: "BOOK",
            end_to_end: None,
            remittance: Some(&third_ref),
            returned: false,
            payer_account: None,
        }],
    );
    let imported = app
        .call_xml("/v1/ops/bank/statements", &admin.token, &kana)
        .await;
    assert_eq!(imported.body["unmatched"], 1, "{imported:?}");
    assert_eq!(app.wallet(&token).await["balance"].as_i64(), Some(22_000));
    let queue = app
        .call(get("/v1/ops/bank/statement-lines?state=unmatched").bearer(&admin.token))
        .await;
    let kana_line = queue
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["bank_reference"] == "N-2")
        .unwrap()
        .clone();
    assert_eq!(kana_line["reason"], "payer_unknown");
    let settled = resolve(
        kana_line["id"].as_str().unwrap(),
        json!({ "note": "called the customer: her own transfer", "settle": true }),
    )
    .await;
    assert_eq!(settled.status, StatusCode::OK, "{settled:?}");
    assert_eq!(app.wallet(&token).await["balance"].as_i64(), Some(23_500));

    // A payout that failed, or whose hold never reached the ledger, is never put in a file.
    {
        use koban_store::sql::{SqlDb, SqlTx};
        let mut tx = app.auth.db().begin().await.unwrap();
        for (id, status, e2e) in [
            ([9u8; 16], "failed", "KB-GHOST-1"),
            ([8u8; 16], "pending", "KB-GHOST-2"),
        ] {
            tx.execute(
                "INSERT INTO bank_operations (id, user_id, source_id, kind, account_id, amount, currency, status, due_at, created_at, reference) \
                 VALUES ($1, 'u', $2, 'payout', $3, 900, 'JPY', $4, $5, 0, $6)",
                koban_store::params![
                    id.to_vec(),
                    source.as_str(),
                    vec![1u8; 16],
                    status,
                    i64::MAX,
                    e2e
                ],
            )
            .await
            .unwrap();
            tx.execute(
                "INSERT INTO bank_instructions (end_to_end_id, kind, operation_id, account, holder_name, amount, currency, created_at) \
                 VALUES ($1, 'payout', $2, '0005-123-7654321', $3, 900, 'JPY', 0)",
                koban_store::params![
                    e2e,
                    id.to_vec(),
                    app.pay.auth().vault().seal(
                        &koban_shared::personal::INSTRUCTION_HOLDER,
                        "Alice Example"
                    )
                ],
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }

    // A payout the creditor's bank returns fails: the money is back in the wallet.
    let (payout, token) = app
        .stepped(
            &alice,
            &token,
            "/v1/payouts",
            "p2",
            json!({ "source_id": source, "amount": 1_000 }),
        )
        .await;
    assert_eq!(payout.status, StatusCode::ACCEPTED, "{payout:?}");
    app.clock.advance_secs(61);
    app.pay.tick().await.unwrap();
    let third_file = outbox_files(outbox.path())
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .find(|text| texts(text, "InstdAmt") == ["1000"])
        .unwrap();
    let returned_ref = texts(&third_file, "EndToEndId").remove(0);
    assert_eq!(app.wallet(&token).await["available"].as_i64(), Some(22_500));
    for file in outbox_files(outbox.path()) {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(!text.contains("KB-GHOST"), "{text}");
    }
    {
        use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
        let mut tx = app.auth.db().begin_read().await.unwrap();
        let left = tx
            .query_one(
                "SELECT COUNT(*) FROM bank_instructions WHERE end_to_end_id LIKE 'KB-GHOST%'",
                vec![],
            )
            .await
            .unwrap()
            .i64(0)
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            left, 1,
            "the failed payout's transfer is dropped; the unheld one waits"
        );
    }
    let returns = camt054(
        "BANK-NTF-2",
        "0000001",
        &[Line {
            bank_ref: "B-8",
            credit: true,
            amount: 1_000,
            status: "BOOK",
            end_to_end: Some(&returned_ref),
            remittance: None,
            returned: true,
            payer_account: None,
        }],
    );
    assert_valid(&returns, "camt.054.001.08.xsd");
    let imported = app
        .call_xml("/v1/ops/bank/statements", &admin.token, &returns)
        .await;
    assert_eq!(imported.body["failed"], 1, "{imported:?}");
    let wallet = app.wallet(&token).await;
    assert_eq!(
        (wallet["available"].as_i64(), wallet["pending_out"].as_i64()),
        (Some(23_500), Some(0))
    );

    // A link whose micro-deposit the bank returns (the account is not in the customer's
    // name) fails.
    let (second_link, token) = app
        .stepped(
            &alice,
            &token,
            "/v1/funding-sources/bank",
            "l2",
            json!({ "bank": "iso20022", "account_number": "0005-123-2222222" }),
        )
        .await;
    assert_eq!(second_link.status, StatusCode::CREATED, "{second_link:?}");
    let second_source = second_link.body["id"].as_str().unwrap().to_owned();
    app.clock.advance_secs(61);
    app.pay.tick().await.unwrap();
    let compact = second_source.replace('-', "");
    let deposits = outbox_files(outbox.path())
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .find(|text| text.contains(&compact))
        .expect("the second link's micro-deposits");
    let (e2e, amount) = (
        texts(&deposits, "EndToEndId").remove(0),
        texts(&deposits, "InstdAmt").remove(0),
    );
    let returned = camt054(
        "BANK-NTF-5",
        "0000001",
        &[Line {
            bank_ref: "N-3",
            credit: true,
            amount: amount.parse().unwrap(),
            status: "BOOK",
            end_to_end: Some(&e2e),
            remittance: None,
            returned: true,
            payer_account: None,
        }],
    );
    assert_valid(&returned, "camt.054.001.08.xsd");
    let imported = app
        .call_xml("/v1/ops/bank/statements", &admin.token, &returned)
        .await;
    assert_eq!(imported.body["matched"], 1, "{imported:?}");
    let sources = app.call(get("/v1/funding-sources").bearer(&token)).await;
    let status = sources
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == second_source.as_str())
        .map(|s| s["status"].clone());
    assert_eq!(status, Some(json!("failed")), "{sources:?}");

    // A busy day's statement (far over the API's usual body limit) is read whole.
    let pending: Vec<Line<'_>> = (0..200)
        .map(|_| Line {
            bank_ref: "P",
            credit: true,
            amount: 1,
            status: "PDNG",
            end_to_end: None,
            remittance: Some("LATER"),
            returned: false,
            payer_account: None,
        })
        .collect();
    let big = camt053("BANK-STMT-2", "0000001", &pending);
    assert!(big.len() > 64 * 1024);
    let imported = app
        .call_xml("/v1/ops/bank/statements", &admin.token, &big)
        .await;
    assert_eq!(imported.status, StatusCode::OK, "{imported:?}");
    assert_eq!(imported.body["not_booked"], 200);

    app.assert_money_invariants().await;
}
