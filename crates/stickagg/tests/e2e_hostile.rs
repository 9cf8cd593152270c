//! Hostile input and bounded resources, end to end: a real stickagg with two
//! real HAProxy nodes attached and aggregating, and a raw TCP client (or
//! several) sending it what no HAProxy would send.
//!
//! Every case checks three things: (a) stickagg says what happened in its
//! log, (b) the protocol's answer on the raw connection (a status line,
//! `01 00`/`01 01` followed by a close, or a silent close), and (c) that the
//! nodes' totals keep updating (a request to each node, then the `.agg`
//! total on both).
//!
//! Nets 140–159 are used here, one per test (140–149 and 152: HAProxy 3.0;
//! 150–151: the 2.6 runs of the core cases).

mod common;

use bytes::BytesMut;
use common::*;
use peers::message::{self, Frame};
use peers::table::{Column, TableDef};
use peers::update::{self, Value};
use peers::{data_type_by_name, KeyType};
use rand::{Rng, SeedableRng};
use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::{http_get, parse_show_table, require_haproxy, wait_for, Net, Version};

/// Generous bound for anything to happen (a failure detector, not a timing
/// assertion).
const BOUND: Duration = Duration::from_secs(15);

const TABLES: &str = "
table request_rates type ip size 200k expire 60s store http_req_cnt
table request_rates.agg type ip size 200k expire 60s store http_req_cnt";
const TRACK: &str = "http-request track-sc0 src table mypeers/request_rates";
/// Static peer names a raw client may use (stickagg's attempts to connect
/// out to them are refused: nothing listens there).
const FAKES: u8 = 8;

// ---------------------------------------------------------------------------
// The cluster: stickagg + two HAProxy nodes.

struct Cluster {
    net: Net,
    sa: Stickagg,
    nodes: Vec<Node>,
    agg: SocketAddr,
    next_client: Cell<u8>,
}

fn cluster(version: Version, net: Net, extra_global: &str) -> Cluster {
    let agg = net.addr(2, PEERS_PORT);
    let mut cfg = format!("global\n    stats socket {{sock}}\n{extra_global}\naggregations data\n    from any to .agg\n    peer gpe {agg} local\n");
    for i in 1..=2u8 {
        cfg.push_str(&format!(
            "    peer enterprise{i} {}\n",
            net.addr(10 + i, PEERS_PORT)
        ));
    }
    for i in 1..=FAKES {
        cfg.push_str(&format!(
            "    peer fake{i} {}\n",
            net.addr(200 + i, PEERS_PORT)
        ));
    }
    let sa = Stickagg::start(&cfg);
    let spec = NodeSpec {
        tables: TABLES,
        rules: TRACK,
        agg_name: "gpe",
    };
    let nodes = (1..=2)
        .map(|i| start_node(version, net, i, agg, &spec))
        .collect();
    let c = Cluster {
        net,
        sa,
        nodes,
        agg,
        next_client: Cell::new(50),
    };
    c.aggregating();
    c
}

impl Cluster {
    /// (c): a new client sends one request to each node; both nodes read
    /// the total 2 in their `.agg` table.
    fn aggregating(&self) {
        let n = self.next_client.get();
        assert!(n < 200, "out of client addresses");
        self.next_client.set(n + 1);
        let client = self.net.ip(n);
        for node in &self.nodes {
            let st = http_get(node.http, client, "/").unwrap();
            assert_eq!(st, 200);
        }
        let nodes: Vec<&Node> = self.nodes.iter().collect();
        wait_value(
            &nodes,
            "mypeers/request_rates.agg",
            &client.to_string(),
            "http_req_cnt",
            2,
        );
    }

    /// (a): waits (bounded) for a log line containing every fragment.
    fn wait_log(&self, fragments: &[&str]) -> String {
        wait_for(BOUND, &format!("a log line with {fragments:?}"), || {
            self.sa
                .log()
                .lines()
                .find(|l| fragments.iter().all(|f| l.contains(f)))
                .map(str::to_string)
        })
    }

    fn handshake(&self, name: &str) -> RawPeer {
        let mut r = RawPeer::connect(self.agg);
        r.send(&peers::hello::encode_hello("gpe", name, 4242));
        let line = r.status_line();
        assert_eq!(line, "200", "hello as {name}");
        r
    }
}

// ---------------------------------------------------------------------------
// A raw peers client.

/// One received message, owned.
#[derive(Debug, Clone, PartialEq)]
enum Msg {
    Control(peers::message::Control),
    Error(peers::message::PeerError),
    Table(u8, Vec<u8>),
    Other,
}

