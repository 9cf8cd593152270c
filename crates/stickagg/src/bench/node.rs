//! One simulated HAProxy node: a peers session over real TCP that teaches
//! its tables, sends updates with absolute values, and checks the `.agg`
//! totals it receives.

use super::cli::Store;
use super::dist::{Rng, Sampler};
use bytes::{Buf, BytesMut};
use peers::{Combine, Event, KeyType, Role, Session, SessionConfig, Storage, TableDef, Value};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Keys are IPv4 addresses from 10.0.0.0.
pub const KEY_BASE: u32 = 0x0A00_0000;
/// Our input table's id on the wire, and its `.agg` twin's.
const INPUT_ID: u64 = 1;
const AGG_ID: u64 = 2;
/// Updates encoded per pass.
const BATCH: u64 = 256;
/// Bytes queued for the socket above which no more updates are encoded.
const HIGH_WATER: usize = 256 * 1024;
/// Size of one read from the socket.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes all nodes together may read in one turn each. A node's turn is
/// bounded so that every other node gets its own turn (its heartbeat, its
/// load) often enough: with 1000 nodes on one thread, 16 reads of 256 KiB
/// per turn made a round of the tasks take longer than the 5 s after which
/// a peer closes a silent session.
const READ_PER_ROUND: usize = 16 * 1024 * 1024;
/// How often a node publishes how many keys differ from the expected totals
/// (kept up to date as `.agg` updates arrive), and how often it looks for an
/// example of one (a scan of the keys).
const CHECK_EVERY_US: u64 = 50_000;
const EXAMPLE_EVERY_US: u64 = 1_000_000;

/// What every node of a run shares.
#[derive(Debug)]
pub struct RunCfg {
    pub target: SocketAddr,
    /// Name the nodes call the receiver by.
    pub callee: String,
    pub nodes: usize,
    pub keys: u32,
    /// Updates per second per node; 0: as fast as possible.
    pub rate: u64,
    /// Exactly this many load updates per node (else: until told to stop).
    pub updates: Option<u64>,
    /// Wire name of the input table (`/request_rates`).
    pub table: String,
    /// Wire name of the `.agg` twin when the receiver is an aggregator whose
    /// totals are checked; `None` for HAProxy.
    pub agg_table: Option<String>,
    pub store: Store,
    pub expire: u32,
    /// Most updates in flight (sent, not acknowledged) per node; 0: no limit.
    pub window: u64,
    /// Microseconds between two convergence markers of a node (0: every update).
    pub marker_us: u64,
    pub seed: u64,
    pub sampler: Arc<Sampler>,
}

/// What the run is doing; the nodes follow it.
#[derive(Debug, Clone)]
pub enum Phase {
    Connect,
    /// Every key once, in order, as fast as possible.
    Fill,
    Load {
        start_us: u64,
    },
    /// No more updates; the nodes publish their final counters.
    Drain,
    /// Expected totals, per key.
    Check(Arc<Vec<u32>>),
    /// The receiver is being restarted: a lost connection is expected and
    /// re-established; once reconnected, the node answers the new process's
    /// resync request with everything it holds (as HAProxy teaches a peer
    /// that reconnects) and checks that the totals it is sent back are these
    /// (from scratch: what it received before the restart is forgotten).
    Restart(Arc<Vec<u32>>),
    Stop,
}

/// A send waiting to be seen in the `.agg` table of every node.
#[derive(Debug)]
struct Marker {
    /// The key's cluster total right after this send.
    total: u64,
    sent_us: u64,
    /// Nodes (bit i: node i, up to 64) that have not seen it yet.
    pending: u64,
}

/// A node's figures, read by the progress line and the report.
#[derive(Debug, Default)]
pub struct NodeStat {
    pub ready: AtomicBool,
    pub sent: AtomicU64,
    pub load_sent: AtomicU64,
    pub acked: AtomicU64,
    pub last_ack_us: AtomicU64,
    pub agg_in: AtomicU64,
    /// Done generating for the current phase (fill, or `--updates`).
    pub gen_done: AtomicBool,
    /// Keys whose `.agg` total differs from the expected one (u64::MAX: not
    /// checked yet).
    pub mismatches: AtomicU64,
    /// (key index, received, expected) of the first mismatch.
    pub example: Mutex<Option<(u32, u32, u32)>>,
    /// Final counters, published when the load stops.
    pub counters: Mutex<Option<Vec<u32>>>,
    /// Connections re-established after the receiver went away.
    pub reconnects: AtomicU64,
}

