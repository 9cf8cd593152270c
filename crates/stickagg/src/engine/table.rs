//! One output table: its input shape, the latest contribution of every
//! source for every key, the change sequence that peers' cursors walk, and
//! each key's timer.
//!
//! Storage is flat on purpose: a key holds one small header per source
//! ([`Head`], 16 bytes) and one block of `u32` words per source laid out by
//! the table's [`Layout`], in two `Vec`s. Values are never kept as
//! [`Value`]s (40 bytes each, with a heap string for `server_key`): the
//! engine may hold millions of keys times tens of sources.

use super::changes::Changes;
use super::combine::{combine, representatives};
use super::drift::{self, Reach};
use super::index::{hash_key, KeyIndex};
use super::intern::Interner;
use super::timers::Timers;
use super::EngineCounters;
use ahash::RandomState;
use peers::freq::FreqCtr;
use peers::update::Memo;
use peers::{Combine, Storage, TableDef, Update, Value, Values};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// "No deadline" / "never expires".
pub(super) const NEVER: u64 = u64::MAX;
/// A key's `wake` while a timer sweep has kept its entry (see
/// [`Table::claim_timer`]); deadlines are milliseconds, far below it.
const CLAIMED: u64 = 1 << 63;

/// Ages beyond this are all "long ago" for a rate (any u32 period is
/// shorter): clamping keeps the i64 arithmetic of `freq` from overflowing.
const MAX_SINCE: u64 = 1 << 40;

/// The engine-wide state a table mutates along with its own.
pub(super) struct Ctx<'a> {
    pub(super) timers: &'a mut Timers,
    /// Last change sequence number handed out (shared by all tables so that
    /// a peer's updates can be sent oldest first across tables).
    pub(super) seq: &'a mut u64,
    pub(super) dict: &'a mut Interner,
    pub(super) counters: &'a mut EngineCounters,
    /// `max-entries`: keys per table.
    pub(super) max_entries: usize,
    /// Reused by [`Layout::next_republish`], which runs for every change
    /// of a key with a rate: no allocation per update.
    pub(super) rates: &'a mut Vec<(FreqCtr, i64)>,
}

/// An update's key with what the lookups before it noted in its
/// [`Memo`]: the key's hash in the top 32 bits (0 in all 64: not known
/// yet) and one more than the slot a stage found it at (0: none) in the low
/// 32. A noted slot is a hint, used only once the key there is compared
/// equal: a prefetch stage takes it from the hash alone, and the table may
/// change before the update is applied.
pub(super) struct Lookup<'a> {
    key: &'a [u8],
    memo: &'a Memo,
}

impl<'a> Lookup<'a> {
    pub(super) fn of(upd: &'a Update) -> Lookup<'a> {
        Lookup {
            key: &upd.key,
            memo: &upd.memo,
        }
    }

    fn hash(&self) -> u32 {
        match self.memo.get() {
            0 => {
                let h = hash_key(self.key);
                self.memo.set((h as u64) << 32);
                h
            }
            m => (m >> 32) as u32,
        }
    }

    fn noted_slot(&self) -> Option<u32> {
        (self.memo.get() as u32).checked_sub(1)
    }

    fn note_slot(&self, h: u32, slot: u32) {
        self.memo.set((h as u64) << 32 | (slot as u64 + 1));
    }
}

/// The key in `slot` (empty for a free slot, which the index never holds).
fn key_at(slab: &[Option<KeyEntry>], slot: u32) -> &[u8] {
    slab.get(slot as usize)
        .and_then(Option::as_ref)
        .map_or(&[], |e| &e.key[..])
}

/// Asks the CPU to bring the cache lines of `v` in, without waiting for
/// them (all of them: ten sources' headers or values span three lines, the
/// drift plan reads every source's, and a slab entry straddles two or three).
pub(super) fn prefetch_slice<T>(v: &[T]) {
    let start = v.as_ptr() as usize;
    let end = start + std::mem::size_of_val(v);
    for line in (start & !63..end).step_by(64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint: it never faults, whatever the
        // address; the lines are `v`'s anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line as *const i8,
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = line;
    }
}

/// Whether `slot` holds a key whose latest change took sequence `seq` (a
/// live entry of the change sequence, see `changes.rs`).
fn is_current(seqs: &[u64], seq: u64, slot: u32) -> bool {
    seqs.get(slot as usize) == Some(&seq)
}

/// What [`Table::apply`] did with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    Stored,
    /// The values or the key do not fit the table's shape: nothing changed.
    Malformed,
    /// A new key, and the table already holds `max-entries` keys: dropped
    /// (counted in the table's `dropped` and the engine's counters).
    Full,
}

/// Where one value element lives in a contribution's words.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) storage: Storage,
    pub(super) combine: Combine,
    pub(super) period: u32,
    pub(super) off: u32,
}

/// Words per element: u32 and i32 one, u64 two, a rate its triple, a
/// `server_key` its interned id; a `Latest` element (`server_id`,
/// `server_key`) then the 64-bit stamp of the update that last *changed*
/// the source's value (see [`latest_stamp`]).
fn words_for(storage: Storage, combine: Combine) -> u32 {
    let value = match storage {
        Storage::SignedInt | Storage::UnsignedInt | Storage::Dict => 1,
        Storage::UnsignedLong => 2,
        Storage::FreqCtr => 3,
    };
    if is_latest(storage, combine) {
        value + 2
    } else {
        value
    }
}

/// Whether an element combines as "the latest write wins".
pub(super) fn is_latest(storage: Storage, combine: Combine) -> bool {
    storage == Storage::Dict || (combine == Combine::Latest && storage != Storage::FreqCtr)
}

/// Words of the value itself, before a `Latest` element's stamp.
fn value_words(storage: Storage) -> usize {
    match storage {
        Storage::UnsignedLong => 2,
        _ => 1,
    }
}

/// The element-by-element layout of a table's values.
#[derive(Debug)]
pub(super) struct Layout {
    pub(super) slots: Vec<Slot>,
    /// Words per contribution.
    pub(super) width: usize,
    has_rates: bool,
}

impl Layout {
    pub(super) fn new(def: &TableDef) -> Layout {
        let mut slots = Vec::with_capacity(def.value_count());
        let mut off = 0u32;
        for c in &def.columns {
            for _ in 0..c.nbelem {
                slots.push(Slot {
                    storage: c.ty.storage,
                    combine: c.ty.combine,
                    period: c.period,
                    off,
                });
                off += words_for(c.ty.storage, c.ty.combine);
            }
        }
        let has_rates = slots
            .iter()
            .any(|s| s.storage == Storage::FreqCtr && s.period > 0);
        Layout {
            slots,
            width: off as usize,
            has_rates,
        }
    }

