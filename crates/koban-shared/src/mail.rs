//! Notice e-mails in their recipient's language: a [`Mail`] names a message of the catalogue
//! (`mail/en.ftl`, `mail/ja.ftl`: the subject, and the body as its `.body` attribute) and its
//! arguments; the outbox renders it in the language of the account the address belongs to,
//! when the message is written.
//!
//! A `Mail` can carry a code (a verification or reset code), so it has no `Debug`: it is never
//! formatted into a log line.

use std::sync::OnceLock;

use crate::lang::{Catalogue, Lang};

const EN_FTL: &str = include_str!("../mail/en.ftl");
const JA_FTL: &str = include_str!("../mail/ja.ftl");

fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| Catalogue::new(EN_FTL, JA_FTL))
}

enum Arg {
    Text(String),
    /// Another message of the catalogue, in the same language and with the same arguments.
    Message(&'static str),
}

/// One notice, before it is written in a language.
pub struct Mail {
    key: &'static str,
    args: Vec<(&'static str, Arg)>,
    lang: Option<Lang>,
}

impl Mail {
    pub fn new(key: &'static str) -> Mail {
        Mail {
            key,
            args: Vec::new(),
            lang: None,
        }
    }

    /// A named argument, already formatted (an amount, a masked number, a name).
    pub fn arg(mut self, name: &'static str, value: impl std::fmt::Display) -> Mail {
        self.args.push((name, Arg::Text(value.to_string())));
        self
    }

    /// A named argument that is itself a message of the catalogue (what changed, say).
    pub fn arg_message(mut self, name: &'static str, key: &'static str) -> Mail {
        self.args.push((name, Arg::Message(key)));
        self
    }

    /// Written in `lang` rather than the language of the account the address belongs to (for
    /// an address that belongs to no account yet, such as a new one being confirmed).
    pub fn in_lang(mut self, lang: Lang) -> Mail {
        self.lang = Some(lang);
        self
    }

    /// Which notice this is (its message key).
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// The language chosen with [`Mail::in_lang`], if any.
    pub fn lang(&self) -> Option<Lang> {
        self.lang
    }

    /// The subject and the body in `lang`.
    pub fn render(&self, lang: Lang) -> (String, String) {
        let texts: Vec<(&str, &str)> = self
            .args
            .iter()
            .filter_map(|(name, arg)| match arg {
                Arg::Text(text) => Some((*name, text.as_str())),
                Arg::Message(_) => None,
            })
            .collect();
        let nested: Vec<(&str, String)> = self
            .args
            .iter()
            .filter_map(|(name, arg)| match arg {
                Arg::Message(key) => Some((*name, catalogue().format(lang, key, None, &texts))),
                Arg::Text(_) => None,
            })
            .collect();
        let mut all = texts.clone();
        all.extend(nested.iter().map(|(name, text)| (*name, text.as_str())));
        let subject = catalogue().format(lang, self.key, None, &all);
        let body = catalogue().format(lang, self.key, Some("body"), &all);
        (subject, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogues_hold_the_same_notices() {
        let count = crate::lang::parity(EN_FTL, JA_FTL).unwrap();
        assert!(count > 40, "the catalogue is read: {count}");
    }

    /// Every `Mail::new("...")` and `arg_message(_, "...")` in the crates that send notices
    /// names a message both languages hold, with a body where it needs one.
    #[test]
    fn every_notice_sent_is_in_the_catalogue() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut keys = Vec::new();
        // Every source file under the two crates' `src`, folders included.
        let mut files = Vec::new();
        let mut dirs = vec![crates.join("koban-auth/src"), crates.join("koban-pay/src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        assert!(files.iter().any(|f| f.ends_with("flows/signup.rs")));
        for path in files {
            let source = std::fs::read_to_string(path).unwrap();
            for (marker, body) in [("Mail::new(\"", true), ("\"change-", false)] {
                for piece in source.split(marker).skip(1) {
                    let key = piece.split('"').next().unwrap();
                    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                        continue;
                    }
                    let key = if body {
                        key.to_owned()
                    } else {
                        format!("change-{key}")
                    };
                    keys.push((key, body));
                }
            }
        }
        assert!(
            keys.len() > 40,
            "notices found in the source: {}",
            keys.len()
        );
        for (key, body) in keys {
            assert!(catalogue().has(&key), "{key} is in both catalogues");
            for lang in Lang::ALL {
                if body {
                    let (subject, text) =
                        Mail::new(Box::leak(key.clone().into_boxed_str())).render(lang);
                    assert!(
                        !subject.is_empty() && text != key,
                        "{key} has a subject and a body in {lang:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_notice_is_written_in_the_language_asked_for() {
        let mail = Mail::new("account-changed")
            .arg_message("what", "change-email")
            .arg("address", "h***@example.com")
            .arg("hours", 24)
            .arg("link", "https://koban.example/not-me?t=x");
        let (subject, body) = mail.render(Lang::En);
        assert_eq!(
            subject,
            "Your Koban account: your e-mail address was changed to h***@example.com"
        );
        assert!(body.contains("24 hours"), "{body}");
        assert!(body.ends_with("https://koban.example/not-me?t=x"), "{body}");
        assert!(
            body.contains("\n\nIf this was you"),
            "paragraphs survive: {body}"
        );
        let (subject, body) = mail.render(Lang::Ja);
        assert_eq!(
            subject,
            "Kobanアカウント: メールアドレスが h***@example.com に変更されました"
        );
        assert!(body.contains("24 時間"), "{body}");
        let (_, body) = Mail::new("money-sent")
            .arg("amount", "¥1,000")
            .arg("payee", "S*** H***")
            .render(Lang::Ja);
        assert!(
            body.starts_with("S*** H*** に ¥1,000 を送金しました。"),
            "{body}"
        );
        assert!(
            body.contains("セキュリティセンター"),
            "the term is resolved: {body}"
        );
    }
}
