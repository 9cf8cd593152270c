//! Golden fixtures: bytes captured from real HAProxy 2.6 and 3.0 (see
//! `tests/fixtures/README.md` and `tests/fixtures/recapture.sh`) decode to
//! exactly what HAProxy's `show table` printed at the end of the capture.
//!
//! Each `stream.bin` is fed to a connecting [`Session`] after a synthetic
//! `200\n`, read by read, at the times the capture recorded (`meta.txt`), so
//! that rates can be read back as HAProxy would read them when it printed
//! the table: `FreqCtr::read_after(show time − arrival time, period)`.
//! Entries the capture pushed itself (to get ACKs) are decoded from
//! `sent.bin` instead and must read back just as exactly.

use peers::dict::RxDict;
use peers::fuzzing::Reader;
use peers::message::{self, Control, Frame};
use peers::update::{self, Update};
use peers::{Event, KeyType, Role, Session, SessionConfig, TableDef, Value, DATA_TYPES};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use testkit::{parse_show_table, TableEntry};

/// The files of one version's fixture.
struct Fixture {
    version: &'static str,
    stream: Vec<u8>,
    sent: Vec<u8>,
    /// (offset in `stream`, ms) of every read.
    chunks: Vec<(usize, u64)>,
    /// `show table` name → ms when it was sent.
    shows: BTreeMap<String, u64>,
    /// (table, update id) → ms when we pushed it.
    pushes: BTreeMap<(String, u32), u64>,
    /// (table id, update id) HAProxy ACKed.
    acked: (u64, u32),
    /// `show table` name → its entries.
    tables: BTreeMap<String, Vec<TableEntry>>,
}

fn load(version: &'static str) -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(version);
    let read =
        |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{version}/{f}: {e}"));
    let meta = String::from_utf8(read("meta.txt")).unwrap();
    let mut fx = Fixture {
        version,
        stream: read("stream.bin"),
        sent: read("sent.bin"),
        chunks: Vec::new(),
        shows: BTreeMap::new(),
        pushes: BTreeMap::new(),
        acked: (0, 0),
        tables: BTreeMap::new(),
    };
    for line in meta.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> u64 { w[i].parse().unwrap_or_else(|_| panic!("meta.txt: {line}")) };
        match w.first().copied() {
            Some("chunk") => fx.chunks.push((num(1) as usize, num(2))),
            Some("show") => {
                fx.shows.insert(w[1].to_string(), num(2));
            }
            Some("push") => {
                fx.pushes.insert((w[1].to_string(), num(2) as u32), num(3));
            }
            Some("acked") => fx.acked = (num(1), num(2) as u32),
            _ => {}
        }
    }
    assert_eq!(fx.chunks.first().map(|c| c.0), Some(0), "{version}: chunks");
    // show-table.txt is the concatenation of one answer per table.
    let text = String::from_utf8(read("show-table.txt")).unwrap();
    let mut name = None;
    let mut section = String::new();
    for line in text.lines().chain(std::iter::once("# table: <end>,")) {
        if let Some(rest) = line.strip_prefix("# table: ") {
            if let Some(n) = name.take() {
                fx.tables.insert(n, parse_show_table(&section));
            }
            name = Some(rest.split(',').next().unwrap().to_string());
            section.clear();
        } else {
            section.push_str(line);
            section.push('\n');
        }
    }
    assert_eq!(
        fx.tables.keys().collect::<Vec<_>>(),
        fx.shows.keys().collect::<Vec<_>>(),
        "{version}: show-table.txt and meta.txt disagree"
    );
    fx
}

/// An entry as last received, and when.
#[derive(Clone)]
struct Last {
    def: Arc<TableDef>,
    update: Update,
    at_ms: u64,
}

/// What a [`Session`] made of the capture.
struct Decoded {
    events: Vec<Event>,
    /// (network table name, key) → last update.
    entries: BTreeMap<(String, Vec<u8>), Last>,
    /// (network table name, key) → last timed update (the teach).
    timed: BTreeMap<(String, Vec<u8>), Last>,
    /// Every definition HAProxy sent, by network name.
    defs: BTreeMap<String, Arc<TableDef>>,
}

fn collect(s: &mut Session, at_ms: u64, out: &mut Decoded) {
    while let Some(ev) = s.poll_event() {
        match &ev {
            Event::Closed(r) => panic!("session closed: {r:?}"),
            Event::TableDefined { def, .. } => {
                out.defs.insert(def.name.clone(), def.clone());
            }
            Event::TableRejected { name, reason, .. } => panic!("table {name} rejected: {reason}"),
            Event::Update { remote_id, update } => {
                let def = s.rx_def(*remote_id).expect("an update of a defined table");
                assert!(
                    !update.values.contains(&Value::DictUnknown),
                    "reference to an unknown dictionary slot: {update:?}"
                );
                let last = Last {
                    def: def.clone(),
                    update: update.clone(),
                    at_ms,
                };
                let key = (def.name.clone(), update.key.to_vec());
                if update.expire.is_some() {
                    out.timed.insert(key.clone(), last.clone());
                }
                out.entries.insert(key, last);
            }
            _ => {}
        }
        out.events.push(ev);
    }
}

