//! Configuration file of the `stickagg` binary.
//!
//! The grammar is the vendor's (HAProxy-like): one directive per line, words
//! separated by whitespace, `#` starts a comment, blank lines ignored, and a
//! section starts at a line whose first word is `global` or
//! `aggregations <name>` (at any indentation).
//!
//! ```text
//! global
//!     stats socket /var/run/stickagg.sock [mode 600] [level admin]
//!     bind 0.0.0.0:10000 [ssl crt <pem> [ca-file <pem>] [verify none|optional|required]]
//!     source 192.168.50.40[:5000]
//!     dynamic-peers
//!     metrics 127.0.0.1:9100
//!     maxconn 1000
//!     max-entries 10000000
//!     max-tables 1000
//!     strict-peers
//!
//! aggregations data
//!     from any|<.suffix> to <.suffix> [no-ascend] [no-feedback]
//!     forward <.suffix>
//!     peer <name> [<addr>:<port>] [local|up|down] [group <n>] [ssl [verify …] [ca-file …] [crt …]]
//!     dynamic-peers [from <cidr>…]
//!     strict-peers
//! ```
//!
//! [`Config::parse`] reports every error it can find, each as
//! `file:line: <what was wrong>, expected <what>`.

mod model;
mod parse;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::{
    Bind, Cidr, Config, FromSpec, Global, PeerConf, Role, Section, StatsAddr, StatsLevel,
    StatsSocket, TlsOptions, Verify,
};

impl Config {
    /// Reads and parses the file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigErrors> {
        let path = path.as_ref();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(source) => Err(ConfigErrors(vec![ConfigError::Io {
                path: path.to_path_buf(),
                source,
            }])),
        }
    }

    /// Parses `text`; `path` is only used in messages and stored in
    /// [`Config::path`].
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigErrors> {
        parse::parse(text, path.as_ref())
    }
}

/// One problem found in a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A problem at one line: `file:line: <what was wrong>, expected <what>`.
    #[error("{}:{line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong, and what was expected.
        message: String,
    },
    /// A problem of the file as a whole (e.g. no `aggregations` section).
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong, and what was expected.
        message: String,
    },
}

impl ConfigError {
    /// The line the error is about, if it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Line { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Every problem found in a configuration file (never empty); displayed one
/// per line, in line order.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in line order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_an_io_error() {
        let err = Config::from_file("/nonexistent/stickagg.cfg").unwrap_err();
        assert_eq!(err.errors().len(), 1);
        assert!(matches!(err.errors()[0], ConfigError::Io { .. }));
        assert!(err
            .to_string()
            .starts_with("/nonexistent/stickagg.cfg: cannot read the configuration file:"));
    }

    #[test]
    fn errors_display_one_per_line() {
        let err = Config::parse("global\n  nope\n  nope2\n", "x.cfg").unwrap_err();
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), err.errors().len());
        assert!(lines[0].starts_with("x.cfg:2: "), "{text}");
        assert!(lines[1].starts_with("x.cfg:3: "), "{text}");
        assert_eq!(err.errors()[0].line(), Some(2));
    }
}