    /// Whether `values` has one value of the right kind per element. Checked
    /// before anything is stored, so a bad update changes nothing.
    fn accepts(&self, values: &[Value]) -> bool {
        values.len() == self.slots.len()
            && self.slots.iter().zip(values).all(|(s, v)| {
                matches!(
                    (s.storage, v),
                    (Storage::SignedInt, Value::ServerId(_))
                        | (Storage::UnsignedInt, Value::U32(_))
                        | (Storage::UnsignedLong, Value::U64(_))
                        | (Storage::FreqCtr, Value::Freq(_))
                        | (Storage::Dict, Value::Dict(_) | Value::DictUnknown)
                )
            })
    }

    /// Overwrites a contribution with the latest absolute values. A
    /// `Latest` element takes `stamp` only when its value changes: a node
    /// re-sends its unchanged choice whenever it touches the entry (a
    /// `stick match`, a `track-sc` on a table that also counts, a resync),
    /// and that is no new write.
    fn store(&self, words: &mut [u32], values: &[Value], stamp: u64, dict: &mut Interner) {
        for (s, v) in self.slots.iter().zip(values) {
            let w = &mut words[s.off as usize..];
            let latest = is_latest(s.storage, s.combine);
            let n = value_words(s.storage);
            let before = [w[0], if n > 1 { w[1] } else { 0 }];
            match v {
                Value::U32(n) => w[0] = *n,
                Value::ServerId(i) => w[0] = *i as u32,
                Value::U64(n) => {
                    w[0] = *n as u32;
                    w[1] = (*n >> 32) as u32;
                }
                Value::Freq(f) => {
                    w[0] = f.elapsed;
                    w[1] = f.curr;
                    w[2] = f.prev;
                }
                Value::Dict(d) => {
                    // Acquire before releasing: the same value keeps its id.
                    let id = d.as_ref().map_or(0, |b| dict.acquire(b));
                    dict.release(w[0]);
                    w[0] = id;
                }
                // HAProxy leaves the stored value unchanged; so do we.
                Value::DictUnknown => {}
            }
            if latest && before != [w[0], if n > 1 { w[1] } else { 0 }] {
                w[n] = stamp as u32;
                w[n + 1] = (stamp >> 32) as u32;
            }
        }
    }

    /// Gives back the interned strings a contribution references.
    fn release(&self, words: &[u32], dict: &mut Interner) {
        for s in self.slots.iter().filter(|s| s.storage == Storage::Dict) {
            dict.release(words[s.off as usize]);
        }
    }

    /// One contribution's values as received, rates re-based to `since` ms
    /// after their arrival (for the stats views).
    pub(super) fn load(&self, words: &[u32], since: i64, dict: &Interner, out: &mut Values) {
        for s in &self.slots {
            let w = &words[s.off as usize..];
            out.push(match s.storage {
                Storage::SignedInt => Value::ServerId(w[0] as i32),
                Storage::UnsignedInt => Value::U32(w[0]),
                Storage::UnsignedLong => Value::U64(u64_at(w)),
                Storage::FreqCtr => Value::Freq(rebase_freq(freq_at(w), since)),
                Storage::Dict => Value::Dict(dict.get(w[0]).cloned().map(Box::new)),
            });
        }
    }

    /// When the rates of `e` must next be republished (≤ `now`: at once),
    /// or [`NEVER`]. See `drift.rs`: just before what a node reads from the
    /// published counter drifts one event from the sum of the sources, and
    /// when the sum reaches 0 while the published counter has not. `reach`:
    /// at publication only up to the first boundary (then a wake looks
    /// again with [`Reach::All`] if the key has not changed meanwhile).
    ///
    /// Grouped keys keep the former schedule: a group counts as its member
    /// with the largest window, which can change between boundaries (a max
    /// of lines is not a line), so the drift walk would not be exact; they
    /// are republished at every source's boundary (+1 ms: at exactly
    /// elapsed = P `window_after` still reports the old slope) and every P/4.
    fn next_republish(
        &self,
        e: &KeyEntry,
        now: u64,
        reach: Reach,
        groups: Groups,
        sources: &mut Vec<(FreqCtr, i64)>,
    ) -> u64 {
        if !self.has_rates {
            return NEVER;
        }
        let mut next = NEVER;
        let age = since(now, e.published);
        for s in &self.slots {
            if s.storage != Storage::FreqCtr || s.period == 0 {
                continue;
            }
            let grouped = groups.is_some()
                && e.live(self.width, s.off, now)
                    .any(|(h, _)| group_of(groups, h.source) != 0);
            let fields = || {
                e.live(self.width, s.off, now)
                    .map(|(h, w)| (freq_at(w), since(e.published, h.arrived(now))))
            };
            // At publication the plan usually comes from the sources' fields
            // alone (`drift::first_boundary`), read in place; the walk needs
            // them gathered.
            if !grouped && reach == Reach::FirstBoundary && age <= 0 {
                if let Some(after) = drift::first_boundary(fields(), s.period) {
                    if let Some(after) = after {
                        next = next.min(now.saturating_add(after));
                    }
                    continue;
                }
            }
            sources.clear();
            sources.extend(fields());
            let after = match (grouped, reach) {
                (false, _) => drift::republish_in(sources, age, s.period, reach),
                (true, Reach::FirstBoundary) => at_boundaries(sources, s.period),
                (true, Reach::All) => Some(0),
            };
            if let Some(after) = after {
                next = next.min(now.saturating_add(after));
            }
        }
        next
    }
}

/// The schedule of grouped rates (see [`Layout::next_republish`]): ms to the
/// next boundary of any source with a non-empty window, +1, and at most
/// P/4; `None` when every window is empty.
fn at_boundaries(sources: &[(FreqCtr, i64)], period: u32) -> Option<u64> {
    let p = period as i64;
    let mut next = None::<u64>;
    for &(f, since) in sources {
        if f.window_after(since, period).total == 0 {
            continue;
        }
        let d = f.elapsed_signed() + since;
        // A non-empty window means d < 2P, so this is ≥ 0.
        let to_boundary = if d <= p { p - d } else { 2 * p - d };
        let at = (to_boundary.max(0) as u64 + 1).min((period as u64 / 4).max(1));
        next = Some(next.map_or(at, |n| n.min(at)));
    }
    next
}

/// A counter as it reads `since` ms later (its period started that much
/// longer ago), within what the signed 32-bit `elapsed` can say.
fn rebase_freq(f: FreqCtr, since: i64) -> FreqCtr {
    let e = (f.elapsed_signed() + since).clamp(i32::MIN as i64, i32::MAX as i64);
    FreqCtr {
        elapsed: e as i32 as u32,
        ..f
    }
}

