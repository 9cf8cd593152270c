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
use crate::engine::{
    EngineConfig, EngineLimits, PeerRole, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TABLES,
};
use crate::net::{self, ConnId, NetEvent};
use crate::stats::{self, StatsRequest};
use peers::session::{Role, Session, SessionConfig};
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::state::more_since;
pub use crate::state::{Conn, LimitStats, Peer, PeerStats, SectionState};

/// Bytes handed to a connection's writer and not yet written, above which no
/// more updates are pumped to it (its changes wait, coalesced, in the engine).
const MAX_INFLIGHT: usize = 256 * 1024;
/// Updates taken from the engine per call.
const PUMP_BATCH: usize = 256;
/// Updates sent to one peer per hub iteration, and to all peers together.
/// A socket that keeps up would otherwise be fed until the engine has nothing
/// left for it (10 M updates after a restart with 1 M keys and 10 nodes): the
/// hub would stop reading, and stop sending heartbeats, for seconds, and
/// HAProxy closes a session after 5 s of silence. With a budget the hub goes
/// round again at once, handling what arrived meanwhile.
const PUMP_BUDGET: usize = 8 * PUMP_BATCH;
const PUMP_BUDGET_ALL: usize = 32 * 1024;
/// Bytes waiting for a connection that are written at once, not at the end
/// of the round or the write interval (see [`Hub::flush_soon`]).
const FLUSH_NOW_BYTES: usize = 16 * 1024;
/// Net events handled before timers and pumping updates out (fairness vs.
/// batching), and at most this many input bytes among them: 512 reads of
/// 64 KiB are 1.5 M updates, seconds of work, during which no heartbeat
/// would go out and HAProxy, after 5 s, closes the session. 1 MiB is about
/// 50k updates, tens of milliseconds.
const EVENT_BATCH: usize = 512;
const EVENT_BATCH_BYTES: usize = 1 << 20;
/// Net events waiting for the hub, all connections together. Each read
/// holds up to 64 KiB, so this bounds what input waiting in stickagg can
/// cost (64 MiB); beyond, the readers wait and the peers' bytes wait in the
/// sockets (TCP pushes back on the senders, as between HAProxy peers). It
/// was 4096 (up to 256 MiB, and about that was seen in RSS when ten nodes
/// sent as fast as they could).
const NET_EVENTS_QUEUED: usize = 1024;
/// Concurrent peer connections (incoming and outgoing) when the
/// configuration has no `maxconn`: beyond, new incoming connections are
/// closed at once.
pub const DEFAULT_MAXCONN: usize = 10_000;
/// Names a section accepts through `dynamic-peers` (each is kept for the
/// life of the process): beyond, new names are refused with 504.
pub const MAX_DYNAMIC_PEERS: usize = 10_000;