pub struct Shared {
    pub start: Instant,
    pub cfg: RunCfg,
    /// Per key, the sum of every node's last sent counter (only with
    /// `.agg` checks).
    totals: Vec<AtomicU64>,
    marker_count: Vec<AtomicU32>,
    markers: Mutex<HashMap<u32, Vec<Marker>>>,
    all_mask: u64,
    pub stats: Vec<NodeStat>,
}

impl Shared {
    pub fn new(cfg: RunCfg) -> Shared {
        let checked = cfg.agg_table.is_some();
        let n = if checked { cfg.keys as usize } else { 0 };
        let all_mask = if cfg.nodes >= 64 {
            u64::MAX
        } else {
            (1u64 << cfg.nodes) - 1
        };
        Shared {
            start: Instant::now(),
            totals: (0..n).map(|_| AtomicU64::new(0)).collect(),
            marker_count: (0..n).map(|_| AtomicU32::new(0)).collect(),
            markers: Mutex::new(HashMap::new()),
            all_mask,
            stats: (0..cfg.nodes)
                .map(|_| NodeStat {
                    mismatches: AtomicU64::new(u64::MAX),
                    ..NodeStat::default()
                })
                .collect(),
            cfg,
        }
    }

    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Markers never seen by every node (their key got no later `.agg`).
    pub fn unresolved_markers(&self) -> usize {
        self.markers.lock().unwrap().values().map(Vec::len).sum()
    }

    pub fn table_def(&self, id: u64, name: &str) -> TableDef {
        TableDef {
            id,
            name: name.to_string(),
            key_type: KeyType::Ipv4,
            key_len: 4,
            expire: Some(self.cfg.expire),
            columns: self.cfg.store.columns.clone(),
            unknown_types: 0,
        }
    }
}

/// What a node gives back at the end.
#[derive(Debug, Default)]
pub struct NodeResult {
    /// Convergence delays it observed, in µs.
    pub delays_us: Vec<u32>,
}

/// How each value element of an update is produced.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Count32,
    Count64,
    ServerId,
    /// Index into `Node::rates`, period in ms.
    Rate(usize, u32),
}

/// HAProxy's frequency counter, ticks in ms of the node's clock.
#[derive(Debug, Clone, Copy, Default)]
struct Fq {
    /// 0: never touched.
    tick: u32,
    curr: u32,
    prev: u32,
}

impl Fq {
    /// HAProxy's `update_freq_ctr_period(ctr, period, 1)`. Ticks wrap like
    /// HAProxy's; 0 is kept for "never touched".
    fn touch(&mut self, now: u32, period: u32, phase: u32) {
        if self.tick == 0 {
            self.tick = now.wrapping_sub(now.wrapping_add(phase) % period).max(1);
        }
        let el = now.wrapping_sub(self.tick) as u64;
        let p = period as u64;
        if el >= p {
            self.prev = if el < 2 * p { self.curr } else { 0 };
            self.curr = 0;
            self.tick = self.tick.wrapping_add((el / p * p) as u32).max(1);
        }
        self.curr = self.curr.saturating_add(1);
    }

    fn wire(&self, now: u32) -> peers::FreqCtr {
        peers::FreqCtr {
            elapsed: now.wrapping_sub(self.tick),
            curr: self.curr,
            prev: self.prev,
        }
    }
}

enum Gen {
    /// Nothing to send in this phase.
    Idle,
    /// More to send at once.
    Now,
    /// Next send due at this instant (µs).
    At(u64),
}

struct Node {
    idx: usize,
    sh: Arc<Shared>,
    sess: Session,
    rng: Rng,
    phase: Phase,
    slots: Vec<Slot>,
    counters: Vec<u32>,
    rates: Vec<Vec<Fq>>,
    rate_phase: u32,
    values: Vec<Value>,
    /// Last `.agg` counter received per key (only with checks).
    last_recv: Vec<u32>,
    agg_remote: Option<u64>,
    agg_pos: usize,
    answered: bool,
    /// The next key to teach while answering a resync request.
    teach_next: Option<u32>,
    learned: bool,
    sent: u64,
    acked: u64,
    load_sent: u64,
    fill_next: u32,
    next_marker_us: u64,
    delays: Vec<u32>,
    out: BytesMut,
    expected: Option<Arc<Vec<u32>>>,
    /// Keys whose last `.agg` value differs from `expected`.
    bad: u64,
    next_check_us: u64,
    next_example_us: u64,
}

