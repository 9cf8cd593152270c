//! The aggregation engine of one `aggregations` section, without I/O.
//!
//! Peers (load balancers) announce tables and send absolute values per key;
//! the engine keeps the latest value of every (source, input table, key),
//! recomputes the cluster aggregate from those (semantics.md), and tells the
//! networking code what to send back to each peer's output (`.agg`) tables.
//! Time is a monotonic millisecond count passed in by the caller, so
//! everything here runs in virtual time in tests.
//!
//! How changes reach the peers: like HAProxy's update tree. Every change of
//! a key's aggregate gives it a new, engine-wide sequence number; each output
//! table keeps a `BTreeMap<seq, key>` holding each key once; each peer has a
//! cursor (last sequence sent) per output table. Polling walks from the
//! cursor and computes the values at poll time. There are no per-peer queues:
//! memory is bounded by the number of keys whatever the peers do, the cost of
//! a change does not depend on the number of peers, and a slow peer simply
//! lags and always gets the latest value of each key once.
//!
//! Rates are republished on their own so that they keep decaying on the
//! nodes exactly like the sum of the sources' counters (see
//! `Layout::next_republish`).

mod intern;
mod mapping;
mod table;
mod view;

#[cfg(test)]
mod tests;

pub use mapping::{is_output_name, output_name};
pub use view::{ContributionInfo, KeyInfo, SourceInfo, TableInfo};

use ahash::RandomState;
use bytes::Bytes;
use intern::Interner;
use peers::{KeyType, TableDef, Update, Value};
use std::collections::HashMap;
use std::sync::Arc;
use table::{Ctx, Table, Timers, NEVER};

/// What the engine needs of an `aggregations` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// `None`: `from any`; `Some(".nonagg")`: only tables with that suffix.
    pub from: Option<String>,
    /// Output suffix, e.g. `.agg`.
    pub to: String,
    /// Suffixes that are never inputs (e.g. `.agg` on an intermediate).
    pub forward: Vec<String>,
}

/// A peer's place in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// A load balancer: a source, and a receiver of the outputs it declares.
    Node,
    /// An upper-level aggregator. Its tables are not inputs here (they are
    /// totals computed above; relaying them is the `forward` feature).
    Up,
    /// A lower-level aggregator: a source like a node (groups come later).
    Down,
}

/// Assigned by the server; stable for a peer name across reconnects.
pub type PeerId = usize;

/// What the engine makes of a peer's table definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableVerdict {
    /// An input; its totals go to `output`.
    Input { output: String },
    /// One of our outputs: the peer wants it (its updates for it are our own
    /// results coming back and are ignored).
    Output,
    /// Neither (e.g. not matching `from .nonagg`); its updates are ignored.
    Ignored,
    /// An input whose shape differs from the one first announced; this
    /// peer's updates for it are ignored.
    Refused { reason: String },
}

/// One entry to send to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutUpdate {
    /// Our output table id (as in [`Engine::outputs_for`]).
    pub table: u64,
    pub key: Bytes,
    /// In the output definition's column order.
    pub values: Vec<Value>,
    /// Remaining lifetime to send as a timed update; `None`: never expires.
    pub expire: Option<u32>,
}

/// Counters for the stats socket and logs. Everything ignored is counted
/// here rather than reported as an error: no input sequence makes the engine
/// fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Input updates stored.
    pub updates: u64,
    /// Updates for a table id not defined on the peer's current connection,
    /// or from a peer that never connected.
    pub ignored_unknown: u64,
    /// Updates for an output table (our own results coming back).
    pub ignored_output: u64,
    /// Updates for tables that are neither inputs nor outputs.
    pub ignored_table: u64,
    /// Updates for a refused (mismatching) definition.
    pub ignored_refused: u64,
    /// Updates whose values do not fit the table's definition.
    pub ignored_malformed: u64,
    /// Definitions refused for a mismatching shape.
    pub refused_defs: u64,
    /// Contributions that lapsed.
    pub expired: u64,
    /// Contributions dropped as stale after a source's resync.
    pub stale_dropped: u64,
    /// Rate republishes.
    pub republished: u64,
}

/// What a peer's table id on its current connection stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// `expire`: the sender's table expire in ms (0: never).
    Input {
        table: u32,
        expire: u32,
    },
    Output,
    Ignored,
    Refused,
}

