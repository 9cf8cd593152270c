//! Captures what a real HAProxy sends to a peer, for the golden fixtures that
//! `tests/fixtures.rs` decodes. Run by `tests/fixtures/recapture.sh`, which
//! starts HAProxy with the stored config and generates the HTTP traffic.
//!
//! ```text
//! capture --connect ADDR --callee NAME --caller NAME --stats SOCKET
//!         --table NAME [--table NAME]... [--live-cmd CMD] [--push NETNAME]
//!         --out DIR
//! ```
//!
//! What it does, with nothing but `std::net` and the crate's [`Session`]:
//!
//! 1. connects to HAProxy's peers listener as `--caller`, calling it
//!    `--callee` (never HAProxy's own name for itself as the caller);
//! 2. answers HAProxy's own resync request (`00 00`) with `00 01`;
//! 3. sends `00 00` and reads the whole teach (DEFINEs, timed updates,
//!    `00 01`), which the session CONFIRMs;
//! 4. runs `--live-cmd` (more HTTP requests) and records the live updates
//!    HAProxy pushes, then idles until HAProxy sends a heartbeat;
//! 5. pushes three updates of its own into the table HAProxy announced as
//!    `--push` and waits for HAProxy's ACK of the last one;
//! 6. stops reading and runs `show table` for every `--table`.
//!
//! It writes into `--out`: `stream.bin` (every byte HAProxy sent after the
//! status line), `sent.bin` (every byte we sent, hello included),
//! `show-table.txt` (the `show table` answers, concatenated) and `meta.txt`
//! (when each chunk of `stream.bin` arrived and when each `show table` was
//! sent, in ms since the TCP connect, so that rates can be read back exactly).

use peers::message::{self, Frame};
use peers::{Event, KeyType, Role, Session, SessionConfig, Storage, TableDef, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    connect: SocketAddr,
    callee: String,
    caller: String,
    stats: PathBuf,
    tables: Vec<String>,
    live_cmd: Option<String>,
    push: Option<String>,
    out: PathBuf,
}

fn usage() -> ! {
    eprintln!(
        "usage: capture --connect ADDR --callee NAME --caller NAME --stats SOCKET \
         --table NAME... [--live-cmd CMD] [--push NETNAME] --out DIR"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let (mut connect, mut callee, mut caller, mut stats, mut out) = (None, None, None, None, None);
    let (mut tables, mut live_cmd, mut push) = (Vec::new(), None, None);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--connect" => connect = Some(val().parse().unwrap_or_else(|_| usage())),
            "--callee" => callee = Some(val()),
            "--caller" => caller = Some(val()),
            "--stats" => stats = Some(PathBuf::from(val())),
            "--table" => tables.push(val()),
            "--live-cmd" => live_cmd = Some(val()),
            "--push" => push = Some(val()),
            "--out" => out = Some(PathBuf::from(val())),
            _ => usage(),
        }
    }
    match (connect, callee, caller, stats, out) {
        (Some(connect), Some(callee), Some(caller), Some(stats), Some(out)) => Args {
            connect,
            callee,
            caller,
            stats,
            tables,
            live_cmd,
            push,
            out,
        },
        _ => usage(),
    }
}

/// One peer session over a blocking socket with a short read timeout; the
/// session's timer (heartbeats) is driven between reads.
struct Peer {
    sock: TcpStream,
    session: Session,
    t0: Instant,
    /// Everything received, status line included, and where each read began.
    rx: Vec<u8>,
    rx_chunks: Vec<(usize, u64)>,
    tx: Vec<u8>,
    events: Vec<(u64, Event)>,
}

impl Peer {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn flush(&mut self) {
        while let Some(bytes) = self.session.transmit() {
            self.sock.write_all(&bytes).expect("write to HAProxy");
            self.tx.extend_from_slice(&bytes);
        }
    }

