//! ISO 20022 bank files, without IO: writing a `pain.001.001.09` customer credit transfer
//! initiation (payouts and micro-deposits, sent to the bank) and reading `camt.053` statements
//! and `camt.054` debit/credit notifications (what the bank booked, read back to settle).
//!
//! Accounts are Japanese domestic accounts (Zengin): a 4-digit bank code, a 3-digit branch
//! code and a 7-digit account number, written `0001-123-1234567`. In the files the bank and
//! branch are the agent's clearing-system member id (`JPZGN`, 7 digits) and the number is the
//! account's generic id. The XSDs the written files are checked against are in
//! `contract/iso20022/`.

use koban_ledger::Currency;

use crate::PayError;

/// A Zengin account: bank code, branch code, account number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZenginAccount {
    pub bank: String,
    pub branch: String,
    pub number: String,
}

impl ZenginAccount {
    /// Reads `BBBB-SSS-NNNNNNN` (spaces or no separators are accepted too).
    pub fn parse(text: &str) -> Result<ZenginAccount, PayError> {
        let digits: String = text.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
        if digits.len() != 14 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PayError::Invalid(
                "a bank account is a 4-digit bank code, a 3-digit branch code and a 7-digit number, like 0001-123-1234567",
            ));
        }
        Ok(ZenginAccount {
            bank: digits[..4].to_owned(),
            branch: digits[4..7].to_owned(),
            number: digits[7..].to_owned(),
        })
    }

    /// The written form, `0001-123-1234567`.
    pub fn to_text(&self) -> String {
        format!("{}-{}-{}", self.bank, self.branch, self.number)
    }
}

/// One credit transfer to write.
#[derive(Clone, Debug)]
pub struct CreditTransfer {
    /// Quoted back by the bank on the statement line that books it (at most 35 characters).
    pub end_to_end_id: String,
    pub amount_minor: u64,
    pub currency: Currency,
    pub creditor_name: String,
    pub creditor: ZenginAccount,
    /// Shown to the creditor (at most 140 characters).
    pub remittance: String,
}

/// A `pain.001` file: one payment from the issuer's account to many creditors.
#[derive(Clone, Debug)]
pub struct PaymentFile {
    /// The message id (at most 35 characters), unique per file.
    pub message_id: String,
    /// When it was made, as `2026-12-07T10:00:00Z`.
    pub created_at: String,
    /// The day the bank is asked to pay, as `2026-12-07`.
    pub execution_date: String,
    pub debtor_name: String,
    pub debtor: ZenginAccount,
    pub transfers: Vec<CreditTransfer>,
}

/// Escapes text for an XML element or attribute, and keeps it to `max` characters (the
/// schemas' `MaxNText` limits); control characters become spaces.
fn text(value: &str, max: usize) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars().take(max) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Minor units as the decimal the files carry (`1234` JPY is `1234`, `1234` USD is `12.34`).
pub fn decimal(minor: u64, currency: Currency) -> String {
    let exponent = currency.exponent();
    if exponent == 0 {
        return minor.to_string();
    }
    let scale = 10u64.pow(exponent);
    format!(
        "{}.{:0width$}",
        minor / scale,
        minor % scale,
        width = exponent as usize
    )
}

/// A decimal amount from a file back to minor units; `None` when it has more decimals than
/// the currency or is not a plain non-negative decimal.
pub fn minor_units(text: &str, currency: Currency) -> Option<u64> {
    let exponent = currency.exponent() as usize;
    let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let fraction = fraction.trim_end_matches('0');
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > exponent
    {
        return None;
    }
    let mut units: u64 = whole.parse().ok()?;
    units = units.checked_mul(10u64.checked_pow(exponent as u32)?)?;
    let padded = format!("{fraction:0<exponent$}");
    if !padded.is_empty() {
        units = units.checked_add(padded.parse::<u64>().ok()?)?;
    }
    Some(units)
}

fn agent(account: &ZenginAccount) -> String {
    format!(
        "<FinInstnId><ClrSysMmbId><ClrSysId><Cd>JPZGN</Cd></ClrSysId><MmbId>{}{}</MmbId></ClrSysMmbId></FinInstnId>",
        account.bank, account.branch
    )
}

fn account_id(account: &ZenginAccount) -> String {
    format!("<Id><Othr><Id>{}</Id></Othr></Id>", account.number)
}

