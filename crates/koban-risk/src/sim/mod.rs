//! A seeded synthetic population run through the engine, for `koban bench risk` and for
//! tuning rules: ordinary customers going about their days, with attacks of each kind of the
//! threat model (D1, D4, D5, D7) injected among them. The same seed gives the same timeline.
//!
//! Features are computed by in-memory sliding windows (`windows.rs`) that follow the
//! catalogue's definitions. The whole timeline is computed up front, before any rule runs, so
//! a movement that the rules would hold or deny still counts as attempted in later windows and
//! still changes state (a payee counts as paid, a top-up as the last one): the numbers measure
//! detection, not what the service would let happen after it.
//!
//! Memory: about 2 KB per event (the features are kept for every event).

mod population;
mod windows;

use std::collections::{BTreeMap, BTreeSet};

use population::{DAY_MS, Plan, Raw, START_MS, Step, World};
pub use windows::Observation;
use windows::Windows;

use crate::{Action, EventKind, Features, NEVER_S, Verdict};

const COOLING_OFF_MS: i64 = 24 * 3_600_000;
const STEP_UP_FROM: i64 = 10_000;
const REVIEW_NEW_PAYEE_FROM: i64 = 100_000;
const FAN_IN_SENDERS_MAX: i64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimConfig {
    pub seed: u64,
    /// Ordinary customers (at least 2 are simulated). Below about 100 the attacks cannot take
    /// their full shape (a stuffing run tries up to 80 customers' accounts).
    pub customers: usize,
    /// Simulated days (at least 1); five attacks of each kind are injected per day.
    pub days: u32,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 1,
            customers: 5_000,
            days: 1,
        }
    }
}

/// The attacks injected, by threat id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// D1: failed logins across many customers from a few networks, and a few successes.
    CredentialStuffing,
    /// D4: one fixed code tried at funding-source linking across many accounts.
    BankLinkPinCycling,
    /// D5: several taken-over accounts paying one fresh account within the hour.
    MuleFanIn,
    /// D7: a top-up from the victim's source on a new device, then most of it out at once.
    TopupThenSpend,
}

/// Whose event it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// Customer number `customer` (0 to `customers - 1`) going about their day.
    Normal { customer: u32 },
    /// Part of attack number `attack`.
    Attack { attack: u32, kind: AttackKind },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SimEvent {
    pub at_ms: i64,
    pub features: Features,
    pub actor: Actor,
    /// Who and where (for replaying the events through a real store).
    pub parties: Observation,
}

/// How one attack fared.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AttackOutcome {
    pub kind: AttackKind,
    pub id: u32,
    pub caught: bool,
    /// From the attack's first attempt to the first event that raised an alert (or was held
    /// or denied), 0 when an alert came earlier; none when not caught. The first attempt is
    /// the attack's first event that is not a successful sign-in: a failed credential, a
    /// link, a top-up or a movement of money. A sign-in with a stolen password before it
    /// looks like the customer's own and starts nothing a rule could see.
    pub time_to_detect_s: Option<f64>,
    /// The strictest alerting rule of that first detecting verdict.
    pub first_rule: Option<String>,
    /// Minor units the attack moved out of wallets before its first hold or deny: outgoing
    /// movements allowed, alerted or challenged (a challenge counts as passed: the attacker
    /// is assumed to hold the victim's factor too, as after a phished code).
    pub money_out_before_hold: i64,
    /// The same over the whole attack, after a hold as well.
    pub money_out: i64,
}

