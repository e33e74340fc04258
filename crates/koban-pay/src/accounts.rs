//! The ledger accounts payments use: the issuer's own (one of each per currency, with fixed
//! ids), and the codes that classify accounts and transfers.

use koban_ledger::{Account, AccountFlags, AccountId, Code, Currency, NewAccount};
use koban_store::LedgerStore;

use crate::{PayError, Payments};

/// Account codes.
pub const WALLET: Code = Code(1);
pub const MERCHANT: Code = Code(2);
/// An offline purse's reserve: the customer's money set aside for offline payments.
pub const OFFLINE_RESERVE: Code = Code(3);

/// Transfer codes (what a movement was, for history and statements).
pub mod kind {
    use koban_ledger::Code;
    pub const TOPUP: Code = Code(100);
    pub const PAYOUT: Code = Code(101);
    pub const P2P: Code = Code(102);
    pub const MERCHANT_PAYMENT: Code = Code(103);
    pub const FEE: Code = Code(104);
    pub const REFUND: Code = Code(105);
    /// The memo leg on e-money outstanding.
    pub const EMONEY: Code = Code(106);
    pub const REVIEW_HOLD: Code = Code(107);
    pub const REVIEW_RELEASE: Code = Code(108);
    pub const SANDBOX_FAUCET: Code = Code(109);
    /// A purchase with an issued card (held at authorization, posted at clearing).
    pub const CARD_PAYMENT: Code = Code(110);
    pub const CARD_REFUND: Code = Code(111);
    /// An analyst's reversal of a fraudulent transfer (receiver back to payer).
    pub const REVERSAL: Code = Code(112);
    /// A victim made whole from the fraud-losses account.
    pub const COMPENSATION: Code = Code(113);
    /// Wallet to an offline purse's reserve.
    pub const OFFLINE_LOAD: Code = Code(114);
    /// An offline voucher paid to its merchant (from the reserve, or the issuer's guarantee).
    pub const OFFLINE_PAYMENT: Code = Code(115);
    /// What is left of a closed purse's reserve, back to the wallet.
    pub const OFFLINE_RETURN: Code = Code(116);

    pub fn name(code: Code) -> &'static str {
        match code {
            TOPUP => "topup",
            PAYOUT => "payout",
            P2P => "p2p",
            MERCHANT_PAYMENT => "merchant_payment",
            FEE => "fee",
            REFUND => "refund",
            EMONEY => "emoney",
            REVIEW_HOLD => "review_hold",
            REVIEW_RELEASE => "review_release",
            SANDBOX_FAUCET => "sandbox_faucet",
            CARD_PAYMENT => "card_payment",
            CARD_REFUND => "card_refund",
            REVERSAL => "reversal",
            COMPENSATION => "compensation",
            OFFLINE_LOAD => "offline_load",
            OFFLINE_PAYMENT => "offline_payment",
            OFFLINE_RETURN => "offline_return",
            _ => "other",
        }
    }
}

/// The issuer's own accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuerAccount {
    /// Credit-normal: what the issuer owes its customers; always the sum of customer wallets.
    EmoneyOutstanding,
    /// The memo counterpart of e-money outstanding.
    EmoneyControl,
    /// What the (sandbox) bank holds for the issuer: top-ups arrive here, payouts leave.
    BankSettlement,
    /// Card acquirer settlement (card top-ups; not used yet).
    AcquirerSettlement,
    /// Merchant fees earned.
    FeeRevenue,
    /// Money held for review.
    Suspense,
    /// Compensation paid to fraud victims.
    FraudLosses,
    /// What the issuer owes the card network for its cards' purchases (card authorizations
    /// are held towards it, clearings posted to it, refunds come from it).
    CardNetworkSettlement,
}

impl IssuerAccount {
    pub const ALL: [IssuerAccount; 8] = [
        IssuerAccount::EmoneyOutstanding,
        IssuerAccount::EmoneyControl,
        IssuerAccount::BankSettlement,
        IssuerAccount::AcquirerSettlement,
        IssuerAccount::FeeRevenue,
        IssuerAccount::Suspense,
        IssuerAccount::FraudLosses,
        IssuerAccount::CardNetworkSettlement,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IssuerAccount::EmoneyOutstanding => "emoney_outstanding",
            IssuerAccount::EmoneyControl => "emoney_control",
            IssuerAccount::BankSettlement => "bank_settlement:sandbox",
            IssuerAccount::AcquirerSettlement => "acquirer_settlement:sandbox",
            IssuerAccount::FeeRevenue => "fee_revenue",
            IssuerAccount::Suspense => "suspense",
            IssuerAccount::FraudLosses => "fraud_losses",
            IssuerAccount::CardNetworkSettlement => "card_network_settlement",
        }
    }

    fn code(self) -> Code {
        Code(
            10 + IssuerAccount::ALL
                .iter()
                .position(|a| *a == self)
                .unwrap_or(0) as u16,
        )
    }

    fn flags(self) -> AccountFlags {
        AccountFlags {
            credits_must_not_exceed_debits: false,
            // Revenue and outstanding e-money are credit-normal and can never go the other way.
            debits_must_not_exceed_credits: matches!(
                self,
                IssuerAccount::EmoneyOutstanding | IssuerAccount::FeeRevenue
            ),
            frozen: false,
            closed: false,
        }
    }

    /// The fixed ledger id of this account in `currency`.
    pub fn id(self, currency: Currency) -> AccountId {
        let digest = koban_shared::sha256(
            format!("koban/issuer/v1/{}/{}", self.name(), currency.code()).as_bytes(),
        );
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        AccountId::new(u128::from_be_bytes(bytes).max(1))
            .unwrap_or_else(|_| unreachable!("never zero"))
    }
}

/// Flags of a wallet or merchant balance: it may never go negative.
pub fn holder_flags() -> AccountFlags {
    AccountFlags {
        debits_must_not_exceed_credits: true,
        ..AccountFlags::default()
    }
}

impl<S: LedgerStore> Payments<S> {
    /// Opens the issuer's accounts in every configured currency (idempotent); called at start.
    pub async fn open_issuer_accounts(&self) -> Result<(), PayError> {
        let mut new = Vec::new();
        for currency in &self.config.currencies {
            for account in IssuerAccount::ALL {
                new.push(NewAccount {
                    id: account.id(*currency),
                    currency: *currency,
                    code: account.code(),
                    flags: account.flags(),
                });
            }
        }
        for result in self.store.create_accounts(new).await? {
            result
                .map_err(|_| PayError::Conflict("an issuer account exists with other settings"))?;
        }
        Ok(())
    }

    /// The issuer's accounts with their balances, in every configured currency.
    pub async fn issuer_accounts(&self) -> Result<Vec<(IssuerAccount, Account)>, PayError> {
        let mut out = Vec::new();
        for currency in &self.config.currencies {
            for which in IssuerAccount::ALL {
                let account = self
                    .store
                    .account(which.id(*currency))
                    .await?
                    .ok_or(PayError::NotFound)?;
                out.push((which, account));
            }
        }
        Ok(out)
    }
}
