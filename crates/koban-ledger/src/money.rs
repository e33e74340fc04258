//! Money: an integer count of minor units with its ISO 4217 currency. Never a float.

use std::fmt;

/// The largest amount one transfer may carry, and the largest balance an account may reach.
/// It is `i64::MAX` so that every amount and balance fits a signed 64-bit SQL integer.
pub const AMOUNT_MAX: u64 = 9_223_372_036_854_775_807;

/// An ISO 4217 currency that Koban supports, with its minor-unit exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Currency {
    Jpy,
    Usd,
    Eur,
    Gbp,
}

impl Currency {
    pub const ALL: [Currency; 4] = [Currency::Jpy, Currency::Usd, Currency::Eur, Currency::Gbp];

    /// Parses an ISO 4217 alphabetic code such as `"JPY"` (upper case only).
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .ok_or(MoneyError::UnknownCurrency)
    }

    pub fn code(self) -> &'static str {
        match self {
            Currency::Jpy => "JPY",
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
            Currency::Gbp => "GBP",
        }
    }

    /// Number of digits after the decimal point in the currency's major unit.
    pub fn exponent(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            Currency::Usd | Currency::Eur | Currency::Gbp => 2,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A positive amount of minor units, at most [`AMOUNT_MAX`]. Zero is not an amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Amount(u64);

impl Amount {
    pub const MAX: Amount = Amount(AMOUNT_MAX);

    pub fn new(minor_units: u64) -> Result<Amount, MoneyError> {
        if minor_units == 0 {
            return Err(MoneyError::Zero);
        }
        if minor_units > AMOUNT_MAX {
            return Err(MoneyError::TooLarge);
        }
        Ok(Amount(minor_units))
    }

    /// Accepts a signed count as it arrives from a client or a database column.
    pub fn from_i64(minor_units: i64) -> Result<Amount, MoneyError> {
        let units = u64::try_from(minor_units).map_err(|_| MoneyError::Negative)?;
        Amount::new(units)
    }

    pub fn minor_units(self) -> u64 {
        self.0
    }

    /// The amount as a signed count, for database columns and wire types. Infallible: every
    /// amount is at most [`AMOUNT_MAX`], which is `i64::MAX`.
    pub fn to_i64(self) -> i64 {
        const _: () = assert!(AMOUNT_MAX == i64::MAX.unsigned_abs());
        match i64::try_from(self.0) {
            Ok(units) => units,
            Err(_) => unreachable!("an amount above AMOUNT_MAX was made"),
        }
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0
            .checked_add(other.0)
            .and_then(|sum| Amount::new(sum).ok())
    }

    /// `None` when the result would be zero or negative.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0
            .checked_sub(other.0)
            .and_then(|d| Amount::new(d).ok())
    }
}

/// An amount together with its currency, parsed from a decimal string in major units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Amount,
    currency: Currency,
}

impl Money {
    pub fn new(amount: Amount, currency: Currency) -> Money {
        Money { amount, currency }
    }

