//! The offline protocol end to end without a server: encodings, every check of the device
//! and the terminal, settlement's decisions, and the simulation's invariants.

use std::sync::Arc;

use koban_offline::settle::{Decision, DoubleSpend, Policy, PurseBook, Unpaid};
use koban_offline::{
    Challenge, Currency, IssuerKeys, Purse, PurseCertificate, PurseError, Refusal, SigningKey,
    Terminal, TerminalCertificate, Voucher, VoucherContent, sim,
};
use proptest::prelude::*;

const NOW: u32 = 1_800_000_000;
const HOUR: u32 = 3600;
const LIMIT: u64 = 20_000;

struct World {
    issuer: SigningKey,
    keys: IssuerKeys,
}

impl World {
    fn new() -> World {
        let issuer = SigningKey::generate();
        let keys = IssuerKeys::new([(7, issuer.public())]);
        World { issuer, keys }
    }

    fn purse(&self, limit: u64) -> Purse {
        let key = Arc::new(SigningKey::generate());
        let cert = PurseCertificate {
            issuer_key: 7,
            purse: [3; 16],
            device_key: key.public(),
            currency: Currency::JPY,
            limit,
            not_before: NOW - HOUR,
            not_after: NOW + 72 * HOUR,
            serial: 1,
            signature: [0; 64],
        }
        .issue(&self.issuer);
        Purse::new(cert, key)
    }

    fn terminal_cert(&self, key: &SigningKey, id: u8) -> TerminalCertificate {
        TerminalCertificate {
            issuer_key: 7,
            terminal: [id; 16],
            merchant: [0xaa; 16],
            terminal_key: key.public(),
            currency: Currency::JPY,
            not_after: NOW + 365 * 24 * HOUR,
            name: "喫茶こばん Kissa Koban".to_owned(),
            signature: [0; 64],
        }
        .issue(&self.issuer)
    }

    fn terminal(&self, id: u8) -> Terminal {
        let key = Arc::new(SigningKey::generate());
        let cert = self.terminal_cert(&key, id);
        Terminal::new(cert, key, self.keys.clone(), 24 * HOUR, [], NOW)
    }
}

fn pay(
    purse: &mut Purse,
    terminal: &mut Terminal,
    world: &World,
    amount: u64,
    nonce: u8,
) -> Result<Voucher, Refusal> {
    let challenge = terminal.challenge(amount, [nonce; 12], NOW);
    let voucher = purse
        .pay(&challenge, &world.keys, NOW)
        .map_err(|e| match e {
            PurseError::Challenge(r) => r,
            PurseError::Insufficient => Refusal::OverLimit,
        })?;
    terminal.accept(&challenge, &voucher, NOW)?;
    Ok(voucher)
}

