//! The card network's side of issued cards: authorization, incremental authorization,
//! reversal, clearing (capture, several for split shipments) and refund, with ISO 8583
//! response codes; stale authorizations expire; card testing is throttled per card and across
//! cards.
//!
//! Every approved authorization is a ledger hold from the wallet to the issuer's card-network
//! settlement account (with its e-money memo leg, also pending); clearing posts it, a reversal
//! voids it, and the ledger's own hold timeout releases a stale one. An authorization always
//! has exactly one open hold: an increment, a partial reversal or a partial capture replaces it
//! in the same atomic batch. Ledger ids derive from the network's ids for each message, so a
//! retried message is a ledger replay; the message's row then answers it.
//!
//! The risk hook ([`koban_pay::Payments::assess`]) decides every authorization and increment.

use koban_shared::mail::Mail;

use koban_auth::{AuthError, Secret};
use koban_ledger::{
    AccountId, Amount, Currency, Metadata, Move, PendingOptions, RejectReason, TransferId,
    TransferRequest,
};
use koban_shared::audit::{self, AuditEvent};
use koban_store::sql::{Row, SqlDb, SqlTx, SqlTxExt};
use koban_store::{LedgerStore, params};

use crate::Cards;
use crate::card_keys::CardKeys;
use crate::issuing::{CardControls, luhn_valid};
use koban_pay::accounts::{IssuerAccount, kind};
use koban_pay::risk::{Decision, EventKind, Parties};
use koban_pay::wallets::{DAY_MS, Tier, emoney_leg};
use koban_pay::{PayError, format_money, minor_to_i64, stored_minor};

/// ISO 8583 response codes Koban answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseCode {
    Approved,
    DoNotHonour,
    InvalidTransaction,
    InvalidAmount,
    InvalidCard,
    InsufficientFunds,
    ExpiredCard,
    NotPermitted,
    OverLimit,
    RestrictedCard,
    NotActivated,
    WrongSecurityCode,
}

impl ResponseCode {
    pub fn code(self) -> &'static str {
        match self {
            ResponseCode::Approved => "00",
            ResponseCode::DoNotHonour => "05",
            ResponseCode::InvalidTransaction => "12",
            ResponseCode::InvalidAmount => "13",
            ResponseCode::InvalidCard => "14",
            ResponseCode::InsufficientFunds => "51",
            ResponseCode::ExpiredCard => "54",
            ResponseCode::NotPermitted => "57",
            ResponseCode::OverLimit => "61",
            ResponseCode::RestrictedCard => "62",
            ResponseCode::NotActivated => "78",
            ResponseCode::WrongSecurityCode => "N7",
        }
    }

    /// A short reason for the merchant's receipt; never names a risk rule.
    pub fn reason(self) -> &'static str {
        match self {
            ResponseCode::Approved => "approved",
            ResponseCode::DoNotHonour => "do_not_honour",
            ResponseCode::InvalidTransaction => "invalid_transaction",
            ResponseCode::InvalidAmount => "invalid_amount",
            ResponseCode::InvalidCard => "invalid_card",
            ResponseCode::InsufficientFunds => "insufficient_funds",
            ResponseCode::ExpiredCard => "expired_card",
            ResponseCode::NotPermitted => "not_permitted",
            ResponseCode::OverLimit => "exceeds_limit",
            ResponseCode::RestrictedCard => "restricted_card",
            ResponseCode::NotActivated => "card_not_activated",
            ResponseCode::WrongSecurityCode => "security_code_mismatch",
        }
    }

    fn from_code(code: &str) -> ResponseCode {
        [
            ResponseCode::Approved,
            ResponseCode::DoNotHonour,
            ResponseCode::InvalidTransaction,
            ResponseCode::InvalidAmount,
            ResponseCode::InvalidCard,
            ResponseCode::InsufficientFunds,
            ResponseCode::ExpiredCard,
            ResponseCode::NotPermitted,
            ResponseCode::OverLimit,
            ResponseCode::RestrictedCard,
            ResponseCode::NotActivated,
            ResponseCode::WrongSecurityCode,
        ]
        .into_iter()
        .find(|c| c.code() == code)
        .unwrap_or(ResponseCode::DoNotHonour)
    }
}

/// Signatures of network requests seen within the accepted clock skew, to refuse a replay.
/// Oldest first, so forgetting is amortised O(1) per request however fast requests come.
#[derive(Default)]
pub(crate) struct ReplayCache {
    order: std::collections::VecDeque<(i64, [u8; 32])>,
    seen: std::collections::HashSet<[u8; 32]>,
}

impl ReplayCache {
    /// Records `digest` at `now_s`; false when it was seen in the last `keep_s` seconds.
    fn first_time(&mut self, digest: [u8; 32], now_s: i64, keep_s: i64) -> bool {
        while let Some((at, old)) = self.order.front() {
            if *at > now_s - keep_s {
                break;
            }
            self.seen.remove(old);
            self.order.pop_front();
        }
        if !self.seen.insert(digest) {
            return false;
        }
        self.order.push_back((now_s, digest));
        true
    }
}

/// How the card is presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Online,
    InStore,
    Atm,
}

impl Channel {
    pub fn parse(text: &str) -> Result<Channel, PayError> {
        match text {
            "online" => Ok(Channel::Online),
            "in_store" => Ok(Channel::InStore),
            "atm" => Ok(Channel::Atm),
            _ => Err(PayError::Invalid("channel is online, in_store or atm")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Online => "online",
            Channel::InStore => "in_store",
            Channel::Atm => "atm",
        }
    }
}

/// An authorization request as the network sends it.
pub struct AuthorizationRequest {
    /// The network's unique reference for this authorization (its retries carry the same).
    pub network_ref: String,
    pub pan: Secret<String>,
    pub exp_month: i64,
    pub exp_year: i64,
    /// Required online; not sent in store or at an ATM (the chip proves the card there).
    pub security_code: Option<Secret<String>>,
    pub amount: i64,
    pub currency: String,
    pub merchant_id: String,
    pub merchant_name: String,
    pub mcc: String,
    pub country: String,
    pub channel: Channel,
    /// The shopper's network address as the acquirer saw it (online), for card-testing checks.
    pub client_ip: Option<String>,
}

/// The answer to any network message.
#[derive(Clone, Debug)]
pub struct NetworkAnswer {
    pub approved: bool,
    pub response_code: ResponseCode,
    /// `None` only when the card could not be identified.
    pub authorization_id: Option<String>,
    /// `approved`, `closed`, `reversed`, `expired` or `declined`.
    pub status: String,
    pub held: u64,
    pub captured: u64,
    pub refunded: u64,
    pub currency: Option<Currency>,
    pub replayed: bool,
}

impl NetworkAnswer {
    /// A new authorization approved: `amount` held, nothing captured yet.
    fn approved(auth_id: &str, amount: Amount, currency: Currency) -> NetworkAnswer {
        NetworkAnswer {
            approved: true,
            response_code: ResponseCode::Approved,
            authorization_id: Some(auth_id.to_owned()),
            status: "approved".into(),
            held: amount.minor_units(),
            captured: 0,
            refunded: 0,
            currency: Some(currency),
            replayed: false,
        }
    }