/// A key's published values (see `poll.rs`): the aggregate as of
/// `KeyEntry::published`, kept for the peers that have not polled it yet.
#[derive(Debug, Clone)]
pub(super) struct Computed {
    pub(super) values: Values,
    pub(super) expire: Option<u32>,
}

/// Values computed `since` ms ago as they are to be sent now: rates re-based,
/// the remaining lifetime shortened. Returns the lifetime.
pub(super) fn rebase(values: &mut [Value], expire: Option<u32>, since: i64) -> Option<u32> {
    if since == 0 {
        return expire;
    }
    for v in values.iter_mut() {
        if let Value::Freq(f) = v {
            *f = rebase_freq(*f, since);
        }
    }
    expire.map(|x| (x as u64).saturating_sub(since as u64) as u32)
}

pub(super) fn u64_at(w: &[u32]) -> u64 {
    w[0] as u64 | (w[1] as u64) << 32
}

pub(super) fn freq_at(w: &[u32]) -> FreqCtr {
    FreqCtr {
        elapsed: w[0],
        curr: w[1],
        prev: w[2],
    }
}

/// The stamp of the update that last changed a `Latest` element's value
/// (0: it never held one), from the element's words.
fn latest_stamp(storage: Storage, w: &[u32]) -> u64 {
    let n = value_words(storage);
    w[n] as u64 | (w[n + 1] as u64) << 32
}

/// Whether a `Latest` element holds a server: HAProxy sends `server_id` 0
/// and no `server_key` for an entry that no `stick` rule has written yet
/// (created by a `track-sc` on a table that also counts, say); that is
/// no choice and must not hide another node's.
fn latest_is_set(storage: Storage, w: &[u32]) -> bool {
    w[..value_words(storage)].iter().any(|&x| x != 0)
}

/// The contribution whose `Latest` element was written last, among those
/// holding a value.
pub(super) fn pick_latest<'a>(
    s: &Slot,
    it: impl Iterator<Item = (&'a Head, &'a [u32])>,
) -> Option<(&'a Head, &'a [u32])> {
    it.filter(|(_, w)| latest_is_set(s.storage, w))
        .max_by_key(|(_, w)| latest_stamp(s.storage, w))
}

/// Milliseconds from `then` to `now`, clamped to what rate arithmetic needs
/// (a clock going backwards counts as no time).
pub(super) fn since(now: u64, then: u64) -> i64 {
    now.saturating_sub(then).min(MAX_SINCE) as i64
}

/// One source's latest contribution to a key, minus its values: 16 bytes,
/// held once per (source, key), so the largest item of the engine's memory
/// after the values themselves (at 10 sources a 24-byte header cost 8 bytes
/// per (node, key) more, an eighth of the total).
///
/// Two instants are kept as the low 32 bits of their u64 counterparts:
/// - `arrived`, of the engine's ms clock: the full instant is `now` minus
///   the age, and the age is exact while it stays under 2^31 ms (24.8
///   days). [`Table::clamp_ages`] keeps every age under 2^30 + the sweep
///   interval; a wrapped age above 2^31 can only mean a clock that went
///   backwards, which counts as no time, as [`since`] does.
/// - `stamp`, of the engine-wide receive order: it is only ever compared
///   between contributions (or a connection's start) that arrived in the
///   same millisecond, where fewer than 2^31 updates lie between them; any
///   other comparison is decided by the arrival instants.
///
/// The expiry is a lifetime from arrival (a u32 of ms, as on the wire) and
/// the source's group is in the table's [`Contributor`]s, not here.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    arrived: u32,
    stamp: u32,
    pub(super) source: u32,
    /// ms from arrival to its expiry ([`NO_EXPIRY`]: it does not expire).
    life: u32,
}

/// [`Head::life`] of a contribution that never expires.
const NO_EXPIRY: u32 = u32::MAX;

/// Ages above this are cut to it by [`Table::clamp_ages`] (12.4 days: any
/// rate window of a period up to 6.2 days is empty by then, and a lifetime
/// is kept whole). See [`Head`]. The one thing it changes: a contribution
/// with a longer rate period, not updated for more than 12.4 days, reads as
/// 12.4 to 18.6 days old, so its window may not reach 0 (HAProxy's rate
/// periods are seconds to hours in practice).
pub(super) const AGE_CLAMP: u64 = 1 << 30;

/// How often the engine runs [`Table::clamp_ages`] (6.2 days): ages then
/// stay under `AGE_CLAMP + AGE_SWEEP` < 2^31 ms.
pub(super) const AGE_SWEEP: u64 = 1 << 29;

/// Where a source's latest connection began, in the terms of [`Head`]: the
/// instant and the receive stamp of its first update.
#[derive(Debug, Clone, Copy)]
pub(super) struct Epoch {
    pub(super) at: u64,
    pub(super) stamp: u64,
}

/// `a` before `b`, for two receive stamps of the same millisecond (see
/// [`Head`]): serial-number order over their low 32 bits.
fn stamp_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl Head {
    /// A contribution that arrived at `now` and lapses at `expires`
    /// ([`NEVER`]: it does not). A lifetime longer than a u32 of ms (which
    /// neither the wire nor a table's `expire` can give) is cut to it.
    pub(super) fn new(now: u64, expires: u64, stamp: u64, source: u32) -> Head {
        let life = match expires {
            NEVER => NO_EXPIRY,
            at => at.saturating_sub(now).min(NO_EXPIRY as u64 - 1) as u32,
        };
        Head {
            arrived: now as u32,
            stamp: stamp as u32,
            source,
            life,
        }
    }

    /// ms since it arrived (0 if the clock went backwards).
    pub(super) fn age(&self, now: u64) -> u64 {
        let age = (now as u32).wrapping_sub(self.arrived);
        if age >= 1 << 31 {
            0
        } else {
            age as u64
        }
    }

    /// When it arrived.
    pub(super) fn arrived(&self, now: u64) -> u64 {
        now.saturating_sub(self.age(now))
    }

    /// Whether it has not lapsed at `now`.
    pub(super) fn is_live(&self, now: u64) -> bool {
        self.life == NO_EXPIRY || self.age(now) < self.life as u64
    }

    /// When it lapses ([`NEVER`]: it does not).
    pub(super) fn expires(&self, now: u64) -> u64 {
        match self.life {
            NO_EXPIRY => NEVER,
            life => self.arrived(now).saturating_add(life as u64),
        }
    }

    /// What is left of its lifetime at `now`, in ms as the wire sends it
    /// (`None`: it never expires).
    pub(super) fn remaining(&self, now: u64) -> Option<u32> {
        (self.life != NO_EXPIRY).then(|| (self.life as u64).saturating_sub(self.age(now)) as u32)
    }

    /// Whether it arrived after `other`: the later instant, or in the same
    /// millisecond the later stamp.
    pub(super) fn later_than(&self, other: &Head, now: u64) -> bool {
        match self.age(now).cmp(&other.age(now)) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => stamp_before(other.stamp, self.stamp),
        }
    }

    /// Whether it arrived before the connection that began at `epoch`.
    pub(super) fn predates(&self, epoch: Epoch, now: u64) -> bool {
        let arrived = self.arrived(now);
        arrived < epoch.at || (arrived == epoch.at && stamp_before(self.stamp, epoch.stamp as u32))
    }

    /// The same contribution with its age cut to [`AGE_CLAMP`] if older,
    /// its expiry unchanged (see [`Table::clamp_ages`]).
    fn clamped(self, now: u64) -> Head {
        let age = self.age(now);
        if age <= AGE_CLAMP {
            return self;
        }
        let cut = age - AGE_CLAMP;
        Head {
            arrived: (now as u32).wrapping_sub(AGE_CLAMP as u32),
            life: match self.life {
                NO_EXPIRY => NO_EXPIRY,
                life => (life as u64).saturating_sub(cut) as u32,
            },
            ..self
        }
    }
}

