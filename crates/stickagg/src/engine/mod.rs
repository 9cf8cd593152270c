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
//! table keeps a sequence holding each key once (`changes.rs`); each peer has a
//! cursor (last sequence sent) per output table. Polling walks from the
//! cursor; each change is computed once, as of when it happened, and sent
//! to every peer re-based to when it polls (`poll.rs`). There are no
//! per-peer queues: memory is bounded by the number of keys whatever the
//! peers do, the cost of a change hardly depends on the number of peers,
//! and a slow peer simply lags and always gets the latest value of each key
//! once.
//!
//! Rates are republished on their own so that what the nodes read keeps
//! within one event of the sum of the sources' counters as both decay, and
//! only when it would not (`drift.rs`).
//!
//! # Several levels
//!
//! A peer's [`PeerRole`] decides what it feeds and what it receives:
//!
//! | role | its tables are | it receives |
//! |---|---|---|
//! | `Node` (a load balancer) | inputs (outputs it declares: its wants) | the outputs and forwarded tables it declares (outputs not with `no-feedback`) |
//! | `Down` (a lower aggregator) | inputs, like a node, counted once per `group` | the outputs and forwarded tables it declares |
//! | `Up` (an upper aggregator) | forwarded tables (`forward` suffixes), never inputs | every output (not with `no-ascend`), never a forwarded table |
//!
//! So values only flow up as aggregates and down as forwarded copies, and
//! no table can feed itself whatever the peers send.
//!
//! **Forwarded tables** (`forward .agg` on an intermediate): one `Table`
//! per forwarded name whose sources are the up peers; a key is relayed as the
//! latest value received from any of them, unchanged (rates re-based to the
//! moment they are sent on), with the remaining lifetime it came with. Each
//! up peer republishes its own rates, so nothing is recomputed here.
//!
//! **How definitions reach the other levels.** HAProxy only announces a
//! table (DEFINE) when it changes it or when it teaches a resync, so every
//! level asks every peer for a resync when a session starts and learns its
//! wants from the DEFINEs of the answer. stickagg peers answer in kind: on a
//! new session and again on each resync request, before anything else, an
//! aggregator *announces* (DEFINE without entries, [`Engine::take_announcements`]):
//!
//! - to an `up` peer: its outputs (what it will send up; not with
//!   `no-ascend`) and its forwarded tables (what it expects back: for each
//!   output `/t.intermediate`, `/t.agg` per `forward` suffix, with the
//!   output's shape). The upper level binds the first as inputs and takes the
//!   second as wants, exactly as it would from a load balancer, so it pushes
//!   `/t.agg` down before any value was ever forwarded;
//! - to a `down` peer: its forwarded tables if it relays (a middle level of a
//!   chain), else its outputs (a top level: `/t.agg`). The lower level creates
//!   its forwarded table from that definition, so the nodes that declared
//!   `/t.agg` are wired to it before its first value arrives.
//!
//! Between aggregators a resync answer ends with PARTIAL rather than
//! FINISHED while some of the answering level's own sources have not taught
//! it yet; the asking level then keeps what it had from it instead of
//! dropping it as stale (`server.rs`, `pump` and `ResyncPartial`). And a
//! section that has just started sends no sums until its sources have taught
//! it (`SectionState::holding`): together, a restarting intermediate does not
//! dip the totals.
//!
//! An up peer needs no declaration to receive our outputs: the configuration
//! says it aggregates what we send. Load balancers are announced nothing
//! (they only get what they declared, as in single-level operation).
//!
//! **Groups** (`peer … down group N`): the contributions of the members of
//! one group count once per key: for every summed element, the member with
//! the largest value (for a rate, the largest window total); different
//! groups and ungrouped peers are summed (`table::representatives`).

mod admin;
mod changes;
mod combine;
mod drift;
mod index;
mod intern;
mod mapping;
mod peermap;
mod poll;
mod table;
mod timers;
mod view;

#[cfg(test)]
mod tests;

