//! The synthetic timeline: a population of ordinary customers over some days, and attacks of
//! each kind injected among them. Everything comes from one seeded generator, drawn in a fixed
//! order, so a seed always gives the same timeline.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};

use super::{Actor, AttackKind, SimConfig};
use crate::EventKind;

/// The simulation's clock starts here (2027-01-15T08:00:00Z); only differences matter.
pub(super) const START_MS: i64 = 1_800_000_000_000;
pub(super) const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;
const MERCHANTS: usize = 200;
/// Attacks of each kind per simulated day.
const ATTACKS_PER_KIND_PER_DAY: u32 = 5;
const MCCS: [&str; 6] = ["5411", "5812", "5814", "5499", "5999", "4111"];

/// One event as generated, before its features are computed.
#[derive(Clone, Debug)]
pub(super) struct Raw {
    pub at_ms: i64,
    pub kind: EventKind,
    pub actor: Actor,
    pub customer: u64,
    pub device: Option<u64>,
    pub network: Option<u64>,
    pub payee: Option<u64>,
    pub source: Option<u64>,
    pub amount: i64,
    pub failed: bool,
    /// Merchant category code and country, for card authorizations.
    pub card: Option<(&'static str, &'static str)>,
}

/// Something that happens at a time: an event to decide, or a change of state only.
#[derive(Clone, Debug)]
pub(super) enum Step {
    Event(Raw),
    CredentialChange { at_ms: i64, customer: u64 },
}

impl Raw {
    /// An event with no device, network, payee, source, amount or failure yet.
    fn new(at_ms: i64, kind: EventKind, actor: Actor, customer: u64) -> Raw {
        Raw {
            at_ms,
            kind,
            actor,
            customer,
            device: None,
            network: None,
            payee: None,
            source: None,
            amount: 0,
            failed: false,
            card: None,
        }
    }
}

