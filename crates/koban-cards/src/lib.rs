//! Koban's virtual prepaid cards (threat model D6): issuing on a customer's wallet, the card
//! keys that protect card data, and the card network's side (authorization, increment,
//! reversal, clearing, refund, expiry of stale holds, card-testing guard).
//!
//! [`Cards`] is the service. It builds on a small, named part of [`koban_pay::Payments`]:
//! wallet lookup (`holder`, `wallet`, `ledger_account`, `spent_today_from`,
//! `check_balance_cap`), the risk hook (`risk_event`, `assess`), holds and their ids
//! (`lock_wallet`, `claim`, `derive_id`, the ledger store), notices (`notify`) and group
//! commit (`write_batched`). The arrow runs one way: payments know nothing of cards.
//!
//! Architecture invariants: a card number exists in clear only in memory (sealed at rest
//! under [`card_keys::CardKeys`]); the security code is never stored; every approved
//! authorization is exactly one open ledger hold on the wallet, decided by the risk hook.

pub mod card_keys;
pub mod card_network;
pub mod issuing;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use koban_pay::{PayError, Payments};
use koban_store::LedgerStore;
use koban_store::sql::Held;

/// Settings of card issuing and of the network's side.
#[derive(Clone, Debug)]
pub struct CardConfig {
    /// The issuer BIN (6 or 8 digits) new card numbers start with.
    pub bin: String,
    /// Seconds an approved authorization stays valid before its hold is released.
    pub auth_expiry_s: i64,
    /// How far a clearing may exceed the authorized amount, in basis points of it.
    pub capture_tolerance_bps: u64,
    /// Wrong security codes or expiry dates in a row that lock a card.
    pub bad_codes_max: i64,
    /// Different cards failing checks at one merchant or from one network within 10 minutes
    /// that raise a card-testing alert and decline further attempts from there.
    pub testing_cards_max: usize,
}

impl Default for CardConfig {
    fn default() -> CardConfig {
        CardConfig {
            bin: "499910".to_owned(),
            auth_expiry_s: 7 * 24 * 3600,
            capture_tolerance_bps: 0,
            bad_codes_max: 3,
            testing_cards_max: 5,
        }
    }
}

const CARD_LOCK_STRIPES: usize = 256;

/// The card service over the payments service.
#[derive(Clone)]
pub struct Cards<S: LedgerStore> {
    pub(crate) pay: Payments<S>,
    pub(crate) config: Arc<CardConfig>,
    /// Keys of issued cards' data; `None`: card issuing is off.
    pub(crate) keys: Option<Arc<card_keys::CardKeys>>,
    /// Card-data checks per card (by fingerprint), so concurrent guesses of a security code
    /// each see the wrong ones before them.
    card_locks: Arc<Vec<tokio::sync::Mutex<()>>>,
    /// Digests of network request signatures seen lately (replay refusal), with when.
    pub(crate) network_seen: Arc<Mutex<card_network::ReplayCache>>,
    /// When [`Cards::tick`] last pruned the card-testing tables (milliseconds).
    testing_forgotten_at: Arc<AtomicI64>,
}

impl<S: LedgerStore> Cards<S> {
    /// Cards over `pay`, with issuing off until [`Cards::with_keys`] gives it keys.
    pub fn new(pay: Payments<S>, config: CardConfig) -> Cards<S> {
        Cards {
            pay,
            config: Arc::new(config),
            keys: None,
            card_locks: Arc::new(
                (0..CARD_LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            ),
            network_seen: Arc::default(),
            testing_forgotten_at: Arc::default(),
        }
    }

    /// Turns card issuing on with these keys.
    pub fn with_keys(mut self, keys: card_keys::CardKeys) -> Self {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// The card keys, when card issuing is on (the network's client needs its secret).
    pub fn keys_configured(&self) -> Option<&card_keys::CardKeys> {
        self.keys.as_deref()
    }

    pub fn config(&self) -> &CardConfig {
        &self.config
    }

    /// The payments service the cards draw on.
    pub fn payments(&self) -> &Payments<S> {
        &self.pay
    }

    /// Locks one card's data checks (by its number's fingerprint, whose first 8 bytes are
    /// `card_key`): this instance's stripe, then the card for every instance on the database.
    pub(crate) async fn lock_card(
        &self,
        card_key: u64,
        fingerprint: &[u8],
    ) -> Result<(Held, tokio::sync::MutexGuard<'_, ()>), PayError> {
        let stripes = u64::try_from(CARD_LOCK_STRIPES).unwrap_or(1);
        let stripe = usize::try_from(card_key % stripes).unwrap_or(0);
        let local = self.card_locks[stripe].lock().await;
        let key = koban_pay::shared_key(b'c', fingerprint);
        let shared = self.pay.hold_shared(vec![key]).await?;
        Ok((shared, local))
    }

    /// Background work: releases stale authorizations' holds, and once a minute forgets
    /// card-testing failures older than the window and blocks that have ended.
    pub async fn tick(&self) -> Result<u64, PayError> {
        let now = self.pay.now_ms();
        let last = self.testing_forgotten_at.load(Ordering::SeqCst);
        if now - last >= 60_000 || now < last {
            self.forget_card_testing(now).await?;
            self.testing_forgotten_at.store(now, Ordering::SeqCst);
        }
        self.expire_card_authorizations().await
    }
}
