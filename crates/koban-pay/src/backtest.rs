//! A candidate rule set tried on the decisions already recorded in `risk_events`, before it
//! goes live: for the operator console and for `koban risk backtest`.

use std::collections::BTreeMap;
use std::sync::Arc;

use koban_auth::Principal;
use koban_risk::backtest::{BacktestReport, RecordedEvent, backtest};
use koban_risk::{Features, RuleSet};
use koban_store::LedgerStore;
use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx};

use crate::wallets::DAY_MS;
use crate::{PayError, Payments};

/// Days of recorded decisions a console backtest replays.
pub const CONSOLE_BACKTEST_DAYS: i64 = 7;
/// Recorded decisions a console backtest replays at most (the newest of the week).
pub const CONSOLE_BACKTEST_EVENTS_MAX: i64 = 50_000;
/// The longest candidate file the console takes (the shipped file is about 10 KiB).
pub const CANDIDATE_BYTES_MAX: usize = 48 * 1024;
/// The most rules a candidate file may hold.
pub const CANDIDATE_RULES_MAX: usize = 200;

/// One console backtest at a time on this instance: a replay is CPU work, kept off the
/// request threads and not multiplied by repeated submits.
static CONSOLE_BACKTESTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// A feature a candidate rule names that the recorded events do not hold: the live rules did
/// not need it, so it was not computed, and the candidate saw its default there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrecorded {
    pub rule: String,
    pub feature: String,
    pub events: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateReport {
    pub report: BacktestReport,
    pub unrecorded_features: Vec<Unrecorded>,
}

/// Which recorded decisions a replay keeps when there are more than its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    Oldest,
    Newest,
}

/// Replays at most `limit` recorded decisions from `since` (ms), in the order they were made,
/// under `live` and `candidate`. Reading is async; parsing and deciding run on a blocking
/// thread.
pub async fn replay_recorded<D: SqlDb>(
    db: &D,
    live: Arc<RuleSet>,
    candidate: Arc<RuleSet>,
    since: i64,
    limit: i64,
    keep: Keep,
) -> Result<CandidateReport, PayError> {
    let mut tx = db.begin_read().await?;
    let sql = match keep {
        Keep::Oldest => {
            "SELECT id, at, features FROM risk_events WHERE at >= $1 ORDER BY at, id LIMIT $2"
        }
        Keep::Newest => {
            "SELECT id, at, features FROM risk_events WHERE at >= $1 ORDER BY at DESC, id DESC LIMIT $2"
        }
    };
    let mut rows = tx
        .query(sql, params![since, limit.clamp(1, 10_000_000)])
        .await?;
    tx.commit().await?;
    if keep == Keep::Newest {
        rows.reverse();
    }
    let mut recorded = Vec::with_capacity(rows.len());
    for row in &rows {
        recorded.push((row.text(0)?, row.i64(1)?, row.text(2)?));
    }
    tokio::task::spawn_blocking(move || replay(&live, &candidate, recorded))
        .await
        .map_err(|_| PayError::Invalid("the backtest stopped before it finished"))?
}

fn replay(
    live: &RuleSet,
    candidate: &RuleSet,
    recorded: Vec<(String, i64, String)>,
) -> Result<CandidateReport, PayError> {
    let mut events = Vec::with_capacity(recorded.len());
    let mut unrecorded: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (id, at_ms, text) in recorded {
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| PayError::Invalid("a recorded event's features are not JSON"))?;
        let kind = json.get("event").and_then(|e| e.as_str()).unwrap_or("");
        for rule in candidate.rules().iter().filter(|r| r.enabled) {
            if !rule.kinds.iter().any(|k| k.as_str() == kind) {
                continue;
            }
            for feature in &rule.references {
                if feature != "event" && json.get(feature).is_none() {
                    *unrecorded
                        .entry((rule.name.clone(), feature.clone()))
                        .or_default() += 1;
                }
            }
        }
        let features = Features::from_json(&json)
            .map_err(|_| PayError::Invalid("a recorded event's features cannot be read"))?;
        events.push(RecordedEvent {
            id,
            at_ms,
            features,
        });
    }
    Ok(CandidateReport {
        report: backtest(live, candidate, &events),
        unrecorded_features: unrecorded
            .into_iter()
            .map(|((rule, feature), events)| Unrecorded {
                rule,
                feature,
                events,
            })
            .collect(),
    })
}

impl<S: LedgerStore> Payments<S> {
    /// Checks a candidate rules file and, when it is valid, replays the last week's recorded
    /// decisions under it and under the live set. An invalid file is refused with the rule and
    /// the problem named. Nothing goes live: loading a file stays an admin's reload.
    pub async fn backtest_candidate(
        &self,
        principal: &Principal,
        text: &str,
    ) -> Result<CandidateReport, PayError> {
        principal.operator(crate::cases::OPERATORS)?;
        if text.len() > CANDIDATE_BYTES_MAX {
            return Err(PayError::Invalid("a rules file is at most 48 KiB"));
        }
        let _only = CONSOLE_BACKTESTS.try_acquire().map_err(|_| {
            PayError::Conflict("another backtest is running on this server; try again in a moment")
        })?;
        let candidate = RuleSet::parse(text).map_err(|e| PayError::RulesInvalid(e.to_string()))?;
        if candidate.rules().len() > CANDIDATE_RULES_MAX {
            return Err(PayError::RulesInvalid(format!(
                "a rules file holds at most {CANDIDATE_RULES_MAX} rules"
            )));
        }
        let since = self.now_ms() - CONSOLE_BACKTEST_DAYS * DAY_MS;
        replay_recorded(
            self.db(),
            self.risk_rules().current(),
            Arc::new(candidate),
            since,
            CONSOLE_BACKTEST_EVENTS_MAX,
            Keep::Newest,
        )
        .await
    }
}