pub use mapping::{is_output_name, output_name};
pub use view::{ContributionInfo, KeyInfo, SourceInfo, TableInfo};

use intern::Interner;
use peers::session::{Event, Session};
use peers::{Key, KeyType, TableDef, Update, Value, Values};
use std::collections::HashMap;
use std::sync::Arc;
use table::{Applied, Ctx, Epoch, Table, AGE_SWEEP, NEVER};
use timers::Timers;

/// What the engine needs of an `aggregations` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// `None`: `from any`; `Some(".nonagg")`: only tables with that suffix.
    pub from: Option<String>,
    /// Output suffix, e.g. `.agg`.
    pub to: String,
    /// Suffixes of the tables relayed from `up` peers to the nodes (e.g.
    /// `.agg` on an intermediate); never inputs.
    pub forward: Vec<String>,
    /// `no-ascend`: outputs are not sent to `up` peers.
    pub no_ascend: bool,
    /// `no-feedback`: outputs are not sent to the nodes (forwarded tables
    /// still are).
    pub no_feedback: bool,
}

/// Entries per table when the configuration has no `max-entries`.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000_000;
/// Tables per section when the configuration has no `max-tables`.
pub const DEFAULT_MAX_TABLES: usize = 1_000;
/// Start of the reason of a [`TableVerdict::Refused`] given because the
/// section already holds `max-tables` tables.
pub const TOO_MANY_TABLES: &str = "too many tables";

/// Bounds on what the peers can make the engine hold (`max-entries` and
/// `max-tables` in `global`). Not part of [`EngineConfig`]: a reload that
/// changes them applies them to the running engine, which keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Keys per table (aggregated or forwarded): a key not yet in a table
    /// that holds this many is dropped; keys already there keep updating.
    pub max_entries: usize,
    /// Tables per section (aggregated and forwarded): a definition that
    /// would create one more is refused.
    pub max_tables: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_tables: DEFAULT_MAX_TABLES,
        }
    }
}

/// A peer's place in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// A load balancer: a source, and a receiver of the outputs it declares.
    Node,
    /// An upper-level aggregator. Its tables are never inputs here (they
    /// are totals computed above): those with a `forward` suffix are relayed
    /// to the nodes, the others ignored. It receives every output.
    Up,
    /// A lower-level aggregator: a source like a node (see
    /// [`Engine::set_group`]), and a receiver of what it declares.
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
    /// An input whose shape differs from the one first announced, or that
    /// would create a table beyond `max-tables` (the reason then starts
    /// with [`TOO_MANY_TABLES`]); this peer's updates for it are ignored.
    Refused { reason: String },
    /// A forwarded table from an `up` peer: relayed to the peers that
    /// declare it.
    Forwarded,
    /// Ignored, and most likely a configuration mistake (e.g. an `up` peer
    /// sending a table no `forward` suffix matches): worth a warning.
    /// Returned once per peer and table name, [`Ignored`](Self::Ignored)
    /// afterwards, so that logging it on every DEFINE logs it once.
    Unexpected { reason: String },
}

