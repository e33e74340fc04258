//! The console's dashboard: failed sign-ins per minute against the baseline and the alarm
//! level (also drawn on the console's first page), decisions by action, the money held, lost,
//! compensated and reversed, and the time each recent case took to detect. Charts are SVG
//! drawn on the server, each with a sentence or a table that says the same in words.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use koban_api::ApiState;
use koban_auth::Principal;
use koban_auth::alarm::FailureChart;
use koban_ledger::Currency;
use koban_pay::PayError;
use koban_pay::cases::Case;
use koban_pay::fraud::RiskStats;
use koban_store::LedgerStore;

use crate::chart::{Column, columns, share};
use crate::console::seen;
use crate::i18n::Tr;
use crate::page::{Chrome, OperatorIn, Page, wallet_currency};

const CHART_WIDTH: u32 = 600;
const CHART_HEIGHT: u32 = 160;
/// Recent cases whose time to detect is drawn.
const CASES_DRAWN: i64 = 15;

/// The failures chart as a page draws it.
pub struct FailuresView {
    pub columns: Vec<Column>,
    pub baseline_y: i128,
    pub alarm_y: i128,
    /// Some minute went above the alarm level.
    pub spike: bool,
    pub summary: String,
}

impl FailuresView {
    pub fn new(tr: &Tr, chart: &FailureChart) -> FailuresView {
        let (columns, levels) = columns(
            &chart.per_minute,
            &[chart.baseline, chart.alarm_above],
            chart.alarm_above,
            CHART_WIDTH,
            CHART_HEIGHT,
        );
        // The latest of the busiest minutes.
        let (peak, peak_minute) = chart
            .per_minute
            .iter()
            .zip(chart.first_minute..)
            .max_by_key(|(v, minute)| (**v, *minute))
            .map_or((0, chart.first_minute), |(v, minute)| (*v, minute));
        let summary = tr.with(
            "dashboard-failures-summary",
            &[
                ("minutes", &chart.per_minute.len().to_string()),
                ("peak", &peak.to_string()),
                ("at", &tr.clock(peak_minute.saturating_mul(60_000))),
                ("baseline", &chart.baseline.to_string()),
                ("alarm", &chart.alarm_above.to_string()),
            ],
        );
        FailuresView {
            spike: columns.iter().any(|c| c.over),
            columns,
            baseline_y: levels.first().copied().unwrap_or(0),
            alarm_y: levels.get(1).copied().unwrap_or(0),
            summary,
        }
    }
}

/// One row of a table drawn with a bar.
pub struct ShareRow {
    pub label: String,
    pub value: String,
    /// Out of 100.
    pub share: i128,
}

fn rows(items: Vec<(String, i128, String)>) -> Vec<ShareRow> {
    let top = items.iter().map(|(_, v, _)| *v).max().unwrap_or(0);
    items
        .into_iter()
        .map(|(label, value, text)| ShareRow {
            label,
            value: text,
            share: share(value, top),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub c: Chrome,
    pub failures: Option<FailuresView>,
    /// The fraud measures, for the roles that work cases.
    pub fraud: Option<FraudView>,
}

pub struct FraudView {
    pub decisions: Vec<ShareRow>,
    pub money: Vec<ShareRow>,
    pub detect: Vec<ShareRow>,
    pub detect_summary: String,
    pub cases_open: i64,
    pub holds_pending: i64,
}

fn seconds(tr: &Tr, s: f64) -> String {
    tr.with("dashboard-seconds", &[("s", &format!("{s:.0}"))])
}

async fn dashboard_view<S: LedgerStore>(
    state: &ApiState<S>,
    page: &Page,
    me: &Principal,
) -> Result<DashboardPage, PayError> {
    let tr = &page.tr;
    let failures = seen(state.auth.failure_chart(me).await.map_err(PayError::Auth))?;
    let Some(stats) = seen(state.pay.risk_stats(me).await)? else {
        // Support sees the sign-in failures, not the fraud measures.
        return Ok(DashboardPage {
            c: page.chrome("title-fraud-dashboard"),
            failures: failures.map(|chart| FailuresView::new(tr, &chart)),
            fraud: None,
        });
    };
    let cases = state.pay.cases(me, None, CASES_DRAWN).await?;
    let currency = wallet_currency(&state.pay);
    Ok(DashboardPage {
        c: page.chrome("title-fraud-dashboard"),
        failures: failures.map(|chart| FailuresView::new(tr, &chart)),
        fraud: Some(FraudView::new(tr, &stats, &cases, currency)),
    })
}

impl FraudView {
    /// The measures in words and bars: decisions by action, money in the wallet currency,
    /// and each recent case's time from its first event to its first alert.
    fn new(tr: &Tr, stats: &RiskStats, cases: &[Case], currency: Currency) -> FraudView {
        let decisions = rows(
            stats
                .decisions_by_action
                .iter()
                .map(|(action, n)| {
                    let label = match action.as_str() {
                        "allow" | "alert" | "challenge" | "hold" | "deny" => {
                            tr.t(&format!("decision-{action}"))
                        }
                        other => other.to_owned(),
                    };
                    (label, i128::from(*n), n.to_string())
                })
                .collect(),
        );
        let lost: i64 = stats
            .amount_lost
            .iter()
            .filter(|(code, _)| Currency::parse(code).ok() == Some(currency))
            .map(|(_, v)| *v)
            .sum();
        let amounts = [
            ("dashboard-held", stats.amount_held),
            ("dashboard-lost", lost),
            ("dashboard-compensated", stats.amount_compensated),
            ("dashboard-reversed", stats.amount_reversed),
        ];
        let money = rows(
            amounts
                .iter()
                .map(|(key, minor)| {
                    let minor = i128::from(*minor);
                    (tr.t(key), minor, tr.money(minor, currency))
                })
                .collect(),
        );
        let (detect, detect_summary) = time_to_detect(tr, stats, cases);
        FraudView {
            decisions,
            money,
            detect,
            detect_summary,
            cases_open: stats.cases_open,
            holds_pending: stats.holds_pending,
        }
    }
}

/// Each recent case's seconds from its first event to its first alert, and the distribution
/// over all cases in a sentence.
fn time_to_detect(tr: &Tr, stats: &RiskStats, cases: &[Case]) -> (Vec<ShareRow>, String) {
    let detect = rows(
        cases
            .iter()
            .map(|case| {
                let ms = case
                    .first_alert_at
                    .saturating_sub(case.first_event_at)
                    .max(0);
                let s = ms / 1000;
                (
                    tr.datetime(case.first_alert_at),
                    i128::from(s),
                    tr.with("dashboard-seconds", &[("s", &s.to_string())]),
                )
            })
            .collect(),
    );
    let t = &stats.time_to_detect_s;
    let detect_summary = match (t.p50, t.p90, t.max) {
        (Some(p50), Some(p90), Some(max)) => tr.with(
            "dashboard-detect-summary",
            &[
                ("count", &t.count.to_string()),
                ("p50", &seconds(tr, p50)),
                ("p90", &seconds(tr, p90)),
                ("max", &seconds(tr, max)),
            ],
        ),
        _ => tr.t("console-none"),
    };
    (detect, detect_summary)
}

pub async fn dashboard<S: LedgerStore>(
    State(state): State<ApiState<S>>,
    OperatorIn { page, me }: OperatorIn,
) -> Response {
    match dashboard_view(&state, &page, &me).await {
        Ok(view) => page.render(&view),
        Err(error) => crate::console::failure(&page, &error),
    }
}