impl RawPeer {
    /// Decodes and consumes the complete messages received so far.
    fn messages(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        let mut used = 0;
        while let Ok(Some((f, n))) = message::next_frame(&self.rx[used..], 1 << 20, 0) {
            out.push(match f {
                Frame::Control(c) => Msg::Control(c),
                Frame::Error(e) => Msg::Error(e),
                Frame::Table { ty, payload, .. } => Msg::Table(ty, payload.to_vec()),
                Frame::Skipped { .. } => Msg::Other,
            });
            used += n;
        }
        self.rx.drain(..used);
        out
    }

    /// (b) for a protocol error: `01 <code>` is the last message, then the
    /// connection closes.
    fn expect_error_close(&mut self, code: peers::message::PeerError) {
        self.wait_closed();
        let msgs = self.messages();
        assert_eq!(
            msgs.last(),
            Some(&Msg::Error(code)),
            "last messages before the close: {msgs:?}"
        );
    }

    /// Waits (bounded) for stickagg's ACK of `update_id` in table
    /// `table_id`: the session is alive and still decoding.
    fn wait_ack(&mut self, table_id: u64, update_id: u32) {
        let mut seen = Vec::new();
        wait_for(
            BOUND,
            &format!("ACK of update {update_id} of table {table_id}"),
            || {
                self.poll();
                for m in self.messages() {
                    if let Msg::Table(update::MSG_ACK, p) = &m {
                        let (t, n) = peers::varint::decode(p).unwrap();
                        let id = u32::from_be_bytes(p[n..n + 4].try_into().unwrap());
                        if t == table_id && id == update_id {
                            return Ok(());
                        }
                    }
                    seen.push(m);
                }
                if self.closed {
                    panic!("closed by stickagg; received {seen:?}");
                }
                Err(format!("{} messages, none is that ACK", seen.len()))
            },
        );
    }
}

/// A framed stick-table message.
fn table_msg(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    message::encode_table_msg(&mut v, ty, payload);
    v
}

fn define(def: &TableDef) -> Vec<u8> {
    let mut p = Vec::new();
    def.encode(&mut p);
    table_msg(update::MSG_DEFINE, &p)
}

fn upd(def: &TableDef, id: u32, key: &[u8], values: &[Value]) -> Vec<u8> {
    let mut p = BytesMut::new();
    let mut dict = peers::dict::TxDict::default();
    let ty = update::encode_update(&mut p, def, id, None, key, values, &mut dict).unwrap();
    table_msg(ty, &p)
}

fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    peers::varint::encode(v, &mut out);
    out
}

/// `/request_rates` as the nodes define it (same shape), under `id`.
fn rates_def(id: u64, name: &str) -> TableDef {
    TableDef {
        id,
        name: name.into(),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire: Some(60_000),
        columns: vec![Column::new(
            data_type_by_name("http_req_cnt").unwrap(),
            1,
            0,
        )],
        unknown_types: 0,
    }
}

/// A table of our own (`/probe`), to prove a session still decodes.
fn probe_def() -> TableDef {
    rates_def(7, "/probe")
}

/// Sends a valid DEFINE + UPDATE of `/probe` and waits for the ACK.
fn still_alive(r: &mut RawPeer, update_id: u32) {
    let def = probe_def();
    r.send(&define(&def));
    r.send(&upd(&def, update_id, &[10, 9, 9, 9], &[Value::U32(1)]));
    r.wait_ack(def.id, update_id);
}

/// `/sess`: a string table with `server_key` (dictionary values).
fn sess_def() -> TableDef {
    TableDef {
        id: 3,
        name: "/sess".into(),
        key_type: KeyType::String,
        key_len: 32,
        expire: Some(60_000),
        columns: vec![Column::new(data_type_by_name("server_key").unwrap(), 1, 0)],
        unknown_types: 0,
    }
}

/// An update of `/sess` for key "k" whose value bytes are `dict` verbatim.
fn sess_update(id: u32, dict: &[u8]) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[1, b'k']);
    p.extend_from_slice(dict);
    table_msg(update::MSG_UPDATE, &p)
}

/// `updates_out` of `peer` in `show peers` (on the line after `peer=`).
fn updates_out(show_peers: &str, peer: &str) -> u64 {
    let mut lines = show_peers.lines();
    lines
        .find(|l| l.trim_start().starts_with(&format!("peer={peer} ")))
        .and_then(|_| lines.next())
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("updates_out="))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no updates_out for {peer} in {show_peers}"))
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

