//! What the hub knows about each peer, section and connection, and the
//! counters the stats socket and the metrics read.

use crate::config;
use crate::engine::Engine;
use crate::net::{ConnHandle, ConnId};
use crate::server::{engine_config, engine_limits};
use peers::session::Session;
use std::net::SocketAddr;
use tracing::{info, warn};

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
    /// A source (load balancer or lower level) that has not taught us on
    /// its session yet, with a session or a connection attempt under way:
    /// what a new section's hold waits for, and why another level gets
    /// PARTIAL rather than FINISHED from us.
    pub fn awaited_source(&self) -> bool {
        matches!(self.role, config::Role::Node | config::Role::Down)
            && !self.removed
            && !self.learned
            && (self.conn.is_some() || self.connecting)
    }

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
    /// While a new section holds its sums back ([`SectionState::holding`]);
    /// `None` once released.
    hold: Option<Hold>,
}

/// The relearn hold of a new section: when it began, and when an awaited
/// source last sent us something.
struct Hold {
    started: u64,
    progress: u64,
}

/// A new section (a start, or one added by a reload) stops holding its sums
/// back when the sources it awaits have sent nothing for this long: as long
/// as HAProxy waits for a resync answer, and closes a silent session.
pub const HOLD_QUIET_MS: u64 = 5000;

/// ... and at the latest this long after it started, so that a source that
/// trickles updates and never finishes its lesson cannot hold the sums back
/// for ever.
pub const HOLD_MAX_MS: u64 = 30_000;

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
            hold: Some(Hold {
                started: now,
                progress: now,
            }),
        }
    }

    /// Whether the sums are still held back from every peer. A section that
    /// has just started knows nothing yet: each load balancer or lower level
    /// teaches it in turn, and pushing the sum after each one would hand the
    /// nodes, and an upper level, a part of the total in place of the total
    /// (an upper level would replace this level's whole share with it, and
    /// its other children would see the total dip, then recover). So nothing
    /// goes out until every source with a session or a connection attempt
    /// under way has taught us, or they sent nothing for [`HOLD_QUIET_MS`],
    /// or [`HOLD_MAX_MS`] have passed. Meanwhile the nodes keep the totals
    /// they had, and an upper level keeps our share (it gets no resync answer
    /// until then; `server.rs` `pump`). Pushing each key once, complete, is
    /// also half the work of a relearn. The hold is released once and for
    /// good: a source reconnecting later relearns over values we kept, so it
    /// cannot make the sums partial.
    pub(crate) fn holding(&mut self, now: u64) -> bool {
        let Some(h) = &self.hold else {
            return false;
        };
        if !self.peers.iter().any(Peer::awaited_source) {
            info!(
                "section '{}': no source left to teach us after {} ms, the sums go out",
                self.cfg.name,
                now.saturating_sub(h.started)
            );
        } else if now >= h.progress + HOLD_QUIET_MS || now >= h.started + HOLD_MAX_MS {
            let late: Vec<&str> = self
                .peers
                .iter()
                .filter(|p| p.awaited_source())
                .map(|p| p.name.as_str())
                .collect();
            warn!(
                "section '{}': the sums go out after {} ms although {} did not finish teaching us",
                self.cfg.name,
                now.saturating_sub(h.started),
                late.join(", ")
            );
        } else {
            return true;
        }
        self.hold = None;
        false
    }

    /// A source sent us something: while it is awaited, the hold lasts.
    pub(crate) fn note_progress(&mut self, peer: usize, now: u64) {
        if let Some(h) = &mut self.hold {
            if self.peers.get(peer).is_some_and(Peer::awaited_source) {
                h.progress = now;
            }
        }
    }

    /// The section is going away (a reload removed it): nothing to hold.
    pub(crate) fn end_hold(&mut self) {
        self.hold = None;
    }

    /// When the hold ends at the latest, for the hub's timer.
    pub(crate) fn hold_deadline(&self) -> Option<u64> {
        let h = self.hold.as_ref()?;
        Some((h.progress + HOLD_QUIET_MS).min(h.started + HOLD_MAX_MS))
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
    /// When the hub last wrote to it through `Hub::flush_soon` (µs since
    /// the hub started).
    pub flushed_at: u64,
    /// Its bytes wait in `Hub::deferred` for its write interval to pass.
    pub deferred: bool,
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

    fn index(s: &SectionState, name: &str) -> usize {
        s.peers.iter().position(|p| p.name == name).unwrap()
    }

    #[test]
    fn holds_until_every_source_with_a_session_taught_us() {
        let mut s = intermediate(100);
        for name in ["enterprise1", "enterprise2", "top-gpe"] {
            peer(&mut s, name).connecting = true;
        }
        assert!(s.holding(100));
        peer(&mut s, "enterprise1").learned = true;
        // The up peer itself is no source: only enterprise2 is awaited.
        assert!(s.holding(200));
        // A source whose connection attempt failed is not awaited.
        peer(&mut s, "enterprise2").connecting = false;
        assert!(!s.holding(300));
        assert_eq!(s.hold_deadline(), None);
        // Released for good: a source connecting again changes nothing.
        peer(&mut s, "enterprise2").connecting = true;
        assert!(!s.holding(400));
    }

    #[test]
    fn a_silent_source_holds_at_most_the_quiet_time() {
        let mut s = intermediate(1000);
        peer(&mut s, "enterprise1").conn = Some(7);
        assert_eq!(s.hold_deadline(), Some(1000 + HOLD_QUIET_MS));
        assert!(s.holding(1000 + HOLD_QUIET_MS - 1));
        assert!(!s.holding(1000 + HOLD_QUIET_MS));
        assert!(!s.holding(1000 + HOLD_QUIET_MS - 1));
    }

    #[test]
    fn a_teaching_source_holds_until_the_maximum() {
        let mut s = intermediate(0);
        peer(&mut s, "enterprise1").conn = Some(7);
        let e1 = index(&s, "enterprise1");
        // It keeps sending: the quiet time never runs out.
        let mut t = 0;
        while t + 1000 < HOLD_MAX_MS {
            t += 1000;
            s.note_progress(e1, t);
            assert!(s.holding(t), "released at {t} ms");
        }
        assert_eq!(s.hold_deadline(), Some(HOLD_MAX_MS));
        assert!(!s.holding(HOLD_MAX_MS));
    }

    #[test]
    fn only_awaited_sources_make_progress() {
        let mut s = intermediate(0);
        peer(&mut s, "enterprise1").conn = Some(7);
        peer(&mut s, "enterprise2").learned = true;
        let e2 = index(&s, "enterprise2");
        s.note_progress(e2, 4000);
        // Nor does the upper level relaying its totals to us.
        let top = index(&s, "top-gpe");
        s.note_progress(top, 4000);
        assert_eq!(s.hold_deadline(), Some(HOLD_QUIET_MS));
    }
}