#[test]
fn a_device_pays_a_terminal_and_the_codes_are_small_enough_to_scan() {
    let world = World::new();
    let mut purse = world.purse(LIMIT);
    let mut terminal = world.terminal(1);
    let challenge = terminal.challenge(1_200, [9; 12], NOW);
    let challenge_text = challenge.to_text();
    let read = Challenge::from_text(&challenge_text).unwrap();
    assert_eq!(read, challenge);
    read.verify(&world.keys, NOW).unwrap();
    assert_eq!(read.terminal.name, "喫茶こばん Kissa Koban");
    let voucher = purse.pay(&read, &world.keys, NOW).unwrap();
    let voucher_text = voucher.to_text();
    let voucher = Voucher::from_text(&voucher_text).unwrap();
    assert_eq!(
        (voucher.content.counter, voucher.content.cumulative),
        (1, 1_200)
    );
    terminal.accept(&challenge, &voucher, NOW).unwrap();
    assert_eq!(terminal.stored(), std::slice::from_ref(&voucher));
    // Scanned again: the device shows the same voucher, and the terminal does not take it
    // twice.
    assert_eq!(purse.pay(&read, &world.keys, NOW).unwrap(), voucher);
    assert_eq!(
        terminal.accept(&challenge, &voucher, NOW),
        Err(Refusal::WrongChallenge)
    );
    // A challenge older than ten minutes, or from the terminal's future, is not answered.
    let old = terminal.challenge(500, [20; 12], NOW - 601);
    let v = purse.clone().pay(&old, &world.keys, NOW).unwrap();
    assert_eq!(terminal.accept(&old, &v, NOW), Err(Refusal::WrongChallenge));
    let ahead = terminal.challenge(500, [21; 12], NOW + 5);
    let v = purse.clone().pay(&ahead, &world.keys, NOW + 5).unwrap();
    assert_eq!(
        terminal.accept(&ahead, &v, NOW),
        Err(Refusal::WrongChallenge)
    );
    // Sizes: the QR symbols at level M (15% of the symbol can be lost) stay at version 13 or
    // below (69 modules a side), which a phone reads from another phone's screen.
    assert_eq!(voucher.encode().len(), Voucher::LEN);
    assert_eq!(Voucher::LEN, 287);
    let version =
        |text: &str| match qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M)
            .unwrap()
            .version()
        {
            qrcode::Version::Normal(v) => v,
            qrcode::Version::Micro(_) => unreachable!(),
        };
    eprintln!(
        "voucher {} chars, version {}; challenge {} chars, version {}",
        voucher_text.len(),
        version(&voucher_text),
        challenge_text.len(),
        version(&challenge_text)
    );
    assert!(version(&voucher_text) <= 13, "{}", voucher_text.len());
    assert!(version(&challenge_text) <= 13, "{}", challenge_text.len());
    assert!(
        voucher_text
            .bytes()
            .all(|b| b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:".contains(&b)),
        "QR alphanumeric characters only"
    );
    // The second payment follows on.
    let second = pay(&mut purse, &mut terminal, &world, 800, 10).unwrap();
    assert_eq!(
        (second.content.counter, second.content.cumulative),
        (2, 2_000)
    );
    assert_eq!(purse.available(), LIMIT - 2_000);
}

#[test]
fn the_device_refuses_what_it_should_not_pay() {
    let world = World::new();
    let mut purse = world.purse(LIMIT);
    let terminal = world.terminal(1);
    // More than the purse holds: refused, and nothing is spent.
    let big = terminal.challenge(LIMIT + 1, [1; 12], NOW);
    assert_eq!(
        purse.pay(&big, &world.keys, NOW).unwrap_err(),
        PurseError::Insufficient
    );
    assert_eq!((purse.counter, purse.spent), (0, 0));
    // A challenge whose amount was changed after the terminal signed it.
    let mut changed = terminal.challenge(100, [2; 12], NOW);
    changed.amount = 10;
    assert_eq!(
        purse.pay(&changed, &world.keys, NOW).unwrap_err(),
        PurseError::Challenge(Refusal::BadTerminalSignature)
    );
    // A terminal certified by someone else.
    let stranger = World::new();
    let forged = stranger.terminal(1).challenge(100, [3; 12], NOW);
    assert_eq!(
        purse.pay(&forged, &world.keys, NOW).unwrap_err(),
        PurseError::Challenge(Refusal::BadIssuerSignature)
    );
    // The purse's own certificate has expired.
    let late = NOW + 80 * HOUR;
    assert_eq!(
        purse
            .pay(&terminal.challenge(100, [4; 12], late), &world.keys, late)
            .unwrap_err(),
        PurseError::Challenge(Refusal::Expired)
    );
    assert_eq!((purse.counter, purse.spent), (0, 0));
}