fn empty() -> Decoded {
    Decoded {
        events: Vec::new(),
        entries: BTreeMap::new(),
        timed: BTreeMap::new(),
        defs: BTreeMap::new(),
    }
}

/// HAProxy's stream, as our peer "agg" received it after connecting.
fn decode_stream(fx: &Fixture) -> Decoded {
    let role = Role::Connect {
        callee: "hap".into(),
        caller: "agg".into(),
        pid: 1,
    };
    let mut s = Session::new(role, SessionConfig::default(), 0);
    assert!(s.transmit().is_some(), "hello");
    let mut out = empty();
    s.handle_input(b"200\n", 0);
    collect(&mut s, 0, &mut out);
    assert_eq!(out.events, [Event::Established { minor: 1 }]);
    for (i, &(off, ms)) in fx.chunks.iter().enumerate() {
        let end = fx.chunks.get(i + 1).map_or(fx.stream.len(), |c| c.0);
        s.handle_input(&fx.stream[off..end], ms);
        collect(&mut s, ms, &mut out);
    }
    assert!(s.is_established());
    out
}

/// Our own bytes, as HAProxy received them (we were the connecting side).
fn decode_sent(fx: &Fixture) -> Decoded {
    let mut s = Session::new(Role::Accept, SessionConfig::default(), 0);
    s.handle_input(&fx.sent, 0);
    match s.poll_event() {
        Some(Event::HelloReceived(h)) => {
            assert_eq!((h.callee.as_str(), h.caller.as_str()), ("hap", "agg"));
        }
        e => panic!(
            "{}: sent.bin does not start with a hello: {e:?}",
            fx.version
        ),
    }
    s.accept(0);
    let mut out = empty();
    collect(&mut s, 0, &mut out);
    out
}

/// `show table` spelling of a key.
fn key_text(def: &TableDef, key: &[u8]) -> String {
    match def.key_type {
        KeyType::Integer => u32::from_be_bytes(key.try_into().unwrap()).to_string(),
        KeyType::Ipv4 => Ipv4Addr::from(<[u8; 4]>::try_from(key).unwrap()).to_string(),
        KeyType::Ipv6 => Ipv6Addr::from(<[u8; 16]>::try_from(key).unwrap()).to_string(),
        KeyType::String => String::from_utf8_lossy(key).into_owned(),
        KeyType::Binary => key.iter().map(|b| format!("{b:02X}")).collect(),
    }
}

/// `show table` name of element `i` of a column: arrays insert the index
/// before the first `_` (`gpc_rate` → `gpc1_rate`); rates drop the period
/// (the parser stores both spellings).
fn element_name(col: &peers::Column, i: u32) -> String {
    if !col.ty.params.is_array() {
        return col.ty.name.to_string();
    }
    match col.ty.name.split_once('_') {
        Some((a, b)) => format!("{a}{i}_{b}"),
        None => format!("{}{i}", col.ty.name),
    }
}

/// `show table` name → network name (`capture/t_ip` → `/t_ip`, `be` → `be`).
fn net_name(show: &str) -> String {
    match show.split_once('/') {
        Some((_, t)) => format!("/{t}"),
        None => show.to_string(),
    }
}