/// The attacks of one kind together.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KindOutcome {
    pub kind: AttackKind,
    pub attacks: u64,
    pub caught: u64,
    pub time_to_detect_s_p50: f64,
    pub time_to_detect_s_max: f64,
    pub money_out_before_hold: i64,
    pub money_out: i64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SimReport {
    pub events: u64,
    pub attacks_total: u64,
    pub attacks_caught: u64,
    /// Ordinary customer-days with any challenge, hold or deny, over all customer-days.
    pub false_positive_rate: f64,
    /// Nearest-rank median and maximum over the caught attacks; 0 when none was caught.
    pub time_to_detect_s_p50: f64,
    pub time_to_detect_s_max: f64,
    pub normal_customers: u64,
    pub normal_customer_days_flagged: u64,
    /// Summed over every attack.
    pub money_out_before_hold: i64,
    pub by_kind: Vec<KindOutcome>,
    pub by_attack: Vec<AttackOutcome>,
    /// For each rule that fired on an ordinary customer's event, how many such events, by
    /// rule name: where the false alarms come from.
    pub flagged_by_rule: Vec<(String, u64)>,
}

pub struct Simulation {
    config: SimConfig,
    events: Vec<SimEvent>,
    attacks: Vec<(u32, AttackKind)>,
}

impl Simulation {
    /// Generates the whole timeline and computes every event's features, in time order.
    pub fn new(config: SimConfig) -> Simulation {
        let Plan {
            steps,
            world,
            attacks,
        } = population::plan(&config);
        let events = replay(steps, world);
        Simulation {
            config,
            events,
            attacks,
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The events in time order.
    pub fn events(&self) -> &[SimEvent] {
        &self.events
    }

    /// Measures `verdicts`, where `verdicts[i]` is the decision on `events()[i]`.
    ///
    /// # Panics
    /// When there is not exactly one verdict per event.
    pub fn report(&self, verdicts: &[Verdict]) -> SimReport {
        assert_eq!(
            verdicts.len(),
            self.events.len(),
            "one verdict per simulated event"
        );
        let mut flagged_days: BTreeSet<(u32, i64)> = BTreeSet::new();
        let mut by_rule: BTreeMap<String, u64> = BTreeMap::new();
        let mut traces: BTreeMap<u32, AttackTrace> = BTreeMap::new();
        let last_day = i64::from(self.days()) - 1;
        for (event, verdict) in self.events.iter().zip(verdicts) {
            match event.actor {
                Actor::Normal { customer } => {
                    for fired in &verdict.fired {
                        *by_rule.entry(fired.rule.clone()).or_default() += 1;
                    }
                    if verdict.action >= Action::Challenge {
                        let day = ((event.at_ms - START_MS) / DAY_MS).clamp(0, last_day);
                        flagged_days.insert((customer, day));
                    }
                }
                Actor::Attack { attack, .. } => {
                    traces.entry(attack).or_default().see(event, verdict);
                }
            }
        }
        let by_attack: Vec<AttackOutcome> = self
            .attacks
            .iter()
            .map(|&(id, kind)| traces.remove(&id).unwrap_or_default().outcome(id, kind))
            .collect();
        let mut times: Vec<f64> = by_attack
            .iter()
            .filter_map(|a| a.time_to_detect_s)
            .collect();
        times.sort_by(f64::total_cmp);
        let customers = u64::try_from(self.customers()).unwrap_or(u64::MAX);
        let customer_days = customers.saturating_mul(u64::from(self.days()));
        let flagged = u64::try_from(flagged_days.len()).unwrap_or(u64::MAX);
        SimReport {
            events: u64::try_from(self.events.len()).unwrap_or(u64::MAX),
            attacks_total: u64::try_from(by_attack.len()).unwrap_or(u64::MAX),
            attacks_caught: u64::try_from(times.len()).unwrap_or(u64::MAX),
            false_positive_rate: ratio(flagged, customer_days),
            time_to_detect_s_p50: nearest_rank(&times, 50),
            time_to_detect_s_max: times.last().copied().unwrap_or(0.0),
            normal_customers: customers,
            normal_customer_days_flagged: flagged,
            money_out_before_hold: by_attack.iter().map(|a| a.money_out_before_hold).sum(),
            by_kind: by_kind(&by_attack),
            by_attack,
            flagged_by_rule: by_rule.into_iter().collect(),
        }
    }

    fn customers(&self) -> usize {
        self.config.customers.max(2)
    }

    fn days(&self) -> u32 {
        self.config.days.max(1)
    }
}

/// What one attack's events and verdicts showed, in time order.
#[derive(Clone, Debug, Default)]
struct AttackTrace {
    first_attempt_ms: Option<i64>,
    detected: Option<(i64, Option<String>)>,
    held: bool,
    money_out_before_hold: i64,
    money_out: i64,
}

impl AttackTrace {
    fn see(&mut self, event: &SimEvent, verdict: &Verdict) {
        let kind = event.features.event();
        let signed_in = kind == EventKind::Login && !event.parties.failed;
        if !signed_in && self.first_attempt_ms.is_none() {
            self.first_attempt_ms = Some(event.at_ms);
        }
        if verdict.raises_alert() && self.detected.is_none() {
            self.detected = Some((event.at_ms, alerting_rule(verdict)));
        }
        if verdict.action >= Action::Hold {
            self.held = true;
        } else if kind.outgoing() {
            self.money_out = self.money_out.saturating_add(event.parties.amount);
            if !self.held {
                self.money_out_before_hold = self
                    .money_out_before_hold
                    .saturating_add(event.parties.amount);
            }
        }
    }

    fn outcome(self, id: u32, kind: AttackKind) -> AttackOutcome {
        let start = self.first_attempt_ms.unwrap_or(START_MS);
        AttackOutcome {
            kind,
            id,
            caught: self.detected.is_some(),
            time_to_detect_s: self
                .detected
                .as_ref()
                .map(|(at, _)| seconds((at - start).max(0))),
            first_rule: self.detected.and_then(|(_, rule)| rule),
            money_out_before_hold: self.money_out_before_hold,
            money_out: self.money_out,
        }
    }
}

/// The attacks summed by kind, in the order of [`AttackKind`].
fn by_kind(attacks: &[AttackOutcome]) -> Vec<KindOutcome> {
    let kinds: BTreeSet<AttackKind> = attacks.iter().map(|a| a.kind).collect();
    kinds
        .into_iter()
        .map(|kind| {
            let of_kind: Vec<&AttackOutcome> = attacks.iter().filter(|a| a.kind == kind).collect();
            let mut times: Vec<f64> = of_kind.iter().filter_map(|a| a.time_to_detect_s).collect();
            times.sort_by(f64::total_cmp);
            let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
            KindOutcome {
                kind,
                attacks: count(of_kind.len()),
                caught: count(times.len()),
                time_to_detect_s_p50: nearest_rank(&times, 50),
                time_to_detect_s_max: times.last().copied().unwrap_or(0.0),
                money_out_before_hold: of_kind.iter().map(|a| a.money_out_before_hold).sum(),
                money_out: of_kind.iter().map(|a| a.money_out).sum(),
            }
        })
        .collect()
}

/// The strictest rule of `verdict` that raises an alert, first in file order on ties.
fn alerting_rule(verdict: &Verdict) -> Option<String> {
    let mut best: Option<&crate::Fired> = None;
    for fired in verdict.fired.iter().filter(|f| f.action.raises_alert()) {
        if best.is_none_or(|b| fired.action > b.action) {
            best = Some(fired);
        }
    }
    best.map(|f| f.rule.clone())
}

/// Runs the timeline through the windows and the world's state, computing each event's
/// features from what happened before it.
fn replay(steps: Vec<Step>, mut world: World) -> Vec<SimEvent> {
    let mut windows = Windows::default();
    let mut events = Vec::with_capacity(steps.len());
    for step in steps {
        match step {
            Step::CredentialChange { at_ms, customer } => {
                world.credential_change.insert(customer, at_ms);
            }
            Step::Event(raw) => {
                let obs = observation(&raw);
                let mut features = world.features(&raw);
                windows.fill(&obs, &mut features);
                windows.record(&obs);
                world.after(&raw);
                events.push(SimEvent {
                    at_ms: raw.at_ms,
                    features,
                    actor: raw.actor,
                    parties: obs,
                });
            }
        }
    }
    events
}

fn observation(raw: &Raw) -> Observation {
    Observation {
        kind: raw.kind,
        at_ms: raw.at_ms,
        customer: raw.customer,
        device: raw.device,
        network: raw.network,
        payee: raw.payee,
        source: raw.source,
        amount: raw.amount,
        failed: raw.failed,
    }
}

impl World {
    /// Every feature of `raw` but the window ones.
    fn features(&self, raw: &Raw) -> Features {
        let at = raw.at_ms;
        let age = |since: i64| (at - since) / 1_000;
        let mut f = Features::new(raw.kind);
        f.set_int("amount", raw.amount);
        f.set_text("currency", "JPY");
        f.set_bool("failed", raw.failed);
        let account = self.accounts.get(&raw.customer);
        f.set_int("customer_age_s", account.map_or(0, |a| age(a.created_ms)));
        f.set_bool("customer_verified", account.is_some_and(|a| a.verified));
        let seen = raw
            .device
            .and_then(|d| self.devices.get(&(raw.customer, d)).copied());
        f.set_bool("device_known", seen.is_some());
        f.set_int("device_age_s", seen.map_or(NEVER_S, age));
        let change = self.credential_change.get(&raw.customer).copied();
        f.set_int("since_credential_change_s", change.map_or(NEVER_S, age));
        f.set_bool(
            "in_cooling_off",
            change.is_some_and(|t| at - t < COOLING_OFF_MS),
        );
        if let Some(payee) = raw.payee {
            f.set_bool("payee_new", !self.paid.contains(&(raw.customer, payee)));
            let payee_account = self.accounts.get(&payee);
            f.set_int(
                "payee_age_s",
                payee_account.map_or(NEVER_S, |a| age(a.created_ms)),
            );
        }
        let source = raw.source.and_then(|s| self.sources.get(&s).copied());
        f.set_int("source_age_s", source.map_or(NEVER_S, age));
        if let Some(&(topup_at, amount)) = self.last_topup.get(&raw.customer) {
            f.set_int("since_topup_s", age(topup_at));
            f.set_int("last_topup_amount", amount);
        }
        if let Some((mcc, country)) = raw.card {
            f.set_text("mcc", mcc);
            f.set_text("merchant_country", country);
        }
        let no_step_up = matches!(
            raw.kind,
            EventKind::CardAuthorization | EventKind::CodeCharge
        );
        f.set_int(
            "step_up_from",
            if no_step_up { i64::MAX } else { STEP_UP_FROM },
        );
        f.set_int("review_new_payee_from", REVIEW_NEW_PAYEE_FROM);
        f.set_int("fan_in_senders_max", FAN_IN_SENDERS_MAX);
        f
    }

    /// What `raw` changes for the events after it.
    fn after(&mut self, raw: &Raw) {
        match raw.kind {
            EventKind::Login if !raw.failed => {
                if let Some(device) = raw.device {
                    self.devices
                        .entry((raw.customer, device))
                        .or_insert(raw.at_ms);
                }
            }
            EventKind::FundingLink if !raw.failed => {
                if let Some(source) = raw.source {
                    self.sources.entry(source).or_insert(raw.at_ms);
                }
            }
            EventKind::Topup => {
                self.last_topup
                    .insert(raw.customer, (raw.at_ms, raw.amount));
            }
            _ => {}
        }
        if let Some(payee) = raw.payee {
            self.paid.insert((raw.customer, payee));
        }
    }
}

fn seconds(ms: i64) -> f64 {
    // Whole milliseconds of a simulated period fit an f64 exactly.
    let whole = i32::try_from(ms / 1_000).unwrap_or(i32::MAX);
    let rest = i32::try_from(ms % 1_000).unwrap_or(0);
    f64::from(whole) + f64::from(rest) / 1_000.0
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    let part = u32::try_from(part).unwrap_or(u32::MAX);
    let whole = u32::try_from(whole).unwrap_or(u32::MAX);
    f64::from(part) / f64::from(whole)
}

/// The nearest-rank percentile `p` (1 to 100) of `sorted`; 0 when it is empty.
fn nearest_rank(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests;
