//! Parsed identity values: each type can only hold a valid value.

use crate::AuthError;

/// A normalised e-mail address (trimmed, lower case): printable ASCII, which every mail
/// system takes (an internationalised address would need SMTPUTF8 all along its way).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(text: &str) -> Result<Email, AuthError> {
        let invalid = || AuthError::Invalid("email must be an address like name@example.com");
        // At most 254 characters as sent, spaces around it included (what the OpenAPI document
        // says), and printable ASCII before any case folding: a non-ASCII letter that lowercases
        // to an ASCII one (the Kelvin sign to `k`) is not an address.
        let trimmed = text.trim();
        if text.chars().count() > 254 || !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid());
        }
        let text = trimmed.to_ascii_lowercase();
        let (local, domain) = text.split_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@');
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(invalid());
        }
        Ok(Email(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }
}

/// A name shown to others (1 to 100 characters, no control characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(text: &str) -> Result<DisplayName, AuthError> {
        let text = text.trim();
        let n = text.chars().count();
        if n == 0 || n > 100 || text.chars().any(char::is_control) {
            return Err(AuthError::Invalid(
                "display_name must be 1 to 100 characters without control characters",
            ));
        }
        Ok(DisplayName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A legal name for KYC (1 to 200 characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegalName(String);

impl LegalName {
    pub fn parse(text: &str) -> Result<LegalName, AuthError> {
        let text = text.trim();
        let n = text.chars().count();
        if n == 0 || n > 200 || text.chars().any(char::is_control) {
            return Err(AuthError::Invalid(
                "legal_name must be 1 to 200 characters without control characters",
            ));
        }
        Ok(LegalName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form: `+` and 8 to 15 digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(text: &str) -> Result<Phone, AuthError> {
        let text = text.trim();
        let digits = text.strip_prefix('+').unwrap_or("");
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthError::Invalid(
                "phone must be in E.164 form, such as +819012345678",
            ));
        }
        Ok(Phone(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A calendar date `YYYY-MM-DD` (for KYC; never used to unlock anything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BirthDate(String);

impl BirthDate {
    pub fn parse(text: &str) -> Result<BirthDate, AuthError> {
        let invalid = || AuthError::Invalid("date_of_birth must be a date like 1990-04-01");
        let parts: Vec<&str> = text.trim().split('-').collect();
        let [y, m, d] = parts.as_slice() else {
            return Err(invalid());
        };
        let number = |s: &str, len: usize| -> Option<u32> {
            (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let (Some(y), Some(m), Some(d)) = (number(y, 4), number(m, 2), number(d, 2)) else {
            return Err(invalid());
        };
        if !(1900..=2100).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return Err(invalid());
        }
        Ok(BirthDate(format!("{y:04}-{m:02}-{d:02}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserKind {
    Customer,
    Merchant,
    Operator,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Customer => "customer",
            UserKind::Merchant => "merchant",
            UserKind::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Result<UserKind, AuthError> {
        match text {
            "customer" => Ok(UserKind::Customer),
            "merchant" => Ok(UserKind::Merchant),
            "operator" => Ok(UserKind::Operator),
            _ => Err(AuthError::Invalid("kind must be customer or merchant")),
        }
    }
}

/// An operator's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Analyst,
    Support,
    Approver,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Support => "support",
            Role::Approver => "approver",
        }
    }

    pub fn parse(text: &str) -> Result<Role, AuthError> {
        match text {
            "admin" => Ok(Role::Admin),
            "analyst" => Ok(Role::Analyst),
            "support" => Ok(Role::Support),
            "approver" => Ok(Role::Approver),
            _ => Err(AuthError::Invalid(
                "role must be admin, analyst, support or approver",
            )),
        }
    }
}

/// A device cookie whose signature holds: the browser signed in to `user_id` before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCookie {
    pub id: String,
    pub user_id: String,
}

/// Where a request comes from, as far as throttling and notifications care.
#[derive(Clone, Debug)]
pub struct Client {
    /// The client's network: the IPv4 /24 or IPv6 /64 it belongs to.
    pub network: String,
    /// The device cookie presented, if its signature holds.
    pub device: Option<DeviceCookie>,
    pub user_agent: String,
}

impl Client {
    pub fn from_ip(ip: std::net::IpAddr, device: Option<DeviceCookie>, user_agent: &str) -> Client {
        let network = match ip {
            std::net::IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                format!("{a}.{b}.{c}.0/24")
            }
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => {
                    let [a, b, c, _] = v4.octets();
                    format!("{a}.{b}.{c}.0/24")
                }
                None => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
        };
        let user_agent: String = user_agent.chars().take(200).collect();
        Client {
            network,
            device,
            user_agent,
        }
    }

    /// Whether the client's device cookie was issued to `user_id`.
    pub fn trusted_for(&self, user_id: &str) -> bool {
        self.device.as_ref().is_some_and(|d| d.user_id == user_id)
    }
}

/// Unicode's explicit text-direction marks, embeddings, overrides and isolates: text that
/// carries them can show a name, a message or an amount reversed or out of place.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_normalise_and_refuse_nonsense() {
        assert_eq!(
            Email::parse("  Hanako@Example.COM ").unwrap().as_str(),
            "hanako@example.com"
        );
        for bad in [
            "",
            "no-at",
            "a@b",
            "@example.com",
            "a@.com",
            "a b@example.com",
            "a@b@c.com",
            "\u{212A}@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        // 254 characters as sent is the bound, whether or not spaces around it are trimmed.
        let address = format!("a@{}.jp", "b".repeat(249));
        assert_eq!(address.len(), 254);
        assert!(Email::parse(&address).is_ok());
        assert!(Email::parse(&format!(" {address}")).is_err());
        let shorter = format!("a@{}.jp", "b".repeat(248));
        assert!(Email::parse(&format!("\u{2009}{shorter}")).is_ok());
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        let v4 = Client::from_ip("203.0.113.77".parse().unwrap(), None, "ua");
        assert_eq!(v4.network, "203.0.113.0/24");
        let v6 = Client::from_ip("2001:db8:1:2:3:4:5:6".parse().unwrap(), None, "ua");
        assert_eq!(v6.network, "2001:db8:1:2::/64");
        let mapped = Client::from_ip("::ffff:198.51.100.9".parse().unwrap(), None, "ua");
        assert_eq!(mapped.network, "198.51.100.0/24");
    }

    #[test]
    fn other_values_parse() {
        assert!(Phone::parse("+819012345678").is_ok());
        assert!(Phone::parse("09012345678").is_err());
        assert_eq!(
            BirthDate::parse("1990-04-01").unwrap().as_str(),
            "1990-04-01"
        );
        assert!(BirthDate::parse("1990-13-01").is_err());
        assert!(DisplayName::parse("").is_err());
        assert!(Role::parse("root").is_err());
    }
}