macro_rules! v30 {
    ($name:ident, $net:expr) => {
        #[test]
        fn $name() {
            if require_haproxy(Version::V30).is_some() {
                cases::$name(Version::V30, Net::new($net));
            }
        }
    };
}

// The core cases also run against HAProxy 2.6.
mod haproxy_2_6 {
    use super::*;
    #[test]
    fn handshake_refusals() {
        if require_haproxy(Version::V26).is_some() {
            cases::handshake_refusals(Version::V26, Net::new(150));
        }
    }
    #[test]
    fn framing_errors() {
        if require_haproxy(Version::V26).is_some() {
            cases::framing_errors(Version::V26, Net::new(151));
        }
    }
}

v30!(handshake_refusals, 140);
v30!(random_bytes, 141);
v30!(framing_errors, 142);
v30!(truncated_messages, 143);
v30!(tolerated_messages, 144);
v30!(connection_flood, 145);
v30!(slow_reader, 146);
v30!(maxconn, 147);
v30!(many_tables, 148);
v30!(impersonation, 149);
v30!(dynamic_names_bounded, 152);

mod cases {
    use super::*;

    /// Hellos: endless, wrong version, wrong callee, unknown caller, CRLF.
    pub fn handshake_refusals(version: Version, net: Net) {
        let c = cluster(version, net, "");

        // A hello that never ends: > 512 bytes without a newline → closed
        // without a status.
        let mut r = RawPeer::connect(c.agg);
        r.send(&[b'A'; 600]);
        assert_eq!(r.status_line(), "", "no status for an endless hello");
        c.wait_log(&["hello line too long: closed"]);
        c.aggregating();

        // Wrong version → 502.
        let mut r = RawPeer::connect(c.agg);
        r.send(b"HAProxyS 3.0\ngpe\nfake1 1 1\n");
        assert_eq!(r.status_line(), "502");
        r.wait_closed();
        c.wait_log(&["refused with status 502"]);
        c.aggregating();

        // Not our name → 503.
        let mut r = RawPeer::connect(c.agg);
        r.send(&peers::hello::encode_hello("nobody", "fake1", 1));
        assert_eq!(r.status_line(), "503");
        r.wait_closed();
        c.wait_log(&["called us 'nobody', which is not our name here: refused (503)"]);
        c.aggregating();

        // Unknown peer → 504.
        let mut r = RawPeer::connect(c.agg);
        r.send(&peers::hello::encode_hello("gpe", "intruder", 1));
        assert_eq!(r.status_line(), "504");
        r.wait_closed();
        c.wait_log(&["unknown peer 'intruder'", "(504)"]);
        c.aggregating();

        // Our own name as the caller → 504 (never taken for a node).
        let mut r = RawPeer::connect(c.agg);
        r.send(&peers::hello::encode_hello("gpe", "gpe", 1));
        assert_eq!(r.status_line(), "504");
        r.wait_closed();
        c.wait_log(&["unknown peer 'gpe'", "(504)"]);

        // Terminal escapes in a name are not written raw to the log.
        let mut r = RawPeer::connect(c.agg);
        r.send(&peers::hello::encode_hello("gpe", "evil\x1b[2J", 1));
        assert_eq!(r.status_line(), "504");
        r.wait_closed();
        c.wait_log(&["unknown peer 'evil", "(504)"]);
        assert!(!c.sa.log().contains('\x1b'), "raw ESC in the log");

        // No space on line 3 → 501.
        let mut r = RawPeer::connect(c.agg);
        r.send(b"HAProxyS 2.1\ngpe\nfake1\n");
        assert_eq!(r.status_line(), "501");
        r.wait_closed();
        c.wait_log(&["refused with status 501"]);

        // CRLF line endings are accepted.
        let mut r = RawPeer::connect(c.agg);
        r.send(b"HAProxyS 2.1\r\ngpe\r\nfake1 4242 1\r\n");
        assert_eq!(r.status_line(), "200");
        c.wait_log(&["session with peer 'fake1' of 'data' established"]);
        still_alive(&mut r, 1);
        c.aggregating();
    }

    /// Random bytes, before the hello and after a handshake. The expected
    /// answer is computed by a `peers::Session` fed the same bytes.
    pub fn random_bytes(version: Version, net: Net) {
        let c = cluster(version, net, "");
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);

