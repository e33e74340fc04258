//! Alerts and cases. A rule whose action raises an alert (alert, hold, deny), and the global
//! login-failure alarm, make an alert; alerts are grouped into one open case per subject (the
//! customer, or the suspected mule for rules grouped by payee). A case shows the subject's
//! timeline: logins, devices, networks, contact and factor changes, money events and their
//! decisions. Operators list, assign, comment and close cases; every change is audited.

use koban_auth::{Principal, Role};
use koban_shared::audit::{self, AuditEvent};
use koban_shared::ids::UserId;
use koban_store::LedgerStore;
use koban_store::params;
use koban_store::sql::{Row, SqlDb, SqlTx, SqlTxExt};

use crate::{PayError, Payments};

/// How far back a new case looks for the subject's first event (time to detect starts there).
const CASE_LOOKBACK_MS: i64 = 24 * 3_600_000;

/// The `risk_events` keys of a case subject: a customer (as actor or payee), or the client
/// network of `network:<prefix>` (attempts on no known account).
fn subject_keys(subject: &str) -> (&str, &str) {
    match subject.strip_prefix("network:") {
        Some(network) => ("", network),
        None => (subject, ""),
    }
}

pub(crate) struct NewAlert<'a> {
    pub rule: &'a str,
    pub reason: &'a str,
    pub action: &'a str,
    pub score: i64,
    pub event_id: Option<&'a str>,
    pub subject: &'a str,
    pub subject_role: &'a str,
}

/// Writes an alert in `tx`, into the subject's open case or a new one; returns the case id.
pub(crate) async fn raise_alert<T: SqlTx>(
    tx: &mut T,
    now: i64,
    alert: &NewAlert<'_>,
) -> Result<String, PayError> {
    let open = tx
        .query_opt(
            "SELECT id FROM risk_cases WHERE subject = $1 AND status = 'open'",
            params![alert.subject],
        )
        .await?;
    let case_id = match open {
        Some(row) => row.text(0)?,
        None => open_case(tx, now, alert).await?,
    };
    // An event raises each rule's alert once, however often it is decided again (a step-up
    // retry) or imported (the login alarm on several instances).
    let raised = tx.execute(
        "INSERT INTO risk_alerts (id, at, rule, reason, action, score, event_id, subject, case_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        params![
            koban_shared::new_id(),
            now,
            alert.rule,
            alert.reason,
            alert.action,
            alert.score,
            alert.event_id,
            alert.subject,
            case_id.as_str()
        ],
    )
    .await?;
    if raised == 1 {
        metrics::counter!("koban_risk_alerts_total", "rule" => alert.rule.to_owned()).increment(1);
    }
    Ok(case_id)
}

/// Opens a case for an alert's subject, dated from the subject's first event in the look-back
/// window; returns its id. Another writer may open it first (one open case per subject, also
/// across instances): then that case is the one.
async fn open_case<T: SqlTx>(
    tx: &mut T,
    now: i64,
    alert: &NewAlert<'_>,
) -> Result<String, PayError> {
    let (party, network) = subject_keys(alert.subject);
    let first = tx
        .query_one(
            "SELECT MIN(at) FROM risk_events WHERE (($1 <> '' AND (customer = $1 OR payee = $1)) \
             OR ($2 <> '' AND network = $2)) AND at >= $3",
            params![party, network, now - CASE_LOOKBACK_MS],
        )
        .await?
        .opt_i64(0)?
        .unwrap_or(now)
        .min(now);
    // One open case per subject, also across instances (a partial unique index).
    let opened = tx
        .execute(
            "INSERT INTO risk_cases (id, subject, subject_role, status, first_event_at, first_alert_at, opened_at) \
             VALUES ($1, $2, $3, 'open', $4, $5, $5) ON CONFLICT DO NOTHING",
            params![
                koban_shared::new_id(),
                alert.subject,
                alert.subject_role,
                first,
                now
            ],
        )
        .await?;
    if opened == 1 {
        let detect_s = (now - first).max(0) as f64 / 1000.0;
        metrics::histogram!("koban_risk_time_to_detect_seconds").record(detect_s);
        metrics::counter!("koban_risk_cases_opened_total").increment(1);
    }
    Ok(tx
        .query_one(
            "SELECT id FROM risk_cases WHERE subject = $1 AND status = 'open'",
            params![alert.subject],
        )
        .await?
        .text(0)?)
}