impl Node {
    fn new(sh: Arc<Shared>, idx: usize) -> Node {
        let cfg = &sh.cfg;
        let keys = cfg.keys as usize;
        let mut slots = Vec::new();
        let mut nrates = 0;
        for c in &cfg.store.columns {
            for _ in 0..c.nbelem {
                slots.push(match c.ty.storage {
                    Storage::FreqCtr => {
                        nrates += 1;
                        Slot::Rate(nrates - 1, c.period.max(1))
                    }
                    Storage::UnsignedLong => Slot::Count64,
                    Storage::SignedInt => Slot::ServerId,
                    _ => Slot::Count32,
                });
            }
        }
        let mut rng = Rng::new(cfg.seed.wrapping_add(idx as u64));
        let rate_phase = rng.next_u64() as u32;
        let sess = new_session(&sh, idx, sh.now_us() / 1000);
        let checked = cfg.agg_table.is_some();
        Node {
            idx,
            sess,
            rng,
            phase: Phase::Connect,
            slots,
            counters: vec![0; keys],
            rates: (0..nrates).map(|_| vec![Fq::default(); keys]).collect(),
            rate_phase,
            values: Vec::new(),
            last_recv: if checked { vec![0; keys] } else { Vec::new() },
            agg_remote: None,
            agg_pos: 0,
            answered: false,
            teach_next: None,
            learned: false,
            sent: 0,
            acked: 0,
            load_sent: 0,
            fill_next: 0,
            next_marker_us: 0,
            delays: Vec::new(),
            out: BytesMut::with_capacity(HIGH_WATER * 2),
            expected: None,
            bad: 0,
            next_check_us: 0,
            next_example_us: 0,
            sh,
        }
    }

    fn name(&self) -> String {
        format!("node{}", self.idx + 1)
    }

    fn stat(&self) -> &NodeStat {
        &self.sh.stats[self.idx]
    }

    fn enter(&mut self, p: Phase, now_us: u64) {
        match &p {
            Phase::Drain => {
                *self.stat().counters.lock().unwrap() = Some(self.counters.clone());
            }
            Phase::Check(exp) | Phase::Restart(exp) => {
                self.expected = Some(exp.clone());
                self.recount();
                self.next_check_us = now_us;
                if matches!(p, Phase::Restart(_)) {
                    // Not ready until the new process has been taught and
                    // has taught us (the run waits for every node to be
                    // here before it kills the receiver).
                    self.learned = false;
                    self.answered = false;
                    self.stat().ready.store(false, Relaxed);
                    self.stat().mismatches.store(u64::MAX, Relaxed);
                }
            }
            _ => self.expected = None,
        }
        self.phase = p;
    }

    /// A new session after the receiver went away: the same node (name,
    /// counters, rates), a fresh connection state, and no `.agg` values
    /// (everything must be learned again from the new process).
    fn reconnected(&mut self, now_us: u64) {
        let cfg = &self.sh.cfg;
        self.sess = new_session(&self.sh, self.idx, now_us / 1000);
        self.agg_remote = None;
        self.answered = false;
        self.teach_next = None;
        self.learned = false;
        // Update ids start again with the session; ACKs refer to them.
        self.sent = 0;
        self.acked = 0;
        self.out.clear();
        if cfg.agg_table.is_some() {
            self.last_recv.iter_mut().for_each(|v| *v = 0);
        }
        self.recount();
        let st = self.stat();
        st.sent.store(0, Relaxed);
        st.acked.store(0, Relaxed);
        st.reconnects.fetch_add(1, Relaxed);
        self.next_check_us = now_us;
    }