/// Writes a `pain.001.001.09` document. Every transfer must be in one currency.
pub fn write_pain001(file: &PaymentFile) -> Result<String, PayError> {
    let Some(first) = file.transfers.first() else {
        return Err(PayError::Invalid("a payment file needs a transfer"));
    };
    let currency = first.currency;
    if file.transfers.iter().any(|t| t.currency != currency) {
        return Err(PayError::Invalid("a payment file is in one currency"));
    }
    let sum = file
        .transfers
        .iter()
        .try_fold(0u64, |sum, t| sum.checked_add(t.amount_minor))
        .ok_or(PayError::Invalid("a payment file's sum is too large"))?;
    let (count, control) = (file.transfers.len(), decimal(sum, currency));
    let mut xml = String::with_capacity(1024 + 700 * count);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09\">\n");
    xml.push_str("<CstmrCdtTrfInitn>\n");
    xml.push_str(&format!(
        "<GrpHdr><MsgId>{}</MsgId><CreDtTm>{}</CreDtTm><NbOfTxs>{count}</NbOfTxs><CtrlSum>{control}</CtrlSum>\
         <InitgPty><Nm>{}</Nm></InitgPty></GrpHdr>\n",
        text(&file.message_id, 35),
        text(&file.created_at, 40),
        text(&file.debtor_name, 140),
    ));
    xml.push_str(&format!(
        "<PmtInf><PmtInfId>{}</PmtInfId><PmtMtd>TRF</PmtMtd><NbOfTxs>{count}</NbOfTxs><CtrlSum>{control}</CtrlSum>\
         <ReqdExctnDt><Dt>{}</Dt></ReqdExctnDt><Dbtr><Nm>{}</Nm></Dbtr><DbtrAcct>{}<Ccy>{}</Ccy></DbtrAcct>\
         <DbtrAgt>{}</DbtrAgt><ChrgBr>SLEV</ChrgBr>\n",
        text(&file.message_id, 35),
        text(&file.execution_date, 10),
        text(&file.debtor_name, 140),
        account_id(&file.debtor),
        currency.code(),
        agent(&file.debtor),
    ));
    for t in &file.transfers {
        xml.push_str(&format!(
            "<CdtTrfTxInf><PmtId><EndToEndId>{}</EndToEndId></PmtId>\
             <Amt><InstdAmt Ccy=\"{}\">{}</InstdAmt></Amt><CdtrAgt>{}</CdtrAgt>\
             <Cdtr><Nm>{}</Nm></Cdtr><CdtrAcct>{}</CdtrAcct><RmtInf><Ustrd>{}</Ustrd></RmtInf></CdtTrfTxInf>\n",
            text(&t.end_to_end_id, 35),
            t.currency.code(),
            decimal(t.amount_minor, t.currency),
            agent(&t.creditor),
            text(&t.creditor_name, 140),
            account_id(&t.creditor),
            text(&t.remittance, 140),
        ));
    }
    xml.push_str("</PmtInf>\n</CstmrCdtTrfInitn>\n</Document>\n");
    Ok(xml)
}

/// Credit (money in to the issuer's account) or debit (money out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Credit,
    Debit,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Credit => "credit",
            Direction::Debit => "debit",
        }
    }
}

/// One booked movement on the issuer's account, as a statement or notification says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLine {
    /// What identifies the movement across files (see [`line_key`]).
    pub key: String,
    /// The bank's own reference for the line, if the file gives one.
    pub bank_reference: Option<String>,
    pub direction: Direction,
    /// A reversal or a return of an earlier movement.
    pub reversal: bool,
    pub amount_minor: u64,
    pub currency: Currency,
    /// `BOOK` for booked lines; `PDNG` and `INFO` lines are read but settle nothing.
    pub status: String,
    pub booked_on: Option<String>,
    pub end_to_end_id: Option<String>,
    /// The unstructured remittance text, joined.
    pub remittance: String,
    /// The other party's name (debtor of a credit, creditor of a debit), if given.
    pub counterparty: Option<String>,
    /// The other party's account (its generic id or IBAN), if given.
    pub counterparty_account: Option<String>,
}

/// An account a statement reports on: its number (generic id or IBAN) and, if the file names
/// it, its bank and branch (the servicer's Zengin member id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedAccount {
    pub number: String,
    pub bank_branch: Option<String>,
}

/// A statement (`camt.053`) or notification (`camt.054`) as read.
#[derive(Clone, Debug)]
pub struct Statement {
    /// `camt.053` or `camt.054`.
    pub kind: &'static str,
    pub message_id: String,
    /// The account of each report in the file, in order.
    pub accounts: Vec<ReportedAccount>,
    pub lines: Vec<StatementLine>,
}

