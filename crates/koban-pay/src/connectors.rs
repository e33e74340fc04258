//! The banks and card acquirers Koban moves money through, each behind a connector trait:
//! [`BankConnector`] (link an account, top up, pay out, the status of an operation, statement
//! import) and [`AcquirerConnector`] (authorise and capture a card top-up).
//!
//! Implementations: the **sandbox** bank and acquirer (simulations in Koban's own tables, on
//! only with `--sandbox`/`--dev`), and the **ISO 20022 file bank** ([`FileBank`], on with
//! `--bank-account`): payouts and micro-deposits go out as `pain.001` files the operator's
//! bank channel picks up; `camt.053`/`camt.054` files read back settle top-ups and payouts
//! (`statements.rs`). The ledger side of every operation (holds posted or voided) is the same
//! for every bank, in `bank.rs`.

use async_trait::async_trait;
use koban_ledger::{Amount, Currency, TransferId};
use koban_shared::personal::{self, Vault};
use koban_store::params;
use koban_store::sql::SqlTx;

use crate::PayError;
use crate::iso20022::{self, Statement, ZenginAccount};

pub const SANDBOX_BANK: &str = "sandbox";
pub const FILE_BANK: &str = "iso20022";

/// What a bank says about an account being linked, before any money moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// The bank told the holder's name (the sandbox does; Japan's banks answer a name query).
    Named(String),
    /// The bank does not tell: the micro-deposits go out in the customer's verified legal
    /// name, and a bank returns a transfer whose name does not match the account.
    Unknown,
    NoSuchAccount,
}

/// What the bank did with a top-up or payout, when asked at its due time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused,
    /// Not known yet (a statement will say); asked again later.
    Waiting,
}

/// A top-up or payout, as a bank sees it.
#[derive(Clone, Debug)]
pub struct Instruction<'a> {
    pub id: TransferId,
    /// `topup` or `payout`.
    pub kind: &'a str,
    pub amount: Amount,
    pub currency: Currency,
    /// The customer's (or merchant's) account, in the bank's normal form.
    pub account: &'a str,
    pub holder_name: &'a str,
    /// The operation's reference: quoted by the customer's transfer of a top-up, and the
    /// end-to-end id of a payout.
    pub reference: &'a str,
}

/// How a customer pays a top-up in, when the bank does not pull it: to this account, quoting
/// this reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayIn {
    pub pay_to: String,
    pub reference: String,
}

/// A bank Koban links accounts at and settles top-ups and payouts with. `T` is the database
/// transaction its writes join, so they commit with the operation's own.
#[async_trait]
pub trait BankConnector<T: SqlTx>: Send + Sync {
    /// The id stored with each funding source (`sandbox`, `iso20022`).
    fn id(&self) -> &'static str;
    /// An account number in this bank's normal form, or why it is not one.
    fn normalise_account(&self, number: &str) -> Result<String, PayError>;
    /// The holder's name of an account, if the bank tells it.
    async fn holder(&self, tx: &mut T, vault: &Vault, number: &str) -> Result<Holder, PayError>;
    /// Sends a link's two micro-deposits to the account (in `tx`).
    #[allow(clippy::too_many_arguments)]
    async fn send_micro_deposits(
        &self,
        tx: &mut T,
        vault: &Vault,
        source_id: &str,
        number: &str,
        holder_name: &str,
        amounts: [i64; 2],
        now: i64,
    ) -> Result<(), PayError>;
    /// Seconds after it is made that an operation's status is first asked.
    fn status_after_s(&self) -> i64;
    /// How long a payout's hold may wait before it releases itself; `None` for a bank whose
    /// payouts, once sent, only a statement can finish (money that left is never released).
    fn payout_hold_s(&self) -> Option<u32>;
    /// Instructs a new operation (in `tx`): for a top-up the customer pushes, the account and
    /// reference to quote.
    async fn instruct(
        &self,
        tx: &mut T,
        vault: &Vault,
        instruction: &Instruction<'_>,
        now: i64,
    ) -> Result<Option<PayIn>, PayError>;
    /// What became of an operation whose status time has come.
    async fn status(&self, tx: &mut T, instruction: &Instruction<'_>) -> Result<Verdict, PayError>;
    /// Records at the bank's side that an operation settled (the sandbox's own statement).
    async fn record_settled(
        &self,
        tx: &mut T,
        instruction: &Instruction<'_>,
        now: i64,
    ) -> Result<(), PayError>;
    /// How a customer pays in the top-up with `reference`, for a bank whose top-ups the
    /// customer pushes; `None` for a bank that pulls them.
    fn pay_in(&self, reference: &str) -> Option<PayIn>;
    /// Reads a statement file of this bank.
    fn read_statement(&self, file: &str) -> Result<Statement, PayError>;
}

/// How a sandbox bank account behaves when Koban settles with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// Every debit and credit is refused at settlement (a closed account, no funds).
    FailsSettlement,
}

