//! The README's demo: three real HAProxy nodes and stickagg on loopback.
//!
//! Clients send requests to different nodes; every node rate-limits a client
//! at 20 requests per 10 s *cluster-wide*, by reading the `.agg` table that
//! stickagg fills. The demo prints each node's local rate beside its `.agg`
//! total, and ends with a client refused (429) by a node it never reached.
//!
//! Run it with `scripts/demo` (installs HAProxy, builds, runs this).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{http_get, stats_cmd, wait_for, Haproxy, HaproxyOpts, Net, Version};

const NET: Net = Net::new(210);
const LIMIT: u64 = 20;

fn node_config(i: u8, agg: SocketAddr) -> String {
    let peers = NET.addr(10 + i, 10000);
    let http = NET.addr(10 + i, 8080);
    format!(
        "{header}
peers mypeers
    bind {peers}
    server enterprise{i}
    server gpe {agg}
    table request_rates type ip size 100k expire 30s store http_req_rate(10s)
    table request_rates.agg type ip size 100k expire 30s store http_req_rate(10s)
frontend fe_main
    bind {http}
    http-request track-sc0 src table mypeers/request_rates
    http-request deny deny_status 429 if {{ sc_http_req_rate(0,mypeers/request_rates.agg) gt {LIMIT} }}
    http-request return status 200
",
        header = testkit::HAPROXY_HEADER
    )
}

fn rate(h: &Haproxy, table: &str, key: &str) -> u64 {
    h.table_entry(table, key)
        .and_then(|e| e.get_u64("http_req_rate"))
        .unwrap_or(0)
}

fn main() -> std::process::ExitCode {
    // Every process is owned by a guard inside `run`, so returning (rather
    // than `process::exit`) kills them all: a leftover HAProxy would share
    // the demo's ports with the next run (HAProxy binds with SO_REUSEPORT).
    if run() {
        println!("\ndemo OK");
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("demo FAILED: expected 429 then 200");
        std::process::ExitCode::FAILURE
    }
}

/// Kills stickagg when dropped, even if the demo panics.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run() -> bool {
    let version = if testkit::haproxy_binary(Version::V30).is_some() {
        Version::V30
    } else {
        Version::V26
    };
    let dir = testkit::temp_dir();
    let agg = NET.addr(2, 10000);
    let sock = dir.path().join("stickagg.sock");
    let cfg = dir.path().join("stickagg.cfg");
    let mut conf = format!(
        "global\n    stats socket {}\n\naggregations data\n    from any to .agg\n    peer gpe {agg} local\n",
        sock.display()
    );
    for i in 1..=3u8 {
        conf.push_str(&format!(
            "    peer enterprise{i} {}\n",
            NET.addr(10 + i, 10000)
        ));
    }
    std::fs::write(&cfg, &conf).unwrap();
    println!("stickagg configuration ({}):\n{conf}", cfg.display());

    let exe: PathBuf = std::env::var_os("STICKAGG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let me = std::env::current_exe().unwrap();
            me.parent().unwrap().parent().unwrap().join("stickagg")
        });
    let log = std::fs::File::create(dir.path().join("stickagg.log")).unwrap();
    let _stickagg = Guard(
        Command::new(&exe)
            .args(["-f".as_ref(), cfg.as_os_str()])
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display())),
    );
    wait_for(Duration::from_secs(10), "stickagg's stats socket", || {
        stats_cmd(&sock, "help").ok()
    });

    println!("starting 3 HAProxy {version} nodes ...");
    let nodes: Vec<Haproxy> = (1..=3u8)
        .map(|i| {
            Haproxy::start(
                version,
                &HaproxyOpts::new(format!("enterprise{i}"), node_config(i, agg)),
            )
        })
        .collect();
    wait_for(Duration::from_secs(10), "3 peers connected", || {
        let out = stats_cmd(&sock, "show aggrs").unwrap_or_default();
        (out.matches("state: 0x7").count() == 3).then_some(())
    });
    println!("{}", stats_cmd(&sock, "show aggrs").unwrap());

    // Two clients spread their requests over nodes 1 and 2 only.
    let http = |i: usize| NET.addr(11 + i as u8, 8080);
    let clients: [IpAddr; 2] = [NET.ip(50), NET.ip(51)];
    let plan = [(0usize, 0usize, 12u32), (0, 1, 12), (1, 0, 5), (1, 1, 4)];
    let total: u32 = plan.iter().map(|p| p.2).sum();
    let start = Instant::now();
    let (mut sent, mut refused) = (0, 0);
    for &(c, n, count) in &plan {
        for _ in 0..count {
            match http_get(http(n), clients[c], "/") {
                Ok(429) => refused += 1,
                Ok(_) => {}
                Err(e) => eprintln!(
                    "\nrequest from {} to enterprise{} failed: {e}",
                    clients[c],
                    n + 1
                ),
            }
            sent += 1;
            print!(
                "\rtraffic: {sent}/{total} requests sent, {refused} refused with 429 ({:.1} s)",
                start.elapsed().as_secs_f64()
            );
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    println!();
    std::thread::sleep(Duration::from_millis(300));

    println!(
        "\n{:<14} {:<12} {:>18} {:>22}",
        "client", "node", "local http_req_rate", ".agg http_req_rate"
    );
    for c in &clients {
        let key = c.to_string();
        for (i, h) in nodes.iter().enumerate() {
            println!(
                "{:<14} {:<12} {:>18} {:>22}",
                key,
                format!("enterprise{}", i + 1),
                rate(h, "mypeers/request_rates", &key),
                rate(h, "mypeers/request_rates.agg", &key)
            );
        }
    }
    let key = clients[0].to_string();
    let agg_total = rate(&nodes[2], "mypeers/request_rates.agg", &key);
    let status = http_get(http(2), clients[0], "/").unwrap();
    println!(
        "\nclient {key} sent 24 requests to enterprise1 and enterprise2 only; enterprise3 sees a cluster rate of {agg_total} (limit {LIMIT})"
    );
    println!("client {key} -> enterprise3 (never reached before): HTTP {status}");
    let status2 = http_get(http(2), clients[1], "/").unwrap();
    println!(
        "client {} (9 requests in the cluster) -> enterprise3: HTTP {status2}",
        clients[1]
    );
    status == 429 && status2 == 200
}
