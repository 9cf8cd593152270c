//! Live interoperability with real HAProxy 2.6 and 3.0: a test peer built on
//! the crate's [`Session`] (std::net, one thread, short read timeouts, the
//! session's timer driven between reads) talks to a running HAProxy.
//!
//! Per version, on its own loopback net (2.6: 127.0.2.x, 3.0: 127.0.3.x):
//!
//! 1. HAProxy (peer `hap`) gets a few HTTP requests, so one of its tables has
//!    entries; then our peer `agg` connects, answers HAProxy's own resync
//!    request (`00 00`) with `00 01`, sends `00 00`, and decodes the whole
//!    teach, which must equal `show table`;
//! 2. we push updates (counters, a 64-bit counter, a rate, a `gpt` array,
//!    `server_id`, `server_key` in both dictionary forms) into a table HAProxy
//!    declares, using the DEFINE HAProxy itself sent; HAProxy must ACK our
//!    last update id, and `show table` must show exactly what we sent (the
//!    rate within ±1 of [`FreqCtr::read_after`] the time since sending);
//! 3. we stay connected for more than 6 s with nothing to say: only the
//!    heartbeats that [`Session`]'s timer produces keep HAProxy (which kills
//!    a silent peer after 5 s) from closing the session; HAProxy's own
//!    heartbeats arrive; and a last update is still ACKed on the same
//!    connection.
//!
//! Topology choice: HAProxy needs an address for every remote peer and
//! connects out to it. Our peer `agg` is given an address on which nothing
//! listens (127.0.N.2:10001), so HAProxy's outgoing attempts are refused and
//! the session we open is the only one; HAProxy never opens a second session
//! to a peer that already has one, so no collision can happen.

