//! What the hub knows about each peer, section and connection, and the
//! counters the stats socket and the metrics read.

use crate::config;
use crate::engine::Engine;
use crate::net::{ConnHandle, ConnId};
use crate::server::{engine_config, engine_limits};
use peers::session::Session;
use std::net::SocketAddr;
use tracing::{debug, warn};

/// Per-peer counters, for `show aggrs` and `show peers`.
#[derive(Debug, Default, Clone)]
pub struct PeerStats {
    pub accepts: u64,
    pub last_accept: Option<u64>,
    pub connects: u64,
    pub last_connect: Option<u64>,
    pub established: u64,
    pub last_established: Option<u64>,
    pub last_status: Option<u16>,
    pub sync_req: u64,
    pub sync_fin: u64,
    pub sync_cfm: u64,
    pub protocol_errors: u64,
    pub collisions: u64,
    pub silence_closes: u64,
    pub hello_refusals: u64,
    pub refused_tables: u64,
    pub last_refusal: Option<String>,
    pub heartbeats_in: u64,
    pub heartbeats_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    pub updates_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Connections ended by a limit or refused before they were identified
/// (no peer to count them on), for metrics.
#[derive(Debug, Default, Clone)]
pub struct LimitStats {
    /// Incoming connections closed at once: `maxconn` connections were open.
    pub maxconn_refused: u64,
    /// Connections closed because the hello was not complete within 5 s.
    pub hello_timeouts: u64,
    /// Connections closed because a hello line exceeded 512 bytes.
    pub hello_too_long: u64,
    /// Hellos answered with a non-200 status (501–504).
    pub hello_refused: u64,
    /// New `dynamic-peers` names refused (504): `MAX_DYNAMIC_PEERS` reached.
    pub dynamic_refused: u64,
    /// Configured peers refused (504) by `strict-peers`: they connected
    /// from another address than their `peer` line's.
    pub address_refused: u64,
    pub(crate) maxconn_log: RateLimit,
    pub(crate) dynamic_log: RateLimit,
    pub(crate) address_log: RateLimit,
}

impl LimitStats {
    /// Every count by its `reason` label in metrics. Disjoint:
    /// `hello_refused` counts the statuses the other reasons do not.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            ("maxconn", self.maxconn_refused),
            ("hello_timeout", self.hello_timeouts),
            ("hello_too_long", self.hello_too_long),
            ("hello_refused", self.hello_refused),
            ("dynamic_limit", self.dynamic_refused),
            ("peer_address", self.address_refused),
        ]
    }
}

/// One log line per second at most, counting the ones not written.
#[derive(Debug, Default, Clone)]
pub(crate) struct RateLimit {
    last: Option<u64>,
    unlogged: u64,
}