/// Checks that `entry` (printed at `show_ms`) shows exactly `last`.
fn check_entry(
    version: &str,
    table: &str,
    entry: &TableEntry,
    last: &Last,
    timed: Option<&Last>,
    show_ms: u64,
) {
    let d = show_ms as i64 - last.at_ms as i64;
    let ctx = format!("{version} {table} key {}", entry.key);
    let mut values = last.update.values.iter();
    for col in &last.def.columns {
        for i in 0..col.nbelem {
            let v = values.next().unwrap();
            let name = element_name(col, i);
            let shown = entry
                .get(&name)
                .unwrap_or_else(|| panic!("{ctx}: {name} not shown: {entry:?}"));
            match v {
                Value::ServerId(id) => assert_eq!(shown, id.to_string(), "{ctx}: {name}"),
                Value::U32(n) => assert_eq!(shown, n.to_string(), "{ctx}: {name}"),
                Value::U64(n) => assert_eq!(shown, n.to_string(), "{ctx}: {name}"),
                Value::Freq(f) => {
                    assert_eq!(
                        entry.period_ms(&name),
                        Some(col.period as u64),
                        "{ctx}: {name}"
                    );
                    let want = f.read_after(d, col.period) as i64;
                    let got: i64 = shown.parse().unwrap();
                    assert!(
                        (got - want).abs() <= 1,
                        "{ctx}: {name} shows {got}, {f:?} read {d} ms later gives {want}"
                    );
                }
                Value::Dict(Some(s)) => {
                    assert_eq!(shown.as_bytes(), &s[..], "{ctx}: {name}")
                }
                Value::Dict(None) => assert_eq!(shown, "-", "{ctx}: {name}"),
                Value::DictUnknown => unreachable!(),
            }
        }
    }
    // Remaining lifetime. Untimed updates do not carry it, so it is checked
    // against the teach's timed update when HAProxy has not touched the
    // entry since (same update id), else against the table's expire from
    // the moment the live update arrived (HAProxy pushes within ms of the
    // touch, hence the slack).
    let (lifetime, since) = match timed {
        Some(t) if t.update.id == last.update.id => (t.update.expire.unwrap(), t.at_ms),
        _ => (
            last.def.expire.expect("HAProxy always sends expire"),
            last.at_ms,
        ),
    };
    let want = lifetime as i64 - (show_ms as i64 - since as i64);
    let exp = entry.exp.expect("exp") as i64;
    assert!(
        (want - exp).abs() <= 50,
        "{ctx}: exp={exp}, expected {want} ({lifetime} ms lifetime at {since} ms)"
    );
}

/// Every (class, type) in the stream, and how many dictionary values came in
/// define form and in reference form, found by walking the frames without
/// a Session: each update is decoded with an empty dictionary, so a
/// reference form comes out as `DictUnknown`.
fn walk_frames(stream: &[u8]) -> (BTreeSet<(u8, u8)>, usize, usize) {
    let mut kinds = BTreeSet::new();
    let (mut defines, mut references) = (0, 0);
    let mut def: Option<TableDef> = None;
    let mut last_id = 0u32;
    let mut buf = stream;
    while !buf.is_empty() {
        let (frame, used) = message::next_frame(buf, usize::MAX, 0)
            .expect("frame")
            .expect("stream ends inside a message");
        match frame {
            Frame::Control(c) => {
                kinds.insert((0, c as u8));
            }
            Frame::Error(e) => panic!("HAProxy sent error {e:?}"),
            Frame::Skipped { class, ty } => panic!("unknown message {class:02X} {ty:02X}"),
            Frame::Table { ty, payload, .. } => {
                kinds.insert((10, ty));
                let mut r = Reader::new(payload, 0);
                match ty {
                    update::MSG_DEFINE => {
                        def = Some(TableDef::decode(&mut r).unwrap().unwrap());
                        last_id = 0;
                    }
                    update::MSG_ACK => {}
                    update::MSG_UPDATE
                    | update::MSG_UPDATE_INCR
                    | update::MSG_UPDATE_TIMED
                    | update::MSG_UPDATE_TIMED_INCR => {
                        let d = def.as_ref().expect("update before any DEFINE");
                        let u =
                            update::decode_update(ty, &mut r, d, last_id, &mut RxDict::default())
                                .unwrap();
                        assert!(r.is_empty(), "bytes left after an update");
                        last_id = u.id;
                        for v in &u.values {
                            match v {
                                Value::Dict(Some(_)) => defines += 1,
                                Value::DictUnknown => references += 1,
                                _ => {}
                            }
                        }
                    }
                    _ => panic!("unexpected table message {ty:02X}"),
                }
            }
        }
        buf = &buf[used..];
    }
    (kinds, defines, references)
}

