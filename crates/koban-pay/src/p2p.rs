//! Transfers between customers by e-mail address or phone number: confirmation of payee
//! (the payer sees the payee's masked name first), step-up bound to amount and payee for a
//! new payee or a large amount, daily and per-payee limits, and holds for review.

use koban_auth::{Client, Email, IssuedSession, Phone, Principal, StepUpProof, UserKind};
use koban_ledger::{
    Account, AccountId, Amount, Currency, Metadata, Move, PendingOptions, Transfer, TransferId,
    TransferRequest,
};
use koban_shared::mail::Mail;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};
use koban_store::{LedgerStore, PageRequest, params};

use crate::accounts::{IssuerAccount, kind};
use crate::risk::{Decision, EventKind, Parties, RiskEvent};
use crate::wallets::{DAY_MS, Holder, PartyKey, Wallet};
use crate::{IdempotencyKey, PayError, Payments, format_money, mask_name};

/// How long a transfer held for review waits for an analyst before it releases itself back
/// to the payer.
pub const REVIEW_HOLD_S: u32 = 7 * 24 * 3600;

/// The longest message a payer may attach, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 140;

/// A payee as the payer may see them before confirming.
#[derive(Clone, Debug)]
pub struct Payee {
    pub holder: Holder,
    pub masked_name: String,
    /// The address or number as given, normalised.
    pub handle: String,
    /// The payee's wallet account in the currency asked for, if opened.
    account: Option<AccountId>,
}

/// What a transfer request asks for, parsed.
#[derive(Clone, Debug)]
pub struct P2pRequest {
    pub to: String,
    pub amount: Amount,
    pub currency: Currency,
    pub message: Option<String>,
    pub key: IdempotencyKey,
}

/// The result of a transfer (or of its replay).
#[derive(Debug)]
pub struct P2pOutcome {
    pub transfer: Transfer,
    /// `completed`, or `held` for review.
    pub status: &'static str,
    pub payee_masked_name: String,
    pub replayed: bool,
    /// Set when step-up rotated the session: the client must use this token from now on.
    pub session: Option<IssuedSession>,
}

/// A handle as chosen: 3 to 20 of `a-z`, `0-9`, `_`, stored in lower case.
pub fn parse_handle(text: &str) -> Result<String, PayError> {
    let lower = text.trim().trim_start_matches('@').to_ascii_lowercase();
    if (3..=20).contains(&lower.len())
        && lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(lower)
    } else {
        Err(PayError::Invalid(
            "a handle is 3 to 20 letters, digits or underscores",
        ))
    }
}

use koban_auth::model::is_bidi_control;

pub(crate) fn message_metadata(message: Option<&str>) -> Result<Metadata, PayError> {
    match message {
        None => Ok(Metadata::empty()),
        Some(text) if text.len() > MESSAGE_BYTES_MAX => {
            Err(PayError::Invalid("the message is longer than 140 bytes"))
        }
        // Direction overrides could make the payee's screen show a message, a name or an amount
        // reversed or out of place.
        Some(text) if text.chars().any(is_bidi_control) => Err(PayError::Invalid(
            "the message may not hold text-direction control characters",
        )),
        Some(text) => Metadata::parse([("message", text)])
            .map_err(|_| PayError::Invalid("the message may not hold control characters")),
    }
}

/// The window of the payee-lookup guard ([`Payments::resolve_payee_for`]).
const LOOKUP_WINDOW_MS: i64 = 3600 * 1000;

/// Payer and address pairs one instance remembers as hits (32 bytes each: about 3 MB).
const KNOWN_ADDRESSES_MAX: usize = 100_000;

/// A payee address in its one written form: `@handle`, a normalised e-mail address, or a phone
/// number in E.164; refused (422) when it is none of them.
fn normalise_payee(to: &str) -> Result<String, PayError> {
    let to = to.trim();
    Ok(if let Some(name) = to.strip_prefix('@') {
        format!("@{}", parse_handle(name)?)
    } else if to.contains('@') {
        Email::parse(to)?.as_str().to_owned()
    } else {
        Phone::parse(to)?.as_str().to_owned()
    })
}