#[test]
fn the_terminal_refuses_each_kind_of_bad_voucher_and_keeps_nothing() {
    let world = World::new();
    let mut terminal = world.terminal(1);
    let mut purse = world.purse(LIMIT);
    pay(&mut purse, &mut terminal, &world, 5_000, 1).unwrap();
    let kept = terminal.stored().len();

    // A voucher answering another terminal's challenge.
    let other = world.terminal(2);
    let theirs = other.challenge(100, [2; 12], NOW);
    let voucher = purse.clone().pay(&theirs, &world.keys, NOW).unwrap();
    let mine = terminal.challenge(100, [2; 12], NOW);
    assert_eq!(
        terminal.accept(&mine, &voucher, NOW),
        Err(Refusal::WrongTerminal)
    );
    // A voucher for another amount or nonce than the challenge on screen.
    let shown = terminal.challenge(300, [3; 12], NOW);
    let voucher = purse
        .clone()
        .pay(&terminal.challenge(30, [3; 12], NOW), &world.keys, NOW)
        .unwrap();
    assert_eq!(
        terminal.accept(&shown, &voucher, NOW),
        Err(Refusal::WrongChallenge)
    );
    let voucher = purse
        .clone()
        .pay(&terminal.challenge(300, [4; 12], NOW), &world.keys, NOW)
        .unwrap();
    assert_eq!(
        terminal.accept(&shown, &voucher, NOW),
        Err(Refusal::WrongChallenge)
    );
    // Signed by another key than the certificate's.
    let challenge = terminal.challenge(100, [5; 12], NOW);
    let mut voucher = purse.clone().pay(&challenge, &world.keys, NOW).unwrap();
    voucher = Voucher::sign(
        voucher.certificate,
        voucher.content,
        &SigningKey::generate(),
    );
    assert_eq!(
        terminal.accept(&challenge, &voucher, NOW),
        Err(Refusal::BadDeviceSignature)
    );
    // A certificate with a raised limit (the issuer's signature no longer holds).
    let mut voucher = purse.clone().pay(&challenge, &world.keys, NOW).unwrap();
    voucher.certificate.limit = 1_000_000;
    assert_eq!(
        terminal.accept(&challenge, &voucher, NOW),
        Err(Refusal::BadIssuerSignature)
    );
    // A certificate of an issuer key the terminal does not know.
    let mut voucher = purse.clone().pay(&challenge, &world.keys, NOW).unwrap();
    voucher.certificate.issuer_key = 8;
    assert_eq!(
        terminal.accept(&challenge, &voucher, NOW),
        Err(Refusal::UnknownIssuer)
    );
    // Replay: the device goes back one counter.
    let mut replay = purse.clone();
    replay.counter = 0;
    replay.spent = 0;
    let voucher = replay.pay(&challenge, &world.keys, NOW).unwrap();
    assert_eq!(
        terminal.accept(&challenge, &voucher, NOW),
        Err(Refusal::CounterNotIncreasing)
    );
    // Over-spending: the device forgets what it spent, keeping its counter.
    let mut forgetful = purse.clone();
    forgetful.spent = 0;
    let voucher = forgetful.pay(&challenge, &world.keys, NOW).unwrap();
    assert_eq!(
        terminal.accept(&challenge, &voucher, NOW),
        Err(Refusal::CumulativeInconsistent)
    );
    // A cumulative amount above the limit, signed by the device itself.
    let content = VoucherContent {
        terminal: [1; 16],
        nonce: challenge.nonce,
        time: challenge.time,
        amount: 100,
        counter: 9,
        cumulative: LIMIT + 1,
    };
    let voucher = Voucher::sign(purse.certificate.clone(), content, &purse.key);
    assert_eq!(
        terminal.accept(&challenge, &voucher, NOW),
        Err(Refusal::OverLimit)
    );
    // A purse of another currency.
    let mut usd = world.purse(LIMIT);
    usd.certificate.currency = Currency::parse("USD").unwrap();
    usd.certificate = usd.certificate.clone().issue(&world.issuer);
    let content = VoucherContent {
        counter: 1,
        cumulative: 100,
        ..content
    };
    let voucher = Voucher::sign(usd.certificate.clone(), content, &usd.key);
    assert_eq!(
        terminal.accept(&challenge, &voucher, NOW),
        Err(Refusal::WrongCurrency)
    );
    // An expired certificate, by the terminal's clock.
    let late = NOW + 73 * HOUR;
    let late_challenge = terminal.challenge(100, [6; 12], late);
    let content = VoucherContent {
        nonce: [6; 12],
        time: late,
        counter: 5,
        cumulative: 5_100,
        ..content
    };
    let voucher = Voucher::sign(purse.certificate.clone(), content, &purse.key);
    terminal.refresh([], late);
    assert_eq!(
        terminal.accept(&late_challenge, &voucher, late),
        Err(Refusal::Expired)
    );
    assert_eq!(
        terminal.stored().len(),
        kept,
        "refused vouchers are not kept"
    );
}