impl Step {
    fn at_ms(&self) -> i64 {
        match self {
            Step::Event(raw) => raw.at_ms,
            Step::CredentialChange { at_ms, .. } => *at_ms,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Account {
    pub created_ms: i64,
    pub verified: bool,
}

/// What is known before the period starts; the replay keeps it up to date.
#[derive(Debug, Default)]
pub(super) struct World {
    pub accounts: BTreeMap<u64, Account>,
    /// Funding source -> when it was verified.
    pub sources: BTreeMap<u64, i64>,
    /// (customer, device) -> the first successful sign-in with it.
    pub devices: BTreeMap<(u64, u64), i64>,
    /// (payer, payee) pairs that have paid before.
    pub paid: BTreeSet<(u64, u64)>,
    /// Customer -> (time, amount) of the last top-up.
    pub last_topup: BTreeMap<u64, (i64, i64)>,
    /// Customer -> the last credential change.
    pub credential_change: BTreeMap<u64, i64>,
}

pub(super) struct Plan {
    pub steps: Vec<Step>,
    pub world: World,
    pub attacks: Vec<(u32, AttackKind)>,
}

struct Person {
    id: u64,
    device: u64,
    network: u64,
    source: u64,
    payees: Vec<u64>,
}

struct Gen {
    rng: StdRng,
    customers: usize,
    days: u32,
    next_id: u64,
    people: Vec<Person>,
    merchants: Vec<u64>,
    world: World,
    steps: Vec<Step>,
    attacks: Vec<(u32, AttackKind)>,
}

/// Generates the whole timeline, sorted by time (ties keep their generation order).
pub(super) fn plan(config: &SimConfig) -> Plan {
    let customers = config.customers.max(2);
    let mut g = Gen {
        rng: StdRng::seed_from_u64(config.seed),
        customers,
        days: config.days.max(1),
        // Fresh ids start above every customer id.
        next_id: u64::try_from(customers).unwrap_or(u64::MAX / 2) + 1,
        people: Vec::with_capacity(customers),
        merchants: Vec::with_capacity(MERCHANTS),
        world: World::default(),
        steps: Vec::new(),
        attacks: Vec::new(),
    };
    g.populate();
    for day in 0..g.days {
        for p in 0..g.people.len() {
            g.normal_day(p, day);
        }
    }
    g.inject_attacks();
    g.steps.sort_by_key(Step::at_ms);
    Plan {
        steps: g.steps,
        world: g.world,
        attacks: g.attacks,
    }
}

impl Gen {
    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn days_ago(&mut self, from: i64, to: i64) -> i64 {
        START_MS - self.rng.random_range(from..to) * DAY_MS - self.rng.random_range(0..DAY_MS)
    }

    /// A daytime moment of `day` (07:00 to 23:00 of the simulation's day).
    fn day_time(&mut self, day: u32) -> i64 {
        START_MS
            + i64::from(day) * DAY_MS
            + self.rng.random_range(7 * 60..23 * 60) * MINUTE_MS
            + self.rng.random_range(0..MINUTE_MS)
    }

    fn open_account(&mut self, id: u64, created_ms: i64, verified: bool) {
        self.world.accounts.insert(
            id,
            Account {
                created_ms,
                verified,
            },
        );
    }

    /// Customers with their long-known device, home network, verified source, usual payees
    /// and a top-up some days ago; and the merchants they pay.
    fn populate(&mut self) {
        for _ in 0..MERCHANTS {
            let id = self.fresh();
            let created = self.days_ago(200, 3_000);
            self.open_account(id, created, true);
            self.merchants.push(id);
        }
        // About a third of customers share one of three carrier networks (CGNAT): many
        // customers behind one address block, the benign look-alike of a stuffing network.
        let carriers = [self.fresh(), self.fresh(), self.fresh()];
        let mut household = self.fresh();
        for i in 0..self.customers {
            let id = u64::try_from(i).unwrap_or(u64::MAX);
            let created = self.days_ago(30, 2_000);
            let verified = self.rng.random_bool(0.8);
            self.open_account(id, created, verified);
            let device = self.fresh();
            let first_seen = self.days_ago(10, 600).max(created);
            self.world.devices.insert((id, device), first_seen);
            let network = if self.rng.random_bool(0.35) {
                carriers[self.rng.random_range(0..carriers.len())]
            } else {
                if self.rng.random_bool(0.6) {
                    household = self.fresh();
                }
                household
            };
            let source = self.fresh();
            let verified_at = self.days_ago(20, 1_000).max(created);
            self.world.sources.insert(source, verified_at);
            let topup_at = self.days_ago(0, 7);
            let topup = self.rng.random_range(3..=30) * 1_000;
            self.world.last_topup.insert(id, (topup_at, topup));
            self.people.push(Person {
                id,
                device,
                network,
                source,
                payees: Vec::new(),
            });
        }
        for p in 0..self.people.len() {
            let n = self.rng.random_range(1..=5);
            for _ in 0..n {
                let payee = self.other_customer(p);
                self.people[p].payees.push(payee);
                self.world.paid.insert((self.people[p].id, payee));
            }
        }
    }

    fn other_customer(&mut self, p: usize) -> u64 {
        let offset = self.rng.random_range(1..self.customers);
        u64::try_from((p + offset) % self.customers).unwrap_or(0)
    }

    fn push(&mut self, raw: Raw) {
        self.steps.push(Step::Event(raw));
    }

    /// A random element of `items`, which is not empty.
    fn pick(&mut self, items: &[u64]) -> u64 {
        items[self.rng.random_range(0..items.len())]
    }

    /// An ordinary day of customer `p`.
    fn normal_day(&mut self, p: usize, day: u32) {
        if self.rng.random_bool(0.002) {
            // A new phone: it becomes known at the first successful sign-in with it.
            self.people[p].device = self.fresh();
        }
        self.normal_logins(p, day);
        self.normal_shopping(p, day);
        self.normal_transfers(p, day);
        if self.rng.random_bool(1.0 / 7.0) {
            let at = self.day_time(day);
            let amount = self.rng.random_range(3..=30) * 1_000;
            self.normal_topup(p, at, amount, self.people[p].source);
        }
        if self.rng.random_bool(0.002) {
            let at = self.day_time(day);
            let customer = self.people[p].id;
            self.steps.push(Step::CredentialChange {
                at_ms: at,
                customer,
            });
        }
        if self.rng.random_bool(0.002) {
            self.normal_new_source(p, day);
        }
    }

    fn actor(&self, p: usize) -> Actor {
        Actor::Normal {
            customer: u32::try_from(p).unwrap_or(u32::MAX),
        }
    }

    /// The customer's device and home network, for an event of theirs.
    fn usual(&self, p: usize) -> (u64, Option<u64>, Option<u64>) {
        let person = &self.people[p];
        (person.id, Some(person.device), Some(person.network))
    }

    fn normal_logins(&mut self, p: usize, day: u32) {
        let actor = self.actor(p);
        let (id, device, home) = self.usual(p);
        for _ in 0..self.rng.random_range(1..=3) {
            let at = self.day_time(day);
            let network = if self.rng.random_bool(0.03) {
                Some(self.fresh())
            } else {
                home
            };
            if self.rng.random_bool(0.01) {
                let before = at - self.rng.random_range(5_000..30_000);
                self.push(Raw {
                    device,
                    network,
                    failed: true,
                    ..Raw::new(before, EventKind::Login, actor, id)
                });
            }
            self.push(Raw {
                device,
                network,
                ..Raw::new(at, EventKind::Login, actor, id)
            });
        }
    }

    /// Several small payments at merchants: in-app QR payments and card authorizations.
    fn normal_shopping(&mut self, p: usize, day: u32) {
        let actor = self.actor(p);
        let (id, device, network) = self.usual(p);
        for _ in 0..self.rng.random_range(2..=6) {
            let at = self.day_time(day);
            let merchants = std::mem::take(&mut self.merchants);
            let merchant = self.pick(&merchants);
            self.merchants = merchants;
            if self.rng.random_bool(0.7) {
                let amount = self.rng.random_range(20..=300) * 10;
                self.push(Raw {
                    device,
                    network,
                    payee: Some(merchant),
                    amount,
                    ..Raw::new(at, EventKind::MerchantPayment, actor, id)
                });
            } else {
                let amount = self.rng.random_range(30..=500) * 10;
                let mcc = MCCS[self.rng.random_range(0..MCCS.len())];
                let country = if self.rng.random_bool(0.97) {
                    "JP"
                } else {
                    "US"
                };
                // The card network's message carries no device and no client network.
                self.push(Raw {
                    payee: Some(merchant),
                    amount,
                    card: Some((mcc, country)),
                    ..Raw::new(at, EventKind::CardAuthorization, actor, id)
                });
            }
        }
    }

    /// Now and then a transfer to a usual payee; rarely a small one to someone new.
    fn normal_transfers(&mut self, p: usize, day: u32) {
        let actor = self.actor(p);
        let (id, device, network) = self.usual(p);
        if self.rng.random_bool(0.15) {
            let at = self.day_time(day);
            let payees = std::mem::take(&mut self.people[p].payees);
            let payee = self.pick(&payees);
            self.people[p].payees = payees;
            let amount = self.rng.random_range(5..=80) * 100;
            self.push(Raw {
                device,
                network,
                payee: Some(payee),
                amount,
                ..Raw::new(at, EventKind::P2p, actor, id)
            });
        }
        if self.rng.random_bool(0.003) {
            let at = self.day_time(day);
            let payee = self.other_customer(p);
            let amount = self.rng.random_range(5..=50) * 100;
            self.push(Raw {
                device,
                network,
                payee: Some(payee),
                amount,
                ..Raw::new(at, EventKind::P2p, actor, id)
            });
            self.people[p].payees.push(payee);
        }
    }

    fn normal_topup(&mut self, p: usize, at: i64, amount: i64, source: u64) {
        let actor = self.actor(p);
        let (id, device, network) = self.usual(p);
        self.push(Raw {
            device,
            network,
            source: Some(source),
            amount,
            ..Raw::new(at, EventKind::Topup, actor, id)
        });
    }

    /// Links a second bank account (sometimes after one mistyped code), and often tops up a
    /// modest amount from it within the hour.
    fn normal_new_source(&mut self, p: usize, day: u32) {
        let actor = self.actor(p);
        let (id, device, network) = self.usual(p);
        let source = self.fresh();
        let at = self.day_time(day);
        let link = Raw {
            device,
            network,
            source: Some(source),
            ..Raw::new(at, EventKind::FundingLink, actor, id)
        };
        if self.rng.random_bool(0.1) {
            self.push(Raw {
                at_ms: at - 40_000,
                failed: true,
                ..link.clone()
            });
        }
        self.push(link);
        self.people[p].source = source;
        if self.rng.random_bool(0.5) {
            let later = at + self.rng.random_range(5..60) * MINUTE_MS;
            let amount = self.rng.random_range(3..=20) * 1_000;
            self.normal_topup(p, later, amount, source);
        }
    }

    fn inject_attacks(&mut self) {
        let per_kind = ATTACKS_PER_KIND_PER_DAY * self.days;
        let period_ms = i64::from(self.days) * DAY_MS;
        let kinds = [
            AttackKind::CredentialStuffing,
            AttackKind::BankLinkPinCycling,
            AttackKind::MuleFanIn,
            AttackKind::TopupThenSpend,
        ];
        for (k, kind) in (0_i64..).zip(kinds) {
            for j in 0..per_kind {
                let id = u32::try_from(self.attacks.len()).unwrap_or(u32::MAX);
                // Attack j of each kind in the j-th slot of the period, kinds a fifth of a
                // slot apart, then up to half an hour later.
                let tenths = 10 * i64::from(j) + 1 + 2 * k;
                let slot_ms = period_ms * tenths / (10 * i64::from(per_kind));
                let start = START_MS + slot_ms + self.rng.random_range(0..30) * MINUTE_MS;
                self.attacks.push((id, kind));
                let actor = Actor::Attack { attack: id, kind };
                match kind {
                    AttackKind::CredentialStuffing => self.stuffing(actor, start),
                    AttackKind::BankLinkPinCycling => self.pin_cycling(actor, start),
                    AttackKind::MuleFanIn => self.mule_fan_in(actor, start),
                    AttackKind::TopupThenSpend => self.topup_then_spend(actor, start),
                }
            }
        }
    }

    fn sample_customers(&mut self, n: usize) -> Vec<u64> {
        index::sample(&mut self.rng, self.customers, self.customers.min(n))
            .iter()
            .map(|i| u64::try_from(i).unwrap_or(0))
            .collect()
    }

    /// D1: a burst of failed logins to many customers' accounts from three networks, with a
    /// fresh device each time, and a few that succeed at the end.
    fn stuffing(&mut self, actor: Actor, start: i64) {
        let networks = [self.fresh(), self.fresh(), self.fresh()];
        let mut tried = Vec::new();
        for victim in self.sample_customers(80) {
            for _ in 0..self.rng.random_range(1..=2) {
                tried.push(victim);
            }
        }
        for (n, victim) in tried.iter().enumerate() {
            let at = start + self.rng.random_range(0..5 * MINUTE_MS);
            let device = Some(self.fresh());
            self.push(Raw {
                device,
                network: Some(networks[n % networks.len()]),
                failed: true,
                ..Raw::new(at, EventKind::Login, actor, *victim)
            });
        }
        for network in networks {
            let victim = self.pick(&tried);
            let at = start + 5 * MINUTE_MS + self.rng.random_range(0..MINUTE_MS);
            let device = Some(self.fresh());
            self.push(Raw {
                device,
                network: Some(network),
                ..Raw::new(at, EventKind::Login, actor, victim)
            });
        }
    }

    /// D4: one fixed code tried at funding-source linking across forty freshly opened
    /// accounts, cycling account numbers, from one device and network; one guess works.
    fn pin_cycling(&mut self, actor: Actor, start: i64) {
        let (device, network) = (Some(self.fresh()), Some(self.fresh()));
        let mut at = start;
        for n in 0..40 {
            let account = self.fresh();
            let created = start - self.rng.random_range(1..3) * DAY_MS;
            self.open_account(account, created, false);
            let source = Some(self.fresh());
            self.push(Raw {
                device,
                network,
                source,
                failed: n != 25,
                ..Raw::new(at, EventKind::FundingLink, actor, account)
            });
            at += self.rng.random_range(20_000..40_000);
        }
    }

    /// D5: six taken-over accounts send most of their balance to one account opened a day or
    /// two ago, within the hour. The attacker signs in from one device and network; every
    /// third victim also had a credential changed first.
    fn mule_fan_in(&mut self, actor: Actor, start: i64) {
        let mule = self.fresh();
        let created = start - self.rng.random_range(6 * 60..48 * 60) * MINUTE_MS;
        self.open_account(mule, created, false);
        let (device, network) = (Some(self.fresh()), Some(self.fresh()));
        let mut at = start;
        for (n, victim) in self.sample_customers(6).into_iter().enumerate() {
            self.push(Raw {
                device,
                network,
                ..Raw::new(at, EventKind::Login, actor, victim)
            });
            if n % 3 == 1 {
                self.steps.push(Step::CredentialChange {
                    at_ms: at + 30_000,
                    customer: victim,
                });
            }
            let send_at = at + self.rng.random_range(60_000..180_000);
            let amount = self.rng.random_range(20..=90) * 1_000;
            self.push(Raw {
                device,
                network,
                payee: Some(mule),
                amount,
                ..Raw::new(send_at, EventKind::P2p, actor, victim)
            });
            at += self.rng.random_range(3..8) * MINUTE_MS;
        }
    }

    /// D7: sign-in to a victim's account from a new device, a top-up from the victim's own
    /// verified source, and within minutes most of it out by payout or to a fresh account.
    fn topup_then_spend(&mut self, actor: Actor, start: i64) {
        let p = self.rng.random_range(0..self.people.len());
        let (victim, source) = (self.people[p].id, Some(self.people[p].source));
        let (device, network) = (Some(self.fresh()), Some(self.fresh()));
        self.push(Raw {
            device,
            network,
            ..Raw::new(start, EventKind::Login, actor, victim)
        });
        let topup_at = start + self.rng.random_range(60_000..180_000);
        let topup = self.rng.random_range(20..=50) * 1_000;
        self.push(Raw {
            device,
            network,
            source,
            amount: topup,
            ..Raw::new(topup_at, EventKind::Topup, actor, victim)
        });
        let spend_at = topup_at + self.rng.random_range(120_000..480_000);
        let amount = topup * self.rng.random_range(85..=100) / 100;
        let spend = Raw {
            device,
            network,
            amount,
            ..Raw::new(spend_at, EventKind::Payout, actor, victim)
        };
        if self.rng.random_bool(0.5) {
            self.push(Raw { source, ..spend });
        } else {
            let mule = self.fresh();
            let created = start - self.rng.random_range(1..5) * DAY_MS;
            self.open_account(mule, created, false);
            self.push(Raw {
                kind: EventKind::P2p,
                payee: Some(mule),
                ..spend
            });
        }
    }
}