/// How a normalised payee address is looked up.
fn party_key(handle: &str) -> PartyKey<'_> {
    if let Some(name) = handle.strip_prefix('@') {
        PartyKey::Handle(name)
    } else if handle.contains('@') {
        PartyKey::Email(handle)
    } else {
        PartyKey::Phone(handle)
    }
}

impl<S: LedgerStore> Payments<S> {
    /// Finds a customer by `@handle`, e-mail address or phone number.
    pub async fn resolve_payee(&self, to: &str, currency: Currency) -> Result<Payee, PayError> {
        let handle = normalise_payee(to)?;
        self.payee_of(party_key(&handle), currency, handle.clone())
            .await
    }

    /// [`Payments::resolve_payee`] for a payer, guarded against testing which addresses
    /// belong to customers: each lookup of a well-formed address is counted against the payer
    /// and the payer's network first (in the database, so across instances); one that finds
    /// a customer is given back, one that finds nobody stays counted. Past
    /// [`PayConfig::lookup_misses_max`] (or the network's limit) within the hour, lookups are
    /// refused (429) for the rest of it, and an alert is raised on the payer.
    ///
    /// [`PayConfig::lookup_misses_max`]: crate::PayConfig::lookup_misses_max
    pub(crate) async fn resolve_payee_for(
        &self,
        principal: &Principal,
        client: &Client,
        to: &str,
        currency: Currency,
    ) -> Result<Payee, PayError> {
        use koban_auth::secret::HashPurpose;
        use koban_auth::throttle;
        let handle = normalise_payee(to)?;
        let hash = |scope: &[u8], subject: &[u8]| {
            self.auth
                .keys()
                .hash(HashPurpose::Throttle, &[scope, subject])
        };
        let guards = [
            (
                hash(b"payee-lookup-customer", principal.user_id.as_bytes()),
                self.config.lookup_misses_max,
            ),
            (
                hash(b"payee-lookup-network", client.network.as_bytes()),
                self.config.lookup_misses_network_max,
            ),
        ];
        let now = self.now_ms();
        // An address this payer was already answered a hit for (a payee paid again) is
        // looked up from a read while neither guard is near its limit: counting it and giving
        // it back would leave both rows as they were, and the answer tells the payer nothing
        // new. Any other address is counted first, below, so that a burst of lookups cannot
        // have its hits answered while its misses wait to be counted.
        let known = self.auth.keys().hash(
            HashPurpose::Throttle,
            &[
                b"payee-lookup-known",
                principal.user_id.as_bytes(),
                handle.as_bytes(),
            ],
        );
        if self.address_known(&known)
            && let Some(found) = self
                .resolve_payee_read(&guards, now, &handle, currency)
                .await?
        {
            return Ok(found);
        }
        // One transaction counts the lookup, looks up and gives a hit back: the counters' rows
        // stay locked meanwhile (PostgreSQL; SQLite has one writer), so one payer's or one
        // network's lookups go one at a time. Parallel lookups can neither slip past the
        // limit nor, while they are in flight, count as misses and block real payees.
        let mut tx = self.db().begin().await?;
        for (key, max) in &guards {
            if let Err(refused) =
                throttle::take_guess(&mut tx, now, key, LOOKUP_WINDOW_MS, *max, "payee_lookup")
                    .await
            {
                // The block and this attempt's count stay.
                tx.commit().await?;
                self.lookup_sweep_alert(principal, now).await?;
                return Err(refused.into());
            }
        }
        // Read in the same transaction (one connection: a pool of N never waits on itself).
        let found =
            match Self::party_in(&mut tx, self.auth.vault(), party_key(&handle), currency).await {
                Ok(party) => Self::payee_from(party, handle.clone()),
                Err(error) => Err(error),
            };
        if !matches!(found, Err(PayError::NotFound)) {
            for (key, _) in &guards {
                throttle::forgive(&mut tx, key).await?;
            }
        }
        tx.commit().await?;
        if found.is_ok() {
            self.remember_address(known);
        }
        found
    }

    /// Whether this instance answered the payer a hit for this address before (`key` as
    /// [`Payments::resolve_payee_for`] derives it).
    fn address_known(&self, key: &[u8; 32]) -> bool {
        self.known_addresses
            .lock()
            .is_ok_and(|known| known.contains(key))
    }

