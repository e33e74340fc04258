//! Offline payments, the issuer's side (the protocol is `koban-offline`): loading a purse from
//! the wallet into a reserve account of its own and certifying the device's key, certifying a
//! merchant's terminal key, the revocation list terminals fetch, settling uploaded vouchers,
//! and closing purses after their settlement window (what is left goes back to the wallet).
//!
//! Money: loading moves wallet → reserve (and e-money down: a reserve is not a wallet); a
//! voucher is paid reserve → merchant, and past the reserve fraud losses → merchant, up to the
//! purse's guarantee; the merchant's fee goes to revenue as for any merchant payment; closing
//! moves reserve → wallet (and e-money up). Every ledger id derives from the purse and the
//! voucher's digest, so a decision's money moves once however often it is submitted again.
//!
//! A decision is written (with the purse's new reserve and guarantee) before its money is
//! submitted; a crash between them leaves the decision, and the next upload of that voucher,
//! or the purse's closing, submits its money again (a ledger replay when it already moved).

use koban_auth::{Client, Principal, StepUpProof, UserKind};
use koban_ledger::{
    Account, AccountId, AccountRejection, Amount, Currency, Metadata, Move, NewAccount,
    TransferRequest,
};
use koban_offline::settle::{Decision, DoubleSpend, Policy, PurseBook, Unpaid};
use koban_offline::{
    Currency as OfflineCurrency, IssuerKeys, PublicKey, PurseCertificate, SigningKey,
    TerminalCertificate, Voucher, VoucherContent,
};
use koban_risk::EventKind;
use koban_shared::ids::UserId;
use koban_store::LedgerStore;
use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};

use crate::accounts::{IssuerAccount, kind};
use crate::risk::Parties;
use crate::wallets::emoney_leg;
use crate::{IdempotencyKey, PayError, Payments};

/// Settings of offline payments.
#[derive(Clone, Copy, Debug)]
pub struct OfflineConfig {
    /// The most a purse may hold (minor units of the default currency).
    pub purse_max_minor: u64,
    /// How long a purse's certificate is valid (seconds).
    pub validity_s: u32,
    /// Settlement: the guarantee factor and the window after a certificate's end.
    pub policy: Policy,
    /// How old a terminal's revocation list may be before it refuses offline payments.
    pub list_max_age_s: u32,
    /// How far a terminal's clock may run behind: a certificate is valid from this long
    /// before it was issued.
    pub clock_skew_s: u32,
}

impl Default for OfflineConfig {
    fn default() -> OfflineConfig {
        OfflineConfig {
            purse_max_minor: 20_000,
            validity_s: 72 * 3600,
            policy: Policy::default(),
            list_max_age_s: 24 * 3600,
            clock_skew_s: 300,
        }
    }
}

/// A purse as its owner sees it.
#[derive(Clone, Debug)]
pub struct PurseView {
    pub id: [u8; 16],
    pub certificate: Vec<u8>,
    pub currency: Currency,
    pub limit: u64,
    pub not_after: u32,
    /// When what is left goes back to the wallet.
    pub deadline: u32,
    /// loading | open | revoked | closed
    pub status: String,
    /// Paid to merchants from the reserve so far.
    pub settled: u64,
    pub reserve_left: u64,
}

/// What a terminal needs: its certificate, the issuer's keys and how often to refresh.
#[derive(Clone, Debug)]
pub struct TerminalView {
    pub id: [u8; 16],
    pub certificate: Vec<u8>,
    pub name: String,
}

/// The answer for one uploaded voucher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoucherOutcome {
    /// The purse and counter, when the voucher could be read.
    pub purse: Option<[u8; 16]>,
    pub counter: Option<u32>,
    pub amount: Option<u64>,
    /// paid | unpaid (a terminal's upload, decided) | reported (a customer's copy: checked
    /// for double spending, not paid) | refused (not read, not signed, not the caller's)
    pub status: &'static str,
    /// Why unpaid or refused.
    pub reason: Option<&'static str>,
    /// Decided before: nothing moved now.
    pub repeated: bool,
}

impl VoucherOutcome {
    fn refused(reason: &'static str, voucher: Option<&Voucher>) -> VoucherOutcome {
        VoucherOutcome {
            purse: voucher.map(|v| v.certificate.purse),
            counter: voucher.map(|v| v.content.counter),
            amount: voucher.map(|v| v.content.amount),
            status: "refused",
            reason: Some(reason),
            repeated: false,
        }
    }
}

/// What operators see of the exposure.
#[derive(Clone, Debug, Default)]
pub struct Exposure {
    /// Purses not yet closed.
    pub purses_open: i64,
    pub purses_revoked: i64,
    /// Reserves held, and what the issuer could still lose (the guarantees left).
    pub reserve_minor: i64,
    pub exposure_minor: i64,
    /// Paid from fraud losses so far.
    pub losses_minor: i64,
    /// The most one purse can cost the issuer, under the current settings.
    pub bound_per_purse_minor: u64,
}

/// How many vouchers [`Payments::upload_vouchers`] takes at once.
pub const VOUCHERS_PER_UPLOAD_MAX: usize = 200;
/// How many vouchers one purse may have decided: an honest purse pays far fewer; past this a
/// flood of invented vouchers is refused unread.
pub const VOUCHERS_PER_PURSE_MAX: i64 = 500;
/// How many terminals one merchant may certify.
pub const TERMINALS_PER_MERCHANT_MAX: i64 = 50;