        // Before the hello: the first line decides (501), or no newline in
        // the first 513 bytes (silent close).
        let (mut refused, mut silent) = (0, 0);
        for _ in 0..6 {
            let len = rng.gen_range(200..2000);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let nl = bytes.iter().position(|&b| b == b'\n');
            let mut r = RawPeer::connect(c.agg);
            r.send(&bytes);
            let line = r.status_line();
            match nl {
                Some(n) if n <= 512 => {
                    assert_eq!(line, "501", "random hello with a newline at {n}");
                    refused += 1;
                }
                Some(_) | None => {
                    assert_eq!(line, "", "random hello without an early newline");
                    silent += 1;
                }
            }
            r.wait_closed();
        }
        if refused > 0 {
            c.wait_log(&["refused with status 501"]);
        }
        if silent > 0 {
            c.wait_log(&["hello line too long: closed"]);
        }
        c.aggregating();

        eprintln!("random hellos: {refused} answered 501, {silent} closed silently");

        // After a handshake.
        let (mut closed, mut size, mut open) = (0, 0, 0);
        for round in 0..20 {
            let len = rng.gen_range(16..4096);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let expect = oracle(&bytes);
            let mut r = c.handshake("fake2");
            r.send(&bytes);
            match expect {
                Some(code) => {
                    r.expect_error_close(code);
                    closed += 1;
                    if code == peers::message::PeerError::SizeLimit {
                        size += 1;
                    }
                }
                // Incomplete message (stickagg waits for the rest) or only
                // skippable ones: nothing to observe but the session.
                None => {
                    open += 1;
                    if round % 4 == 0 {
                        c.aggregating();
                    }
                }
            }
        }
        eprintln!(
            "random messages: {closed} closed ({size} with 01 01), {open} left waiting or skipped"
        );
        assert!(closed > 0, "no random input was a protocol error");
        c.wait_log(&[
            "protocol error from peer 'fake2' of 'data'",
            "session closed",
        ]);
        c.aggregating();
    }

    /// What an accepting `peers::Session` answers to `bytes` right after
    /// a handshake: `Some(error)` if it closes with `01 xx`.
    fn oracle(bytes: &[u8]) -> Option<peers::message::PeerError> {
        use peers::session::{CloseReason, Event, Role, Session, SessionConfig};
        let mut s = Session::new(Role::Accept, SessionConfig::default(), 0);
        s.handle_input(&peers::hello::encode_hello("gpe", "fake2", 1), 0);
        while s.poll_event().is_some() {}
        s.accept(0);
        s.handle_input(bytes, 0);
        while let Some(ev) = s.poll_event() {
            if let Event::Closed(CloseReason::Protocol(e)) = ev {
                return Some(if e.is_size_error() {
                    peers::message::PeerError::SizeLimit
                } else {
                    peers::message::PeerError::Protocol
                });
            }
        }
        None
    }

    /// Message lengths and varints.
    pub fn framing_errors(version: Version, net: Net) {
        use peers::message::PeerError::{Protocol, SizeLimit};
        let c = cluster(version, net, "");

        // A length that does not fit in 5 bytes → `01 00` (as HAProxy).
        let mut r = c.handshake("fake1");
        r.send(&[0x0a, 0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        r.expect_error_close(Protocol);
        c.wait_log(&["message length does not fit in 5 bytes"]);
        c.aggregating();

        // A length above 16 KiB → `01 01`.
        let mut r = c.handshake("fake1");
        let mut m = vec![0x0a, 0x80];
        m.extend(varint(20_000));
        r.send(&m);
        r.expect_error_close(SizeLimit);
        c.wait_log(&["message of 20000 bytes exceeds the 16384-byte limit"]);
        c.aggregating();

        // A varint longer than 10 bytes inside a message → `01 00`.
        let mut r = c.handshake("fake1");
        let mut p = vec![0xff; 11];
        p.extend_from_slice(&[0x00, 0x02, b'/', b'x', 4, 4, 0]);
        r.send(&table_msg(update::MSG_DEFINE, &p));
        r.expect_error_close(Protocol);
        c.wait_log(&["varint longer than 10 bytes in table id"]);
        c.aggregating();

        // Reserved class 255 → `01 00`.
        let mut r = c.handshake("fake1");
        r.send(&[0xff, 0x00]);
        r.expect_error_close(Protocol);
        c.wait_log(&["reserved message class 255"]);
        c.aggregating();
    }

    /// Every stick-table message type, truncated (a length covering bytes
    /// that do not decode) → `01 00`.
    pub fn truncated_messages(version: Version, net: Net) {
        use peers::message::PeerError::Protocol;
        let c = cluster(version, net, "");
        let def = probe_def();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "DEFINE: name reaching the end",
                table_msg(update::MSG_DEFINE, &[7, 6, b'/', b'p', b'r']),
                "truncated table definition after name",
            ),
            (
                "DEFINE: no key type",
                table_msg(update::MSG_DEFINE, &[7, 2, b'/', b'p', 0xf0]),
                "truncated key type",
            ),
            (
                "UPDATE: 3-byte id",
                table_msg(update::MSG_UPDATE, &[0, 0, 1]),
                "truncated update id",
            ),
            (
                "INCREMENTAL UPDATE: 2-byte key",
                table_msg(update::MSG_UPDATE_INCR, &[10, 9]),
                "truncated key",
            ),
            (
                "TIMED UPDATE: 2-byte expire",
                table_msg(update::MSG_UPDATE_TIMED, &[0, 0, 0, 1, 0, 0]),
                "truncated update expire",
            ),
            (
                "TIMED INCREMENTAL UPDATE: no value",
                table_msg(
                    update::MSG_UPDATE_TIMED_INCR,
                    &[0, 0, 0x75, 0x30, 10, 9, 9, 9],
                ),
                "truncated counter",
            ),
            (
                "UPDATE: value varint cut",
                table_msg(update::MSG_UPDATE, &[0, 0, 0, 1, 10, 9, 9, 9, 0xf5]),
                "truncated counter",
            ),
            (
                "SWITCH: table id cut",
                table_msg(update::MSG_SWITCH, &[0xf3]),
                "truncated table id",
            ),
            (
                "ACK: 3-byte update id",
                table_msg(update::MSG_ACK, &[7, 0, 0, 1]),
                "truncated ack update id",
            ),
        ];
        for (what, bytes, log) in cases {
            let mut r = c.handshake("fake3");
            // Updates need a current table to be decoded at all.
            r.send(&define(&def));
            r.send(&bytes);
            r.wait_closed();
            let msgs = r.messages();
            assert_eq!(
                msgs.last(),
                Some(&Msg::Error(Protocol)),
                "{what}: messages before the close: {msgs:?}"
            );
            c.wait_log(&["protocol error from peer 'fake3' of 'data'", log]);
        }
        c.aggregating();
    }

    /// Messages that are ignored or tolerated: the session stays.
    pub fn tolerated_messages(version: Version, net: Net) {
        use peers::message::PeerError::Protocol;
        let c = cluster(version, net, "");

        // An update before any definition: ignored, no error.
        let mut r = c.handshake("fake4");
        r.send(&upd(&probe_def(), 1, &[10, 1, 1, 1], &[Value::U32(5)]));
        still_alive(&mut r, 2);
        c.aggregating();

        // Unknown classes and types (with and without a payload): skipped.
        r.send(&[
            0x02, 0x05, 0x0a, 0x87, 0x02, 0x09, 0x09, 0x00, 0x85, 0x01, 0x07,
        ]);
        still_alive(&mut r, 4);

        // An unknown key type: the table is ignored (logged), the session
        // stays, and updates of that table are dropped.
        let mut p = Vec::new();
        p.extend(varint(9));
        p.extend(varint(4));
        p.extend_from_slice(b"/odd");
        p.extend_from_slice(&[3, 4, 0, 0]);
        r.send(&table_msg(update::MSG_DEFINE, &p));
        r.send(&table_msg(update::MSG_UPDATE, &[0, 0, 0, 1, 1, 2, 3, 4]));
        still_alive(&mut r, 5);
        c.wait_log(&[
            "table /odd from peer 'fake4' of 'data' cannot be decoded",
            "unknown key type 3",
        ]);

        // An unknown data type bit (40) beside http_req_cnt: tolerated, the
        // known value is aggregated and the unknown one skipped.
        let cnt = data_type_by_name("http_req_cnt").unwrap().id as u64;
        let mut p = Vec::new();
        p.extend(varint(11));
        p.extend(varint(7));
        p.extend_from_slice(b"/future");
        p.extend(varint(4));
        p.extend(varint(4));
        p.extend(varint((1 << cnt) | (1 << 40)));
        p.extend(varint(60_000));
        p.extend(varint(40));
        p.extend(varint(12345));
        r.send(&table_msg(update::MSG_DEFINE, &p));
        r.send(&table_msg(
            update::MSG_UPDATE,
            &[0, 0, 0, 5, 10, 4, 4, 4, 42, 0xf0, 0x10],
        ));
        r.wait_ack(11, 5);
        wait_for(BOUND, "/future.agg 10.4.4.4 = 42 on stickagg", || {
            let out = c.sa.cmd("show table /future.agg key 10.4.4.4");
            parse_show_table(&out)
                .first()
                .and_then(|e| e.get_u64("http_req_cnt"))
                .filter(|&v| v == 42)
                .ok_or(out)
        });
        c.aggregating();

        // Dictionary: a reference to an empty slot is ignored; ids 0 and
        // 129 are protocol errors.
        let sess = sess_def();
        r.send(&define(&sess));
        r.send(&sess_update(6, &[1, 5]));
        r.wait_ack(sess.id, 6);
        still_alive(&mut r, 7);
        for (what, dict) in [
            ("define form, id 0", vec![4, 0, 2, b's', b'1']),
            ("define form, id 129", vec![4, 129, 2, b's', b'1']),
            ("reference form, id 0", vec![1, 0]),
            ("reference form, id 129", vec![1, 129]),
        ] {
            let mut r = c.handshake("fake5");
            r.send(&define(&sess));
            r.send(&sess_update(1, &dict));
            r.wait_closed();
            let msgs = r.messages();
            assert_eq!(
                msgs.last(),
                Some(&Msg::Error(Protocol)),
                "{what}: messages before the close: {msgs:?}"
            );
            c.wait_log(&["invalid dictionary id", "is outside 1..=128"]);
        }
        c.aggregating();
    }

    /// 10,000 connections opened and abandoned, from 4 threads, plus 200
    /// held open without a word until the hello timeout closes them.
    pub fn connection_flood(version: Version, net: Net) {
        let c = cluster(version, net, "");
        let pid = c.sa.pid();
        let base = fd_count(pid);
        let agg = c.agg;
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                    let (mut done, mut failed) = (0, 0);
                    while done < 2500 && failed < 100 && !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = TcpStream::connect(agg) else {
                            failed += 1;
                            continue;
                        };
                        match done % 4 {
                            0 => {}
                            1 => {
                                let _ = s.write_all(b"HAProxyS 2.1\ngp");
                            }
                            2 => {
                                let junk: Vec<u8> = (0..64).map(|_| rng.gen()).collect();
                                let _ = s.write_all(&junk);
                            }
                            _ => {
                                let _ =
                                    s.write_all(&peers::hello::encode_hello("gpe", "intruder", 1));
                            }
                        }
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        // The nodes keep aggregating during the flood.
        c.aggregating();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 10_000);
        c.aggregating();

        // 200 silent connections: counted, then closed by the hello timeout.
        let mut idle: Vec<RawPeer> = (0..200).map(|_| RawPeer::connect(agg)).collect();
        wait_for(BOUND, "stickagg to hold the idle connections", || {
            let n = fd_count(pid);
            (n >= base + 200).then_some(()).ok_or(n)
        });
        let peak = fd_count(pid);
        for r in &mut idle {
            assert_eq!(r.status_line(), "", "idle connection closed silently");
        }
        c.wait_log(&["handshake not completed in time: closed"]);
        wait_for(BOUND, "stickagg's fds back near the baseline", || {
            let n = fd_count(pid);
            (n <= base + 10).then_some(()).ok_or(n)
        });
        eprintln!(
            "stickagg fds: {base} before the flood, {peak} with 200 idle, {} after",
            fd_count(pid)
        );
        // Still responsive: the stats socket, a new peer, the nodes.
        assert!(c.sa.cmd("show info").contains("Name: stickagg"));
        let mut r = c.handshake("fake6");
        still_alive(&mut r, 1);
        c.aggregating();
        stop.store(true, Ordering::Relaxed);
    }

    /// A peer that declares the output table, so stickagg pushes to it, and
    /// never reads, while another fake peer feeds 50,000 distinct keys, twelve
    /// times over.
    pub fn slow_reader(version: Version, net: Net) {
        let c = cluster(version, net, "");
        let pid = c.sa.pid();

        // The slow reader: DEFINEs of the input and the output, then only
        // heartbeats (so that it is not closed for silence), never a read.
        let mut slow = c.handshake("fake7");
        slow.s.set_nodelay(true).unwrap();
        slow.send(&define(&rates_def(1, "/request_rates")));
        slow.send(&define(&rates_def(2, "/request_rates.agg")));
        let stop = Arc::new(AtomicBool::new(false));
        let hb = {
            let stop = stop.clone();
            let mut s = slow.s.try_clone().unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = s.write_all(&[0, 4]);
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        };
        wait_for(BOUND, "stickagg to push to the slow reader", || {
            let out = c.sa.cmd("show tables");
            out.contains("fake7").then_some(()).ok_or(out)
        });

        // The feeder reads (drains) in a thread and writes updates.
        let mut feeder = c.handshake("fake8");
        let drain = {
            let stop = stop.clone();
            let mut s = feeder.s.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut buf) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return,
                    }
                }
            })
        };
        let def = rates_def(1, "/request_rates");
        feeder.send(&define(&def));
        const KEYS: u32 = 50_000;
        // 12 rounds of 50,000 updates of ~16 bytes: about 10 MB for the
        // slow reader, more than the kernel's socket buffers hold (4 MiB
        // send buffer on this side, ~128 KiB receive window on the other).
        const ROUNDS: u32 = 12;
        let mut id = 0u32;
        let mut rss = Vec::new();
        for round in 1..=ROUNDS {
            let mut batch = Vec::with_capacity(64 * 1024);
            for k in 0..KEYS {
                id += 1;
                let key = (0x0a00_0000 + k).to_be_bytes();
                batch.extend(upd(&def, id, &key, &[Value::U32(round)]));
                if batch.len() > 60_000 {
                    feeder.send(&batch);
                    batch.clear();
                }
            }
            feeder.send(&batch);
            feeder.send(&[0, 4]);
            // Every key of this round reached the nodes: the last one has
            // the round's value on both.
            let last = std::net::Ipv4Addr::from(0x0a00_0000 + KEYS - 1).to_string();
            for n in &c.nodes {
                wait_for(
                    Duration::from_secs(60),
                    &format!("{last} = {round} on {}", n.name),
                    || {
                        let out = n
                            .haproxy
                            .cmd(&format!("show table mypeers/request_rates.agg key {last}"));
                        parse_show_table(&out)
                            .first()
                            .and_then(|e| e.get_u64("http_req_cnt"))
                            .filter(|&v| v == round as u64)
                            .ok_or(out)
                    },
                );
            }
            // The nodes' own totals keep updating.
            c.aggregating();
            rss.push(rss_kib(pid));
        }
        // The slow reader holds at most its socket buffers and the writer's
        // bounded queue; everything else waits, coalesced, in the engine:
        // memory does not grow with the rounds it missed.
        eprintln!("stickagg RSS after each round (KiB): {rss:?}");
        let (second, last) = (rss[1], rss[rss.len() - 1]);
        assert!(
            last <= second + 32 * 1024,
            "RSS grew from {second} KiB to {last} KiB while the slow reader read nothing"
        );
        assert!(last < 512 * 1024, "RSS {last} KiB for 50,000 keys");
        // It was really held back: it got fewer updates than a node.
        let peers_out = c.sa.cmd("show peers");
        eprintln!("{peers_out}");
        let (slow_out, node_out) = (
            updates_out(&peers_out, "fake7"),
            updates_out(&peers_out, "enterprise1"),
        );
        assert!(
            slow_out < node_out,
            "slow reader got {slow_out} updates, enterprise1 {node_out}"
        );
        // The slow reader is still there (or closed; either way bounded),
        // and a new peer is served.
        let mut r = c.handshake("fake6");
        still_alive(&mut r, 1);
        stop.store(true, Ordering::Relaxed);
        let _ = hb.join();
        drop(feeder);
        let _ = drain.join();
    }

    /// `maxconn 6`: the two nodes' sessions and four more; beyond, new
    /// connections are closed at once (no status), with a log line.
    pub fn maxconn(version: Version, net: Net) {
        let c = cluster(version, net, "    maxconn 6\n");
        let mut fakes: Vec<RawPeer> = (1..=4).map(|i| c.handshake(&format!("fake{i}"))).collect();
        for f in &mut fakes {
            f.send(&[0, 4]);
        }
        let mut r = RawPeer::connect(c.agg);
        r.send(&peers::hello::encode_hello("gpe", "fake5", 1));
        assert_eq!(
            r.status_line(),
            "",
            "the 7th connection is closed without a status"
        );
        c.wait_log(&[
            "connection from",
            "refused: connection limit reached (maxconn 6)",
        ]);
        assert!(c.sa.cmd("show info").contains("Name: stickagg"));
        c.aggregating();
        // One fake leaves: a new peer fits again.
        drop(fakes.pop());
        wait_for(BOUND, "a hello accepted again", || {
            let mut r = RawPeer::connect(c.agg);
            r.send(&peers::hello::encode_hello("gpe", "fake5", 1));
            (r.status_line() == "200").then_some(r)
        });
        c.aggregating();
    }

    /// A peer that defines thousands of tables (each would become an
    /// aggregated table with `from any`): tables beyond `max-tables`
    /// (default 1000, counting the nodes' own) are refused, with a log line
    /// at most once a second; stickagg stays responsive and the nodes keep
    /// aggregating.
    pub fn many_tables(version: Version, net: Net) {
        let c = cluster(version, net, "");
        let pid = c.sa.pid();
        let before = rss_kib(pid);
        let mut r = c.handshake("fake1");
        const TABLES: u64 = 5_000;
        let mut batch = Vec::new();
        for t in 1..=TABLES {
            let def = rates_def(t, &format!("/junk{t}"));
            batch.extend(define(&def));
            batch.extend(upd(&def, 1, &[10, 0, 0, 1], &[Value::U32(1)]));
        }
        r.send(&batch);
        r.wait_ack(TABLES, 1);
        let after = rss_kib(pid);
        eprintln!("RSS before {before} KiB, after {TABLES} tables {after} KiB");
        let tables = c.sa.cmd("show tables");
        // `/request_rates.agg` and 999 of ours.
        assert!(tables.contains("/junk999 -> /junk999.agg"), "{tables}");
        assert!(!tables.contains("/junk1000"), "{tables}");
        assert_eq!(tables.lines().filter(|l| l.contains(" -> ")).count(), 1000);
        c.wait_log(&[
            "table /junk1000 from peer 'fake1' refused: too many tables (max-tables 1000)",
        ]);
        let refusals =
            c.sa.log()
                .lines()
                .filter(|l| l.contains("too many tables"))
                .count();
        assert!(refusals < 100, "{refusals} refusal lines");
        let peers = c.sa.cmd("show peers");
        assert!(
            peers.contains(&format!("refused_tables={}", TABLES - 999)),
            "{peers}"
        );
        c.aggregating();
    }

    /// The peers protocol has no authentication: a client that knows a
    /// node's name replaces that node's session (collision rule, as in
    /// HAProxy). The node reconnects (HAProxy retries within 5 s) and
    /// replaces it in turn; its contributions are kept meanwhile.
    pub fn impersonation(version: Version, net: Net) {
        let c = cluster(version, net, "");
        let mut r = c.handshake("enterprise1");
        c.wait_log(&["peer 'enterprise1' reconnected: replacing its previous session"]);
        // enterprise1 comes back and the impostor's session is closed.
        // (Nothing else is asserted about the impostor's session: it may
        // also end by the 5 s silence rule, as it sends nothing.)
        r.wait_closed();
        wait_for(BOUND, "enterprise1 established again", || {
            let out = c.sa.cmd("show aggrs");
            out.lines()
                .any(|l| l.starts_with("peer 'enterprise1'") && l.contains("state: 0x7"))
                .then_some(())
                .ok_or(out)
        });
        c.aggregating();
    }

    /// With `dynamic-peers`, every new name is kept for the life of the
    /// process: 10,000 distinct names join (and leave), the next new one is
    /// refused with 504, known ones are still accepted.
    pub fn dynamic_names_bounded(version: Version, net: Net) {
        let c = cluster(version, net, "    dynamic-peers\n");
        let pid = c.sa.pid();
        let before = rss_kib(pid);
        let agg = c.agg;
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..2500 {
                        let mut r = RawPeer::connect(agg);
                        r.send(&peers::hello::encode_hello(
                            "gpe",
                            &format!("dyn{t}_{i}"),
                            1,
                        ));
                        let st = r.status_line();
                        assert_eq!(st, "200", "dyn{t}_{i}");
                    }
                })
            })
            .collect();
        c.aggregating();
        for t in threads {
            t.join().unwrap();
        }
        let mut r = RawPeer::connect(agg);
        r.send(&peers::hello::encode_hello("gpe", "one_too_many", 1));
        assert_eq!(r.status_line(), "504");
        c.wait_log(&[
            "dynamic peer 'one_too_many'",
            "(504): it already has 10000 dynamic peers",
        ]);
        let mut r = c.handshake("dyn2_17");
        still_alive(&mut r, 1);
        eprintln!(
            "RSS before {before} KiB, with 10,000 dynamic peers {} KiB",
            rss_kib(pid)
        );
        c.aggregating();
    }
}