/// What a table keeps per source: how many keys it contributes to (for the
/// stats views, and to skip tables a source never fed), and its `group`
/// (an index into the engine's group numbers, plus one; 0: no group) as of
/// its latest update.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Contributor {
    pub(super) entries: u32,
    pub(super) group: u32,
    /// Some of its contributions may predate its latest connection: set
    /// when it connects while it has some, cleared by the scan at the end
    /// of its teach (`drop_stale`), which is skipped without it. After a
    /// restart of stickagg no node has any, and each node's teach scanned
    /// every key for nothing (about 6 % of relearning a million keys from
    /// ten nodes).
    pub(super) predating: bool,
}

/// The group of each source, for the tables where some source has one
/// (`None`: no source of the table is grouped).
pub(super) type Groups<'a> = Option<&'a HashMap<u32, Contributor, RandomState>>;

/// The group of `source` (0: none).
pub(super) fn group_of(groups: Groups, source: u32) -> u32 {
    groups.and_then(|g| g.get(&source)).map_or(0, |c| c.group)
}

/// A key as stored: up to [`INLINE_KEY`] bytes in place (IPv4, IPv6,
/// integers, short strings: what rate limits are keyed by), longer ones in a
/// box of their own. In place, a lookup compares the key in the slab entry
/// it reads anyway instead of following a pointer to a separate allocation:
/// one cache miss less per update (the key compare was 6 % of the engine's
/// profile, plus its share of the lookup), and 24 bytes instead of a
/// `Bytes` (32) and its allocation.
#[derive(Debug)]
pub(super) enum StoredKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Boxed(Box<[u8]>),
}

/// Key bytes kept in place (see [`StoredKey`]).
const INLINE_KEY: usize = 16;

impl StoredKey {
    fn new(key: &[u8]) -> StoredKey {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            StoredKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            StoredKey::Boxed(key.into())
        }
    }
}

impl std::ops::Deref for StoredKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            StoredKey::Inline { len, bytes } => &bytes[..*len as usize],
            StoredKey::Boxed(b) => b,
        }
    }
}

pub(super) struct KeyEntry {
    pub(super) key: StoredKey,
    pub(super) heads: Vec<Head>,
    /// `heads.len() × layout.width` words, contribution `i` at `i × width`.
    pub(super) words: Vec<u32>,
    /// Deadline of this key's entry in the timers ([`NEVER`]: none). Never
    /// later than the earliest expiry or republish it has to serve; it may be
    /// earlier (a renewal does not move it), which only costs a spurious wake.
    wake: u64,
    /// Next rate republish ([`NEVER`]: none).
    republish: u64,
    /// When the key last took a sequence number: its aggregate is computed
    /// at this instant for every peer, rates re-based to when each polls
    /// (so all of them get the very counter the republish deadline was
    /// planned for, see `drift.rs`). 8 bytes per key, not per contribution.
    pub(super) published: u64,
}

impl KeyEntry {
    /// Live contributions at `now` with their words from element offset `off`.
    fn live(&self, width: usize, off: u32, now: u64) -> impl Iterator<Item = (&Head, &[u32])> {
        self.heads
            .iter()
            .enumerate()
            .filter(move |(_, h)| h.is_live(now))
            .map(move |(i, h)| (h, &self.words[i * width + off as usize..(i + 1) * width]))
    }

    pub(super) fn has_live(&self, now: u64) -> bool {
        self.heads.iter().any(|h| h.is_live(now))
    }
}

pub(super) struct Table {
    /// Index in the engine's table list (what timers refer to).
    pub(super) idx: u32,
    /// Our table id on the wire: stable for the process, never 0.
    pub(super) id: u64,
    /// A forwarded table (`forward <suffix>`): its sources are `up` peers
    /// and each key is relayed as the latest value received from any of
    /// them, unchanged, instead of being aggregated.
    pub(super) forward: bool,
    pub(super) input: String,
    pub(super) output: String,
    /// The first accepted input definition: every later one must match.
    pub(super) shape: Arc<TableDef>,
    pub(super) out_def: Arc<TableDef>,
    /// The peer whose definition fixed the shape (named in refusals).
    pub(super) announced_by: String,
    pub(super) layout: Layout,
    /// Key → slot. It stores the slot and 32 bits of hash and compares
    /// through the slab's key: a map keyed by `Bytes` took 40 bytes per key
    /// (at the usual 50–87 % load, 45–80 bytes), the largest item of a key's
    /// own memory after its contributions.
    index: KeyIndex,
    /// Keys by slot; freed slots are reused, so timers and the change
    /// sequence refer to keys by a 4-byte slot rather than a cloned key.
    slab: Vec<Option<KeyEntry>>,
    /// Each slot's position in the change sequence (0: none, or a free
    /// slot). Apart from the slab so that telling a live entry of the
    /// change sequence from a stale one, done at random for every entry when
    /// the log is compacted and by every poll, reads 8 bytes per key from an
    /// array a tenth of the slab's size instead of a slab entry.
    seqs: Vec<u64>,
    free: Vec<u32>,
    /// Change sequence → key slot, each key once (HAProxy's update tree):
    /// a peer that has sent up to sequence `c` has exactly the keys after
    /// `c` left to send, each with its latest value.
    changes: Changes,
    /// Aggregates computed for a poll and kept for the other peers, by
    /// sequence number (see `poll.rs`); an entry goes when its key changes
    /// again or is removed, or every receiving peer went past it.
    pub(super) computed: BTreeMap<u64, Computed>,
    /// Each source's contributions (for the stats views and to skip tables
    /// a source never fed) and group (see [`Contributor`]).
    pub(super) per_source: HashMap<u32, Contributor, RandomState>,
    /// Whether a source of this table ever had a group: until then, sums
    /// skip looking groups up.
    has_groups: bool,
    pub(super) refused: u64,
    /// Updates stored into this table, and aggregates sent from it (all
    /// peers together), for the metrics.
    pub(super) updates_in: u64,
    pub(super) updates_out: u64,
    pub(super) last_refusal: Option<String>,
    /// New keys dropped because the table held `max-entries` keys.
    pub(super) dropped: u64,
}