/// An output a peer declared (it sent a DEFINE with that name).
#[derive(Debug, Clone)]
struct Want {
    output: String,
    key_type: KeyType,
    key_len: u32,
    /// The table, once some peer announced its input.
    table: Option<u32>,
}

#[derive(Debug)]
struct PeerState {
    name: String,
    role: PeerRole,
    connected: bool,
    /// First receive stamp of the latest connection: contributions stamped
    /// before it predate that connection.
    epoch: u64,
    /// Remote table id → meaning, for the current connection only.
    bindings: Vec<(u64, Binding)>,
    /// Kept across reconnects: a node's configuration rarely changes, and
    /// its next teach re-declares them anyway.
    wants: Vec<Want>,
    /// Last sequence sent, by table index (missing: 0, nothing sent).
    cursors: Vec<u64>,
}

impl PeerState {
    fn binding(&self, remote_id: u64) -> Option<Binding> {
        self.bindings.iter().find(|b| b.0 == remote_id).map(|b| b.1)
    }

    /// A DEFINE re-using a remote id replaces what the id meant (§4.3).
    fn bind(&mut self, remote_id: u64, b: Binding) {
        match self.bindings.iter_mut().find(|x| x.0 == remote_id) {
            Some(x) => x.1 = b,
            None => self.bindings.push((remote_id, b)),
        }
    }

    fn cursor(&self, table: usize) -> u64 {
        self.cursors.get(table).copied().unwrap_or(0)
    }

    fn set_cursor(&mut self, table: usize, seq: u64) {
        if self.cursors.len() <= table {
            self.cursors.resize(table + 1, 0);
        }
        self.cursors[table] = seq;
    }
}

pub struct Engine {
    cfg: EngineConfig,
    tables: Vec<Table>,
    by_output: HashMap<String, u32>,
    peers: HashMap<PeerId, PeerState, RandomState>,
    timers: Timers,
    /// Last change sequence number handed out.
    seq: u64,
    /// Last receive stamp handed out (one per stored update).
    stamp: u64,
    dict: Interner,
    counters: EngineCounters,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cfg", &self.cfg)
            .field("tables", &self.tables.len())
            .field("keys", &self.tables.iter().map(Table::len).sum::<usize>())
            .field("peers", &self.peers.len())
            .field("timers", &self.timers.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            tables: Vec::new(),
            by_output: HashMap::new(),
            peers: HashMap::default(),
            timers: Timers::new(),
            seq: 0,
            stamp: 0,
            dict: Interner::default(),
            counters: EngineCounters::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn counters(&self) -> EngineCounters {
        self.counters
    }

    fn split(&mut self) -> (&mut Vec<Table>, Ctx<'_>) {
        (
            &mut self.tables,
            Ctx {
                timers: &mut self.timers,
                seq: &mut self.seq,
                dict: &mut self.dict,
                counters: &mut self.counters,
            },
        )
    }

    /// A session with this peer is established (new connection). Starts a
    /// new "generation" for its contributions.
    ///
    /// Its cursors go back to 0: nothing says what a new connection's
    /// process already has (it may have restarted, and asked another peer
    /// for its resync), so it gets every published key again, as HAProxy
    /// re-pushes its whole table to a peer that acknowledged nothing.
    pub fn peer_connected(&mut self, peer: PeerId, name: &str, role: PeerRole, _now: u64) {
        let epoch = self.stamp + 1;
        let p = self.peers.entry(peer).or_insert_with(|| PeerState {
            name: String::new(),
            role,
            connected: false,
            epoch,
            bindings: Vec::new(),
            wants: Vec::new(),
            cursors: Vec::new(),
        });
        p.name.clear();
        p.name.push_str(name);
        p.role = role;
        p.connected = true;
        p.epoch = epoch;
        p.bindings.clear();
        p.cursors.clear();
    }

    /// The session ended. Contributions stay until they expire (the node may
    /// still serve).
    pub fn peer_disconnected(&mut self, peer: PeerId, _now: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.connected = false;
            p.bindings.clear();
        }
    }