    /// Teaches the receiver the next [`BATCH`] keys this node holds, as
    /// HAProxy does on a resync (current values, nothing counted anew), and
    /// FINISHED after the last. A turn at a time, like the fill: each
    /// HAProxy teaches in its own process, so one node teaching a million
    /// keys in one go must not keep the others (their reconnection, their
    /// own lesson) waiting on this shared thread; it held nodes back from
    /// reconnecting to a restarted receiver by 0.2-0.3 s.
    fn teach_some(&mut self, now_us: u64) -> Result<Gen, String> {
        let Some(next) = self.teach_next else {
            return Ok(Gen::Idle);
        };
        let keys = self.sh.cfg.keys;
        let (mut k, mut taught) = (next, 0);
        while k < keys && taught < BATCH {
            if self.counters[k as usize] != 0 {
                self.encode(k, now_us, false)?;
                taught += 1;
            }
            k += 1;
        }
        self.stat().sent.store(self.sent, Relaxed);
        if k < keys {
            self.teach_next = Some(k);
        } else {
            self.teach_next = None;
            self.sess.send_resync_end(false, now_us / 1000);
            self.answered = true;
        }
        Ok(Gen::Now)
    }

    /// Session events: the resync dance, `.agg` updates, ACKs.
    fn events(&mut self, now_us: u64) -> Result<(), String> {
        let now = now_us / 1000;
        while let Some(ev) = self.sess.poll_event() {
            match ev {
                Event::Established { .. } => {
                    // Learn what the receiver has (and, from an aggregator,
                    // be taught the `.agg` table).
                    self.sess.send_resync_request(now);
                }
                Event::ResyncRequest => {
                    // Teach: our tables, every key we hold (none before the
                    // fill; all of them to a restarted receiver), FINISHED.
                    let name = self.name();
                    let err = |e| format!("{name}: {e}");
                    self.sess.send_define(INPUT_ID, now).map_err(err)?;
                    if self.sh.cfg.agg_table.is_some() {
                        self.sess.send_define(AGG_ID, now).map_err(err)?;
                    }
                    self.teach_next = Some(0);
                }
                Event::ResyncFinished | Event::ResyncPartial => self.learned = true,
                Event::TableDefined { remote_id, def }
                    if self.sh.cfg.agg_table.as_deref() == Some(def.name.as_str()) =>
                {
                    self.agg_remote = Some(remote_id);
                    self.agg_pos = check_pos(&self.sh.cfg.store, &def).ok_or_else(|| {
                        format!("{}: {} lacks the checked counter", self.name(), def.name)
                    })?;
                }
                Event::Update {
                    remote_id, update, ..
                } => {
                    if Some(remote_id) != self.agg_remote || update.key.len() != 4 {
                        continue;
                    }
                    let k = u32::from_be_bytes([
                        update.key[0],
                        update.key[1],
                        update.key[2],
                        update.key[3],
                    ])
                    .wrapping_sub(KEY_BASE);
                    if k >= self.sh.cfg.keys {
                        continue;
                    }
                    let v = match update.values.get(self.agg_pos) {
                        Some(Value::U32(v)) => *v,
                        Some(Value::U64(v)) => (*v).min(u32::MAX as u64) as u32,
                        _ => continue,
                    };
                    self.on_agg(k, v, now_us);
                }
                Event::Ack {
                    table_id,
                    update_id,
                } if table_id == INPUT_ID => {
                    self.acked = update_id as u64;
                    let st = self.stat();
                    st.acked.store(update_id as u64, Relaxed);
                    st.last_ack_us.store(now_us, Relaxed);
                }
                Event::Closed(reason) => {
                    return Err(format!("{}: session closed: {reason:?}", self.name()));
                }
                Event::PeerError(e) => {
                    return Err(format!("{}: the receiver reported {e:?}", self.name()));
                }
                _ => {}
            }
        }
        let ready = self.learned && (self.answered || self.sh.cfg.agg_table.is_none());
        if ready && !self.stat().ready.load(Relaxed) {
            self.stat().ready.store(true, Relaxed);
        }
        Ok(())
    }

    fn on_agg(&mut self, k: u32, v: u32, now_us: u64) {
        if let Some(exp) = &self.expected {
            let want = exp[k as usize];
            let was = self.last_recv[k as usize] != want;
            match (was, v != want) {
                (true, false) => self.bad -= 1,
                (false, true) => self.bad += 1,
                _ => {}
            }
        }
        self.last_recv[k as usize] = v;
        self.stat().agg_in.fetch_add(1, Relaxed);
        if self.idx >= 64 || self.sh.marker_count[k as usize].load(Relaxed) == 0 {
            return;
        }
        let bit = 1u64 << self.idx;
        let mut markers = self.sh.markers.lock().unwrap();
        let Some(list) = markers.get_mut(&k) else {
            return;
        };
        let before = list.len();
        let delays = &mut self.delays;
        list.retain_mut(|m| {
            if m.total <= v as u64 && m.pending & bit != 0 {
                delays.push(now_us.saturating_sub(m.sent_us).min(u32::MAX as u64) as u32);
                m.pending &= !bit;
            }
            m.pending != 0
        });
        let removed = before - list.len();
        if list.is_empty() {
            markers.remove(&k);
        }
        self.sh.marker_count[k as usize].fetch_sub(removed as u32, Relaxed);
    }

