//! Languages: the translation catalogues (Project Fluent, `locales/*.ftl`), the choice of
//! language for a request, and the one place where money and dates are formatted per locale.

use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use koban_ledger::Currency;
use time::{OffsetDateTime, UtcOffset};

/// The languages every page and notice is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Ja,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Ja, Lang::En];

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }

    pub fn parse(text: &str) -> Option<Lang> {
        match text {
            "en" => Some(Lang::En),
            "ja" => Some(Lang::Ja),
            _ => None,
        }
    }

    /// The language a remembered choice names, else the best of `Accept-Language`, else English.
    pub fn negotiate(chosen: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(lang) = chosen.and_then(Lang::parse) {
            return lang;
        }
        let mut best: Option<(u16, Lang)> = None;
        for item in accept_language.unwrap_or("").split(',').take(20) {
            let mut pieces = item.split(';');
            let tag = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
            let primary = tag.split('-').next().unwrap_or("");
            let Some(lang) = Lang::parse(primary) else {
                continue;
            };
            let milli = pieces
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(quality_milli)
                .unwrap_or(1000);
            if milli > 0 && best.is_none_or(|(q, _)| milli > q) {
                best = Some((milli, lang));
            }
        }
        best.map_or(Lang::En, |(_, lang)| lang)
    }
}

/// A quality value (`1`, `0.8`, `0.125`) in thousandths, as RFC 9110 writes them.
fn quality_milli(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fraction: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(fraction),
        "1" if fraction == 0 => Some(1000),
        _ => None,
    }
}

type Bundle = FluentBundle<FluentResource>;

fn bundle(lang: Lang, source: &str) -> Bundle {
    let id: unic_langid::LanguageIdentifier = lang.code().parse().unwrap_or_default();
    let mut bundle = FluentBundle::new_concurrent(vec![id]);
    // No Unicode isolation marks around arguments: they would end up in form values and tests.
    bundle.set_use_isolating(false);
    let resource =
        FluentResource::try_new(source.to_owned()).unwrap_or_else(|(partial, errors)| {
            tracing::error!(
                lang = lang.code(),
                errors = errors.len(),
                "translation catalogue has syntax errors"
            );
            partial
        });
    if let Err(errors) = bundle.add_resource(resource) {
        tracing::error!(
            lang = lang.code(),
            errors = errors.len(),
            "translation catalogue has duplicate messages"
        );
    }
    bundle
}

pub(crate) const EN_FTL: &str = include_str!("../locales/en.ftl");
pub(crate) const JA_FTL: &str = include_str!("../locales/ja.ftl");

fn bundles() -> &'static [Bundle; 2] {
    static BUNDLES: OnceLock<[Bundle; 2]> = OnceLock::new();
    BUNDLES.get_or_init(|| [bundle(Lang::En, EN_FTL), bundle(Lang::Ja, JA_FTL)])
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

    fn format(&self, key: &str, args: Option<&FluentArgs>) -> String {
        let bundle = match self.lang {
            Lang::En => &bundles()[0],
            Lang::Ja => &bundles()[1],
        };
        let Some(pattern) = bundle.get_message(key).and_then(|m| m.value()) else {
            tracing::error!(key, lang = self.lang.code(), "missing translation");
            return key.to_owned();
        };
        let mut errors = Vec::new();
        let text = bundle.format_pattern(pattern, args, &mut errors);
        if !errors.is_empty() {
            tracing::error!(
                key,
                lang = self.lang.code(),
                "translation could not be formatted"
            );
        }
        text.into_owned()
    }

    /// The message `key`.
    pub fn t(&self, key: &str) -> String {
        self.format(key, None)
    }

    /// The message `key` with named arguments (already formatted text).
    pub fn with(&self, key: &str, args: &[(&str, &str)]) -> String {
        let mut fluent = FluentArgs::new();
        for (name, value) in args {
            fluent.set(*name, FluentValue::from(*value));
        }
        self.format(key, Some(&fluent))
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

    fn keys(source: &str) -> Vec<String> {
        let mut keys: Vec<String> = source
            .lines()
            .filter(|line| !line.starts_with([' ', '#', '\t']) && line.contains(" ="))
            .filter_map(|line| line.split(" =").next())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn both_catalogues_parse_and_hold_the_same_messages() {
        for source in [EN_FTL, JA_FTL] {
            assert!(FluentResource::try_new(source.to_owned()).is_ok());
        }
        let (en, ja) = (keys(EN_FTL), keys(JA_FTL));
        assert!(en.len() > 50, "the catalogue is read: {}", en.len());
        let only_en: Vec<_> = en.iter().filter(|k| !ja.contains(k)).collect();
        let only_ja: Vec<_> = ja.iter().filter(|k| !en.contains(k)).collect();
        assert!(
            only_en.is_empty() && only_ja.is_empty(),
            "en only {only_en:?}, ja only {only_ja:?}"
        );
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
    fn the_language_is_the_choice_then_the_browser_then_english() {
        assert_eq!(Lang::negotiate(Some("ja"), Some("en")), Lang::Ja);
        assert_eq!(
            Lang::negotiate(None, Some("ja-JP,ja;q=0.9,en;q=0.8")),
            Lang::Ja
        );
        assert_eq!(
            Lang::negotiate(None, Some("fr, en-GB;q=0.5, ja;q=0.4")),
            Lang::En
        );
        assert_eq!(Lang::negotiate(Some("xx"), Some("de")), Lang::En);
        assert_eq!(Lang::negotiate(None, Some("ja;q=0")), Lang::En);
        assert_eq!(Lang::negotiate(None, None), Lang::En);
    }

    #[test]
    fn messages_take_their_arguments() {
        let text = Tr::new(Lang::En).with("error-throttled", &[("seconds", "30")]);
        assert!(text.contains("30"), "{text}");
        let missing = Tr::new(Lang::En).t("no-such-message");
        assert_eq!(missing, "no-such-message");
    }
}
