//! The hub: one task that owns every session, every engine and every peer's
//! state, so that protocol decisions need no locks.
//!
//! I/O tasks (`net.rs`) hand it bytes and connection events; it feeds them to
//! the session state machines (`peers::Session`), turns session events into
//! engine calls, and pumps the engine's pending changes back out to every
//! established peer, within the limit of what the peer's socket has taken.
//! The stats socket (`stats.rs`) asks it questions through a channel.

use crate::cli::Args;
use crate::config::{self, Config, FromSpec};
use crate::engine::{Engine, EngineConfig, EngineLimits, PeerRole, TableVerdict};
use crate::net::{self, ConnHandle, ConnId, NetEvent};
use crate::stats::{self, StatsRequest};
use peers::hello::Status;
use peers::session::{CloseReason, Event, Role, Session, SessionConfig};
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// Bytes handed to a connection's writer and not yet written, above which no
/// more updates are pumped to it (its changes wait, coalesced, in the engine).
const MAX_INFLIGHT: usize = 256 * 1024;
/// Updates taken from the engine per call.
const PUMP_BATCH: usize = 256;
/// Net events handled before pumping updates out (fairness vs. batching).
const EVENT_BATCH: usize = 512;
/// Concurrent peer connections (incoming and outgoing) when the
/// configuration has no `maxconn`: beyond, new incoming connections are
/// closed at once.
pub const DEFAULT_MAXCONN: usize = 10_000;
/// Entries per aggregated table when the configuration has no
/// `max-entries` (enforced by the engine: new keys beyond are dropped), and
/// tables per section without `max-tables` (new ones are refused).
pub use crate::engine::{DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TABLES};
/// Names a section accepts through `dynamic-peers` (each is kept for the
/// life of the process): beyond, new names are refused with 504.
pub const MAX_DYNAMIC_PEERS: usize = 10_000;