/// The key of a movement: a digest of the account, the booking day, the direction, the money
/// and the bank's reference for it, so a line a `camt.054` notified and the day's `camt.053`
/// states again is one line, while a bank that reuses references on other days or accounts
/// makes other lines. Without a reference, the line's place in its file stands in.
fn line_key(account: &str, line: &StatementLine, place: &str) -> String {
    let identity = format!(
        "{account}|{}|{}|{}|{}|{}",
        line.booked_on.as_deref().unwrap_or(""),
        line.direction.as_str(),
        line.amount_minor,
        line.currency.code(),
        line.bank_reference.as_deref().unwrap_or(place),
    );
    koban_shared::sha256(identity.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn path<'a, 'i>(node: roxmltree::Node<'a, 'i>, names: &[&str]) -> Option<roxmltree::Node<'a, 'i>> {
    names.iter().try_fold(node, |n, name| child(n, name))
}

fn path_text(node: roxmltree::Node<'_, '_>, names: &[&str]) -> Option<String> {
    path(node, names)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn invalid(_: impl std::fmt::Debug) -> PayError {
    PayError::Invalid("the file is not a camt.053 statement or camt.054 notification")
}

/// The amount element `node` (with its `Ccy`), in minor units.
fn amount_of(node: roxmltree::Node<'_, '_>) -> Result<(u64, Currency), PayError> {
    let currency = node
        .attribute("Ccy")
        .and_then(|c| Currency::parse(c).ok())
        .ok_or(PayError::Invalid(
            "a statement line is in a currency Koban does not hold",
        ))?;
    let minor = node
        .text()
        .and_then(|t| minor_units(t, currency))
        .ok_or(PayError::Invalid(
            "a statement line's amount is not a decimal in its currency",
        ))?;
    Ok((minor, currency))
}

/// The other party of a transaction: the debtor of a credit, the creditor of a debit
/// (`Pty/Nm` in version 08 and later, `Nm` before).
fn counterparty(tx: roxmltree::Node<'_, '_>, direction: Direction) -> Option<String> {
    let party = match direction {
        Direction::Credit => "Dbtr",
        Direction::Debit => "Cdtr",
    };
    path_text(tx, &["RltdPties", party, "Pty", "Nm"])
        .or_else(|| path_text(tx, &["RltdPties", party, "Nm"]))
}

/// The other party's account: `DbtrAcct` of a credit, `CdtrAcct` of a debit.
fn counterparty_account(tx: roxmltree::Node<'_, '_>, direction: Direction) -> Option<String> {
    let account = match direction {
        Direction::Credit => "DbtrAcct",
        Direction::Debit => "CdtrAcct",
    };
    path_text(tx, &["RltdPties", account, "Id", "Othr", "Id"])
        .or_else(|| path_text(tx, &["RltdPties", account, "Id", "IBAN"]))
}

/// Reads a `camt.053` statement or a `camt.054` notification (any version: elements are found
/// by name). Refuses a file that is neither, or whose amounts cannot be read exactly.
pub fn read_statement(xml: &str) -> Result<Statement, PayError> {
    let doc = roxmltree::Document::parse(xml).map_err(invalid)?;
    let root = doc.root_element();
    if root.tag_name().name() != "Document" {
        return Err(invalid(()));
    }
    let (kind, body, report) = if let Some(body) = child(root, "BkToCstmrStmt") {
        ("camt.053", body, "Stmt")
    } else if let Some(body) = child(root, "BkToCstmrDbtCdtNtfctn") {
        ("camt.054", body, "Ntfctn")
    } else {
        return Err(invalid(()));
    };
    let message_id = path_text(body, &["GrpHdr", "MsgId"]).ok_or_else(|| invalid(()))?;
    let mut accounts = Vec::new();
    let mut lines = Vec::new();
    let reports = body
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == report);
    for (r, report) in reports.enumerate() {
        let report_id = path_text(report, &["Id"]).unwrap_or_else(|| r.to_string());
        let number = path_text(report, &["Acct", "Id", "Othr", "Id"])
            .or_else(|| path_text(report, &["Acct", "Id", "IBAN"]))
            .ok_or(PayError::Invalid("a report of the file names no account"))?;
        accounts.push(ReportedAccount {
            number: number.clone(),
            bank_branch: path_text(
                report,
                &["Acct", "Svcr", "FinInstnId", "ClrSysMmbId", "MmbId"],
            ),
        });
        let entries = report
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == "Ntry");
        for (e, entry) in entries.enumerate() {
            let direction = match path_text(entry, &["CdtDbtInd"]).as_deref() {
                Some("CRDT") => Direction::Credit,
                Some("DBIT") => Direction::Debit,
                _ => return Err(invalid(())),
            };
            let reversal = path_text(entry, &["RvslInd"]).as_deref() == Some("true");
            let (entry_amount, entry_currency) =
                amount_of(child(entry, "Amt").ok_or_else(|| invalid(()))?)?;
            let status = path_text(entry, &["Sts", "Cd"])
                .or_else(|| path_text(entry, &["Sts"]))
                .unwrap_or_default();
            // The day alone: a notification may give a time where the statement gives a date.
            let booked_on = path_text(entry, &["BookgDt", "Dt"])
                .or_else(|| path_text(entry, &["BookgDt", "DtTm"]))
                .map(|day| day.chars().take(10).collect::<String>());
            let entry_ref = path_text(entry, &["AcctSvcrRef"]);
            let details: Vec<_> = entry
                .children()
                .filter(|c| c.is_element() && c.tag_name().name() == "NtryDtls")
                .flat_map(|d| {
                    d.children()
                        .filter(|c| c.is_element() && c.tag_name().name() == "TxDtls")
                })
                .collect();
            let place = |t: usize| format!("{message_id}/{report_id}/{e}/{t}");
            let mut entry_lines = Vec::new();
            if details.is_empty() {
                entry_lines.push((
                    place(0),
                    StatementLine {
                        key: String::new(),
                        bank_reference: entry_ref.clone(),
                        direction,
                        reversal,
                        amount_minor: entry_amount,
                        currency: entry_currency,
                        status: status.clone(),
                        booked_on: booked_on.clone(),
                        end_to_end_id: None,
                        remittance: String::new(),
                        counterparty: None,
                        counterparty_account: None,
                    },
                ));
            }
            for (t, tx) in details.iter().enumerate() {
                // A transaction that says its direction says the entry's.
                if path_text(*tx, &["CdtDbtInd"]).is_some_and(|d| {
                    d != if direction == Direction::Credit {
                        "CRDT"
                    } else {
                        "DBIT"
                    }
                }) {
                    return Err(PayError::Invalid(
                        "a transaction's direction differs from its entry's",
                    ));
                }
                // A batch booking's transactions each carry their own amount; a single one
                // may leave it to the entry.
                let (amount_minor, currency) =
                    match child(*tx, "Amt").or_else(|| path(*tx, &["AmtDtls", "TxAmt", "Amt"])) {
                        Some(amount) => amount_of(amount)?,
                        None if details.len() == 1 => (entry_amount, entry_currency),
                        None => {
                            return Err(PayError::Invalid(
                                "a batch booking's transaction has no amount of its own",
                            ));
                        }
                    };
                let remittance = child(*tx, "RmtInf")
                    .map(|r| {
                        r.children()
                            .filter(|c| c.is_element() && c.tag_name().name() == "Ustrd")
                            .filter_map(|c| c.text())
                            .map(str::trim)
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let bank_reference = match (path_text(*tx, &["Refs", "AcctSvcrRef"]), &entry_ref) {
                    (Some(own), _) => Some(own),
                    (None, Some(entry)) if details.len() == 1 => Some(entry.clone()),
                    (None, Some(entry)) => Some(format!("{entry}/{t}")),
                    (None, None) => None,
                };
                entry_lines.push((
                    place(t),
                    StatementLine {
                        key: String::new(),
                        bank_reference,
                        direction,
                        reversal: reversal || child(*tx, "RtrInf").is_some(),
                        amount_minor,
                        currency,
                        status: status.clone(),
                        booked_on: booked_on.clone(),
                        end_to_end_id: path_text(*tx, &["Refs", "EndToEndId"])
                            .filter(|id| id != "NOTPROVIDED"),
                        remittance,
                        counterparty: counterparty(*tx, direction),
                        counterparty_account: counterparty_account(*tx, direction),
                    },
                ));
            }
            // The transactions of an entry add up to it, in its currency.
            let mut sum = 0u64;
            for (_, line) in &entry_lines {
                if line.currency != entry_currency {
                    return Err(PayError::Invalid(
                        "a transaction's currency differs from its entry's",
                    ));
                }
                sum = sum
                    .checked_add(line.amount_minor)
                    .ok_or(PayError::Invalid("an entry's amounts are too large"))?;
            }
            if sum != entry_amount {
                return Err(PayError::Invalid(
                    "an entry's transactions do not add up to its amount",
                ));
            }
            for (place, mut line) in entry_lines {
                line.key = line_key(&number, &line, &place);
                lines.push(line);
            }
        }
    }
    Ok(Statement {
        kind,
        message_id,
        accounts,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_in_each_currency() {
        assert_eq!(decimal(1234, Currency::Jpy), "1234");
        assert_eq!(minor_units("1234", Currency::Jpy), Some(1234));
        assert_eq!(minor_units("1234.00", Currency::Jpy), Some(1234));
        assert_eq!(minor_units("1234.5", Currency::Jpy), None);
        assert_eq!(minor_units("-5", Currency::Jpy), None);
        assert_eq!(minor_units("", Currency::Jpy), None);
        assert_eq!(minor_units("99999999999999999999", Currency::Jpy), None);
    }

    #[test]
    fn zengin_accounts_are_read_in_any_spacing() {
        let account = ZenginAccount::parse("0001 123 1234567").unwrap();
        assert_eq!(account.to_text(), "0001-123-1234567");
        assert_eq!(ZenginAccount::parse("00011231234567").unwrap(), account);
        for bad in [
            "0001-123-123456",
            "0001-123-12345678",
            "000a-123-1234567",
            "",
        ] {
            assert!(ZenginAccount::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_is_escaped_and_bounded() {
        assert_eq!(text("A&B <C> \"'", 100), "A&amp;B &lt;C&gt; &quot;&apos;");
        assert_eq!(text("abcdef", 3), "abc");
        assert_eq!(text("a\u{0}b", 3), "a b");
    }

    /// Validates `xml` against the schema `xsd` in `contract/iso20022` with `xmllint` (Debian's
    /// `libxml2-utils`, which `.ci/run` installs); answers xmllint's complaint, if any.
    pub fn schema_problems(xml: &str, xsd: &str) -> Option<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
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
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn sample_file() -> PaymentFile {
        PaymentFile {
            message_id: "KOBAN-20261207-0123456789abcdef".into(),
            created_at: "2026-12-07T10:00:00Z".into(),
            execution_date: "2026-12-07".into(),
            debtor_name: "Koban & Co <Issuer>".into(),
            debtor: ZenginAccount::parse("0001-001-0000001").unwrap(),
            transfers: vec![
                CreditTransfer {
                    end_to_end_id: "KB0123456789".into(),
                    amount_minor: 12_000,
                    currency: Currency::Jpy,
                    creditor_name: "Suzuki Hanako".into(),
                    creditor: ZenginAccount::parse("0005-123-7654321").unwrap(),
                    remittance: "KOBAN PAYOUT".into(),
                },
                CreditTransfer {
                    end_to_end_id: "0190f0a1b2c3d4e5f60718293a4b5c6d-1".into(),
                    amount_minor: 37,
                    currency: Currency::Jpy,
                    creditor_name: "山田 太郎".into(),
                    creditor: ZenginAccount::parse("0009-456-1111111").unwrap(),
                    remittance: "KOBAN VERIFY".into(),
                },
            ],
        }
    }

    #[test]
    fn a_written_pain001_validates_against_the_published_schema() {
        let xml = write_pain001(&sample_file()).unwrap();
        assert_eq!(schema_problems(&xml, "pain.001.001.09.xsd"), None, "{xml}");
        assert!(xml.contains("<CtrlSum>12037</CtrlSum>"));
        assert!(xml.contains("<NbOfTxs>2</NbOfTxs>"));
        assert!(xml.contains("Koban &amp; Co &lt;Issuer&gt;"));
        // The schema does catch a broken file: this check is not vacuous.
        let broken = xml.replace("<PmtMtd>TRF</PmtMtd>", "<PmtMtd>XXX</PmtMtd>");
        assert!(schema_problems(&broken, "pain.001.001.09.xsd").is_some());
    }

    #[test]
    fn a_file_mixing_currencies_or_empty_is_refused() {
        let mut file = sample_file();
        file.transfers[1].currency = Currency::Usd;
        assert!(write_pain001(&file).is_err());
        file.transfers.clear();
        assert!(write_pain001(&file).is_err());
    }

    #[test]
    fn a_statement_that_is_not_one_is_refused() {
        assert!(read_statement("<Document/>").is_err());
        assert!(read_statement("not xml").is_err());
        assert!(read_statement("<Other><BkToCstmrStmt/></Other>").is_err());
    }
}
