//! Test harness shared by the integration tests of `peers` and `stickagg`.
//!
//! stickagg is only correct if real HAProxy processes agree with it, so most
//! integration tests start real HAProxy 2.6 and 3.0 binaries, drive traffic
//! into them from chosen client addresses and read their stick tables back
//! through the stats socket. This crate holds everything that takes:
//!
//! * [`haproxy_binary`] / [`require_haproxy`]: find the two HAProxy builds that
//!   `scripts/install-haproxy` provides (skip locally, fail under CI);
//! * [`Haproxy`]: one HAProxy process in its own temporary directory, killed on drop;
//! * [`TableEntry`] / [`parse_show_table`]: the `show table` output as data;
//! * [`stats_cmd`]: one command over a stats socket (HAProxy's or stickagg's);
//! * [`http_get`] / [`HttpBackend`]: HTTP clients and servers on loopback
//!   addresses of the test's own [`Net`];
//! * [`wait_for`]: bounded polling instead of sleeps and timed assertions.

mod haproxy;
mod net;
mod stats;
mod table;
mod wait;

pub use haproxy::{haproxy_binary, require_haproxy, Haproxy, HaproxyOpts, Version};
pub use net::{http_get, http_get_body, HttpBackend, Net};
pub use stats::stats_cmd;
pub use table::{parse_entry, parse_show_table, unescape, TableEntry};
pub use tempfile::TempDir;
pub use wait::{wait_for, Attempt};

use std::path::PathBuf;

/// A fresh temporary directory, removed when the returned guard is dropped.
///
/// Unix socket paths are limited to 107 bytes, and test directories usually
/// hold one (a stats socket), so when `$TMPDIR` is long (as on some CI runners)
/// the directory is created under `/tmp` instead.
pub fn temp_dir() -> TempDir {
    let mut base = std::env::temp_dir();
    if base.as_os_str().len() > 48 {
        base = PathBuf::from("/tmp");
    }
    tempfile::Builder::new()
        .prefix("stickagg-test-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| {
            panic!(
                "cannot create a temporary directory in {}: {e}",
                base.display()
            )
        })
}

/// The `global` and `defaults` sections every test HAProxy starts with: the
/// stats socket [`Haproxy`] needs (`{sock}` is replaced when the process
/// starts) and short HTTP timeouts. Tests append their own sections.
pub const HAPROXY_HEADER: &str = "global
    stats socket {sock} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
";