/// A case as an operator lists it.
#[derive(Clone, Debug)]
pub struct Case {
    pub id: String,
    pub subject: String,
    pub subject_role: String,
    pub status: String,
    pub outcome: Option<String>,
    pub assignee: Option<String>,
    pub first_event_at: i64,
    pub first_alert_at: i64,
    pub closed_at: Option<i64>,
    pub alerts: i64,
}

impl Case {
    /// The customer the case is about; `None` for a case about a client network.
    pub fn customer(&self) -> Option<UserId> {
        (self.subject_role != "network").then(|| UserId::from_stored(self.subject.clone()))
    }
}

/// The columns [`case_from`] reads, as a literal for `concat!` (statements are `'static`).
macro_rules! case_columns {
    () => {
        "c.id, c.subject, c.subject_role, c.status, c.outcome, c.assignee, c.first_event_at, c.first_alert_at, c.closed_at, \
         (SELECT COUNT(*) FROM risk_alerts a WHERE a.case_id = c.id)"
    };
}

fn case_from(row: &Row) -> Result<Case, PayError> {
    Ok(Case {
        id: row.text(0)?,
        subject: row.text(1)?,
        subject_role: row.text(2)?,
        status: row.text(3)?,
        outcome: row.opt_text(4)?,
        assignee: row.opt_text(5)?,
        first_event_at: row.i64(6)?,
        first_alert_at: row.i64(7)?,
        closed_at: row.opt_i64(8)?,
        alerts: row.i64(9)?,
    })
}

/// One line of a case's timeline.
#[derive(Clone, Debug)]
pub struct TimelineEntry {
    pub at: i64,
    /// `event` (a scored login, link, top-up or payment), `alert`, `audit` (a change recorded
    /// in the audit chain: contact, factor, freeze, review), `comment`.
    pub source: &'static str,
    pub what: String,
    pub detail: serde_json::Value,
}

/// A case with its alerts, timeline and comments.
#[derive(Clone, Debug)]
pub struct CaseDetail {
    pub case: Case,
    pub timeline: Vec<TimelineEntry>,
}

/// An alert as listed.
#[derive(Clone, Debug)]
pub struct RiskAlert {
    pub id: String,
    pub at: i64,
    pub rule: String,
    pub reason: String,
    pub action: String,
    pub score: i64,
    pub subject: String,
    pub case_id: String,
}

/// How a case ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    FraudConfirmed,
    FalsePositive,
}

