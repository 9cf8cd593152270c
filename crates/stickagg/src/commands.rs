//! Answers to stats-socket commands, computed by the hub from its state.

use crate::server::{Hub, Peer};
use crate::show::{format_key, format_types, format_values, parse_key};
use peers::hello::Status;
use std::fmt::Write;

const HELP: &str = "\
The following commands are valid at this level:
  help                              : this message
  prompt                            : toggle interactive mode with prompt
  quit                              : disconnect
  show aggrs                        : each aggregations section and the state of its peers
  show peers                        : every peer: role, address, session, counters
  show tables                       : every input table and the output it feeds
  show table <name> [key <k>] [detail] : aggregated entries (detail: each source's contribution)
  show info                         : version, uptime, pid, peers, tables, entries, memory
  clear table <name> [key <k>]      : drop the aggregated state of a table or of one key
  reload                            : re-read the configuration file (like SIGHUP)
";

/// Entries `show table` prints at most without `key` (a table may hold
/// millions; the hub answers while nothing else runs).
const SHOW_TABLE_LIMIT: usize = 10_000;

impl Hub {
    /// Answers one command (without its `;` separators).
    pub fn command(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["help"] => HELP.to_string(),
            ["show", "aggrs"] => self.show_aggrs(),
            ["show", "peers"] => self.show_peers(),
            ["show", "tables"] => self.show_tables(),
            ["show", "info"] => self.show_info(),
            ["show", "table", name, rest @ ..] => self.show_table(name, rest),
            ["clear", "table", name, rest @ ..] => self.clear_table(name, rest),
            ["reload"] => self.reload(),
            _ => format!("Unknown command: '{line}'\n{HELP}"),
        }
    }

    /// `show aggrs`, in the vendor's format:
    ///
    /// ```text
    /// aggregations data
    /// peer 'enterprise1'(0) sync_ok: 1 accept: 1(last: 6080) connect: 1(last: 16086) state: 0x7 sync_state: 0x3
    /// sync_req_cnt: 0 sync_fin_cnt: 0 sync_cfm_cnt: 0
    /// ```
    ///
    /// `accept`/`connect`: sessions accepted from it / connection attempts to
    /// it, with the age of the last one in ms (`-` if none). `state`: 0x7
    /// while a session is established, 0x0 after one ended, 0xffffffff if
    /// none ever succeeded. `sync_state`: 0x1 it taught us (we got its
    /// FINISHED), 0x2 we taught it (it CONFIRMed ours); `sync_ok` is 1 once
    /// it taught us on the live session, i.e. our totals include its current
    /// state. (A running HAProxy asks for a resync only once in its life, so
    /// 0x2 is only set when it connected after its own start.) Counters: resync requests, FINISHED/PARTIAL and
    /// CONFIRM messages received from it.
    fn show_aggrs(&self) -> String {
        let now = self.now();
        let mut out = String::new();
        for s in self.sections.iter().filter(|s| !s.removed) {
            out.push_str(&format!("aggregations {}\n", s.cfg.name));
            for (i, p) in s.peers.iter().enumerate().filter(|(_, p)| !p.removed) {
                out.push_str(&self.aggr_peer_line(i, p, now));
            }
        }
        out
    }

    fn aggr_peer_line(&self, idx: usize, p: &Peer, now: u64) -> String {
        let age = |t: Option<u64>| t.map_or("-".to_string(), |t| (now - t).to_string());
        let live = p
            .conn
            .and_then(|c| self.conns.get(&c))
            .is_some_and(|c| c.session.is_established());
        let state: u32 = if live {
            0x7
        } else if p.stats.established > 0 {
            0
        } else {
            0xffff_ffff
        };
        let sync_state = (p.learned as u32) | ((p.taught as u32) << 1);
        // After the vendor's fields: the peer's level (up/down/node) and
        // its `group` (`-`: none).
        let role = match p.role {
            crate::config::Role::Up => "up",
            crate::config::Role::Down => "down",
            _ => "node",
        };
        let group = p.group.map_or_else(|| "-".to_string(), |g| g.to_string());
        format!(
            "peer '{}'({idx}) sync_ok: {} accept: {}(last: {}) connect: {}(last: {}) state: 0x{state:x} sync_state: 0x{sync_state:x} role: {role} group: {group}\nsync_req_cnt: {} sync_fin_cnt: {} sync_cfm_cnt: {}\n",
            p.name,
            p.learned as u8,
            p.stats.accepts,
            age(p.stats.last_accept),
            p.stats.connects,
            age(p.stats.last_connect),
            p.stats.sync_req,
            p.stats.sync_fin,
            p.stats.sync_cfm,
        )
    }
}