    /// Encodes one update of key `k` (its counter + 1).
    fn send_one(&mut self, k: u32, now_us: u64, marker: bool) -> Result<(), String> {
        self.encode(k, now_us, true)?;
        let ki = k as usize;
        if !self.sh.totals.is_empty() {
            let total = self.sh.totals[ki].fetch_add(1, Relaxed) + 1;
            if marker && now_us >= self.next_marker_us {
                self.next_marker_us = now_us + self.sh.cfg.marker_us;
                let mut m = self.sh.markers.lock().unwrap();
                m.entry(k).or_default().push(Marker {
                    total,
                    sent_us: now_us,
                    pending: self.sh.all_mask,
                });
                self.sh.marker_count[ki].fetch_add(1, Relaxed);
            }
        }
        Ok(())
    }

    /// Encodes an update of key `k` with its values, counted one event
    /// further first when `count` (a request), else as they are (a resync).
    fn encode(&mut self, k: u32, now_us: u64, count: bool) -> Result<(), String> {
        let ki = k as usize;
        if count {
            self.counters[ki] = self.counters[ki].saturating_add(1);
        }
        let c = self.counters[ki];
        // The node's clock for rates: ms, never 0.
        let fq_now = (now_us / 1000) as u32 + (1 << 20);
        self.values.clear();
        for s in &self.slots {
            self.values.push(match *s {
                Slot::Count32 => Value::U32(c),
                Slot::Count64 => Value::U64(c as u64),
                Slot::ServerId => Value::ServerId(1),
                Slot::Rate(r, period) => {
                    let f = &mut self.rates[r][ki];
                    if count {
                        f.touch(fq_now, period, self.rate_phase);
                    }
                    Value::Freq(f.wire(fq_now))
                }
            });
        }
        let key = KEY_BASE.wrapping_add(k).to_be_bytes();
        self.sess
            .send_update(INPUT_ID, &key, &self.values, None, now_us / 1000)
            .map_err(|e| format!("node{}: cannot send: {e}", self.idx + 1))?;
        self.sent += 1;
        Ok(())
    }

    fn generate(&mut self, now_us: u64) -> Result<Gen, String> {
        let keys = self.sh.cfg.keys;
        let window = self.sh.cfg.window;
        if window > 0 && self.sent - self.acked >= window {
            // Wait for ACKs (they come with the next read).
            return Ok(Gen::Idle);
        }
        let g = match self.phase {
            Phase::Fill => {
                if self.fill_next >= keys {
                    self.stat().gen_done.store(true, Relaxed);
                    return Ok(Gen::Idle);
                }
                let end = keys.min(self.fill_next.saturating_add(BATCH as u32));
                for k in self.fill_next..end {
                    self.send_one(k, now_us, false)?;
                }
                self.fill_next = end;
                Gen::Now
            }
            Phase::Load { start_us } => {
                let mut n = BATCH;
                if let Some(u) = self.sh.cfg.updates {
                    if self.load_sent >= u {
                        self.stat().gen_done.store(true, Relaxed);
                        return Ok(Gen::Idle);
                    }
                    n = n.min(u - self.load_sent);
                }
                let rate = self.sh.cfg.rate;
                if rate > 0 {
                    let due = ((now_us.saturating_sub(start_us)) as u128 * rate as u128 / 1_000_000)
                        as u64;
                    if due <= self.load_sent {
                        let next = start_us
                            + ((self.load_sent + 1) as u128 * 1_000_000).div_ceil(rate as u128)
                                as u64;
                        return Ok(Gen::At(next));
                    }
                    n = n.min(due - self.load_sent);
                }
                for _ in 0..n {
                    let k = self.sh.cfg.sampler.sample(&mut self.rng);
                    self.send_one(k, now_us, true)?;
                }
                self.load_sent += n;
                self.stat().load_sent.store(self.load_sent, Relaxed);
                Gen::Now
            }
            _ => Gen::Idle,
        };
        self.stat().sent.store(self.sent, Relaxed);
        Ok(g)
    }

