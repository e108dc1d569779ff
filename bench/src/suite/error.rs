//! Errors in suite files, always naming the file, the line and the field.
//!
//! TOML errors carry byte offsets; people need line numbers and the name of
//! the setting they got wrong, so this module turns the one into the other.

use std::ops::Range;

/// Why a suite could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The path as given.
        file: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not a valid suite.
    #[error("{file}:{line}: field `{field}`: {message}")]
    Invalid {
        /// The path (or shipped suite name) of the file.
        file: String,
        /// 1-based line of the offending text.
        line: usize,
        /// The setting that is wrong, as written in the file.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// No shipped suite and no file has this name.
    #[error("no suite file {0:?} and no shipped suite of that name (shipped: {1})")]
    NotFound(String, String),
}

impl SuiteError {
    /// The line named by the error, if it names one.
    pub fn line(&self) -> Option<usize> {
        match self {
            SuiteError::Invalid { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The field named by the error, if it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            SuiteError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Builds errors for one file's text.
pub(crate) struct Locator<'a> {
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
    pub fn at(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> SuiteError {
        SuiteError::Invalid {
            file: self.file.to_string(),
            line: self.line_of(span.start),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Turns a TOML parse or type error into one naming the line and field.
    pub fn of_toml(&self, e: &toml::de::Error) -> SuiteError {
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
        SuiteError::Invalid {
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
