//! The risk hook every movement, login and bank-link attempt passes through. The caller
//! gathers what it already knows into a [`RiskEvent`] and names the parties ([`Parties`]);
//! [`Payments::assess`] checks the hard limits, reads the feature windows (indexed ranges of
//! `risk_events`, so several instances agree), runs the live rule set of `koban-risk`, records
//! the decision with every feature value and fired rule, and answers.
//!
//! Decisions are written to `risk_events` in groups by [`Payments::flush_records`] (the worker
//! runs it every 100 ms, and a payment before it answers, sharing the write with every request
//! that queued at the same moment); the events of this instance not yet written are counted in
//! the windows from memory. Alerts and cases are made in that flush.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use koban_risk::{Action, Features, Fired, RuleSet, Verdict};
use koban_store::LedgerStore;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use koban_store::{params, sql::Value};

use crate::{PayError, Payments};

pub use koban_risk::EventKind;

/// Everything the payment code knows about a movement before the rules run. Amounts are
/// minor units; ages seconds.
#[derive(Clone, Debug)]
pub struct RiskEvent {
    pub kind: EventKind,
    pub amount: u64,
    /// The payer's out-flow today before this movement, and the tier's daily cap.
    pub spent_today: u64,
    pub daily_out_max: u64,
    /// The cooling-off cap after a credential or contact change, while it lasts.
    pub cooling_off_max: Option<u64>,
    /// True when the payer has never paid this payee.
    pub payee_new: bool,
    /// Paid to this payee today before this movement, and the per-payee cap.
    pub paid_to_payee_today: u64,
    pub per_payee_daily_max: u64,
    /// How long the payee's account has existed.
    pub payee_account_age_s: Option<i64>,
    pub step_up_from: u64,
    pub review_new_payee_from: u64,
    pub fan_in_senders_max: usize,
}

/// Who and where an event involves: the keys of the feature windows and of the record.
#[derive(Clone, Debug, Default)]
pub struct Parties {
    /// The acting customer's user id (`""` when unknown, for example a failed login for an
    /// address with no account).
    pub customer: String,
    /// The client's device cookie id (whichever account it was issued to: the device
    /// windows count across accounts).
    pub device: Option<String>,
    /// The cookie was issued to this customer at a past sign-in.
    pub device_bound: bool,
    /// The client network (IPv4 /24 or IPv6 /64), when the event came from a client.
    pub network: Option<String>,
    /// The receiving customer's user id.
    pub payee: Option<String>,
    /// The funding source (bank link or card id).
    pub source: Option<String>,
    /// Seconds since the source was verified.
    pub source_age_s: Option<i64>,
    pub currency: String,
    /// The attempt failed (wrong password, wrong code).
    pub failed: bool,
    /// The attempt's ledger id, for movements a client may retry (after step-up): the record
    /// of the retry replaces the first one, so one movement counts once in the windows.
    pub attempt: Option<koban_ledger::TransferId>,
    /// Card authorizations: merchant category and country.
    pub mcc: Option<String>,
    pub merchant_country: Option<String>,
}

impl Parties {
    /// The parties of a request made by `customer` from `client`.
    pub fn of(customer: &str, client: Option<&koban_auth::Client>) -> Parties {
        let cookie = client.and_then(|c| c.device.as_ref());
        Parties {
            customer: customer.to_owned(),
            device: cookie.map(|d| d.id.clone()),
            device_bound: cookie.is_some_and(|d| d.user_id == customer),
            network: client.map(|c| c.network.clone()),
            ..Parties::default()
        }
    }

    /// The parties of a payment attempt by `customer` to `payee` (a user id).
    pub fn payment(
        customer: &str,
        client: Option<&koban_auth::Client>,
        attempt: koban_ledger::TransferId,
        payee: &str,
        currency: koban_ledger::Currency,
    ) -> Parties {
        Parties {
            attempt: Some(attempt),
            payee: Some(payee.to_owned()),
            currency: currency.code().to_owned(),
            ..Parties::of(customer, client)
        }
    }
}

/// The answer the caller obeys. Reason codes name a limit the customer can know, or say only
/// that risk checks declined: they never reveal which rule fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Go ahead once the customer confirms with step-up bound to amount and payee.
    Challenge,
    /// Move the money into suspense, pending review by an analyst.
    Hold,
    Deny {
        code: &'static str,
    },
}

impl Decision {
    /// What a decision means where nothing can wait for review (a till, a payout): a denial
    /// for a limit is named as that limit, on `whose` wallet ("your", "the customer's"); any
    /// other denial, or a hold, declines; otherwise whether the rules ask for step-up.
    pub fn without_review(self, whose: &str) -> Result<bool, PayError> {
        match self {
            Decision::Deny {
                code: code @ ("daily_limit" | "cooling_off_limit"),
            } => Err(PayError::Limit {
                code,
                detail: format!("this would exceed a limit on what may leave {whose} wallet today"),
            }),
            Decision::Hold | Decision::Deny { .. } => Err(PayError::Declined {
                code: "risk_declined",
            }),
            Decision::Challenge => Ok(true),
            Decision::Allow => Ok(false),
        }
    }
}

/// The verdict of a hard limit: a denial by the named rule, decided before any rule ran.
fn limit_verdict(code: &'static str, rule: &str) -> Verdict {
    Verdict {
        action: Action::Deny,
        score: 0,
        fired: vec![Fired {
            rule: rule.to_owned(),
            action: Action::Deny,
            score: 0,
            reason: code.to_owned(),
            case_by: koban_risk::CaseBy::Customer,
        }],
        errors: Vec::new(),
    }
}

/// The hard limits, checked before any rule: a daily out-flow cap per tier, the cooling-off
/// cap after a credential change, the per-payee cap. Pure.
pub fn limits(event: &RiskEvent) -> Option<(&'static str, &'static str)> {
    let after = event.spent_today.saturating_add(event.amount);
    let outgoing = event.kind.outgoing();
    if outgoing && after > event.daily_out_max {
        return Some(("daily_limit", "limit.daily_out"));
    }
    if outgoing && event.cooling_off_max.is_some_and(|max| after > max) {
        return Some(("cooling_off_limit", "limit.cooling_off"));
    }
    if event.kind == EventKind::P2p
        && event.paid_to_payee_today.saturating_add(event.amount) > event.per_payee_daily_max
    {
        return Some(("payee_limit", "limit.per_payee"));
    }
    None
}

