//! Sliding windows in memory, computing the window features of the catalogue exactly as
//! defined there: for each dimension (customer, device, network, payee, source), the earlier
//! events of the same kind as the current one in the last minute, hour and day, their count
//! and the sum of their amounts; failed events and distinct customers per dimension; and the
//! global failed-login rate. The current event is never counted in its own features: `fill`
//! reads, then the caller `record`s it.

use std::collections::{BTreeMap, VecDeque};

use crate::{EventKind, Features};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dim {
    Customer,
    Device,
    Network,
    Payee,
    Source,
}

const DIMS: [Dim; 5] = [
    Dim::Customer,
    Dim::Device,
    Dim::Network,
    Dim::Payee,
    Dim::Source,
];

/// Window lengths with the (count, sum) feature names of each dimension, in `DIMS` order.
const WINDOWS: [(i64, [(&str, &str); 5]); 3] = [
    (
        MINUTE_MS,
        [
            ("customer_count_1m", "customer_sum_1m"),
            ("device_count_1m", "device_sum_1m"),
            ("network_count_1m", "network_sum_1m"),
            ("payee_count_1m", "payee_sum_1m"),
            ("source_count_1m", "source_sum_1m"),
        ],
    ),
    (
        HOUR_MS,
        [
            ("customer_count_1h", "customer_sum_1h"),
            ("device_count_1h", "device_sum_1h"),
            ("network_count_1h", "network_sum_1h"),
            ("payee_count_1h", "payee_sum_1h"),
            ("source_count_1h", "source_sum_1h"),
        ],
    ),
    (
        DAY_MS,
        [
            ("customer_count_24h", "customer_sum_24h"),
            ("device_count_24h", "device_sum_24h"),
            ("network_count_24h", "network_sum_24h"),
            ("payee_count_24h", "payee_sum_24h"),
            ("source_count_24h", "source_sum_24h"),
        ],
    ),
];

/// What the windows need to know of one event: its kind and time, the keys of its parties
/// (synthetic numbers), amount and outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub kind: EventKind,
    pub at_ms: i64,
    pub customer: u64,
    pub device: Option<u64>,
    pub network: Option<u64>,
    pub payee: Option<u64>,
    pub source: Option<u64>,
    pub amount: i64,
    pub failed: bool,
}

impl Observation {
    fn key(&self, dim: Dim) -> Option<u64> {
        match dim {
            Dim::Customer => Some(self.customer),
            Dim::Device => self.device,
            Dim::Network => self.network,
            Dim::Payee => self.payee,
            Dim::Source => self.source,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    at_ms: i64,
    /// Running totals up to and including this entry, since the series began.
    sum: i64,
    failures: i64,
    customer: u64,
}

/// The last day of events of one kind for one key of one dimension, in time order.
#[derive(Debug, Default)]
struct Series {
    entries: VecDeque<Entry>,
    /// The running totals of the entries already dropped.
    base_sum: i64,
    base_failures: i64,
}

impl Series {
    /// The first entry inside the window of `length_ms` ending at `now_ms`.
    fn start(&self, now_ms: i64, length_ms: i64) -> usize {
        let from = now_ms.saturating_sub(length_ms);
        self.entries.partition_point(|e| e.at_ms <= from)
    }

    fn before(&self, start: usize) -> (i64, i64) {
        match start.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(e) => (e.sum, e.failures),
            None => (self.base_sum, self.base_failures),
        }
    }

    fn last(&self) -> (i64, i64) {
        self.before(self.entries.len())
    }

    /// (count, sum of amounts, failures) in the window.
    fn window(&self, now_ms: i64, length_ms: i64) -> (i64, i64, i64) {
        let start = self.start(now_ms, length_ms);
        let (sum0, failures0) = self.before(start);
        let (sum1, failures1) = self.last();
        let count = i64::try_from(self.entries.len() - start).unwrap_or(i64::MAX);
        (
            count,
            sum1.saturating_sub(sum0),
            failures1.saturating_sub(failures0),
        )
    }

    fn distinct_customers(&self, now_ms: i64, length_ms: i64) -> i64 {
        let start = self.start(now_ms, length_ms);
        let mut customers: Vec<u64> = self.entries.range(start..).map(|e| e.customer).collect();
        customers.sort_unstable();
        customers.dedup();
        i64::try_from(customers.len()).unwrap_or(i64::MAX)
    }

    fn push(&mut self, obs: &Observation) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.at_ms <= obs.at_ms.saturating_sub(DAY_MS))
        {
            if let Some(old) = self.entries.pop_front() {
                self.base_sum = old.sum;
                self.base_failures = old.failures;
            }
        }
        let (sum, failures) = self.last();
        self.entries.push_back(Entry {
            at_ms: obs.at_ms,
            sum: sum.saturating_add(obs.amount),
            failures: failures.saturating_add(i64::from(obs.failed)),
            customer: obs.customer,
        });
    }
}

