//! Command line of the `stickagg` binary, and the logging it selects.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgAction, Parser, ValueEnum};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// stickagg: Global Profiling Engine for HAProxy clusters.
///
/// Joins the HAProxy cluster as a peer, sums the stick tables of every load
/// balancer and pushes the cluster totals back into each balancer's
/// aggregated tables (e.g. `request_rates.agg`).
#[derive(Debug, Clone, Parser)]
#[command(name = "stickagg", version, disable_version_flag = true)]
pub struct Args {
    /// Configuration file to load; stickagg runs in the foreground.
    #[arg(short = 'f', value_name = "FILE")]
    pub config: PathBuf,

    /// Debug logs (level debug instead of info).
    #[arg(short = 'd')]
    pub debug: bool,

    /// Only check the configuration file: prints "Configuration file is
    /// valid" and exits 0, or prints every error and exits 1.
    #[arg(long)]
    pub check: bool,

    /// Format of the log lines.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log to FILE instead of stderr. "A:FILE" appends (the default when no
    /// prefix is given), "W:FILE" truncates the file first.
    #[arg(short = 'l', value_name = "[A:|W:]FILE", value_parser = LogFile::parse)]
    pub log_file: Option<LogFile>,

    /// Write to each peer at most once per this many microseconds (0, the
    /// default: once per round of the engine, as soon as it is done). Under
    /// a steady trickle of input this lets one write carry several rounds:
    /// much less CPU (2.4 times less at 100k updates/s from 10 nodes with
    /// 250) for up to that much more latency, and up to a millisecond more
    /// when the input pauses.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub write_interval: u64,

    /// Print the version ("stickagg" and the version number) and exit.
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    version: Option<bool>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// `-l [A:|W:]<file>`: where logs go instead of stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The file (created if missing).
    pub path: PathBuf,
    /// `W:` prefix: truncate the file when opening it; else append (`A:`).
    pub truncate: bool,
}

impl LogFile {
    /// Parses `[A:|W:]<file>`.
    pub fn parse(s: &str) -> Result<LogFile, String> {
        let (path, truncate) = match s.split_at_checked(2) {
            Some(("A:", rest)) => (rest, false),
            Some(("W:", rest)) => (rest, true),
            _ => (s, false),
        };
        if path.is_empty() {
            return Err("empty file name, expected [A:|W:]<file>".into());
        }
        Ok(LogFile {
            path: path.into(),
            truncate,
        })
    }

    /// Opens the file for writing as this option asks.
    pub fn open(&self) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.create(true);
        if self.truncate {
            options.write(true).truncate(true);
        } else {
            options.append(true);
        }
        options.open(&self.path)
    }
}

impl Args {
    /// Log level chosen by `-d`.
    pub fn log_level(&self) -> LevelFilter {
        if self.debug {
            LevelFilter::DEBUG
        } else {
            LevelFilter::INFO
        }
    }

    /// Installs the global `tracing` subscriber: human or JSON lines, at the
    /// level of [`Args::log_level`], to stderr or to the `-l` file. Fails if
    /// the log file cannot be opened.
    pub fn init_tracing(&self) -> io::Result<()> {
        let (writer, ansi) = match &self.log_file {
            Some(file) => (BoxMakeWriter::new(Arc::new(file.open()?)), false),
            None => (BoxMakeWriter::new(io::stderr), io::stderr().is_terminal()),
        };
        let builder = tracing_subscriber::fmt()
            .with_max_level(self.log_level())
            .with_writer(writer);
        let result = match self.log_format {
            LogFormat::Human => builder.with_ansi(ansi).try_init(),
            LogFormat::Json => builder.json().with_ansi(false).try_init(),
        };
        result.map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("stickagg").chain(args.iter().copied()))
    }

    #[test]
    fn command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let a = parse(&["-f", "gpe.cfg"]).unwrap();
        assert_eq!(a.config, PathBuf::from("gpe.cfg"));
        assert!(!a.debug && !a.check);
        assert_eq!(a.log_format, LogFormat::Human);
        assert_eq!(a.log_file, None);
        assert_eq!(a.log_level(), LevelFilter::INFO);
    }

    #[test]
    fn every_flag() {
        let a = parse(&[
            "-f",
            "gpe.cfg",
            "-d",
            "--check",
            "--log-format",
            "json",
            "-l",
            "W:/var/log/stickagg.log",
        ])
        .unwrap();
        assert!(a.debug && a.check);
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(
            a.log_file,
            Some(LogFile {
                path: "/var/log/stickagg.log".into(),
                truncate: true
            })
        );
        assert_eq!(a.log_level(), LevelFilter::DEBUG);
    }

    #[test]
    fn log_file_prefixes() {
        let l = |s| LogFile::parse(s).unwrap();
        assert_eq!(
            (l("A:x.log").path, l("A:x.log").truncate),
            ("x.log".into(), false)
        );
        assert_eq!(
            (l("W:x.log").path, l("W:x.log").truncate),
            ("x.log".into(), true)
        );
        assert_eq!(
            (l("x.log").path, l("x.log").truncate),
            ("x.log".into(), false)
        );
        assert_eq!(l("B:x.log").path, PathBuf::from("B:x.log"));
        assert_eq!(l("é").path, PathBuf::from("é"));
        assert!(LogFile::parse("W:").is_err());
        assert!(LogFile::parse("").is_err());
        assert!(parse(&["-f", "x", "-l", "A:"]).is_err());
    }

    #[test]
    fn version_and_help() {
        for flag in ["-v", "--version"] {
            let e = parse(&[flag]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayVersion);
            assert_eq!(
                e.to_string(),
                format!("stickagg {}\n", env!("CARGO_PKG_VERSION"))
            );
        }
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "-f <FILE>",
            "-d",
            "--check",
            "--log-format",
            "-l <[A:|W:]FILE>",
            "-v, --version",
            "-h, --help",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse(&[]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["-f", "x", "--log-format", "xml"])
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidValue
        );
    }

    #[test]
    fn log_file_open_modes() {
        let dir = std::env::temp_dir().join(format!("stickagg-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        std::fs::write(&path, "old\n").unwrap();
        let append = LogFile::parse(&format!("A:{}", path.display())).unwrap();
        io::Write::write_all(&mut append.open().unwrap(), b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\nnew\n");
        let truncate = LogFile::parse(&format!("W:{}", path.display())).unwrap();
        io::Write::write_all(&mut truncate.open().unwrap(), b"w\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "w\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