/// The features the caller's event gives directly (the windows come from storage).
pub fn base_features(event: &RiskEvent, parties: &Parties) -> Features {
    let mut f = Features::new(event.kind);
    f.set_int("amount", clamp(event.amount));
    f.set_text("currency", &parties.currency);
    f.set_bool("failed", parties.failed);
    f.set_bool("in_cooling_off", event.cooling_off_max.is_some());
    f.set_bool("payee_new", event.payee_new);
    if let Some(age) = event.payee_account_age_s {
        f.set_int("payee_age_s", age);
    }
    if let Some(age) = parties.source_age_s {
        f.set_int("source_age_s", age);
    }
    f.set_bool("device_known", parties.device_bound);
    f.set_text("mcc", parties.mcc.as_deref().unwrap_or(""));
    f.set_text(
        "merchant_country",
        parties.merchant_country.as_deref().unwrap_or(""),
    );
    f.set_int("step_up_from", clamp(event.step_up_from));
    f.set_int("review_new_payee_from", clamp(event.review_new_payee_from));
    f.set_int(
        "fan_in_senders_max",
        i64::try_from(event.fan_in_senders_max).unwrap_or(i64::MAX),
    );
    f
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What the verdict of the rules means for the caller.
pub fn decision_of(verdict: &Verdict) -> Decision {
    match verdict.action {
        Action::Allow | Action::Alert => Decision::Allow,
        Action::Challenge => Decision::Challenge,
        Action::Hold => Decision::Hold,
        Action::Deny => Decision::Deny {
            code: "risk_declined",
        },
    }
}

/// A decided event waiting to be written to `risk_events`.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub id: String,
    pub at_ms: i64,
    pub kind: EventKind,
    pub parties: Parties,
    pub amount: i64,
    pub verdict: Verdict,
    pub features: Features,
    pub digest: String,
    pub needs: Needs,
}

/// The live rule set and where it came from; shared by every clone of [`Payments`].
pub struct RiskRules {
    live: RwLock<Arc<RuleSet>>,
    path: Option<std::path::PathBuf>,
    /// The version of `risk_rule_sets` in force here (0: none yet, the set is this
    /// instance's own file or the default).
    published: AtomicI64,
}

impl RiskRules {
    /// The default rule set, or the file at `path` (refused with the file's problem).
    pub fn load(path: Option<&std::path::Path>) -> Result<RiskRules, String> {
        let set = match path {
            Some(path) => read_rules(path)?,
            None => RuleSet::default_rules(),
        };
        Ok(RiskRules {
            live: RwLock::new(Arc::new(set)),
            path: path.map(|p| p.to_path_buf()),
            published: AtomicI64::new(0),
        })
    }

    pub fn current(&self) -> Arc<RuleSet> {
        match self.live.read() {
            Ok(live) => live.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the file again (the default set without one) and answers it with its source
    /// text, without putting it in force ([`RiskRules::adopt`] does, once it is published).
    pub fn reload(&self) -> Result<(Arc<RuleSet>, String), String> {
        let text = match &self.path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the rules file {}: {e}", path.display()))?,
            None => koban_risk::DEFAULT_RULES.to_owned(),
        };
        let set = Arc::new(RuleSet::parse(&text).map_err(|e| match &self.path {
            Some(path) => format!("the rules file {} is invalid: {e}", path.display()),
            None => format!("the default rules are invalid: {e}"),
        })?);
        Ok((set, text))
    }

    /// Puts `set`, published as `version`, in force unless a newer version already is (a
    /// reload and a sync may finish in either order); answers whether it did.
    fn adopt(&self, version: i64, set: Arc<RuleSet>) -> bool {
        let mut live = match self.live.write() {
            Ok(live) => live,
            Err(poisoned) => poisoned.into_inner(),
        };
        if version <= self.published.load(Ordering::SeqCst) {
            return false;
        }
        self.published.store(version, Ordering::SeqCst);
        *live = set;
        true
    }

    /// The published version in force here (0: none).
    pub fn published(&self) -> i64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Replaces the live set (tests, and operators uploading a set).
    pub fn replace(&self, set: RuleSet) {
        self.set(Arc::new(set));
    }

    fn set(&self, set: Arc<RuleSet>) {
        match self.live.write() {
            Ok(mut live) => *live = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }
}

/// Reads and validates a rules file; the error names the file and the problem.
pub fn read_rules(path: &std::path::Path) -> Result<RuleSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the rules file {}: {e}", path.display()))?;
    RuleSet::parse(&text).map_err(|e| format!("the rules file {} is invalid: {e}", path.display()))
}

/// Decisions of this instance not yet durable in `risk_events`: still counted in the windows.
#[derive(Default)]
pub(crate) struct RiskQueue {
    /// Decided, waiting for the next flush.
    pending: Vec<Recorded>,
    /// Taken by the flush that is writing them.
    flushing: Arc<Vec<Recorded>>,
    /// Events found to be failed attempts after they left `pending`.
    failed_late: Vec<String>,
}

pub(crate) type SharedRiskQueue = Arc<Mutex<RiskQueue>>;

/// The most decisions kept waiting for the database (a long outage): beyond, the oldest are
/// dropped, with a warning and a counter.
const QUEUED_MAX: usize = 100_000;

/// Keys and texts of a record are cut to this many characters, control characters dropped, so
/// no client-chosen value can make a row unwritable.
const KEY_CHARS_MAX: usize = 128;

fn bounded(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(KEY_CHARS_MAX)
        .collect()
}

impl Parties {
    fn bounded(&self) -> Parties {
        let opt = |v: &Option<String>| v.as_deref().map(bounded);
        Parties {
            customer: bounded(&self.customer),
            device: opt(&self.device),
            network: opt(&self.network),
            payee: opt(&self.payee),
            source: opt(&self.source),
            currency: bounded(&self.currency),
            mcc: opt(&self.mcc),
            merchant_country: opt(&self.merchant_country),
            ..self.clone()
        }
    }
}

/// Sign-ins refused by throttling that one instance scores per second.
pub const REFUSALS_SCORED_PER_S: u32 = 20;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// One dimension's window totals.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    count_24h: i64,
    sum_24h: i64,
    count_1h: i64,
    sum_1h: i64,
    count_1m: i64,
    sum_1m: i64,
    failures_1h: i64,
    distinct_1h: i64,
    /// Whether the event's own customer is among the distinct customers the database counted.
    customer_seen_1h: bool,
}

/// What one assessment reads from the windows: the key of each dimension (blank where no
/// live rule reads it on this kind: then it is not read at all) and where its window starts.
struct WindowQuery<'a> {
    id: &'a str,
    now: i64,
    kind: EventKind,
    parties: &'a Parties,
    needs: &'a Needs,
    keys: [String; 5],
}

impl<'a> WindowQuery<'a> {
    fn new(id: &'a str, now: i64, kind: EventKind, parties: &'a Parties, needs: &'a Needs) -> Self {
        let all = [
            Some(&parties.customer),
            parties.device.as_ref(),
            parties.network.as_ref(),
            parties.payee.as_ref(),
            parties.source.as_ref(),
        ];
        // The customer is always given: the distinct counts of other dimensions tell it
        // apart. Its own window, when no rule reads it, starts now and reads nothing.
        let keys = std::array::from_fn(|i| match (all[i], needs.since[i]) {
            (Some(key), Some(_)) => key.clone(),
            (Some(key), None) if i == 0 => key.clone(),
            _ => String::new(),
        });
        WindowQuery {
            id,
            now,
            kind,
            parties,
            needs,
            keys,
        }
    }