/// One entry to send to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutUpdate {
    /// Our output table id (as in [`Engine::outputs_for`]).
    pub table: u64,
    /// Inline like a decoded update's (see `peers::Key`): a push allocates
    /// nothing for a short key and two values.
    pub key: Key,
    /// In the output definition's column order.
    pub values: Values,
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
    /// Tables whose definition was replaced by a new one from the nodes.
    pub reshaped: u64,
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
    /// Definitions refused (a mismatching shape, or `max-tables`).
    pub refused_defs: u64,
    /// Of those, the ones refused because the section held `max-tables`
    /// tables.
    pub refused_max_tables: u64,
    /// New keys not inserted because their table held `max-entries` keys.
    pub dropped_entries: u64,
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
    /// Its group (index into `Engine::groups`, plus one; 0: none).
    group: u32,
    connected: bool,
    /// Where its latest connection began: contributions that arrived
    /// before it predate that connection.
    epoch: Epoch,
    /// Remote table id → meaning, for the current connection only.
    bindings: Vec<(u64, Binding)>,
    /// Definitions refused on the current connection (remote id, def): if
    /// the table later adopts that shape, they are bound without waiting
    /// for a DEFINE HAProxy would not repeat (it re-announces a table only
    /// when it switches tables).
    refused: Vec<(u64, Arc<TableDef>)>,
    /// Kept across reconnects: a node's configuration rarely changes, and
    /// its next teach re-declares them anyway.
    wants: Vec<Want>,
    /// Last sequence sent, by table index (missing: 0, nothing sent).
    cursors: Vec<u64>,
    /// Indices of the tables whose changes it receives (see
    /// [`Engine::refresh_sends`]), in index order.
    sends: Vec<u32>,
    /// Tables below this index were considered for announcement on this
    /// connection (tables are only ever appended).
    announced: usize,
    /// Table names already reported as [`TableVerdict::Unexpected`].
    noted: Vec<String>,
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

/// Timers handled per [`Engine::tick`]. The keys of a rate table often share
/// their period boundaries (a node's counters all turn over together), so a
/// hundred thousand drift walks can fall due in the same millisecond: handled
/// at once they would keep the hub from reading and sending for tens of
/// milliseconds, and every change arriving meanwhile would wait. What is left
/// stays due (`next_deadline` says so) and the hub comes back at once, after
/// the changes that arrived.
const TICK_BUDGET: usize = 512;

/// How far ahead among the timers due a tick requests a key's slab entry,
/// then its contributions (see `Table::prefetch_slot`).
const TICK_PREFETCH: (usize, usize) = (8, 4);

/// Timers handled by each [`Engine::poll_updates`]: the hub polls every peer
/// several times a round, and the round's timers are the hub's own `tick`.
/// A few here keep a poll from sending a value whose expiry is just due.
const POLL_TICK_BUDGET: usize = 64;

/// How far ahead in a session's queue of events each stage of
/// [`Engine::prefetch_queued`] looks while the event just taken is applied:
/// the event at this index, i.e. this many events plus one ahead. Each stage
/// reads what the one before brought in, so they are a few events apart.
/// Contributions at 4 alone: 4 to 16 measured alike in the engine's
/// criterion bench (+25-38 % from ten sources). The entry at 8 then added
/// 15-30 %; 16/10/5 and 9/6/3 measured like 12/8/4.
pub const PREFETCH: [(Prefetch, usize); 3] = [
    (Prefetch::Index, 12),
    (Prefetch::Entry, 8),
    (Prefetch::Contributions, 4),
];

/// The stages of [`Engine::prefetch`], in the order an update should be
/// given to them, each reading what the one before brought in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    /// The key's bucket in the table's index (from its hash alone).
    Index,
    /// The key's entry in the table (from the index alone).
    Entry,
    /// The key's contributions (the whole lookup, then their arrays).
    Contributions,
}

pub struct Engine {
    cfg: EngineConfig,
    tables: Vec<Table>,
    /// Output (and forwarded) table name → index.
    by_output: HashMap<String, u32>,
    /// Distinct `group` numbers of the peers; a peer's group is its index
    /// here plus one.
    groups: Vec<u32>,
    peers: peermap::PeerMap<PeerState>,
    timers: Timers,
    /// Scratch space of `Ctx::rates`.
    rate_scratch: Vec<(peers::FreqCtr, i64)>,
    /// Last change sequence number handed out.
    seq: u64,
    /// Last receive stamp handed out (one per stored update).
    stamp: u64,
    /// When contributions' ages were last clamped (see `table::Head`).
    swept: u64,
    dict: Interner,
    counters: EngineCounters,
    /// Bumped whenever what some peer receives may have changed (see
    /// [`Engine::outputs_generation`]).
    outputs_gen: u64,
    limits: EngineLimits,
    /// Every table's lowest cursors, found once per round (see `poll`).
    low: poll::LowCursors,
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
            .field("limits", &self.limits)
            .finish()
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            tables: Vec::new(),
            by_output: HashMap::new(),
            groups: Vec::new(),
            peers: peermap::PeerMap::default(),
            timers: Timers::new(),
            rate_scratch: Vec::new(),
            seq: 0,
            stamp: 0,
            swept: 0,
            dict: Interner::default(),
            counters: EngineCounters::default(),
            outputs_gen: 0,
            limits: EngineLimits::default(),
            low: poll::LowCursors::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// Applies new limits (at start and on reload). Nothing already held is
    /// dropped: a lower `max-entries` stops new keys until expiries bring a
    /// table under it; a lower `max-tables` refuses new tables only.
    pub fn set_limits(&mut self, limits: EngineLimits) {
        self.limits = limits;
    }

