//! Writing notices into the transactional outbox: a notice is written in the same transaction
//! as the event it reports, rendered in the language of the account it goes to. Delivery (the
//! worker, SMTP, the local mailbox) belongs to identity, which owns the addresses.

use koban_store::sql::{SqlTx, SqlTxExt};
use koban_store::{StoreError, params};

use crate::lang::Lang;
use crate::mail::Mail;
use crate::new_id;
use crate::personal::{self, Index, Vault};

/// Writes a notice into the outbox inside `tx`, in the language of the account `recipient`
/// belongs to (English for an address no account has), unless the notice names its own.
pub async fn enqueue<T: SqlTx>(
    tx: &mut T,
    vault: &Vault,
    now_ms: i64,
    recipient: &str,
    mail: &Mail,
) -> Result<(), StoreError> {
    enqueue_once(tx, vault, &new_id(), now_ms, recipient, mail)
        .await
        .map(|_| ())
}

/// [`enqueue`] under a stable id (`event_id`, derived from what the notice reports): writing
/// the same notice again, as a retried request does after a crash, adds nothing. Answers
/// whether it was new.
pub async fn enqueue_once<T: SqlTx>(
    tx: &mut T,
    vault: &Vault,
    event_id: &str,
    now_ms: i64,
    recipient: &str,
    mail: &Mail,
) -> Result<bool, StoreError> {
    let lang = match mail.lang() {
        Some(lang) => lang,
        None => recipient_lang(tx, vault, recipient).await?,
    };
    let (subject, body) = mail.render(lang);
    let written = tx
        .execute(
            "INSERT INTO outbox (id, recipient, recipient_index, subject, body, created_at, attempts, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $6) ON CONFLICT (id) DO NOTHING",
            params![
                event_id,
                vault.seal(&personal::OUTBOX_RECIPIENT, recipient),
                vault.index(Index::Email, recipient),
                vault.seal(&personal::OUTBOX_SUBJECT, &subject),
                vault.seal(&personal::OUTBOX_BODY, &body),
                now_ms
            ],
        )
        .await?;
    Ok(written == 1)
}

/// Writes a notice to the account `user_id`, at its current address (nothing when no account
/// has that id).
pub async fn enqueue_to_user<T: SqlTx>(
    tx: &mut T,
    vault: &Vault,
    now_ms: i64,
    user_id: &str,
    mail: &Mail,
) -> Result<(), StoreError> {
    let row = tx
        .query_opt("SELECT email FROM users WHERE id = $1", params![user_id])
        .await?;
    match row {
        Some(row) => {
            let email = vault.open(&personal::USER_EMAIL, &row.text(0)?)?;
            enqueue(tx, vault, now_ms, &email, mail).await
        }
        None => Ok(()),
    }
}

/// The language the account with this address reads (English when no account has it).
async fn recipient_lang<T: SqlTx>(
    tx: &mut T,
    vault: &Vault,
    email: &str,
) -> Result<Lang, StoreError> {
    let row = tx
        .query_opt(
            "SELECT lang FROM users WHERE email_index = $1",
            params![vault.index(Index::Email, email)],
        )
        .await?;
    Ok(match row {
        Some(row) => Lang::parse(&row.text(0)?).unwrap_or(Lang::En),
        None => Lang::En,
    })
}

/// The language an account reads, by its id.
pub async fn user_lang<T: SqlTx>(tx: &mut T, user_id: &str) -> Result<Lang, StoreError> {
    let row = tx
        .query_opt("SELECT lang FROM users WHERE id = $1", params![user_id])
        .await?;
    Ok(match row {
        Some(row) => Lang::parse(&row.text(0)?).unwrap_or(Lang::En),
        None => Lang::En,
    })
}