#[test]
fn a_revoked_purse_and_a_stale_list_stop_the_terminal() {
    let world = World::new();
    let mut terminal = world.terminal(1);
    let mut purse = world.purse(LIMIT);
    terminal.refresh([purse.certificate.purse], NOW);
    assert_eq!(
        pay(&mut purse, &mut terminal, &world, 100, 1),
        Err(Refusal::Revoked)
    );
    // A day and a second without a refresh: no offline payment is taken.
    let mut terminal = world.terminal(1);
    let later = NOW + 24 * HOUR + 1;
    let challenge = terminal.challenge(100, [2; 12], later);
    let voucher = world
        .purse(LIMIT)
        .pay(&challenge, &world.keys, later)
        .unwrap();
    assert_eq!(
        terminal.accept(&challenge, &voucher, later),
        Err(Refusal::StaleRevocationList)
    );
    terminal.refresh([], later);
    assert_eq!(terminal.accept(&challenge, &voucher, later), Ok(()));
}

/// A voucher's content at terminal `nonce` (each challenge at its own terminal).
fn content(counter: u32, amount: u64, cumulative: u64, nonce: u8) -> VoucherContent {
    VoucherContent {
        terminal: [nonce; 16],
        nonce: [nonce; 12],
        time: NOW,
        amount,
        counter,
        cumulative,
    }
}

fn book(policy: Policy) -> PurseBook {
    PurseBook::new([3; 16], LIMIT, NOW - HOUR, NOW + 72 * HOUR, policy)
}

/// Each terminal its own merchant, except terminals 10 and 11, both merchant 10's.
fn merchant_of(c: &VoucherContent) -> [u8; 16] {
    [if c.terminal[0] == 11 {
        10
    } else {
        c.terminal[0]
    }; 16]
}

fn settle(book: &mut PurseBook, c: &VoucherContent) -> Decision {
    book.settle(c, merchant_of(c), NOW).decision
}

#[test]
fn settlement_pays_once_finds_double_spending_and_stays_within_the_guarantee() {
    let mut b = book(Policy::default());
    let first = content(1, 15_000, 15_000, 1);
    assert_eq!(
        settle(&mut b, &first),
        Decision::Paid {
            from_reserve: 15_000,
            from_guarantee: 0,
            double_spend: None
        }
    );
    // The same voucher again (the device uploads it too): the same answer, nothing moves.
    let again = b.settle(&first, merchant_of(&first), NOW);
    assert!(again.repeated);
    assert_eq!(b.reserve_left, 5_000);
    // A clone spends counter 1 elsewhere: paid, reserve first, then the guarantee; revoked.
    let clone = content(1, 12_000, 12_000, 2);
    assert_eq!(
        settle(&mut b, &clone),
        Decision::Paid {
            from_reserve: 5_000,
            from_guarantee: 7_000,
            double_spend: Some(DoubleSpend::CounterReused)
        }
    );
    assert!(b.revoked);
    // Once revoked there is nothing more to find: later vouchers are paid from what is left
    // of the guarantee, and past it not at all.
    let forgetful = content(2, 10_000, 10_000, 3);
    assert_eq!(
        settle(&mut b, &forgetful),
        Decision::Paid {
            from_reserve: 0,
            from_guarantee: 10_000,
            double_spend: None
        }
    );
    let more = content(3, 5_000, 20_000, 4);
    assert_eq!(
        settle(&mut b, &more),
        Decision::Unpaid {
            reason: Unpaid::GuaranteeExhausted,
            double_spend: None
        }
    );
    assert_eq!(b.guarantee_left, 3_000);
    assert_eq!(b.exposure(), 3_000);
    // With factor 1 the issuer pays nothing of its own.
    let mut strict = book(Policy {
        guarantee_factor: 1,
        ..Policy::default()
    });
    settle(&mut strict, &first);
    assert_eq!(
        settle(&mut strict, &clone),
        Decision::Unpaid {
            reason: Unpaid::GuaranteeExhausted,
            double_spend: Some(DoubleSpend::CounterReused)
        }
    );
}

