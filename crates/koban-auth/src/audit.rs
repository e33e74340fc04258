//! Operators' reading of the audit chain (the chain itself is a shared service,
//! [`koban_shared::audit`]).

use koban_shared::audit::{VerifyReport, verify};
use koban_store::sql::SqlDb;

use crate::AuthError;

/// One walk of the whole chain at a time on this instance: a walk reads every entry.
static WALKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

impl<D: SqlDb> crate::Auth<D> {
    /// Walks the chain for an analyst (or admin); refused as busy while another walk runs.
    pub async fn verify_audit(
        &self,
        principal: &crate::Principal,
    ) -> Result<VerifyReport, AuthError> {
        principal.operator(&[crate::Role::Analyst])?;
        let _only = WALKS.try_acquire().map_err(|_| AuthError::Busy)?;
        Ok(verify(self.db(), &self.audit_key, &[]).await?)
    }
}
