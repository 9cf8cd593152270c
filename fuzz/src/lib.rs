//! Helpers shared by the fuzz targets: a table derived from a few header
//! bytes, and a deterministic way to cut an input into chunks.

use peers::registry::{Params, DATA_TYPES};
use peers::{Column, Event, KeyType, Role, Session, SessionConfig, TableDef, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Bytes [`table_from`] reads.
pub const TABLE_HEADER: usize = 8;

/// Derives a table definition from `h`:
///
/// - `h[0] % 5`: key type (integer, ipv4, ipv6, string, binary);
/// - `h[1]`: key length for string and binary keys (1..=64);
/// - `h[2..6]`: little-endian bitmask of the stored data types (all 27
///   known types can be chosen, so rates, arrays, `server_id`,
///   `server_key` and 64-bit counters all occur);
/// - `h[6]`: number of elements of the array types, two bits each (1..=4):
///   `gpt` bits 0–1, `gpc` bits 2–3, `gpc_rate` bits 4–5;
/// - `h[7]`: rate period in seconds.
pub fn table_from(h: &[u8; TABLE_HEADER]) -> TableDef {
    let key_type = [
        KeyType::Integer,
        KeyType::Ipv4,
        KeyType::Ipv6,
        KeyType::String,
        KeyType::Binary,
    ][h[0] as usize % 5];
    let key_len = match key_type {
        KeyType::String | KeyType::Binary => (h[1] % 64) as u32 + 1,
        t => t.announced_len(None),
    };
    let mask = u32::from_le_bytes([h[2], h[3], h[4], h[5]]);
    let period = h[7] as u32 * 1000;
    let columns = DATA_TYPES
        .iter()
        .filter(|t| mask & (1 << t.id) != 0)
        .map(|t| {
            let n = match t.name {
                "gpt" => (h[6] & 3) as u32 + 1,
                "gpc" => (h[6] >> 2 & 3) as u32 + 1,
                "gpc_rate" => (h[6] >> 4 & 3) as u32 + 1,
                _ => 1,
            };
            let p = if t.params.has_period() { period } else { 0 };
            Column::new(t, n, p)
        })
        .collect();
    TableDef {
        id: 1 + (h[0] / 5) as u64,
        name: "/fuzz".into(),
        key_type,
        key_len,
        expire: Some(30_000),
        columns,
        unknown_types: 0,
    }
}

/// Whether `params` of every column agree with the data type (a sanity
/// check on decoded definitions).
pub fn columns_consistent(def: &TableDef) -> bool {
    def.columns.windows(2).all(|w| w[0].ty.id < w[1].ty.id)
        && def.columns.iter().all(|c| {
            (c.ty.params.is_array() || c.nbelem == 1)
                && (1..=100).contains(&c.nbelem)
                && (c.ty.params.has_period() || c.period == 0)
                && (c.ty.params != Params::None || (c.nbelem == 1 && c.period == 0))
        })
}

/// What a value becomes after one encode/decode trip: a reference to a
/// dictionary slot the peer never filled is sent as "no server key".
pub fn after_round_trip(v: &Value) -> Value {
    match v {
        Value::DictUnknown => Value::Dict(None),
        v => v.clone(),
    }
}

/// Cuts `data` into chunks whose sizes are drawn from a small PRNG seeded
/// by `spec`: `0xFF` gives one chunk; otherwise sizes are 1..=(spec & 63) + 1.
pub fn chunks(spec: u8, data: &[u8]) -> Vec<&[u8]> {
    if spec == 0xFF || data.is_empty() {
        return vec![data];
    }
    let max = (spec & 63) as usize + 1;
    let mut state = 0x9E37_79B9u32 ^ (spec as u32).wrapping_mul(0x0101_0101) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // xorshift32
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (1 + state as usize % max).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

/// A session under test with the invariants every caller may rely on
/// checked at each step: nothing happens after `Closed`; `Established` comes
/// once; an update carries one value per element; and once its timer has
/// been handled, the next deadline is in the future (no busy loop).
pub struct Harness {
    pub s: Session,
    pub now: u64,
    pub closed: bool,
    pub established: bool,
    /// Everything the session asked to write, in order.
    pub out: Vec<u8>,
    /// Each remote table id's definition as of the events taken so far
    /// (an update was decoded with the one before it in the stream, which
    /// `Session::rx_def` no longer gives once a later DEFINE is queued).
    pub defs: HashMap<u64, Arc<TableDef>>,
}

impl Harness {
    pub fn new(role: Role, now: u64) -> Harness {
        Harness {
            s: Session::new(role, SessionConfig::default(), now),
            now,
            closed: false,
            established: false,
            out: Vec::new(),
            defs: HashMap::new(),
        }
    }

    /// Moves time forward by `step` ms and fires the timer if it is due.
    pub fn advance(&mut self, step: u64) {
        self.now += step;
        for _ in 0..4 {
            match self.s.poll_timeout() {
                Some(d) if d <= self.now => {
                    self.s.handle_timeout(self.now);
                    if let Some(next) = self.s.poll_timeout() {
                        assert!(next > self.now, "deadline {next} not after {}", self.now);
                    }
                }
                _ => break,
            }
        }
    }

    pub fn input(&mut self, chunk: &[u8]) {
        let before = self.s.stats();
        self.s.handle_input(chunk, self.now);
        if self.closed {
            assert_eq!(self.s.stats(), before, "a closed session ignores input");
        }
    }

    /// The next event, checked against the ones before it.
    pub fn event(&mut self) -> Option<Event> {
        let ev = self.s.poll_event()?;
        assert!(!self.closed, "{ev:?} after Closed");
        match &ev {
            Event::Closed(_) => {
                assert!(self.s.is_closed());
                self.closed = true;
            }
            Event::Established { minor } => {
                assert!(!self.established, "established twice");
                assert!(*minor <= 1);
                self.established = true;
            }
            Event::Update { remote_id, update } => {
                let def = self
                    .defs
                    .get(remote_id)
                    .expect("an update of a defined table");
                assert_eq!(update.values.len(), def.value_count());
            }
            Event::TableDefined { remote_id, def } => {
                assert!(columns_consistent(def), "{def:?}");
                self.defs.insert(*remote_id, def.clone());
            }
            Event::TableRejected { remote_id, .. } => {
                self.defs.remove(remote_id);
            }
            _ => {}
        }
        Some(ev)
    }

    /// Takes what the session wants written.
    pub fn flush(&mut self) {
        while let Some(b) = self.s.transmit() {
            assert!(!b.is_empty());
            self.out.extend_from_slice(&b);
        }
    }
}

/// Checks that `chunked` — the events of a session fed its input in pieces,
/// with time moving on — agree with `whole`, the events of the same session
/// fed the same bytes in one piece at one instant. Cutting a stream
/// differently must not change what it means; only the timers may end the
/// chunked session early (hello timeout, silence), so that one may stop
/// with such a close where the other goes on.
pub fn assert_same_meaning(chunked: &[Event], whole: &[Event]) {
    use peers::CloseReason::{HelloTimeout, Silence};
    match chunked.split_last() {
        Some((Event::Closed(HelloTimeout | Silence), before)) => {
            assert!(
                whole.starts_with(before),
                "chunked {before:?}\nwhole {whole:?}"
            );
        }
        _ => assert_eq!(chunked, whole),
    }
}
