//! Proves the harness against real HAProxy 2.6 and 3.0: start a process,
//! send traffic from a chosen client address, read the stick table back,
//! restart, and route to a real backend server with session persistence.
//!
//! Net 251 is reserved for testkit's own tests (see `testkit::Net`); each
//! version gets its own listener host so both tests run in parallel.

use std::time::Duration;

use testkit::{
    http_get, http_get_body, require_haproxy, wait_for, Haproxy, HaproxyOpts, HttpBackend, Net,
    Version,
};

const NET: Net = Net::new(251);
/// The test client: its address is the stick-table key.
const CLIENT: u8 = 50;

fn config(listen_host: u8, backend_host: u8) -> String {
    let fe = NET.addr(listen_host, 8080);
    let fe_sticky = NET.addr(listen_host, 8081);
    let server = NET.addr(backend_host, 8000);
    format!(
        "global
    stats socket {{sock}} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

peers mypeers
    server {{name}}
    table t type ip size 1k expire 30s store http_req_cnt,http_req_rate(10s),gpc0
    table p type ip size 1k expire 30s store server_id,server_key

frontend fe
    bind {fe}
    http-request track-sc0 src table mypeers/t
    http-request return status 200

frontend fe_sticky
    bind {fe_sticky}
    default_backend be

backend be
    stick on src table mypeers/p
    server s1 {server}
"
    )
}

fn smoke(version: Version, listen_host: u8, backend_host: u8) {
    if require_haproxy(version).is_none() {
        return;
    }
    let backend = HttpBackend::start(NET.addr(backend_host, 8000), "s1").unwrap();
    let mut haproxy = Haproxy::start(
        version,
        &HaproxyOpts::new("hap1", config(listen_host, backend_host)),
    );
    let fe = NET.addr(listen_host, 8080);
    let client = NET.ip(CLIENT);

    for _ in 0..3 {
        assert_eq!(http_get(fe, client, "/").unwrap(), 200);
    }
    let entries = haproxy.show_table("mypeers/t");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry.key, client.to_string());
    assert_eq!(entry.get_u64("http_req_cnt"), Some(3), "{entry:?}");
    assert_eq!(entry.get_u64("http_req_rate"), Some(3), "{entry:?}");
    assert_eq!(entry.period_ms("http_req_rate"), Some(10_000));
    assert_eq!(entry.get_u64("gpc0"), Some(0));
    // `exp` counts down from the table's 30 s, but 3.0 was seen printing
    // exp=30001: each thread has its own `now_ms`, and the thread answering
    // the CLI may lag the one that refreshed the entry by a millisecond.
    assert!(
        entry.exp.is_some_and(|ms| ms > 20_000 && ms <= 31_000),
        "{entry:?}"
    );
    assert_eq!(entry.shard.is_some(), version == Version::V30, "{entry:?}");

    // Session persistence through a real backend server.
    let (status, body) = http_get_body(NET.addr(listen_host, 8081), client, "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "s1"));
    assert_eq!(backend.hits(), 1);
    let sticky = wait_for(
        Duration::from_secs(5),
        "the stick entry of the client",
        || haproxy.table_entry("mypeers/p", &client.to_string()),
    );
    assert_eq!(sticky.get_u64("server_id"), Some(1), "{sticky:?}");
    assert_eq!(sticky.get("server_key"), Some("s1"), "{sticky:?}");

    // The process is ours, it can be restarted, and it starts empty.
    let old_pid = haproxy.pid();
    assert!(haproxy
        .cmd("show info")
        .contains(&format!("Pid: {old_pid}")));
    haproxy.restart();
    assert_ne!(haproxy.pid(), old_pid);
    assert!(haproxy.show_table("mypeers/t").is_empty());
    assert_eq!(http_get(fe, client, "/").unwrap(), 200);
    let entry = haproxy
        .table_entry("mypeers/t", &client.to_string())
        .unwrap();
    assert_eq!(entry.get_u64("http_req_cnt"), Some(1));
    assert!(haproxy.log().contains("--- testkit: restart ---"));

    haproxy.kill();
    assert!(!haproxy.is_running());
    assert!(http_get(fe, client, "/").is_err());
}

#[test]
fn smoke_haproxy_26() {
    smoke(Version::V26, 1, 201);
}

#[test]
fn smoke_haproxy_30() {
    smoke(Version::V30, 2, 202);
}

#[test]
fn refused_config_reports_the_log() {
    let Some(_) = require_haproxy(Version::V30) else {
        return;
    };
    let err = Haproxy::try_start(
        Version::V30,
        &HaproxyOpts::new("hap1", "frontend fe\n    bogus_keyword\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("exited during startup"), "{err}");
    assert!(err.contains("bogus_keyword"), "{err}");
}
