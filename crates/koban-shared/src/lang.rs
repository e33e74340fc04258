//! Languages: the two Koban is written in, the choice of one for a visitor, and a translation
//! catalogue (Project Fluent) that the pages and the notice e-mails each load with their own
//! messages.

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};

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

/// One set of messages in both languages, from two Fluent sources with the same message ids.
pub struct Catalogue {
    en: Bundle,
    ja: Bundle,
}

impl Catalogue {
    /// Loads the two sources. A syntax error is logged and the rest of the source still loads;
    /// the parity tests of each catalogue catch it before it ships.
    pub fn new(en: &str, ja: &str) -> Catalogue {
        Catalogue {
            en: bundle(Lang::En, en),
            ja: bundle(Lang::Ja, ja),
        }
    }

    /// The message `key` (or its `attribute`) in `lang`, with named arguments (already
    /// formatted text). A missing message is logged and answered with its key.
    pub fn format(
        &self,
        lang: Lang,
        key: &str,
        attribute: Option<&str>,
        args: &[(&str, &str)],
    ) -> String {
        let bundle = match lang {
            Lang::En => &self.en,
            Lang::Ja => &self.ja,
        };
        let message = bundle.get_message(key);
        let pattern = match attribute {
            None => message.and_then(|m| m.value()),
            Some(name) => message
                .and_then(|m| m.get_attribute(name))
                .map(|a| a.value()),
        };
        let Some(pattern) = pattern else {
            tracing::error!(key, attribute, lang = lang.code(), "missing translation");
            return key.to_owned();
        };
        let fluent = (!args.is_empty()).then(|| {
            let mut fluent = FluentArgs::new();
            for (name, value) in args {
                fluent.set(*name, FluentValue::from(*value));
            }
            fluent
        });
        let mut errors = Vec::new();
        let text = bundle.format_pattern(pattern, fluent.as_ref(), &mut errors);
        if !errors.is_empty() {
            tracing::error!(
                key,
                lang = lang.code(),
                "translation could not be formatted"
            );
        }
        text.into_owned()
    }

    /// Whether `key` names a message in both languages.
    pub fn has(&self, key: &str) -> bool {
        self.en.has_message(key) && self.ja.has_message(key)
    }
}

fn bundle(lang: Lang, source: &str) -> Bundle {
    let id: unic_langid::LanguageIdentifier = lang.code().parse().unwrap_or_default();
    let mut bundle = FluentBundle::new_concurrent(vec![id]);
    // No Unicode isolation marks around arguments: they would end up in form values, links
    // and plain-text e-mail.
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

/// The message ids of a Fluent source, sorted: for tests that both languages hold the same.
pub fn message_ids(source: &str) -> Vec<String> {
    let mut keys: Vec<String> = source
        .lines()
        .filter(|line| !line.starts_with([' ', '#', '\t']) && line.contains(" ="))
        .filter_map(|line| line.split(" =").next())
        .map(str::to_owned)
        .collect();
    keys.sort();
    keys
}

/// Checks that two sources parse and hold the same message ids, each once; the ids that differ
/// (or repeat) otherwise.
pub fn parity(en: &str, ja: &str) -> Result<usize, String> {
    for source in [en, ja] {
        if let Err((_, errors)) = FluentResource::try_new(source.to_owned()) {
            return Err(format!("syntax errors: {errors:?}"));
        }
    }
    let (en, ja) = (message_ids(en), message_ids(ja));
    for ids in [&en, &ja] {
        // A second definition would silently replace the first one's text.
        if let Some(twice) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!("{} is defined twice", twice[0]));
        }
    }
    let only_en: Vec<_> = en.iter().filter(|k| !ja.contains(k)).collect();
    let only_ja: Vec<_> = ja.iter().filter(|k| !en.contains(k)).collect();
    if only_en.is_empty() && only_ja.is_empty() {
        Ok(en.len())
    } else {
        Err(format!("en only {only_en:?}, ja only {only_ja:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn messages_attributes_and_arguments() {
        let catalogue = Catalogue::new(
            "hello = Hello { $name }\n    .body = Body { $name }\n",
            "hello = こんにちは { $name }\n    .body = 本文 { $name }\n",
        );
        assert_eq!(
            catalogue.format(Lang::En, "hello", None, &[("name", "Aiko")]),
            "Hello Aiko"
        );
        assert_eq!(
            catalogue.format(Lang::Ja, "hello", Some("body"), &[("name", "Aiko")]),
            "本文 Aiko"
        );
        assert_eq!(catalogue.format(Lang::En, "missing", None, &[]), "missing");
        assert!(catalogue.has("hello") && !catalogue.has("missing"));
        assert!(parity("a = 1\nb = 2\n", "a = 一\n").is_err());
        assert_eq!(parity("a = 1\n", "a = 一\n"), Ok(1));
        assert!(parity("a = 1\na = 2\n", "a = 一\n").is_err());
    }
}
