//! TOML files whose errors name the file, the line and the field.
//!
//! TOML errors carry byte offsets; people need line numbers and the name of
//! the setting they got wrong. A [`Locator`] over a file's text turns the
//! one into the other, for serde's errors ([`Locator::of_toml`]) and for a
//! value that parsed but means nothing ([`Locator::at`], with the value's
//! `toml::Spanned` span). Suites, the super server's and the dispatcher's
//! files all report mistakes this way.

use std::ops::Range;

/// A value in a file that is wrong: where, which setting, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: field `{field}`: {message}")]
pub struct Invalid {
    /// The path (or name) of the file.
    pub file: String,
    /// 1-based line of the offending text.
    pub line: usize,
    /// The setting that is wrong, as written in the file.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Builds errors for one file's text.
pub struct Locator<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Locator<'_> {
    /// The 1-based line holding byte `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// An error about the value at `span`, in the setting `field`.
    pub fn at(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> Invalid {
        Invalid {
            file: self.file.to_string(),
            line: self.line_of(span.start),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Turns a TOML parse or type error into one naming the line and field.
    pub fn of_toml(&self, e: &toml::de::Error) -> Invalid {
        let message = e.message().trim().to_string();
        let start = e.span().map_or(0, |s| s.start);
        // The field: a name quoted in the message (unknown or missing field)
        // or else the key written at the start of the offending line.
        let names_field = message.contains("unknown field") || message.contains("missing field");
        let field = names_field
            .then(|| backticked(&message))
            .flatten()
            .or_else(|| self.key_on_line(start))
            .or_else(|| self.table_before(start))
            .unwrap_or_else(|| "(top level)".to_string());
        Invalid {
            file: self.file.to_string(),
            line: self.line_of(start),
            field,
            message,
        }
    }

    fn line_text(&self, offset: usize) -> &str {
        let offset = offset.min(self.text.len());
        let begin = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        &self.text[begin..end]
    }

    fn key_on_line(&self, offset: usize) -> Option<String> {
        let line = self.line_text(offset);
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
    }

    fn table_before(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        self.text[..offset]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_string())
    }
}

/// The first `quoted` word of a serde message (`unknown field `x``).
fn backticked(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('`')?;
    let (name, _) = rest.split_once('`')?;
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        name: String,
        server: Server,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Server {
        port: toml::Spanned<u16>,
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let text = "name = \"x\"\n\n[server]\nport = 99999\n";
        let loc = Locator {
            file: "f.toml",
            text,
        };
        let e = toml::from_str::<File>(text).unwrap_err();
        let e = loc.of_toml(&e);
        assert_eq!((e.line, e.field.as_str()), (4, "port"), "{e}");

        let text = "name = \"x\"\n[server]\nport = 80\nhost = \"h\"\n";
        let loc = Locator {
            file: "f.toml",
            text,
        };
        let e = loc.of_toml(&toml::from_str::<File>(text).unwrap_err());
        assert_eq!((e.line, e.field.as_str()), (4, "host"), "{e}");
        assert!(e.to_string().starts_with("f.toml:4: field `host`: "), "{e}");

        let ok: File = toml::from_str("name = \"x\"\n[server]\nport = 80\n").unwrap();
        let loc = Locator {
            file: "f.toml",
            text: "name = \"x\"\n[server]\nport = 80\n",
        };
        let e = loc.at(ok.server.port.span(), "server.port", "port 80 is taken");
        assert_eq!(
            e.to_string(),
            "f.toml:3: field `server.port`: port 80 is taken"
        );
    }
}