fn check_fixture(version: &'static str, max_type: u8) {
    let fx = load(version);
    let rx = decode_stream(&fx);
    let tx = decode_sent(&fx);

    // Every message type HAProxy sends to a peer is in the capture (but
    // PARTIAL and the error class), and nothing else.
    let (kinds, defines, references) = walk_frames(&fx.stream);
    let want: BTreeSet<(u8, u8)> = [
        (0, Control::ResyncRequest as u8),
        (0, Control::ResyncFinished as u8),
        (0, Control::ResyncConfirm as u8),
        (0, Control::Heartbeat as u8),
        (10, update::MSG_UPDATE),
        (10, update::MSG_UPDATE_INCR),
        (10, update::MSG_DEFINE),
        (10, update::MSG_ACK),
        (10, update::MSG_UPDATE_TIMED),
        (10, update::MSG_UPDATE_TIMED_INCR),
    ]
    .into();
    assert_eq!(kinds, want, "{version}: message types");
    assert!(
        defines >= 2 && references >= 1,
        "{version}: dictionary forms {defines}/{references}"
    );

    // Order: HAProxy asks us to teach it, then teaches us with timed updates
    // only, then pushes live (untimed) updates, and ACKs ours.
    assert_eq!(rx.events[1], Event::ResyncRequest, "{version}");
    let finished = rx
        .events
        .iter()
        .position(|e| *e == Event::ResyncFinished)
        .expect("teach finished");
    let timed = |e: &Event| match e {
        Event::Update { update, .. } => Some(update.expire.is_some()),
        _ => None,
    };
    assert!(rx.events[..finished].iter().filter_map(timed).all(|t| t));
    assert!(rx.events[finished..].iter().filter_map(timed).all(|t| !t));
    assert!(rx.events[finished..].iter().filter_map(timed).count() >= 3);
    // After our CONFIRM, HAProxy rewinds its push pointer to where the teach
    // started (our last ACK: none), so every taught entry is pushed again,
    // untimed. Duplicates are normal; updates are absolute states.
    for key in rx.timed.keys() {
        assert!(
            rx.entries[key].update.expire.is_none(),
            "{version}: {key:?} was not re-sent after CONFIRM"
        );
    }
    let untouched = rx
        .timed
        .iter()
        .filter(|(k, t)| rx.entries[*k].update.id == t.update.id)
        .count();
    assert!(
        untouched >= 5,
        "{version}: entries not touched since the teach"
    );
    assert!(
        rx.events.contains(&Event::Ack {
            table_id: fx.acked.0,
            update_id: fx.acked.1
        }),
        "{version}: no ACK for {:?}",
        fx.acked
    );

    // Coverage: every data type and every key type, with non-zero values.
    let types: BTreeSet<u8> = rx
        .defs
        .values()
        .flat_map(|d| d.columns.iter().map(|c| c.ty.id))
        .collect();
    assert_eq!(types, (0..=max_type).collect(), "{version}: data types");
    let key_types: BTreeSet<u64> = rx.defs.values().map(|d| d.key_type.wire()).collect();
    assert_eq!(key_types, [2, 4, 5, 6, 7].into(), "{version}: key types");
    let mut nonzero = BTreeSet::new();
    for last in rx.entries.values() {
        let mut values = last.update.values.iter();
        for col in &last.def.columns {
            for _ in 0..col.nbelem {
                let set = match values.next().unwrap() {
                    Value::ServerId(n) => *n != 0,
                    Value::U32(n) => *n != 0,
                    Value::U64(n) => *n != 0,
                    Value::Freq(f) => f.curr != 0 || f.prev != 0,
                    Value::Dict(v) => v.is_some(),
                    Value::DictUnknown => false,
                };
                if set {
                    nonzero.insert(col.ty.id);
                }
            }
        }
    }
    // conn_cur is back to 0 once the test clients have disconnected.
    let conn_cur = DATA_TYPES.iter().find(|t| t.name == "conn_cur").unwrap().id;
    let want: BTreeSet<u8> = (0..=max_type).filter(|&t| t != conn_cur).collect();
    assert_eq!(nonzero, want, "{version}: data types with a non-zero value");

    // Every entry shown is what was last received for its key, or what we
    // pushed; and every key received is shown.
    let mut explained = 0;
    for (show, entries) in &fx.tables {
        let net = net_name(show);
        let def = rx
            .defs
            .get(&net)
            .unwrap_or_else(|| panic!("{version}: {net} never defined"));
        let show_ms = fx.shows[show];
        for entry in entries {
            fn find<'a>(d: &'a Decoded, net: &str, def: &TableDef, key: &str) -> Option<&'a Last> {
                d.entries
                    .iter()
                    .find(|((t, k), _)| t == net && key_text(def, k).eq_ignore_ascii_case(key))
                    .map(|(_, l)| l)
            }
            let timed = rx
                .timed
                .iter()
                .find(|((t, k), _)| *t == net && key_text(def, k).eq_ignore_ascii_case(&entry.key))
                .map(|(_, l)| l);
            match (
                find(&rx, &net, def, &entry.key),
                find(&tx, &net, def, &entry.key),
            ) {
                (Some(last), None) => check_entry(version, show, entry, last, timed, show_ms),
                (None, Some(ours)) => {
                    let pushed = fx.pushes[&(net.clone(), ours.update.id)];
                    let ours = Last {
                        at_ms: pushed,
                        def: ours.def.clone(),
                        update: ours.update.clone(),
                    };
                    check_entry(version, show, entry, &ours, None, show_ms);
                }
                (a, b) => panic!(
                    "{version} {show} {}: received {} / pushed {}",
                    entry.key,
                    a.is_some(),
                    b.is_some()
                ),
            }
            explained += 1;
        }
    }
    assert_eq!(
        explained,
        rx.entries.len() + tx.entries.len(),
        "{version}: keys received or pushed but not shown"
    );
    assert_eq!(tx.entries.len(), fx.pushes.len());
}

#[test]
fn haproxy_26_fixture() {
    check_fixture("2.6", 24);
}

#[test]
fn haproxy_30_fixture() {
    check_fixture("3.0", 26);
}