    /// The parameters of [`WINDOWS_SQL`], in its order.
    fn params(&self, topup_key: &str, facts_key: &str) -> Vec<Value> {
        let now = self.now;
        let minute_no = now / MINUTE_MS;
        params![
            now - HOUR_MS,
            now - MINUTE_MS,
            self.id,
            self.keys[0].as_str(),
            self.kind.as_str(),
            self.start(0),
            self.keys[1].as_str(),
            self.start(1),
            self.keys[2].as_str(),
            self.start(2),
            self.keys[3].as_str(),
            self.start(3),
            self.keys[4].as_str(),
            self.start(4),
            topup_key,
            now - DAY_MS,
            self.parties.device.as_deref().unwrap_or(""),
            format!("user:{}", self.parties.customer),
            facts_key,
            minute_no,
            i64::from(self.needs.global),
            minute_no - 60
        ]
    }

    /// Where dimension `i`'s window starts.
    fn start(&self, i: usize) -> i64 {
        self.needs.since[i].map_or(self.now, |back| self.now - back)
    }
}

/// What the windows answered: each dimension's totals, the customer's last top-up (when and
/// how much), and the global sign-in failures (this minute, and the baseline per minute).
#[derive(Default)]
struct WindowRead {
    windows: [Window; 5],
    last_topup: (i64, i64),
    global: (i64, i64),
}

impl WindowRead {
    fn set_features(&self, q: &WindowQuery<'_>, f: &mut Features) {
        for (i, w) in self.windows.iter().enumerate() {
            if q.keys[i].is_empty() {
                continue;
            }
            let d = DIMS[i];
            f.set_int(&format!("{d}_count_24h"), w.count_24h);
            f.set_int(&format!("{d}_sum_24h"), w.sum_24h);
            f.set_int(&format!("{d}_count_1h"), w.count_1h);
            f.set_int(&format!("{d}_sum_1h"), w.sum_1h);
            f.set_int(&format!("{d}_count_1m"), w.count_1m);
            f.set_int(&format!("{d}_sum_1m"), w.sum_1m);
        }
        f.set_int("customer_failures_1h", self.windows[0].failures_1h);
        f.set_int("device_failures_1h", self.windows[1].failures_1h);
        f.set_int("network_failures_1h", self.windows[2].failures_1h);
        f.set_int("payee_failures_1h", self.windows[3].failures_1h);
        f.set_int("network_customers_1h", self.windows[2].distinct_1h);
        if q.kind == EventKind::P2p {
            f.set_int("payee_senders_1h", self.windows[3].distinct_1h);
        }
        let (last_topup_at, last_topup_amount) = self.last_topup;
        if last_topup_at > 0 {
            f.set_int("since_topup_s", (q.now - last_topup_at).max(0) / 1000);
            f.set_int("last_topup_amount", last_topup_amount);
        }
        f.set_int("global_login_failures_1m", self.global.0);
        f.set_int("global_login_failures_baseline", self.global.1);
    }
}

/// The customer's facts, from their row of [`WINDOWS_SQL`]: account age, the device's age
/// (or that it is unknown), time since a credential change, and whether they are verified.
fn set_customer_facts(
    row: &koban_store::sql::Row,
    now: i64,
    f: &mut Features,
) -> Result<(), PayError> {
    f.set_int("customer_age_s", (now - row.i64(1)?).max(0) / 1000);
    match row.i64(2)? {
        first_seen if first_seen >= 0 => {
            f.set_int("device_age_s", (now - first_seen).max(0) / 1000)
        }
        _ => f.set_bool("device_known", false),
    }
    let changed = row.i64(3)?;
    if changed >= 0 {
        f.set_int("since_credential_change_s", (now - changed).max(0) / 1000);
    }
    f.set_bool("customer_verified", row.i64(4)? == 1);
    Ok(())
}

/// One dimension's arm of [`WINDOWS_SQL`]: its number, key parameter, column, start
/// parameter, and how it counts distinct customers in the hour (a macro, so the statement
/// stays one `'static` string).
macro_rules! window_arm {
    ($dim:literal, $key:literal, $column:literal, $from:literal, $distinct:expr) => {
        concat!(
            "SELECT ", $dim, ", COUNT(*), CAST(COALESCE(SUM(amount), 0) AS BIGINT), ",
            "CAST(COALESCE(SUM(CASE WHEN at > $1 THEN 1 ELSE 0 END), 0) AS BIGINT), ",
            "CAST(COALESCE(SUM(CASE WHEN at > $1 THEN amount ELSE 0 END), 0) AS BIGINT), ",
            "CAST(COALESCE(SUM(CASE WHEN at > $2 THEN 1 ELSE 0 END), 0) AS BIGINT), ",
            "CAST(COALESCE(SUM(CASE WHEN at > $2 THEN amount ELSE 0 END), 0) AS BIGINT), ",
            "CAST(COALESCE(SUM(CASE WHEN at > $1 AND failed = 1 THEN 1 ELSE 0 END), 0) AS BIGINT), ",
            $distinct, " ",
            "FROM risk_events WHERE id <> $3 AND ", $key, " <> '' AND ", $column, " = ", $key,
            " AND kind = $5 AND at > ", $from, " "
        )
    };
}

/// Distinct customers in the hour: read only where a feature uses them (a network's
/// customers, a payee's senders). Counting them takes a temporary index over the window's
/// rows, the dearest part of the statement; the other arms answer 0, which nothing reads
/// (`WindowRead::set_features`). The event's own customer ($4) is counted apart (1 when it
/// has an event in the window), so that its events not yet written are not counted twice.
macro_rules! distinct_customers {
    () => {
        "COUNT(DISTINCT CASE WHEN at > $1 AND customer <> $4 THEN customer END), \
         CAST(COALESCE(MAX(CASE WHEN at > $1 AND customer = $4 THEN 1 ELSE 0 END), 0) AS BIGINT)"
    };
}
macro_rules! no_distinct {
    () => {
        "CAST(0 AS BIGINT), CAST(0 AS BIGINT)"
    };
}

