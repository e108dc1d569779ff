//! Errors in suite files, always naming the file, the line and the field
//! (the `tomlfile` crate finds them).

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
    /// The file is not a valid suite: where, which field, why.
    #[error(transparent)]
    Invalid(#[from] tomlfile::Invalid),
    /// No shipped suite and no file has this name.
    #[error("no suite file {0:?} and no shipped suite of that name (shipped: {1})")]
    NotFound(String, String),
}

impl SuiteError {
    /// The line named by the error, if it names one.
    pub fn line(&self) -> Option<usize> {
        match self {
            SuiteError::Invalid(e) => Some(e.line),
            _ => None,
        }
    }

    /// The field named by the error, if it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            SuiteError::Invalid(e) => Some(&e.field),
            _ => None,
        }
    }
}

/// Builds errors for one suite file's text: [`tomlfile::Locator`], its
/// errors made suite errors.
pub(crate) struct Locator<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Locator<'_> {
    fn inner(&self) -> tomlfile::Locator<'_> {
        tomlfile::Locator {
            file: self.file,
            text: self.text,
        }
    }

    /// An error about the value at `span`, in the setting `field`.
    pub fn at(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> SuiteError {
        self.inner().at(span, field, message).into()
    }

    /// Turns a TOML parse or type error into one naming the line and field.
    pub fn of_toml(&self, e: &toml::de::Error) -> SuiteError {
        self.inner().of_toml(e).into()
    }
}