    /// Tables that dropped new keys (`max-entries`): table index, output
    /// name, keys dropped since the table was created.
    pub fn dropped_by_table(&self) -> impl Iterator<Item = (usize, &str, u64)> {
        self.tables
            .iter()
            .enumerate()
            .filter(|(_, t)| t.dropped > 0)
            .map(|(i, t)| (i, t.output.as_str(), t.dropped))
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
                max_entries: self.limits.max_entries,
                rates: &mut self.rate_scratch,
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
    pub fn peer_connected(&mut self, peer: PeerId, name: &str, role: PeerRole, now: u64) {
        let epoch = Epoch {
            at: now,
            stamp: self.stamp + 1,
        };
        let p = self.peers.get_or_insert_with(peer, || PeerState {
            name: String::new(),
            role,
            group: 0,
            connected: false,
            epoch,
            bindings: Vec::new(),
            refused: Vec::new(),
            wants: Vec::new(),
            cursors: Vec::new(),
            sends: Vec::new(),
            announced: 0,
            noted: Vec::new(),
        });
        p.name.clear();
        p.name.push_str(name);
        p.role = role;
        p.connected = true;
        p.epoch = epoch;
        p.bindings.clear();
        p.refused.clear();
        p.cursors.clear();
        p.announced = 0;
        if let Ok(source) = u32::try_from(peer) {
            for t in &mut self.tables {
                t.source_connected(source);
            }
        }
        self.refresh_sends(Some(peer));
    }

    /// Sets the `group` of a peer (call after
    /// [`peer_connected`](Self::peer_connected)). Its contributions count
    /// once per key with the other members' (the largest of them); taken
    /// into account from its next update of a table on, for all its
    /// contributions to that table.
    pub fn set_group(&mut self, peer: PeerId, group: Option<u32>) {
        let ix = match group {
            None => 0,
            Some(g) => match self.groups.iter().position(|&x| x == g) {
                Some(i) => i as u32 + 1,
                None => {
                    self.groups.push(g);
                    self.groups.len() as u32
                }
            },
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.group = ix;
        }
    }

    /// The session ended. Contributions stay until they expire (the node may
    /// still serve).
    pub fn peer_disconnected(&mut self, peer: PeerId, _now: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.connected = false;
            p.bindings.clear();
            p.refused.clear();
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
        let name = def.name.as_str();
        if p.role == PeerRole::Up {
            // Only forwarded tables come down; never inputs, whatever their
            // name, so that no total can feed itself.
            if mapping::is_forwarded(&self.cfg, name) {
                return match self.bind_source(peer, remote_id, def, name.to_string(), true) {
                    TableVerdict::Input { .. } => TableVerdict::Forwarded,
                    v => v,
                };
            }
            p.bind(remote_id, Binding::Ignored);
            let reason = if mapping::is_our_output(&self.cfg, name) {
                format!(
                    "it ends in this section's output suffix '{}': an upper level sending our \
                     own kind of output down looks like a loop in the configuration",
                    self.cfg.to
                )
            } else if self.cfg.forward.is_empty() {
                "this section has no 'forward' line, so nothing from up peers is relayed".into()
            } else {
                format!(
                    "it matches no 'forward' suffix ({}), so it is not relayed",
                    self.cfg.forward.join(", ")
                )
            };
            return self.note(peer, name, reason);
        }
        let ours = mapping::is_our_output(&self.cfg, name);
        if ours || mapping::is_forwarded(&self.cfg, name) {
            let want = Want {
                output: def.name.clone(),
                key_type: def.key_type,
                key_len: def.key_len,
                table: self.by_output.get(name).copied(),
            };
            let max = self.limits.max_tables;
            let full = p.wants.len() >= max;
            let changed = match p.wants.iter_mut().find(|w| w.output == def.name) {
                Some(w) if w.table == want.table => {
                    *w = want;
                    false
                }
                Some(w) => {
                    *w = want;
                    true
                }
                // Wants are kept across reconnects: bounded like tables.
                None if full => {
                    p.bind(remote_id, Binding::Ignored);
                    let reason = format!("{TOO_MANY_TABLES} declared (max-tables {max})");
                    return self.note(peer, name, reason);
                }
                None => {
                    p.wants.push(want);
                    true
                }
            };
            p.bind(remote_id, Binding::Output);
            if changed {
                self.refresh_sends(Some(peer));
            }
            return TableVerdict::Output;
        }
        let Some(output) = output_name(&self.cfg, name) else {
            p.bind(remote_id, Binding::Ignored);
            return TableVerdict::Ignored;
        };
        self.bind_source(peer, remote_id, def, output, false)
    }

    /// Binds the peer's `remote_id` to table `output` as one of its sources,
    /// creating the table from `def` (an aggregate, or a forwarded table)
    /// if it is the first, refusing `def` if its shape differs.
    fn bind_source(
        &mut self,
        peer: PeerId,
        remote_id: u64,
        def: &Arc<TableDef>,
        output: String,
        forward: bool,
    ) -> TableVerdict {
        // A definition of another shape replaces the table's once no other
        // connected peer still feeds the old one (decided before borrowing).
        let reshape = self.by_output.get(&output).is_some_and(|&t| {
            !forward
                && !self.tables[t as usize].shape.same_shape(def)
                && !self.shape_in_use(t, peer)
        });
        let Some(p) = self.peers.get_mut(&peer) else {
            return TableVerdict::Ignored;
        };
        let expire = def.expire.unwrap_or(0);
        match self.by_output.get(&output) {
            Some(&t) if self.tables[t as usize].forward != forward => {
                // Only possible with overlapping suffixes, which the
                // configuration refuses.
                p.bind(remote_id, Binding::Ignored);
                let reason = format!("{output} is both an output and a forwarded table here");
                return self.note(peer, &def.name, reason);
            }
            Some(&t) if reshape => {
                // No connected peer feeds the old shape any more (the nodes
                // were reloaded with a new definition): adopt the new one.
                let by = p.name.clone();
                p.bind(remote_id, Binding::Input { table: t, expire });
                tracing::info!(
                    "table {output} now follows the definition announced by {by} ({} {})",
                    def.key_type.name(),
                    crate::show::format_types(def)
                );
                self.reshape(t, def, by);
            }
            Some(&t) => {
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
                    p.refused.retain(|r| r.0 != remote_id);
                    p.refused.push((remote_id, def.clone()));
                    return TableVerdict::Refused { reason };
                }
                p.bind(remote_id, Binding::Input { table: t, expire });
            }
            None => {
                // The table and, for an input, the forwarded tables it
                // brings along (see below) must fit under `max-tables`.
                let companions = match forward {
                    true => 0,
                    false => mapping::forwarded_names(&self.cfg, &output)
                        .iter()
                        .filter(|n| !self.by_output.contains_key(*n))
                        .count(),
                };
                let max = self.limits.max_tables;
                if self.tables.len() + 1 + companions > max {
                    // Counted once per connection and table id, as above.
                    if p.binding(remote_id) != Some(Binding::Refused) {
                        self.counters.refused_defs += 1;
                        self.counters.refused_max_tables += 1;
                    }
                    p.bind(remote_id, Binding::Refused);
                    return TableVerdict::Refused {
                        reason: format!("{TOO_MANY_TABLES} (max-tables {max})"),
                    };
                }
                let t = self.tables.len() as u32;
                p.bind(remote_id, Binding::Input { table: t, expire });
                let by = p.name.clone();
                self.add_table(def.clone(), output.clone(), by, forward);
                if !forward {
                    // The totals an upper level computes from this output
                    // come back under these names: known (and announced up,
                    // and wired to the nodes) before the first of them.
                    for name in mapping::forwarded_names(&self.cfg, &output) {
                        if !self.by_output.contains_key(&name) {
                            let shape = Arc::new(TableDef {
                                name: name.clone(),
                                ..(**def).clone()
                            });
                            let by = format!("{} (as {output})", def.name);
                            self.add_table(shape, name, by, true);
                        }
                    }
                }
            }
        }
        TableVerdict::Input { output }
    }