    /// One read (up to the socket's read timeout), then timers and events.
    fn step(&mut self) {
        self.flush();
        let mut buf = [0u8; 65536];
        match self.sock.read(&mut buf) {
            Ok(0) => panic!("HAProxy closed the connection; events: {:#?}", self.events),
            Ok(n) => {
                let now = self.now();
                self.rx_chunks.push((self.rx.len(), now));
                self.rx.extend_from_slice(&buf[..n]);
                self.session.handle_input(&buf[..n], now);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read from HAProxy: {e}"),
        }
        let now = self.now();
        if self.session.poll_timeout().is_some_and(|t| now >= t) {
            self.session.handle_timeout(now);
        }
        self.flush();
        while let Some(ev) = self.session.poll_event() {
            if let Event::Closed(reason) = &ev {
                panic!("session closed: {reason:?}");
            }
            self.events.push((now, ev));
        }
    }

    /// Steps until an event at index ≥ `from` satisfies `pred`.
    fn run_until(&mut self, from: usize, timeout: Duration, pred: impl Fn(&Event) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.events[from.min(self.events.len())..]
                .iter()
                .any(|(_, e)| pred(e))
            {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            self.step();
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.step();
        }
    }
}

fn stats_cmd(path: &Path, cmd: &str) -> String {
    let mut s = UnixStream::connect(path).expect("connect to the stats socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the stats socket");
    out
}

/// A key of `def`'s type for our own pushed entry `i`.
fn our_key(def: &TableDef, i: u8) -> Vec<u8> {
    match def.key_type {
        KeyType::Integer => (9001 + i as u32).to_be_bytes().to_vec(),
        KeyType::Ipv4 => vec![127, 0, 1, 200 + i],
        KeyType::Ipv6 => std::net::Ipv4Addr::new(127, 0, 1, 200 + i)
            .to_ipv6_mapped()
            .octets()
            .to_vec(),
        KeyType::String | KeyType::Binary => format!("agg{i}").into_bytes(),
    }
}

/// Values for every column of `def` for our pushed entry `i`.
fn our_values(def: &TableDef, i: u8) -> Vec<Value> {
    let i = i as u32;
    let mut vals = Vec::new();
    for (c, col) in def.columns.iter().enumerate() {
        for e in 0..col.nbelem {
            let n = 1000 + 100 * i + 10 * c as u32 + e;
            vals.push(match col.ty.storage {
                Storage::SignedInt => Value::ServerId(i as i32 + 1),
                Storage::UnsignedInt => Value::U32(n),
                // Above 2^32, to show 64-bit counters survive.
                Storage::UnsignedLong => Value::U64(5_000_000_000 + n as u64),
                Storage::FreqCtr => Value::Freq(peers::FreqCtr {
                    elapsed: 0,
                    curr: n,
                    prev: 0,
                }),
                Storage::Dict => Value::dict(format!("s{}", i % 2 + 1)),
            });
        }
    }
    vals
}

fn main() {
    let args = parse_args();
    let t0 = Instant::now();
    let sock = TcpStream::connect(args.connect).expect("connect to HAProxy's peers port");
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let role = Role::Connect {
        callee: args.callee.clone(),
        caller: args.caller.clone(),
        pid: std::process::id(),
    };
    let mut p = Peer {
        sock,
        session: Session::new(role, SessionConfig::default(), 0),
        t0,
        rx: Vec::new(),
        rx_chunks: Vec::new(),
        tx: Vec::new(),
        events: Vec::new(),
    };
    let mut meta = String::new();

    assert!(
        p.run_until(0, Duration::from_secs(5), |e| matches!(
            e,
            Event::Established { .. }
        )),
        "no 200 from HAProxy"
    );
    // HAProxy asks its first established peer to teach it, at once. It pushes
    // nothing to a peer it is learning from, so answer before anything else.
    if p.run_until(0, Duration::from_secs(1), |e| *e == Event::ResyncRequest) {
        let now = p.now();
        p.session.send_resync_end(false, now);
        eprintln!("capture: answered HAProxy's resync request");
    } else {
        eprintln!("capture: HAProxy sent no resync request (resync period over?)");
    }
    let now = p.now();
    p.session.send_resync_request(now);
    let from = p.events.len();
    assert!(
        p.run_until(from, Duration::from_secs(10), |e| *e
            == Event::ResyncFinished),
        "teach did not finish"
    );
    let _ = writeln!(meta, "teach_finished {}", p.now());

    if let Some(cmd) = &args.live_cmd {
        let start = p.now();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .spawn()
            .expect("live-cmd");
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "live-cmd failed: {st}");
                break;
            }
            assert!(Instant::now() < end, "live-cmd takes too long");
            p.step();
        }
        let _ = writeln!(meta, "live_cmd {start} {}", p.now());
        p.run_for(Duration::from_millis(300));
    }
    // HAProxy heartbeats after 3 s without sending updates.
    let from = p.events.len();
    if !p.run_until(from, Duration::from_secs(5), |e| *e == Event::Heartbeat) {
        eprintln!("capture: no heartbeat from HAProxy within 5 s");
    }

    if let Some(name) = &args.push {
        let theirs = p
            .events
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                Event::TableDefined { def, .. } if def.name == *name => Some(def.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("HAProxy never announced {name}"));
        // Our DEFINE must match HAProxy's table exactly: reuse what it sent.
        let ours = Arc::new(TableDef {
            id: 1,
            ..(*theirs).clone()
        });
        p.session.declare_table(ours.clone());
        let mut last = 0;
        for i in 0..3 {
            let now = p.now();
            let id = p
                .session
                .send_update(1, &our_key(&ours, i), &our_values(&ours, i), None, now)
                .expect("encode our update");
            let _ = writeln!(meta, "push {name} {id} {now}");
            last = id;
        }
        let from = p.events.len();
        assert!(
            p.run_until(from, Duration::from_secs(5), |e| *e
                == Event::Ack {
                    table_id: 1,
                    update_id: last
                }),
            "HAProxy did not ACK our update {last}"
        );
        let _ = writeln!(meta, "acked 1 {last} {}", p.now());
    }
    p.run_for(Duration::from_millis(200));

    // Stop reading here: the tables are dumped as of the last byte recorded.
    let mut show = String::new();
    for t in &args.tables {
        let _ = writeln!(meta, "show {t} {}", p.now());
        let answer = stats_cmd(&args.stats, &format!("show table {t}"));
        assert!(answer.starts_with("# table:"), "show table {t}: {answer}");
        show.push_str(&answer);
    }
    let info = stats_cmd(&args.stats, "show info");
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap_or("?")
        .to_string();

    // stream.bin: everything after the status line.
    let nl = p.rx.iter().position(|&b| b == b'\n').expect("status line") + 1;
    assert_eq!(&p.rx[..nl], b"200\n");
    let stream = &p.rx[nl..];
    let mut chunks = String::new();
    for (i, &(off, ms)) in p.rx_chunks.iter().enumerate() {
        let end = p.rx_chunks.get(i + 1).map_or(p.rx.len(), |c| c.0);
        // Reads holding only (part of) the status line are not in stream.bin;
        // the one that holds its end starts the stream.
        if end > nl {
            let _ = writeln!(chunks, "chunk {} {ms}", off.saturating_sub(nl));
        }
    }
    let header = format!(
        "# Written by examples/capture.rs. Times: ms since the TCP connect.\n\
         # chunk <offset in stream.bin> <ms when that read() returned>\n\
         # show <table> <ms when `show table` was sent>\n\
         haproxy {version}\ncallee {}\ncaller {}\n",
        args.callee, args.caller
    );
    std::fs::create_dir_all(&args.out).unwrap();
    std::fs::write(args.out.join("stream.bin"), stream).unwrap();
    std::fs::write(args.out.join("sent.bin"), &p.tx).unwrap();
    std::fs::write(args.out.join("show-table.txt"), &show).unwrap();
    std::fs::write(args.out.join("meta.txt"), header + &chunks + &meta).unwrap();

    // A summary for the README: message types and what the tables hold.
    let mut types: BTreeMap<(u8, u8), usize> = BTreeMap::new();
    let mut buf = stream;
    while let Ok(Some((frame, used))) = message::next_frame(buf, usize::MAX, 0) {
        let key = match frame {
            Frame::Control(c) => (0, c as u8),
            Frame::Error(e) => (1, e as u8),
            Frame::Table { ty, .. } => (10, ty),
            Frame::Skipped { class, ty } => (class, ty),
        };
        *types.entry(key).or_default() += 1;
        buf = &buf[used..];
    }
    println!(
        "HAProxy {version}: {} bytes after the status line",
        stream.len()
    );
    for ((c, t), n) in types {
        println!("  {c:02X} {t:02X}: {n}");
    }
    let mut seen = std::collections::BTreeSet::new();
    for (_, e) in &p.events {
        if let Event::TableDefined { def, .. } = e {
            if !seen.insert(def.name.clone()) {
                continue;
            }
            let cols: Vec<String> = def.columns.iter().map(|c| c.display_name()).collect();
            println!(
                "  table {} {:?} len {}: {}",
                def.name,
                def.key_type,
                def.key_len,
                cols.join(",")
            );
        }
    }
}
