//! The export of what Koban holds about one person (their right of access and portability):
//! each crate lists the tables it keeps about an account as [`Section`]s, and
//! [`read_sections`] reads them into JSON in one transaction, personal data opened. Keyed
//! hashes (codes, tokens, fingerprints) and sealed secrets (TOTP seeds, card numbers) are
//! never listed: they are Koban's means of checking, not data about the person.

use koban_store::StoreError;
use koban_store::sql::{SqlTx, Value};
use serde_json::{Map, Value as Json};

use crate::personal::{Column, Vault};

/// One table's rows about an account.
pub struct Section {
    /// The key of the section in the export.
    pub name: &'static str,
    /// The rows: `$1` is the account's user id.
    pub sql: &'static str,
    /// The names of the selected columns, in order.
    pub columns: &'static [&'static str],
    /// Selected columns that are sealed, with the column they are sealed for.
    pub sealed: &'static [(&'static str, Column)],
}

/// A column value as JSON: numbers, text (opened when sealed), and bytes as a UUID (16-byte
/// ledger ids) or hexadecimal.
fn json_of(vault: &Vault, value: &Value, sealed: Option<&Column>) -> Result<Json, StoreError> {
    Ok(match value {
        Value::Int(None) | Value::Text(None) | Value::Bytes(None) => Json::Null,
        Value::Int(Some(n)) => Json::from(*n),
        Value::Text(Some(text)) => match sealed {
            // A delivered notice's emptied body.
            Some(_) if text.is_empty() => Json::from(""),
            Some(column) => Json::from(vault.open(column, text)?),
            None => Json::from(text.as_str()),
        },
        Value::Bytes(Some(bytes)) => match <[u8; 16]>::try_from(bytes.as_slice()) {
            Ok(id) => Json::from(uuid::Uuid::from_bytes(id).to_string()),
            Err(_) => Json::from(hex::encode(bytes)),
        },
    })
}

/// Reads `sections` about `user_id` into `out`, one array of objects per section.
pub async fn read_sections<T: SqlTx>(
    tx: &mut T,
    vault: &Vault,
    user_id: &str,
    sections: &[Section],
    out: &mut Map<String, Json>,
) -> Result<(), StoreError> {
    for section in sections {
        let rows = tx.query(section.sql, vec![user_id.into()]).await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let mut item = Map::new();
            for (i, name) in section.columns.iter().enumerate() {
                let value = row.0.get(i).ok_or_else(|| {
                    StoreError::Corrupt(format!("{}: too few columns", section.name))
                })?;
                let sealed = section
                    .sealed
                    .iter()
                    .find(|(sealed, _)| sealed == name)
                    .map(|(_, column)| column);
                item.insert((*name).to_owned(), json_of(vault, value, sealed)?);
            }
            items.push(Json::Object(item));
        }
        out.insert(section.name.to_owned(), Json::Array(items));
    }
    Ok(())
}