    /// Remembers a hit, in memory only (another instance, or this one after a restart,
    /// counts the address's next lookup again); forgets them all once [`KNOWN_ADDRESSES_MAX`]
    /// are held.
    fn remember_address(&self, key: [u8; 32]) {
        if let Ok(mut known) = self.known_addresses.lock() {
            if known.len() >= KNOWN_ADDRESSES_MAX {
                known.clear();
            }
            known.insert(key);
        }
    }

    /// The payee at `handle` (an address the payer was answered a hit for before) when both
    /// `guards` would pass a counted lookup now, from one read transaction; `None` when a
    /// guard is at its limit or the address names no payee any more (the lookup is then
    /// counted).
    async fn resolve_payee_read(
        &self,
        guards: &[([u8; 32], i64); 2],
        now: i64,
        handle: &str,
        currency: Currency,
    ) -> Result<Option<Payee>, PayError> {
        use koban_auth::throttle;
        let mut tx = self.db().begin_read().await?;
        for (guard, max) in guards {
            if !throttle::guess_would_pass(&mut tx, now, guard, LOOKUP_WINDOW_MS, *max).await? {
                tx.commit().await?;
                return Ok(None);
            }
        }
        let party = Self::party_in(&mut tx, self.auth.vault(), party_key(handle), currency).await;
        tx.commit().await?;
        match Self::payee_from(party?, handle.to_owned()) {
            Ok(payee) => Ok(Some(payee)),
            Err(PayError::NotFound) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Raises the payee-lookup sweep alert on `principal`, once per hour.
    async fn lookup_sweep_alert(&self, principal: &Principal, now: i64) -> Result<(), PayError> {
        tracing::warn!(
            customer = %principal.user_id,
            "payee lookups: too many addresses that belong to nobody; lookups refused for a while"
        );
        let event = format!(
            "payee-lookup-sweep:{}:{}",
            principal.user_id,
            now / LOOKUP_WINDOW_MS
        );
        let mut tx = self.db().begin().await?;
        crate::cases::raise_alert(
            &mut tx,
            now,
            &crate::cases::NewAlert {
                rule: "payee_lookup_sweep",
                reason: "looked up many addresses that belong to no customer within an hour",
                action: "alert",
                score: 50,
                event_id: Some(&event),
                subject: principal.user_id.as_str(),
                subject_role: "customer",
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A customer as a payee, shown to the payer as `shown_as` in step-up summaries.
    pub(crate) async fn payee_of(
        &self,
        key: PartyKey<'_>,
        currency: Currency,
        handle: String,
    ) -> Result<Payee, PayError> {
        Self::payee_from(self.party(key, currency).await?, handle)
    }

    /// The payee a `party` read names: an active customer, or nobody.
    fn payee_from(
        party: Option<(Holder, Option<AccountId>)>,
        handle: String,
    ) -> Result<Payee, PayError> {
        let (holder, account) = party.ok_or(PayError::NotFound)?;
        if holder.kind != UserKind::Customer || !holder.active {
            return Err(PayError::NotFound);
        }
        Ok(Payee {
            masked_name: mask_name(&holder.display_name),
            holder,
            handle,
            account,
        })
    }

    /// Confirmation of payee: the masked name behind an address, and whether the caller has
    /// paid them before. Guarded against address testing ([`Payments::resolve_payee_for`]).
    pub async fn lookup_payee(
        &self,
        principal: &Principal,
        client: &Client,
        to: &str,
        currency: Currency,
    ) -> Result<(Payee, bool), PayError> {
        principal.can_move_money()?;
        let payee = self
            .resolve_payee_for(principal, client, to, currency)
            .await?;
        if payee.holder.user_id == principal.user_id {
            return Err(PayError::Invalid("you cannot pay yourself"));
        }
        let wallet = self
            .wallet_from(&payee.holder, payee.account, currency)
            .await?;
        let known = self.known_payee(&principal.user_id, wallet.account).await?;
        Ok((payee, known))
    }

    pub(crate) async fn known_payee(
        &self,
        user_id: &str,
        payee: AccountId,
    ) -> Result<bool, PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT 1 FROM payees WHERE user_id = $1 AND payee_account = $2",
                params![user_id, payee.to_bytes()],
            )
            .await?;
        tx.commit().await?;
        Ok(row.is_some())
    }

    /// What `payer` sent to `payee` today, walking the payer's history back to midnight.
    async fn paid_today_to(
        &self,
        payer: AccountId,
        payee: AccountId,
        midnight_ns: u64,
    ) -> Result<u64, PayError> {
        let mut total: u64 = 0;
        let mut cursor = None;
        loop {
            let page = self
                .store
                .account_transfers(
                    payer,
                    PageRequest::new(cursor, 200).map_err(|_| PayError::Invalid("page"))?,
                )
                .await?
                .ok_or(PayError::NotFound)?;
            for t in page.transfers {
                if t.timestamp.nanos() < midnight_ns {
                    return Ok(total);
                }
                if t.debit == payer && t.credit == payee {
                    total = total.saturating_add(t.amount.minor_units());
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(total),
            }
        }
    }

    /// Builds the context the risk hook needs for an outgoing movement from `payer`.
    pub(crate) async fn outgoing_context(
        &self,
        principal: &Principal,
        kind: EventKind,
        payer: &Account,
        amount: Amount,
    ) -> Result<RiskEvent, PayError> {
        self.context_for(
            &principal.user_id,
            principal.cooling_off_until_ms,
            kind,
            payer,
            amount,
        )
        .await
    }

    /// Sends money to another customer.
    pub async fn transfer(
        &self,
        principal: &Principal,
        request: &P2pRequest,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<P2pOutcome, PayError> {
        principal.can_move_money()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("only customers send transfers"));
        }
        let id = self.derive_id(&[
            b"p2p",
            principal.user_id.as_bytes(),
            request.key.as_str().as_bytes(),
        ]);
        let _claim = self.claim(id).await?;
        let payee = self
            .resolve_payee_for(principal, client, &request.to, request.currency)
            .await?;
        self.send(principal, request, id, payee, proof, client)
            .await
    }

    /// Sends `request` to an already resolved payee under ledger id `id`.
    pub(crate) async fn send(
        &self,
        principal: &Principal,
        request: &P2pRequest,
        id: TransferId,
        payee: Payee,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<P2pOutcome, PayError> {
        let metadata = message_metadata(request.message.as_deref())?;
        if payee.holder.user_id == principal.user_id {
            return Err(PayError::Invalid("you cannot pay yourself"));
        }
        let (payer_holder, payer_wallet, payee_wallet) = self
            .p2p_wallets(principal, &payee, request.currency)
            .await?;
        if let Some(done) = self.store.transfer(id).await? {
            let outcome = self
                .replayed_transfer(done, &payer_wallet, &payee_wallet, request, &payee)
                .await?;
            // The first attempt may have died between the ledger's commit and its answer:
            // what it would have written after the commit is written now, once.
            if !self.may_recover(&outcome.transfer) {
                return Ok(outcome);
            }
            self.remember_payee(&principal.user_id, payee_wallet.account)
                .await?;
            let parties = p2p_parties(principal, client, id, &payee, request);
            let action = match outcome.status {
                "held" => koban_risk::Action::Hold,
                _ => koban_risk::Action::Allow,
            };
            self.recover_decision(EventKind::P2p, &parties, &outcome.transfer, action)
                .await?;
            self.tell_p2p(principal, &payer_holder, &payee, request, &outcome);
            self.make_durable().await?;
            return Ok(outcome);
        }
        // The payee's too: its balance cap is checked and filled in one step as well.
        let wallet_locks = self
            .lock_wallets(payer_wallet.account, payee_wallet.account)
            .await?;
        self.still_signed_in(principal).await?;
        let payer = self.ledger_account(payer_wallet.account).await?;
        let payee_account = self.ledger_account(payee_wallet.account).await?;
        if !payer.balance.covers(request.amount) {
            return Err(PayError::InsufficientFunds);
        }
        self.check_balance_cap(&payee.holder, &payee_account, request.amount)?;
        let event = self
            .p2p_event(
                principal,
                &payer_holder,
                &payer,
                &payee_account,
                request.amount,
            )
            .await?;
        let (decision, session) = self
            .assess_p2p(principal, id, &payee, request, &event, (proof, client))
            .await?;
        let wallets = (&payer_wallet, &payee_wallet);
        let (transfer, status) = self
            .move_or_hold(decision, principal, id, wallets, request, metadata)
            .await?;
        if event.payee_new {
            self.remember_payee(&principal.user_id, payee_wallet.account)
                .await?;
        }
        // The wallets' next movements may be decided while this one's records are written.
        drop(wallet_locks);
        let outcome = P2pOutcome {
            transfer,
            status,
            payee_masked_name: payee.masked_name.clone(),
            replayed: false,
            session,
        };
        self.tell_p2p(principal, &payer_holder, &payee, request, &outcome);
        self.make_durable().await?;
        Ok(outcome)
    }

    /// The risk decision on a transfer and, when the rules or the amount ask for it, the
    /// payer's step-up naming the payee as confirmation of payee showed them; answers the
    /// decision and the session a step-up rotated to.
    async fn assess_p2p(
        &self,
        principal: &Principal,
        id: TransferId,
        payee: &Payee,
        request: &P2pRequest,
        event: &RiskEvent,
        (proof, client): (Option<&StepUpProof>, &Client),
    ) -> Result<(Decision, Option<IssuedSession>), PayError> {
        let parties = p2p_parties(principal, client, id, payee, request);
        let decision = self.assess(event, &parties).await?;
        if !p2p_needs_step_up(decision, event, request)? {
            return Ok((decision, None));
        }
        let shown = format!("{} <{}>", payee.masked_name, payee.handle);
        let amount = request.amount.to_i64();
        let session = self
            .confirm_payment(principal, amount, request.currency, shown, proof, client)
            .await?;
        Ok((decision, Some(session)))
    }

    /// Moves the money to the payee now, or into review when the decision holds it; with the
    /// status the payer is told (`completed` or `held`).
    async fn move_or_hold(
        &self,
        decision: Decision,
        principal: &Principal,
        id: TransferId,
        (payer_wallet, payee_wallet): (&Wallet, &Wallet),
        request: &P2pRequest,
        metadata: Metadata,
    ) -> Result<(Transfer, &'static str), PayError> {
        if decision == Decision::Hold {
            let transfer = self
                .hold_for_review(principal, id, payer_wallet, payee_wallet, request, metadata)
                .await?;
            Ok((transfer, "held"))
        } else {
            let batch = p2p_move(id, payer_wallet, payee_wallet, request, metadata);
            let applied = self.submit_batch(batch).await?;
            Ok((applied.transfers[0].clone(), "completed"))
        }
    }

    /// The payer (as a holder) and both wallets of a transfer, opened if need be.
    async fn p2p_wallets(
        &self,
        principal: &Principal,
        payee: &Payee,
        currency: Currency,
    ) -> Result<(Holder, Wallet, Wallet), PayError> {
        let (payer_holder, payer_account) = self
            .party(PartyKey::Id(&principal.user_id), currency)
            .await?
            .ok_or(PayError::NotFound)?;
        let payer_wallet = self
            .wallet_from(&payer_holder, payer_account, currency)
            .await?;
        let payee_wallet = self
            .wallet_from(&payee.holder, payee.account, currency)
            .await?;
        Ok((payer_holder, payer_wallet, payee_wallet))
    }

    /// The risk context of a transfer: the payer's day, whether the payee is new to them, the
    /// payee account's age and (only when it could matter) what was paid to it today.
    async fn p2p_event(
        &self,
        principal: &Principal,
        payer_holder: &Holder,
        payer: &Account,
        payee_account: &Account,
        amount: Amount,
    ) -> Result<RiskEvent, PayError> {
        let (spent_today, known) = self
            .spent_today_and_known(payer, Some((&principal.user_id, payee_account.id)))
            .await?;
        let mut event = self.risk_event(
            payer_holder.tier,
            principal.cooling_off_until_ms,
            EventKind::P2p,
            Some(amount),
            spent_today,
        );
        event.payee_new = !known;
        let now_ms = self.now_ms();
        let created_ms =
            i64::try_from(payee_account.created_at.nanos() / 1_000_000).map_err(|_| {
                PayError::Auth(koban_auth::AuthError::Internal(
                    "a stored time is out of range",
                ))
            })?;
        event.payee_account_age_s = Some(now_ms.saturating_sub(created_ms).max(0) / 1000);
        // Only a payer who sent more than the per-payee cap today could be over it.
        if event.spent_today.saturating_add(amount.minor_units()) > event.per_payee_daily_max {
            let midnight_ms = now_ms - now_ms.rem_euclid(DAY_MS);
            let midnight_ns = u64::try_from(midnight_ms)
                .map_err(|_| {
                    PayError::Auth(koban_auth::AuthError::Internal("the clock is before 1970"))
                })?
                .saturating_mul(1_000_000);
            event.paid_to_payee_today = self
                .paid_today_to(payer.id, payee_account.id, midnight_ns)
                .await?;
        }
        Ok(event)
    }

    /// Records that this payer has now paid this payee (no longer a new payee).
    async fn remember_payee(&self, user_id: &str, payee: AccountId) -> Result<(), PayError> {
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO payees (user_id, payee_account, first_paid_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, payee_account) DO NOTHING",
            params![user_id, payee.to_bytes(), self.now_ms()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Tells the payer (sent, or held for review) and, once it arrived, the payee.
    fn tell_p2p(
        &self,
        principal: &Principal,
        payer_holder: &Holder,
        payee: &Payee,
        request: &P2pRequest,
        outcome: &P2pOutcome,
    ) {
        let money = format_money(request.amount.minor_units(), request.currency);
        let id = outcome.transfer.id;
        if outcome.status == "held" {
            self.notify(
                id,
                &principal.email,
                Mail::new("transfer-held")
                    .arg("amount", &money)
                    .arg("payee", &payee.masked_name),
            );
            return;
        }
        self.notify(
            id,
            &principal.email,
            Mail::new("money-sent")
                .arg("amount", &money)
                .arg("payee", &payee.masked_name),
        );
        self.notify(
            id,
            &payee.holder.email,
            Mail::new("money-received")
                .arg("amount", &money)
                .arg("payer", mask_name(&payer_holder.display_name)),
        );
    }

    async fn replayed_transfer(
        &self,
        done: Transfer,
        payer: &Wallet,
        payee: &Wallet,
        request: &P2pRequest,
        shown: &Payee,
    ) -> Result<P2pOutcome, PayError> {
        let held = done.credit == IssuerAccount::Suspense.id(request.currency);
        let to_payee = if held {
            let mut tx = self.db().begin_read().await?;
            let row = tx
                .query_opt(
                    "SELECT payee_account FROM held_transfers WHERE pending_id = $1",
                    params![done.id.to_bytes()],
                )
                .await?;
            tx.commit().await?;
            match row {
                Some(row) => row.bytes(0)? == payee.account.to_bytes(),
                None => false,
            }
        } else {
            done.credit == payee.account
        };
        if done.debit != payer.account || done.amount != request.amount || !to_payee {
            return Err(PayError::IdempotencyMismatch);
        }
        Ok(P2pOutcome {
            status: if held { "held" } else { "completed" },
            transfer: done,
            payee_masked_name: shown.masked_name.clone(),
            replayed: true,
            session: None,
        })
    }

    /// Reserves the amount from the payer into suspense and queues it for an analyst.
    async fn hold_for_review(
        &self,
        principal: &Principal,
        id: TransferId,
        payer: &Wallet,
        payee: &Wallet,
        request: &P2pRequest,
        metadata: Metadata,
    ) -> Result<Transfer, PayError> {
        let now = self.now_ms();
        // The review row first: if the process dies before the hold is made, an analyst sees
        // a row whose hold does not exist and can only void it.
        let mut tx = self.db().begin().await?;
        let inserted = tx.execute(
            "INSERT INTO held_transfers (pending_id, payer_user, payer_account, payee_account, amount, \
             currency, reason, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'review', 'held', $7) \
             ON CONFLICT (pending_id) DO NOTHING",
            params![
                id.to_bytes(),
                principal.user_id.as_str(),
                payer.account.to_bytes(),
                payee.account.to_bytes(),
                request.amount.to_i64(),
                request.currency.code(),
                now
            ],
        )
        .await?;
        tx.commit().await?;
        let batch = vec![TransferRequest::Move(Move {
            id,
            debit: payer.account,
            credit: IssuerAccount::Suspense.id(request.currency),
            amount: request.amount,
            currency: request.currency,
            code: kind::REVIEW_HOLD,
            reference: None,
            metadata,
            pending: Some(PendingOptions {
                timeout_s: Some(REVIEW_HOLD_S),
            }),
        })];
        match self.submit(batch).await? {
            Ok(applied) => Ok(applied.transfers[0].clone()),
            Err(rejection) if inserted == 1 => {
                // Only the row this request wrote: another try's row may stand for a hold
                // that did go through.
                let mut tx = self.db().begin().await?;
                tx.execute(
                    "DELETE FROM held_transfers WHERE pending_id = $1 AND status = 'held'",
                    params![id.to_bytes()],
                )
                .await?;
                tx.commit().await?;
                Err(crate::ledger_refusal(rejection.reason))
            }
            Err(rejection) => Err(crate::ledger_refusal(rejection.reason)),
        }
    }
}

/// The one movement of a transfer: the amount, as parsed, from wallet to wallet.
fn p2p_move(
    id: TransferId,
    payer: &Wallet,
    payee: &Wallet,
    request: &P2pRequest,
    metadata: Metadata,
) -> Vec<TransferRequest> {
    vec![TransferRequest::Move(Move {
        id,
        debit: payer.account,
        credit: payee.account,
        amount: request.amount,
        currency: request.currency,
        code: kind::P2P,
        reference: None,
        metadata,
        pending: None,
    })]
}

/// Whether the payer must confirm with step-up: a challenge always; a hold for a new payee or
/// a large amount. A refusal by a limit names the limit (the payer can act on it); any other
/// refusal does not say which rule refused.
fn p2p_needs_step_up(
    decision: Decision,
    event: &RiskEvent,
    request: &P2pRequest,
) -> Result<bool, PayError> {
    match decision {
        Decision::Deny { code } => Err(match code {
            "daily_limit" | "cooling_off_limit" | "payee_limit" => PayError::Limit {
                code,
                detail: limit_detail(code, event, request.currency),
            },
            _ => PayError::Declined { code },
        }),
        Decision::Challenge => Ok(true),
        Decision::Hold => Ok(event.payee_new || request.amount.minor_units() >= event.step_up_from),
        Decision::Allow => Ok(false),
    }
}

fn limit_detail(code: &str, event: &RiskEvent, currency: Currency) -> String {
    match code {
        "daily_limit" => format!(
            "this would exceed your daily limit of {} (sent today: {})",
            format_money(event.daily_out_max, currency),
            format_money(event.spent_today, currency)
        ),
        "cooling_off_limit" => format!(
            "after a recent change to your sign-in details, at most {} may leave your wallet for now",
            format_money(event.cooling_off_max.unwrap_or(0), currency)
        ),
        _ => format!(
            "this would exceed the daily limit of {} to one payee",
            format_money(event.per_payee_daily_max, currency)
        ),
    }
}

/// The parties of a transfer's risk decision: the same for its assessment and for a retry
/// that writes a lost decision again, so both name one record.
fn p2p_parties(
    principal: &Principal,
    client: &Client,
    id: TransferId,
    payee: &Payee,
    request: &P2pRequest,
) -> Parties {
    Parties::payment(
        &principal.user_id,
        Some(client),
        id,
        &payee.holder.user_id,
        request.currency,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_refuse_controls_and_direction_overrides() {
        assert!(message_metadata(Some("ランチ代 ありがとう")).is_ok());
        assert!(message_metadata(None).is_ok());
        assert!(message_metadata(Some("pay \u{202E}0001\u{202C} back")).is_err());
        assert!(message_metadata(Some("a\u{2066}b")).is_err());
        assert!(message_metadata(Some("line\nbreak")).is_err());
        assert!(
            message_metadata(Some(&"あ".repeat(47))).is_err(),
            "141 bytes"
        );
    }
}