    /// Counts the keys whose `.agg` value differs from the expected total
    /// (once per expectation; `on_agg` keeps the count from then on).
    fn recount(&mut self) {
        self.bad = match &self.expected {
            Some(exp) => self
                .last_recv
                .iter()
                .zip(exp.iter())
                .filter(|(got, want)| got != want)
                .count() as u64,
            None => 0,
        };
    }

    /// Publishes how many keys differ from the expected totals, and now and
    /// then an example of one.
    fn check(&mut self, now_us: u64) {
        let Some(exp) = &self.expected else { return };
        if now_us < self.next_check_us {
            return;
        }
        self.next_check_us = now_us + CHECK_EVERY_US;
        if self.bad > 0 && now_us >= self.next_example_us {
            self.next_example_us = now_us + EXAMPLE_EVERY_US;
            let example = self
                .last_recv
                .iter()
                .zip(exp.iter())
                .position(|(got, want)| got != want)
                .map(|k| (k as u32, self.last_recv[k], exp[k]));
            *self.stat().example.lock().unwrap() = example;
        } else if self.bad == 0 {
            *self.stat().example.lock().unwrap() = None;
        }
        self.stat().mismatches.store(self.bad, Relaxed);
    }

    fn pull_tx(&mut self) {
        if let Some(b) = self.sess.transmit() {
            self.out.extend_from_slice(&b);
        }
    }

    fn write(&mut self, stream: &TcpStream) -> Result<(), String> {
        while !self.out.is_empty() {
            match stream.try_write(&self.out) {
                Ok(n) => self.out.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("{}: write: {e}", self.name())),
            }
        }
        if self.out.is_empty() {
            self.out.clear();
        }
        Ok(())
    }
}

/// A connecting session of node `idx` with its tables declared.
fn new_session(sh: &Shared, idx: usize, now_ms: u64) -> Session {
    let cfg = &sh.cfg;
    let mut sess = Session::new(
        Role::Connect {
            callee: cfg.callee.clone(),
            caller: format!("node{}", idx + 1),
            pid: std::process::id(),
        },
        SessionConfig::default(),
        now_ms,
    );
    sess.declare_table(Arc::new(sh.table_def(INPUT_ID, &cfg.table)));
    if let Some(agg) = &cfg.agg_table {
        sess.declare_table(Arc::new(sh.table_def(AGG_ID, agg)));
    }
    sess
}

/// Position, in an update of `def`, of the counter the checks read.
fn check_pos(store: &Store, def: &TableDef) -> Option<usize> {
    let mut at = 0;
    let mut ours = 0;
    let mut want = None;
    for c in &store.columns {
        if ours == store.check_value {
            want = Some(c.ty.id);
        }
        ours += c.nbelem as usize;
    }
    let want = want?;
    for c in &def.columns {
        if c.ty.id == want {
            return Some(at);
        }
        at += c.nbelem as usize;
    }
    None
}

/// Expected total of a key from the nodes' counters.
pub fn combine_totals(store: &Store, counters: &[Vec<u32>], keys: usize) -> Vec<u32> {
    (0..keys)
        .map(|k| {
            let s: u64 = counters.iter().map(|c| c[k] as u64).sum();
            match store.check_combine {
                Combine::Sum32 | Combine::Sum64 => s.min(u32::MAX as u64) as u32,
                _ => unreachable!("checked columns are sums"),
            }
        })
        .collect()
}

/// How one connection of a node ended.
enum Ended {
    /// The run is over.
    Stop,
    /// The connection was lost (why); fatal unless a restart is under way.
    Lost(String),
}

/// Runs node `idx` until the phase says stop, reconnecting when the
/// receiver is restarted on purpose (`Phase::Restart`).
pub async fn run(
    sh: Arc<Shared>,
    idx: usize,
    mut phase_rx: watch::Receiver<Phase>,
) -> Result<NodeResult, String> {
    let mut node = Node::new(sh.clone(), idx);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut stream = connect(&sh, idx, Duration::from_secs(5)).await?;
    loop {
        match serve(&mut node, &stream, &mut buf, &mut phase_rx).await? {
            Ended::Stop => {
                return Ok(NodeResult {
                    delays_us: std::mem::take(&mut node.delays),
                })
            }
            Ended::Lost(_) if matches!(node.phase, Phase::Restart(_)) => {
                drop(stream);
                // The new process may take a moment to listen again.
                stream = connect(&sh, idx, Duration::from_secs(30)).await?;
                node.reconnected(sh.now_us());
            }
            Ended::Lost(why) => return Err(why),
        }
    }
}