/// The features of one event in one statement. Each dimension's arm is an index range
/// (dimension, kind, at) from that dimension's own start: the longest window the live rules read of it, so a busy key (a merchant, a carrier
/// NAT) costs only the rows those rules need. An empty key matches nothing; the event's own
/// earlier record (the same attempt before its step-up) is left out. Parameters: $1 hour
/// start, $2 minute start, $3 this event's id, $4 customer, $5 kind, $6 its start, $7 device,
/// $8 its start, $9 network, $10 its start, $11 payee, $12 its start, $13 source, $14 its
/// start, $15 the customer for the last top-up (or ''), $16 its start; then the customer's
/// facts (arm 6): $17 device, $18 `user:<id>`, $19 the customer (or ''); and the global login
/// failures (arm 7): $20 this minute, $21 1 to read them, $22 an hour of minutes ago.
const WINDOWS_SQL: &str = concat!(
    window_arm!("0", "$4", "customer", "$6", no_distinct!()),
    "UNION ALL ",
    window_arm!("1", "$7", "device", "$8", no_distinct!()),
    "UNION ALL ",
    window_arm!("2", "$9", "network", "$10", distinct_customers!()),
    "UNION ALL ",
    window_arm!("3", "$11", "payee", "$12", distinct_customers!()),
    "UNION ALL ",
    window_arm!("4", "$13", "source", "$14", no_distinct!()),
    "\
UNION ALL SELECT 5, COUNT(*), CAST(COALESCE(MAX(at), 0) AS BIGINT), \
 CAST(COALESCE((SELECT t.amount FROM risk_events t WHERE t.customer = $15 AND t.kind = 'topup' AND t.at > $16 ORDER BY t.at DESC LIMIT 1), 0) AS BIGINT), \
 0, 0, 0, 0, 0, 0 \
 FROM risk_events WHERE $15 <> '' AND customer = $15 AND kind = 'topup' AND at > $16 \
UNION ALL SELECT 6, u.created_at, \
 CAST(COALESCE((SELECT d.first_seen_at FROM known_devices d WHERE d.user_id = u.id AND d.device_id = $17), -1) AS BIGINT), \
 CAST(COALESCE((SELECT MAX(a.at) FROM audit_log a WHERE a.subject IN (u.id, $18) AND a.action IN \
  ('password.changed', 'password.reset', 'email.changed', 'phone.changed', 'factor.removed', 'factor.recovery_codes.replaced', 'recovery.approved')), -1) AS BIGINT), \
 CAST(CASE WHEN EXISTS (SELECT 1 FROM kyc k WHERE k.user_id = u.id AND k.status = 'approved') THEN 1 ELSE 0 END AS BIGINT), \
 0, 0, 0, 0, 0 \
 FROM users u WHERE $19 <> '' AND u.id = $19 \
UNION ALL SELECT 7, CAST(COALESCE(SUM(CASE WHEN minute = $20 THEN failures ELSE 0 END), 0) AS BIGINT), \
 CAST(COALESCE(SUM(CASE WHEN minute < $20 THEN failures ELSE 0 END), 0) AS BIGINT), 0, 0, 0, 0, 0, 0, 0 \
 FROM failure_minutes WHERE $21 = 1 AND minute >= $22 AND minute <= $20"
);

const DIMS: [&str; 5] = ["customer", "device", "network", "payee", "source"];

/// What the live rules read of one kind of event: how far back each dimension's windows go
/// (none: not read), and whether the last top-up, the customer's facts and the global login
/// failures are needed. Features outside it are not computed and not recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub since: [Option<i64>; 5],
    pub topup: bool,
    pub facts: bool,
    pub global: bool,
}

impl Needs {
    /// From the feature names the rules use (`RuleSet::needs`).
    pub fn of<'a>(names: impl IntoIterator<Item = &'a String>) -> Needs {
        let mut needs = Needs::default();
        for name in names {
            let name = name.as_str();
            for (i, d) in DIMS.iter().enumerate() {
                let window = name
                    .strip_prefix(d)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .is_some_and(|rest| {
                        rest.starts_with("count_")
                            || rest.starts_with("sum_")
                            || rest.starts_with("failures_")
                            || (i == 2 && rest.starts_with("customers_"))
                            || (i == 3 && rest.starts_with("senders_"))
                    });
                if window {
                    let back = if name.ends_with("_24h") {
                        DAY_MS
                    } else if name.ends_with("_1h") {
                        HOUR_MS
                    } else {
                        MINUTE_MS
                    };
                    needs.since[i] = Some(needs.since[i].map_or(back, |b| b.max(back)));
                }
            }
            match name {
                "since_topup_s" | "last_topup_amount" => needs.topup = true,
                "customer_age_s"
                | "device_age_s"
                | "device_known"
                | "since_credential_change_s"
                | "customer_verified" => needs.facts = true,
                "global_login_failures_1m" | "global_login_failures_baseline" => {
                    needs.global = true
                }
                _ => {}
            }
        }
        needs
    }

    /// The features this leaves uncomputed (left out of the record, so a backtest can tell
    /// a feature that was 0 from one that was not read).
    pub fn unread(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, d) in DIMS.iter().enumerate() {
            let back = self.since[i].unwrap_or(0);
            for (span, length) in [("1m", MINUTE_MS), ("1h", HOUR_MS), ("24h", DAY_MS)] {
                if back < length {
                    out.push(format!("{d}_count_{span}"));
                    out.push(format!("{d}_sum_{span}"));
                }
            }
            if back < HOUR_MS {
                if i <= 2 {
                    out.push(format!("{d}_failures_1h"));
                }
                if i == 2 {
                    out.push("network_customers_1h".to_owned());
                }
                if i == 3 {
                    out.push("payee_senders_1h".to_owned());
                }
            }
        }
        if !self.topup {
            out.extend(["since_topup_s".to_owned(), "last_topup_amount".to_owned()]);
        }
        if !self.facts {
            out.extend(
                [
                    "customer_age_s",
                    "device_age_s",
                    "since_credential_change_s",
                    "customer_verified",
                ]
                .map(str::to_owned),
            );
        }
        if !self.global {
            out.extend(
                ["global_login_failures_1m", "global_login_failures_baseline"].map(str::to_owned),
            );
        }
        out
    }
}

impl<S: LedgerStore> Payments<S> {
    /// The live rule set.
    pub fn risk_rules(&self) -> &RiskRules {
        &self.risk_rules
    }

    /// Decides one event: hard limits first, then the rules over the features; records the
    /// decision. The caller obeys the answer.
    pub async fn assess(&self, event: &RiskEvent, parties: &Parties) -> Result<Decision, PayError> {
        Ok(self.assess_recorded(event, parties).await?.0)
    }

    /// [`Payments::assess`], also returning the id of the recorded event.
    pub async fn assess_recorded(
        &self,
        event: &RiskEvent,
        parties: &Parties,
    ) -> Result<(Decision, String), PayError> {
        let started = std::time::Instant::now();
        let now = self.now_ms();
        let parties = &parties.bounded();
        let id = self.risk_record_id(parties);
        let mut features = base_features(event, parties);
        let rules = self.risk_rules.current();
        let limit = limits(event);
        // A hard limit decides before any feature is read.
        let needs = match limit {
            Some(_) => Needs::default(),
            None => Needs::of(rules.needs(event.kind)),
        };
        let (decision, verdict) = match limit {
            Some((code, rule)) => (Decision::Deny { code }, limit_verdict(code, rule)),
            None => {
                self.window_features(&id, now, event.kind, parties, &needs, &mut features)
                    .await?;
                let verdict = rules.decide(&features);
                for rule in &verdict.errors {
                    tracing::warn!(rule = %rule, "a risk rule failed to evaluate");
                }
                (decision_of(&verdict), verdict)
            }
        };
        metrics::counter!("koban_risk_decisions_total", "action" => verdict.action.as_str())
            .increment(1);
        metrics::histogram!("koban_risk_decision_seconds").record(started.elapsed().as_secs_f64());
        if let Some(top) = verdict.strictest() {
            tracing::info!(event = event.kind.as_str(), rule = %top.rule, action = top.action.as_str(), "risk rule fired");
        }
        self.queue_risk(Recorded {
            id: id.clone(),
            at_ms: now,
            kind: event.kind,
            parties: parties.clone(),
            amount: clamp(event.amount),
            verdict,
            features,
            digest: rules.digest(),
            needs,
        });
        Ok((decision, id))
    }

