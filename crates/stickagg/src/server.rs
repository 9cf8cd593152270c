//! Placeholder until the hub lands.

use std::process::ExitCode;

use crate::cli::Args;
use crate::config::Config;

/// Runs the aggregator until it is told to stop.
pub fn run(config: Config, args: Args) -> ExitCode {
    let _ = (config, args);
    tracing::error!("server not built yet");
    ExitCode::FAILURE
}