impl Table {
    pub(super) fn new(
        idx: u32,
        input: Arc<TableDef>,
        output: String,
        by: String,
        forward: bool,
    ) -> Table {
        let id = idx as u64 + 1;
        let out_def = Arc::new(TableDef {
            id,
            name: output.clone(),
            // We only ever send the columns we know.
            unknown_types: 0,
            ..(*input).clone()
        });
        Table {
            idx,
            id,
            forward,
            input: input.name.clone(),
            output,
            layout: Layout::new(&input),
            shape: input,
            out_def,
            announced_by: by,
            index: KeyIndex::new(),
            slab: Vec::new(),
            seqs: Vec::new(),
            free: Vec::new(),
            changes: Changes::default(),
            computed: BTreeMap::new(),
            per_source: HashMap::default(),
            has_groups: false,
            refused: 0,
            updates_in: 0,
            updates_out: 0,
            last_refusal: None,
            dropped: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The groups of the sources, if any source has one.
    fn groups(&self) -> Groups<'_> {
        self.has_groups.then_some(&self.per_source)
    }

    /// Removes every key (or the one given) with all its contributions,
    /// timers and pending changes. Returns how many keys went.
    pub(super) fn clear(&mut self, ctx: &mut Ctx, key: Option<&[u8]>) -> usize {
        let slots: Vec<u32> = match key {
            Some(k) => self.slot_of(k).into_iter().collect(),
            None => self.index.slots().collect(),
        };
        for &slot in &slots {
            self.remove_key(ctx, slot);
        }
        slots.len()
    }

    pub(super) fn entry(&self, slot: u32) -> Option<&KeyEntry> {
        self.slab.get(slot as usize)?.as_ref()
    }

    pub(super) fn lookup(&self, key: &[u8]) -> Option<&KeyEntry> {
        self.entry(self.slot_of(key)?)
    }

    /// The slot holding `key`.
    fn slot_of(&self, key: &[u8]) -> Option<u32> {
        self.index
            .find(hash_key(key), key, |s| key_at(&self.slab, s))
    }

    /// The slot holding an update's key: the one noted in its memo if that
    /// slot holds the key, else from the index (and then noted).
    fn slot_noted(&self, l: &Lookup) -> Option<u32> {
        if let Some(s) = l.noted_slot() {
            if self.entry(s).is_some_and(|e| e.key[..] == *l.key) {
                return Some(s);
            }
        }
        let h = l.hash();
        let s = self.index.find(h, l.key, |s| key_at(&self.slab, s))?;
        l.note_slot(h, s);
        Some(s)
    }

    /// Keys in the change sequence.
    #[cfg(test)]
    pub(super) fn changes_len(&self) -> usize {
        self.changes.len()
    }

    /// The first key in the change sequence after sequence number `cursor`:
    /// (its position in the sequence, sequence number, slot).
    pub(super) fn change_after(&self, cursor: u64) -> Option<(usize, u64, u32)> {
        self.change_from(self.changes.position_after(cursor))
    }

    /// The first key in the change sequence at or after position `pos`
    /// (valid until the table next changes).
    pub(super) fn change_from(&self, pos: usize) -> Option<(usize, u64, u32)> {
        let seqs = &self.seqs;
        self.changes.live_from(pos, |s, k| is_current(seqs, s, k))
    }

    /// For [`Engine::poll_updates`](super::Engine::poll_updates), what the
    /// change at position `pos` will need, requested ahead as the ingest
    /// does (a peer's poll walks keys changed long ago, out of cache: the
    /// slab entry and the first contribution were 60 % of polling). Without
    /// `contributions`: the slab entry and the key's sequence number, which
    /// must be requested first; with it: the contributions, read from the
    /// slab entry.
    pub(super) fn prefetch_change(&self, pos: usize, contributions: bool) {
        if let Some(slot) = self.changes.slot_at(pos) {
            self.prefetch_slot(slot, contributions);
        }
    }

    /// What a change or a timer of `slot` will read, requested ahead in two
    /// stages (see [`prefetch_change`](Self::prefetch_change)).
    pub(super) fn prefetch_slot(&self, slot: u32, contributions: bool) {
        if contributions {
            if let Some(e) = self.entry(slot) {
                prefetch_slice(&e.heads);
                prefetch_slice(&e.words);
            }
        } else if let Some(e) = self.slab.get(slot as usize) {
            prefetch_slice(std::slice::from_ref(e));
            prefetch_slice(&self.seqs[slot as usize..slot as usize + 1]);
        }
    }

    /// The sequence number of the latest change.
    pub(super) fn last_change(&self) -> Option<u64> {
        self.changes.last()
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = &KeyEntry> {
        self.slab.iter().flatten()
    }

    /// See [`Prefetch::Index`](super::Prefetch::Index).
    pub(super) fn prefetch_index(&self, l: &Lookup) {
        self.index.prefetch(l.hash());
    }

    /// See [`Prefetch::Entry`](super::Prefetch::Entry): reads the index
    /// only, notes the slot the key most likely has and requests its slab
    /// entry.
    pub(super) fn prefetch_entry(&self, l: &Lookup) {
        let h = l.hash();
        let Some(slot) = self.index.probe(h) else {
            return;
        };
        l.note_slot(h, slot);
        if let Some(e) = self.slab.get(slot as usize) {
            prefetch_slice(std::slice::from_ref(e));
        }
    }

    /// See [`Prefetch::Contributions`](super::Prefetch::Contributions): the
    /// lookup itself (the slab entry, the index if the noted slot is not
    /// the key's) runs now, and the contributions are requested from memory.
    pub(super) fn prefetch(&self, l: &Lookup) {
        let Some(slot) = self.slot_noted(l) else {
            return;
        };
        if let Some(e) = self.entry(slot) {
            prefetch_slice(&e.heads);
            prefetch_slice(&e.words);
            // The key's sequence number, replaced at the change: 8 % of
            // stickagg end to end waited on it.
            prefetch_slice(&self.seqs[slot as usize..slot as usize + 1]);
        }
    }

    /// Stores `source`'s latest values for a key. Changes nothing when the
    /// values do not fit the table's shape, or when the key is new and the
    /// table already holds `ctx.max_entries` keys.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply(
        &mut self,
        ctx: &mut Ctx,
        source: u32,
        group: u32,
        upd: &Update,
        expires: u64,
        stamp: u64,
        now: u64,
    ) -> Applied {
        if !self.layout.accepts(&upd.values) || !self.key_fits(&upd.key) {
            return Applied::Malformed;
        }
        let l = Lookup::of(upd);
        let slot = match self.slot_noted(&l) {
            Some(s) => s,
            None if self.len() >= ctx.max_entries => {
                self.dropped += 1;
                ctx.counters.dropped_entries += 1;
                return Applied::Full;
            }
            None => self.insert_key(&upd.key, l.hash()),
        };
        let width = self.layout.width;
        let Some(e) = self.slab.get_mut(slot as usize).and_then(Option::as_mut) else {
            return Applied::Malformed;
        };
        let head = Head::new(now, expires, stamp, source);
        let i = match e.heads.iter().position(|h| h.source == source) {
            Some(i) => {
                e.heads[i] = head;
                i
            }
            None => {
                // Exact growth: sources per key are few and memory per key
                // matters more than the rare reallocation.
                e.heads.reserve_exact(1);
                e.heads.push(head);
                e.words.reserve_exact(width);
                e.words.resize(e.words.len() + width, 0);
                self.per_source.entry(source).or_default().entries += 1;
                e.heads.len() - 1
            }
        };
        // A source's group as of its latest update (a reload may change it).
        if group != 0 || self.has_groups {
            self.has_groups = true;
            if let Some(c) = self.per_source.get_mut(&source) {
                c.group = group;
            }
        }
        self.layout.store(
            &mut e.words[i * width..(i + 1) * width],
            &upd.values,
            stamp,
            ctx.dict,
        );
        self.changed(ctx, slot, now);
        self.updates_in += 1;
        Applied::Stored
    }

    /// Whether `e` holds no server choice at all (every `Latest` element
    /// unset) while `source` contributes to it. Such an aggregate must not be
    /// echoed to that source: a node pushes a new entry (from a `track-sc`)
    /// before its `stick` rule stores the server, and our "no server" could
    /// arrive after that store; a `write-to` table would copy `server_id` 0
    /// over the node's own choice, and HAProxy would push that, coalesced,
    /// in place of the real one.
    pub(super) fn no_choice_for_contributor(&self, e: &KeyEntry, source: u32, now: u64) -> bool {
        let width = self.layout.width;
        let mut latest = self
            .layout
            .slots
            .iter()
            .filter(|s| is_latest(s.storage, s.combine))
            .peekable();
        if latest.peek().is_none() {
            return false;
        }
        latest.all(|s| pick_latest(s, e.live(width, s.off, now)).is_none())
            && e.live(width, 0, now).any(|(h, _)| h.source == source)
    }

    /// Each `Latest` element's current choice for `key` at `now`: element
    /// index, value and the source that wrote it (elements no source set
    /// are left out). For the debug log of replaced choices.
    pub(super) fn latest_choices(
        &self,
        key: &[u8],
        now: u64,
        dict: &Interner,
    ) -> Vec<(usize, Value, u32)> {
        let Some(e) = self.lookup(key) else {
            return Vec::new();
        };
        let width = self.layout.width;
        let mut out = Vec::new();
        for (i, s) in self.layout.slots.iter().enumerate() {
            if !is_latest(s.storage, s.combine) {
                continue;
            }
            if let Some((h, _)) = pick_latest(s, e.live(width, s.off, now)) {
                out.push((
                    i,
                    combine(s, e.live(width, s.off, now), now, dict),
                    h.source,
                ));
            }
        }
        out
    }

    /// The data type of value element `i`, as configured.
    pub(super) fn element_name(&self, i: usize) -> String {
        let mut n = 0;
        for c in &self.shape.columns {
            n += c.nbelem as usize;
            if i < n {
                return c.display_name();
            }
        }
        format!("#{i}")
    }

    /// Whether `key` is what the shape's key type and length allow, so that
    /// whatever we store can be encoded again in the output table.
    fn key_fits(&self, key: &[u8]) -> bool {
        match self.shape.key_type.fixed_len(self.shape.key_len) {
            Some(n) => key.len() == n as usize,
            None => key.len() < self.shape.key_len as usize,
        }
    }

    /// Adds `key`, whose [`hash_key`] is `h`, and returns its slot.
    fn insert_key(&mut self, key: &[u8], h: u32) -> u32 {
        let e = KeyEntry {
            key: StoredKey::new(key),
            heads: Vec::new(),
            words: Vec::new(),
            wake: NEVER,
            republish: NEVER,
            published: 0,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(e);
                self.seqs[s as usize] = 0;
                s
            }
            None => {
                self.slab.push(Some(e));
                self.seqs.push(0);
                (self.slab.len() - 1) as u32
            }
        };
        self.index.insert(h, slot);
        slot
    }