    /// The id an assessment is recorded under: one per attempt, so a retry after step-up
    /// replaces the first decision; and per customer, since several may try one payment
    /// request. An event that is not an attempt at something gets a fresh id.
    fn risk_record_id(&self, parties: &Parties) -> String {
        match parties.attempt {
            Some(attempt) => uuid::Uuid::from_u128(
                self.derive_id(&[
                    b"risk-attempt",
                    parties.customer.as_bytes(),
                    &attempt.to_bytes(),
                ])
                .get(),
            )
            .to_string(),
            None => koban_shared::new_id(),
        }
    }

    /// Records the decision on a movement the ledger holds when a crash lost its record (it
    /// was queued, not yet written, when the process died): the retry that replays the
    /// movement writes what is still known (parties, amount, outcome) under the attempt's id,
    /// with no features and the digest `recovered`, at the transfer's time. A record written,
    /// or still queued here, is left as it is; the real one, written later, replaces it.
    pub(crate) async fn recover_decision(
        &self,
        kind: EventKind,
        parties: &Parties,
        transfer: &koban_ledger::Transfer,
        action: Action,
    ) -> Result<(), PayError> {
        let parties = parties.bounded();
        let at_ms = i64::try_from(transfer.timestamp.nanos() / 1_000_000).unwrap_or(i64::MAX);
        let id = self.risk_record_id(&parties);
        if let Ok(queue) = self.risk_queue.lock()
            && queue
                .pending
                .iter()
                .chain(queue.flushing.iter())
                .any(|r| r.id == id)
        {
            return Ok(());
        }
        self.write_batched(
            "INSERT INTO risk_events (id, at, kind, customer, device, network, payee, source, amount, currency, failed, action, score, fired, features, rules_digest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, 0, '[]', '{}', 'recovered') ON CONFLICT (id) DO NOTHING",
            vec![
                Value::from(id.as_str()),
                Value::from(at_ms),
                Value::from(kind.as_str()),
                Value::from(parties.customer.as_str()),
                Value::from(parties.device.as_deref().unwrap_or("")),
                Value::from(parties.network.as_deref().unwrap_or("")),
                Value::from(parties.payee.as_deref().unwrap_or("")),
                Value::from(parties.source.as_deref().unwrap_or("")),
                Value::from(transfer.amount.to_i64()),
                Value::from(parties.currency.as_str()),
                Value::from(action.as_str()),
            ],
        )
        .await
    }

    /// Marks a recorded event as a failed attempt (the secret it carried was wrong).
    /// Never touches the database itself (its caller may hold the write transaction): a
    /// record already taken by a flush is corrected by the next one.
    pub fn mark_risk_failed(&self, id: &str) {
        if let Ok(mut queue) = self.risk_queue.lock() {
            match queue.pending.iter_mut().find(|r| r.id == id) {
                Some(r) => {
                    r.parties.failed = true;
                    r.features.set_bool("failed", true);
                }
                None => queue.failed_late.push(id.to_owned()),
            }
        }
    }

    /// Reloads the live rule set from its file (`actor` did it: an operator, or `system` on
    /// SIGHUP); an invalid file is refused and the live set stays. Audited either way.
    /// Reloads this instance's rules file and publishes it in `risk_rule_sets`, from where
    /// every instance on the database takes it ([`Payments::sync_risk_rules`]); audited.
    pub async fn reload_risk_rules(&self, actor: &str) -> Result<Arc<RuleSet>, PayError> {
        let result = self.risk_rules.reload();
        let now = self.now_ms();
        let mut tx = self.db().begin().await?;
        koban_shared::audit::append(
            &mut tx,
            self.auth.audit_key(),
            now,
            koban_shared::audit::AuditEvent {
                actor,
                action: if result.is_ok() {
                    "risk.rules_reloaded"
                } else {
                    "risk.rules_refused"
                },
                subject: "risk_rules",
                details: match &result {
                    Ok((set, _)) => {
                        serde_json::json!({ "digest": set.digest(), "rules": set.rules().len() })
                    }
                    Err(problem) => serde_json::json!({ "problem": problem }),
                },
            },
        )
        .await?;
        // Numbered under the audit chain's lock, which the entry above took.
        let published = match &result {
            Ok((set, text)) => Some(
                tx.query_one(
                    "INSERT INTO risk_rule_sets (version, digest, source, actor, created_at) \
                     SELECT COALESCE(MAX(version), 0) + 1, $1, $2, $3, $4 FROM risk_rule_sets \
                     RETURNING version",
                    params![set.digest(), text.as_str(), actor, now],
                )
                .await?
                .i64(0)?,
            ),
            Err(_) => None,
        };
        tx.commit().await?;
        let (set, _) = result.map_err(PayError::RulesInvalid)?;
        if let Some(version) = published {
            self.risk_rules.adopt(version, set.clone());
        }
        Ok(set)
    }