impl Outcome {
    pub fn parse(text: &str) -> Result<Outcome, PayError> {
        match text {
            "fraud_confirmed" => Ok(Outcome::FraudConfirmed),
            "false_positive" => Ok(Outcome::FalsePositive),
            _ => Err(PayError::Invalid(
                "outcome must be fraud_confirmed or false_positive",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::FraudConfirmed => "fraud_confirmed",
            Outcome::FalsePositive => "false_positive",
        }
    }
}

/// The operator roles that work fraud cases.
pub const OPERATORS: &[Role] = &[Role::Analyst, Role::Approver, Role::Admin];

impl<S: LedgerStore> Payments<S> {
    /// Cases, newest first; `status` open, closed or all.
    pub async fn cases(
        &self,
        principal: &Principal,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Case>, PayError> {
        principal.operator(OPERATORS)?;
        let status = match status.unwrap_or("open") {
            s @ ("open" | "closed") => s,
            "all" => "",
            _ => return Err(PayError::Invalid("status must be open, closed or all")),
        };
        let limit = limit.clamp(1, 200);
        let sql = concat!(
            "SELECT ",
            case_columns!(),
            " FROM risk_cases c WHERE ($1 = '' OR c.status = $1) ORDER BY c.opened_at DESC, c.id DESC LIMIT $2"
        );
        let mut tx = self.db().begin_read().await?;
        let rows = tx.query(sql, params![status, limit]).await?;
        tx.commit().await?;
        rows.iter().map(case_from).collect()
    }

    /// Recent alerts, newest first.
    pub async fn risk_alerts(
        &self,
        principal: &Principal,
        limit: i64,
    ) -> Result<Vec<RiskAlert>, PayError> {
        principal.operator(OPERATORS)?;
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT id, at, rule, reason, action, score, subject, case_id FROM risk_alerts ORDER BY at DESC, id DESC LIMIT $1",
                params![limit.clamp(1, 500)],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(RiskAlert {
                    id: r.text(0)?,
                    at: r.i64(1)?,
                    rule: r.text(2)?,
                    reason: r.text(3)?,
                    action: r.text(4)?,
                    score: r.i64(5)?,
                    subject: r.text(6)?,
                    case_id: r.text(7)?,
                })
            })
            .collect()
    }

    /// One case without its timeline: whom it is about, its state (a page acting on it needs
    /// no more).
    pub async fn case_summary(&self, principal: &Principal, id: &str) -> Result<Case, PayError> {
        principal.operator(OPERATORS)?;
        let mut tx = self.db().begin_read().await?;
        let case = Self::case_row(&mut tx, id).await?;
        tx.commit().await?;
        Ok(case)
    }

    async fn case_row<T: SqlTx>(tx: &mut T, id: &str) -> Result<Case, PayError> {
        let sql = concat!(
            "SELECT ",
            case_columns!(),
            " FROM risk_cases c WHERE c.id = $1"
        );
        let row = tx
            .query_opt(sql, params![id])
            .await?
            .ok_or(PayError::NotFound)?;
        case_from(&row)
    }

    /// A case and its timeline (oldest first): the subject's scored events of the week before
    /// the case and since, the case's alerts and comments, and the subject's audit entries.
    pub async fn case(&self, principal: &Principal, id: &str) -> Result<CaseDetail, PayError> {
        principal.operator(OPERATORS)?;
        let mut tx = self.db().begin_read().await?;
        let case = Self::case_row(&mut tx, id).await?;
        let since = case.first_event_at - 7 * CASE_LOOKBACK_MS;
        let mut timeline = event_lines(&mut tx, &case, since).await?;
        timeline.extend(alert_lines(&mut tx, id).await?);
        timeline.extend(audit_lines(&mut tx, &case, since).await?);
        timeline.extend(comment_lines(&mut tx, id).await?);
        tx.commit().await?;
        timeline.sort_by_key(|e| e.at);
        Ok(CaseDetail { case, timeline })
    }

    /// Assigns a case to an operator (`None`: to the caller).
    pub async fn assign_case(
        &self,
        principal: &Principal,
        id: &str,
        assignee: Option<&str>,
    ) -> Result<Case, PayError> {
        let me = principal.operator(OPERATORS)?;
        let assignee = assignee.unwrap_or(&me.operator_id).to_owned();
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM users WHERE id = $1 AND kind = 'operator'",
                params![assignee.as_str()],
            )
            .await?;
        if exists.is_none() {
            return Err(PayError::Invalid("assignee must be an operator's id"));
        }
        let case = Self::case_row(&mut tx, id).await?;
        if case.status != "open" {
            return Err(PayError::Conflict("this case is closed"));
        }
        tx.execute(
            "UPDATE risk_cases SET assignee = $1 WHERE id = $2",
            params![assignee.as_str(), id],
        )
        .await?;
        self.audit_case(
            &mut tx,
            principal,
            now,
            "risk.case_assigned",
            &case,
            serde_json::json!({ "assignee": assignee }),
        )
        .await?;
        let case = Self::case_row(&mut tx, id).await?;
        tx.commit().await?;
        Ok(case)
    }