    /// Appends a table and binds the wants waiting for it.
    fn add_table(&mut self, shape: Arc<TableDef>, output: String, by: String, forward: bool) {
        let t = self.tables.len() as u32;
        self.tables
            .push(Table::new(t, shape, output.clone(), by, forward));
        self.by_output.insert(output.clone(), t);
        for w in self.peers.values_mut().flat_map(|p| p.wants.iter_mut()) {
            if w.output == output {
                w.table = Some(t);
            }
        }
        self.refresh_sends(None);
    }

    /// `Unexpected` the first time for this peer and table name, then
    /// `Ignored`.
    fn note(&mut self, peer: PeerId, name: &str, reason: String) -> TableVerdict {
        let Some(p) = self.peers.get_mut(&peer) else {
            return TableVerdict::Ignored;
        };
        if p.noted.iter().any(|n| n == name) {
            return TableVerdict::Ignored;
        }
        // Bounded: a peer announcing endless new names is logged a while.
        if p.noted.len() < 256 {
            p.noted.push(name.to_string());
        }
        TableVerdict::Unexpected { reason }
    }

    /// Recomputes which tables a peer (or every peer) receives changes of:
    ///
    /// - `Up`: every output, unless `no-ascend`; never a forwarded table (it
    ///   came from above);
    /// - `Node`: the outputs it declared, unless `no-feedback`, and the
    ///   forwarded tables it declared;
    /// - `Down`: the outputs and forwarded tables it declared.
    fn refresh_sends(&mut self, only: Option<PeerId>) {
        self.outputs_gen += 1;
        let (cfg, tables) = (&self.cfg, &self.tables);
        for (id, p) in self.peers.iter_mut() {
            if only.is_some_and(|o| o != id) {
                continue;
            }
            p.sends.clear();
            match p.role {
                PeerRole::Up => {
                    if !cfg.no_ascend {
                        p.sends
                            .extend(tables.iter().filter(|t| !t.forward).map(|t| t.idx));
                    }
                }
                PeerRole::Node | PeerRole::Down => {
                    let feedback = !(cfg.no_feedback && p.role == PeerRole::Node);
                    for t in p.wants.iter().filter_map(|w| w.table) {
                        if (feedback || tables[t as usize].forward) && !p.sends.contains(&t) {
                            p.sends.push(t);
                        }
                    }
                    p.sends.sort_unstable();
                }
            }
        }
    }