    /// The aggregate of a key changed at `now`: it takes a new sequence
    /// number (every peer's cursor will reach it again, once, whatever
    /// happened before) and its timers are planned anew.
    fn changed(&mut self, ctx: &mut Ctx, slot: u32, now: u64) {
        let Some(e) = self.slab.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        *ctx.seq += 1;
        let old = std::mem::replace(&mut self.seqs[slot as usize], *ctx.seq);
        e.published = now;
        self.changes.push(*ctx.seq, slot);
        // A forwarded rate is republished by the level that computes it;
        // each of its republishes reaches us as an update and is relayed.
        let groups = self.has_groups.then_some(&self.per_source);
        e.republish = if self.forward {
            NEVER
        } else {
            self.layout
                .next_republish(e, now, Reach::FirstBoundary, groups, ctx.rates)
        };
        arm(ctx.timers, self.idx, slot, e, now);
        if old != 0 {
            self.computed.remove(&old);
            let seqs = &self.seqs;
            self.changes.retire(|s, k| is_current(seqs, s, k));
        }
    }

    /// The timer of `slot`, due at `at`, fired at `now`: drop lapsed
    /// contributions (and the key with the last one), republish rates due.
    /// False if the timer was stale (the key's deadline moved since, or the
    /// key went; see `timers.rs`).
    pub(super) fn wake(&mut self, ctx: &mut Ctx, slot: u32, at: u64, now: u64) -> bool {
        let Some(e) = self.slab.get_mut(slot as usize).and_then(Option::as_mut) else {
            return false;
        };
        if e.wake != at {
            return false;
        }
        e.wake = NEVER;
        let mut changed = false;
        let mut i = 0;
        while i < e.heads.len() {
            if !e.heads[i].is_live(now) {
                remove_contrib(&self.layout, e, i, ctx.dict, &mut self.per_source);
                ctx.counters.expired += 1;
                changed = true;
            } else {
                i += 1;
            }
        }
        if e.heads.is_empty() {
            // Nothing contributes: stop publishing; the nodes' copies expire
            // by themselves.
            self.remove_key(ctx, slot);
            return true;
        }
        if e.republish <= now && !changed {
            // Planned at publication up to the first boundary: look at the
            // whole way now, and republish only if a node's reading is due
            // to drift.
            let groups = self.has_groups.then_some(&self.per_source);
            e.republish = self
                .layout
                .next_republish(e, now, Reach::All, groups, ctx.rates);
        }
        if e.republish <= now {
            ctx.counters.republished += 1;
            changed = true;
        }
        if changed {
            self.changed(ctx, slot, now);
        } else {
            // A renewal moved the deadlines later: sleep again.
            arm(ctx.timers, self.idx, slot, e, now);
        }
        true
    }