impl Behaviour {
    pub fn parse(text: &str) -> Result<Behaviour, PayError> {
        match text {
            "normal" => Ok(Behaviour::Normal),
            "fails_settlement" => Ok(Behaviour::FailsSettlement),
            _ => Err(PayError::Invalid(
                "behaviour must be normal or fails_settlement",
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::Normal => "normal",
            Behaviour::FailsSettlement => "fails_settlement",
        }
    }
}

/// The sandbox bank: accounts and statements in Koban's own tables; it settles every
/// operation `settle_after_s` after it is made, refusing those of a `fails_settlement`
/// account.
pub struct SandboxBank {
    pub settle_after_s: i64,
}

/// The sandbox account `number`: its holder's name and behaviour.
pub async fn sandbox_account<T: SqlTx>(
    tx: &mut T,
    number: &str,
) -> Result<Option<(String, Behaviour)>, PayError> {
    use koban_store::sql::SqlTxExt;
    let row = tx
        .query_opt(
            "SELECT holder_name, behaviour FROM sandbox_bank_accounts WHERE number = $1",
            params![number],
        )
        .await?;
    row.map(|r| Ok((r.text(0)?, Behaviour::parse(&r.text(1)?)?)))
        .transpose()
}

async fn sandbox_entry<T: SqlTx>(
    tx: &mut T,
    id: &str,
    number: &str,
    amount: i64,
    description: &str,
    now: i64,
) -> Result<(), PayError> {
    tx.execute(
        "INSERT INTO sandbox_bank_entries (id, number, amount, description, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        params![id, number, amount, description, now],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl<T: SqlTx> BankConnector<T> for SandboxBank {
    fn id(&self) -> &'static str {
        SANDBOX_BANK
    }

    fn normalise_account(&self, number: &str) -> Result<String, PayError> {
        if number.len() != 7 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PayError::Invalid("a sandbox account number has 7 digits"));
        }
        Ok(number.to_owned())
    }

    async fn holder(&self, tx: &mut T, vault: &Vault, number: &str) -> Result<Holder, PayError> {
        Ok(match sandbox_account(tx, number).await? {
            Some((name, _)) => Holder::Named(vault.open(&personal::SANDBOX_HOLDER, &name)?),
            None => Holder::NoSuchAccount,
        })
    }

    async fn send_micro_deposits(
        &self,
        tx: &mut T,
        _vault: &Vault,
        source_id: &str,
        number: &str,
        _holder_name: &str,
        amounts: [i64; 2],
        now: i64,
    ) -> Result<(), PayError> {
        for (i, amount) in amounts.into_iter().enumerate() {
            sandbox_entry(
                tx,
                &format!("{source_id}-{i}"),
                number,
                amount,
                "KOBAN VERIFY",
                now,
            )
            .await?;
        }
        Ok(())
    }

    fn status_after_s(&self) -> i64 {
        self.settle_after_s
    }

    fn payout_hold_s(&self) -> Option<u32> {
        Some(crate::bank::BANK_HOLD_S)
    }

    async fn instruct(
        &self,
        _tx: &mut T,
        _vault: &Vault,
        _instruction: &Instruction<'_>,
        _now: i64,
    ) -> Result<Option<PayIn>, PayError> {
        // The sandbox pulls top-ups and pushes payouts by itself at settlement.
        Ok(None)
    }

