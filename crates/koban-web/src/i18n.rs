//! Languages: the translation catalogues (Project Fluent, `locales/*.ftl`), the choice of
//! language for a request, and the one place where money and dates are formatted per locale.

use std::sync::OnceLock;

use koban_ledger::Currency;
use koban_shared::lang::Catalogue;
pub use koban_shared::lang::Lang;
use time::{OffsetDateTime, UtcOffset};

pub(crate) const EN_FTL: &str = include_str!("../locales/en.ftl");
pub(crate) const JA_FTL: &str = include_str!("../locales/ja.ftl");

fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| Catalogue::new(EN_FTL, JA_FTL))
}

/// Japan has one time zone and no daylight saving: every date is shown in JST.
const JST_OFFSET_S: i32 = 9 * 3600;

/// The translator and formatter of one request's language.
#[derive(Clone, Copy, Debug)]
pub struct Tr {
    lang: Lang,
}

impl Tr {
    pub fn new(lang: Lang) -> Tr {
        Tr { lang }
    }

    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// The message `key`.
    pub fn t(&self, key: &str) -> String {
        catalogue().format(self.lang, key, None, &[])
    }

    /// The message `key` with named arguments (already formatted text).
    pub fn with(&self, key: &str, args: &[(&str, &str)]) -> String {
        catalogue().format(self.lang, key, None, args)
    }

    /// An amount of minor units in its currency: `¥1,234`, `$12.50`, `-¥300`.
    pub fn money(&self, minor: i128, currency: Currency) -> String {
        let digits = minor.unsigned_abs().to_string();
        let exponent = usize::try_from(currency.exponent()).unwrap_or(0);
        let padded = format!("{digits:0>width$}", width = exponent + 1);
        let (whole, fraction) = padded.split_at(padded.len() - exponent);
        self.money_parts(minor < 0, whole, fraction, currency)
    }

    fn money_parts(
        &self,
        negative: bool,
        whole: &str,
        fraction: &str,
        currency: Currency,
    ) -> String {
        let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
        for (i, digit) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        let symbol = match currency.code() {
            "JPY" => "¥",
            "USD" => "$",
            "EUR" => "€",
            "GBP" => "£",
            other => other,
        };
        let sign = if negative { "-" } else { "" };
        if fraction.is_empty() {
            format!("{sign}{symbol}{grouped}")
        } else {
            format!("{sign}{symbol}{grouped}.{fraction}")
        }
    }

    fn local(ms: i64) -> Option<OffsetDateTime> {
        let offset = UtcOffset::from_whole_seconds(JST_OFFSET_S).ok()?;
        let nanos = i128::from(ms).checked_mul(1_000_000)?;
        Some(
            OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .ok()?
                .to_offset(offset),
        )
    }

    /// A date: `2026年12月6日` or `6 Dec 2026`.
    pub fn date(&self, ms: i64) -> String {
        let Some(at) = Tr::local(ms) else {
            return String::new();
        };
        match self.lang {
            Lang::Ja => format!("{}年{}月{}日", at.year(), u8::from(at.month()), at.day()),
            Lang::En => {
                const MONTHS: [&str; 12] = [
                    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                    "Dec",
                ];
                let month = MONTHS[usize::from(u8::from(at.month())).saturating_sub(1) % 12];
                format!("{} {month} {}", at.day(), at.year())
            }
        }
    }

    /// Items as a list in a sentence: `a, b` or `a、b`.
    pub fn list(&self, items: &[String]) -> String {
        items.join(match self.lang {
            Lang::Ja => "、",
            Lang::En => ", ",
        })
    }

    /// A time of day (JST): `14:05`.
    pub fn clock(&self, ms: i64) -> String {
        Tr::local(ms)
            .map(|at| format!("{:02}:{:02}", at.hour(), at.minute()))
            .unwrap_or_default()
    }

    /// A date and time of day (JST): `2026年12月6日 14:05` or `6 Dec 2026, 14:05`.
    pub fn datetime(&self, ms: i64) -> String {
        let Some(at) = Tr::local(ms) else {
            return String::new();
        };
        let clock = format!("{:02}:{:02}", at.hour(), at.minute());
        match self.lang {
            Lang::Ja => format!("{} {clock}", self.date(ms)),
            Lang::En => format!("{}, {clock}", self.date(ms)),
        }
    }
}

/// The start of the JST day that holds `ms`, in milliseconds since the epoch.
pub fn day_start_ms(ms: i64) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    let offset = i64::from(JST_OFFSET_S) * 1000;
    (ms + offset).div_euclid(DAY_MS) * DAY_MS - offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogues_parse_and_hold_the_same_messages() {
        let count = koban_shared::lang::parity(EN_FTL, JA_FTL).unwrap();
        assert!(count > 50, "the catalogue is read: {count}");
    }

    #[test]
    fn money_is_grouped_per_currency() {
        let tr = Tr::new(Lang::Ja);
        assert_eq!(tr.money(1234, Currency::Jpy), "¥1,234");
        assert_eq!(tr.money(0, Currency::Jpy), "¥0");
        assert_eq!(tr.money(-300, Currency::Jpy), "-¥300");
        assert_eq!(tr.money(1_234_567, Currency::Jpy), "¥1,234,567");
        assert_eq!(tr.money(1250, Currency::Usd), "$12.50");
        assert_eq!(tr.money(5, Currency::Usd), "$0.05");
        assert_eq!(tr.money(123_456_789, Currency::Eur), "€1,234,567.89");
    }

    #[test]
    fn dates_are_japanese_or_english_in_jst() {
        // 2026-12-05T15:30:00Z is 6 December, 00:30 in Tokyo.
        let ms = 1_796_484_600_000;
        assert_eq!(Tr::new(Lang::Ja).date(ms), "2026年12月6日");
        assert_eq!(Tr::new(Lang::En).date(ms), "6 Dec 2026");
        assert_eq!(Tr::new(Lang::Ja).datetime(ms), "2026年12月6日 00:30");
        assert_eq!(day_start_ms(ms), 1_796_482_800_000);
    }

    #[test]
    fn lists_are_joined_as_each_language_writes_them() {
        let items = ["a".to_owned(), "b".to_owned()];
        assert_eq!(Tr::new(Lang::En).list(&items), "a, b");
        assert_eq!(Tr::new(Lang::Ja).list(&items), "a、b");
    }

    #[test]
    fn messages_take_their_arguments() {
        let text = Tr::new(Lang::En).with("error-throttled", &[("seconds", "30")]);
        assert!(text.contains("30"), "{text}");
        let missing = Tr::new(Lang::En).t("no-such-message");
        assert_eq!(missing, "no-such-message");
    }
}