    /// Takes the newest rule set published by any instance, when it is newer than the one in
    /// force here; answers it when it changed. A published set that does not parse here (a
    /// binary older than the one that published it) is refused once, with the error, and the
    /// live set stays.
    pub async fn sync_risk_rules(&self) -> Result<Option<Arc<RuleSet>>, PayError> {
        let rows = self
            .db()
            .read(
                "SELECT version, source FROM risk_rule_sets ORDER BY version DESC LIMIT 1",
                vec![],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let version = row.i64(0)?;
        let rules = &self.risk_rules;
        if version <= rules.published() {
            return Ok(None);
        }
        match RuleSet::parse(&row.text(1)?) {
            Ok(set) => {
                let set = Arc::new(set);
                Ok(rules.adopt(version, set.clone()).then_some(set))
            }
            Err(e) => {
                // Refused once: the version counts as seen, the live set stays.
                rules.published.fetch_max(version, Ordering::SeqCst);
                Err(PayError::RulesInvalid(format!(
                    "the published rule set {version} is invalid here: {e}"
                )))
            }
        }
    }

    fn queue_risk(&self, recorded: Recorded) {
        if let Ok(mut queue) = self.risk_queue.lock() {
            match queue.pending.iter_mut().find(|r| r.id == recorded.id) {
                Some(earlier) => *earlier = recorded,
                None => queue.pending.push(recorded),
            }
            let over = crate::keep_newest(&mut queue.pending, QUEUED_MAX);
            if over > 0 {
                metrics::counter!("koban_risk_records_dropped_total")
                    .increment(u64::try_from(over).unwrap_or(u64::MAX));
                tracing::warn!(
                    dropped = over,
                    "risk records could not be written in time; the oldest were dropped"
                );
            }
        }
    }

    /// Scores a sign-in off the answer's path (known and unknown addresses are answered
    /// alike): a success, a wrong password, or a sign-in refused by throttling, which is
    /// scored as a failed one so that an attack the throttle already slows still counts in
    /// the windows the stuffing rules read. At most [`REFUSALS_SCORED_PER_S`] refusals a
    /// second are scored on one instance: a flood cannot turn each cheap refusal into
    /// database work. Other refusals (busy, invalid) are not scored.
    pub fn score_login<T>(
        &self,
        email: &str,
        client: &koban_auth::Client,
        result: &Result<T, koban_auth::AuthError>,
    ) {
        let failed = match result {
            Ok(_) => false,
            Err(koban_auth::AuthError::BadCredentials) => true,
            Err(koban_auth::AuthError::Throttled { .. }) if self.score_refusal() => true,
            Err(_) => return,
        };
        let (pay, email, client) = (self.clone(), email.to_owned(), client.clone());
        tokio::spawn(async move {
            if let Err(error) = pay.record_login(&email, &client, failed).await {
                tracing::warn!(error = %error, "a login could not be scored");
            }
        });
    }

    /// Takes one of this second's refusals to score, if any is left.
    fn score_refusal(&self) -> bool {
        let second = self.now_ms().div_euclid(1_000);
        let Ok(mut scored) = self.refusals_scored.lock() else {
            return false;
        };
        if scored.0 != second {
            *scored = (second, 0);
        }
        scored.1 += 1;
        scored.1 <= REFUSALS_SCORED_PER_S
    }

    /// Records a login attempt (success or wrong password) for the windows, the timeline and
    /// the rules; alerts only (a login's refusal is the identity service's).
    pub async fn record_login(
        &self,
        email: &str,
        client: &koban_auth::Client,
        failed: bool,
    ) -> Result<(), PayError> {
        // An address that does not parse names no account.
        let customer = match koban_auth::Email::parse(email) {
            Ok(email) => match self
                .db()
                .read(
                    "SELECT id FROM users WHERE email_index = $1",
                    params![
                        (self.auth.vault())
                            .index(koban_shared::personal::Index::Email, email.as_str())
                    ],
                )
                .await?
                .first()
            {
                Some(row) => row.text(0)?,
                None => String::new(),
            },
            Err(_) => String::new(),
        };
        let event = RiskEvent {
            kind: EventKind::Login,
            amount: 0,
            spent_today: 0,
            daily_out_max: u64::MAX,
            cooling_off_max: None,
            payee_new: false,
            paid_to_payee_today: 0,
            per_payee_daily_max: u64::MAX,
            payee_account_age_s: None,
            step_up_from: self.config.step_up_from_minor,
            review_new_payee_from: self.config.review_new_payee_from_minor,
            fan_in_senders_max: self.config.fan_in_senders_max,
        };
        let parties = Parties {
            failed,
            ..Parties::of(&customer, Some(client))
        };
        self.assess(&event, &parties).await.map(|_| ())
    }

    /// Fills the window features of `parties` from `risk_events` and this instance's
    /// unwritten events, and the customer's own facts (age, tier, device, credential change).
    #[allow(clippy::too_many_arguments)]
    async fn window_features(
        &self,
        id: &str,
        now: i64,
        kind: EventKind,
        parties: &Parties,
        needs: &Needs,
        f: &mut Features,
    ) -> Result<(), PayError> {
        let q = WindowQuery::new(id, now, kind, parties, needs);
        let mut read = self.read_windows(&q, f).await?;
        self.count_unwritten(&q, &mut read);
        read.set_features(&q, f);
        Ok(())
    }

    /// One statement, one round trip: every window, the last top-up, the customer's facts
    /// (set into `f` as they are read) and the global failure rate.
    async fn read_windows(
        &self,
        q: &WindowQuery<'_>,
        f: &mut Features,
    ) -> Result<WindowRead, PayError> {
        let customer = q.parties.customer.as_str();
        let topup_key = if q.needs.topup { customer } else { "" };
        let facts_key = if q.needs.facts { customer } else { "" };
        let mut read = WindowRead::default();
        // The customer's key is always given (for the distinct counts), but read only when a
        // rule reads its windows.
        let read_none = q
            .keys
            .iter()
            .zip(&q.needs.since)
            .all(|(key, since)| key.is_empty() || since.is_none());
        if read_none && topup_key.is_empty() && facts_key.is_empty() && !q.needs.global {
            return Ok(read);
        }
        let params = q.params(topup_key, facts_key);
        let rows = self.db().read(WINDOWS_SQL, params).await?;
        let now = q.now;
        for row in &rows {
            match row.i64(0)? {
                5 => read.last_topup = (row.i64(2)?, row.i64(3)?),
                6 => set_customer_facts(row, now, f)?,
                7 => read.global = (row.i64(1)?, row.i64(2)? / 60),
                dim => {
                    if let Some(w) = usize::try_from(dim)
                        .ok()
                        .and_then(|d| read.windows.get_mut(d))
                    {
                        *w = Window {
                            count_24h: row.i64(1)?,
                            sum_24h: row.i64(2)?,
                            count_1h: row.i64(3)?,
                            sum_1h: row.i64(4)?,
                            count_1m: row.i64(5)?,
                            sum_1m: row.i64(6)?,
                            failures_1h: row.i64(7)?,
                            distinct_1h: row.i64(8)? + row.i64(9)?,
                            customer_seen_1h: row.i64(9)? > 0,
                        };
                    }
                }
            }
        }
        Ok(read)
    }

    /// Adds this instance's events not yet written to what the database answered.
    fn count_unwritten(&self, q: &WindowQuery<'_>, read: &mut WindowRead) {
        let Ok(queue) = self.risk_queue.lock() else {
            return;
        };
        let (hour, minute, day) = (q.now - HOUR_MS, q.now - MINUTE_MS, q.now - DAY_MS);
        let mut senders_pending = std::collections::BTreeSet::new();
        let mut network_customers_pending = std::collections::BTreeSet::new();
        let mut seen = std::collections::HashSet::new();
        for r in queue.pending.iter().chain(queue.flushing.iter()) {
            // The same attempt may wait again while its first decision is being written.
            if r.at_ms <= day || r.id == q.id || !seen.insert(r.id.as_str()) {
                continue;
            }
            if q.needs.topup
                && r.kind == EventKind::Topup
                && r.parties.customer == q.parties.customer
                && r.at_ms >= read.last_topup.0
            {
                read.last_topup = (r.at_ms, r.amount);
            }
            if r.kind != q.kind {
                continue;
            }
            let theirs = [
                Some(r.parties.customer.as_str()).filter(|c| !c.is_empty()),
                r.parties.device.as_deref(),
                r.parties.network.as_deref(),
                r.parties.payee.as_deref(),
                r.parties.source.as_deref(),
            ];
            for (i, w) in read.windows.iter_mut().enumerate() {
                if q.keys[i].is_empty()
                    || theirs[i] != Some(q.keys[i].as_str())
                    || r.at_ms <= q.start(i)
                {
                    continue;
                }
                w.count_24h += 1;
                w.sum_24h = w.sum_24h.saturating_add(r.amount);
                if r.at_ms > hour {
                    w.count_1h += 1;
                    w.sum_1h = w.sum_1h.saturating_add(r.amount);
                    if r.parties.failed {
                        w.failures_1h += 1;
                    }
                    if i == 3 {
                        senders_pending.insert(r.parties.customer.as_str());
                    }
                    if i == 2 {
                        network_customers_pending.insert(r.parties.customer.as_str());
                    }
                }
                if r.at_ms > minute {
                    w.count_1m += 1;
                    w.sum_1m = w.sum_1m.saturating_add(r.amount);
                }
            }
        }
        // Distinct counts add this instance's unwritten customers: the event's own customer
        // when the database had none of its events, every other one (another customer written
        // a moment ago and in flight again counts twice: a slight overestimate).
        let own = q.parties.customer.as_str();
        for (dim, pending) in [(3, senders_pending), (2, network_customers_pending)] {
            let w = &mut read.windows[dim];
            let others = pending.iter().filter(|c| **c != own).count();
            let own_new = pending.contains(own) && !w.customer_seen_1h;
            w.distinct_1h += i64::try_from(others).unwrap_or(0) + i64::from(own_new);
        }
    }

    /// Writes the decisions queued since the last flush, and makes alerts and cases from the
    /// ones that raise one. Returns how many events were written. The caller holds
    /// `record_flush` ([`Payments::flush_records`]).
    pub(crate) async fn flush_risk_locked(&self) -> Result<usize, PayError> {
        let (batch, failed_late) = match self.risk_queue.lock() {
            Ok(mut queue) => {
                let batch = Arc::new(std::mem::take(&mut queue.pending));
                queue.flushing = batch.clone();
                (batch, std::mem::take(&mut queue.failed_late))
            }
            Err(_) => return Ok(0),
        };
        if batch.is_empty() && failed_late.is_empty() {
            return Ok(0);
        }
        let written = self.write_risk(&batch, &failed_late).await;
        if let Ok(mut queue) = self.risk_queue.lock() {
            queue.flushing = Arc::default();
            if written.is_err() {
                // Kept for the next flush, oldest first.
                let mut again: Vec<Recorded> = batch.iter().cloned().collect();
                again.append(&mut queue.pending);
                queue.pending = again;
                let mut late = failed_late;
                late.append(&mut queue.failed_late);
                queue.failed_late = late;
            }
        }
        written.map(|()| batch.len())
    }

    async fn write_risk(&self, batch: &[Recorded], failed_late: &[String]) -> Result<(), PayError> {
        // Unsynced, as the notices are (`write_notices`).
        let mut tx = self.db().begin_unsynced().await?;
        for r in batch {
            let fired = serde_json::to_string(&r.verdict.fired).unwrap_or_else(|_| "[]".into());
            let mut features = r.features.to_json();
            if let Some(object) = features.as_object_mut() {
                for name in r.needs.unread() {
                    object.remove(&name);
                }
            }
            tx.execute(
                "INSERT INTO risk_events (id, at, kind, customer, device, network, payee, source, amount, currency, failed, action, score, fired, features, rules_digest) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at, kind = excluded.kind, customer = excluded.customer, \
                 device = excluded.device, network = excluded.network, payee = excluded.payee, source = excluded.source, \
                 amount = excluded.amount, currency = excluded.currency, failed = excluded.failed, action = excluded.action, \
                 score = excluded.score, fired = excluded.fired, features = excluded.features, rules_digest = excluded.rules_digest",
                vec![
                    Value::from(r.id.as_str()),
                    Value::from(r.at_ms),
                    Value::from(r.kind.as_str()),
                    Value::from(r.parties.customer.as_str()),
                    Value::from(r.parties.device.as_deref().unwrap_or("")),
                    Value::from(r.parties.network.as_deref().unwrap_or("")),
                    Value::from(r.parties.payee.as_deref().unwrap_or("")),
                    Value::from(r.parties.source.as_deref().unwrap_or("")),
                    Value::from(r.amount),
                    Value::from(r.parties.currency.as_str()),
                    Value::from(i64::from(r.parties.failed)),
                    Value::from(r.verdict.action.as_str()),
                    Value::from(r.verdict.score),
                    Value::from(fired.as_str()),
                    Value::from(features.to_string().as_str()),
                    Value::from(r.digest.as_str()),
                ],
            )
            .await?;
        }
        for id in failed_late {
            tx.execute(
                "UPDATE risk_events SET failed = 1, features = REPLACE(features, '\"failed\":false', '\"failed\":true') WHERE id = $1",
                params![id.as_str()],
            )
            .await?;
        }
        for r in batch {
            raise_alerts(&mut tx, r).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Raises an alert for every rule that fired on a recorded event and asks for one. Hard
/// limits are the customer's own business, not fraud: no alert.
async fn raise_alerts<T: SqlTx>(tx: &mut T, r: &Recorded) -> Result<(), PayError> {
    for fired in r
        .verdict
        .fired
        .iter()
        .filter(|f| f.action.raises_alert() && !f.rule.starts_with("limit."))
    {
        let (subject, role) = alert_subject(&r.parties, fired.case_by);
        crate::cases::raise_alert(
            tx,
            r.at_ms,
            &crate::cases::NewAlert {
                rule: &fired.rule,
                reason: &fired.reason,
                action: fired.action.as_str(),
                score: fired.score,
                event_id: Some(&r.id),
                subject: &subject,
                subject_role: role,
            },
        )
        .await?;
    }
    Ok(())
}

/// Whom an alert is about, and in what role: the payee or the customer as the rule says; an
/// attempt on no known account (stuffing unknown addresses) is grouped under the network it
/// came from.
fn alert_subject(parties: &Parties, case_by: koban_risk::CaseBy) -> (String, &'static str) {
    let party = match case_by {
        koban_risk::CaseBy::Payee => (parties.payee.clone(), "payee"),
        koban_risk::CaseBy::Customer => (Some(parties.customer.clone()), "customer"),
    };
    match party {
        (Some(who), role) if !who.is_empty() => (who, role),
        _ => (
            format!(
                "network:{}",
                parties.network.as_deref().unwrap_or("unknown")
            ),
            "network",
        ),
    }
}

/// The risk context of a movement, as every kind of payment (and the card subdomain) builds it.
impl<S: LedgerStore> Payments<S> {
    pub async fn context_for(
        &self,
        user_id: &koban_shared::ids::UserId,
        cooling_off_until: Option<i64>,
        kind: EventKind,
        payer: &koban_ledger::Account,
        amount: koban_ledger::Amount,
    ) -> Result<RiskEvent, PayError> {
        let holder = self.holder(user_id).await?;
        let spent_today = self.spent_today(payer).await?;
        Ok(self.risk_event(
            holder.tier,
            cooling_off_until,
            kind,
            Some(amount),
            spent_today,
        ))
    }

    /// The risk context of an outgoing movement, from what the caller already read (`None`:
    /// an event that moves no money, such as linking a bank account). This is where an
    /// [`Amount`](koban_ledger::Amount) becomes the plain number the rules compare.
    pub fn risk_event(
        &self,
        tier: crate::wallets::Tier,
        cooling_off_until: Option<i64>,
        kind: EventKind,
        amount: Option<koban_ledger::Amount>,
        spent_today: u64,
    ) -> RiskEvent {
        let cooling = cooling_off_until
            .filter(|until| *until > self.now_ms())
            .map(|_| u64::try_from(self.auth.config().cooling_off_limit_minor).unwrap_or(0));
        RiskEvent {
            kind,
            amount: amount.map_or(0, koban_ledger::Amount::minor_units),
            spent_today,
            daily_out_max: self.limits(tier).daily_out_max,
            cooling_off_max: cooling,
            payee_new: false,
            paid_to_payee_today: 0,
            per_payee_daily_max: self.config.per_payee_daily_max,
            payee_account_age_s: None,
            step_up_from: self.config.step_up_from_minor,
            review_new_payee_from: self.config.review_new_payee_from_minor,
            fan_in_senders_max: self.config.fan_in_senders_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p2p(amount: u64) -> RiskEvent {
        RiskEvent {
            kind: EventKind::P2p,
            amount,
            spent_today: 0,
            daily_out_max: 50_000,
            cooling_off_max: None,
            payee_new: false,
            paid_to_payee_today: 0,
            per_payee_daily_max: 30_000,
            payee_account_age_s: Some(365 * 24 * 3600),
            step_up_from: 10_000,
            review_new_payee_from: 20_000,
            fan_in_senders_max: 5,
        }
    }

    // The windows statement finds a customer's credential changes by subject: through the
    // action index it would read every customer's (a cost that grows with the population).
    // A guard on SQLite's plan, which a new index or another SQLite could change.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_windows_read_finds_credential_changes_by_customer() {
        use koban_store::sql::SqlDb;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = koban_store_sqlite::SqliteStore::open(
            &dir.path().join("koban.db"),
            koban_store_sqlite::SqliteConfig::default(),
        )
        .expect("store");
        let explain: &'static str =
            Box::leak(format!("EXPLAIN QUERY PLAN {WINDOWS_SQL}").into_boxed_str());
        let params: Vec<Value> = (1..=22).map(|_| Value::from("x")).collect();
        let plan: Vec<String> = store
            .sql()
            .read(explain, params)
            .await
            .expect("a plan")
            .iter()
            .map(|row| row.text(3).expect("detail"))
            .collect();
        assert!(
            plan.iter().any(|step| step.contains("audit_log_subject")),
            "{plan:#?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("audit_log_action")),
            "{plan:#?}"
        );
    }

    #[test]
    fn hard_limits_deny_with_a_code_the_customer_can_act_on() {
        assert_eq!(limits(&p2p(500)), None);
        let over_day = RiskEvent {
            spent_today: 45_000,
            ..p2p(6_000)
        };
        assert_eq!(limits(&over_day).map(|l| l.0), Some("daily_limit"));
        let at_cap = RiskEvent {
            spent_today: 40_000,
            ..p2p(10_000)
        };
        assert_eq!(limits(&at_cap), None, "exactly at the cap is allowed");
        let over_payee = RiskEvent {
            paid_to_payee_today: 29_000,
            ..p2p(2_000)
        };
        assert_eq!(limits(&over_payee).map(|l| l.0), Some("payee_limit"));
        let cooling = RiskEvent {
            cooling_off_max: Some(10_000),
            ..p2p(10_001)
        };
        assert_eq!(limits(&cooling).map(|l| l.0), Some("cooling_off_limit"));
        // Money coming in is never capped by the out-flow limits.
        let topup = RiskEvent {
            kind: EventKind::Topup,
            spent_today: 45_000,
            ..p2p(60_000)
        };
        assert_eq!(limits(&topup), None);
    }

    #[test]
    fn the_default_rules_decide_as_the_payment_code_expects() {
        let rules = koban_risk::RuleSet::default_rules();
        let decide = |event: &RiskEvent, senders: i64| {
            let mut f = base_features(event, &Parties::default());
            f.set_bool("device_known", true);
            f.set_int("device_age_s", 400 * 86_400);
            f.set_int("payee_senders_1h", senders);
            decision_of(&rules.decide(&f))
        };
        assert_eq!(decide(&p2p(500), 0), Decision::Allow);
        assert_eq!(decide(&p2p(10_000), 0), Decision::Challenge);
        let new = RiskEvent {
            payee_new: true,
            ..p2p(100)
        };
        assert_eq!(decide(&new, 0), Decision::Challenge);
        let large_new = RiskEvent {
            payee_new: true,
            ..p2p(20_000)
        };
        assert_eq!(decide(&large_new, 0), Decision::Hold);
        let young = RiskEvent {
            payee_account_age_s: Some(3_600),
            ..p2p(1_000)
        };
        assert_eq!(decide(&young, 5), Decision::Hold);
        assert_eq!(decide(&young, 4), Decision::Allow);
        assert_eq!(
            decide(&p2p(1_000), 50),
            Decision::Allow,
            "an old, popular payee"
        );
    }

    #[test]
    fn needs_read_only_the_windows_the_rules_name_and_as_far_back_as_they_look() {
        let names: Vec<String> = [
            "payee_senders_1h",
            "customer_count_1m",
            "customer_sum_24h",
            "since_topup_s",
            "payee_age_s",
            "device_known",
        ]
        .map(str::to_owned)
        .to_vec();
        let needs = Needs::of(&names);
        assert_eq!(
            needs.since[0],
            Some(DAY_MS),
            "customer: the longest window named"
        );
        assert_eq!(needs.since[1], None, "device_known is not a window");
        assert_eq!(needs.since[2], None);
        assert_eq!(
            needs.since[3],
            Some(HOUR_MS),
            "payee: the senders of the last hour"
        );
        assert!(needs.topup && needs.facts && !needs.global);
        let unread = needs.unread();
        assert!(unread.contains(&"payee_count_24h".to_owned()));
        assert!(unread.contains(&"network_customers_1h".to_owned()));
        assert!(unread.contains(&"global_login_failures_1m".to_owned()));
        assert!(!unread.contains(&"payee_senders_1h".to_owned()));
        assert!(!unread.contains(&"customer_sum_1h".to_owned()));
        // The default rules read no payee or network window for a merchant payment.
        let rules = koban_risk::RuleSet::default_rules();
        let merchant = Needs::of(rules.needs(EventKind::MerchantPayment));
        assert_eq!((merchant.since[2], merchant.since[3]), (None, None));
        let login = Needs::of(rules.needs(EventKind::Login));
        assert_eq!(login.since[2], Some(HOUR_MS));
    }
}