#[test]
fn one_purchase_is_paid_once_and_one_merchant_at_most_the_limit() {
    let mut b = book(Policy::default());
    // A device that signed twice for one challenge (its state lost between): the chain is
    // consistent, but the challenge is paid once.
    let once = content(1, 5_000, 5_000, 7);
    let twice = VoucherContent {
        counter: 2,
        cumulative: 10_000,
        ..once
    };
    assert_eq!(settle(&mut b, &once).paid(), 5_000);
    assert_eq!(
        settle(&mut b, &twice),
        Decision::Unpaid {
            reason: Unpaid::ChallengeAnswered,
            double_spend: None
        }
    );
    assert!(!b.revoked);
    // A clone spending at two terminals of one merchant: that merchant is paid the limit at
    // most from this purse.
    let mut b = book(Policy::default());
    assert_eq!(
        settle(&mut b, &content(1, 15_000, 15_000, 10)).paid(),
        15_000
    );
    assert_eq!(
        settle(&mut b, &content(1, 10_000, 10_000, 11)),
        Decision::Unpaid {
            reason: Unpaid::MerchantCap,
            double_spend: Some(DoubleSpend::CounterReused)
        }
    );
    // Another merchant's voucher of the clone is still paid, from what the reserve has left.
    assert_eq!(
        settle(&mut b, &content(2, 4_000, 19_000, 12)),
        Decision::Paid {
            from_reserve: 4_000,
            from_guarantee: 0,
            double_spend: None
        }
    );
}

/// Settling some vouchers, storing the decisions and restoring the book from them gives the
/// same decisions for the rest as the book that never stopped.
#[test]
fn a_restored_book_decides_as_the_original() {
    let vouchers = [
        content(1, 6_000, 6_000, 1),
        content(1, 9_000, 9_000, 2),
        content(2, 3_000, 9_000, 3),
        content(3, 8_000, 17_000, 4),
        content(2, 5_000, 14_000, 5),
        content(4, 3_000, 20_000, 6),
        content(5, 1_000, 20_000, 7),
    ];
    for split in 0..vouchers.len() {
        let mut original = book(Policy::default());
        let mut stored = Vec::new();
        for v in &vouchers[..split] {
            stored.push((*v, merchant_of(v), settle(&mut original, v)));
        }
        let mut restored =
            PurseBook::restore(book(Policy::default()), (original.revoked, false), stored);
        for v in &vouchers[split..] {
            assert_eq!(
                settle(&mut restored, v),
                settle(&mut original, v),
                "split {split}"
            );
        }
        assert_eq!(
            (restored.reserve_left, restored.guarantee_left),
            (original.reserve_left, original.guarantee_left)
        );
    }
}

#[test]
fn settlement_refuses_what_a_terminal_should_have_refused_and_what_comes_late() {
    let mut b = book(Policy::default());
    assert_eq!(
        settle(&mut b, &content(1, 100, LIMIT + 1, 1)),
        Decision::Unpaid {
            reason: Unpaid::AboveLimit,
            double_spend: None
        }
    );
    let early = VoucherContent {
        time: NOW - 2 * HOUR,
        ..content(1, 100, 100, 2)
    };
    assert_eq!(
        settle(&mut b, &early),
        Decision::Unpaid {
            reason: Unpaid::OutsideValidity,
            double_spend: None
        }
    );
    // Neither counted toward double spending: an honest first voucher is paid cleanly.
    assert_eq!(
        settle(&mut b, &content(1, 100, 100, 3)).double_spend(),
        None
    );
    // Before the deadline the purse does not close; after it, the rest goes back once, and a
    // voucher arriving later is not paid.
    assert_eq!(b.close(b.deadline() - 1), None);
    assert_eq!(b.close(b.deadline()), Some(LIMIT - 100));
    assert_eq!(b.close(b.deadline() + 1), None);
    let late = content(2, 100, 200, 4);
    assert_eq!(
        b.settle(&late, merchant_of(&late), b.deadline() + 5)
            .decision,
        Decision::Unpaid {
            reason: Unpaid::Late,
            double_spend: None
        }
    );
    assert_eq!(b.exposure(), 0);
}