    /// Adds a comment (1 to 2,000 characters) to a case.
    pub async fn comment_case(
        &self,
        principal: &Principal,
        id: &str,
        body: &str,
    ) -> Result<(), PayError> {
        let me = principal.operator(OPERATORS)?;
        let body = body.trim();
        if body.is_empty() || body.chars().count() > 2_000 {
            return Err(PayError::Invalid("a comment is 1 to 2,000 characters"));
        }
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let case = Self::case_row(&mut tx, id).await?;
        tx.execute(
            "INSERT INTO risk_case_comments (id, case_id, at, author, body) VALUES ($1, $2, $3, $4, $5)",
            params![koban_shared::new_id(), id, now, me.operator_id.as_str(), body],
        )
        .await?;
        self.audit_case(
            &mut tx,
            principal,
            now,
            "risk.case_commented",
            &case,
            serde_json::json!({ "chars": body.chars().count() }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes a case with its outcome.
    pub async fn close_case(
        &self,
        principal: &Principal,
        id: &str,
        outcome: Outcome,
    ) -> Result<Case, PayError> {
        let me = principal.operator(OPERATORS)?;
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        let case = Self::case_row(&mut tx, id).await?;
        let changed = tx
            .execute(
                "UPDATE risk_cases SET status = 'closed', outcome = $1, closed_at = $2, closed_by = $3 WHERE id = $4 AND status = 'open'",
                params![outcome.as_str(), now, me.operator_id.as_str(), id],
            )
            .await?;
        if changed == 0 {
            return Err(PayError::Conflict("this case is already closed"));
        }
        self.audit_case(
            &mut tx,
            principal,
            now,
            "risk.case_closed",
            &case,
            serde_json::json!({ "outcome": outcome.as_str() }),
        )
        .await?;
        let case = Self::case_row(&mut tx, id).await?;
        tx.commit().await?;
        metrics::counter!("koban_risk_cases_closed_total", "outcome" => outcome.as_str())
            .increment(1);
        Ok(case)
    }

    async fn audit_case<T: SqlTx>(
        &self,
        tx: &mut T,
        principal: &Principal,
        now: i64,
        action: &str,
        case: &Case,
        mut details: serde_json::Value,
    ) -> Result<(), PayError> {
        details["case"] = serde_json::Value::from(case.id.as_str());
        audit::append(
            tx,
            self.auth.audit_key(),
            now,
            AuditEvent {
                actor: &principal.actor(),
                action,
                subject: &if case.subject_role == "global" || case.subject.contains(':') {
                    case.subject.clone()
                } else {
                    format!("user:{}", case.subject)
                },
                details,
            },
        )
        .await?;
        Ok(())
    }

    /// Turns new security alarms (a spike of failed sign-ins, a sprayed password, accounts
    /// locked by wrong credentials, card testing) into alerts (subject `global`), so an
    /// analyst sees each as a case.
    pub async fn import_login_alarms(&self) -> Result<usize, PayError> {
        let mut tx = self.db().begin().await?;
        let rows = tx
            .query(
                "SELECT s.id, s.raised_at, s.observed, s.baseline, s.kind FROM security_alerts s \
                 WHERE s.raised_at >= $1 AND NOT EXISTS (SELECT 1 FROM risk_alerts a WHERE a.event_id = s.id) \
                 ORDER BY s.raised_at LIMIT 50",
                params![self.now_ms() - CASE_LOOKBACK_MS],
            )
            .await?;
        for row in &rows {
            let id = row.text(0)?;
            let (rule, reason) = match row.text(4)?.as_str() {
                "password_spray" => ("alarm.password_spray", "password_spray"),
                "account_lockout" => ("alarm.account_lockout", "account_lockout"),
                "card_testing" => ("alarm.card_testing", "card_testing"),
                _ => ("alarm.login_failures", "login_failure_spike"),
            };
            raise_alert(
                &mut tx,
                row.i64(1)?,
                &NewAlert {
                    rule,
                    reason,
                    action: "alert",
                    score: 0,
                    event_id: Some(&id),
                    subject: "global",
                    subject_role: "global",
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}

/// The case subject's scored events since `since` (newest 500), as timeline lines.
async fn event_lines<T: SqlTx>(
    tx: &mut T,
    case: &Case,
    since: i64,
) -> Result<Vec<TimelineEntry>, PayError> {
    let mut timeline = Vec::new();
    let (party, network) = subject_keys(&case.subject);
    let events = tx
        .query(
            "SELECT at, kind, customer, device, network, payee, source, amount, currency, failed, action, score, fired \
             FROM risk_events WHERE (($1 <> '' AND (customer = $1 OR payee = $1)) OR ($2 <> '' AND network = $2)) \
             AND at >= $3 ORDER BY at DESC LIMIT 500",
            params![party, network, since],
        )
        .await?;
    for e in &events {
        let fired: serde_json::Value =
            serde_json::from_str(&e.text(12)?).unwrap_or(serde_json::Value::Null);
        let role = if e.text(2)? == case.subject {
            "actor"
        } else {
            "payee"
        };
        timeline.push(TimelineEntry {
            at: e.i64(0)?,
            source: "event",
            what: e.text(1)?,
            detail: serde_json::json!({
                "subject_is": role,
                "customer": e.text(2)?,
                "device": e.text(3)?,
                "network": e.text(4)?,
                "payee": e.text(5)?,
                "source": e.text(6)?,
                "amount": e.i64(7)?,
                "currency": e.text(8)?,
                "failed": e.i64(9)? == 1,
                "decision": e.text(10)?,
                "score": e.i64(11)?,
                "rules": fired,
            }),
        });
    }
    Ok(timeline)
}

/// The case's alerts, as timeline lines.
async fn alert_lines<T: SqlTx>(tx: &mut T, id: &str) -> Result<Vec<TimelineEntry>, PayError> {
    let mut timeline = Vec::new();
    let alerts = tx
        .query(
            "SELECT at, rule, reason, action, score, event_id FROM risk_alerts WHERE case_id = $1 ORDER BY at",
            params![id],
        )
        .await?;
    for a in &alerts {
        timeline.push(TimelineEntry {
            at: a.i64(0)?,
            source: "alert",
            what: a.text(1)?,
            detail: serde_json::json!({
                "reason": a.text(2)?, "action": a.text(3)?, "score": a.i64(4)?, "event": a.opt_text(5)?,
            }),
        });
    }
    Ok(timeline)
}

/// Changes to the subject recorded in the audit chain since `since` (newest 200).
async fn audit_lines<T: SqlTx>(
    tx: &mut T,
    case: &Case,
    since: i64,
) -> Result<Vec<TimelineEntry>, PayError> {
    let mut timeline = Vec::new();
    let audits = tx
        .query(
            "SELECT at, actor, action, details FROM audit_log WHERE subject IN ($1, $2) AND at >= $3 ORDER BY seq DESC LIMIT 200",
            params![
                case.subject.as_str(),
                format!("user:{}", case.subject),
                since
            ],
        )
        .await?;
    for a in &audits {
        timeline.push(TimelineEntry {
            at: a.i64(0)?,
            source: "audit",
            what: a.text(2)?,
            detail: serde_json::json!({
                "actor": a.text(1)?,
                "details": serde_json::from_str::<serde_json::Value>(&a.text(3)?).unwrap_or(serde_json::Value::Null),
            }),
        });
    }
    Ok(timeline)
}

/// The operators' comments on the case.
async fn comment_lines<T: SqlTx>(tx: &mut T, id: &str) -> Result<Vec<TimelineEntry>, PayError> {
    let mut timeline = Vec::new();
    let comments = tx
        .query(
            "SELECT at, author, body FROM risk_case_comments WHERE case_id = $1 ORDER BY at",
            params![id],
        )
        .await?;
    for c in &comments {
        timeline.push(TimelineEntry {
            at: c.i64(0)?,
            source: "comment",
            what: c.text(1)?,
            detail: serde_json::json!({ "body": c.text(2)? }),
        });
    }
    Ok(timeline)
}