use peers::{Event, FreqCtr, Role, Session, SessionConfig, TableDef, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::{http_get, require_haproxy, Haproxy, HaproxyOpts, Net, TableEntry, Version};

const PEERS_PORT: u16 = 10000;
const HTTP_PORT: u16 = 8080;

fn config(net: Net) -> String {
    let hap = net.ip(1);
    let agg = net.ip(2);
    format!(
        "global
    stats socket {{sock}} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

peers lp
    peer {{name}} {hap}:{PEERS_PORT}
    # Nothing listens there: see the module documentation.
    peer agg {agg}:10001
    table src type ip size 1k expire 60s store http_req_cnt,http_req_rate(10s),gpc(2),gpt(2)
    table push type string len 16 size 1k expire 60s store server_id,gpt(3),gpc0,http_req_cnt,bytes_out_cnt,http_req_rate(10s),server_key

frontend fe
    bind {hap}:{HTTP_PORT}
    http-request track-sc0 src table lp/src
    http-request sc-inc-gpc(1,0)
    http-request sc-set-gpt(0,0) 4
    http-request return status 200
"
    )
}

/// Our test peer: a [`Session`] over a blocking socket with a short read
/// timeout, its timer driven between reads.
struct Peer {
    sock: TcpStream,
    session: Session,
    t0: Instant,
    /// Every event with the ms (since connect) at which it was produced.
    events: Vec<(u64, Event)>,
}

impl Peer {
    fn connect(addr: std::net::SocketAddr) -> Peer {
        let t0 = Instant::now();
        let sock = TcpStream::connect(addr).expect("connect to HAProxy's peers port");
        sock.set_nodelay(true).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let role = Role::Connect {
            // HAProxy's own name for itself is the callee, never the caller.
            callee: "hap".into(),
            caller: "agg".into(),
            pid: std::process::id(),
        };
        Peer {
            sock,
            session: Session::new(role, SessionConfig::default(), 0),
            t0,
            events: Vec::new(),
        }
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn flush(&mut self) {
        while let Some(bytes) = self.session.transmit() {
            self.sock.write_all(&bytes).expect("write to HAProxy");
        }
    }

    fn step(&mut self) {
        self.flush();
        let mut buf = [0u8; 65536];
        match self.sock.read(&mut buf) {
            Ok(0) => panic!("HAProxy closed the session; events: {:#?}", self.events),
            Ok(n) => {
                let now = self.now();
                self.session.handle_input(&buf[..n], now);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read from HAProxy: {e}; events: {:#?}", self.events),
        }
        let now = self.now();
        if self.session.poll_timeout().is_some_and(|t| now >= t) {
            self.session.handle_timeout(now);
        }
        self.flush();
        while let Some(ev) = self.session.poll_event() {
            if let Event::Closed(reason) = &ev {
                panic!("session closed: {reason:?}; events: {:#?}", self.events);
            }
            self.events.push((now, ev));
        }
    }

    /// Steps until an event produced after index `from` matches, or panics.
    fn wait_for(
        &mut self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Event) -> bool,
    ) {
        let end = Instant::now() + timeout;
        while !self.events[from..].iter().any(|(_, e)| pred(e)) {
            assert!(
                Instant::now() < end,
                "timed out after {timeout:?} waiting for {what}; events: {:#?}",
                self.events
            );
            self.step();
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.step();
        }
    }

    /// The last DEFINE HAProxy sent for `name`.
    fn def(&self, name: &str) -> Arc<TableDef> {
        self.events
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                Event::TableDefined { def, .. } if def.name == name => Some(def.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("HAProxy never defined {name}"))
    }
}

/// Element `i` of `col` as `show table` names it (`gpc_rate` → `gpc1_rate`).
fn element_name(col: &peers::Column, i: u32) -> String {
    if !col.ty.params.is_array() {
        return col.ty.name.to_string();
    }
    match col.ty.name.split_once('_') {
        Some((a, b)) => format!("{a}{i}_{b}"),
        None => format!("{}{i}", col.ty.name),
    }
}

/// Asserts that `entry` shows `values` (in `def`'s column order). HAProxy
/// read the rates between `since.0` and `since.1` ms after the triple was
/// current (the span of the `show table` call); with no new events a rate
/// only decreases, so the value shown must lie between the two reads, ±1.
fn assert_shows(
    ctx: &str,
    def: &TableDef,
    values: &[Value],
    entry: &TableEntry,
    since: (i64, i64),
) {
    assert_eq!(values.len(), def.value_count(), "{ctx}");
    let mut values = values.iter();
    for col in &def.columns {
        for i in 0..col.nbelem {
            let name = element_name(col, i);
            let shown = entry
                .get(&name)
                .unwrap_or_else(|| panic!("{ctx}: no {name} in {entry:?}"));
            match values.next().unwrap() {
                Value::ServerId(n) => assert_eq!(shown, n.to_string(), "{ctx}: {name}"),
                Value::U32(n) => assert_eq!(shown, n.to_string(), "{ctx}: {name}"),
                Value::U64(n) => assert_eq!(shown, n.to_string(), "{ctx}: {name}"),
                Value::Freq(f) => {
                    let hi = f.read_after(since.0, col.period) as i64;
                    let lo = f.read_after(since.1, col.period) as i64;
                    let got: i64 = shown.parse().unwrap();
                    assert!(
                        lo - 1 <= got && got <= hi + 1,
                        "{ctx}: {name} shows {got}; {f:?} read {since:?} ms later gives {hi}..{lo}"
                    );
                }
                Value::Dict(Some(s)) => assert_eq!(shown.as_bytes(), &s[..], "{ctx}: {name}"),
                Value::Dict(None) => assert_eq!(shown, "-", "{ctx}: {name}"),
                Value::DictUnknown => panic!("{ctx}: {name} references an unknown slot"),
            }
        }
    }
}

/// Milliseconds from `a` to `b`.
fn ms(a: Instant, b: Instant) -> i64 {
    b.duration_since(a).as_millis() as i64
}

/// Values for every column of the `push` table, chosen by column name so the
/// order is whatever HAProxy's DEFINE says.
fn push_values(
    def: &TableDef,
    server_id: i32,
    server_key: &str,
    gpt: [u32; 3],
    cnt: u32,
) -> Vec<Value> {
    let mut v = Vec::new();
    for col in &def.columns {
        match col.ty.name {
            "server_id" => v.push(Value::ServerId(server_id)),
            "gpt" => v.extend(gpt.iter().map(|&g| Value::U32(g))),
            "gpc0" => v.push(Value::U32(cnt)),
            "http_req_cnt" => v.push(Value::U32(cnt * 10)),
            // Above 2^32: 64-bit counters must survive.
            "bytes_out_cnt" => v.push(Value::U64(5_000_000_000 + cnt as u64)),
            "http_req_rate" => v.push(Value::Freq(FreqCtr {
                elapsed: 1500,
                curr: 7,
                prev: 20 + cnt,
            })),
            "server_key" => v.push(Value::dict(server_key.to_string())),
            other => panic!("unexpected column {other} in {def:?}"),
        }
    }
    v
}

fn interop(version: Version, net: Net) {
    if require_haproxy(version).is_none() {
        return;
    }
    let started = Instant::now();
    let hap = Haproxy::start(version, &HaproxyOpts::new("hap", config(net)));
    let clients: [IpAddr; 2] = [net.ip(50), net.ip(51)];
    for (c, n) in [(clients[0], 3), (clients[1], 1)] {
        for _ in 0..n {
            assert_eq!(http_get(net.addr(1, HTTP_PORT), c, "/").unwrap(), 200);
        }
    }

    // 1. Handshake, HAProxy's resync request, our resync request, the teach.
    let mut p = Peer::connect(net.addr(1, PEERS_PORT));
    p.wait_for(0, Duration::from_secs(5), "200", |e| {
        matches!(e, Event::Established { minor: 1 })
    });
    // HAProxy asks the first peer that comes up to teach it, and pushes
    // nothing to it until it has answered.
    p.wait_for(0, Duration::from_secs(2), "HAProxy's 00 00", |e| {
        *e == Event::ResyncRequest
    });
    let now = p.now();
    p.session.send_resync_end(false, now);
    let now = p.now();
    p.session.send_resync_request(now);
    let from = p.events.len();
    p.wait_for(from, Duration::from_secs(5), "the end of the teach", |e| {
        *e == Event::ResyncFinished
    });
    let src = p.def("/src");
    let push = p.def("/push"); // empty, but announced during a teach
    assert_eq!((src.key_type.name(), src.key_len), ("ip", 4));
    assert_eq!((push.key_type.name(), push.key_len), ("string", 17));
    // HAProxy re-sends after our CONFIRM; let it settle, then compare the
    // last state received for each client with `show table`.
    p.run_for(Duration::from_millis(300));
    let before = p.now();
    let shown = hap.show_table("lp/src");
    let after = p.now();
    assert_eq!(shown.len(), 2, "{shown:?}");
    for entry in &shown {
        let (at, update) = p
            .events
            .iter()
            .rev()
            .find_map(|(at, e)| match e {
                Event::Update { remote_id, update }
                    if *remote_id == src.id
                        && IpAddr::from(<[u8; 4]>::try_from(&update.key[..]).unwrap())
                            .to_string()
                            == entry.key =>
                {
                    Some((*at, update.clone()))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{version}: {} never received", entry.key));
        let ctx = format!("{version} lp/src {}", entry.key);
        assert_shows(
            &ctx,
            &src,
            &update.values,
            entry,
            (before as i64 - at as i64, after as i64 - at as i64),
        );
        let reqs = if entry.key == clients[0].to_string() {
            3
        } else {
            1
        };
        assert_eq!(entry.get_u64("http_req_cnt"), Some(reqs), "{ctx}");
        assert_eq!(entry.get_array_u64("gpc"), vec![0, reqs], "{ctx}");
        assert_eq!(entry.get_array_u64("gpt"), vec![4, 0], "{ctx}");
    }

    // 2. Our updates into HAProxy's `push` table, with HAProxy's own DEFINE.
    let ours = Arc::new(TableDef {
        id: 7,
        ..(*push).clone()
    });
    p.session.declare_table(ours.clone());
    let pushed: Vec<(&str, Vec<Value>)> = vec![
        ("alpha", push_values(&ours, 2, "srv-b", [1, 0, 9], 42)),
        // Same server_key again: sent as a dictionary reference.
        ("beta", push_values(&ours, 2, "srv-b", [0, 5, 0], 43)),
        ("gamma", push_values(&ours, 3, "srv-c", [7, 7, 7], 44)),
    ];
    let mut sent = Vec::new();
    let mut last_id = 0;
    for (key, values) in &pushed {
        let now = p.now();
        last_id = p
            .session
            .send_update(7, key.as_bytes(), values, None, now)
            .expect("encode our update");
        sent.push(Instant::now());
    }
    let from = p.events.len();
    p.wait_for(
        from,
        Duration::from_secs(5),
        "HAProxy's ACK of our last update",
        |e| {
            *e == Event::Ack {
                table_id: 7,
                update_id: last_id,
            }
        },
    );
    let before = Instant::now();
    let shown = hap.show_table("lp/push");
    let after = Instant::now();
    for ((key, values), &at) in pushed.iter().zip(&sent) {
        let since = (ms(at, before), ms(at, after));
        let entry = shown
            .iter()
            .find(|e| e.key == *key)
            .unwrap_or_else(|| panic!("{version}: {key} not in {shown:?}"));
        assert_shows(
            &format!("{version} lp/push {key}"),
            &ours,
            values,
            entry,
            since,
        );
    }
    let alpha = shown.iter().find(|e| e.key == "alpha").unwrap();
    assert_eq!(alpha.get_array_u64("gpt"), vec![1, 0, 9]);
    assert_eq!(alpha.get("server_id"), Some("2"));
    assert_eq!(alpha.get("server_key"), Some("srv-b"));
    assert_eq!(alpha.get_u64("bytes_out_cnt"), Some(5_000_000_042));
    assert_eq!(
        shown
            .iter()
            .find(|e| e.key == "beta")
            .unwrap()
            .get("server_key"),
        Some("srv-b")
    );

    // 3. Idle for more than 6 s: only our heartbeats keep the session open.
    let idle_from = p.events.len();
    let idle = Instant::now();
    let our_heartbeats = p.session.stats().heartbeats_out;
    p.run_for(Duration::from_millis(6_500));
    let heartbeats = p.events[idle_from..]
        .iter()
        .filter(|(_, e)| *e == Event::Heartbeat)
        .count();
    assert!(
        heartbeats >= 1,
        "{version}: no heartbeat from HAProxy in {:?}",
        idle.elapsed()
    );
    // One every 2 s: at least two in 6.5 s even on a loaded machine.
    assert!(
        p.session.stats().heartbeats_out >= our_heartbeats + 2,
        "{:?}",
        p.session.stats()
    );
    let peers = hap.cmd("show peers");
    assert!(
        peers
            .lines()
            .any(|l| l.contains("id=agg(") && l.contains("last_status=ESTA")),
        "{version}: {peers}"
    );
    // Still the same, working session: one more update is ACKed.
    let values = push_values(&ours, 4, "srv-b", [3, 2, 1], 45);
    let now = p.now();
    let id = p
        .session
        .send_update(7, b"delta", &values, None, now)
        .unwrap();
    let sent_at = Instant::now();
    let from = p.events.len();
    p.wait_for(from, Duration::from_secs(5), "the ACK after idling", |e| {
        *e == Event::Ack {
            table_id: 7,
            update_id: id,
        }
    });
    let before = Instant::now();
    let entry = hap.table_entry("lp/push", "delta").expect("delta shown");
    let since = (ms(sent_at, before), ms(sent_at, Instant::now()));
    assert_shows(
        &format!("{version} lp/push delta"),
        &ours,
        &values,
        &entry,
        since,
    );
    eprintln!("{version}: live interop took {:?}", started.elapsed());
}

#[test]
fn live_interop_haproxy_26() {
    interop(Version::V26, Net::new(2));
}

#[test]
fn live_interop_haproxy_30() {
    interop(Version::V30, Net::new(3));
}