/// Runs the aggregator until SIGINT/SIGTERM.
pub fn run(config: Config, args: Args) -> ExitCode {
    // One thread for the hub and every connection's I/O tasks. With a
    // thread pool, each read and each write crossed threads: a wake-up and
    // a context switch per socket event, and readers queued input faster
    // than the hub could handle it. Measured on 2 cores against the pool,
    // alternating builds: 9.9 against 10.8 CPU s per million updates at
    // 100k updates/s; 1000 peers at 100/s, convergence p50 3.1-4.0 s
    // against 7.7 s (BENCHMARKS.md, "Seventh round"). The hub is one thread
    // anyway; what this gives up is TLS work (handshakes, encryption) on
    // other cores, and DNS lookups still run on tokio's blocking pool.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::fdlimit::fit_and_log(maxconn(&config.global));
    rt.block_on(async move {
        match Hub::start(config).await {
            Ok(mut hub) => {
                hub.write_interval_us = args.write_interval;
                hub.run().await
            }
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
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
    /// `ahash`: looked up for every event the hub handles (std's SipHash
    /// showed in the profile).
    pub conns: HashMap<ConnId, Conn, ahash::RandomState>,
    next_conn: ConnId,
    pub(crate) events_tx: mpsc::Sender<NetEvent>,
    events_rx: mpsc::Receiver<NetEvent>,
    stats_rx: mpsc::Receiver<StatsRequest>,
    metrics_rx: mpsc::Receiver<crate::metrics::MetricsRequest>,
    /// Delay from receiving a change to handing the new aggregate to the
    /// peers' writers (observed once per hub iteration that saw updates).
    pub push_delay: prometheus_client::metrics::histogram::Histogram,
    /// When the first update not yet pushed was received.
    pub(crate) change_since: Option<std::time::Instant>,
    pid: u32,
    /// TLS client configurations of outgoing connections (`peer … ssl`).
    pub tls_clients: crate::tls::ClientCache,
    /// Limits enforced (see [`LimitStats`]).
    pub limits: LimitStats,
    /// A pump stopped on its budget with more to send: go round again at
    /// once, starting with connection `pump_from`.
    pump_more: bool,
    pump_from: ConnId,
    /// Connections whose bytes wait for their write interval
    /// ([`Hub::flush_soon`]).
    deferred: Vec<ConnId>,
    /// The first change received whose totals wait in `deferred` (for
    /// `push_delay`).
    unflushed_since: Option<std::time::Instant>,
    /// `--write-interval`: least time between two writes to a connection,
    /// in µs (0: once per round).
    pub write_interval_us: u64,
}

/// Input bytes a network event carries.
fn input_len(ev: &NetEvent) -> usize {
    match ev {
        NetEvent::Data { bytes, .. } => bytes.len(),
        _ => 0,
    }
}

/// `maxconn`, or its default.
pub(crate) fn maxconn(g: &config::Global) -> usize {
    g.maxconn.unwrap_or(DEFAULT_MAXCONN)
}

/// `max-entries` and `max-tables`, or the engine's defaults.
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

pub(crate) fn engine_role(r: config::Role) -> PeerRole {
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
        let (events_tx, events_rx) = mpsc::channel(NET_EVENTS_QUEUED);
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
            // The hub's clock starts at 0 (`Hub::now`).
            sections.push(SectionState::new(s, &config.global, 0));
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
            conns: HashMap::default(),
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
            pump_more: false,
            pump_from: 0,
            deferred: Vec::new(),
            unflushed_since: None,
            write_interval_us: 0,
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
            let mut wake = self.start + Duration::from_millis(deadline);
            // Writes waiting for their interval (`flush_soon`), to the
            // microsecond: the timer still rounds up to its millisecond.
            for c in self.deferred.iter().filter_map(|id| self.conns.get(id)) {
                let due = c.flushed_at + self.write_interval_us;
                wake = wake.min(self.start + Duration::from_micros(due));
            }
            let sleep = tokio::time::sleep_until(wake);
            tokio::select! {
                ev = self.events_rx.recv() => {
                    let Some(ev) = ev else { break };
                    let now = self.now();
                    let mut bytes = input_len(&ev);
                    self.on_net(ev, now);
                    for _ in 0..EVENT_BATCH {
                        if bytes >= EVENT_BATCH_BYTES {
                            break;
                        }
                        match self.events_rx.try_recv() {
                            Ok(ev) => {
                                bytes += input_len(&ev);
                                self.on_net(ev, now);
                            }
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
            let flushed = self.flush_deferred();
            // The push delay ends when the totals are handed to the sockets:
            // at once, or for a connection written to just before, when its
            // interval has passed (`flush_soon`; counted when the first
            // waiting connection is written, to within the interval).
            if let Some(t) = self.change_since.take() {
                self.unflushed_since.get_or_insert(t);
            }
            if flushed || self.deferred.is_empty() {
                if let Some(t) = self.unflushed_since.take() {
                    self.push_delay.observe(t.elapsed().as_secs_f64());
                }
            }
            // Let the connections' tasks run: they share this thread (see
            // `run`). Taking input with `try_recv` does not count against
            // tokio's cooperative budget, so without this the hub could go
            // on for 128 rounds of up to 1 MiB each (seconds) while readers
            // with a peer's heartbeats waiting never ran, and that peer
            // would be taken for silent.
            tokio::task::yield_now().await;
        }
        info!("stopping: closing {} sessions", self.conns.len());
        // What waits for `--write-interval` goes out first.
        for id in std::mem::take(&mut self.deferred) {
            self.flush(id);
        }
        for (_, c) in self.conns.drain() {
            c.handle.close();
        }
        // Give writers a moment to flush and send their FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
        ExitCode::SUCCESS
    }

    fn next_deadline(&self) -> u64 {
        let now = self.now();
        if self.pump_more {
            return now;
        }
        let mut d = now + 1000;
        for s in &self.sections {
            if let Some(t) = s.engine.next_deadline() {
                d = d.min(t);
            }
            if let Some(t) = s.hold_deadline() {
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
            // A hold past its deadline ends here even when the section has
            // no session to pump (its deadline would wake the hub at once,
            // again and again).
            if s.hold_deadline().is_some_and(|t| t <= now) {
                s.holding(now);
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
                // Input still queued for us: we are late, the peer is not
                // silent (see `Session::note_input_pending`).
                if c.handle.queued() > 0 {
                    c.session.note_input_pending(now);
                }
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
                flushed_at: 0,
                deferred: false,
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
                let max = maxconn(&self.config.global);
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
                    c.handle.consumed(bytes.len());
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

    pub(crate) fn peer_label(&self, c: &Conn) -> String {
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
            // Tell the engine what is coming a few updates ahead: their
            // lookups and memory fetches then overlap (`Engine::prefetch`).
            if let Some((s, p)) = c.peer {
                self.sections[s].engine.prefetch_queued(p, &c.session);
            }
            self.on_session_event(id, ev, now);
        }
        self.flush_soon(id);
    }

    /// Queues a connection's bytes to be written at the end of the round
    /// (`flush_deferred`), so that one write carries both the ACKs of what
    /// it sent and the totals pushed to it, rather than one each; at once
    /// if [`FLUSH_NOW_BYTES`] are waiting.
    ///
    /// With `--write-interval`, the end of the round is not enough: a
    /// connection written to less than that long ago waits until it has
    /// passed (at the end of a later round, or at the timer when no input
    /// comes first). Why an operator may want it: a steady trickle of
    /// input (10 nodes at 10k updates/s each) makes rounds of a few updates
    /// each, about ten thousand a second, and their writes were 70 % of
    /// stickagg's CPU, in the kernel: a whole core at 100k updates/s. An
    /// interval of 250 µs cut that by 2.4 times, for 0.2 ms more at the
    /// median and 1 ms more at p99; at 10k updates/s it saved 9 % and cost
    /// 1 ms at the median, the timer rounding to the millisecond
    /// (BENCHMARKS.md, tenth round). So it is off by default.
    fn flush_soon(&mut self, id: ConnId) {
        let now = self.micros();
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let pending = c.session.pending_tx();
        if pending >= FLUSH_NOW_BYTES {
            c.flushed_at = now;
            self.flush(id);
            return;
        }
        if pending > 0 && !c.deferred {
            c.deferred = true;
            self.deferred.push(id);
        }
        self.fold_stats(id);
    }

    /// Writes the connections waiting in `deferred` whose write interval
    /// has passed (all of them without `--write-interval`; see
    /// [`flush_soon`](Self::flush_soon)); whether it wrote any.
    fn flush_deferred(&mut self) -> bool {
        let now = self.micros();
        let mut flushed = false;
        let mut i = 0;
        while i < self.deferred.len() {
            let id = self.deferred[i];
            let Some(c) = self.conns.get_mut(&id) else {
                self.deferred.swap_remove(i);
                continue;
            };
            if now < c.flushed_at + self.write_interval_us {
                i += 1;
                continue;
            }
            c.deferred = false;
            c.flushed_at = now;
            self.deferred.swap_remove(i);
            self.flush(id);
            flushed = true;
        }
        flushed
    }

    /// Microseconds since start, for the write intervals only (the engine
    /// and the sessions count in milliseconds).
    fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub(crate) fn flush(&mut self, id: ConnId) {
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

    /// Pumps the connections within the hub's budget, in connection order,
    /// starting where the previous round's budget ran out: with a thousand
    /// busy peers each round serves a few, and every peer's turn comes
    /// within a bounded number of rounds.
    fn pump_all(&mut self, now: u64) {
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        self.pump_more = false;
        if ids.is_empty() {
            return;
        }
        let first = ids.partition_point(|&id| id < self.pump_from);
        ids.rotate_left(first);
        let mut budget = PUMP_BUDGET_ALL;
        // Whether a section holds its sums back: asked once a round (an
        // O(peers) scan while the hold lasts), of the sections with a
        // session only.
        let mut held: Vec<Option<bool>> = vec![None; self.sections.len()];
        for id in ids {
            if budget == 0 {
                // Next round starts with this one.
                self.pump_from = id;
                self.pump_more = true;
                return;
            }
            let section = self
                .conns
                .get(&id)
                .filter(|c| c.session.is_established())
                .and_then(|c| c.peer)
                .map(|(s, _)| s);
            let h = section.map(|s| *held[s].get_or_insert_with(|| self.sections[s].holding(now)));
            budget = budget.saturating_sub(self.pump_held(id, now, h));
        }
        self.pump_from = 0;
    }

    /// Sends a peer the engine's pending changes while its socket keeps up
    /// (at most [`PUMP_BUDGET`] per call), then FINISHED if it asked for a
    /// resync and everything has gone out. Returns how many it sent.
    pub(crate) fn pump(&mut self, id: ConnId, now: u64) -> usize {
        self.pump_held(id, now, None)
    }

    /// [`pump`](Self::pump), with whether the peer's section holds its sums
    /// back if already known this round.
    fn pump_held(&mut self, id: ConnId, now: u64, held: Option<bool>) -> usize {
        let Some(c) = self.conns.get_mut(&id) else {
            return 0;
        };
        let Some((s, p)) = c.peer else { return 0 };
        if !c.session.is_established() {
            return 0;
        }
        let sec = &mut self.sections[s];
        // A section that has just started sends no sums until its own
        // sources have taught it (`SectionState::holding`).
        let held = held.unwrap_or_else(|| sec.holding(now));
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
        let (mut sent, mut more) = (0, false);
        while !held
            && c.handle.inflight() + c.session.pending_tx() < MAX_INFLIGHT
            && engine.has_pending(p)
        {
            if sent >= PUMP_BUDGET {
                more = true;
                break;
            }
            for u in engine.poll_updates(p, PUMP_BATCH, now) {
                sent += 1;
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
        // The end of a resync answer: once everything pending went out; or,
        // while the sums are held, at once to a load balancer (which pushes
        // us nothing until it has it) or a lower level (it gets PARTIAL and
        // keeps what it had), but not to an upper level, which keeps our
        // share meanwhile and then gets the whole answer.
        let end = if held {
            peer.role != config::Role::Up
        } else {
            !engine.has_pending(p)
        };
        if c.teaching && end {
            c.teaching = false;
            // To another level: PARTIAL until every source with a session
            // (load balancers, lower levels) has taught us, so that it keeps
            // what we sent before a restart instead of dropping it while we
            // relearn (see ResyncPartial in `on_session_event`).
            let level = matches!(peer.role, config::Role::Up | config::Role::Down);
            let partial = level && sec.peers.iter().any(Peer::awaited_source);
            c.session.send_resync_end(partial, now);
        }
        self.flush_soon(id);
        self.pump_more |= more;
        sent
    }
}
