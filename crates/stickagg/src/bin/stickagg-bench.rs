//! `stickagg-bench`: load simulator for stickagg (and HAProxy, side by
//! side). `stickagg-bench --help` describes it; the code is in `src/bench/`.

#[path = "../bench/mod.rs"]
mod bench;

use clap::Parser;

fn main() -> std::process::ExitCode {
    bench::main(bench::cli::Args::parse())
}