    /// Parses `"1200"` or `"12.34"` with at most as many fraction digits as the currency's
    /// exponent. No sign, no exponent notation, no grouping separators.
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let (whole, fraction) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        if text.starts_with('-') {
            return Err(MoneyError::Negative);
        }
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) {
            return Err(MoneyError::Malformed);
        }
        if text.contains('.') && fraction.is_empty() {
            return Err(MoneyError::Malformed);
        }
        let exponent = currency.exponent();
        let fraction_len = u32::try_from(fraction.len()).map_err(|_| MoneyError::TooPrecise)?;
        if fraction_len > exponent {
            return Err(MoneyError::TooPrecise);
        }
        let scale = 10u64.pow(exponent);
        let whole: u64 = whole.parse().map_err(|_| MoneyError::TooLarge)?;
        let fraction_units: u64 = if fraction.is_empty() {
            0
        } else {
            let padded: u64 = fraction.parse().map_err(|_| MoneyError::Malformed)?;
            padded
                .checked_mul(10u64.pow(exponent - fraction_len))
                .ok_or(MoneyError::TooLarge)?
        };
        let units = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(fraction_units))
            .ok_or(MoneyError::TooLarge)?;
        Ok(Money {
            amount: Amount::new(units)?,
            currency,
        })
    }

    pub fn amount(self) -> Amount {
        self.amount
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch);
        }
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::TooLarge)?;
        Ok(Money {
            amount,
            currency: self.currency,
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = self.currency.exponent();
        let scale = 10u64.pow(exponent);
        let units = self.amount.minor_units();
        if exponent == 0 {
            write!(f, "{} {}", units, self.currency)
        } else {
            let width = usize::try_from(exponent).map_err(|_| fmt::Error)?;
            write!(
                f,
                "{}.{:0width$} {}",
                units / scale,
                units % scale,
                self.currency
            )
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error(
        "unknown or unsupported currency code; use an ISO 4217 code such as JPY, USD, EUR, GBP"
    )]
    UnknownCurrency,
    #[error("amount must be greater than zero")]
    Zero,
    #[error("amount must not be negative")]
    Negative,
    #[error("amount is too large (at most 9223372036854775807 minor units)")]
    TooLarge,
    #[error("amount must be digits with an optional decimal point, such as 1200 or 12.34")]
    Malformed,
    #[error("amount has more decimal places than the currency allows")]
    TooPrecise,
    #[error("amounts are in different currencies")]
    CurrencyMismatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_per_currency_exponent() {
        let yen = Money::parse("1200", Currency::Jpy).unwrap();
        assert_eq!(yen.amount().minor_units(), 1200);
        let usd = Money::parse("12.34", Currency::Usd).unwrap();
        assert_eq!(usd.amount().minor_units(), 1234);
        let eur = Money::parse("12.3", Currency::Eur).unwrap();
        assert_eq!(eur.amount().minor_units(), 1230);
        assert_eq!(usd.to_string(), "12.34 USD");
        assert_eq!(
            Money::parse("0.05", Currency::Usd).unwrap().to_string(),
            "0.05 USD"
        );
    }

    #[test]
    fn rejects_bad_amounts() {
        assert_eq!(
            Money::parse("12.5", Currency::Jpy),
            Err(MoneyError::TooPrecise)
        );
        assert_eq!(
            Money::parse("1.234", Currency::Usd),
            Err(MoneyError::TooPrecise)
        );
        assert_eq!(Money::parse("0", Currency::Jpy), Err(MoneyError::Zero));
        assert_eq!(Money::parse("0.00", Currency::Usd), Err(MoneyError::Zero));
        assert_eq!(Money::parse("-5", Currency::Jpy), Err(MoneyError::Negative));
        for bad in ["", ".5", "5.", "1e3", "1,000", " 1", "+1", "0x10", "1.2.3"] {
            assert_eq!(
                Money::parse(bad, Currency::Usd),
                Err(MoneyError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            Money::parse("9223372036854775807", Currency::Jpy)
                .unwrap()
                .amount(),
            Amount::MAX
        );
        assert_eq!(
            Money::parse("9223372036854775808", Currency::Jpy),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(
            Money::parse("92233720368547758.08", Currency::Usd),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(
            Money::parse("99999999999999999999999", Currency::Usd),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(Currency::parse("jpy"), Err(MoneyError::UnknownCurrency));
        assert_eq!(Currency::parse("XXX"), Err(MoneyError::UnknownCurrency));
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = Money::new(Amount::MAX, Currency::Jpy);
        let one = Money::new(Amount::new(1).unwrap(), Currency::Jpy);
        assert_eq!(max.checked_add(one), Err(MoneyError::TooLarge));
        let usd = Money::new(Amount::new(1).unwrap(), Currency::Usd);
        assert_eq!(one.checked_add(usd), Err(MoneyError::CurrencyMismatch));
        assert_eq!(Amount::from_i64(-1), Err(MoneyError::Negative));
        assert_eq!(
            Amount::new(5).unwrap().checked_sub(Amount::new(5).unwrap()),
            None
        );
    }
}