    async fn status(&self, tx: &mut T, instruction: &Instruction<'_>) -> Result<Verdict, PayError> {
        Ok(match sandbox_account(tx, instruction.account).await? {
            Some((_, Behaviour::Normal)) => Verdict::Accepted,
            Some((_, Behaviour::FailsSettlement)) | None => Verdict::Refused,
        })
    }

    async fn record_settled(
        &self,
        tx: &mut T,
        instruction: &Instruction<'_>,
        now: i64,
    ) -> Result<(), PayError> {
        let topup = instruction.kind == "topup";
        let amount = instruction.amount.to_i64();
        sandbox_entry(
            tx,
            &uuid::Uuid::from_u128(instruction.id.get()).to_string(),
            instruction.account,
            if topup { -amount } else { amount },
            if topup { "KOBAN TOPUP" } else { "KOBAN PAYOUT" },
            now,
        )
        .await
    }

    fn pay_in(&self, _reference: &str) -> Option<PayIn> {
        None
    }

    fn read_statement(&self, _file: &str) -> Result<Statement, PayError> {
        Err(PayError::Invalid(
            "the sandbox bank settles by itself; it has no statement files",
        ))
    }
}

/// A bank reached by ISO 20022 files: Koban writes `pain.001` credit transfers (payouts and
/// micro-deposits) for the operator's bank channel, and reads the bank's `camt.053`/`camt.054`
/// files to settle. Customers top up by a transfer to the issuer's account quoting the
/// top-up's reference. Accounts are Zengin accounts (`0001-123-1234567`).
#[derive(Clone, Debug)]
pub struct FileBank {
    /// The issuer's own account at the bank: the debtor of payouts, the creditor of top-ups.
    pub account: ZenginAccount,
    /// The issuer's name on the files.
    pub name: String,
    /// The folder `pain.001` files are written to, if any.
    pub outbox: Option<std::path::PathBuf>,
}

#[async_trait]
impl<T: SqlTx> BankConnector<T> for FileBank {
    fn id(&self) -> &'static str {
        FILE_BANK
    }

    fn normalise_account(&self, number: &str) -> Result<String, PayError> {
        Ok(ZenginAccount::parse(number)?.to_text())
    }

    async fn holder(&self, _tx: &mut T, _vault: &Vault, _number: &str) -> Result<Holder, PayError> {
        Ok(Holder::Unknown)
    }

    async fn send_micro_deposits(
        &self,
        tx: &mut T,
        vault: &Vault,
        source_id: &str,
        number: &str,
        holder_name: &str,
        amounts: [i64; 2],
        now: i64,
    ) -> Result<(), PayError> {
        let compact = source_id.replace('-', "");
        for (i, amount) in amounts.into_iter().enumerate() {
            queue_transfer(
                tx,
                vault,
                &format!("{compact}-{i}"),
                "micro_deposit",
                Some(source_id),
                None,
                number,
                holder_name,
                amount,
                Currency::Jpy,
                now,
            )
            .await?;
        }
        Ok(())
    }

    fn status_after_s(&self) -> i64 {
        // Asked when a top-up's hold is about to release itself: no statement line came.
        i64::from(crate::bank::BANK_HOLD_S) - 3600
    }

    fn payout_hold_s(&self) -> Option<u32> {
        None
    }

    async fn instruct(
        &self,
        tx: &mut T,
        vault: &Vault,
        instruction: &Instruction<'_>,
        now: i64,
    ) -> Result<Option<PayIn>, PayError> {
        if instruction.kind == "topup" {
            return Ok(<FileBank as BankConnector<T>>::pay_in(
                self,
                instruction.reference,
            ));
        }
        queue_transfer(
            tx,
            vault,
            instruction.reference,
            "payout",
            None,
            Some(instruction.id),
            instruction.account,
            instruction.holder_name,
            instruction.amount.to_i64(),
            instruction.currency,
            now,
        )
        .await?;
        Ok(None)
    }

    async fn status(
        &self,
        _tx: &mut T,
        instruction: &Instruction<'_>,
    ) -> Result<Verdict, PayError> {
        // A top-up no statement has shown within its hold was never paid in. A payout that
        // went out is finished only by the statement's debit (or its return).
        Ok(if instruction.kind == "topup" {
            Verdict::Refused
        } else {
            Verdict::Waiting
        })
    }

    async fn record_settled(
        &self,
        _tx: &mut T,
        _instruction: &Instruction<'_>,
        _now: i64,
    ) -> Result<(), PayError> {
        Ok(())
    }

    fn pay_in(&self, reference: &str) -> Option<PayIn> {
        Some(PayIn {
            pay_to: format!("{} {}", self.account.to_text(), self.name),
            reference: reference.to_owned(),
        })
    }

    fn read_statement(&self, file: &str) -> Result<Statement, PayError> {
        let statement = iso20022::read_statement(file)?;
        // Every report of the file is about the issuer's own account (its number, and its bank
        // and branch where the file names them).
        let ours = format!("{}{}", self.account.bank, self.account.branch);
        let foreign = statement.accounts.iter().any(|reported| {
            reported.number != self.account.number
                || reported
                    .bank_branch
                    .as_ref()
                    .is_some_and(|code| *code != ours)
        });
        if statement.accounts.is_empty() || foreign {
            return Err(PayError::Invalid(
                "this statement is for another account than the issuer's",
            ));
        }
        Ok(statement)
    }
}

