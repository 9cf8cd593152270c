//! Command line of `stickagg-bench`.

use super::dist::Dist;
use clap::Parser;
use peers::registry::Params;
use peers::{data_type_by_name, Column, Combine, Storage};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Load simulator for stickagg: N simulated HAProxy nodes speaking the peers
/// protocol over real TCP.
///
/// Each node connects to stickagg, says hello with its name (node1, node2…),
/// answers the aggregator's resync request with the DEFINEs of its input
/// table and of the `.agg` twin and FINISHED, asks for a resync itself, then
/// sends updates (absolute values, as HAProxy does) for keys drawn from
/// `--keys` IPv4 addresses. Every node checks the totals stickagg pushes back
/// into its `.agg` table: convergence delay while the load runs, exact totals
/// once it is over (the exit status is non-zero on any mismatch).
///
/// Examples:
///
///   stickagg-bench --spawn -n 10 -k 100000 -d 10            (as fast as possible)
///
///   stickagg-bench --spawn -n 10 -k 100000 -r 10000 -d 20   (10 × 10k/s = 100k/s)
///
///   stickagg-bench --spawn -n 10 -k 100000 --updates 500000 --haproxy ~/.cache/haproxy-builds/3.0.11/haproxy
///
///   stickagg-bench --spawn -n 10 -k 1000000 --restart -d 5   (relearning after kill -9)
///
///   stickagg-bench --target 192.168.50.40:10000 --pid 4242 -n 3
///
/// The final check expects every node's contributions to be alive: the
/// table `--expire` must outlast the run (checked for --duration runs).
#[derive(Parser, Debug, Clone)]
#[command(name = "stickagg-bench", version, verbatim_doc_comment)]
pub struct Args {
    /// Peers address of a running stickagg (its section must accept the
    /// nodes: `dynamic-peers`, or `peer nodeN …` lines). Not with --spawn.
    #[arg(long, value_name = "ADDR", conflicts_with = "spawn")]
    pub target: Option<SocketAddr>,

    /// pid of the stickagg behind --target, to report its CPU time and memory.
    #[arg(long, value_name = "PID", requires = "target")]
    pub pid: Option<u32>,

    /// Name the nodes call the aggregator by (hello line 2).
    #[arg(long, value_name = "NAME", default_value = "gpe")]
    pub agg_name: String,

    /// Start stickagg itself with a generated configuration (`dynamic-peers`,
    /// `from any to <suffix>`), listening on 127.0.NET.1:PORT.
    #[arg(long)]
    pub spawn: bool,

    /// The stickagg binary for --spawn [default: `stickagg` next to this binary].
    #[arg(long, value_name = "PATH")]
    pub stickagg: Option<PathBuf>,

    /// Loopback network 127.0.NET.0/24 of spawned processes.
    #[arg(long, value_name = "NET", default_value_t = 200)]
    pub net: u8,

    /// Peers port of spawned processes.
    #[arg(long, value_name = "PORT", default_value_t = 10000)]
    pub port: u16,

    /// Afterwards, send the same stream to this HAProxy binary (started with a
    /// generated configuration, as the receiving peer of every node) and
    /// report its ingest per CPU second next to stickagg's.
    #[arg(long, value_name = "PATH")]
    pub haproxy: Option<PathBuf>,

    /// `nbthread` of that HAProxy (0: HAProxy's default, one per CPU).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub haproxy_threads: u32,

    /// Simulated nodes.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 3)]
    pub nodes: usize,

    /// Distinct keys (IPv4 addresses from 10.0.0.0).
    #[arg(short = 'k', long, value_name = "K", default_value_t = 10_000)]
    pub keys: u32,

    /// Length of the load, in seconds.
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,

    /// Send exactly this many updates per node instead of running for
    /// --duration (the same stream for stickagg and HAProxy).
    #[arg(short = 'u', long, value_name = "N")]
    pub updates: Option<u64>,

    /// Updates per second per node; 0: as fast as possible.
    #[arg(short = 'r', long, value_name = "PER_SEC", default_value_t = 0)]
    pub rate: u64,

    /// Key distribution: `uniform` or `zipf:<exponent>` (e.g. zipf:1.1).
    #[arg(long, value_name = "DIST", default_value = "uniform")]
    pub dist: Dist,

    /// Before the load, every node sends every key once, as fast as possible
    /// (all keys × nodes present: the memory figure), reported separately.
    #[arg(long)]
    pub fill: bool,

    /// Crash and restart: after the fill (implied), once every node holds
    /// exact totals, `kill -9` the spawned stickagg, start it again, and
    /// measure how long until every node holds exact totals again, relearned
    /// from the nodes' answers to the new process's resync request (the
    /// nodes forget what they had received). Then the load runs as usual.
    #[arg(long, requires = "spawn")]
    pub restart: bool,

    /// Sample the receiver's RSS, open files and CPU time every this many
    /// seconds of the load (0: never), printed as a table after the results
    /// and in the JSON (`samples`). For soak runs.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub sample: f64,

    /// Input table name (sent as `/<name>`, as HAProxy names a table of a
    /// `peers` section).
    #[arg(long, value_name = "NAME", default_value = "request_rates")]
    pub table: String,

    /// Output suffix: the nodes declare `/<table><suffix>` and check it.
    #[arg(long, value_name = "SUFFIX", default_value = ".agg")]
    pub suffix: String,

