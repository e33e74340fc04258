//! What an operator may see of a customer: masked by default (the first letter of the
//! address, the last two digits of the phone), and in full only after naming a reason, which
//! the audit chain records with the operator's name.

use koban_shared::personal;
use koban_store::params;
use koban_store::sql::{SqlDb, SqlTx, SqlTxExt};

use crate::model::{Role, UserKind};
use crate::sessions::Principal;
use crate::{Auth, AuthError};
use koban_shared::audit::{AuditEvent, append};
use koban_shared::ids::UserId;

/// Every operator role that works with customers.
const SEES_CUSTOMERS: &[Role] = &[Role::Analyst, Role::Support, Role::Approver];

/// A customer as an operator first sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerCard {
    pub user_id: UserId,
    pub kind: UserKind,
    pub email_masked: String,
    pub phone_masked: Option<String>,
    /// `active` or `frozen` (the account's sign-in state, not its wallets').
    pub status: String,
    pub created_at_ms: i64,
}

/// A customer's contact in full, after a reason was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub email: String,
    pub phone: Option<String>,
}

/// `h***@example.com` (a one-letter local part is not shown at all).
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) if local.chars().count() > 1 => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        Some((_, domain)) => format!("***@{domain}"),
        None => "***".into(),
    }
}

/// `+81 ****78`: the first two digits after the `+` and the last two.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    let last: String = digits[digits.len().saturating_sub(2)..].iter().collect();
    let country: String = phone
        .strip_prefix('+')
        .map(|rest| rest.chars().take(2).collect())
        .unwrap_or_default();
    format!("+{country} ****{last}")
}

/// A reason for looking at masked data (a contact here, a legal name in payments): 5 to 500
/// characters once trimmed.
pub fn check_reason(reason: &str) -> Result<&str, AuthError> {
    let reason = reason.trim();
    let length = reason.chars().count();
    if !(5..=500).contains(&length) {
        return Err(AuthError::Invalid(
            "a reason of 5 to 500 characters is needed to see this",
        ));
    }
    Ok(reason)
}

impl<D: SqlDb> Auth<D> {
    /// The masked card of a customer or merchant account (operators are not shown).
    pub async fn customer_card(
        &self,
        principal: &Principal,
        user_id: &UserId,
    ) -> Result<CustomerCard, AuthError> {
        principal.operator(SEES_CUSTOMERS)?;
        let mut tx = self.db.begin_read().await?;
        let row = tx
            .query_opt(
                "SELECT kind, email, phone, status, created_at FROM users WHERE id = $1 AND kind <> 'operator'",
                params![user_id],
            )
            .await?
            .ok_or(AuthError::NotFound)?;
        tx.commit().await?;
        Ok(CustomerCard {
            user_id: user_id.clone(),
            kind: UserKind::parse(&row.text(0)?)?,
            email_masked: mask_email(&self.vault.open(&personal::USER_EMAIL, &row.text(1)?)?),
            phone_masked: (self.vault)
                .open_opt(&personal::USER_PHONE, row.opt_text(2)?.as_deref())?
                .as_deref()
                .map(mask_phone),
            status: row.text(3)?,
            created_at_ms: row.i64(4)?,
        })
    }

    /// The contact in full. The reason and the operator go into the audit chain in the same
    /// transaction that reads the contact: nothing is shown that was not recorded.
    pub async fn reveal_contact(
        &self,
        principal: &Principal,
        user_id: &UserId,
        reason: &str,
    ) -> Result<Contact, AuthError> {
        principal.operator(SEES_CUSTOMERS)?;
        let reason = check_reason(reason)?;
        let now = self.now_ms();
        let mut tx = self.db.begin().await?;
        let row = tx
            .query_opt(
                "SELECT email, phone FROM users WHERE id = $1 AND kind <> 'operator'",
                params![user_id],
            )
            .await?
            .ok_or(AuthError::NotFound)?;
        append(
            &mut tx,
            &self.audit_key,
            now,
            AuditEvent {
                actor: &principal.actor(),
                action: "customer.contact_revealed",
                subject: &format!("user:{user_id}"),
                details: serde_json::json!({ "reason": reason }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Contact {
            email: self.vault.open(&personal::USER_EMAIL, &row.text(0)?)?,
            phone: (self.vault).open_opt(&personal::USER_PHONE, row.opt_text(1)?.as_deref())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_what_identifies_nobody() {
        assert_eq!(mask_email("hanako@example.jp"), "h***@example.jp");
        assert_eq!(mask_email("broken"), "***");
        assert_eq!(mask_email("a@example.jp"), "***@example.jp");
        assert_eq!(mask_phone("+819012345678"), "+81 ****78");
        assert!(!mask_phone("+819012345678").contains("1234"));
    }

    #[test]
    fn a_reason_is_needed() {
        assert!(check_reason("  ").is_err());
        assert!(check_reason("abc").is_err());
        assert!(check_reason(&"x".repeat(501)).is_err());
        assert_eq!(check_reason(" case 12 review ").unwrap(), "case 12 review");
    }
}