    /// The peer sent a DEFINE on its current connection (remote ids are per
    /// connection; a new connection redefines them).
    pub fn table_defined(
        &mut self,
        peer: PeerId,
        remote_id: u64,
        def: &Arc<TableDef>,
        _now: u64,
    ) -> TableVerdict {
        let Some(p) = self.peers.get_mut(&peer) else {
            return TableVerdict::Ignored;
        };
        if mapping::is_our_output(&self.cfg, &def.name) {
            let want = Want {
                output: def.name.clone(),
                key_type: def.key_type,
                key_len: def.key_len,
                table: self.by_output.get(&def.name).copied(),
            };
            match p.wants.iter_mut().find(|w| w.output == def.name) {
                Some(w) => *w = want,
                None => p.wants.push(want),
            }
            p.bind(remote_id, Binding::Output);
            return TableVerdict::Output;
        }
        let output = match p.role {
            PeerRole::Up => None,
            PeerRole::Node | PeerRole::Down => output_name(&self.cfg, &def.name),
        };
        let Some(output) = output else {
            p.bind(remote_id, Binding::Ignored);
            return TableVerdict::Ignored;
        };
        let expire = def.expire.unwrap_or(0);
        if let Some(&t) = self.by_output.get(&output) {
            let table = &mut self.tables[t as usize];
            if !table.shape.same_shape(def) {
                let reason = mismatch(&table.shape, def, &table.announced_by);
                // HAProxy re-sends a DEFINE before every batch of a table:
                // count a refusal once per connection and table id.
                if p.binding(remote_id) != Some(Binding::Refused) {
                    table.refused += 1;
                    table.last_refusal = Some(format!("{}: {reason}", p.name));
                    self.counters.refused_defs += 1;
                }
                p.bind(remote_id, Binding::Refused);
                return TableVerdict::Refused { reason };
            }
            p.bind(remote_id, Binding::Input { table: t, expire });
        } else {
            let t = self.tables.len() as u32;
            p.bind(remote_id, Binding::Input { table: t, expire });
            let by = p.name.clone();
            self.tables
                .push(Table::new(t, def.clone(), output.clone(), by));
            self.by_output.insert(output.clone(), t);
            for w in self.peers.values_mut().flat_map(|p| p.wants.iter_mut()) {
                if w.output == output {
                    w.table = Some(t);
                }
            }
        }
        TableVerdict::Input { output }
    }

    /// One update of a table previously defined by this peer on this
    /// connection.
    pub fn update(&mut self, peer: PeerId, remote_id: u64, update: &Update, now: u64) {
        let binding = self.peers.get(&peer).and_then(|p| p.binding(remote_id));
        let c = &mut self.counters;
        let (table, def_expire, source) = match (binding, u32::try_from(peer)) {
            (Some(Binding::Input { table, expire }), Ok(source)) => (table, expire, source),
            (Some(Binding::Output), _) => return c.ignored_output += 1,
            (Some(Binding::Ignored), _) => return c.ignored_table += 1,
            (Some(Binding::Refused), _) => return c.ignored_refused += 1,
            _ => return c.ignored_unknown += 1,
        };
        let expires = expiry(now, def_expire, update.expire);
        self.stamp += 1;
        let stamp = self.stamp;
        let (tables, mut ctx) = self.split();
        let Some(t) = tables.get_mut(table as usize) else {
            return;
        };
        if t.apply(&mut ctx, source, update, expires, stamp, now) {
            ctx.counters.updates += 1;
        } else {
            ctx.counters.ignored_malformed += 1;
        }
    }

    /// The peer finished teaching us (FINISHED/PARTIAL after our resync
    /// request): its contributions not refreshed since its latest
    /// [`peer_connected`](Self::peer_connected) describe entries it no longer
    /// has (it restarted, or they expired while we were apart) and are
    /// dropped. Scans every key of the tables it fed.
    pub fn resync_finished(&mut self, peer: PeerId, now: u64) {
        let Some(epoch) = self.peers.get(&peer).map(|p| p.epoch) else {
            return;
        };
        let Ok(source) = u32::try_from(peer) else {
            return;
        };
        let (tables, mut ctx) = self.split();
        for t in tables.iter_mut() {
            let n = t.drop_stale(&mut ctx, source, epoch, now);
            ctx.counters.stale_dropped += n;
        }
    }

    /// Expiries and rate republishing due at `now`.
    pub fn tick(&mut self, now: u64) {
        while let Some(&(at, t, slot)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let (tables, mut ctx) = self.split();
            if let Some(table) = tables.get_mut(t as usize) {
                table.wake(&mut ctx, slot, at, now);
            }
        }
    }