/// Every series of the simulation, and the recent failed logins of everyone.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    series: BTreeMap<(Dim, EventKind, u64), Series>,
    login_failures: VecDeque<i64>,
}

impl Windows {
    /// Sets the window features of `features` for `obs`, from the events recorded so far.
    pub fn fill(&self, obs: &Observation, features: &mut Features) {
        for (d, dim) in DIMS.into_iter().enumerate() {
            let series = obs
                .key(dim)
                .and_then(|key| self.series.get(&(dim, obs.kind, key)));
            for (length_ms, names) in WINDOWS {
                let (count, sum, _) = series.map_or((0, 0, 0), |s| s.window(obs.at_ms, length_ms));
                features.set_int(names[d].0, count);
                features.set_int(names[d].1, sum);
            }
            let hour = series.map_or((0, 0, 0), |s| s.window(obs.at_ms, HOUR_MS));
            match dim {
                Dim::Customer => features.set_int("customer_failures_1h", hour.2),
                Dim::Device => features.set_int("device_failures_1h", hour.2),
                Dim::Network => {
                    features.set_int("network_failures_1h", hour.2);
                    let customers = series.map_or(0, |s| s.distinct_customers(obs.at_ms, HOUR_MS));
                    features.set_int("network_customers_1h", customers);
                }
                Dim::Payee | Dim::Source => {}
            }
        }
        let senders = obs
            .payee
            .and_then(|key| self.series.get(&(Dim::Payee, EventKind::P2p, key)))
            .map_or(0, |s| s.distinct_customers(obs.at_ms, HOUR_MS));
        features.set_int("payee_senders_1h", senders);
        let (minute, baseline) = self.login_failure_rate(obs.at_ms);
        features.set_int("global_login_failures_1m", minute);
        features.set_int("global_login_failures_baseline", baseline);
    }

    /// Failed logins in the last minute, and the average per minute over the hour before it.
    fn login_failure_rate(&self, now_ms: i64) -> (i64, i64) {
        let count_after = |from: i64| {
            let start = self.login_failures.partition_point(|at| *at <= from);
            i64::try_from(self.login_failures.len() - start).unwrap_or(i64::MAX)
        };
        let minute = count_after(now_ms.saturating_sub(MINUTE_MS));
        let hour_before = count_after(now_ms.saturating_sub(MINUTE_MS + HOUR_MS)) - minute;
        (minute, hour_before / 60)
    }