    fn declined(code: ResponseCode, authorization_id: Option<String>) -> NetworkAnswer {
        NetworkAnswer {
            approved: false,
            response_code: code,
            authorization_id,
            status: "declined".into(),
            held: 0,
            captured: 0,
            refunded: 0,
            currency: None,
            replayed: false,
        }
    }
}

/// Window in which failures across cards are counted, and how long a key stays blocked.
pub const CARD_TESTING_WINDOW_MS: i64 = 10 * 60 * 1000;
pub const CARD_TESTING_BLOCK_MS: i64 = 15 * 60 * 1000;
/// What one authorization row holds.
struct AuthRow {
    id: String,
    card_id: String,
    status: String,
    response_code: String,
    held: u64,
    captured: u64,
    refunded: u64,
    currency: Currency,
    hold_id: Option<TransferId>,
    memo_id: Option<TransferId>,
    expires_at: i64,
    wallet: AccountId,
    user_id: String,
    email: String,
    merchant_name: String,
}

impl AuthRow {
    fn answer(&self, replayed: bool) -> NetworkAnswer {
        NetworkAnswer {
            approved: self.status != "declined",
            response_code: ResponseCode::from_code(&self.response_code),
            authorization_id: Some(self.id.clone()),
            status: self.status.clone(),
            held: self.held,
            captured: self.captured,
            refunded: self.refunded,
            currency: Some(self.currency),
            replayed,
        }
    }
}

fn transfer_id(bytes: Option<Vec<u8>>) -> Result<Option<TransferId>, PayError> {
    bytes
        .map(|b| {
            TransferId::from_bytes(&b)
                .map_err(|_| PayError::Auth(AuthError::Internal("a stored id is malformed")))
        })
        .transpose()
}

/// Checks an authorization request's fields; answers its amount, currency and the keys the
/// card-testing guard counts it under (its merchant, and its client network when given).
fn parse_authorization(
    request: &AuthorizationRequest,
) -> Result<(Amount, Currency, Vec<String>), PayError> {
    network_id(
        &request.network_ref,
        "network_ref is 1 to 64 printable characters",
    )?;
    text_field(
        &request.merchant_id,
        64,
        "merchant_id is 1 to 64 characters",
    )?;
    text_field(
        &request.merchant_name,
        64,
        "merchant_name is 1 to 64 characters",
    )?;
    if request.mcc.len() != 4 || !request.mcc.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PayError::Invalid("mcc is a 4-digit merchant category code"));
    }
    if request.country.len() != 2 || !request.country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(PayError::Invalid("country is an ISO 3166 alpha-2 code"));
    }
    let amount = koban_pay::parse_amount(request.amount)?;
    let currency = Currency::parse(&request.currency)
        .map_err(|_| PayError::Invalid("currency is an ISO 4217 code"))?;
    let mut guard_keys = vec![format!("merchant:{}", request.merchant_id)];
    if let Some(ip) = &request.client_ip {
        text_field(ip, 64, "client_ip is at most 64 characters")?;
        guard_keys.push(format!("ip:{ip}"));
    }
    Ok((amount, currency, guard_keys))
}

/// An approved authorization, as its row records it.
struct Approval<'a> {
    auth_id: &'a str,
    card_id: &'a str,
    hold_id: TransferId,
    memo_id: TransferId,
    amount: Amount,
    currency: Currency,
    expires_at: i64,
}

/// Checks the card data a message presents: the expiry, and the security code (required
/// online). One answer for a wrong code and a wrong expiry whenever a code is expected, so
/// neither can be guessed apart from the other.
fn card_data_check(
    request: &AuthorizationRequest,
    keys: &CardKeys,
    (exp_month, exp_year): (i64, i64),
) -> Result<(), ResponseCode> {
    let pan = request.pan.expose();
    let code_ok = match (&request.security_code, request.channel) {
        (Some(code), _) => koban_auth::secret::constant_time_eq(
            code.expose().as_bytes(),
            keys.security_code(pan, exp_month, exp_year)
                .expose()
                .as_bytes(),
        ),
        (None, Channel::Online) => false,
        (None, _) => true,
    };
    let expiry_ok = (request.exp_month, request.exp_year) == (exp_month, exp_year);
    if expiry_ok && code_ok {
        Ok(())
    } else if expiry_ok || request.security_code.is_some() || request.channel == Channel::Online {
        Err(ResponseCode::WrongSecurityCode)
    } else {
        Err(ResponseCode::ExpiredCard)
    }
}

/// What a card hold's ledger entry tells of its purchase: the card, the merchant and its
/// category, and the authorization.
fn authorization_metadata(
    request: &AuthorizationRequest,
    auth_id: &str,
    card_id: &str,
) -> Metadata {
    Metadata::parse([
        ("card", card_id),
        ("merchant", request.merchant_name.as_str()),
        ("mcc", request.mcc.as_str()),
        ("authorization", auth_id),
    ])
    .unwrap_or_default()
}

/// The card an authorization's number belongs to, as read with it
/// ([`Cards::authorization_and_card`]).
struct CardOnFile {
    id: String,
    wallet: AccountId,
    state: CardState,
    /// Wrong security codes or expiry dates in a row.
    bad_codes: i64,
    controls: CardControls,
    /// The holder's e-mail and the card's last four digits, for the notice.
    email: String,
    last4: String,
    /// What deciding the spend needs: the holder's tier, the end of a cooling-off, and the
    /// wallet's out-flow at the start of the day.
    spend: (Tier, Option<i64>, Option<u64>),
}

impl CardOnFile {
    fn from_row(vault: &koban_shared::personal::Vault, card: &Row) -> Result<Self, PayError> {
        let wallet = AccountId::from_bytes(&card.bytes(2)?)
            .map_err(|_| PayError::Auth(AuthError::Internal("a stored id is malformed")))?;
        let currency = Currency::parse(&card.text(3)?)
            .map_err(|_| PayError::Auth(AuthError::Internal("unknown stored currency")))?;
        let tier = if card.opt_text(15)?.as_deref() == Some("approved") {
            Tier::Verified
        } else {
            Tier::Unverified
        };
        let day_start = card.opt_i64(16)?.map(stored_minor).transpose()?;
        Ok(CardOnFile {
            id: card.text(0)?,
            wallet,
            state: CardState {
                status: card.text(6)?,
                expiry: (card.i64(5)?, card.i64(4)?),
                frozen: card.bool(7)? || card.bool(8)? || card.text(12)? != "active",
                currency,
            },
            bad_codes: card.i64(9)?,
            controls: CardControls::from_json(&card.text(10)?)?,
            email: vault.open(&koban_shared::personal::USER_EMAIL, &card.text(11)?)?,
            last4: card.text(14)?,
            spend: (tier, card.opt_i64(13)?, day_start),
        })
    }
}

/// What an authorization checks of a card once its data (number, expiry, code) matched.
struct CardState {
    /// `inactive`, `active` or `closed`.
    status: String,
    /// (year, month) the card works until the end of.
    expiry: (i64, i64),
    /// Frozen by its holder or an operator, or its holder's account is not active.
    frozen: bool,
    currency: Currency,
}

impl CardState {
    /// The card's state, then the holder's controls: the first that refuses this purchase.
    fn refusal(
        &self,
        request: &AuthorizationRequest,
        controls: &CardControls,
        amount: Amount,
        currency: Currency,
        now: i64,
    ) -> Result<(), ResponseCode> {
        let channel_on = match request.channel {
            Channel::Online => controls.channels.online,
            Channel::InStore => controls.channels.in_store,
            Channel::Atm => controls.channels.atm,
        };
        if self.status == "closed" {
            Err(ResponseCode::InvalidCard)
        } else if self.expiry < koban_pay::year_month(now) {
            Err(ResponseCode::ExpiredCard)
        } else if self.status != "active" {
            Err(ResponseCode::NotActivated)
        } else if self.frozen {
            Err(ResponseCode::RestrictedCard)
        } else if currency != self.currency
            || !channel_on
            || controls.blocked_mccs.contains(&request.mcc)
        {
            Err(ResponseCode::NotPermitted)
        } else if controls
            .allowed_countries
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(&request.country))
        {
            Err(ResponseCode::RestrictedCard)
        } else if controls
            .per_transaction_max
            .is_some_and(|max| amount.minor_units() > max)
        {
            Err(ResponseCode::OverLimit)
        } else {
            Ok(())
        }
    }
}

/// A network id (reference, clearing id ...): 1 to 64 printable ASCII characters.
fn network_id(text: &str, what: &'static str) -> Result<(), PayError> {
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PayError::Invalid(what));
    }
    Ok(())
}

fn text_field(text: &str, max: usize, what: &'static str) -> Result<(), PayError> {
    if text.is_empty() || text.len() > max || text.chars().any(char::is_control) {
        return Err(PayError::Invalid(what));
    }
    Ok(())
}

