//! Amounts and currencies as clients send them. Properties: an amount is accepted exactly when
//! it is a positive count within the ledger's maximum, and keeps its value; a currency code
//! reads back to itself; money as people read it ("JPY 1,200", "USD 12.05") carries exactly
//! the amount's digits.
#![no_main]

use koban_ledger::{Amount, Currency};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((units, rest)) = data.split_first_chunk::<8>() {
        let units = i64::from_le_bytes(*units);
        match koban_pay::parse_amount(units) {
            Ok(amount) => {
                assert!(units > 0);
                assert_eq!(amount.minor_units(), units as u64);
                assert!(amount <= Amount::MAX);
            }
            Err(_) => assert!(units <= 0 || units as u64 > Amount::MAX.minor_units()),
        }
        let currency = Currency::ALL[usize::from(rest.first().copied().unwrap_or(0)) % 4];
        let minor = units.unsigned_abs();
        let shown = koban_pay::format_money(minor, currency);
        let (code, number) = shown.split_once(' ').expect("code, a space, the number");
        assert_eq!(code, currency.code());
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        assert_eq!(digits.parse::<u64>().ok(), Some(minor), "{shown}");
        assert!(
            number
                .chars()
                .all(|c| c.is_ascii_digit() || c == ',' || c == '.')
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(currency) = Currency::parse(text) {
            assert_eq!(currency.code(), text);
        }
    }
});