/// Connects to the receiver, retrying refused attempts until `limit`.
async fn connect(sh: &Shared, idx: usize, limit: Duration) -> Result<TcpStream, String> {
    let target = sh.cfg.target;
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, TcpStream::connect(target)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(Err(e)) => return Err(format!("node{}: connect to {target}: {e}", idx + 1)),
            Err(_) => return Err(format!("node{}: connect to {target}: timeout", idx + 1)),
        }
    }
}

/// Drives one connection of `node` until the run stops or it is lost.
async fn serve(
    node: &mut Node,
    stream: &TcpStream,
    buf: &mut [u8],
    phase_rx: &mut watch::Receiver<Phase>,
) -> Result<Ended, String> {
    let sh = node.sh.clone();
    let idx = node.idx;
    // Set when `changed()` below consumed a change notification.
    let mut phase_changed = true;
    // Reads per turn: 16 MiB over all nodes, at least one read, at most 64
    // (4 MiB) for a node of a small run.
    let reads = (READ_PER_ROUND / sh.cfg.nodes.max(1) / READ_CHUNK).clamp(1, 64);
    loop {
        let now_us = sh.now_us();
        if phase_changed || phase_rx.has_changed().unwrap_or(true) {
            phase_changed = false;
            let p = phase_rx.borrow_and_update().clone();
            node.enter(p, now_us);
        }
        if matches!(node.phase, Phase::Stop) {
            return Ok(Ended::Stop);
        }
        if let Err(e) = node.events(now_us) {
            return Ok(Ended::Lost(e));
        }
        let gen = if node.out.len() + node.sess.pending_tx() < HIGH_WATER {
            // A lesson under way goes first: what the load sends after it
            // is counted from the values taught.
            if node.teach_next.is_some() {
                node.teach_some(now_us)?
            } else {
                node.generate(now_us)?
            }
        } else {
            Gen::Idle
        };
        node.check(now_us);
        node.pull_tx();
        if let Err(e) = node.write(stream) {
            return Ok(Ended::Lost(e));
        }
        for _ in 0..reads {
            match stream.try_read(buf) {
                Ok(0) => {
                    return Ok(Ended::Lost(format!(
                        "node{}: connection closed by the receiver",
                        idx + 1
                    )))
                }
                Ok(n) => {
                    let now_us = sh.now_us();
                    node.sess.handle_input(&buf[..n], now_us / 1000);
                    if let Err(e) = node.events(now_us) {
                        return Ok(Ended::Lost(e));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Ok(Ended::Lost(format!("node{}: read: {e}", idx + 1))),
            }
        }
        // Timers after reading: a busy simulator must not take its own lag
        // for the receiver's silence.
        let now_ms = sh.now_us() / 1000;
        if node.sess.poll_timeout().is_some_and(|t| t <= now_ms) {
            node.sess.handle_timeout(now_ms);
            if let Err(e) = node.events(sh.now_us()) {
                return Ok(Ended::Lost(e));
            }
        }
        node.pull_tx();
        if let Err(e) = node.write(stream) {
            return Ok(Ended::Lost(e));
        }
        let room = node.out.len() < HIGH_WATER;
        let mut wake_ms = node
            .sess
            .poll_timeout()
            .unwrap_or(u64::MAX)
            .min(now_ms + 200);
        match gen {
            Gen::Now if room => {
                tokio::task::yield_now().await;
                continue;
            }
            Gen::At(us) => wake_ms = wake_ms.min(us.div_ceil(1000)),
            _ => {}
        }
        if node.expected.is_some() {
            wake_ms = wake_ms.min(node.next_check_us.div_ceil(1000));
        }
        let interest = if node.out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        let deadline = tokio::time::Instant::from_std(sh.start + Duration::from_millis(wake_ms));
        tokio::select! {
            r = stream.ready(interest) => {
                if let Err(e) = r {
                    return Ok(Ended::Lost(format!("node{}: {e}", idx + 1)));
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
            _ = phase_rx.changed() => phase_changed = true,
        }
    }
}