/// An honest device's vouchers: amounts in order, cumulative as they add up.
fn honest_sequence(amounts: &[u64]) -> Vec<VoucherContent> {
    let mut cumulative = 0;
    amounts
        .iter()
        .enumerate()
        .map(|(i, amount)| {
            cumulative += amount;
            content(i as u32 + 1, *amount, cumulative, i as u8)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever order an honest device's vouchers arrive in, with repeats, each is paid once
    /// from the reserve and nothing looks double spent.
    #[test]
    fn honest_vouchers_in_any_order_are_paid_once_from_the_reserve(
        amounts in proptest::collection::vec(1u64..=2_000, 1..10),
        order in proptest::collection::vec(0usize..100, 1..30),
    ) {
        let vouchers = honest_sequence(&amounts);
        prop_assume!(vouchers.last().unwrap().cumulative <= LIMIT);
        let mut b = book(Policy::default());
        let mut paid = 0;
        for (i, pick) in order.iter().copied().chain(0..vouchers.len()).enumerate() {
            let v = &vouchers[pick % vouchers.len()];
            let settled = b.settle(v, merchant_of(v), NOW);
            prop_assert_eq!(settled.decision.double_spend(), None, "arrival {}", i);
            if !settled.repeated {
                prop_assert_eq!(settled.decision, Decision::Paid { from_reserve: v.amount, from_guarantee: 0, double_spend: None });
                paid += v.amount;
            }
        }
        prop_assert_eq!(paid, vouchers.last().unwrap().cumulative);
        prop_assert_eq!(b.reserve_left, LIMIT - paid);
        prop_assert!(!b.revoked);
    }

    /// Whatever vouchers a cheating device signs, the issuer never pays more than the reserve
    /// plus the guarantee, the reserve adds up, and a set one device could not have signed
    /// revokes the purse.
    #[test]
    fn no_set_of_vouchers_costs_the_issuer_more_than_the_guarantee(
        raw in proptest::collection::vec((1u32..6, 1u64..=9_000, 0u64..=25_000, any::<u8>()), 1..16),
        factor in 1u64..4,
    ) {
        let policy = Policy { guarantee_factor: factor, ..Policy::default() };
        let mut b = book(policy);
        let (mut from_reserve, mut from_guarantee) = (0, 0);
        let mut counted = Vec::new();
        for (counter, amount, extra, nonce) in raw {
            let v = content(counter, amount, amount + extra, nonce);
            let settled = b.settle(&v, merchant_of(&v), NOW);
            if settled.repeated { continue; }
            if let Decision::Paid { from_reserve: r, from_guarantee: g, .. } = settled.decision {
                from_reserve += r;
                from_guarantee += g;
            }
            if v.cumulative <= LIMIT { counted.push(v); }
        }
        prop_assert!(from_guarantee <= policy.bound(LIMIT));
        prop_assert_eq!(from_reserve + b.reserve_left, LIMIT);
        prop_assert_eq!(from_guarantee + b.guarantee_left, policy.bound(LIMIT));
        // Distinct counters, cumulative following in counter order, within the limit.
        let mut sorted = counted.clone();
        sorted.sort_by_key(|v| v.counter);
        sorted.dedup();
        let honest = sorted.windows(2).all(|w| w[0].counter < w[1].counter && w[1].cumulative >= w[0].cumulative + w[1].amount)
            && sorted.first().is_none_or(|v| v.cumulative >= v.amount);
        prop_assert_eq!(b.revoked, !honest, "{:?}", sorted);
    }

    /// A real challenge and voucher with bytes changed, cut or added: whatever still decodes is
    /// exactly the bytes it came from, and how many of the changes decode is not nothing.
    #[test]
    fn only_canonical_bytes_decode(
        changes in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..4),
        cut in 0usize..4,
        extra in proptest::collection::vec(any::<u8>(), 0..2),
    ) {
        for original in samples() {
            let mut bytes = original.clone();
            for (at, value) in &changes {
                let at = usize::from(*at) % bytes.len();
                bytes[at] = *value;
            }
            bytes.truncate(bytes.len() - cut.min(bytes.len()));
            bytes.extend_from_slice(&extra);
            if let Ok(v) = Voucher::decode(&bytes) { prop_assert_eq!(v.encode(), bytes.clone()); }
            if let Ok(c) = Challenge::decode(&bytes) { prop_assert_eq!(c.encode(), bytes.clone()); }
            if let Ok(c) = PurseCertificate::decode(&bytes) { prop_assert_eq!(c.encode(), bytes.clone()); }
            if let Ok(c) = TerminalCertificate::decode(&bytes) { prop_assert_eq!(c.encode(), bytes); }
        }
    }
}

/// A voucher, a challenge and both certificates, encoded.
fn samples() -> &'static [Vec<u8>] {
    static SAMPLES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(|| {
        let world = World::new();
        let mut purse = world.purse(LIMIT);
        let challenge = world.terminal(1).challenge(1_000, [1; 12], NOW);
        let voucher = purse.pay(&challenge, &world.keys, NOW).unwrap();
        vec![
            voucher.encode(),
            challenge.encode(),
            voucher.certificate.encode(),
            challenge.terminal.encode(),
        ]
    })
}