impl Hub {
    /// `show peers`: one block per peer of every section.
    fn show_peers(&self) -> String {
        let now = self.now();
        let mut out = String::new();
        for s in self.sections.iter().filter(|s| !s.removed) {
            let _ = writeln!(
                out,
                "aggregations {} local={}",
                s.cfg.name,
                s.cfg.local_name()
            );
            for (i, p) in s.peers.iter().enumerate() {
                if p.removed {
                    continue;
                }
                let conn = p.conn.and_then(|c| self.conns.get(&c));
                let (dir, state) = match conn {
                    Some(c) if c.session.is_established() => {
                        (if c.incoming.is_some() { "in" } else { "out" }, "ESTA")
                    }
                    Some(c) => (if c.incoming.is_some() { "in" } else { "out" }, "HSHK"),
                    None if p.connecting => ("out", "CONN"),
                    None => ("-", "NONE"),
                };
                let addr = p.addr.map_or_else(
                    || conn.map_or("-".to_string(), |c| c.remote.to_string()),
                    |a| a.to_string(),
                );
                let st = &p.stats;
                let age = |t: Option<u64>| t.map_or("-".to_string(), |t| format!("{}ms", now - t));
                let _ = writeln!(
                    out,
                    "  peer={} id={i} role={} group={} addr={addr} session={dir} state={state} dynamic={} last_status={} last_hdshk={} reconnects={}",
                    p.name,
                    role_name(p.role),
                    p.group.map_or("-".to_string(), |g| g.to_string()),
                    p.dynamic as u8,
                    st.last_status.map_or("NONE", Status::label),
                    age(st.last_established),
                    st.established.saturating_sub(1),
                );
                let _ = writeln!(
                    out,
                    "        tx_hbt={} rx_hbt={} msgs_in={} msgs_out={} updates_in={} updates_out={} proto_err={} refused_tables={} bytes_in={} bytes_out={}",
                    st.heartbeats_out,
                    st.heartbeats_in,
                    st.messages_in,
                    st.messages_out,
                    st.updates_in,
                    st.updates_out,
                    st.protocol_errors,
                    st.refused_tables,
                    st.bytes_in,
                    st.bytes_out,
                );
                if let Some(r) = &st.last_refusal {
                    let _ = writeln!(out, "        last_refusal={r}");
                }
            }
        }
        out
    }

    /// `show tables`: per section, each input → output with its shape,
    /// entries and sources.
    fn show_tables(&self) -> String {
        let mut out = String::new();
        for s in self.sections.iter().filter(|s| !s.removed) {
            let c = s.engine.counters();
            let _ = writeln!(
                out,
                "aggregations {} updates={} updates/s={:.0}",
                s.cfg.name, c.updates, s.updates_per_sec
            );
            for t in s.engine.tables() {
                let sources: Vec<String> = t
                    .sources
                    .iter()
                    .map(|x| format!("{}:{}", x.name, x.entries))
                    .collect();
                let _ = writeln!(
                    out,
                    "  {} -> {} type={} len={} store={} expire={} entries={} sources={} wanted_by={} refused={} dropped={}",
                    t.input,
                    t.output,
                    t.def.key_type.name(),
                    t.def.key_len,
                    format_types(&t.def),
                    t.def.expire.unwrap_or(0),
                    t.entries,
                    if sources.is_empty() { "-".into() } else { sources.join(",") },
                    if t.wanted_by.is_empty() { "-".into() } else { t.wanted_by.join(",") },
                    t.refused,
                    t.dropped,
                );
                if let Some(r) = &t.last_refusal {
                    let _ = writeln!(out, "        last_refusal={r}");
                }
                for w in &t.warnings {
                    let _ = writeln!(out, "        warning={w}");
                }
            }
        }
        out
    }

