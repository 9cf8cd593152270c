//! The `stickagg` binary: parses the command line, checks or loads the
//! configuration, sets up logging and hands over to the server.

use std::process::ExitCode;

use clap::Parser;
use stickagg::cli::Args;
use stickagg::config::{Config, ConfigErrors};

/// mimalloc instead of the system allocator: the engine makes and frees
/// many small blocks (keys, contributions grown one source at a time,
/// decoded updates, B-tree nodes). Measured side by side on 1M keys × 10
/// nodes, it filled 1.3–1.4 M updates/s instead of 0.92–0.97 M with 8 %
/// less memory (BENCHMARKS.md, "Sixth round").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // `-v`/`--version` and `--help` print and exit inside `parse`.
    let args = Args::parse();
    if args.check {
        return match Config::from_file(&args.config) {
            Ok(_) => {
                println!("Configuration file is valid");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                report(&errors);
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = args.init_tracing() {
        let target = args.log_file.as_ref().map(|l| l.path.display().to_string());
        eprintln!(
            "stickagg: cannot set up logging to {}: {e}",
            target.as_deref().unwrap_or("stderr")
        );
        return ExitCode::FAILURE;
    }
    let config = match Config::from_file(&args.config) {
        Ok(config) => config,
        Err(errors) => {
            report(&errors);
            if args.log_file.is_some() {
                for e in errors.errors() {
                    tracing::error!("{e}");
                }
            }
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.path.display(),
        sections = config.sections.len(),
        "starting"
    );
    stickagg::server::run(config, args)
}

/// Prints every configuration error on stderr, then a summary line.
fn report(errors: &ConfigErrors) {
    eprintln!("{errors}");
    let n = errors.errors().len();
    eprintln!(
        "Configuration file is invalid ({n} error{})",
        if n == 1 { "" } else { "s" }
    );
}