/// The canonical check above is not empty: single-byte changes in value fields still decode.
#[test]
fn changed_values_still_decode_so_the_canonical_check_bites() {
    let voucher = &samples()[0];
    let mut changed = voucher.clone();
    // The last byte of the cumulative amount (before the signature).
    let at = voucher.len() - 64 - 1;
    changed[at] ^= 1;
    assert!(Voucher::decode(&changed).is_ok());
    // A trailing byte never does.
    let mut longer = voucher.clone();
    longer.push(0);
    assert!(Voucher::decode(&longer).is_err());
}

/// Any one bit of a voucher changed: it no longer reads, or no longer verifies.
#[test]
fn every_bit_of_a_voucher_is_covered_by_a_signature() {
    let world = World::new();
    let mut purse = world.purse(LIMIT);
    let challenge = world.terminal(1).challenge(1_000, [1; 12], NOW);
    let bytes = purse.pay(&challenge, &world.keys, NOW).unwrap().encode();
    for i in 0..bytes.len() * 8 {
        let mut changed = bytes.clone();
        changed[i / 8] ^= 1 << (i % 8);
        if let Ok(v) = Voucher::decode(&changed) {
            assert!(v.verify_signatures(&world.keys).is_err(), "bit {i}");
        }
    }
}

#[test]
fn the_simulation_never_loses_more_than_the_bound_and_finds_every_double_spender() {
    for seed in [1, 2, 3] {
        let report = sim::run(&sim::Params {
            devices: 40,
            terminals: 8,
            hours: 48,
            cheaters: 6,
            seed,
            ..sim::Params::default()
        });
        assert!(report.invariants_ok, "seed {seed}: {:?}", report.violations);
        assert!(report.payments > 100, "seed {seed}: {report:?}");
        assert!(report.loss_minor <= report.bound_minor);
        assert!(report.double_spends_detected >= report.cheaters_who_double_spent);
        assert!(
            report.cheaters_who_double_spent >= 4,
            "seed {seed}: {report:?}"
        );
        assert!(report.repeated > 0, "terminals send again: {report:?}");
        assert!(report.double_scans > 0, "{report:?}");
        assert!(report.refused_at_terminal.values().sum::<u64>() > 0);
    }
}