    /// Stored data types, HAProxy's syntax. One of them must be a summed
    /// counter (`*_cnt`, `gpc0`, `gpc1`, `gpc(N)`): the checks read it.
    #[arg(
        long,
        value_name = "TYPES",
        default_value = "http_req_rate(10s),http_req_cnt"
    )]
    pub store: String,

    /// Table `expire` announced, in ms.
    #[arg(long, value_name = "MS", default_value_t = 600_000)]
    pub expire: u32,

    /// At most this many updates sent and not yet acknowledged per node
    /// (0: no limit; the sockets' buffers and the receiver's are the limit,
    /// as with HAProxy).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub window: u64,

    /// One convergence marker per node every this many ms (0: every update).
    /// Default: 1 ms per 10 nodes, at least 1 ms, so that the markers (each
    /// timed at up to 64 nodes) stay at most 10 k per second. 1 ms for 1000
    /// nodes kept over 100 M delays and made the simulator, not the
    /// receiver, the bottleneck.
    #[arg(long, value_name = "MS")]
    pub marker_ms: Option<u64>,

    /// Longest wait for the handshakes, the last ACKs, and exact totals.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub settle: f64,

    /// Worker threads of the simulator (1: one thread for all nodes).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,

    /// Seed of the key choices (node i uses seed + i).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Print the results as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// No progress line.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Keep the spawned processes' directory (configurations, logs).
    #[arg(long)]
    pub keep: bool,
}

/// The table's columns, parsed from `--store`, with what the checks need.
#[derive(Debug, Clone)]
pub struct Store {
    /// In increasing type id order (the wire order).
    pub columns: Vec<Column>,
    /// Index in an update's values of the summed counter the checks read.
    pub check_value: usize,
    /// `Sum32` (saturating at 2^32 − 1) or `Sum64`.
    pub check_combine: Combine,
}

/// `10s`, `500ms`, `1m`, `2h`, `1d`, or a plain number of ms.
fn parse_ms(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad period '{s}'"))?;
    let mul = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("bad unit in period '{s}'")),
    };
    u32::try_from(n * mul).map_err(|_| format!("period '{s}' too long"))
}

impl Store {
    pub fn parse(spec: &str) -> Result<Store, String> {
        let mut columns: Vec<Column> = Vec::new();
        // Split on commas outside parentheses.
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in spec.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&spec[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&spec[start..]);
        for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let (name, args) = match item.split_once('(') {
                Some((n, rest)) => {
                    let a = rest
                        .strip_suffix(')')
                        .ok_or_else(|| format!("missing ')' in '{item}'"))?;
                    (n, a.split(',').map(str::trim).collect::<Vec<_>>())
                }
                None => (item, Vec::new()),
            };
            let ty =
                data_type_by_name(name).ok_or_else(|| format!("unknown data type '{name}'"))?;
            if ty.storage == Storage::Dict {
                return Err(format!("'{name}' (a dictionary string) is not simulated"));
            }
            let (nbelem, period) = match (ty.params, args.as_slice()) {
                (Params::None, []) => (1, 0),
                (Params::Period, [p]) => (1, parse_ms(p)?),
                (Params::Elements, [n]) => {
                    (n.parse().map_err(|_| format!("bad size in '{item}'"))?, 0)
                }
                (Params::ElementsPeriod, [n, p]) => (
                    n.parse().map_err(|_| format!("bad size in '{item}'"))?,
                    parse_ms(p)?,
                ),
                _ => return Err(format!("wrong parameters in '{item}'")),
            };
            if nbelem == 0 || nbelem > 100 {
                return Err(format!("bad array size in '{item}'"));
            }
            if columns.iter().any(|c| c.ty.id == ty.id) {
                return Err(format!("'{name}' given twice"));
            }
            columns.push(Column::new(ty, nbelem, period));
        }
        columns.sort_by_key(|c| c.ty.id);
        let mut at = 0;
        let mut check = None;
        for c in &columns {
            if check.is_none()
                && !c.ty.local_only
                && matches!(c.ty.combine, Combine::Sum32 | Combine::Sum64)
            {
                check = Some((at, c.ty.combine));
            }
            at += c.nbelem as usize;
        }
        let (check_value, check_combine) = check.ok_or_else(|| {
            "--store needs a summed counter (http_req_cnt, conn_cnt, gpc0, bytes_in_cnt…) for the checks"
                .to_string()
        })?;
        Ok(Store {
            columns,
            check_value,
            check_combine,
        })
    }

    /// HAProxy's `store` argument for the same columns.
    pub fn haproxy_store(&self) -> String {
        self.columns
            .iter()
            .map(|c| match c.ty.params {
                Params::None => c.ty.name.to_string(),
                Params::Period => format!("{}({}ms)", c.ty.name, c.period),
                Params::Elements => format!("{}({})", c.ty.name, c.nbelem),
                Params::ElementsPeriod => format!("{}({},{}ms)", c.ty.name, c.nbelem, c.period),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_parsing() {
        let s = Store::parse("http_req_rate(10s),http_req_cnt").unwrap();
        assert_eq!(s.columns.len(), 2);
        assert_eq!(s.columns[0].ty.name, "http_req_cnt");
        assert_eq!(s.columns[1].period, 10_000);
        assert_eq!(s.check_value, 0);
        assert_eq!(s.haproxy_store(), "http_req_cnt,http_req_rate(10000ms)");
        let s = Store::parse("gpc_rate(2,5s), gpc(3), conn_cur").unwrap();
        assert_eq!(s.check_value, 1);
        assert!(Store::parse("http_req_rate(10s)").is_err());
        assert!(Store::parse("server_key,http_req_cnt").is_err());
        assert!(Store::parse("nope").is_err());
    }
}