/// Runs the aggregator until SIGINT/SIGTERM.
pub fn run(config: Config, _args: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match Hub::start(config).await {
            Ok(hub) => hub.run().await,
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

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
    maxconn_log: RateLimit,
    dynamic_log: RateLimit,
    address_log: RateLimit,
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
struct RateLimit {
    last: Option<u64>,
    unlogged: u64,
}

impl RateLimit {
    /// `Some(n)`: log now, mentioning the `n` occurrences not logged since
    /// the last line; `None`: stay silent.
    fn check(&mut self, now: u64) -> Option<u64> {
        if self.last.is_some_and(|t| now < t + 1000) {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

fn more_since(n: u64) -> String {
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
    tables_log: RateLimit,
}

impl SectionState {
    pub fn new(cfg: &config::Section, global: &config::Global) -> SectionState {
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
        }
    }

    /// Logs the keys full tables dropped since the last report, at most
    /// once a second for the whole section (one line per table, the first
    /// few tables only).
    fn report_drops(&mut self, now: u64) {
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

    fn sample_rate(&mut self, now: u64) {
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

pub struct Hub {
    pub start: Instant,
    pub config: Config,
    pub sections: Vec<SectionState>,
    /// Listen address of each listener, by index.
    pub listeners: Vec<SocketAddr>,
    /// Accept tasks by listener index; `None` once a reload stopped one.
    pub listener_tasks: Vec<Option<tokio::task::JoinHandle<()>>>,
    pub reloads: u64,
    pub conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    pub(crate) events_tx: mpsc::Sender<NetEvent>,
    events_rx: mpsc::Receiver<NetEvent>,
    stats_rx: mpsc::Receiver<StatsRequest>,
    metrics_rx: mpsc::Receiver<crate::metrics::MetricsRequest>,
    /// Delay from receiving a change to handing the new aggregate to the
    /// peers' writers (observed once per hub iteration that saw updates).
    pub push_delay: prometheus_client::metrics::histogram::Histogram,
    /// When the first update not yet pushed was received.
    change_since: Option<std::time::Instant>,
    pid: u32,
    /// TLS client configurations of outgoing connections (`peer … ssl`).
    pub tls_clients: crate::tls::ClientCache,
    /// Limits enforced (see [`LimitStats`]).
    pub limits: LimitStats,
}

pub(crate) fn engine_limits(g: &config::Global) -> EngineLimits {
    EngineLimits {
        max_entries: g.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES),
        max_tables: g.max_tables.unwrap_or(DEFAULT_MAX_TABLES),
    }
}

pub(crate) fn engine_config(s: &config::Section) -> EngineConfig {
    EngineConfig {
        from: match &s.from {
            FromSpec::Any => None,
            FromSpec::Suffix(x) => Some(x.clone()),
        },
        to: s.to.clone(),
        forward: s.forward.clone(),
        no_ascend: s.no_ascend,
        no_feedback: s.no_feedback,
    }
}

fn engine_role(r: config::Role) -> PeerRole {
    match r {
        config::Role::Up => PeerRole::Up,
        config::Role::Down => PeerRole::Down,
        _ => PeerRole::Node,
    }
}

impl Hub {
    /// Binds every listener and the stats socket; fails with a clear message
    /// if an address is taken.
    pub async fn start(config: Config) -> Result<Hub, String> {
        let (events_tx, events_rx) = mpsc::channel(4096);
        let (stats_tx, stats_rx) = mpsc::channel(64);
        let (metrics_tx, metrics_rx) = mpsc::channel(16);
        let mut listeners: Vec<SocketAddr> = Vec::new();
        let mut sections = Vec::new();
        for s in &config.sections {
            if let Some(addr) = s.listen_addr(&config.global) {
                if !listeners.contains(&addr) {
                    listeners.push(addr);
                }
            }
            sections.push(SectionState::new(s, &config.global));
        }
        let mut listener_tasks = Vec::new();
        for (i, addr) in listeners.iter().enumerate() {
            let tls = crate::tls::listener_config(&config, *addr)?;
            let sock = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let with = if tls.is_some() { " (TLS)" } else { "" };
            info!("listening for peers on {addr}{with}");
            listener_tasks.push(Some(net::spawn_listener(i, sock, tls, events_tx.clone())));
        }
        // Every peer's TLS settings load now, or stickagg does not start.
        let mut tls_clients = crate::tls::ClientCache::default();
        for s in &config.sections {
            for p in s.remote_peers().filter(|p| p.addr.is_some()) {
                if let Some(o) = &p.tls {
                    tls_clients
                        .get(o)
                        .and_then(|_| crate::tls::peer_server_name(&p.name))
                        .map_err(|e| format!("TLS of peer '{}' (line {}): {e}", p.name, p.line))?;
                }
            }
        }
        if let Some(sock) = &config.global.stats_socket {
            stats::spawn(sock, stats_tx)
                .await
                .map_err(|e| format!("stats socket: {e}"))?;
        }
        if let Some(addr) = config.global.metrics {
            crate::metrics::spawn(addr, metrics_tx)
                .await
                .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
            info!("metrics on http://{addr}/metrics");
        }
        Ok(Hub {
            start: Instant::now(),
            config,
            sections,
            listeners,
            listener_tasks,
            reloads: 0,
            conns: HashMap::new(),
            next_conn: 1,
            events_tx,
            events_rx,
            stats_rx,
            metrics_rx,
            push_delay: crate::metrics::push_delay_histogram(),
            change_since: None,
            pid: std::process::id(),
            tls_clients,
            limits: LimitStats::default(),
        })
    }

    /// Milliseconds since start: the clock given to sessions and engines.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn run(mut self) -> ExitCode {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    error!("cannot install SIGTERM handler: {e}");
                    return ExitCode::FAILURE;
                }
            };
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!("cannot install SIGHUP handler: {e}");
                return ExitCode::FAILURE;
            }
        };
        info!("stickagg {} started", env!("CARGO_PKG_VERSION"));
        let now = self.now();
        self.on_timers(now);
        loop {
            let deadline = self.next_deadline();
            let sleep = tokio::time::sleep_until(self.start + Duration::from_millis(deadline));
            tokio::select! {
                ev = self.events_rx.recv() => {
                    let Some(ev) = ev else { break };
                    let now = self.now();
                    self.on_net(ev, now);
                    for _ in 0..EVENT_BATCH {
                        match self.events_rx.try_recv() {
                            Ok(ev) => self.on_net(ev, now),
                            Err(_) => break,
                        }
                    }
                }
                Some(req) = self.stats_rx.recv() => {
                    let out = self.command(&req.line);
                    let _ = req.reply.send(out);
                }
                _ = sleep => {}
                _ = tokio::signal::ctrl_c() => break,
                Some(req) = self.metrics_rx.recv() => {
                    let _ = req.reply.send(self.metrics_text());
                }
                _ = term.recv() => break,
                _ = hup.recv() => {
                    info!("SIGHUP: reloading {}", self.config.path.display());
                    self.reload();
                }
            }
            let now = self.now();
            self.on_timers(now);
            self.pump_all(now);
            if let Some(t) = self.change_since.take() {
                self.push_delay.observe(t.elapsed().as_secs_f64());
            }
        }
        info!("stopping: closing {} sessions", self.conns.len());
        for (_, c) in self.conns.drain() {
            c.handle.close();
        }
        // Give writers a moment to flush and send their FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
        ExitCode::SUCCESS
    }

    fn next_deadline(&self) -> u64 {
        let now = self.now();
        let mut d = now + 1000;
        for s in &self.sections {
            if let Some(t) = s.engine.next_deadline() {
                d = d.min(t);
            }
            for p in &s.peers {
                if p.conn.is_none() && !p.connecting && p.addr.is_some() {
                    d = d.min(p.next_connect);
                }
            }
        }
        for c in self.conns.values() {
            if let Some(t) = c.session.poll_timeout() {
                d = d.min(t);
            }
        }
        d.max(now)
    }

    fn on_timers(&mut self, now: u64) {
        for s in &mut self.sections {
            s.engine.tick(now);
            s.sample_rate(now);
            if !s.removed {
                s.report_drops(now);
            }
        }
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.session.poll_timeout().is_some_and(|t| t <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            if let Some(c) = self.conns.get_mut(&id) {
                c.session.handle_timeout(now);
            }
            self.drive(id, now);
        }
        self.connect_out(now);
    }

    /// Starts connection attempts to every peer with an address that has no
    /// session, so that start order never matters.
    pub(crate) fn connect_out(&mut self, now: u64) {
        let source = self.config.global.source;
        for (si, s) in self
            .sections
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| !s.removed)
        {
            for (pi, p) in s.peers.iter_mut().enumerate().filter(|(_, p)| !p.removed) {
                let Some(addr) = p.addr else { continue };
                if p.conn.is_some() || p.connecting || now < p.next_connect {
                    continue;
                }
                let tls = match s.cfg.peer(&p.name).and_then(|c| c.tls.as_ref()) {
                    None => None,
                    Some(o) => match self.tls_clients.get(o).and_then(|config| {
                        let name = crate::tls::peer_server_name(&p.name)?;
                        Ok(net::ConnectTls { config, name })
                    }) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            error!("TLS of peer '{}': {e}; next try in 10 s", p.name);
                            p.next_connect = now + 10_000;
                            continue;
                        }
                    },
                };
                p.connecting = true;
                p.stats.connects += 1;
                p.stats.last_connect = Some(now);
                debug!("connecting to peer {} at {addr}", p.name);
                net::spawn_connect(si, pi, addr, source, tls, self.events_tx.clone());
            }
        }
    }

    fn new_conn(
        &mut self,
        stream: net::PeerStream,
        remote: SocketAddr,
        session: Session,
        incoming: Option<usize>,
        peer: Option<(usize, usize)>,
    ) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        let handle = net::spawn_conn(id, stream, self.events_tx.clone());
        self.conns.insert(
            id,
            Conn {
                session,
                handle,
                remote,
                incoming,
                peer,
                teaching: false,
                folded: Default::default(),
                refusal_counted: false,
            },
        );
        id
    }

    fn on_net(&mut self, ev: NetEvent, now: u64) {
        match ev {
            NetEvent::Accepted {
                listener,
                stream,
                remote,
            } => {
                let max = self.config.global.maxconn.unwrap_or(DEFAULT_MAXCONN);
                if self.conns.len() >= max {
                    drop(stream);
                    self.refused_maxconn(remote, max, now);
                    return;
                }
                let session = Session::new(Role::Accept, SessionConfig::default(), now);
                self.new_conn(stream, remote, session, Some(listener), None);
            }
            NetEvent::Connected {
                section,
                peer,
                stream,
            } => {
                let s = &mut self.sections[section];
                let Some(p) = s.peers.get_mut(peer) else {
                    return;
                };
                p.connecting = false;
                if p.conn.is_some() {
                    // An incoming session won meanwhile; one is enough.
                    return;
                }
                let role = Role::Connect {
                    callee: p.name.clone(),
                    caller: s.cfg.local_name().to_string(),
                    pid: self.pid,
                };
                let remote = stream.remote;
                let session = Session::new(role, SessionConfig::default(), now);
                let id = self.new_conn(stream, remote, session, None, Some((section, peer)));
                self.sections[section].peers[peer].conn = Some(id);
                self.drive(id, now);
            }
            NetEvent::ConnectFailed {
                section,
                peer,
                error,
            } => {
                let Some(p) = self.sections[section].peers.get_mut(peer) else {
                    return;
                };
                p.connecting = false;
                p.failures += 1;
                // Bounded exponential backoff with jitter: quick enough that a
                // node coming up is joined within about a second.
                let backoff = (100u64 << p.failures.min(4)).min(1000);
                p.next_connect = now + backoff + rand::thread_rng().gen_range(0..200);
                // A refused certificate is worth a warning, not one a second.
                if error.starts_with("TLS") && p.failures.is_power_of_two() {
                    warn!(
                        "connect to peer '{}' failed ({error}); {} attempt(s) so far",
                        p.name, p.failures
                    );
                }
                debug!(
                    "connect to {} failed ({error}); retry in {} ms",
                    p.name,
                    p.next_connect - now
                );
            }
            NetEvent::Data { conn, bytes } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.session.handle_input(&bytes, now);
                    self.drive(conn, now);
                }
            }
            NetEvent::Eof { conn, error } => {
                if let Some(c) = self.conns.get(&conn) {
                    let who = self.peer_label(c);
                    match error {
                        Some(e) => info!("session with {who} ({}) failed: {e}", c.remote),
                        None => info!("session with {who} ({}) closed by peer", c.remote),
                    }
                }
                self.remove_conn(conn, now);
            }
        }
    }

    /// Counts a connection closed by `maxconn` and logs it, at most once a
    /// second (a flood must not flood the log).
    fn refused_maxconn(&mut self, remote: SocketAddr, max: usize, now: u64) {
        self.limits.maxconn_refused += 1;
        if let Some(n) = self.limits.maxconn_log.check(now) {
            let more = more_since(n);
            warn!(
                "connection from {remote} refused: connection limit reached (maxconn {max}){more}"
            );
        }
    }

    fn peer_label(&self, c: &Conn) -> String {
        match c.peer {
            Some((s, p)) => format!(
                "peer '{}' of '{}'",
                self.sections[s].peers[p].name, self.sections[s].cfg.name
            ),
            None => "unidentified peer".into(),
        }
    }

    /// Handles every pending event of a connection's session, then writes
    /// what it produced.
    fn drive(&mut self, id: ConnId, now: u64) {
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            let Some(ev) = c.session.poll_event() else {
                break;
            };
            self.on_session_event(id, ev, now);
        }
        self.flush(id);
    }

    fn flush(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(bytes) = c.session.transmit() {
            c.handle.send(bytes);
        }
        self.fold_stats(id);
    }

    fn fold_stats(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Some((s, p)) = c.peer else { return };
        let cur = c.session.stats();
        let old = std::mem::replace(&mut c.folded, cur);
        let st = &mut self.sections[s].peers[p].stats;
        st.bytes_in += cur.bytes_in - old.bytes_in;
        st.bytes_out += cur.bytes_out - old.bytes_out;
        st.updates_in += cur.updates_in - old.updates_in;
        st.updates_out += cur.updates_out - old.updates_out;
        st.heartbeats_in += cur.heartbeats_in - old.heartbeats_in;
        st.heartbeats_out += cur.heartbeats_out - old.heartbeats_out;
        st.messages_in += cur.messages_in - old.messages_in;
        st.messages_out += cur.messages_out - old.messages_out;
    }

    fn on_session_event(&mut self, id: ConnId, ev: Event, now: u64) {
        let peer = self.conns[&id].peer;
        match ev {
            Event::HelloReceived(hello) => self.on_hello(id, hello, now),
            Event::Established { minor } => {
                let Some((s, p)) = peer else { return };
                self.on_established(id, s, p, minor, now);
            }
            Event::TableDefined { remote_id, def } => {
                let Some((s, p)) = peer else { return };
                let verdict = self.sections[s]
                    .engine
                    .table_defined(p, remote_id, &def, now);
                match verdict {
                    TableVerdict::Input { output } => {
                        debug!(
                            "table {} from {} aggregated into {output}",
                            def.name, self.sections[s].peers[p].name
                        );
                        self.declare_outputs(s);
                    }
                    TableVerdict::Output => self.declare_outputs(s),
                    TableVerdict::Forwarded => {
                        debug!(
                            "table {} from up peer {} relayed to the peers that declare it",
                            def.name, self.sections[s].peers[p].name
                        );
                        self.declare_outputs(s);
                    }
                    TableVerdict::Ignored => debug!(
                        "table {} from {} is not aggregated",
                        def.name, self.sections[s].peers[p].name
                    ),
                    // Returned once per peer and table: logged once.
                    TableVerdict::Unexpected { reason } => {
                        let peer = &self.sections[s].peers[p];
                        let role = match peer.role {
                            config::Role::Up => "up peer",
                            config::Role::Down => "down peer",
                            _ => "peer",
                        };
                        warn!(
                            "table {} from {role} '{}' ignored: {reason}",
                            def.name, peer.name
                        );
                    }
                    TableVerdict::Refused { reason } => {
                        // HAProxy re-sends the DEFINE before every batch:
                        // log and count each distinct refusal once.
                        let sec = &mut self.sections[s];
                        let peer = &mut sec.peers[p];
                        let what = format!("{}: {reason}", def.name);
                        if peer.stats.last_refusal.as_deref() != Some(what.as_str()) {
                            // A peer defining table after table: at most
                            // one line a second per section.
                            let log = match reason.starts_with(crate::engine::TOO_MANY_TABLES) {
                                true => sec.tables_log.check(now),
                                false => Some(0),
                            };
                            if let Some(n) = log {
                                warn!(
                                    "table {} from peer '{}' refused: {reason}{}",
                                    def.name,
                                    peer.name,
                                    more_since(n)
                                );
                            }
                            peer.stats.refused_tables += 1;
                            peer.stats.last_refusal = Some(what);
                        }
                    }
                }
            }
            Event::TableRejected { name, reason, .. } => {
                let label = self.peer_label(&self.conns[&id]);
                warn!("table {name} from {label} cannot be decoded: {reason}");
                if let Some((s, p)) = peer {
                    let st = &mut self.sections[s].peers[p].stats;
                    st.refused_tables += 1;
                    st.last_refusal = Some(format!("{name}: {reason}"));
                }
            }
            Event::Update {
                remote_id, update, ..
            } => {
                if let Some((s, p)) = peer {
                    self.sections[s].engine.update(p, remote_id, &update, now);
                    self.change_since
                        .get_or_insert_with(std::time::Instant::now);
                }
            }
            Event::ResyncRequest => {
                let Some((s, p)) = peer else { return };
                // Answer at once: everything we publish for it, then FINISHED
                // (sent by the pump when nothing is left). HAProxy pushes us
                // nothing until it has its answer.
                self.sections[s].peers[p].stats.sync_req += 1;
                self.sections[s].engine.resend_all(p);
                if let Some(c) = self.conns.get_mut(&id) {
                    c.teaching = true;
                }
                self.pump(id, now);
            }
            Event::ResyncFinished | Event::ResyncPartial => {
                let Some((s, p)) = peer else { return };
                let pe = &mut self.sections[s].peers[p];
                pe.stats.sync_fin += 1;
                pe.learned = true;
                // Another level answers PARTIAL while its own sources have
                // not all taught it yet (see `pump`): what it sent before
                // is then kept (refreshed or expiring) rather than dropped,
                // so that its restart does not dip the totals. A load
                // balancer's table is its own truth either way.
                let level = matches!(pe.role, config::Role::Up | config::Role::Down);
                if !(level && ev == Event::ResyncPartial) {
                    self.sections[s].engine.resync_finished(p, now);
                }
            }
            Event::ResyncConfirm => {
                if let Some((s, p)) = peer {
                    let pe = &mut self.sections[s].peers[p];
                    pe.stats.sync_cfm += 1;
                    pe.taught = true;
                }
            }
            Event::Ack { .. } | Event::Heartbeat => {}
            Event::PeerError(e) => {
                let label = self.peer_label(&self.conns[&id]);
                warn!("{label} reported a {e:?} error; it will close the session");
            }
            Event::Closed(reason) => self.on_closed(id, reason, now),
        }
    }

    /// Routes an incoming hello to a section (by the name it calls us,
    /// line 2) and a peer (by its own name, line 3).
    fn on_hello(&mut self, id: ConnId, hello: peers::Hello, now: u64) {
        let c = &self.conns[&id];
        let remote = c.remote;
        // TLS: a verified client certificate must name the peer it says it is.
        if let Some(cert) = c.handle.peer_cert() {
            if let Err(e) = crate::tls::cert_valid_for(cert, &hello.caller) {
                warn!(
                    "peer '{}' from {remote} refused: {e} (TLS, 504)",
                    hello.caller
                );
                self.refuse(id, Status::UnknownPeer, now);
                return;
            }
        }
        let listen = c.incoming.map(|l| self.listeners[l]);
        let global = &self.config.global;
        let section = self.sections.iter().position(|s| {
            !s.removed && s.cfg.local_name() == hello.callee && s.cfg.listen_addr(global) == listen
        });
        let Some(si) = section else {
            warn!(
                "peer '{}' from {remote} called us '{}', which is not our name here: refused (503)",
                hello.caller, hello.callee
            );
            self.refuse(id, Status::BadCallee, now);
            return;
        };
        let s = &mut self.sections[si];
        // A peer removed by a reload is unknown again, unless it was dynamic.
        let known = s
            .peers
            .iter()
            .position(|p| p.name == hello.caller && (!p.removed || p.dynamic));
        // `strict-peers`: a configured peer only from its own address.
        let expected = known
            .filter(|&pi| !s.peers[pi].dynamic)
            .and_then(|pi| s.cfg.peer(&s.peers[pi].name))
            .and_then(|conf| s.cfg.accepts_from(conf, remote.ip()).err());
        if let Some(expected) = expected {
            self.limits.address_refused += 1;
            if let Some(n) = self.limits.address_log.check(now) {
                warn!(
                    "peer '{}' of '{}' refused (504): it connected from {}, expected {expected} \
                     (strict-peers){}",
                    hello.caller,
                    s.cfg.name,
                    remote.ip(),
                    more_since(n)
                );
            }
            self.refuse_counted(id, Status::UnknownPeer, now);
            return;
        }
        if let Some(pi) = known {
            s.peers[pi].removed = false;
        }
        let dynamic = hello.caller != s.cfg.local_name() && s.cfg.accepts_dynamic(remote.ip());
        let pi = match known {
            Some(pi) => pi,
            None if dynamic
                && s.peers.iter().filter(|p| p.dynamic).count() >= MAX_DYNAMIC_PEERS =>
            {
                self.limits.dynamic_refused += 1;
                if let Some(n) = self.limits.dynamic_log.check(now) {
                    warn!(
                        "dynamic peer '{}' from {remote} refused by section '{}' (504): \
                         it already has {MAX_DYNAMIC_PEERS} dynamic peers{}",
                        hello.caller,
                        s.cfg.name,
                        more_since(n)
                    );
                }
                self.refuse_counted(id, Status::UnknownPeer, now);
                return;
            }
            None if dynamic => {
                info!(
                    "dynamic peer '{}' joined section '{}' from {remote}",
                    hello.caller, s.cfg.name
                );
                s.peers.push(Peer::new(
                    hello.caller.clone(),
                    config::Role::Node,
                    None,
                    None,
                    true,
                ));
                s.peers.len() - 1
            }
            None => {
                warn!(
                    "unknown peer '{}' from {remote} refused by section '{}' (504)",
                    hello.caller, s.cfg.name
                );
                self.refuse(id, Status::UnknownPeer, now);
                return;
            }
        };
        // Collision: the newest session wins, as in HAProxy.
        if let Some(old) = self.sections[si].peers[pi].conn.take() {
            if old != id {
                self.sections[si].peers[pi].stats.collisions += 1;
                info!(
                    "peer '{}' reconnected: replacing its previous session",
                    hello.caller
                );
                self.drop_conn(old, now);
            }
        }
        let p = &mut self.sections[si].peers[pi];
        p.conn = Some(id);
        p.stats.accepts += 1;
        p.stats.last_accept = Some(now);
        let c = self.conns.get_mut(&id).expect("conn exists");
        c.peer = Some((si, pi));
        c.session.accept(now);
    }

    fn refuse(&mut self, id: ConnId, status: Status, _now: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.session.refuse(status);
        }
    }

    /// [`refuse`](Self::refuse), for a refusal already counted under its
    /// own reason (not again as `hello_refused`).
    fn refuse_counted(&mut self, id: ConnId, status: Status, now: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.refusal_counted = true;
        }
        self.refuse(id, status, now);
    }

    fn on_established(&mut self, id: ConnId, s: usize, p: usize, minor: u32, now: u64) {
        let sec = &mut self.sections[s];
        let peer = &mut sec.peers[p];
        peer.failures = 0;
        peer.learned = false;
        peer.taught = false;
        peer.stats.established += 1;
        peer.stats.last_established = Some(now);
        peer.stats.last_status = Some(200);
        info!(
            "session with peer '{}' of '{}' established (protocol 2.{minor})",
            peer.name, sec.cfg.name
        );
        sec.engine
            .peer_connected(p, &peer.name, engine_role(peer.role), now);
        sec.engine.set_group(p, peer.group);
        self.declare_outputs(s);
        // Learn the peer's tables and definitions (HAProxy only announces a
        // table it has not touched during such a teach).
        if let Some(c) = self.conns.get_mut(&id) {
            c.session.send_resync_request(now);
        }
    }

    /// (Re)declares, on every established session of a section, the output
    /// tables its peer should receive. Cheap and idempotent.
    fn declare_outputs(&mut self, s: usize) {
        let sec = &self.sections[s];
        for (pi, p) in sec.peers.iter().enumerate() {
            let Some(cid) = p.conn else { continue };
            let Some(c) = self.conns.get_mut(&cid) else {
                continue;
            };
            for def in sec.engine.outputs_for(pi) {
                c.session.declare_table(def);
            }
        }
    }

    fn on_closed(&mut self, id: ConnId, reason: CloseReason, now: u64) {
        let label = self.peer_label(&self.conns[&id]);
        let remote = self.conns[&id].remote;
        match &reason {
            CloseReason::Protocol(e) => {
                warn!("protocol error from {label} ({remote}): {e}; session closed");
                if let Some((s, p)) = self.conns[&id].peer {
                    self.sections[s].peers[p].stats.protocol_errors += 1;
                }
            }
            CloseReason::Refused(code) => {
                warn!(
                    "{label} ({remote}) refused our hello with status {code} ({})",
                    Status::label(*code)
                );
                if let Some((s, p)) = self.conns[&id].peer {
                    let st = &mut self.sections[s].peers[p].stats;
                    st.last_status = Some(*code);
                    st.hello_refusals += 1;
                }
            }
            CloseReason::SentStatus(code) => {
                if !self.conns[&id].refusal_counted {
                    self.limits.hello_refused += 1;
                }
                info!(
                    "hello from {remote} refused with status {code} ({})",
                    Status::label(*code)
                )
            }
            CloseReason::Silence => {
                warn!("{label} ({remote}) silent for 5 s: session closed");
                if let Some((s, p)) = self.conns[&id].peer {
                    self.sections[s].peers[p].stats.silence_closes += 1;
                }
            }
            CloseReason::HelloTimeout => {
                self.limits.hello_timeouts += 1;
                info!("{remote}: handshake not completed in time: closed")
            }
            CloseReason::LineTooLong => {
                self.limits.hello_too_long += 1;
                warn!("{remote}: hello line too long: closed")
            }
            CloseReason::Local => {}
        }
        self.flush(id);
        self.remove_conn(id, now);
    }

    /// Closes a connection we replace (collision) without touching the peer's
    /// new session.
    pub(crate) fn drop_conn(&mut self, id: ConnId, now: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.peer = None;
            c.session.close_local();
        }
        self.remove_conn(id, now);
    }

    pub(crate) fn remove_conn(&mut self, id: ConnId, now: u64) {
        self.fold_stats(id);
        let Some(mut c) = self.conns.remove(&id) else {
            return;
        };
        if let Some(b) = c.session.transmit() {
            c.handle.send(b);
        }
        c.handle.close();
        let Some((s, p)) = c.peer else { return };
        let sec = &mut self.sections[s];
        let peer = &mut sec.peers[p];
        if peer.conn == Some(id) {
            peer.conn = None;
            peer.learned = false;
            peer.taught = false;
            sec.engine.peer_disconnected(p, now);
            // Reconnect soon, with jitter so that two sides that killed each
            // other's sessions do not collide again.
            peer.next_connect = now + rand::thread_rng().gen_range(50..300);
        }
    }

    fn pump_all(&mut self, now: u64) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.pump(id, now);
        }
    }

    /// Sends a peer the engine's pending changes while its socket keeps up,
    /// then FINISHED if it asked for a resync and everything has gone out.
    fn pump(&mut self, id: ConnId, now: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Some((s, p)) = c.peer else { return };
        if !c.session.is_established() {
            return;
        }
        let sec = &mut self.sections[s];
        let (engine, peer) = (&mut sec.engine, &sec.peers[p]);
        // Definitions announced to other levels (DEFINE without entries;
        // see the engine's "How definitions reach the other levels"):
        // before the entries and the FINISHED of a resync answer.
        for def in engine.take_announcements(p) {
            let table = def.id;
            c.session.declare_table(def);
            if let Err(e) = c.session.send_define(table, now) {
                debug!("definition not sent to peer {}: {e}", peer.name);
            }
        }
        while c.handle.inflight() + c.session.pending_tx() < MAX_INFLIGHT && engine.has_pending(p) {
            for u in engine.poll_updates(p, PUMP_BATCH, now) {
                if let Err(e) = c
                    .session
                    .send_update(u.table, &u.key, &u.values, u.expire, now)
                {
                    debug!("update not sent to peer {}: {e}", peer.name);
                }
            }
            if c.session.pending_tx() >= 64 * 1024 {
                if let Some(b) = c.session.transmit() {
                    c.handle.send(b);
                }
            }
        }
        if c.teaching && !engine.has_pending(p) {
            c.teaching = false;
            // To another level: PARTIAL until every source with a session
            // (load balancers, lower levels) has taught us, so that it keeps
            // what we sent before a restart instead of dropping it while we
            // relearn (see ResyncPartial in `on_session_event`).
            let level = matches!(peer.role, config::Role::Up | config::Role::Down);
            let partial = level
                && sec.peers.iter().any(|q| {
                    matches!(q.role, config::Role::Node | config::Role::Down)
                        && !q.removed
                        && !q.learned
                        && (q.conn.is_some() || q.connecting)
                });
            c.session.send_resync_end(partial, now);
        }
        self.flush(id);
    }
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