    /// Adds `obs` to every series it belongs to.
    pub fn record(&mut self, obs: &Observation) {
        for dim in DIMS {
            if let Some(key) = obs.key(dim) {
                self.series
                    .entry((dim, obs.kind, key))
                    .or_default()
                    .push(obs);
            }
        }
        if obs.kind == EventKind::Login && obs.failed {
            let horizon = obs.at_ms.saturating_sub(MINUTE_MS + HOUR_MS);
            while self.login_failures.front().is_some_and(|at| *at <= horizon) {
                self.login_failures.pop_front();
            }
            self.login_failures.push_back(obs.at_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn obs(kind: EventKind, at_s: i64, customer: u64, amount: i64, failed: bool) -> Observation {
        Observation {
            kind,
            at_ms: at_s * 1000,
            customer,
            device: Some(100 + customer),
            network: Some(7),
            payee: Some(9),
            source: None,
            amount,
            failed,
        }
    }

    fn int(f: &Features, name: &str) -> i64 {
        match f.get(name) {
            Some(Value::Int(i)) => *i,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn windows_count_earlier_same_kind_events_per_dimension() {
        let mut w = Windows::default();
        let history = [
            obs(EventKind::P2p, 0, 1, 100, false),
            obs(EventKind::P2p, 4_000, 1, 200, false),
            obs(EventKind::P2p, 7_000, 2, 400, false),
            obs(EventKind::P2p, 7_170, 3, 800, false),
            obs(EventKind::Topup, 7_190, 1, 5_000, false),
        ];
        for o in &history {
            w.record(o);
        }
        let now = obs(EventKind::P2p, 7_200, 1, 1, false);
        let mut f = Features::new(EventKind::P2p);
        w.fill(&now, &mut f);
        // Customer 1's p2p: at 0 and 4000 s (within the hour); the top-up is another kind.
        assert_eq!(int(&f, "customer_count_1m"), 0);
        assert_eq!(int(&f, "customer_count_1h"), 1);
        assert_eq!(int(&f, "customer_sum_1h"), 200);
        assert_eq!(int(&f, "customer_count_24h"), 2);
        assert_eq!(int(&f, "customer_sum_24h"), 300);
        // Network 7 sees every p2p: 4000, 7000 and 7170 within the hour, 7170 in the minute.
        assert_eq!(int(&f, "network_count_1m"), 1);
        assert_eq!(int(&f, "network_sum_1m"), 800);
        assert_eq!(int(&f, "network_count_1h"), 3);
        assert_eq!(int(&f, "network_sum_1h"), 1_400);
        assert_eq!(int(&f, "network_count_24h"), 4);
        assert_eq!(int(&f, "network_customers_1h"), 3);
        assert_eq!(int(&f, "payee_senders_1h"), 3);
        assert_eq!(int(&f, "device_count_24h"), 2);
        assert_eq!(int(&f, "source_count_24h"), 0);
    }

    #[test]
    fn entries_older_than_a_day_leave_the_windows() {
        let mut w = Windows::default();
        w.record(&obs(EventKind::Payout, 0, 1, 100, false));
        w.record(&obs(EventKind::Payout, 86_000, 1, 200, false));
        w.record(&obs(EventKind::Payout, 86_300, 1, 400, false));
        let mut f = Features::new(EventKind::Payout);
        w.fill(&obs(EventKind::Payout, 86_400 + 1, 1, 0, false), &mut f);
        assert_eq!(int(&f, "customer_count_24h"), 2);
        assert_eq!(int(&f, "customer_sum_24h"), 600);
        assert_eq!(int(&f, "customer_sum_1h"), 600);
    }

    #[test]
    fn failures_are_counted_per_dimension_and_globally() {
        let mut w = Windows::default();
        for (i, customer) in [1, 2, 3, 1].into_iter().enumerate() {
            let at = 10_000 + i64::try_from(i).unwrap() * 10;
            w.record(&obs(EventKind::Login, at, customer, 0, true));
        }
        w.record(&obs(EventKind::Login, 10_045, 2, 0, false));
        let mut f = Features::new(EventKind::Login);
        w.fill(&obs(EventKind::Login, 10_050, 1, 0, false), &mut f);
        assert_eq!(int(&f, "customer_failures_1h"), 2);
        assert_eq!(int(&f, "network_failures_1h"), 4);
        assert_eq!(int(&f, "network_customers_1h"), 3);
        assert_eq!(int(&f, "global_login_failures_1m"), 4);
        assert_eq!(int(&f, "global_login_failures_baseline"), 0);
        // An hour later the same four failures are the hour before the last minute.
        let mut later = Features::new(EventKind::Login);
        w.fill(
            &obs(EventKind::Login, 10_000 + 3_000, 1, 0, false),
            &mut later,
        );
        assert_eq!(int(&later, "global_login_failures_1m"), 0);
        assert_eq!(int(&later, "global_login_failures_baseline"), 0);
    }

    #[test]
    fn the_baseline_is_the_hourly_average_before_the_last_minute() {
        let mut w = Windows::default();
        for i in 0..120 {
            w.record(&obs(EventKind::Login, 1_000 + i * 25, 1, 0, true));
        }
        // Failures at 1000..3975 s; at 4000 s the last minute holds 3940..3975 s (2 entries
        // after 3940), the hour before it the other 118.
        let mut f = Features::new(EventKind::Login);
        w.fill(&obs(EventKind::Login, 4_000, 1, 0, false), &mut f);
        assert_eq!(int(&f, "global_login_failures_1m"), 2);
        assert_eq!(int(&f, "global_login_failures_baseline"), 118 / 60);
    }
}