fn now_s(ms: i64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

/// What the step-up of a purse's load names the device key by: 128 bits of its SHA-256, so no
/// other key can be confirmed in its place.
fn fingerprint(key: &PublicKey) -> String {
    let digest = koban_shared::sha256(key);
    digest[..16].iter().map(|b| format!("{b:02X}")).collect()
}

fn id16(bytes: &[u8]) -> Result<[u8; 16], PayError> {
    bytes
        .try_into()
        .map_err(|_| PayError::Invalid("a stored offline id is not 16 bytes"))
}

/// A merchant's id as the protocol names it: its UUID's bytes.
fn merchant_id16(merchant: &UserId) -> Result<[u8; 16], PayError> {
    Ok(uuid::Uuid::try_parse(merchant)
        .map_err(|_| PayError::Invalid("a merchant id is not a UUID"))?
        .into_bytes())
}

impl<S: LedgerStore> Payments<S> {
    /// The issuer's current signing key and every public key terminals and devices trust.
    /// Made on first use; instances sharing a database agree on the first one written.
    pub async fn offline_issuer(
        &self,
    ) -> Result<(u8, std::sync::Arc<SigningKey>, IssuerKeys), PayError> {
        if let Some(cached) = self.offline_issuer.get() {
            return Ok(cached.clone());
        }
        let mut rows = self.offline_keys().await?;
        if rows.is_empty() {
            let key = SigningKey::generate();
            let sealed = self.auth.keys().seal(key.pkcs8())?;
            let mut tx = self.db().begin().await?;
            tx.execute(
                "INSERT INTO offline_keys (number, public_key, private_sealed, created_at) \
                 VALUES (1, $1, $2, $3) ON CONFLICT (number) DO NOTHING",
                params![key.public().to_vec(), sealed, self.now_ms()],
            )
            .await?;
            tx.commit().await?;
            rows = self.offline_keys().await?;
        }
        let (number, _, sealed) = rows
            .last()
            .ok_or(PayError::Invalid("no offline issuer key"))?;
        let pkcs8 = self.auth.keys().open(sealed)?;
        let key = SigningKey::from_pkcs8(pkcs8.expose())
            .ok_or(PayError::Invalid("the offline issuer key does not read"))?;
        let keys = IssuerKeys::new(rows.iter().map(|(n, public, _)| (*n, *public)));
        let value = (*number, std::sync::Arc::new(key), keys);
        let _ = self.offline_issuer.set(value.clone());
        Ok(value)
    }

    async fn offline_keys(&self) -> Result<Vec<(u8, PublicKey, Vec<u8>)>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT number, public_key, private_sealed FROM offline_keys ORDER BY number",
                params![],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let number = u8::try_from(row.i64(0)?)
                    .map_err(|_| PayError::Invalid("an offline key number is out of range"))?;
                let public: PublicKey = row
                    .bytes(1)?
                    .try_into()
                    .map_err(|_| PayError::Invalid("a stored offline key is not 65 bytes"))?;
                Ok((number, public, row.bytes(2)?))
            })
            .collect()
    }

    /// Loads a purse: moves `amount` from the customer's wallet into a new purse's reserve and
    /// certifies `device_key` to spend it offline. Always confirmed with step-up (the key is a
    /// new place for money to go). One purse at a time per customer. A retry with the same key
    /// answers the same purse.
    pub async fn load_purse(
        &self,
        principal: &Principal,
        amount: Amount,
        device_key: PublicKey,
        key: &IdempotencyKey,
        proof: Option<&StepUpProof>,
        client: &Client,
    ) -> Result<(PurseView, Option<koban_auth::IssuedSession>), PayError> {
        principal.can_move_money()?;
        if principal.kind != UserKind::Customer {
            return Err(PayError::Invalid("only customers hold offline purses"));
        }
        let offline = self.config.offline;
        if amount.minor_units() > offline.purse_max_minor {
            return Err(PayError::Limit {
                code: "offline_purse_max",
                detail: format!(
                    "an offline purse holds at most {} minor units",
                    offline.purse_max_minor
                ),
            });
        }
        if device_key[0] != 0x04 {
            return Err(PayError::Invalid(
                "device_key must be a P-256 public key, uncompressed (65 bytes)",
            ));
        }
        let currency = self.config.currencies[0];
        let id = self.derive_id(&[
            b"offline-purse",
            principal.user_id.as_bytes(),
            key.as_str().as_bytes(),
        ]);
        let _claim = self.claim(id).await?;
        let purse_id = id.to_bytes();
        if let Some(purse) = self.purse_row(&purse_id).await? {
            if purse.user_id != principal.user_id
                || purse.view.limit != amount.minor_units()
                || purse.device_key != device_key
            {
                return Err(PayError::IdempotencyMismatch);
            }
            if purse.view.status == "loading" {
                // The first attempt stopped before its money moved (or before it said so):
                // finish it under the wallet's lock, as the first attempt held it, and the
                // purse's, which closing takes too (both at once, in the locks' own order).
                let wallet = self.wallet(&principal.user_id, currency).await?;
                let _locks = self.lock_wallets(wallet.account, purse.reserve).await?;
                self.still_signed_in(principal).await?;
                let purse = self.purse_row(&purse_id).await?.ok_or(PayError::NotFound)?;
                self.finish_load(&purse, currency).await?;
            }
            let purse = self.purse_row(&purse_id).await?.ok_or(PayError::NotFound)?;
            return Ok((purse.view, None));
        }
        let wallet = self.wallet(&principal.user_id, currency).await?;
        let _lock = self.lock_wallet(wallet.account).await?;
        self.still_signed_in(principal).await?;
        let now = self.now_ms();
        match self.purse_standing(&principal.user_id).await? {
            PurseStanding::None => {}
            PurseStanding::NotClosed => {
                return Err(PayError::Conflict(
                    "you already have an offline purse; what is left of it returns to your wallet after its settlement window",
                ));
            }
            PurseStanding::Revoked => {
                return Err(PayError::Conflict(
                    "offline purses are suspended for this account after a purse was used twice; contact support",
                ));
            }
        }
        let account = self.ledger_account(wallet.account).await?;
        if !account.balance.covers(amount) {
            return Err(PayError::InsufficientFunds);
        }
        let event = self
            .outgoing_context(principal, EventKind::Payout, &account, amount)
            .await?;
        let parties = Parties {
            attempt: Some(id),
            source: Some("offline_purse".into()),
            currency: currency.code().to_owned(),
            ..Parties::of(&principal.user_id, Some(client))
        };
        self.assess(&event, &parties)
            .await?
            .without_review("your")?;
        let session = self
            .confirm_payment(
                principal,
                amount.to_i64(),
                currency,
                format!(
                    "an offline purse on the device with key {}",
                    fingerprint(&device_key)
                ),
                proof,
                client,
            )
            .await?;

        // The reserve account, then the purse's row, then its money.
        let reserve = AccountId::new(self.derive_id(&[b"offline-reserve", &purse_id]).get())
            .map_err(|_| PayError::Invalid("a reserve id was zero"))?;
        for result in self
            .store
            .create_accounts(vec![NewAccount {
                id: reserve,
                currency,
                code: crate::accounts::OFFLINE_RESERVE,
                flags: crate::accounts::holder_flags(),
            }])
            .await?
        {
            match result {
                Ok(_) | Err(AccountRejection::Exists) => {}
                Err(_) => return Err(PayError::Conflict("the purse could not be opened")),
            }
        }
        let (number, issuer, _) = self.offline_issuer().await?;
        let issued = now_s(now);
        let not_before = issued.saturating_sub(offline.clock_skew_s);
        let not_after = issued.saturating_add(offline.validity_s);
        let certificate = PurseCertificate {
            issuer_key: number,
            purse: purse_id,
            device_key,
            currency: OfflineCurrency::parse(currency.code()).unwrap_or(OfflineCurrency::JPY),
            limit: amount.minor_units(),
            not_before,
            not_after,
            serial: 1,
            signature: [0; 64],
        }
        .issue(&issuer);
        let deadline = not_after.saturating_add(offline.policy.settle_window);
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO offline_purses (id, user_id, currency, reserve_account, amount, device_key, \
                          certificate, not_before, not_after, deadline, status, reserve_left, guarantee_left, \
             guarantee_factor, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'loading', $11, $12, $13, $14)",
            params![
                purse_id.to_vec(),
                &principal.user_id,
                currency.code(),
                reserve.to_bytes().to_vec(),
                amount.to_i64(),
                device_key.to_vec(),
                certificate.encode(),
                i64::from(not_before),
                i64::from(not_after),
                i64::from(deadline),
                amount.to_i64(),
                                i64::try_from(offline.policy.bound(amount.minor_units())).unwrap_or(i64::MAX),
                i64::try_from(offline.policy.guarantee_factor).unwrap_or(1),
                now
            ],
        )
        .await?;
        tx.commit().await?;
        let purse = self.purse_row(&purse_id).await?.ok_or(PayError::NotFound)?;
        self.finish_load(&purse, currency).await?;
        let purse = self.purse_row(&purse_id).await?.ok_or(PayError::NotFound)?;
        Ok((purse.view, Some(session)))
    }

    /// Moves a loading purse's money (wallet → reserve, e-money down) and opens it; refused by
    /// the ledger, the purse is closed with nothing in it.
    async fn finish_load(&self, purse: &PurseRow, currency: Currency) -> Result<(), PayError> {
        if purse.view.status != "loading" {
            return Ok(());
        }
        let amount = Amount::new(purse.view.limit).map_err(|_| PayError::Invalid("empty purse"))?;
        let batch = self
            .reserve_batch(purse, currency, amount, ReserveMove::Load)
            .await?;
        let status = match self.submit_batch(batch).await {
            Ok(_) => "open",
            Err(error @ PayError::Auth(koban_auth::AuthError::Store(_))) => return Err(error),
            Err(error) => {
                // Refused by the ledger: nothing moved, and the certificate was never given.
                self.set_purse_status(&purse.view.id, "failed").await?;
                return Err(error);
            }
        };
        self.set_purse_status(&purse.view.id, status).await
    }

    /// Money between the purse's owner's wallet and its reserve, with the e-money memo leg (a
    /// reserve is not a wallet): the load, or what is left going back. Ids derive from the
    /// purse, so each moves once.
    async fn reserve_batch(
        &self,
        purse: &PurseRow,
        currency: Currency,
        amount: Amount,
        way: ReserveMove,
    ) -> Result<Vec<TransferRequest>, PayError> {
        let wallet = self.wallet(&purse.user_id, currency).await?.account;
        let (label, memo, code, debit, credit, up): (&[u8], &[u8], _, _, _, _) = match way {
            ReserveMove::Load => (
                b"offline-load",
                b"offline-load-memo",
                kind::OFFLINE_LOAD,
                wallet,
                purse.reserve,
                false,
            ),
            ReserveMove::Return => (
                b"offline-return",
                b"offline-return-memo",
                kind::OFFLINE_RETURN,
                purse.reserve,
                wallet,
                true,
            ),
        };
        let id = self.derive_id(&[label, &purse.view.id]);
        Ok(vec![
            TransferRequest::Move(Move {
                id,
                debit,
                credit,
                amount,
                currency,
                code,
                reference: None,
                metadata: Metadata::empty(),
                pending: None,
            }),
            emoney_leg(
                self.derive_id(&[memo, &purse.view.id]),
                currency,
                amount,
                up,
                Some(id),
                None,
            ),
        ])
    }

    async fn set_purse_status(&self, id: &[u8; 16], status: &str) -> Result<(), PayError> {
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE offline_purses SET status = $1, closed_at = CASE WHEN $2 = 'failed' THEN $3 ELSE closed_at END \
             WHERE id = $4 AND status = 'loading'",
            params![status, status, self.now_ms(), id.to_vec()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether the customer may load a purse: none open, and none ever revoked (a double
    /// spender does not get another guarantee).
    async fn purse_standing(&self, user: &UserId) -> Result<PurseStanding, PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_one(
                "SELECT \
                 (SELECT COUNT(*) FROM offline_purses WHERE user_id = $1 AND revoked_at IS NOT NULL), \
                 (SELECT COUNT(*) FROM offline_purses WHERE user_id = $2 AND status NOT IN ('closed', 'failed'))",
                params![user, user],
            )
            .await?;
        tx.commit().await?;
        Ok(if row.i64(0)? > 0 {
            PurseStanding::Revoked
        } else if row.i64(1)? > 0 {
            PurseStanding::NotClosed
        } else {
            PurseStanding::None
        })
    }

    async fn purse_row(&self, id: &[u8; 16]) -> Result<Option<PurseRow>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                concat!(
                    "SELECT ",
                    purse_columns!(),
                    " FROM offline_purses WHERE id = $1"
                ),
                params![id.to_vec()],
            )
            .await?;
        tx.commit().await?;
        row.map(|row| PurseRow::read(&row)).transpose()
    }

    /// The customer's purses, newest first.
    pub async fn purses(&self, principal: &Principal) -> Result<Vec<PurseView>, PayError> {
        principal.full()?;
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                concat!(
                    "SELECT ",
                    purse_columns!(),
                    " FROM offline_purses WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20"
                ),
                params![&principal.user_id],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| Ok(PurseRow::read(row)?.view))
            .collect()
    }

    /// Certifies a terminal key for the signed-in merchant, under its display name.
    pub async fn register_terminal(
        &self,
        principal: &Principal,
        terminal_key: PublicKey,
    ) -> Result<TerminalView, PayError> {
        principal.full()?;
        if principal.kind != UserKind::Merchant {
            return Err(PayError::Invalid("only merchants register terminals"));
        }
        if terminal_key[0] != 0x04 {
            return Err(PayError::Invalid(
                "terminal_key must be a P-256 public key, uncompressed (65 bytes)",
            ));
        }
        let mut tx = self.db().begin_read().await?;
        let count = tx
            .query_one(
                "SELECT COUNT(*) FROM offline_terminals WHERE merchant_id = $1",
                params![&principal.user_id],
            )
            .await?
            .i64(0)?;
        tx.commit().await?;
        if count >= TERMINALS_PER_MERCHANT_MAX {
            return Err(PayError::Limit {
                code: "offline_terminals_max",
                detail: format!(
                    "a merchant certifies at most {TERMINALS_PER_MERCHANT_MAX} terminals"
                ),
            });
        }
        let (name, _, _) = self.merchant_terms(&principal.user_id).await?;
        let name = certified_name(&name);
        let (number, issuer, _) = self.offline_issuer().await?;
        let id: [u8; 16] = uuid::Uuid::now_v7().into_bytes();
        let merchant = merchant_id16(&principal.user_id)?;
        let now = self.now_ms();
        let certificate = TerminalCertificate {
            issuer_key: number,
            terminal: id,
            merchant,
            terminal_key,
            currency: OfflineCurrency::parse(self.config.currencies[0].code())
                .unwrap_or(OfflineCurrency::JPY),
            not_after: now_s(now).saturating_add(365 * 86_400),
            name: name.clone(),
            signature: [0; 64],
        }
        .issue(&issuer);
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO offline_terminals (id, merchant_id, terminal_key, certificate, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
            params![
                id.to_vec(),
                &principal.user_id,
                terminal_key.to_vec(),
                certificate.encode(),
                now
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(TerminalView {
            id,
            certificate: certificate.encode(),
            name,
        })
    }

    /// Purses revoked whose certificates have not expired: what terminals must refuse (for
    /// merchants).
    pub async fn revoked_purses(&self, principal: &Principal) -> Result<Vec<[u8; 16]>, PayError> {
        principal.full()?;
        if principal.kind != UserKind::Merchant {
            return Err(PayError::Auth(koban_auth::AuthError::Forbidden(
                "the revocation list is for merchants' terminals",
            )));
        }
        let now = i64::from(now_s(self.now_ms()));
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT id FROM offline_purses WHERE status = 'revoked' AND not_after > $1 ORDER BY id",
                params![now],
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(|row| id16(&row.bytes(0)?)).collect()
    }

    /// Settles uploaded vouchers (QR text `KOV1:...`), from the merchant whose terminal took
    /// them or the customer whose purse signed them. Each is answered on its own; one that
    /// cannot be read or is not the caller's is refused and changes nothing.
    pub async fn upload_vouchers(
        &self,
        principal: &Principal,
        vouchers: &[String],
    ) -> Result<Vec<VoucherOutcome>, PayError> {
        principal.full()?;
        if !matches!(principal.kind, UserKind::Merchant | UserKind::Customer) {
            return Err(PayError::Invalid(
                "vouchers are uploaded by merchants and customers",
            ));
        }
        if vouchers.len() > VOUCHERS_PER_UPLOAD_MAX {
            return Err(PayError::Invalid("at most 200 vouchers per upload"));
        }
        let (_, _, keys) = self.offline_issuer().await?;
        let mut out = Vec::with_capacity(vouchers.len());
        for text in vouchers {
            out.push(self.upload_one(principal, &keys, text).await?);
        }
        Ok(out)
    }

    async fn upload_one(
        &self,
        principal: &Principal,
        keys: &IssuerKeys,
        text: &str,
    ) -> Result<VoucherOutcome, PayError> {
        let Ok(voucher) = Voucher::from_text(text) else {
            return Ok(VoucherOutcome::refused("malformed", None));
        };
        if let Err(refusal) = voucher.verify_signatures(keys) {
            return Ok(VoucherOutcome::refused(refusal.code(), Some(&voucher)));
        }
        let purse_id = voucher.certificate.purse;
        let Some(purse) = self.purse_row(&purse_id).await? else {
            return Ok(VoucherOutcome::refused("unknown_purse", Some(&voucher)));
        };
        if purse.certificate != voucher.certificate.encode() {
            return Ok(VoucherOutcome::refused("unknown_purse", Some(&voucher)));
        }
        let Some(merchant) = self.terminal_merchant(&voucher.content.terminal).await? else {
            return Ok(VoucherOutcome::refused("unknown_terminal", Some(&voucher)));
        };
        // The till's merchant settles it; the purse's owner only reports her copy.
        let settles = match principal.kind {
            UserKind::Merchant if principal.user_id == merchant => true,
            UserKind::Customer if principal.user_id == purse.user_id => false,
            _ => return Ok(VoucherOutcome::refused("not_yours", Some(&voucher))),
        };
        let _lock = self.lock_wallet(purse.reserve).await?;
        if settles {
            self.settle_voucher(&purse_id, &voucher, &merchant).await
        } else {
            self.report_voucher(&purse_id, &voucher).await
        }
    }

    async fn terminal_merchant(&self, terminal: &[u8; 16]) -> Result<Option<UserId>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT merchant_id FROM offline_terminals WHERE id = $1",
                params![terminal.to_vec()],
            )
            .await?;
        tx.commit().await?;
        row.map(|row| Ok(UserId::from_stored(row.text(0)?)))
            .transpose()
    }

    /// Decides one voucher of a purse (its lock held): the decision made before, with its
    /// money submitted again, or a new one, written with the purse's new state before its
    /// money moves.
    async fn settle_voucher(
        &self,
        purse_id: &[u8; 16],
        voucher: &Voucher,
        merchant: &UserId,
    ) -> Result<VoucherOutcome, PayError> {
        // Read again under the lock.
        let purse = self.purse_row(purse_id).await?.ok_or(PayError::NotFound)?;
        // A purse still loading never gave its certificate out (it is given once the money is
        // in the reserve), so nothing is paid from it.
        if !matches!(purse.view.status.as_str(), "open" | "revoked" | "closed") {
            return Ok(VoucherOutcome::refused("purse_not_loaded", Some(voucher)));
        }
        let content = voucher.content;
        let digest = content.digest(purse_id);
        let history = self.decided(purse_id).await?;
        if let Some(d) = history.iter().find(|d| d.digest == digest) {
            self.pay_decision(&purse, d).await?;
            return Ok(outcome(&content, purse_id, &d.decision, true));
        }
        if i64::try_from(history.len()).unwrap_or(i64::MAX) >= VOUCHERS_PER_PURSE_MAX {
            return Ok(VoucherOutcome::refused("too_many_vouchers", Some(voucher)));
        }
        let mut book = self.book(&purse, &history)?;
        let was_revoked = book.revoked;
        let now = self.now_ms();
        let settled = book.settle(&content, merchant_id16(merchant)?, now_s(now));
        let decision = settled.decision;
        let newly_revoked = book.revoked && !was_revoked;
        let (status, reason, double_spend, from_reserve, from_guarantee) = columns(&decision);
        let fee = match Amount::new(from_reserve + from_guarantee) {
            Ok(paid) => {
                let (_, bps, fixed) = self.merchant_terms(merchant).await?;
                self.fee(paid, bps, fixed)
            }
            Err(_) => 0,
        };
        let seq = i64::try_from(history.len()).unwrap_or(i64::MAX) + 1;
        let mut tx = self.db().begin().await?;
        tx.execute(
            "INSERT INTO offline_vouchers (purse_id, digest, counter, amount, cumulative, terminal_id, \
                          nonce, challenge_time, merchant_id, decision, reason, double_spend, from_reserve, \
             from_guarantee, fee, seq, uploaded_by, settled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
            params![
                purse_id.to_vec(),
                digest.to_vec(),
                i64::from(content.counter),
                i64::try_from(content.amount).unwrap_or(i64::MAX),
                i64::try_from(content.cumulative).unwrap_or(i64::MAX),
                content.terminal.to_vec(),
                content.nonce.to_vec(),
                i64::from(content.time),
                merchant,
                status,
                reason,
                double_spend,
                i64::try_from(from_reserve).unwrap_or(i64::MAX),
                                i64::try_from(from_guarantee).unwrap_or(i64::MAX),
                i64::try_from(fee).unwrap_or(i64::MAX),
                seq,
                "merchant",
                now
            ],
        )
        .await?;
        tx.execute(
            "UPDATE offline_purses SET reserve_left = $1, guarantee_left = $2, \
             status = CASE WHEN $3 = 1 AND status = 'open' THEN 'revoked' ELSE status END, \
             revoked_at = CASE WHEN $4 = 1 AND revoked_at IS NULL THEN $5 ELSE revoked_at END \
             WHERE id = $6",
            params![
                i64::try_from(book.reserve_left).unwrap_or(i64::MAX),
                i64::try_from(book.guarantee_left).unwrap_or(i64::MAX),
                i64::from(newly_revoked),
                i64::from(newly_revoked),
                now,
                purse_id.to_vec()
            ],
        )
        .await?;
        if newly_revoked {
            self.alert_double_spend(&mut tx, &purse, now, decision.double_spend())
                .await?;
        }
        tx.commit().await?;
        self.pay_decision(
            &purse,
            &Decided {
                content,
                digest,
                decision,
                merchant: merchant.clone(),
                fee,
            },
        )
        .await?;
        Ok(outcome(&content, purse_id, &decision, false))
    }

    /// The purse's settlement book as stored: its certificate's terms, its state and every
    /// decision so far (in the order made).
    fn book(&self, purse: &PurseRow, history: &[Decided]) -> Result<PurseBook, PayError> {
        let decided = history
            .iter()
            .map(|d| Ok((d.content, merchant_id16(&d.merchant)?, d.decision)))
            .collect::<Result<Vec<_>, PayError>>()?;
        // The policy the purse was issued under, not today's settings.
        let policy = Policy {
            guarantee_factor: purse.guarantee_factor,
            settle_window: purse.view.deadline.saturating_sub(purse.view.not_after),
        };
        Ok(PurseBook::restore(
            PurseBook::new(
                purse.view.id,
                purse.view.limit,
                purse.not_before,
                purse.view.not_after,
                policy,
            ),
            (
                purse.view.status == "revoked",
                purse.view.status == "closed",
            ),
            decided,
        ))
    }

    /// A customer's own copy of a voucher: it does not show that the terminal took it, so it
    /// is not paid; it is checked against what was settled, and double spending revokes the
    /// purse at once (its lock held).
    async fn report_voucher(
        &self,
        purse_id: &[u8; 16],
        voucher: &Voucher,
    ) -> Result<VoucherOutcome, PayError> {
        let purse = self.purse_row(purse_id).await?.ok_or(PayError::NotFound)?;
        let history = self.decided(purse_id).await?;
        let book = self.book(&purse, &history)?;
        let found = book.probe(&voucher.content);
        if let Some(found) = found
            && purse.view.status == "open"
        {
            let now = self.now_ms();
            let mut tx = self.db().begin().await?;
            tx.execute(
                "UPDATE offline_purses SET status = 'revoked', revoked_at = $1 \
                 WHERE id = $2 AND status = 'open'",
                params![now, purse_id.to_vec()],
            )
            .await?;
            self.alert_double_spend(&mut tx, &purse, now, Some(found))
                .await?;
            tx.commit().await?;
        }
        Ok(VoucherOutcome {
            purse: Some(*purse_id),
            counter: Some(voucher.content.counter),
            amount: Some(voucher.content.amount),
            status: "reported",
            reason: found.map(DoubleSpend::code),
            repeated: false,
        })
    }

    /// Raises the operators' alert (and case) for a purse found double spending, inside `tx`.
    async fn alert_double_spend<T: SqlTx>(
        &self,
        tx: &mut T,
        purse: &PurseRow,
        now: i64,
        found: Option<DoubleSpend>,
    ) -> Result<(), PayError> {
        tracing::warn!(
            purse = %uuid::Uuid::from_bytes(purse.view.id),
            reason = found.map_or("", DoubleSpend::code),
            "offline purse revoked: double spending"
        );
        crate::cases::raise_alert(
            tx,
            now,
            &crate::cases::NewAlert {
                rule: "offline.double_spend",
                reason: found.map_or("double_spend", DoubleSpend::code),
                action: "alert",
                score: 80,
                event_id: None,
                subject: &purse.user_id,
                subject_role: "customer",
            },
        )
        .await?;
        Ok(())
    }

    /// Every content of a purse decided so far, with its decision and merchant.
    async fn decided(&self, purse_id: &[u8; 16]) -> Result<Vec<Decided>, PayError> {
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT terminal_id, nonce, challenge_time, amount, counter, cumulative, digest, \
                                  decision, reason, double_spend, from_reserve, from_guarantee, merchant_id, fee \
                 FROM offline_vouchers WHERE purse_id = $1 ORDER BY seq",
                params![purse_id.to_vec()],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let bad = || PayError::Invalid("a stored offline voucher does not read");
                let content = VoucherContent {
                    terminal: id16(&row.bytes(0)?)?,
                    nonce: row.bytes(1)?.try_into().map_err(|_| bad())?,
                    time: u32::try_from(row.i64(2)?).map_err(|_| bad())?,
                    amount: crate::stored_minor(row.i64(3)?)?,
                    counter: u32::try_from(row.i64(4)?).map_err(|_| bad())?,
                    cumulative: crate::stored_minor(row.i64(5)?)?,
                };
                let digest: [u8; 32] = row.bytes(6)?.try_into().map_err(|_| bad())?;
                let double_spend = row
                    .opt_text(9)?
                    .map(|code| DoubleSpend::from_code(&code).ok_or_else(bad))
                    .transpose()?;
                let decision = match row.text(7)?.as_str() {
                    "paid" => Decision::Paid {
                        from_reserve: crate::stored_minor(row.i64(10)?)?,
                        from_guarantee: crate::stored_minor(row.i64(11)?)?,
                        double_spend,
                    },
                    _ => Decision::Unpaid {
                        reason: row
                            .opt_text(8)?
                            .and_then(|code| Unpaid::from_code(&code))
                            .ok_or_else(bad)?,
                        double_spend,
                    },
                };
                Ok(Decided {
                    content,
                    digest,
                    decision,
                    merchant: UserId::from_stored(row.text(12)?),
                    fee: crate::stored_minor(row.i64(13)?)?,
                })
            })
            .collect()
    }

    /// Submits a paid decision's money: reserve → merchant, fraud losses → merchant, the
    /// merchant's fee. Ids derive from the purse and the digest: a replay moves nothing twice.
    async fn pay_decision(&self, purse: &PurseRow, decided: &Decided) -> Result<(), PayError> {
        let Decision::Paid {
            from_reserve,
            from_guarantee,
            ..
        } = decided.decision
        else {
            return Ok(());
        };
        let digest = &decided.digest;
        let currency = purse.view.currency;
        let merchant_account = self.wallet(&decided.merchant, currency).await?.account;
        let mut batch = Vec::new();
        let mut first = None;
        for (part, source, label) in [
            (
                from_reserve,
                purse.reserve,
                b"offline-reserve-pay".as_slice(),
            ),
            (
                from_guarantee,
                IssuerAccount::FraudLosses.id(currency),
                b"offline-guarantee-pay".as_slice(),
            ),
        ] {
            let Ok(amount) = Amount::new(part) else {
                continue;
            };
            let id = self.derive_id(&[label, &purse.view.id, digest]);
            first.get_or_insert(id);
            batch.push(TransferRequest::Move(Move {
                id,
                debit: source,
                credit: merchant_account,
                amount,
                currency,
                code: kind::OFFLINE_PAYMENT,
                reference: None,
                metadata: Metadata::empty(),
                pending: None,
            }));
        }
        // The fee as decided: a replay submits exactly the batch first submitted.
        if let Ok(fee) = Amount::new(decided.fee) {
            batch.push(TransferRequest::Move(Move {
                id: self.derive_id(&[b"offline-fee", &purse.view.id, digest]),
                debit: merchant_account,
                credit: IssuerAccount::FeeRevenue.id(currency),
                amount: fee,
                currency,
                code: kind::FEE,
                reference: first,
                metadata: Metadata::empty(),
                pending: None,
            }));
        }
        self.submit_batch(batch).await.map(|_| ())
    }

    /// Closes every purse whose settlement window has ended: submits again the money of its
    /// paid vouchers (a replay when it moved), then gives what is left of the reserve back to
    /// the wallet (e-money up). Returns how many purses closed.
    pub async fn close_due_purses(&self) -> Result<usize, PayError> {
        let now = self.now_ms();
        let mut tx = self.db().begin_read().await?;
        let rows = tx
            .query(
                "SELECT id FROM offline_purses WHERE status NOT IN ('closed', 'failed') AND deadline <= $1 \
                 ORDER BY deadline LIMIT 100",
                params![i64::from(now_s(now))],
            )
            .await?;
        tx.commit().await?;
        let mut closed = 0;
        for row in rows {
            let id = id16(&row.bytes(0)?)?;
            // One purse that cannot close now (a frozen wallet, the database's trouble) is
            // tried again next time; the others close.
            match self.close_purse(&id).await {
                Ok(true) => closed += 1,
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    purse = %uuid::Uuid::from_bytes(id),
                    %error,
                    "an offline purse could not close; will retry"
                ),
            }
        }
        Ok(closed)
    }

    /// Closes one purse past its deadline (see [`Payments::close_due_purses`]).
    async fn close_purse(&self, id: &[u8; 16]) -> Result<bool, PayError> {
        let Some(purse) = self.purse_row(id).await? else {
            return Ok(false);
        };
        let _lock = self.lock_wallet(purse.reserve).await?;
        let Some(purse) = self.purse_row(id).await? else {
            return Ok(false);
        };
        if purse.view.status == "closed" || purse.view.status == "failed" {
            return Ok(false);
        }
        // Never confirmed: its load either moved (a replay now) or is refused.
        let _ = self.finish_load(&purse, purse.view.currency).await;
        for decided in self.decided(id).await? {
            self.pay_decision(&purse, &decided).await?;
        }
        let reserve: Account = self.ledger_account(purse.reserve).await?;
        let left = u64::try_from(reserve.balance.net_credit_posted()).unwrap_or(0);
        if let Ok(amount) = Amount::new(left) {
            let batch = self
                .reserve_batch(&purse, purse.view.currency, amount, ReserveMove::Return)
                .await?;
            self.submit_batch(batch).await?;
        }
        let mut tx = self.db().begin().await?;
        tx.execute(
            "UPDATE offline_purses SET status = 'closed', reserve_left = 0, closed_at = $1 \
             WHERE id = $2 AND status NOT IN ('closed', 'failed')",
            params![self.now_ms(), id.to_vec()],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The issuer's exposure to offline payments (operators).
    pub async fn offline_exposure(&self, principal: &Principal) -> Result<Exposure, PayError> {
        principal.operator(&[
            koban_auth::Role::Analyst,
            koban_auth::Role::Approver,
            koban_auth::Role::Support,
        ])?;
        let mut tx = self.db().begin_read().await?;
        let row = tx
            .query_one(
                "SELECT \
                 (SELECT COUNT(*) FROM offline_purses WHERE status IN ('open', 'revoked')), \
                 (SELECT COUNT(*) FROM offline_purses WHERE status = 'revoked'), \
                 (SELECT CAST(COALESCE(SUM(reserve_left), 0) AS BIGINT) FROM offline_purses WHERE status IN ('open', 'revoked')), \
                 (SELECT CAST(COALESCE(SUM(guarantee_left), 0) AS BIGINT) FROM offline_purses WHERE status IN ('open', 'revoked')), \
                 (SELECT CAST(COALESCE(SUM(from_guarantee), 0) AS BIGINT) FROM offline_vouchers)",
                params![],
            )
            .await?;
        tx.commit().await?;
        let offline = self.config.offline;
        Ok(Exposure {
            purses_open: row.i64(0)?,
            purses_revoked: row.i64(1)?,
            reserve_minor: row.i64(2)?,
            exposure_minor: row.i64(3)?,
            losses_minor: row.i64(4)?,
            bound_per_purse_minor: offline.policy.bound(offline.purse_max_minor),
        })
    }
}

/// A merchant's name as a terminal certificate carries it: trimmed, control characters
/// dropped, cut at a character boundary within [`koban_offline::NAME_MAX`] bytes.
fn certified_name(name: &str) -> String {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    let mut out = String::new();
    for c in clean.trim().chars() {
        if out.len() + c.len_utf8() > koban_offline::NAME_MAX {
            break;
        }
        out.push(c);
    }
    let out = out.trim().to_owned();
    if TerminalCertificate::valid_name(&out) {
        out
    } else {
        "Koban merchant".to_owned()
    }
}

fn columns(
    decision: &Decision,
) -> (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    u64,
    u64,
) {
    match *decision {
        Decision::Paid {
            from_reserve,
            from_guarantee,
            double_spend,
        } => (
            "paid",
            None,
            double_spend.map(DoubleSpend::code),
            from_reserve,
            from_guarantee,
        ),
        Decision::Unpaid {
            reason,
            double_spend,
        } => (
            "unpaid",
            Some(reason.code()),
            double_spend.map(DoubleSpend::code),
            0,
            0,
        ),
    }
}

fn outcome(
    content: &VoucherContent,
    purse: &[u8; 16],
    decision: &Decision,
    repeated: bool,
) -> VoucherOutcome {
    let (status, reason, ..) = columns(decision);
    VoucherOutcome {
        purse: Some(*purse),
        counter: Some(content.counter),
        amount: Some(content.amount),
        status,
        reason,
        repeated,
    }
}

/// The columns [`PurseRow::read`] reads, in its order.
macro_rules! purse_columns {
    () => {
        "id, user_id, currency, reserve_account, amount, device_key, certificate, \
         not_before, not_after, deadline, status, reserve_left, guarantee_factor"
    };
}
use purse_columns;

struct PurseRow {
    view: PurseView,
    user_id: UserId,
    reserve: AccountId,
    device_key: PublicKey,
    certificate: Vec<u8>,
    not_before: u32,
    guarantee_factor: u64,
}

/// A decided voucher as stored.
struct Decided {
    content: VoucherContent,
    digest: [u8; 32],
    decision: Decision,
    merchant: UserId,
    fee: u64,
}

/// Which way money moves between a purse's reserve and its owner's wallet.
#[derive(Clone, Copy)]
enum ReserveMove {
    Load,
    Return,
}

enum PurseStanding {
    None,
    NotClosed,
    Revoked,
}

impl PurseRow {
    fn read(row: &koban_store::sql::Row) -> Result<PurseRow, PayError> {
        let bad = || PayError::Invalid("a stored offline purse does not read");
        let limit = crate::stored_minor(row.i64(4)?)?;
        let reserve_left = crate::stored_minor(row.i64(11)?)?;
        let certificate = row.bytes(6)?;
        Ok(PurseRow {
            view: PurseView {
                id: id16(&row.bytes(0)?)?,
                // The certificate is given only once its money is in the reserve.
                certificate: if matches!(row.text(10)?.as_str(), "open" | "revoked") {
                    certificate.clone()
                } else {
                    Vec::new()
                },
                currency: crate::wallets::currency_of(&row.text(2)?)?,
                limit,
                not_after: u32::try_from(row.i64(8)?).map_err(|_| bad())?,
                deadline: u32::try_from(row.i64(9)?).map_err(|_| bad())?,
                status: row.text(10)?,
                settled: limit.saturating_sub(reserve_left),
                reserve_left,
            },
            user_id: UserId::from_stored(row.text(1)?),
            reserve: crate::wallets::account_id(&row.bytes(3)?)?,
            device_key: row.bytes(5)?.try_into().map_err(|_| bad())?,
            certificate,
            not_before: u32::try_from(row.i64(7)?).map_err(|_| bad())?,
            guarantee_factor: crate::stored_minor(row.i64(12)?)?,
        })
    }
}