    /// Whether `slot` holds a key whose timer is the one due at `at`, for
    /// a sweep of the timers: true once per key and sweep. The timers may
    /// hold several identical entries: a key armed at its expiry `T`, woken
    /// earlier by a rate republish, goes back to sleep until the same `T`,
    /// while the first entry for `T` is still there, stale. Each would pass
    /// a mere comparison, so a key fed now and then by one node while
    /// another's contribution lasts an hour kept every copy until then.
    /// The claim marks the key (the top bit of `wake`, never set in a
    /// deadline) until [`unclaim_timer`](Self::unclaim_timer).
    pub(super) fn claim_timer(&mut self, slot: u32, at: u64) -> bool {
        match self.slab.get_mut(slot as usize).and_then(Option::as_mut) {
            Some(e) if e.wake == at => {
                e.wake |= CLAIMED;
                true
            }
            _ => false,
        }
    }

    /// Clears the mark [`claim_timer`](Self::claim_timer) left on `slot`.
    pub(super) fn unclaim_timer(&mut self, slot: u32) {
        if let Some(e) = self.slab.get_mut(slot as usize).and_then(Option::as_mut) {
            if e.wake != NEVER {
                e.wake &= !CLAIMED;
            }
        }
    }

    /// The earliest deadline of this table's keys (tests check the plan
    /// with it; the timers may hold stale entries before it).
    #[cfg(test)]
    pub(super) fn next_wake(&self) -> Option<u64> {
        self.slab
            .iter()
            .flatten()
            .map(|e| e.wake)
            .filter(|&w| w != NEVER)
            .min()
    }

    fn remove_key(&mut self, ctx: &mut Ctx, slot: u32) {
        let Some(mut e) = self.slab.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        let seq = std::mem::take(&mut self.seqs[slot as usize]);
        if seq != 0 {
            self.computed.remove(&seq);
            let seqs = &self.seqs;
            self.changes.retire(|s, k| is_current(seqs, s, k));
        }
        if e.wake != NEVER {
            ctx.timers.forget();
        }
        while !e.heads.is_empty() {
            remove_contrib(&self.layout, &mut e, 0, ctx.dict, &mut self.per_source);
        }
        self.index.remove(&e.key, slot);
        self.free.push(slot);
    }

    /// Cuts every contribution's age to [`AGE_CLAMP`] (see [`Head`]): run
    /// every [`AGE_SWEEP`] so that no age outgrows what 32 bits tell apart.
    /// Expiries are unchanged, so no timer moves.
    pub(super) fn clamp_ages(&mut self, now: u64) {
        for e in self.slab.iter_mut().flatten() {
            for h in e.heads.iter_mut() {
                *h = h.clamped(now);
            }
        }
    }

    /// `source` connected again (a new epoch): what it contributed so far
    /// may be stale.
    pub(super) fn source_connected(&mut self, source: u32) {
        if let Some(c) = self.per_source.get_mut(&source) {
            c.predating = true;
        }
    }

    /// Drops the contributions of `source` received before `epoch` (its
    /// latest connection). Returns how many.
    pub(super) fn drop_stale(&mut self, ctx: &mut Ctx, source: u32, epoch: Epoch, now: u64) -> u64 {
        match self.per_source.get_mut(&source) {
            Some(c) if c.predating => c.predating = false,
            // Everything it contributes arrived on this connection.
            _ => return 0,
        }
        let mut dropped = 0;
        for slot in 0..self.slab.len() as u32 {
            if !self.per_source.contains_key(&source) {
                break;
            }
            let Some(e) = self.slab[slot as usize].as_mut() else {
                continue;
            };
            let Some(i) = e
                .heads
                .iter()
                .position(|h| h.source == source && h.predates(epoch, now))
            else {
                continue;
            };
            remove_contrib(&self.layout, e, i, ctx.dict, &mut self.per_source);
            dropped += 1;
            if e.heads.is_empty() {
                self.remove_key(ctx, slot);
            } else {
                self.changed(ctx, slot, now);
            }
        }
        dropped
    }

    /// The values to publish for `e` at `now`, in the output definition's
    /// order, and the expire to send with them: the longest remaining
    /// lifetime among live contributions (`None`: one never expires).
    ///
    /// A forwarded table publishes its latest live contribution as received
    /// (rates re-based to `now`, so the receiver reads what the sender's
    /// counter reads now) with that contribution's remaining lifetime.
    pub(super) fn aggregate(
        &self,
        e: &KeyEntry,
        now: u64,
        dict: &Interner,
        out: &mut Values,
    ) -> Option<u32> {
        let width = self.layout.width;
        if self.forward {
            let latest = (0..e.heads.len())
                .filter(|&i| e.heads[i].is_live(now))
                .reduce(|a, b| match e.heads[b].later_than(&e.heads[a], now) {
                    true => b,
                    false => a,
                });
            if let Some(i) = latest {
                let h = &e.heads[i];
                let words = &e.words[i * width..(i + 1) * width];
                self.layout.load(words, h.age(now) as i64, dict, out);
                return h.remaining(now);
            }
        }
        // Groups only change sums (counters, rates): a maximum or a latest
        // value is the same whether replicas are merged first or not.
        let groups = self.groups();
        let grouped = groups.is_some()
            && e.heads
                .iter()
                .any(|h| group_of(groups, h.source) != 0 && h.is_live(now));
        for s in &self.layout.slots {
            let summed = s.storage == Storage::FreqCtr
                || (s.storage != Storage::Dict
                    && !matches!(s.combine, Combine::Max | Combine::Latest));
            if grouped && summed {
                let live: Vec<_> = e.live(width, s.off, now).collect();
                let reps = representatives(s, &live, now, groups);
                out.push(combine(s, reps.into_iter(), now, dict));
            } else {
                out.push(combine(s, e.live(width, s.off, now), now, dict));
            }
        }
        e.heads
            .iter()
            .filter(|h| h.is_live(now))
            .try_fold(0, |last, h| Some(last.max(h.remaining(now)?)))
    }
}

