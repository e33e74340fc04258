//! A seeded simulation of offline payments for `koban bench offline`: devices with purses pay
//! at terminals hour by hour while the network comes and goes; terminals and devices upload
//! vouchers when they are online; some devices cheat. Every payment crosses as QR text, every
//! check is the real one, and settlement is [`PurseBook`].
//!
//! The cheaters, in turn: a **clone** (the device key copied to a second device, both
//! spending), a **replay** (the device signs again with a counter it already used), and an
//! **over-spender** (the device forgets what it spent, so its cumulative amount starts again
//! from nothing). Every cheater pays often, at terminals drawn at random.
//!
//! The same parameters and seed give the same payments and decisions; only
//! `settle_seconds` (a clock reading around settlement) differs from run to run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::settle::{Decision, Policy, PurseBook};
use crate::{
    Currency, Id, IssuerKeys, Purse, PurseCertificate, SigningKey, Terminal, TerminalCertificate,
    Voucher, VoucherContent,
};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Params {
    pub devices: usize,
    pub terminals: usize,
    pub hours: u32,
    pub cheaters: usize,
    pub seed: u64,
    /// Each purse's limit (minor units).
    pub limit: u64,
    /// A certificate's validity (seconds).
    pub validity: u32,
    /// How old a terminal's revocation list may be before it stops accepting (seconds).
    pub list_max_age: u32,
    pub policy: Policy,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            devices: 200,
            terminals: 20,
            hours: 72,
            cheaters: 6,
            seed: 1,
            limit: 20_000,
            validity: 72 * 3600,
            list_max_age: 24 * 3600,
            policy: Policy::default(),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// Vouchers terminals accepted.
    pub payments: u64,
    /// Payments terminals refused, by reason code.
    pub refused_at_terminal: HashMap<&'static str, u64>,
    /// Vouchers terminals uploaded (counting uploads sent again after a lost answer).
    pub uploads: u64,
    /// Vouchers devices reported (checked for double spending, never paid on their own).
    pub device_reports: u64,
    /// Double spenders found from a device's report before any terminal's upload showed it.
    pub detected_from_device_reports: u64,
    /// Distinct vouchers decided.
    pub settled: u64,
    /// Uploads answered with an earlier decision (moved nothing).
    pub repeated: u64,
    /// Purses found double spending and revoked.
    pub double_spends_detected: u64,
    pub cheaters: u64,
    /// Purses whose vouchers terminals took show double spending (each must be revoked).
    pub cheaters_who_double_spent: u64,
    /// Paid to merchants, and of that from the issuer's own guarantee (its loss).
    pub paid_minor: u64,
    pub loss_minor: u64,
    /// The stated bound: cheaters × (factor − 1) × limit (and each purse within its own).
    pub bound_minor: u64,
    /// The most one purse cost the issuer.
    pub max_loss_per_purse_minor: u64,
    /// Accepted by a terminal and not paid, with the reasons (cheaters' vouchers only).
    pub unpaid_minor: u64,
    pub unpaid_vouchers: HashMap<&'static str, u64>,
    /// Vouchers of honest devices not paid in full (must be 0).
    pub honest_unpaid: u64,
    /// Honest payments whose code was scanned a second time (never paid twice).
    pub double_scans: u64,
    /// Reserve given back to wallets after the deadline.
    pub returned_minor: u64,
    pub voucher_bytes: usize,
    pub voucher_text_chars: usize,
    pub challenge_bytes: usize,
    pub challenge_text_chars: usize,
    /// Time spent reading, verifying and deciding uploads.
    pub settle_seconds: f64,
    pub settlements_per_second: f64,
    /// Time of one upload's reading, checks and decision: median and 99th percentile (µs).
    pub settle_us_p50: f64,
    pub settle_us_p99: f64,
    /// Every check below held.
    pub invariants_ok: bool,
    /// The checks that failed, in words.
    pub violations: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cheat {
    Honest,
    Clone,
    Replay,
    OverSpend,
}

struct Device {
    purses: Vec<Purse>,
    cheat: Cheat,
    /// Vouchers it signed, kept to upload itself.
    signed: Vec<Voucher>,
}

struct Issuer {
    keys: IssuerKeys,
    books: HashMap<Id, PurseBook>,
    /// Each terminal's merchant, as the server registered it.
    merchants: HashMap<Id, Id>,
    /// What each purse cost the issuer.
    losses: HashMap<Id, u64>,
    /// Purses revoked by settlement or by a device's report.
    detected: HashSet<Id>,
    issued: HashMap<Id, PurseCertificate>,
    honest: HashSet<Id>,
    report: Report,
    seconds: f64,
    nanos: Vec<u64>,
}

impl Issuer {
    fn revoked(&self) -> Vec<Id> {
        self.books
            .iter()
            .filter(|(_, b)| b.revoked)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A device reports what it signed: checked for double spending only (a device's copy
    /// does not show that a terminal took it).
    /// The server's checks of any upload: the signatures, and the certificate is the one
    /// issued for its purse. A failure is a violation (only accepted vouchers are uploaded).
    fn issued_and_signed(&mut self, voucher: &Voucher) -> bool {
        let ok = voucher.verify_signatures(&self.keys).is_ok()
            && self.issued.get(&voucher.certificate.purse) == Some(&voucher.certificate);
        if !ok {
            self.report
                .violations
                .push("an uploaded voucher failed the server's checks".into());
        }
        ok
    }

    fn report_from_device(&mut self, voucher: &Voucher) {
        self.report.device_reports += 1;
        let purse = voucher.certificate.purse;
        if !self.issued_and_signed(voucher) {
            return;
        }
        let book = self
            .books
            .get_mut(&purse)
            .expect("issued purses have books");
        if book.probe(&voucher.content).is_some() {
            book.revoke();
            if self.detected.insert(purse) {
                self.report.double_spends_detected += 1;
                self.report.detected_from_device_reports += 1;
            }
        }
    }

    /// A terminal's upload, as the server takes it: read the bytes, check the signatures and
    /// that the certificate is the one issued for the purse, decide.
    fn upload(&mut self, bytes: &[u8], now: u32) {
        let started = Instant::now();
        self.report.uploads += 1;
        let Ok(voucher) = Voucher::decode(bytes) else {
            self.report
                .violations
                .push("an accepted voucher did not decode".into());
            return;
        };
        let purse = voucher.certificate.purse;
        if !self.issued_and_signed(&voucher) {
            return;
        }
        let Some(merchant) = self.merchants.get(&voucher.content.terminal).copied() else {
            self.report
                .violations
                .push("a voucher names an unknown terminal".into());
            return;
        };
        let book = self
            .books
            .get_mut(&purse)
            .expect("issued purses have books");
        let settled = book.settle(&voucher.content, merchant, now);
        let elapsed = started.elapsed();
        self.seconds += elapsed.as_secs_f64();
        self.nanos
            .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        let report = &mut self.report;
        if settled.repeated {
            report.repeated += 1;
            return;
        }
        report.settled += 1;
        if book.revoked && self.detected.insert(purse) {
            report.double_spends_detected += 1;
        }
        match settled.decision {
            Decision::Paid {
                from_reserve,
                from_guarantee,
                ..
            } => {
                report.paid_minor += from_reserve + from_guarantee;
                report.loss_minor += from_guarantee;
                *self.losses.entry(purse).or_default() += from_guarantee;
                if self.honest.contains(&purse) && from_guarantee > 0 {
                    report
                        .violations
                        .push("an honest purse was paid from the guarantee".into());
                }
            }
            Decision::Unpaid { reason, .. } => {
                report.unpaid_minor += voucher.content.amount;
                *report.unpaid_vouchers.entry(reason.code()).or_default() += 1;
                if self.honest.contains(&purse) {
                    report.honest_unpaid += 1;
                }
            }
        }
    }
}

/// Runs the simulation.
pub fn run(params: &Params) -> Report {
    let mut rng = StdRng::seed_from_u64(params.seed);
    let start: u32 = 1_800_000_000;
    let issuer_key = SigningKey::generate();
    let keys = IssuerKeys::new([(1, issuer_key.public())]);
    let mut issuer = Issuer {
        keys: keys.clone(),
        books: HashMap::new(),
        issued: HashMap::new(),
        merchants: HashMap::new(),
        losses: HashMap::new(),
        detected: HashSet::new(),
        honest: HashSet::new(),
        report: Report {
            cheaters: params.cheaters as u64,
            bound_minor: (params.cheaters as u64).saturating_mul(params.policy.bound(params.limit)),
            ..Report::default()
        },
        seconds: 0.0,
        nanos: Vec::new(),
    };
    let mut terminals: Vec<Terminal> = (0..params.terminals)
        .map(|i| {
            let key = Arc::new(SigningKey::generate());
            let cert = TerminalCertificate {
                issuer_key: 1,
                terminal: rng.random(),
                merchant: rng.random(),
                terminal_key: key.public(),
                currency: Currency::JPY,
                not_after: start + params.hours * 3600 + 365 * 86_400,
                name: format!("Shop {i}"),
                signature: [0; 64],
            }
            .issue(&issuer_key);
            issuer.merchants.insert(cert.terminal, cert.merchant);
            Terminal::new(cert, key, keys.clone(), params.list_max_age, [], start)
        })
        .collect();
    let total = params.devices + params.cheaters;
    let mut devices: Vec<Device> = (0..total)
        .map(|i| {
            let cheat = if i < params.devices {
                Cheat::Honest
            } else {
                [Cheat::Clone, Cheat::Replay, Cheat::OverSpend][(i - params.devices) % 3]
            };
            let key = Arc::new(SigningKey::generate());
            let loaded = start + rng.random_range(0..3600 * 6);
            let cert = PurseCertificate {
                issuer_key: 1,
                purse: rng.random(),
                device_key: key.public(),
                currency: Currency::JPY,
                limit: params.limit,
                not_before: loaded,
                not_after: loaded + params.validity,
                serial: 1,
                signature: [0; 64],
            }
            .issue(&issuer_key);
            issuer.books.insert(
                cert.purse,
                PurseBook::new(
                    cert.purse,
                    cert.limit,
                    cert.not_before,
                    cert.not_after,
                    params.policy,
                ),
            );
            issuer.issued.insert(cert.purse, cert.clone());
            if cheat == Cheat::Honest {
                issuer.honest.insert(cert.purse);
            }
            let purse = Purse::new(cert, key);
            let purses = if cheat == Cheat::Clone {
                vec![purse.clone(), purse]
            } else {
                vec![purse]
            };
            Device {
                purses,
                cheat,
                signed: Vec::new(),
            }
        })
        .collect();

    let mut outage_until = start;
    // Every voucher a terminal accepted, by purse: what the simulation knows and the issuer
    // learns only from uploads.
    let mut accepted: HashMap<Id, Vec<VoucherContent>> = HashMap::new();
    // And every voucher a device signed, taken or not.
    let mut signed: HashMap<Id, Vec<VoucherContent>> = HashMap::new();
    for hour in 0..params.hours {
        let hour_start = start + hour * 3600;
        // Now and then the network goes down for everyone, for one to eight hours.
        if hour_start >= outage_until && rng.random_bool(0.08) {
            outage_until = hour_start + rng.random_range(1..=8) * 3600;
        }
        let network = hour_start >= outage_until;
        for device in &mut devices {
            // Honest customers pay now and then. Cheaters pay when they can and most of all
            // while the network is down, when no revocation can reach a terminal.
            let attempts = match (device.cheat, network) {
                (Cheat::Honest, _) => u32::from(rng.random_bool(0.25)),
                (_, true) => u32::from(rng.random_bool(0.5)),
                (_, false) => 4,
            };
            for p in
                (0..device.purses.len()).flat_map(|p| std::iter::repeat_n(p, attempts as usize))
            {
                let now = hour_start + rng.random_range(0..3600);
                let t = rng.random_range(0..terminals.len());
                let amount = if device.cheat == Cheat::Honest {
                    rng.random_range(10..=300) * 10
                } else {
                    rng.random_range(100..=600) * 10
                };
                let terminal = &mut terminals[t];
                let challenge = terminal.challenge(amount, rng.random(), now);
                // The challenge crosses as QR text to the device.
                let text = challenge.to_text();
                issuer.report.challenge_bytes = challenge.encode().len();
                issuer.report.challenge_text_chars = text.len();
                let Ok(read) = crate::Challenge::from_text(&text) else {
                    issuer
                        .report
                        .violations
                        .push("a challenge did not read back".into());
                    continue;
                };
                let purse = &mut device.purses[p];
                let before = (purse.counter, purse.spent);
                match device.cheat {
                    Cheat::Replay if purse.counter > 1 && rng.random_bool(0.5) => {
                        // Sign again with the last counter, as if the last payment never was.
                        purse.counter -= 1;
                        purse.spent = purse.spent.saturating_sub(amount.min(purse.spent));
                    }
                    Cheat::OverSpend if purse.spent > 0 => purse.spent = 0,
                    _ => {}
                }
                let Ok(voucher) = purse.pay(&read, &keys, now) else {
                    (purse.counter, purse.spent) = before;
                    continue;
                };
                let text = voucher.to_text();
                issuer.report.voucher_bytes = voucher.encode().len();
                issuer.report.voucher_text_chars = text.len();
                let Ok(read) = Voucher::from_text(&text) else {
                    issuer
                        .report
                        .violations
                        .push("a voucher did not read back".into());
                    continue;
                };
                // The device cannot know whether the terminal took it: it keeps every voucher
                // it signed, to report.
                device.signed.push(read.clone());
                let contents = signed.entry(read.certificate.purse).or_default();
                if !contents.contains(&read.content) {
                    contents.push(read.content);
                }
                match terminal.accept(&challenge, &read, now) {
                    Ok(()) => {
                        issuer.report.payments += 1;
                        accepted
                            .entry(read.certificate.purse)
                            .or_default()
                            .push(read.content);
                        // Now and then a customer scans the same code again: the device shows
                        // the same voucher, and the terminal does not take it twice.
                        if device.cheat == Cheat::Honest && rng.random_bool(0.05) {
                            issuer.report.double_scans += 1;
                            let again = purse.pay(&challenge, &keys, now);
                            if again.as_ref().ok() != Some(&read)
                                || terminal.accept(&challenge, &read, now).is_ok()
                            {
                                issuer
                                    .report
                                    .violations
                                    .push("a challenge scanned twice was paid twice".into());
                            }
                        }
                    }
                    Err(refusal) => {
                        *issuer
                            .report
                            .refused_at_terminal
                            .entry(refusal.code())
                            .or_default() += 1;
                        // A terminal that could not refresh its list for a day refuses
                        // everyone; any other refusal of an honest device is a fault.
                        if device.cheat == Cheat::Honest
                            && refusal != crate::Refusal::StaleRevocationList
                        {
                            issuer
                                .report
                                .violations
                                .push(format!("an honest payment was refused: {refusal}"));
                        }
                    }
                }
            }
            // Online devices report what they signed.
            if network && rng.random_bool(0.3) {
                for voucher in std::mem::take(&mut device.signed) {
                    issuer.report_from_device(&voucher);
                }
            }
        }
        // Online terminals upload and refresh their revocation lists.
        for terminal in &mut terminals {
            if network && rng.random_bool(0.6) {
                let batch = terminal.take_vouchers();
                for voucher in &batch {
                    issuer.upload(&voucher.encode(), hour_start + 3599);
                }
                // Sometimes the answer is lost and the terminal sends the batch again.
                if rng.random_bool(0.1) {
                    for voucher in &batch {
                        issuer.upload(&voucher.encode(), hour_start + 3599);
                    }
                }
                terminal.refresh(issuer.revoked(), hour_start + 3599);
            }
        }
    }
    // Everyone comes back online late, within the settlement window.
    let late = start + params.hours * 3600 + 3600;
    for terminal in &mut terminals {
        for voucher in terminal.take_vouchers() {
            issuer.upload(&voucher.encode(), late);
        }
    }
    for device in &mut devices {
        for voucher in std::mem::take(&mut device.signed) {
            issuer.report_from_device(&voucher);
        }
    }
    // The deadlines pass: what is left of each reserve goes back to its wallet.
    let mut reserve_paid: u64 = 0;
    let mut limits: u64 = 0;
    for book in issuer.books.values_mut() {
        limits += book.limit;
        reserve_paid += book.limit - book.reserve_left;
        let returned = book.close(u32::MAX).unwrap_or(0);
        issuer.report.returned_minor += returned;
    }
    let mut report = issuer.report;
    let double_spent: HashSet<Id> = accepted
        .iter()
        .filter(|(_, vouchers)| !one_device_could_sign(vouchers, params.limit))
        .map(|(id, _)| *id)
        .collect();
    report.cheaters_who_double_spent = double_spent.len() as u64;
    // Every purse whose accepted vouchers show double spending is revoked, and only purses
    // whose device signed something one honest device could not have are.
    if !double_spent.is_subset(&issuer.detected) {
        report
            .violations
            .push("a purse that double spent was not revoked".into());
    }
    if issuer.detected.iter().any(|id| {
        signed
            .get(id)
            .is_none_or(|vouchers| one_device_could_sign(vouchers, params.limit))
    }) {
        report
            .violations
            .push("a purse was revoked whose device did not double spend".into());
    }
    let bound = params.policy.bound(params.limit);
    report.max_loss_per_purse_minor = issuer.losses.values().copied().max().unwrap_or(0);
    if report.max_loss_per_purse_minor > bound {
        report.violations.push(format!(
            "a purse cost {} against its bound of {bound}",
            report.max_loss_per_purse_minor
        ));
    }
    if accepted
        .iter()
        .any(|(id, v)| issuer.honest.contains(id) && !one_device_could_sign(v, params.limit))
    {
        report
            .violations
            .push("an honest device's vouchers look double spent".into());
    }
    report.settle_seconds = issuer.seconds;
    issuer.nanos.sort_unstable();
    let percentile = |p: usize| {
        let n = issuer.nanos.len();
        if n == 0 {
            return 0.0;
        }
        issuer.nanos[(n * p).div_ceil(100).max(1) - 1] as f64 / 1000.0
    };
    report.settle_us_p50 = percentile(50);
    report.settle_us_p99 = percentile(99);
    report.settlements_per_second = if issuer.seconds > 0.0 {
        report.uploads as f64 / issuer.seconds
    } else {
        0.0
    };
    check(
        &mut report,
        reserve_paid,
        limits,
        &issuer.books,
        &issuer.honest,
    );
    report
}

/// Whether one honest device could have signed all these vouchers of a purse: distinct
/// counters and, in counter order, each cumulative amount at least the one before plus its own
/// amount, the last within the limit. (Settlement finds the same by comparing each arrival
/// with every voucher before it, in whatever order they come; this is the plain statement.)
fn one_device_could_sign(vouchers: &[VoucherContent], limit: u64) -> bool {
    let mut sorted = vouchers.to_vec();
    sorted.sort_by_key(|v| v.counter);
    let mut previous: u64 = 0;
    let mut last_counter = 0;
    for v in &sorted {
        if v.counter == last_counter || v.cumulative < previous.saturating_add(v.amount) {
            return false;
        }
        previous = v.cumulative;
        last_counter = v.counter;
    }
    previous <= limit
}

fn check(
    report: &mut Report,
    reserve_paid: u64,
    limits: u64,
    books: &HashMap<Id, PurseBook>,
    honest: &HashSet<Id>,
) {
    let mut violations = std::mem::take(&mut report.violations);
    if report.loss_minor > report.bound_minor {
        violations.push(format!(
            "loss {} above the bound {}",
            report.loss_minor, report.bound_minor
        ));
    }
    if report.paid_minor != reserve_paid + report.loss_minor {
        violations.push("paid is not reserve plus guarantee".into());
    }
    if reserve_paid + report.returned_minor != limits {
        violations.push("reserves paid and returned do not add up to the loads".into());
    }
    if report.settled + report.repeated != report.uploads {
        violations.push("an upload was neither decided nor repeated".into());
    }
    if report.settled != report.payments {
        violations.push(format!(
            "{} vouchers accepted, {} decided",
            report.payments, report.settled
        ));
    }
    if report.honest_unpaid > 0 {
        violations.push("an honest voucher was not paid".into());
    }
    if books.iter().any(|(id, b)| b.revoked && honest.contains(id)) {
        violations.push("an honest purse was revoked".into());
    }
    report.invariants_ok = violations.is_empty();
    report.violations = violations;
}