    /// `show table <name> [key <k>] [detail]`: the aggregate of each key in
    /// HAProxy's line format; `detail` adds one line per source.
    fn show_table(&self, name: &str, rest: &[&str]) -> String {
        let now = self.now();
        let (mut key, mut detail) = (None, false);
        let mut it = rest.iter();
        while let Some(w) = it.next() {
            match *w {
                "detail" => detail = true,
                "key" => match it.next() {
                    Some(k) => key = Some(*k),
                    None => return "Missing key after 'key'.\n".into(),
                },
                other => {
                    return format!("Unknown argument '{other}': expected 'key <k>' or 'detail'.\n")
                }
            }
        }
        let slash = format!("/{name}");
        for s in self.sections.iter().filter(|s| !s.removed) {
            let Some((table, t)) = [name, slash.as_str()]
                .iter()
                .find_map(|n| s.engine.table_info(n).map(|t| (*n, t)))
            else {
                continue;
            };
            let def = &t.def;
            let entries = match key {
                Some(k) => match parse_key(def.key_type, def.key_len, k) {
                    Some(kb) => s
                        .engine
                        .key_info(table, &kb, now, detail)
                        .into_iter()
                        .collect(),
                    None => {
                        return format!("Invalid key '{k}' for a {} table.\n", def.key_type.name())
                    }
                },
                None => s.engine.keys(table, now, detail, SHOW_TABLE_LIMIT),
            };
            let mut out = format!(
                "# table: {}, section: {}, type: {}, size:0, used:{}\n",
                t.output,
                s.cfg.name,
                def.key_type.name(),
                t.entries
            );
            for (i, e) in entries.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "0x{:x}: key={} use=0 exp={}{}",
                    i + 1,
                    format_key(def.key_type, &e.key),
                    e.expire.unwrap_or(0),
                    format_values(def, &e.values)
                );
                for c in &e.sources {
                    let _ = writeln!(
                        out,
                        "    from={} age={} exp={}{}",
                        c.name,
                        c.age_ms,
                        c.expire.unwrap_or(0),
                        format_values(def, &c.values)
                    );
                }
            }
            return out;
        }
        format!("No such table: {name}\n")
    }

    /// `clear table <name> [key <k>]`: drops stickagg's aggregated state
    /// (the nodes' `.agg` entries expire by themselves, and each node's next
    /// update brings its own value back).
    fn clear_table(&mut self, name: &str, rest: &[&str]) -> String {
        let key = match rest {
            [] => None,
            ["key", k] => Some(*k),
            _ => return "Usage: clear table <name> [key <k>]\n".into(),
        };
        let slash = format!("/{name}");
        for s in self.sections.iter_mut().filter(|s| !s.removed) {
            let Some((table, def)) = [name, slash.as_str()]
                .iter()
                .find_map(|n| s.engine.table_info(n).map(|t| (n.to_string(), t.def)))
            else {
                continue;
            };
            let kb = match key {
                Some(k) => match parse_key(def.key_type, def.key_len, k) {
                    Some(kb) => Some(kb),
                    None => {
                        return format!("Invalid key '{k}' for a {} table.\n", def.key_type.name())
                    }
                },
                None => None,
            };
            let n = s.engine.clear(&table, kb.as_deref()).unwrap_or(0);
            tracing::info!(
                "clear table {table}{}: {n} entries dropped",
                key.map_or(String::new(), |k| format!(" key {k}"))
            );
            return String::new();
        }
        format!("No such table: {name}\n")
    }

    /// `show info`: process-level facts.
    fn show_info(&self) -> String {
        let live = || self.sections.iter().filter(|s| !s.removed);
        let peers: usize = live()
            .map(|s| s.peers.iter().filter(|p| !p.removed).count())
            .sum();
        let up = self
            .conns
            .values()
            .filter(|c| c.session.is_established() && c.peer.is_some())
            .count();
        let tables: usize = live().map(|s| s.engine.tables().len()).sum();
        let g = &self.config.global;
        let limits = crate::server::engine_limits(g);
        let entries: usize = live()
            .flat_map(|s| s.engine.tables())
            .map(|t| t.entries)
            .sum();
        format!(
            "Name: stickagg\nVersion: {}\nPid: {}\nUptime_sec: {}\nConfig: {}\nSections: {}\nPeers: {peers}\nPeers_up: {up}\nTables: {tables}\nEntries: {entries}\nMaxconn: {}\nMax_entries: {}\nMax_tables: {}\nMemory_rss_bytes: {}\nReloads: {}\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            self.now() / 1000,
            self.config.path.display(),
            live().count(),
            crate::server::maxconn(g),
            limits.max_entries,
            limits.max_tables,
            rss_bytes(),
            self.reloads,
        )
    }
}

pub fn role_name(r: crate::config::Role) -> &'static str {
    match r {
        crate::config::Role::Up => "up",
        crate::config::Role::Down => "down",
        crate::config::Role::Local => "local",
        crate::config::Role::Node => "node",
    }
}

/// Resident memory from /proc (Linux); 0 elsewhere.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