/// Removes contribution `i` of `e` (swap-remove in both arrays).
fn remove_contrib(
    layout: &Layout,
    e: &mut KeyEntry,
    i: usize,
    dict: &mut Interner,
    per_source: &mut HashMap<u32, Contributor, RandomState>,
) {
    let w = layout.width;
    layout.release(&e.words[i * w..(i + 1) * w], dict);
    let source = e.heads.swap_remove(i).source;
    let last = e.heads.len();
    if i != last {
        e.words.copy_within(last * w..(last + 1) * w, i * w);
    }
    e.words.truncate(last * w);
    if let Some(c) = per_source.get_mut(&source) {
        c.entries -= 1;
        if c.entries == 0 {
            per_source.remove(&source);
        }
    }
}

/// Makes sure the key wakes up no later than its earliest expiry or
/// republish. A later deadline than the armed one is left alone: renewals
/// (the common case) then cost no timer operation. No deadline at all
/// disarms, so that idle never-expiring keys cost nothing.
fn arm(timers: &mut Timers, table: u32, slot: u32, e: &mut KeyEntry, now: u64) {
    let at = e
        .heads
        .iter()
        .fold(e.republish, |a, h| a.min(h.expires(now)));
    // Past 2^63 ms is never, so that a sweep's mark can't be mistaken for a
    // deadline (see `claim_timer`).
    let at = if at >= CLAIMED { NEVER } else { at };
    // The old entry is left in place, stale (see `timers.rs`).
    if at == NEVER && e.wake != NEVER {
        timers.forget();
        e.wake = NEVER;
    } else if at < e.wake {
        if e.wake != NEVER {
            timers.forget();
        }
        timers.insert((at, table, slot));
        e.wake = at;
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// The per-(source, key) header is what the memory figures in
    /// BENCHMARKS.md count on; a new field must be paid for knowingly.
    #[test]
    fn a_head_takes_16_bytes() {
        assert_eq!(std::mem::size_of::<Head>(), 16);
    }

    /// The same for a key's own entry in the slab (its sequence number is
    /// in `Table::seqs`, 8 more bytes per key).
    #[test]
    fn a_slab_entry_takes_96_bytes() {
        assert_eq!(std::mem::size_of::<Option<KeyEntry>>(), 96);
    }

    /// Keys up to 16 bytes stay in place, longer ones are boxed; both read
    /// back whole (a string key may be up to the table's `len`).
    #[test]
    fn a_stored_key_reads_back() {
        for n in [0, 1, 4, 16, 17, 64] {
            let k: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            let s = StoredKey::new(&k);
            assert_eq!(&*s, &k[..]);
            assert_eq!(matches!(s, StoredKey::Inline { .. }), n <= INLINE_KEY);
        }
        assert_eq!(std::mem::size_of::<StoredKey>(), 24);
    }

    #[test]
    fn a_head_keeps_its_expiry() {
        let h = Head::new(1_000, 61_000, 7, 3);
        assert_eq!(
            (h.expires(2_000), h.arrived(2_000), h.age(2_000), h.source),
            (61_000, 1_000, 1_000, 3)
        );
        assert!(h.is_live(60_999) && !h.is_live(61_000));
        assert_eq!(Head::new(1_000, NEVER, 7, 3).expires(9_000), NEVER);
        assert!(Head::new(1_000, NEVER, 7, 3).is_live(1 << 40));
        assert_eq!(h.remaining(31_000), Some(30_000));
        assert_eq!(h.remaining(70_000), Some(0));
        assert_eq!(Head::new(1_000, NEVER, 7, 3).remaining(5_000), None);
        // Already lapsed, and a lifetime beyond a u32 of ms (cut to it).
        assert_eq!(Head::new(1_000, 500, 7, 3).expires(1_000), 1_000);
        let far = Head::new(0, 1 << 40, 7, 3).expires(0);
        assert_eq!(far, u32::MAX as u64 - 1);
        // A clock that went backwards: no time passed.
        assert_eq!(h.age(900), 0);
    }

    /// The 32-bit instants read right across the wrap of their low bits.
    #[test]
    fn a_head_reads_its_age_across_the_32_bit_wrap() {
        let t = (5u64 << 32) - 500;
        let h = Head::new(t, t + 10_000, (7 << 32) - 1, 3);
        assert_eq!(h.age(t + 1_500), 1_500);
        assert_eq!(h.arrived(t + 1_500), t);
        assert_eq!(h.expires(t + 1_500), t + 10_000);
        assert_eq!(h.remaining(t + 1_500), Some(8_500));
        // Same millisecond: the stamp decides, across its own wrap.
        let g = Head::new(t, NEVER, 7 << 32, 4);
        assert!(g.later_than(&h, t + 5) && !h.later_than(&g, t + 5));
        let epoch = Epoch {
            at: t,
            stamp: 7 << 32,
        };
        assert!(h.predates(epoch, t + 5) && !g.predates(epoch, t + 5));
        // A later millisecond wins whatever the stamps.
        let k = Head::new(t + 1, NEVER, 1, 5);
        assert!(k.later_than(&g, t + 5) && !k.predates(epoch, t + 5));
    }

    /// The sweep keeps what matters: the expiry, and "long ago".
    #[test]
    fn a_clamped_head_keeps_its_expiry() {
        let day = 86_400_000u64;
        let h = Head::new(1_000, 1_000 + 40 * day, 7, 3);
        let now = 1_000 + 20 * day;
        let c = h.clamped(now);
        assert_eq!(c.age(now), AGE_CLAMP);
        assert_eq!(c.expires(now), h.expires(now));
        assert_eq!(c.remaining(now), h.remaining(now));
        let lapsed = Head::new(1_000, 1_000 + 14 * day, 7, 3).clamped(now);
        assert!(!lapsed.is_live(now));
        let forever = Head::new(1_000, NEVER, 7, 3).clamped(now);
        assert!(forever.is_live(now) && forever.age(now) == AGE_CLAMP);
        // Ages stay readable until the next sweep.
        assert_eq!(forever.age(now + AGE_SWEEP), AGE_CLAMP + AGE_SWEEP);
    }
}