    /// A hint that [`update`](Self::update) will soon be called for these
    /// updates: asks the CPU to fetch what it will read. Changes nothing.
    /// Ingest is bound by memory latency (a table of millions of keys fits
    /// in no cache), and a lookup is a chain of misses, each address read
    /// from the previous link: give the same update each [`Prefetch`] stage
    /// in turn, a few updates apart, and the misses of several updates
    /// overlap instead of following one another.
    ///
    /// `ahead`: the updates coming from `peer`, each with its stage and the
    /// remote table id it was received for (the peer is looked up once).
    pub fn prefetch<'a>(
        &self,
        peer: PeerId,
        ahead: impl IntoIterator<Item = (Prefetch, u64, &'a Update)>,
    ) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        for (stage, remote_id, update) in ahead {
            let Some(Binding::Input { table, .. }) = p.binding(remote_id) else {
                continue;
            };
            let Some(t) = self.tables.get(table as usize) else {
                continue;
            };
            let l = table::Lookup::of(update);
            match stage {
                Prefetch::Index => t.prefetch_index(&l),
                Prefetch::Entry => t.prefetch_entry(&l),
                Prefetch::Contributions => t.prefetch(&l),
            }
        }
    }

    /// [`prefetch`](Self::prefetch) for the updates queued in `session`
    /// (from `peer`) at the distances of [`PREFETCH`]: what the hub does
    /// for each event it takes from a session.
    pub fn prefetch_queued(&self, peer: PeerId, session: &Session) {
        let ahead = PREFETCH
            .iter()
            .filter_map(|&(stage, n)| match session.peek_event(n) {
                Some(Event::Update {
                    remote_id, update, ..
                }) => Some((stage, *remote_id, update)),
                _ => None,
            });
        self.prefetch(peer, ahead);
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
        // Updates leave stale timers (a deadline moved earlier): bounded
        // here too, not only in ticks, whoever drives the engine.
        self.sweep_timers();
        let expires = expiry(now, def_expire, update.expire);
        self.stamp += 1;
        let stamp = self.stamp;
        let group = self.peers.get(&peer).map_or(0, |p| p.group);
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        let (tables, mut ctx) = self.split();
        let Some(t) = tables.get_mut(table as usize) else {
            return;
        };
        let before = match debug && !t.forward {
            true => t.latest_choices(&update.key, now, ctx.dict),
            false => Vec::new(),
        };
        match t.apply(&mut ctx, source, group, update, expires, stamp, now) {
            Applied::Stored => ctx.counters.updates += 1,
            Applied::Malformed => ctx.counters.ignored_malformed += 1,
            // Counted by the table (and in `dropped_entries`).
            Applied::Full => return,
        }
        if before.is_empty() {
            return;
        }
        // A key whose server differs between nodes: say which write won.
        let after = t.latest_choices(&update.key, now, ctx.dict);
        let replaced: Vec<_> = before
            .into_iter()
            .filter_map(|(i, old, from)| {
                let (_, new, by) = after.iter().find(|a| a.0 == i)?;
                (*new != old).then(|| (t.element_name(i), old, from, new, *by))
            })
            .collect();
        if replaced.is_empty() {
            return;
        }
        let key = crate::show::format_key(t.shape.key_type, &update.key);
        let output = t.output.clone();
        let name = |p: u32| {
            self.peers
                .get(&(p as PeerId))
                .map_or_else(|| format!("#{p}"), |p| p.name.clone())
        };
        for (column, old, from, new, by) in replaced {
            tracing::debug!(
                "{output} key {key}: {column} {} from {} replaced by {} from {} (latest write wins)",
                show_latest(&old),
                name(from),
                show_latest(new),
                name(by),
            );
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
        self.tick_some(now, TICK_BUDGET);
    }

    /// [`tick`](Self::tick), handling at most `budget` timers.
    fn tick_some(&mut self, now: u64, budget: usize) {
        // Contributions keep 32-bit arrival instants: cut their ages before
        // they outgrow that (the hub ticks at least every second).
        if now.saturating_sub(self.swept) >= AGE_SWEEP {
            self.swept = now;
            for t in &mut self.tables {
                t.clamp_ages(now);
            }
        }
        for _ in 0..budget {
            let Some((at, t, slot)) = self.timers.pop(now) else {
                break;
            };
            // Keys due together are spread over the slab: request the next
            // ones' entries and contributions, as the ingest does.
            for (n, contributions) in [(TICK_PREFETCH.0, false), (TICK_PREFETCH.1, true)] {
                if let Some((_, t, slot)) = self.timers.ready_ahead(n) {
                    if let Some(table) = self.tables.get(t as usize) {
                        table.prefetch_slot(slot, contributions);
                    }
                }
            }
            let (tables, mut ctx) = self.split();
            let woke = tables
                .get_mut(t as usize)
                .is_some_and(|table| table.wake(&mut ctx, slot, at, now));
            if !woke {
                self.timers.popped_stale();
            }
        }
        self.sweep_timers();
    }

    /// Drops the stale timers once they outnumber the live ones.
    fn sweep_timers(&mut self) {
        if self.timers.needs_sweep() {
            let tables = &mut self.tables;
            self.timers.retain(|(at, t, slot)| {
                tables
                    .get_mut(t as usize)
                    .is_some_and(|table| table.claim_timer(slot, at))
            });
            // The entries kept name each key once: clear the marks through
            // them (a walk of the slabs would cost every key, timer or not).
            for (_, t, slot) in self.timers.iter() {
                if let Some(table) = self.tables.get_mut(t as usize) {
                    table.unclaim_timer(slot);
                }
            }
        }
    }

    /// When [`tick`](Self::tick) next may have something to do: the hub
    /// sleeps until then. Exact within the next 64 ms; further ahead it may
    /// be early (the timers are a wheel, see `timers.rs`).
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.next_deadline()
    }

    /// Timer entries held, stale ones included (16 bytes each): for the
    /// memory soak (`examples/engine-soak.rs`) and tests.
    pub fn timers_held(&self) -> usize {
        self.timers.held()
    }

    /// The earliest deadline of any key: what [`next_deadline`] would be
    /// with exact timers. Tests check planned deadlines with it.
    #[cfg(test)]
    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.tables.iter().filter_map(|t| t.next_wake()).min()
    }

    /// Definitions to announce to this peer (DEFINE without entries; see
    /// "How definitions reach the other levels"), each table once per
    /// connection and again after each resync request: to an `up` peer our
    /// outputs (not with `no-ascend`) and our forwarded tables; to a `down`
    /// peer our forwarded tables if we relay, else our outputs; to a load
    /// balancer nothing. In id order.
    pub fn take_announcements(&mut self, peer: PeerId) -> Vec<Arc<TableDef>> {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Vec::new();
        };
        let (cfg, tables) = (&self.cfg, &self.tables);
        let from = p.announced.min(tables.len());
        p.announced = tables.len();
        tables[from..]
            .iter()
            .filter(|t| match p.role {
                PeerRole::Node => false,
                PeerRole::Up => t.forward || !cfg.no_ascend,
                PeerRole::Down => t.forward != cfg.forward.is_empty(),
            })
            .map(|t| t.out_def.clone())
            .collect()
    }

    /// Changes whenever [`outputs_for`](Self::outputs_for) may answer
    /// differently for some peer. HAProxy re-sends a DEFINE before every
    /// batch of updates; the hub re-declares outputs only when this moved.
    pub fn outputs_generation(&self) -> u64 {
        self.outputs_gen
    }

    /// Output table definitions to send to this peer (ids are our table ids,
    /// stable for the process, never 0): the tables it receives changes of
    /// (see `refresh_sends`). In id order.
    pub fn outputs_for(&self, peer: PeerId) -> Vec<Arc<TableDef>> {
        let Some(p) = self.peers.get(&peer) else {
            return Vec::new();
        };
        let mut defs: Vec<_> = p
            .sends
            .iter()
            .map(|&t| self.tables[t as usize].out_def.clone())
            .collect();
        defs.sort_by_key(|d| d.id);
        defs
    }
}

/// A `server_id` or `server_key` for the debug log.
fn show_latest(v: &Value) -> String {
    match v {
        Value::Dict(Some(b)) => format!("{:?}", String::from_utf8_lossy(b)),
        Value::Dict(None) | Value::DictUnknown => "none".to_string(),
        Value::ServerId(i) => i.to_string(),
        v => format!("{v:?}"),
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