impl<S: LedgerStore> Cards<S> {
    /// Checks a network request's signature and freshness, and refuses a replay of one this
    /// instance has seen. Ledger ids derived from the network's references make a replay
    /// harmless across instances too.
    pub fn verify_network_request(
        &self,
        network_id: &str,
        timestamp: i64,
        signature: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(), PayError> {
        let keys = self.card_keys()?;
        let unauthenticated = PayError::Auth(AuthError::Unauthenticated);
        if network_id != keys.network_id()
            || !crate::card_keys::network_signature_ok(
                keys.network_secret(),
                timestamp,
                method,
                path,
                body,
                signature,
            )
        {
            return Err(unauthenticated);
        }
        let now_s = self.pay.now_ms().div_euclid(1000);
        if (now_s - timestamp).abs() > NETWORK_CLOCK_SKEW_S {
            return Err(PayError::Invalid(
                "the request's timestamp is more than 5 minutes from the server's clock",
            ));
        }
        let digest = self.pay.auth().keys().hash(
            koban_auth::secret::HashPurpose::Payment,
            &[b"network-request", signature.trim().as_bytes()],
        );
        let fresh = self
            .network_seen
            .lock()
            .map_err(|_| PayError::Auth(AuthError::Internal("a lock was poisoned")))?
            .first_time(digest, now_s, 2 * NETWORK_CLOCK_SKEW_S + 1);
        if !fresh {
            return Err(PayError::Conflict(
                "this request was already received (replay)",
            ));
        }
        Ok(())
    }

    fn auth_id(&self, network_ref: &str) -> String {
        let id = self.pay.derive_id(&[b"card-auth", network_ref.as_bytes()]);
        format!("ca_{:032x}", id.get())
    }

    /// Decides one authorization.
    pub async fn authorize_card(
        &self,
        request: &AuthorizationRequest,
    ) -> Result<NetworkAnswer, PayError> {
        let keys = self.card_keys()?;
        let (amount, currency, guard_keys) = parse_authorization(request)?;
        let now = self.pay.now_ms();
        let auth_id = self.auth_id(&request.network_ref);
        let pan = request.pan.expose();
        if !(12..=19).contains(&pan.len()) || !luhn_valid(pan) {
            metrics::counter!("koban_card_authorizations_total", "result" => "14").increment(1);
            return Ok(NetworkAnswer::declined(ResponseCode::InvalidCard, None));
        }
        let fingerprint = self.pan_fingerprint(pan);
        let card_key = u64::from_be_bytes(fingerprint[..8].try_into().unwrap_or([0; 8]));
        // Held until a wrong code is counted, or a right one has reset the count.
        let card_lock = self.lock_card(card_key, &fingerprint).await?;
        let (existing, card) = self
            .authorization_and_card(&auth_id, fingerprint, now)
            .await?;
        if let Some(row) = existing {
            self.tell_again(&row, card.as_ref()).await?;
            return Ok(row.answer(true));
        }
        if self.testing_blocked(&guard_keys, now).await? {
            metrics::counter!("koban_card_authorizations_total", "result" => "05").increment(1);
            return Ok(NetworkAnswer::declined(ResponseCode::DoNotHonour, None));
        }
        let Some(card) = card else {
            self.card_check_failed(&guard_keys, card_key, None, now)
                .await?;
            metrics::counter!("koban_card_authorizations_total", "result" => "14").increment(1);
            return Ok(NetworkAnswer::declined(ResponseCode::InvalidCard, None));
        };
        let card = CardOnFile::from_row(self.pay.auth().vault(), &card)?;
        let guard = (guard_keys.as_slice(), card_key);
        let checked = self
            .check_card(request, keys, &card, guard, (amount, currency), now)
            .await?;
        if let Err(code) = checked {
            return self.decline(&auth_id, &card.id, request, code, now).await;
        }
        drop(card_lock);
        self.spend_on_card(request, &auth_id, &card, (amount, currency), now)
            .await
    }

    /// Card data first (counted across cards when wrong; the count reset once all is right),
    /// then the card's state, then the holder's controls: the first that refuses.
    async fn check_card(
        &self,
        request: &AuthorizationRequest,
        keys: &CardKeys,
        card: &CardOnFile,
        (guard_keys, card_key): (&[String], u64),
        (amount, currency): (Amount, Currency),
        now: i64,
    ) -> Result<Result<(), ResponseCode>, PayError> {
        if card.bad_codes >= self.config.bad_codes_max {
            return Ok(Err(ResponseCode::RestrictedCard));
        }
        let (year, month) = card.state.expiry;
        if let Err(code) = card_data_check(request, keys, (month, year)) {
            self.card_check_failed(guard_keys, card_key, Some(&card.id), now)
                .await?;
            return Ok(Err(code));
        }
        let refusal = card
            .state
            .refusal(request, &card.controls, amount, currency, now);
        if refusal.is_ok() && card.bad_codes > 0 {
            let mut tx = self.pay.db().begin().await?;
            tx.execute(
                "UPDATE issued_cards SET bad_codes = 0 WHERE id = $1",
                params![card.id.as_str()],
            )
            .await?;
            tx.commit().await?;
        }
        Ok(refusal)
    }

    /// Decides a purchase on a checked card against its wallet and the holder's limits,
    /// holds the amount, and records the approval; or declines.
    async fn spend_on_card(
        &self,
        request: &AuthorizationRequest,
        auth_id: &str,
        card: &CardOnFile,
        (amount, currency): (Amount, Currency),
        now: i64,
    ) -> Result<NetworkAnswer, PayError> {
        let hold_id = self.pay.derive_id(&[b"card-hold", auth_id.as_bytes()]);
        let memo_id = self.pay.derive_id(&[b"card-hold-memo", auth_id.as_bytes()]);
        let _claim = self.pay.claim(hold_id).await?;
        let lock = self.pay.lock_wallet(card.wallet).await?;
        // A hold without its authorization row: an earlier attempt died between the two. It
        // was decided then; the network's retry records the approval instead of deciding
        // again (a second decision could decline money already held).
        if self.pay.store().transfer(hold_id).await?.is_none() {
            let decided = self
                .decide_card_spend(
                    &card.id,
                    card.spend,
                    card.wallet,
                    &card.controls,
                    amount,
                    now,
                )
                .await?;
            if let Err(code) = decided {
                return self.decline(auth_id, &card.id, request, code, now).await;
            }
        }
        let timeout = self.config.auth_expiry_s;
        let metadata = authorization_metadata(request, auth_id, &card.id);
        let batch = self.hold_batch(
            hold_id,
            memo_id,
            card.wallet,
            amount,
            currency,
            timeout,
            metadata,
        );
        if let Err(code) = self.place_hold(batch).await? {
            return self.decline(auth_id, &card.id, request, code, now).await;
        }
        // The hold is durable and counted in the wallet's balance: the next spend from this
        // wallet may be decided now. Only a card daily limit, summed from authorization
        // rows, needs the lock until this one's row is written.
        if card.controls.daily_max.is_none() {
            drop(lock);
        }
        let approval = Approval {
            auth_id,
            card_id: &card.id,
            hold_id,
            memo_id,
            amount,
            currency,
            expires_at: now + timeout * 1000,
        };
        self.record_approval(request, &approval, now).await?;
        metrics::counter!("koban_card_authorizations_total", "result" => "00").increment(1);
        self.pay.notify(
            hold_id,
            &card.email,
            Mail::new("card-payment")
                .arg("last4", &card.last4)
                .arg("amount", format_money(amount.minor_units(), currency))
                .arg("merchant", &request.merchant_name),
        );
        self.records_written().await;
        Ok(NetworkAnswer::approved(auth_id, amount, currency))
    }

    /// A retried authorization answered from its row: its first attempt may have died after
    /// the row and before the cardholder's notice was written. A recent approval's notice is
    /// written again (its id is stable, so an existing one is not doubled).
    async fn tell_again(&self, row: &AuthRow, card: Option<&Row>) -> Result<(), PayError> {
        let (Some(hold_id), Some(card)) = (row.hold_id, card) else {
            return Ok(());
        };
        if row.status == "declined" {
            return Ok(());
        }
        let Some(hold) = self.pay.store().transfer(hold_id).await? else {
            return Ok(());
        };
        if !self.pay.may_recover(&hold) {
            return Ok(());
        }
        self.pay.notify(
            hold_id,
            &row.email,
            Mail::new("card-payment")
                .arg("last4", card.text(14)?)
                .arg(
                    "amount",
                    format_money(hold.amount.minor_units(), hold.currency),
                )
                .arg("merchant", &row.merchant_name),
        );
        self.records_written().await;
        Ok(())
    }

    /// Writes the notices and decisions queued with an approval or refund before the network
    /// is answered. The money has moved and the network retries an error as a decline, so a
    /// failed write is logged and left queued for the worker instead of failing the answer.
    async fn records_written(&self) {
        if let Err(error) = self.pay.make_durable().await {
            tracing::warn!(%error, "a card payment's notices and decision are still queued");
        }
    }

    /// Records the decline of a purchase on a known card, counts it, and answers it.
    async fn decline(
        &self,
        auth_id: &str,
        card_id: &str,
        request: &AuthorizationRequest,
        code: ResponseCode,
        now: i64,
    ) -> Result<NetworkAnswer, PayError> {
        self.record_declined(auth_id, card_id, request, code, now)
            .await?;
        metrics::counter!("koban_card_authorizations_total", "result" => code.code()).increment(1);
        Ok(NetworkAnswer::declined(code, Some(auth_id.to_owned())))
    }

    /// Reads a message's authorization, if it was answered before, and the card its number
    /// belongs to with what deciding needs (holder, KYC, the wallet's day), in one read.
    async fn authorization_and_card(
        &self,
        auth_id: &str,
        fingerprint: [u8; 32],
        now: i64,
    ) -> Result<(Option<AuthRow>, Option<Row>), PayError> {
        let mut tx = self.pay.db().begin_read().await?;
        let existing = self.auth_row(&mut tx, auth_id).await?;
        let card = tx
            .query_opt(
                "SELECT c.id, c.user_id, c.wallet_account, c.currency, c.exp_month, c.exp_year, c.status, \
                 c.frozen_by_holder, c.frozen_by_operator, c.bad_codes, c.controls, u.email, u.status, \
                 u.cooling_off_until, c.last4, k.status, d.debits_at_start \
                 FROM issued_cards c JOIN users u ON u.id = c.user_id \
                 LEFT JOIN kyc k ON k.user_id = c.user_id \
                 LEFT JOIN wallet_days d ON d.account_id = c.wallet_account AND d.day = $1 \
                 WHERE c.fingerprint = $2",
                params![now.div_euclid(DAY_MS), fingerprint],
            )
            .await?;
        tx.commit().await?;
        Ok((existing, card))
    }

    /// Writes an approved authorization's row (group commit), after its hold is durable.
    async fn record_approval(
        &self,
        request: &AuthorizationRequest,
        approval: &Approval<'_>,
        now: i64,
    ) -> Result<(), PayError> {
        self.pay
            .write_batched(
                "INSERT INTO card_authorizations (id, card_id, network_ref, status, response_code, amount, held, captured, refunded, \
                 currency, merchant_id, merchant_name, mcc, country, channel, hold_id, memo_id, created_at, expires_at, updated_at) \
                 VALUES ($1, $2, $3, 'approved', '00', $4, $4, 0, 0, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $13) \
                 ON CONFLICT (id) DO NOTHING",
                params![
                    approval.auth_id,
                    approval.card_id,
                    request.network_ref.as_str(),
                    approval.amount.to_i64(),
                    approval.currency.code(),
                    request.merchant_id.as_str(),
                    request.merchant_name.as_str(),
                    request.mcc.as_str(),
                    request.country.as_str(),
                    request.channel.as_str(),
                    approval.hold_id.to_bytes(),
                    approval.memo_id.to_bytes(),
                    now,
                    approval.expires_at
                ],
            )
            .await
    }

    /// Submits an authorization's hold; a refusal the network should hear as a response code
    /// (funds, a frozen or closed wallet) is answered as one, anything else is an error.
    async fn place_hold(
        &self,
        batch: Vec<TransferRequest>,
    ) -> Result<Result<(), ResponseCode>, PayError> {
        match self.pay.submit(batch).await? {
            Ok(_) => Ok(Ok(())),
            Err(refusal) => match refusal.reason {
                RejectReason::ExceedsCredits => Ok(Err(ResponseCode::InsufficientFunds)),
                RejectReason::DebitAccountFrozen | RejectReason::DebitAccountClosed => {
                    Ok(Err(ResponseCode::RestrictedCard))
                }
                other => Err(koban_pay::ledger_refusal(other)),
            },
        }
    }

    /// The money checks of a card spend (caller holds the wallet lock): funds, the card's
    /// daily limit, and the risk decision with the wallet's own limits.
    async fn decide_card_spend(
        &self,
        card_id: &str,
        (tier, cooling_off_until, day_start): (Tier, Option<i64>, Option<u64>),
        wallet: AccountId,
        controls: &CardControls,
        amount: Amount,
        now: i64,
    ) -> Result<Result<(), ResponseCode>, PayError> {
        let account = self.pay.ledger_account(wallet).await?;
        if !account.balance.covers(amount) {
            return Ok(Err(ResponseCode::InsufficientFunds));
        }
        if let Some(max) = controls.daily_max {
            let midnight = now.div_euclid(DAY_MS) * DAY_MS;
            let mut tx = self.pay.db().begin_read().await?;
            let today = tx
                .query_one(
                    "SELECT CAST(COALESCE(SUM(held + captured), 0) AS BIGINT) FROM card_authorizations \
                     WHERE card_id = $1 AND created_at >= $2 AND status IN ('approved', 'closed')",
                    params![card_id, midnight],
                )
                .await?
                .i64(0)?;
            tx.commit().await?;
            if stored_minor(today)?.saturating_add(amount.minor_units()) > max {
                return Ok(Err(ResponseCode::OverLimit));
            }
        }
        let spent_today = self.pay.spent_today_from(&account, day_start).await?;
        let mut event = self.pay.risk_event(
            tier,
            cooling_off_until,
            EventKind::CardAuthorization,
            Some(amount),
            spent_today,
        );
        // The network cannot ask the holder for step-up; the card's own controls and the
        // reveal behind step-up stand in for it.
        event.step_up_from = u64::MAX;
        let mut tx = self.pay.db().begin_read().await?;
        let holder = tx
            .query_opt(
                "SELECT user_id, currency FROM issued_cards WHERE id = $1",
                params![card_id],
            )
            .await?;
        tx.commit().await?;
        let (customer, currency) = match holder {
            Some(row) => (row.text(0)?, row.text(1)?),
            None => (String::new(), String::new()),
        };
        let parties = Parties {
            source: Some(format!("card:{card_id}")),
            currency,
            ..Parties::of(&customer, None)
        };
        Ok(match self.pay.assess(&event, &parties).await? {
            Decision::Allow | Decision::Challenge => Ok(()),
            Decision::Deny {
                code: "daily_limit" | "cooling_off_limit",
            } => Err(ResponseCode::OverLimit),
            Decision::Deny { .. } | Decision::Hold => Err(ResponseCode::DoNotHonour),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn hold_batch(
        &self,
        hold_id: TransferId,
        memo_id: TransferId,
        wallet: AccountId,
        amount: Amount,
        currency: Currency,
        timeout_s: i64,
        metadata: Metadata,
    ) -> Vec<TransferRequest> {
        let pending = Some(PendingOptions {
            timeout_s: Some(u32::try_from(timeout_s.max(1)).unwrap_or(u32::MAX)),
        });
        vec![
            TransferRequest::Move(Move {
                id: hold_id,
                debit: wallet,
                credit: IssuerAccount::CardNetworkSettlement.id(currency),
                amount,
                currency,
                code: kind::CARD_PAYMENT,
                reference: None,
                metadata,
                pending,
            }),
            emoney_leg(memo_id, currency, amount, false, Some(hold_id), pending),
        ]
    }

    async fn record_declined(
        &self,
        auth_id: &str,
        card_id: &str,
        request: &AuthorizationRequest,
        code: ResponseCode,
        now: i64,
    ) -> Result<(), PayError> {
        self.pay.write_batched(
            "INSERT INTO card_authorizations (id, card_id, network_ref, status, response_code, amount, held, captured, refunded, \
             currency, merchant_id, merchant_name, mcc, country, channel, created_at, expires_at, updated_at) \
             VALUES ($1, $2, $3, 'declined', $4, $5, 0, 0, 0, $6, $7, $8, $9, $10, $11, $12, $12, $12) \
             ON CONFLICT (id) DO NOTHING",
            params![
                auth_id,
                card_id,
                request.network_ref.as_str(),
                code.code(),
                request.amount,
                request.currency.as_str(),
                request.merchant_id.as_str(),
                request.merchant_name.as_str(),
                request.mcc.as_str(),
                request.country.as_str(),
                request.channel.as_str(),
                now
            ],
        )
        .await
    }

    /// A wrong security code or expiry, or an unknown card: counted on the card (it locks at
    /// the configured count) and across cards per merchant and network; crossing the
    /// threshold raises an alert in the audit log and declines what follows from there.
    async fn card_check_failed(
        &self,
        guard_keys: &[String],
        card_key: u64,
        card_id: Option<&str>,
        now: i64,
    ) -> Result<(), PayError> {
        let mut tx = self.pay.db().begin().await?;
        let crossed = self
            .record_testing_failure(&mut tx, guard_keys, card_key, now)
            .await?;
        if let Some(card_id) = card_id {
            tx.execute(
                "UPDATE issued_cards SET bad_codes = bad_codes + 1 WHERE id = $1",
                params![card_id],
            )
            .await?;
        }
        for key in &crossed {
            metrics::counter!("koban_card_testing_alerts_total").increment(1);
            tracing::warn!(source = %key, "card testing suspected: many different cards failed checks; declining from this source");
            // Shown to operators with the other security alerts (one per minute at most).
            tx.execute(
                "INSERT INTO security_alerts (id, kind, minute, observed, baseline, raised_at) \
                 VALUES ($1, 'card_testing', $2, $3, $3, $4) ON CONFLICT (kind, minute) DO NOTHING",
                params![
                    format!("alert_{}", uuid::Uuid::now_v7().simple()),
                    now.div_euclid(60_000),
                    i64::try_from(self.config.testing_cards_max).unwrap_or(i64::MAX),
                    now
                ],
            )
            .await?;
            audit::append(
                &mut tx,
                self.pay.auth().audit_key(),
                now,
                AuditEvent {
                    actor: "system:card-network",
                    action: "alert.card_testing",
                    subject: key,
                    details: serde_json::json!({
                        "window_s": CARD_TESTING_WINDOW_MS / 1000,
                        "blocked_for_s": CARD_TESTING_BLOCK_MS / 1000,
                        "cards_max": self.config.testing_cards_max,
                    }),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether a source (merchant or client network) is declined for card testing now, by
    /// any instance's count.
    async fn testing_blocked(&self, keys: &[String], now: i64) -> Result<bool, PayError> {
        let Some(first) = keys.first() else {
            return Ok(false);
        };
        // A source is a merchant and, when known, a network: one read for both.
        let second = keys.get(1).unwrap_or(first);
        let rows = self
            .pay
            .db()
            .read(
                "SELECT 1 FROM card_testing_blocks \
                 WHERE (source = $1 OR source = $2) AND blocked_until > $3",
                params![first.as_str(), second.as_str(), now],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Counts a failed card check against each source, in the caller's transaction: the
    /// distinct cards that failed from it within [`CARD_TESTING_WINDOW_MS`], every instance's
    /// together. A source that reaches the threshold is declined for [`CARD_TESTING_BLOCK_MS`];
    /// answers the sources that were not declined before. The source's row in
    /// `card_testing_blocks` is written first, so two instances counting one source take
    /// turns (a row lock on PostgreSQL; SQLite's writers take turns anyway).
    async fn record_testing_failure<T: SqlTx>(
        &self,
        tx: &mut T,
        keys: &[String],
        card_key: u64,
        now: i64,
    ) -> Result<Vec<String>, PayError> {
        let mut sources: Vec<&String> = keys.iter().collect();
        sources.sort();
        sources.dedup();
        let card = i64::from_be_bytes(card_key.to_be_bytes());
        let threshold = i64::try_from(self.config.testing_cards_max).unwrap_or(i64::MAX);
        let mut crossed = Vec::new();
        for source in sources {
            let until = tx
                .query_one(
                    "INSERT INTO card_testing_blocks (source, blocked_until) VALUES ($1, 0) \
                     ON CONFLICT (source) DO UPDATE SET blocked_until = card_testing_blocks.blocked_until \
                     RETURNING blocked_until",
                    params![source.as_str()],
                )
                .await?
                .i64(0)?;
            tx.execute(
                "DELETE FROM card_testing_failures WHERE source = $1 AND failed_at <= $2",
                params![source.as_str(), now - CARD_TESTING_WINDOW_MS],
            )
            .await?;
            tx.execute(
                "INSERT INTO card_testing_failures (source, card, failed_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (source, card) DO UPDATE SET failed_at = excluded.failed_at",
                params![source.as_str(), card, now],
            )
            .await?;
            let cards = tx
                .query_one(
                    "SELECT COUNT(*) FROM card_testing_failures WHERE source = $1",
                    params![source.as_str()],
                )
                .await?
                .i64(0)?;
            if cards >= threshold {
                tx.execute(
                    "UPDATE card_testing_blocks SET blocked_until = $1 WHERE source = $2",
                    params![now + CARD_TESTING_BLOCK_MS, source.as_str()],
                )
                .await?;
                if until <= now {
                    crossed.push(source.clone());
                }
            }
        }
        Ok(crossed)
    }

    /// Deletes card-testing failures older than the window and blocks that have ended, so
    /// the tables hold only what can still decide (sources come from the network's messages
    /// and are never otherwise removed).
    pub(crate) async fn forget_card_testing(&self, now: i64) -> Result<(), PayError> {
        let mut tx = self.pay.db().begin().await?;
        tx.execute(
            "DELETE FROM card_testing_failures WHERE failed_at <= $1",
            params![now - CARD_TESTING_WINDOW_MS],
        )
        .await?;
        tx.execute(
            "DELETE FROM card_testing_blocks WHERE blocked_until <= $1",
            params![now],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn auth_row<T: SqlTx>(&self, tx: &mut T, id: &str) -> Result<Option<AuthRow>, PayError> {
        let row = tx
            .query_opt(
                "SELECT a.id, a.card_id, a.status, a.response_code, a.held, a.captured, a.refunded, a.currency, \
                 a.hold_id, a.memo_id, a.expires_at, c.wallet_account, c.user_id, u.email, a.merchant_name \
                 FROM card_authorizations a JOIN issued_cards c ON c.id = a.card_id JOIN users u ON u.id = c.user_id \
                 WHERE a.id = $1",
                params![id],
            )
            .await?;
        row.map(|row| auth_from_row(self.pay.auth().vault(), &row))
            .transpose()
    }

    /// The open authorization an operation applies to, read afresh under its wallet's lock
    /// (returned with it); or the stored answer of an operation already done (a retry); or
    /// 12 when the authorization is no longer open (closed, reversed, past its expiry).
    async fn operation_start(
        &self,
        op_key: &str,
        authorization_id: &str,
    ) -> Result<Result<(AuthRow, koban_pay::WalletLock<'_>), NetworkAnswer>, PayError> {
        let mut tx = self.pay.db().begin_read().await?;
        let done = tx
            .query_opt(
                "SELECT authorization_id FROM card_operations WHERE id = $1",
                params![op_key],
            )
            .await?;
        let auth = self.auth_row(&mut tx, authorization_id).await?;
        tx.commit().await?;
        let auth = auth.ok_or(PayError::NotFound)?;
        if let Some(done) = done {
            if done.text(0)? != authorization_id {
                return Err(PayError::IdempotencyMismatch);
            }
            return Ok(Err(auth.answer(true)));
        }
        let lock = self.pay.lock_wallet(auth.wallet).await?;
        let auth = self.reload(authorization_id).await?;
        if auth.status != "approved" || self.pay.now_ms() >= auth.expires_at {
            return Ok(Err(NetworkAnswer::declined(
                ResponseCode::InvalidTransaction,
                Some(auth.id),
            )));
        }
        Ok(Ok((auth, lock)))
    }

    /// Records an operation and the authorization's new state in one transaction; a row
    /// changed meanwhile by another operation (another instance) is refused.
    #[allow(clippy::too_many_arguments)]
    async fn operation_finish(
        &self,
        op_key: &str,
        kind_name: &str,
        auth: &AuthRow,
        amount: u64,
        next: &AuthRow,
        now: i64,
    ) -> Result<NetworkAnswer, PayError> {
        let mut tx = self.pay.db().begin().await?;
        tx.execute(
            "INSERT INTO card_operations (id, authorization_id, kind, amount, response_code, created_at) \
             VALUES ($1, $2, $3, $4, '00', $5)",
            params![op_key, auth.id.as_str(), kind_name, minor_to_i64(amount)?, now],
        )
        .await?;
        let changed = tx
            .execute(
                "UPDATE card_authorizations SET status = $1, held = $2, captured = $3, refunded = $4, hold_id = $5, \
                 memo_id = $6, expires_at = $7, updated_at = $8 WHERE id = $9 AND held = $10 AND captured = $11 AND refunded = $12",
                params![
                    next.status.as_str(),
                    minor_to_i64(next.held)?,
                    minor_to_i64(next.captured)?,
                    minor_to_i64(next.refunded)?,
                    next.hold_id.map(|id| id.to_bytes().to_vec()),
                    next.memo_id.map(|id| id.to_bytes().to_vec()),
                    next.expires_at,
                    now,
                    auth.id.as_str(),
                    minor_to_i64(auth.held)?,
                    minor_to_i64(auth.captured)?,
                    minor_to_i64(auth.refunded)?
                ],
            )
            .await?;
        if changed == 0 {
            return Err(PayError::Conflict(
                "the authorization changed meanwhile; retry the message",
            ));
        }
        tx.commit().await?;
        metrics::counter!("koban_card_operations_total", "kind" => kind_name.to_owned())
            .increment(1);
        Ok(next.answer(false))
    }

    /// Submits an operation's batch; a batch that was already applied (the same message
    /// retried after a crash between the ledger and the row) counts as done.
    async fn submit_operation(
        &self,
        batch: Vec<TransferRequest>,
        marker: TransferId,
    ) -> Result<Result<(), ResponseCode>, PayError> {
        match self.pay.submit(batch).await? {
            Ok(_) => Ok(Ok(())),
            Err(r) if r.reason == RejectReason::IdempotencyConflict => {
                if self.pay.store().transfer(marker).await?.is_some() {
                    Ok(Ok(()))
                } else {
                    Err(PayError::IdempotencyMismatch)
                }
            }
            Err(r) => match r.reason {
                RejectReason::ExceedsCredits => Ok(Err(ResponseCode::InsufficientFunds)),
                RejectReason::PendingExpired
                | RejectReason::PendingNotFound
                | RejectReason::PendingAlreadyPosted
                | RejectReason::PendingAlreadyVoided => Ok(Err(ResponseCode::InvalidTransaction)),
                other => Err(koban_pay::ledger_refusal(other)),
            },
        }
    }

    /// Replaces an authorization's open hold by one of `new_held` (0: none), optionally
    /// posting `capture` of the old one first, all in one batch. Returns the next state.
    #[allow(clippy::too_many_arguments)]
    fn replace_hold(
        &self,
        op: &str,
        auth: &AuthRow,
        capture: u64,
        new_held: u64,
        expires_at: i64,
        now: i64,
        batch: &mut Vec<TransferRequest>,
    ) -> Result<(Option<TransferId>, Option<TransferId>), PayError> {
        let (Some(hold_id), Some(memo_id)) = (auth.hold_id, auth.memo_id) else {
            return Err(PayError::Conflict("the authorization holds nothing"));
        };
        if let Ok(amount) = Amount::new(capture.min(auth.held)) {
            batch.push(TransferRequest::Post {
                id: self.pay.derive_id(&[b"card-post", op.as_bytes()]),
                pending_id: hold_id,
                amount: Some(amount),
                metadata: Metadata::empty(),
            });
            batch.push(TransferRequest::Post {
                id: self.pay.derive_id(&[b"card-post-memo", op.as_bytes()]),
                pending_id: memo_id,
                amount: Some(amount),
                metadata: Metadata::empty(),
            });
        } else {
            batch.push(TransferRequest::Void {
                id: self.pay.derive_id(&[b"card-void", op.as_bytes()]),
                pending_id: hold_id,
                metadata: Metadata::empty(),
            });
            batch.push(TransferRequest::Void {
                id: self.pay.derive_id(&[b"card-void-memo", op.as_bytes()]),
                pending_id: memo_id,
                metadata: Metadata::empty(),
            });
        }
        match Amount::new(new_held) {
            Ok(amount) => {
                let hold = self.pay.derive_id(&[b"card-hold", op.as_bytes()]);
                let memo = self.pay.derive_id(&[b"card-hold-memo", op.as_bytes()]);
                let metadata =
                    Metadata::parse([("authorization", auth.id.as_str())]).unwrap_or_default();
                batch.extend(self.hold_batch(
                    hold,
                    memo,
                    auth.wallet,
                    amount,
                    auth.currency,
                    (expires_at - now).div_euclid(1000),
                    metadata,
                ));
                Ok((Some(hold), Some(memo)))
            }
            Err(_) => Ok((None, None)),
        }
    }

    /// The first transfer id of a batch: present in the ledger once the batch was applied.
    fn marker(batch: &[TransferRequest]) -> TransferId {
        batch[0].id()
    }

    /// Raises an open authorization by `amount` (hotel stays, car hire). Decided like a new
    /// authorization for the increment; the validity restarts.
    pub async fn increment_authorization(
        &self,
        authorization_id: &str,
        increment_id: &str,
        amount: i64,
    ) -> Result<NetworkAnswer, PayError> {
        network_id(increment_id, "increment_id is 1 to 64 printable characters")?;
        let amount = koban_pay::parse_amount(amount)?;
        let op = format!("increment:{authorization_id}:{increment_id}");
        let (auth, _lock) = match self.operation_start(&op, authorization_id).await? {
            Ok(open) => open,
            Err(answer) => return Ok(answer),
        };
        let now = self.pay.now_ms();
        let total = auth.held.saturating_add(amount.minor_units());
        if let Some(code) = self.increment_refusal(&auth, amount, total, now).await? {
            return Ok(NetworkAnswer::declined(code, Some(auth.id)));
        }
        let expires_at = now + self.config.auth_expiry_s * 1000;
        let mut batch = Vec::new();
        let (hold_id, memo_id) = self.replace_hold(
            &format!("{op}:{}", amount.minor_units()),
            &auth,
            0,
            total,
            expires_at,
            now,
            &mut batch,
        )?;
        let marker = Self::marker(&batch);
        if let Err(code) = self.submit_operation(batch, marker).await? {
            return Ok(NetworkAnswer::declined(code, Some(auth.id)));
        }
        let next = AuthRow {
            held: total,
            hold_id,
            memo_id,
            expires_at,
            ..auth.clone_state()
        };
        self.operation_finish(&op, "increment", &auth, amount.minor_units(), &next, now)
            .await
    }

    /// Why an increment of `amount` (to `total` held) is refused, if it is: the card's and its
    /// holder's state, the per-transaction control, then the money checks of any spend.
    async fn increment_refusal(
        &self,
        auth: &AuthRow,
        amount: Amount,
        total: u64,
        now: i64,
    ) -> Result<Option<ResponseCode>, PayError> {
        let mut tx = self.pay.db().begin_read().await?;
        let card = tx
            .query_one(
                "SELECT c.status, c.frozen_by_holder, c.frozen_by_operator, c.bad_codes, c.controls, u.status, u.cooling_off_until, \
                 k.status, d.debits_at_start \
                 FROM issued_cards c JOIN users u ON u.id = c.user_id \
                 LEFT JOIN kyc k ON k.user_id = c.user_id \
                 LEFT JOIN wallet_days d ON d.account_id = c.wallet_account AND d.day = $1 \
                 WHERE c.id = $2",
                params![now.div_euclid(DAY_MS), auth.card_id.as_str()],
            )
            .await?;
        tx.commit().await?;
        let controls = CardControls::from_json(&card.text(4)?)?;
        if card.text(0)? != "active"
            || card.bool(1)?
            || card.bool(2)?
            || card.i64(3)? >= self.config.bad_codes_max
            || card.text(5)? != "active"
        {
            return Ok(Some(ResponseCode::RestrictedCard));
        }
        if controls.per_transaction_max.is_some_and(|max| total > max) {
            return Ok(Some(ResponseCode::OverLimit));
        }
        let tier = if card.opt_text(7)?.as_deref() == Some("approved") {
            Tier::Verified
        } else {
            Tier::Unverified
        };
        let spend = self
            .decide_card_spend(
                &auth.card_id,
                (
                    tier,
                    card.opt_i64(6)?,
                    card.opt_i64(8)?.map(stored_minor).transpose()?,
                ),
                auth.wallet,
                &controls,
                amount,
                now,
            )
            .await?;
        Ok(spend.err())
    }

    /// Releases all of an open authorization (`amount: None`) or part of it.
    pub async fn reverse_authorization(
        &self,
        authorization_id: &str,
        reversal_id: &str,
        amount: Option<i64>,
    ) -> Result<NetworkAnswer, PayError> {
        network_id(reversal_id, "reversal_id is 1 to 64 printable characters")?;
        let op = format!("reversal:{authorization_id}:{reversal_id}");
        let (auth, _lock) = match self.operation_start(&op, authorization_id).await? {
            Ok(open) => open,
            Err(answer) => return Ok(answer),
        };
        let release = match amount {
            None => auth.held,
            Some(amount) => koban_pay::parse_amount(amount)?.minor_units(),
        };
        if release > auth.held {
            return Ok(NetworkAnswer::declined(
                ResponseCode::InvalidAmount,
                Some(auth.id),
            ));
        }
        let now = self.pay.now_ms();
        let mut batch = Vec::new();
        let (hold_id, memo_id) = self.replace_hold(
            &format!("{op}:{release}"),
            &auth,
            0,
            auth.held - release,
            auth.expires_at,
            now,
            &mut batch,
        )?;
        let marker = Self::marker(&batch);
        if let Err(code) = self.submit_operation(batch, marker).await? {
            return Ok(NetworkAnswer::declined(code, Some(auth.id)));
        }
        let held = auth.held - release;
        let next = AuthRow {
            held,
            hold_id,
            memo_id,
            status: if held > 0 {
                "approved".into()
            } else if auth.captured > 0 {
                "closed".into()
            } else {
                "reversed".into()
            },
            ..auth.clone_state()
        };
        self.operation_finish(&op, "reversal", &auth, release, &next, now)
            .await
    }

    /// Clearing: posts `amount` of an open authorization. With `final_capture` (or when
    /// nothing remains) the rest is released; otherwise it stays held for later captures.
    /// A capture may exceed what is held by at most the configured tolerance, taken from the
    /// wallet if it has the money.
    pub async fn capture_authorization(
        &self,
        authorization_id: &str,
        clearing_id: &str,
        amount: i64,
        final_capture: bool,
    ) -> Result<NetworkAnswer, PayError> {
        network_id(clearing_id, "clearing_id is 1 to 64 printable characters")?;
        let amount = koban_pay::parse_amount(amount)?.minor_units();
        let op = format!("clearing:{authorization_id}:{clearing_id}");
        let (auth, _lock) = match self.operation_start(&op, authorization_id).await? {
            Ok(open) => open,
            Err(answer) => return Ok(answer),
        };
        let authorized = auth.held.saturating_add(auth.captured);
        let tolerance = koban_pay::basis_points(authorized, self.config.capture_tolerance_bps);
        if amount > auth.held.saturating_add(tolerance) {
            return Ok(NetworkAnswer::declined(
                ResponseCode::InvalidAmount,
                Some(auth.id),
            ));
        }
        let now = self.pay.now_ms();
        let taken = amount.min(auth.held);
        let rest = if final_capture || amount >= auth.held {
            0
        } else {
            auth.held - taken
        };
        let mut batch = Vec::new();
        let ledger_op = format!("{op}:{amount}:{final_capture}");
        let (hold_id, memo_id) = self.replace_hold(
            &ledger_op,
            &auth,
            taken,
            rest,
            auth.expires_at,
            now,
            &mut batch,
        )?;
        if let Ok(extra) = Amount::new(amount - taken) {
            batch.extend(self.extra_capture(&auth, &op, &ledger_op, extra));
        }
        let marker = Self::marker(&batch);
        if let Err(code) = self.submit_operation(batch, marker).await? {
            return Ok(NetworkAnswer::declined(code, Some(auth.id)));
        }
        let next = AuthRow {
            held: rest,
            captured: auth.captured + amount,
            hold_id,
            memo_id,
            status: if rest > 0 { "approved" } else { "closed" }.into(),
            ..auth.clone_state()
        };
        self.operation_finish(&op, "clearing", &auth, amount, &next, now)
            .await
    }

    /// The part of a clearing beyond what was held (within the tolerance): moved from the
    /// wallet directly, with its e-money memo leg.
    fn extra_capture(
        &self,
        auth: &AuthRow,
        op: &str,
        ledger_op: &str,
        extra: Amount,
    ) -> [TransferRequest; 2] {
        let id = self.pay.derive_id(&[b"card-extra", ledger_op.as_bytes()]);
        [
            TransferRequest::Move(Move {
                id,
                debit: auth.wallet,
                credit: IssuerAccount::CardNetworkSettlement.id(auth.currency),
                amount: extra,
                currency: auth.currency,
                code: kind::CARD_PAYMENT,
                reference: auth.hold_id,
                metadata: Metadata::parse([("authorization", auth.id.as_str())])
                    .unwrap_or_default(),
                pending: None,
            }),
            emoney_leg(
                self.pay.derive_id(&[b"card-extra-memo", op.as_bytes()]),
                auth.currency,
                extra,
                false,
                Some(id),
                None,
            ),
        ]
    }

    /// A merchant's refund: credits the wallet with up to what was captured and not yet
    /// refunded. The amount is reserved on the authorization row first, together with the
    /// operation (`pending`), so refunds racing on several instances cannot exceed what was
    /// captured; then the ledger credits; then the operation is marked done. A retry of a
    /// pending refund (a crash in between) completes it with the amount first reserved.
    pub async fn refund_authorization(
        &self,
        authorization_id: &str,
        refund_id: &str,
        amount: i64,
    ) -> Result<NetworkAnswer, PayError> {
        network_id(refund_id, "refund_id is 1 to 64 printable characters")?;
        let amount = koban_pay::parse_amount(amount)?;
        let op = format!("refund:{authorization_id}:{refund_id}");
        let mut tx = self.pay.db().begin_read().await?;
        let existing = tx
            .query_opt(
                "SELECT response_code, amount FROM card_operations WHERE id = $1",
                params![op.as_str()],
            )
            .await?;
        let auth = self.auth_row(&mut tx, authorization_id).await?;
        tx.commit().await?;
        let auth = auth.ok_or(PayError::NotFound)?;
        let now = self.pay.now_ms();
        let amount = match existing {
            Some(row) if row.text(0)? != "pending" => return Ok(auth.answer(true)),
            // Resumed: the amount reserved by the first attempt.
            Some(row) => Amount::new(stored_minor(row.i64(1)?)?)
                .map_err(|_| PayError::Auth(AuthError::Internal("a stored amount is malformed")))?,
            None => {
                if !self.reserve_card_refund(&auth, &op, amount, now).await? {
                    return Ok(NetworkAnswer::declined(
                        ResponseCode::InvalidAmount,
                        Some(auth.id),
                    ));
                }
                amount
            }
        };
        let id = self.pay.derive_id(&[b"card-refund", op.as_bytes()]);
        let batch = self.card_refund_batch(&auth, &op, id, amount);
        let outcome = self.credit_card_refund(id, batch).await;
        self.finish_card_refund(&auth, &op, amount, &outcome, now)
            .await?;
        if let Err(code) = outcome? {
            return Ok(NetworkAnswer::declined(code, Some(auth.id)));
        }
        metrics::counter!("koban_card_operations_total", "kind" => "refund").increment(1);
        self.pay.notify(
            id,
            &auth.email,
            Mail::new("card-refund")
                .arg("merchant", &auth.merchant_name)
                .arg("amount", format_money(amount.minor_units(), auth.currency)),
        );
        self.records_written().await;
        let auth = self.reload(authorization_id).await?;
        Ok(auth.answer(false))
    }

    /// The batch of a card refund: the network's settlement account pays the wallet back,
    /// and the e-money in circulation grows by as much.
    fn card_refund_batch(
        &self,
        auth: &AuthRow,
        op: &str,
        id: TransferId,
        amount: Amount,
    ) -> Vec<TransferRequest> {
        vec![
            TransferRequest::Move(Move {
                id,
                debit: IssuerAccount::CardNetworkSettlement.id(auth.currency),
                credit: auth.wallet,
                amount,
                currency: auth.currency,
                code: kind::CARD_REFUND,
                reference: None,
                metadata: Metadata::parse([
                    ("authorization", auth.id.as_str()),
                    ("merchant", auth.merchant_name.as_str()),
                ])
                .unwrap_or_default(),
                pending: None,
            }),
            emoney_leg(
                self.pay.derive_id(&[b"card-refund-memo", op.as_bytes()]),
                auth.currency,
                amount,
                true,
                Some(id),
                None,
            ),
        ]
    }

    /// Reserves a refund's amount on its authorization (never beyond what was captured) and
    /// records the operation as pending, in one transaction; false when it would exceed.
    async fn reserve_card_refund(
        &self,
        auth: &AuthRow,
        op: &str,
        amount: Amount,
        now: i64,
    ) -> Result<bool, PayError> {
        let mut tx = self.pay.db().begin().await?;
        let reserved = tx
            .execute(
                "UPDATE card_authorizations SET refunded = refunded + $1, updated_at = $2 \
                 WHERE id = $3 AND refunded + $1 <= captured",
                params![amount.to_i64(), now, auth.id.as_str()],
            )
            .await?;
        if reserved == 0 {
            return Ok(false);
        }
        let inserted = tx
            .execute(
                "INSERT INTO card_operations (id, authorization_id, kind, amount, response_code, created_at) \
                 VALUES ($1, $2, 'refund', $3, 'pending', $4) ON CONFLICT (id) DO NOTHING",
                params![op, auth.id.as_str(), amount.to_i64(), now],
            )
            .await?;
        if inserted == 0 {
            return Err(PayError::Conflict(
                "this refund is being processed; retry the message",
            ));
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Credits a refund to the wallet. A refusal is answered as a response code; a store
    /// error is an error (the operation stays pending for the retry).
    async fn credit_card_refund(
        &self,
        id: TransferId,
        batch: Vec<TransferRequest>,
    ) -> Result<Result<(), ResponseCode>, PayError> {
        match self.pay.submit(batch).await {
            Ok(Ok(_)) => Ok(Ok(())),
            Ok(Err(r))
                if r.reason == RejectReason::IdempotencyConflict
                    && self.pay.store().transfer(id).await?.is_some() =>
            {
                Ok(Ok(()))
            }
            Ok(Err(r)) => Ok(Err(match r.reason {
                RejectReason::CreditAccountFrozen | RejectReason::CreditAccountClosed => {
                    ResponseCode::RestrictedCard
                }
                _ => ResponseCode::DoNotHonour,
            })),
            Err(error) => Err(error.into()),
        }
    }

    /// Records how a refund ended: done, or refused by the ledger (nothing moved, so the
    /// reservation is given back, once: by whoever removes the pending operation). After a
    /// store error it stays pending, and a retry completes it.
    async fn finish_card_refund(
        &self,
        auth: &AuthRow,
        op: &str,
        amount: Amount,
        outcome: &Result<Result<(), ResponseCode>, PayError>,
        now: i64,
    ) -> Result<(), PayError> {
        let mut tx = self.pay.db().begin().await?;
        match outcome {
            Ok(Ok(())) => {
                tx.execute(
                    "UPDATE card_operations SET response_code = '00' WHERE id = $1 AND response_code = 'pending'",
                    params![op],
                )
                .await?;
            }
            Ok(Err(_)) => {
                let removed = tx
                    .execute(
                        "DELETE FROM card_operations WHERE id = $1 AND response_code = 'pending'",
                        params![op],
                    )
                    .await?;
                if removed == 1 {
                    tx.execute(
                        "UPDATE card_authorizations SET refunded = refunded - $1, updated_at = $2 WHERE id = $3",
                        params![amount.to_i64(), now, auth.id.as_str()],
                    )
                    .await?;
                }
            }
            Err(_) => {}
        }
        tx.commit().await?;
        Ok(())
    }

    async fn reload(&self, authorization_id: &str) -> Result<AuthRow, PayError> {
        let mut tx = self.pay.db().begin_read().await?;
        let auth = self.auth_row(&mut tx, authorization_id).await?;
        tx.commit().await?;
        auth.ok_or(PayError::NotFound)
    }

    /// Marks authorizations past their validity as expired (the ledger releases their holds
    /// by its own timeout); returns how many.
    pub async fn expire_card_authorizations(&self) -> Result<u64, PayError> {
        let now = self.pay.now_ms();
        let mut tx = self.pay.db().begin().await?;
        let expired = tx
            .execute(
                "UPDATE card_authorizations SET status = 'expired', held = 0, updated_at = $1 \
                 WHERE status = 'approved' AND expires_at <= $1",
                params![now],
            )
            .await?;
        tx.commit().await?;
        if expired > 0 {
            metrics::counter!("koban_card_authorizations_expired_total").increment(expired);
        }
        Ok(expired)
    }

    /// The authorizations of one card, newest first (the holder's card activity).
    pub async fn card_activity(
        &self,
        principal: &koban_auth::Principal,
        card_id: &koban_shared::ids::CardId,
        limit: i64,
    ) -> Result<Vec<CardActivity>, PayError> {
        self.card(principal, card_id).await?;
        let mut tx = self.pay.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT id, status, response_code, amount, held, captured, refunded, currency, merchant_name, mcc, \
                 country, channel, created_at FROM card_authorizations WHERE card_id = $1 \
                 ORDER BY created_at DESC LIMIT $2",
                params![card_id, limit.clamp(1, 200)],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(CardActivity {
                    authorization_id: row.text(0)?,
                    status: row.text(1)?,
                    response_code: row.text(2)?,
                    amount: stored_minor(row.i64(3)?)?,
                    held: stored_minor(row.i64(4)?)?,
                    captured: stored_minor(row.i64(5)?)?,
                    refunded: stored_minor(row.i64(6)?)?,
                    currency: row.text(7)?,
                    merchant_name: row.text(8)?,
                    mcc: row.text(9)?,
                    country: row.text(10)?,
                    channel: row.text(11)?,
                    created_at_ms: row.i64(12)?,
                })
            })
            .collect()
    }
}

/// One authorization as the holder sees it.
#[derive(Clone, Debug)]
pub struct CardActivity {
    pub authorization_id: String,
    pub status: String,
    pub response_code: String,
    pub amount: u64,
    pub held: u64,
    pub captured: u64,
    pub refunded: u64,
    pub currency: String,
    pub merchant_name: String,
    pub mcc: String,
    pub country: String,
    pub channel: String,
    pub created_at_ms: i64,
}

/// How far a network request's timestamp may be from the server's clock.
pub const NETWORK_CLOCK_SKEW_S: i64 = 300;

impl AuthRow {
    fn clone_state(&self) -> AuthRow {
        AuthRow {
            id: self.id.clone(),
            card_id: self.card_id.clone(),
            status: self.status.clone(),
            response_code: self.response_code.clone(),
            held: self.held,
            captured: self.captured,
            refunded: self.refunded,
            currency: self.currency,
            hold_id: self.hold_id,
            memo_id: self.memo_id,
            expires_at: self.expires_at,
            wallet: self.wallet,
            user_id: self.user_id.clone(),
            email: self.email.clone(),
            merchant_name: self.merchant_name.clone(),
        }
    }
}

fn auth_from_row(vault: &koban_shared::personal::Vault, row: &Row) -> Result<AuthRow, PayError> {
    Ok(AuthRow {
        id: row.text(0)?,
        card_id: row.text(1)?,
        status: row.text(2)?,
        response_code: row.text(3)?,
        held: stored_minor(row.i64(4)?)?,
        captured: stored_minor(row.i64(5)?)?,
        refunded: stored_minor(row.i64(6)?)?,
        currency: Currency::parse(&row.text(7)?)
            .map_err(|_| PayError::Auth(AuthError::Internal("unknown stored currency")))?,
        hold_id: transfer_id(row.opt_bytes(8)?)?,
        memo_id: transfer_id(row.opt_bytes(9)?)?,
        expires_at: row.i64(10)?,
        wallet: AccountId::from_bytes(&row.bytes(11)?)
            .map_err(|_| PayError::Auth(AuthError::Internal("a stored id is malformed")))?,
        user_id: row.text(12)?,
        email: vault.open(&koban_shared::personal::USER_EMAIL, &row.text(13)?)?,
        merchant_name: row.text(14)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_refused_within_the_window_and_forgotten_after() {
        let mut cache = ReplayCache::default();
        assert!(cache.first_time([1; 32], 1_000, 601));
        assert!(cache.first_time([2; 32], 1_010, 601));
        assert!(!cache.first_time([1; 32], 1_300, 601));
        assert!(!cache.first_time([2; 32], 1_600, 601));
        // 601 s after it was seen, the first is forgotten; the second not yet.
        assert!(cache.first_time([1; 32], 1_601, 601));
        assert!(!cache.first_time([2; 32], 1_601, 601));
        assert_eq!(cache.order.len(), cache.seen.len());
    }

    #[test]
    fn response_codes_round_trip() {
        for code in ["00", "05", "14", "51", "54", "57", "61", "62", "78", "N7"] {
            assert_eq!(ResponseCode::from_code(code).code(), code);
        }
    }
}