/// Queues a credit transfer for the next `pain.001` file.
#[allow(clippy::too_many_arguments)]
async fn queue_transfer<T: SqlTx>(
    tx: &mut T,
    vault: &Vault,
    end_to_end_id: &str,
    kind: &str,
    source: Option<&str>,
    operation: Option<TransferId>,
    account: &str,
    holder_name: &str,
    amount: i64,
    currency: Currency,
    now: i64,
) -> Result<(), PayError> {
    tx.execute(
        "INSERT INTO bank_instructions (end_to_end_id, kind, source_id, operation_id, account, holder_name, amount, currency, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (end_to_end_id) DO NOTHING",
        params![
            end_to_end_id,
            kind,
            source.map(str::to_owned),
            operation.map(|id| id.to_bytes().to_vec()),
            account,
            vault.seal(&personal::INSTRUCTION_HOLDER, holder_name),
            amount,
            currency.code(),
            now
        ],
    )
    .await?;
    Ok(())
}

/// A card top-up's fate at the acquirer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authorisation {
    Approved,
    Declined,
    /// The card's issuer wants the customer to pass a challenge every time.
    ChallengeEveryTime,
}

/// A card acquirer: authorises a top-up from a customer's card and captures it at settlement.
pub trait AcquirerConnector: Send + Sync {
    fn id(&self) -> &'static str;
    /// How the acquirer treats a card, from what it recorded when the card was added.
    fn authorise(&self, card_behaviour: &str) -> Authorisation;
    /// Whether an authorised top-up captures at settlement.
    fn capture(&self, card_behaviour: &str) -> Verdict;
    /// What to record about a card when it is added (the sandbox's test cards).
    fn behaviour_of(&self, digits: &str) -> &'static str;
}

/// The sandbox acquirer: `4000 0000 0000 0002` is declined, `4000 0000 0000 3220` is
/// challenged every time, every other valid card is approved; authorised top-ups capture.
pub struct SandboxAcquirer;

impl AcquirerConnector for SandboxAcquirer {
    fn id(&self) -> &'static str {
        "sandbox"
    }

    fn authorise(&self, card_behaviour: &str) -> Authorisation {
        match card_behaviour {
            "declines" => Authorisation::Declined,
            "always_challenge" => Authorisation::ChallengeEveryTime,
            _ => Authorisation::Approved,
        }
    }

    fn capture(&self, _card_behaviour: &str) -> Verdict {
        Verdict::Accepted
    }

    fn behaviour_of(&self, digits: &str) -> &'static str {
        match digits {
            "4000000000000002" => "declines",
            "4000000000003220" => "always_challenge",
            _ => "normal",
        }
    }
}