    /// When [`tick`](Self::tick) next has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.first().map(|&(at, _, _)| at)
    }

    /// Output table definitions to send to this peer (ids are our table ids,
    /// stable for the process, never 0): the outputs the peer declared and
    /// that we have an input shape for. In id order.
    pub fn outputs_for(&self, peer: PeerId) -> Vec<Arc<TableDef>> {
        let Some(p) = self.peers.get(&peer) else {
            return Vec::new();
        };
        let mut defs: Vec<_> = p
            .wants
            .iter()
            .filter_map(|w| w.table)
            .map(|t| self.tables[t as usize].out_def.clone())
            .collect();
        defs.sort_by_key(|d| d.id);
        defs
    }

    /// Coalesced pending changes for this peer, at most `max`, oldest first
    /// across its tables, computed at `now` (expiries and republishes due are
    /// applied first; rates are encoded at `now`).
    pub fn poll_updates(&mut self, peer: PeerId, max: usize, now: u64) -> Vec<OutUpdate> {
        self.tick(now);
        let mut out = Vec::new();
        let Some(p) = self.peers.get_mut(&peer) else {
            return out;
        };
        let tables = &self.tables;
        // Merge the peer's tables by sequence number (a handful of tables:
        // a linear minimum is cheaper than a heap).
        let mut next: Vec<(u64, u32, usize)> = Vec::new();
        for t in p.wants.iter().filter_map(|w| w.table) {
            let t = t as usize;
            if let Some((&s, &slot)) = tables[t].dirty.range(p.cursor(t) + 1..).next() {
                next.push((s, slot, t));
            }
        }
        while out.len() < max {
            let Some(i) = (0..next.len()).min_by_key(|&i| next[i].0) else {
                break;
            };
            let (s, slot, t) = next[i];
            let table = &tables[t];
            if let Some(e) = table.entry(slot).filter(|e| e.has_live(now)) {
                let mut values = Vec::with_capacity(table.layout.slots.len());
                let expire = table.aggregate(e, now, &self.dict, &mut values);
                out.push(OutUpdate {
                    table: table.id,
                    key: e.key.clone(),
                    values,
                    expire,
                });
            }
            p.set_cursor(t, s);
            match table.dirty.range(s + 1..).next() {
                Some((&s, &slot)) => next[i] = (s, slot, t),
                None => {
                    next.swap_remove(i);
                }
            }
        }
        out
    }

    /// The peer asked for a full resync: everything currently published is
    /// sent again.
    pub fn resend_all(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.cursors.clear();
        }
    }

    /// Whether [`poll_updates`](Self::poll_updates) would return something
    /// now, not counting expiries and republishes not yet ticked.
    pub fn has_pending(&self, peer: PeerId) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        p.wants.iter().filter_map(|w| w.table).any(|t| {
            let t = t as usize;
            self.tables[t]
                .dirty
                .last_key_value()
                .is_some_and(|(&s, _)| s > p.cursor(t))
        })
    }
}

/// When a contribution received at `now` lapses.
///
/// A table without `expire` never expires its entries, and HAProxy caps a
/// timed update's lifetime to its table's expire (so, to "never"; the
/// teacher of such a table sends 0 or a meaningless value). Otherwise the
/// timed lifetime, capped the same way, or the table's expire.
fn expiry(now: u64, def_expire: u32, timed: Option<u32>) -> u64 {
    if def_expire == 0 {
        return NEVER;
    }
    let life = timed.map_or(def_expire, |t| t.min(def_expire));
    now.saturating_add(life as u64)
}

/// Why `def` cannot be combined with `shape` (announced by `by`).
fn mismatch(shape: &TableDef, def: &TableDef, by: &str) -> String {
    if def.key_type != shape.key_type {
        return format!(
            "key type {} differs from {} announced by {by}",
            def.key_type.name(),
            shape.key_type.name()
        );
    }
    if def.key_len != shape.key_len {
        return format!(
            "key length {} differs from {} announced by {by}",
            def.key_len, shape.key_len
        );
    }
    let cols = |d: &TableDef| {
        let names: Vec<_> = d.columns.iter().map(|c| c.display_name()).collect();
        if names.is_empty() {
            "(none)".to_string()
        } else {
            names.join(",")
        }
    };
    format!(
        "data types {} differ from {} announced by {by}",
        cols(def),
        cols(shape)
    )
}