impl RateLimit {
    /// `Some(n)`: log now, mentioning the `n` occurrences not logged since
    /// the last line; `None`: stay silent.
    pub(crate) fn check(&mut self, now: u64) -> Option<u64> {
        if self.last.is_some_and(|t| now < t + 1000) {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

pub(crate) fn more_since(n: u64) -> String {
    match n {
        0 => String::new(),
        n => format!(" ({n} more refused since the last report)"),
    }
}

/// A peer of a section, configured or dynamic. Its index is its engine
/// `PeerId`, stable across reconnections.
pub struct Peer {
    pub name: String,
    pub role: config::Role,
    pub addr: Option<SocketAddr>,
    pub group: Option<u32>,
    pub dynamic: bool,
    /// The live session, incoming or outgoing (at most one: collisions keep
    /// the newest, as HAProxy does).
    pub conn: Option<ConnId>,
    pub connecting: bool,
    pub next_connect: u64,
    pub failures: u32,
    /// We received its FINISHED/PARTIAL (it taught us) on the live session.
    pub learned: bool,
    /// It CONFIRMed our FINISHED (we taught it) on the live session.
    pub taught: bool,
    /// Removed by a reload. Kept as a tombstone because its index is its
    /// engine `PeerId`; a reload that lists it again revives it.
    pub removed: bool,
    pub stats: PeerStats,
}

impl Peer {
    pub fn new(
        name: String,
        role: config::Role,
        addr: Option<SocketAddr>,
        group: Option<u32>,
        dynamic: bool,
    ) -> Peer {
        Peer {
            name,
            role,
            addr,
            group,
            dynamic,
            conn: None,
            connecting: false,
            next_connect: 0,
            failures: 0,
            learned: false,
            taught: false,
            removed: false,
            stats: PeerStats::default(),
        }
    }
}

pub struct SectionState {
    pub cfg: config::Section,
    pub engine: Engine,
    pub peers: Vec<Peer>,
    /// Removed by a reload; kept so that section indices stay valid.
    pub removed: bool,
    /// Updates received per second, sampled every second.
    pub updates_per_sec: f64,
    sample: (u64, u64),
    /// Keys dropped by full tables (`max-entries`) already reported: in
    /// total, and per table index.
    drops_reported: u64,
    table_drops_reported: Vec<u64>,
    drops_log: RateLimit,
    /// Tables refused by `max-tables`.
    pub(crate) tables_log: RateLimit,
    /// The engine's outputs generation last declared on the sessions.
    pub(crate) declared_gen: u64,
    /// Until when a new section holds its sums back from `up` peers
    /// ([`SectionState::holding_up`]); `None` once released.
    up_hold_until: Option<u64>,
}

/// How long a new section (a start, or one added by a reload) holds its sums
/// back from `up` peers while its own sources are still teaching it: as long
/// as HAProxy waits for a resync answer.
pub const UP_HOLD_MS: u64 = 5000;

impl SectionState {
    /// A section created at `now` (milliseconds of the hub's clock).
    pub fn new(cfg: &config::Section, global: &config::Global, now: u64) -> SectionState {
        let peers = cfg
            .remote_peers()
            .map(|p| Peer::new(p.name.clone(), p.role, p.addr, p.group, false))
            .collect();
        let mut engine = Engine::new(engine_config(cfg));
        engine.set_limits(engine_limits(global));
        SectionState {
            cfg: cfg.clone(),
            engine,
            peers,
            removed: false,
            updates_per_sec: 0.0,
            sample: (0, 0),
            drops_reported: 0,
            table_drops_reported: Vec::new(),
            drops_log: RateLimit::default(),
            tables_log: RateLimit::default(),
            declared_gen: 0,
            up_hold_until: Some(now + UP_HOLD_MS),
        }
    }

    /// Whether the sums for `up` peers are still held back. A section that
    /// has just started knows nothing yet: each load balancer or lower level
    /// teaches it in turn, and pushing the sum after each one would replace
    /// this level's whole share at the upper level with a part of it (the
    /// upper level's other children would see the total dip, then recover).
    /// So the upper level gets nothing, not even the end of its resync
    /// answer, until every source with a session or a connection attempt
    /// under way has taught us, or [`UP_HOLD_MS`] have passed; meanwhile it
    /// keeps what it had from us. The hold is released once and for good: a
    /// source reconnecting later relearns over values we kept, so it cannot
    /// dip the sums.
    pub(crate) fn holding_up(&mut self, now: u64) -> bool {
        let Some(until) = self.up_hold_until else {
            return false;
        };
        let waiting: Vec<&str> = self
            .peers
            .iter()
            .filter(|p| {
                matches!(p.role, config::Role::Node | config::Role::Down)
                    && !p.removed
                    && !p.learned
                    && (p.conn.is_some() || p.connecting)
            })
            .map(|p| p.name.as_str())
            .collect();
        if waiting.is_empty() {
            debug!(
                "section '{}': every source taught us, sums go up",
                self.cfg.name
            );
        } else if now >= until {
            warn!(
                "section '{}': sums go up after {UP_HOLD_MS} ms although {} did not finish teaching us",
                self.cfg.name,
                waiting.join(", ")
            );
        } else {
            return true;
        }
        self.up_hold_until = None;
        false
    }

    /// When the hold on `up` peers ends at the latest, for the hub's timer.
    pub(crate) fn up_hold_deadline(&self) -> Option<u64> {
        self.up_hold_until
    }

    /// Logs the keys full tables dropped since the last report, at most
    /// once a second for the whole section (one line per table, the first
    /// few tables only).
    pub(crate) fn report_drops(&mut self, now: u64) {
        let total = self.engine.counters().dropped_entries;
        if total == self.drops_reported || self.drops_log.check(now).is_none() {
            return;
        }
        self.drops_reported = total;
        let max = self.engine.limits().max_entries;
        let (mut shown, mut rest_keys, mut rest_tables) = (0, 0, 0);
        for (i, output, dropped) in self.engine.dropped_by_table() {
            if self.table_drops_reported.len() <= i {
                self.table_drops_reported.resize(i + 1, 0);
            }
            let new = dropped.saturating_sub(self.table_drops_reported[i]);
            self.table_drops_reported[i] = dropped;
            if new == 0 {
                continue;
            }
            if shown < 5 {
                shown += 1;
                warn!(
                    "table {output} full (max-entries {max}): {new} new keys dropped (section '{}')",
                    self.cfg.name
                );
            } else {
                rest_keys += new;
                rest_tables += 1;
            }
        }
        if rest_tables > 0 {
            warn!(
                "{rest_tables} more tables of section '{}' full (max-entries {max}): \
                 {rest_keys} new keys dropped",
                self.cfg.name
            );
        }
    }

    pub(crate) fn sample_rate(&mut self, now: u64) {
        let (t, n) = self.sample;
        if now >= t + 1000 {
            let cur = self.engine.counters().updates;
            self.updates_per_sec = (cur - n) as f64 * 1000.0 / (now - t).max(1) as f64;
            self.sample = (now, cur);
        }
    }
}

pub struct Conn {
    pub session: Session,
    pub handle: ConnHandle,
    pub remote: SocketAddr,
    pub incoming: Option<usize>,
    /// (section, peer) once known: from the hello (incoming) or at connect.
    pub peer: Option<(usize, usize)>,
    /// We owe this peer a FINISHED once its pending updates are sent.
    pub teaching: bool,
    /// Counters already folded into the peer's stats.
    pub folded: peers::SessionStats,
    /// Its hello was refused for a reason counted on its own in
    /// [`LimitStats`] (not as `hello_refused`).
    pub refusal_counted: bool,
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn rate_limited_log_lines() {
        let mut r = RateLimit::default();
        assert_eq!(r.check(0), Some(0));
        assert_eq!(r.check(10), None);
        assert_eq!(r.check(999), None);
        // A second later: log, mentioning the two not logged.
        assert_eq!(r.check(1000), Some(2));
        assert_eq!(r.check(1500), None);
        assert_eq!(r.check(5000), Some(1));
        assert_eq!(more_since(0), "");
        assert_eq!(more_since(3), " (3 more refused since the last report)");
    }
}

#[cfg(test)]
mod hold_tests {
    use super::*;

    fn intermediate(now: u64) -> SectionState {
        let text = "aggregations data\n\
                    \x20   from any to .intermediate\n\
                    \x20   forward .agg\n\
                    \x20   peer intermediate-gpe1 0.0.0.0:10000 local\n\
                    \x20   peer top-gpe 192.168.1.10:10000 up\n\
                    \x20   peer enterprise1 192.168.50.41:10000\n\
                    \x20   peer enterprise2 192.168.50.42:10000\n";
        let c = config::Config::parse(text, "t.cfg").unwrap();
        SectionState::new(&c.sections[0], &c.global, now)
    }

    fn peer<'a>(s: &'a mut SectionState, name: &str) -> &'a mut Peer {
        s.peers.iter_mut().find(|p| p.name == name).unwrap()
    }

    #[test]
    fn holds_until_every_source_with_a_session_taught_us() {
        let mut s = intermediate(100);
        for name in ["enterprise1", "enterprise2", "top-gpe"] {
            peer(&mut s, name).connecting = true;
        }
        assert!(s.holding_up(100));
        peer(&mut s, "enterprise1").learned = true;
        // The up peer itself is no source: only enterprise2 is awaited.
        assert!(s.holding_up(200));
        // A source whose connection attempt failed is not awaited.
        peer(&mut s, "enterprise2").connecting = false;
        assert!(!s.holding_up(300));
        assert_eq!(s.up_hold_deadline(), None);
        // Released for good: a source connecting again changes nothing.
        peer(&mut s, "enterprise2").connecting = true;
        assert!(!s.holding_up(400));
    }

    #[test]
    fn a_source_that_never_finishes_holds_at_most_the_timeout() {
        let mut s = intermediate(1000);
        peer(&mut s, "enterprise1").conn = Some(7);
        assert_eq!(s.up_hold_deadline(), Some(1000 + UP_HOLD_MS));
        assert!(s.holding_up(1000 + UP_HOLD_MS - 1));
        assert!(!s.holding_up(1000 + UP_HOLD_MS));
        assert!(!s.holding_up(1000 + UP_HOLD_MS - 1));
    }
}
