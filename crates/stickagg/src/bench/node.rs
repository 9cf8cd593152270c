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
/// How often a node compares its `.agg` table with the expected totals.
const CHECK_EVERY_US: u64 = 50_000;

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
    learned: bool,
    sent: u64,
    acked: u64,
    load_sent: u64,
    fill_next: u32,
    next_marker_us: u64,
    delays: Vec<u32>,
    out: BytesMut,
    expected: Option<Arc<Vec<u32>>>,
    next_check_us: u64,
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
        let now = sh.now_us() / 1000;
        let mut sess = Session::new(
            Role::Connect {
                callee: cfg.callee.clone(),
                caller: format!("node{}", idx + 1),
                pid: std::process::id(),
            },
            SessionConfig::default(),
            now,
        );
        sess.declare_table(Arc::new(sh.table_def(INPUT_ID, &cfg.table)));
        if let Some(agg) = &cfg.agg_table {
            sess.declare_table(Arc::new(sh.table_def(AGG_ID, agg)));
        }
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
            learned: false,
            sent: 0,
            acked: 0,
            load_sent: 0,
            fill_next: 0,
            next_marker_us: 0,
            delays: Vec::new(),
            out: BytesMut::with_capacity(HIGH_WATER * 2),
            expected: None,
            next_check_us: 0,
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
            Phase::Check(exp) => {
                self.expected = Some(exp.clone());
                self.next_check_us = now_us;
            }
            _ => {}
        }
        self.phase = p;
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
                    // Teach: our tables (empty so far), then FINISHED.
                    let name = self.name();
                    let err = |e| format!("{name}: {e}");
                    self.sess.send_define(INPUT_ID, now).map_err(err)?;
                    if self.sh.cfg.agg_table.is_some() {
                        self.sess.send_define(AGG_ID, now).map_err(err)?;
                    }
                    self.sess.send_resync_end(false, now);
                    self.answered = true;
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
        let ki = k as usize;
        let c = self.counters[ki].saturating_add(1);
        self.counters[ki] = c;
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
                    f.touch(fq_now, period, self.rate_phase);
                    Value::Freq(f.wire(fq_now))
                }
            });
        }
        let key = KEY_BASE.wrapping_add(k).to_be_bytes();
        self.sess
            .send_update(INPUT_ID, &key, &self.values, None, now_us / 1000)
            .map_err(|e| format!("node{}: cannot send: {e}", self.idx + 1))?;
        self.sent += 1;
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

    /// Compares the `.agg` table with the expected totals.
    fn check(&mut self, now_us: u64) {
        let Some(exp) = &self.expected else { return };
        if now_us < self.next_check_us {
            return;
        }
        self.next_check_us = now_us + CHECK_EVERY_US;
        let mut bad = 0u64;
        let mut example = None;
        for (k, (&got, &want)) in self.last_recv.iter().zip(exp.iter()).enumerate() {
            if got != want {
                bad += 1;
                example.get_or_insert((k as u32, got, want));
            }
        }
        *self.stat().example.lock().unwrap() = example;
        self.stat().mismatches.store(bad, Relaxed);
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

/// Runs node `idx` until the phase says stop.
pub async fn run(
    sh: Arc<Shared>,
    idx: usize,
    mut phase_rx: watch::Receiver<Phase>,
) -> Result<NodeResult, String> {
    let target = sh.cfg.target;
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target))
        .await
        .map_err(|_| format!("node{}: connect to {target}: timeout", idx + 1))?
        .map_err(|e| format!("node{}: connect to {target}: {e}", idx + 1))?;
    let _ = stream.set_nodelay(true);
    let mut node = Node::new(sh.clone(), idx);
    let mut buf = vec![0u8; 256 * 1024];
    // Set when `changed()` below consumed a change notification.
    let mut phase_changed = true;
    loop {
        let now_us = sh.now_us();
        let now_ms = now_us / 1000;
        if phase_changed || phase_rx.has_changed().unwrap_or(true) {
            phase_changed = false;
            let p = phase_rx.borrow_and_update().clone();
            node.enter(p, now_us);
        }
        if matches!(node.phase, Phase::Stop) {
            return Ok(NodeResult {
                delays_us: std::mem::take(&mut node.delays),
            });
        }
        if node.sess.poll_timeout().is_some_and(|t| t <= now_ms) {
            node.sess.handle_timeout(now_ms);
        }
        node.events(now_us)?;
        let gen = if node.out.len() + node.sess.pending_tx() < HIGH_WATER {
            node.generate(now_us)?
        } else {
            Gen::Idle
        };
        node.check(now_us);
        node.pull_tx();
        node.write(&stream)?;
        for _ in 0..16 {
            match stream.try_read(&mut buf) {
                Ok(0) => {
                    return Err(format!(
                        "node{}: connection closed by the receiver",
                        idx + 1
                    ))
                }
                Ok(n) => {
                    let now_us = sh.now_us();
                    node.sess.handle_input(&buf[..n], now_us / 1000);
                    node.events(now_us)?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("node{}: read: {e}", idx + 1)),
            }
        }
        node.pull_tx();
        node.write(&stream)?;
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
                r.map_err(|e| format!("node{}: {e}", idx + 1))?;
            }
            _ = tokio::time::sleep_until(deadline) => {}
            _ = phase_rx.changed() => phase_changed = true,
        }
    }
}
