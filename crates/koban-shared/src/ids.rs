//! Typed ids of what crosses crates: a person's account ([`UserId`]: customers, merchants and
//! operators alike, since a merchant signs in as a user) and an issued card ([`CardId`]).
//! Wallets are ledger accounts and carry the ledger's `AccountId`.
//!
//! An id from outside (a URL path, a form, a JSON body) is parsed at the edge and refused
//! there when it cannot be one; an id read back from a column this service wrote is taken as
//! it is ([`UserId::from_stored`]). Both read as `&str` (`Deref`) where text is wanted: in SQL
//! parameters, audit subjects and messages.

use std::fmt;
use std::ops::Deref;

/// Defines a text id: its parse rule, construction from storage, and the ways it reads as text.
macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $valid:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// An id given from outside; `None` when it cannot be one (the caller answers
            /// "not found", as for an id that is well formed but unknown).
            pub fn parse(text: &str) -> Option<$name> {
                let valid: fn(&str) -> bool = $valid;
                valid(text).then(|| $name(text.to_owned()))
            }

            /// An id read back from a column this service wrote.
            pub fn from_stored(text: String) -> $name {
                $name(text)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl From<&$name> for koban_store::sql::Value {
            fn from(id: &$name) -> koban_store::sql::Value {
                koban_store::sql::Value::from(id.as_str())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

text_id!(
    /// A user's id: UUID text as identity issues it (`new_id`).
    UserId,
    |text| uuid::Uuid::try_parse(text).is_ok() && text.len() == 36
);

text_id!(
    /// An issued card's id: `card_` and 32 lowercase hexadecimal digits.
    CardId,
    |text| {
        text.strip_prefix("card_").is_some_and(|hex| {
            hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    }
);

impl UserId {
    /// A new user's id.
    pub fn generate() -> UserId {
        UserId(crate::new_id())
    }
}

impl CardId {
    /// A new card's id.
    pub fn generate() -> CardId {
        CardId(format!("card_{}", uuid::Uuid::now_v7().simple()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_outside_are_parsed_to_their_shape() {
        let user = UserId::generate();
        assert_eq!(UserId::parse(user.as_str()), Some(user.clone()));
        assert_eq!(UserId::parse("not-a-user"), None);
        assert_eq!(UserId::parse(""), None);
        assert_eq!(UserId::parse(&format!("{user}x")), None);
        let card = CardId::generate();
        assert_eq!(CardId::parse(card.as_str()), Some(card.clone()));
        assert_eq!(CardId::parse("card_0123"), None);
        assert_eq!(CardId::parse(&card.as_str().to_uppercase()), None);
        assert_eq!(CardId::parse(user.as_str()), None);
        assert!(user == user.as_str() && &*card == card.as_str());
    }
}
