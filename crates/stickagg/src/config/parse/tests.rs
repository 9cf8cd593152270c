//! Unit tests of the configuration parser: every directive and every error.

use super::*;

/// A valid section to append to global-only snippets.
const SECTION: &str = "aggregations data\n\
                       \x20   from any to .agg\n\
                       \x20   peer gpe 0.0.0.0:10000 local\n\
                       \x20   peer enterprise1 192.168.50.41:10000\n";

fn ok(text: &str) -> Config {
    Config::parse(text, "t.cfg").unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

fn errors(text: &str) -> Vec<String> {
    match Config::parse(text, "t.cfg") {
        Ok(c) => panic!("parsed without error: {c:?}"),
        Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
    }
}

/// Asserts that `text` fails with exactly one error, at `line`, containing
/// every fragment, in the `<what>, expected <what>` form.
#[track_caller]
fn assert_error(text: &str, line: usize, fragments: &[&str]) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    assert_one(&errs, line, fragments);
}

/// Asserts that one of `errs` is at `line` and contains every fragment.
#[track_caller]
fn assert_one(errs: &[String], line: usize, fragments: &[&str]) {
    let prefix = format!("t.cfg:{line}: ");
    assert!(
        errs.iter().any(|e| e.starts_with(&prefix)
            && e.contains(", expected ")
            && fragments.iter().all(|f| e.contains(f))),
        "no error at line {line} containing {fragments:?} in {errs:#?}"
    );
}

fn global(lines: &str) -> String {
    format!("global\n{lines}\n{SECTION}")
}

// ----- directives ---------------------------------------------------

#[test]
fn seed_static_example() {
    let c = ok("global\n\
                \x20   # Enables the Global Profiling Engine API\n\
                \x20   stats socket /var/run/hapee-extras/gpe-api.sock\n\
                \n\
                aggregations data   # trailing comment\n\
                \x20   from any to .agg\n\
                \x20   peer gpe 0.0.0.0:10000 local\n\
                \x20   peer enterprise1 192.168.50.41:10000\n\
                \x20   peer enterprise2 192.168.50.42:10000\n");
    assert_eq!(c.path, PathBuf::from("t.cfg"));
    assert_eq!(
        c.global.stats_socket,
        Some(StatsSocket {
            addr: StatsAddr::Unix("/var/run/hapee-extras/gpe-api.sock".into()),
            mode: None,
            level: None,
        })
    );
    assert_eq!(c.sections.len(), 1);
    let s = &c.sections[0];
    assert_eq!((s.name.as_str(), s.line), ("data", 5));
    assert_eq!(s.from, FromSpec::Any);
    assert_eq!(s.to, ".agg");
    assert!(!s.no_ascend && !s.no_feedback && !s.dynamic_peers);
    assert!(s.forward.is_empty());
    assert_eq!(s.peers.len(), 3);
    assert_eq!(
        s.peers[0],
        PeerConf {
            name: "gpe".into(),
            addr: Some("0.0.0.0:10000".parse().unwrap()),
            role: Role::Local,
            group: None,
            tls: None,
            line: 7,
        }
    );
    assert_eq!(s.peers[1].role, Role::Node);
    assert_eq!(
        s.peers[2].addr,
        Some("192.168.50.42:10000".parse().unwrap())
    );
    assert_eq!(s.local_name(), "gpe");
    assert_eq!(
        s.listen_addr(&c.global),
        Some("0.0.0.0:10000".parse().unwrap())
    );
    assert!(c.section("data").is_some() && c.section("other").is_none());
}

#[test]
fn multi_level_and_ha_examples() {
    let c = ok("global\n\
                aggregations myaggr\n\
                from any to .intermediate no-ascend no-feedback\n\
                forward .agg\n\
                peer intermediate-gpe1 0.0.0.0:10000 local\n\
                peer top-gpe1 192.168.56.113:10000 up\n\
                peer top-gpe2 192.168.56.114:10000 up\n\
                peer enterprise1 192.168.50.41:10000\n");
    let s = &c.sections[0];
    assert_eq!(s.to, ".intermediate");
    assert!(s.no_ascend && s.no_feedback);
    assert_eq!(s.forward, [".agg"]);
    assert_eq!(s.peers[1].role, Role::Up);
    assert_eq!(s.peers[2].role, Role::Up);

    let c = ok("aggregations toplevel\n\
                from .intermediate to .agg\n\
                peer top-gpe 0.0.0.0:10000 local\n\
                peer intermediate-gpe1 192.168.56.111:10000 down group 1\n\
                peer intermediate-gpe2 192.168.56.112:10000 group 1 down\n\
                peer intermediate-gpe3 192.168.56.113:10000 down\n");
    let s = &c.sections[0];
    assert_eq!(s.from, FromSpec::Suffix(".intermediate".into()));
    assert_eq!(s.peers[1].role, Role::Down);
    assert_eq!(s.peers[1].group, Some(1));
    assert_eq!(s.peers[2].group, Some(1));
    assert_eq!(s.peers[3].group, None);
}

#[test]
fn stats_socket_forms() {
    let socket = |line: &str| ok(&global(line)).global.stats_socket.unwrap();
    let s = socket("stats socket /run/gpe.sock mode 660 level admin");
    assert_eq!(s.addr, StatsAddr::Unix("/run/gpe.sock".into()));
    assert_eq!(s.mode, Some(0o660));
    assert_eq!(s.level, Some(StatsLevel::Admin));
    let s = socket("stats socket unix@/run/gpe.sock level user");
    assert_eq!(s.addr, StatsAddr::Unix("/run/gpe.sock".into()));
    assert_eq!(s.level, Some(StatsLevel::User));
    assert_eq!(
        socket("stats socket gpe.sock level operator").addr,
        StatsAddr::Unix("gpe.sock".into())
    );
    assert_eq!(
        socket("stats socket ipv4@127.0.0.1:9999").addr,
        StatsAddr::Tcp("127.0.0.1:9999".parse().unwrap())
    );
    assert_eq!(
        socket("stats socket ipv6@[::1]:9999").addr,
        StatsAddr::Tcp("[::1]:9999".parse().unwrap())
    );
    assert_eq!(
        socket("stats socket 127.0.0.1:9999").addr,
        StatsAddr::Tcp("127.0.0.1:9999".parse().unwrap())
    );
}

#[test]
fn bind_forms() {
    let bind = |line: &str| ok(&global(line)).global.bind.unwrap();
    assert_eq!(
        bind("bind 0.0.0.0:10000").addr,
        "0.0.0.0:10000".parse().unwrap()
    );
    assert_eq!(bind("bind [::]:10000").addr, "[::]:10000".parse().unwrap());
    assert_eq!(
        bind("bind [2001:db8::10]:10000").addr,
        "[2001:db8::10]:10000".parse().unwrap()
    );
    assert_eq!(bind("bind :10000").addr, "0.0.0.0:10000".parse().unwrap());
    assert_eq!(bind("bind *:10000").addr, "0.0.0.0:10000".parse().unwrap());
    assert_eq!(bind("bind 0.0.0.0:10000").tls, None);
    let b = bind("bind 0.0.0.0:10000 ssl crt /etc/gpe.pem ca-file /etc/ca.pem verify required");
    assert_eq!(
        b.tls,
        Some(TlsOptions {
            crt: Some("/etc/gpe.pem".into()),
            ca_file: Some("/etc/ca.pem".into()),
            verify: Some(Verify::Required),
        })
    );
    let b = bind("bind [::]:10000 ssl crt gpe.pem verify none");
    assert_eq!(b.tls.unwrap().verify, Some(Verify::None));
}

#[test]
fn source_forms() {
    let source = |line: &str| ok(&global(line)).global.source.unwrap();
    assert_eq!(
        source("source 192.168.50.40"),
        "192.168.50.40:0".parse().unwrap()
    );
    assert_eq!(
        source("source 192.168.50.40:5000"),
        "192.168.50.40:5000".parse().unwrap()
    );
    // IPv6 peers need an IPv6 source.
    let v6 = |line: &str| {
        let text = format!(
            "global\n{line}\naggregations data\nfrom any to .agg\n\
             peer gpe [::]:10000 local\npeer lb [2001:db8::41]:10000\n"
        );
        ok(&text).global.source.unwrap()
    };
    assert_eq!(
        v6("source 2001:db8::10"),
        "[2001:db8::10]:0".parse().unwrap()
    );
    assert_eq!(
        v6("source [2001:db8::10]"),
        "[2001:db8::10]:0".parse().unwrap()
    );
    assert_eq!(
        v6("source [2001:db8::10]:5000"),
        "[2001:db8::10]:5000".parse().unwrap()
    );
}

#[test]
fn other_global_directives() {
    let c = ok(&global(
        "dynamic-peers\nmetrics 127.0.0.1:9100\nmaxconn 500\nmax-entries 2000000\n\
         max-tables 50\nstrict-peers",
    ));
    assert_eq!(c.global.max_tables, Some(50));
    assert!(c.global.strict_peers);
    assert!(c.sections[0].strict_peers);
    assert!(c.global.dynamic_peers);
    assert!(c.sections[0].dynamic_peers);
    assert!(c.sections[0].dynamic_from.is_empty());
    assert_eq!(c.global.metrics, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(c.global.maxconn, Some(500));
    assert_eq!(c.global.max_entries, Some(2_000_000));
    let c = ok(&global(""));
    assert_eq!(c.global, Global::default());
}

#[test]
fn limits_and_strict_peers() {
    // In a section: that section only.
    let c = ok(&format!(
        "{SECTION}strict-peers
aggregations other
from any to .x
         peer gpe2 0.0.0.0:10001 local
peer lb1 10.0.0.1:10000
"
    ));
    assert!(c.sections[0].strict_peers && !c.sections[1].strict_peers);
    assert!(!c.global.strict_peers);
    assert_eq!(c.global.max_tables, None);
    // In a global section that comes last: every section.
    let c = ok(&format!(
        "{SECTION}global
strict-peers
"
    ));
    assert!(c.sections[0].strict_peers);
    assert_error(&global("max-tables 0"), 2, &["'0' is not a table count"]);
    assert_error(&global("max-tables"), 2, &["'max-tables' takes one number"]);
    assert_error(
        &global("strict-peers yes"),
        2,
        &["unexpected 'yes' after 'strict-peers'"],
    );
    assert_error(
        &format!(
            "{SECTION}strict-peers
strict-peers
"
        ),
        6,
        &["duplicate 'strict-peers' (first at line 5)"],
    );
    assert_error(
        &format!(
            "{SECTION}strict-peers now
"
        ),
        5,
        &["unexpected 'now' after 'strict-peers'"],
    );
    assert_error(
        &format!(
            "{SECTION}max-tables 3
"
        ),
        5,
        &["'max-tables' is only valid in the global section"],
    );
}

#[test]
fn global_sections_merge_and_may_come_last() {
    let c = ok(&format!(
        "global\nmaxconn 10\n{SECTION}global\nmetrics [::1]:9100\n"
    ));
    assert_eq!(c.global.maxconn, Some(10));
    assert_eq!(c.global.metrics, Some("[::1]:9100".parse().unwrap()));
}

#[test]
fn global_bind_sections() {
    // Two sections on the global bind, told apart by their names.
    let c = ok("global\n\
                \tbind 0.0.0.0:10000\n\
                aggregations data\n\
                \tfrom any to .agg\n\
                \tdynamic-peers\n\
                aggregations other\n\
                \tfrom .nonagg to .agg\n\
                \tpeer lb1 10.0.0.1:10000\n");
    let (a, b) = (&c.sections[0], &c.sections[1]);
    assert_eq!((a.local_name(), b.local_name()), ("data", "other"));
    assert_eq!(a.listen_addr(&c.global), b.listen_addr(&c.global));
    assert!(a.dynamic_peers && !b.dynamic_peers);
    assert_eq!(a.listen_tls(&c.global), None);
    // A local peer without address takes the global bind but keeps its name.
    let c = ok("global\nbind [::]:10000 ssl crt a.pem\n\
                aggregations data\nfrom any to .agg\npeer gpe local\npeer lb1 [::1]:1\n");
    let s = &c.sections[0];
    assert_eq!(s.local_name(), "gpe");
    assert_eq!(s.local_peer().unwrap().addr, None);
    assert_eq!(
        s.listen_addr(&c.global),
        Some("[::]:10000".parse().unwrap())
    );
    assert_eq!(s.listen_tls(&c.global).unwrap().crt, Some("a.pem".into()));
}

#[test]
fn same_address_with_different_local_names() {
    let c = ok(
        "aggregations a\nfrom any to .agg\npeer gpe-a 0.0.0.0:10000 local\ndynamic-peers\n\
                aggregations b\nfrom any to .agg\npeer gpe-b 0.0.0.0:10000 local\ndynamic-peers\n",
    );
    assert_eq!(c.sections.len(), 2);
}

#[test]
fn peer_ssl_and_dynamic_from() {
    let c = ok("aggregations data\n\
                from any to .agg\n\
                peer gpe 0.0.0.0:10000 local ssl crt gpe.pem\n\
                peer top 10.0.0.1:10000 up ssl verify required ca-file ca.pem crt me.pem\n\
                peer lb1 10.0.0.2:10000 ssl\n\
                dynamic-peers from 192.168.0.0/16 2001:db8::/32 10.1.2.3\n");
    let s = &c.sections[0];
    assert_eq!(s.listen_tls(&c.global).unwrap().crt, Some("gpe.pem".into()));
    assert_eq!(
        s.peers[1].tls,
        Some(TlsOptions {
            crt: Some("me.pem".into()),
            ca_file: Some("ca.pem".into()),
            verify: Some(Verify::Required),
        })
    );
    assert_eq!(s.peers[2].tls, Some(TlsOptions::default()));
    assert!(s.dynamic_peers);
    let cidrs: Vec<String> = s.dynamic_from.iter().map(|c| c.to_string()).collect();
    assert_eq!(cidrs, ["192.168.0.0/16", "2001:db8::/32", "10.1.2.3/32"]);
}

#[test]
fn local_peer_may_listen_on_port_zero() {
    let c = ok("aggregations data\nfrom any to .agg\npeer gpe 127.0.0.1:0 local\ndynamic-peers\n");
    assert_eq!(
        c.sections[0].listen_addr(&c.global),
        Some("127.0.0.1:0".parse().unwrap())
    );
}

// ----- errors -------------------------------------------------------

#[test]
fn unknown_directives_get_hints() {
    assert_error(
        &global("bnd 0.0.0.0:1"),
        2,
        &["unknown directive 'bnd'", "did you mean 'bind'?"],
    );
    assert_error(&global("sorce 10.0.0.1"), 2, &["did you mean 'source'?"]);
    assert_error(
        &global("dynamic_peers"),
        2,
        &["did you mean 'dynamic-peers'?"],
    );
    assert_error(
        &global("frobnicate"),
        2,
        &["unknown directive 'frobnicate'", "stats, bind"],
    );
    assert_error(
        &format!("{SECTION}    peeer lb2 10.0.0.2:1\n"),
        5,
        &[
            "unknown directive 'peeer' in an aggregations section",
            "did you mean 'peer'?",
        ],
    );
    assert_error(
        &format!("{SECTION}    forwad .x\n"),
        5,
        &["did you mean 'forward'?"],
    );
    assert_error(
        &format!("{SECTION}    metric 1.2.3.4:5\n"),
        5,
        &["did you mean 'metrics'? it belongs in the global section"],
    );
    assert_error(
        &global("forwards .x"),
        2,
        &["did you mean 'forward'? it belongs in an aggregations section"],
    );
    assert_error(
        &format!("global\naggregation data\n{SECTION}"),
        2,
        &["did you mean 'aggregations', a section header?"],
    );
    assert_error(
        &format!("globl\n{SECTION}"),
        1,
        &["before any section", "did you mean 'global'?"],
    );
}

#[test]
fn directives_in_the_wrong_section() {
    assert_error(
        &global("peer x 1.2.3.4:5"),
        2,
        &["'peer' is only valid in an aggregations section"],
    );
    assert_error(
        &global("from any to .agg"),
        2,
        &["'from' is only valid in an aggregations section"],
    );
    assert_error(
        &format!("{SECTION}bind 0.0.0.0:1\n"),
        5,
        &["'bind' is only valid in the global section"],
    );
    assert_error(
        &format!("{SECTION}maxconn 3\n"),
        5,
        &["'maxconn' is only valid in the global section"],
    );
    assert_error(
        &format!("peer x 1.2.3.4:5\n{SECTION}"),
        1,
        &["'peer' before any section"],
    );
}

#[test]
fn haproxy_sections_are_refused_once() {
    let errs = errors(&format!(
        "{SECTION}peers mypeers\n  bind 0.0.0.0:10000\n  server enterprise1\n\
         frontend fe\n  bind :80\n"
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_one(
        &errs,
        5,
        &["'peers' sections belong to HAProxy's configuration"],
    );
    assert_one(&errs, 8, &["'frontend' sections"]);
    // Parsing resumes at the next stickagg section.
    let errs = errors(&format!("peers p\n  server x\n{SECTION}  nope\n"));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_one(&errs, 7, &["unknown directive 'nope'"]);
}

#[test]
fn duplicate_global_directives() {
    for line in [
        "bind 0.0.0.0:1",
        "source 10.0.0.1",
        "metrics 10.0.0.1:9",
        "maxconn 5",
        "max-tables 5",
        "strict-peers",
        "dynamic-peers",
        "stats socket /a",
    ] {
        assert_error(
            &global(&format!("{line}\n{line}")),
            3,
            &["duplicate", "(first at line 2)", "expected at most one"],
        );
    }
}

#[test]
fn global_section_errors() {
    assert_error("global extra\n", 1, &["after 'global'"]);
    assert_error(
        &global("stats"),
        2,
        &["'stats' alone", "expected 'stats socket"],
    );
    assert_error(
        &global("stats timeout 10s"),
        2,
        &["unknown stats directive 'timeout'"],
    );
    assert_error(&global("stats socket"), 2, &["without an address"]);
    assert_error(
        &global("stats socket /a mode 999"),
        2,
        &["'999' is not a file mode"],
    );
    assert_error(
        &global("stats socket /a mode"),
        2,
        &["'mode' without a value"],
    );
    assert_error(
        &global("stats socket /a level root"),
        2,
        &["unknown level 'root'", "user, operator or admin"],
    );
    assert_error(
        &global("stats socket /a lvl admin"),
        2,
        &["unknown stats socket option 'lvl'", "did you mean 'level'?"],
    );
    assert_error(
        &global("stats socket /a level admin level user"),
        2,
        &["duplicate 'level'"],
    );
    assert_error(
        &global("stats socket ipv4@127.0.0.1:1 mode 600"),
        2,
        &["'mode' on a TCP stats socket"],
    );
    assert_error(
        &global("stats socket abns@x"),
        2,
        &["unknown address family 'abns@'"],
    );
    assert_error(
        &global("stats socket ipv4@[::1]:1"),
        2,
        &["not an IPv4 address"],
    );
    assert_error(
        &global("stats socket ipv6@::1"),
        2,
        &["not a bracketed IPv6 address"],
    );
    assert_error(
        &global("stats socket unix@"),
        2,
        &["'unix@' without a path"],
    );
    assert_error(&global("source"), 2, &["'source' takes one address"]);
    assert_error(
        &global("source gpe.local"),
        2,
        &[
            "'gpe.local' has no port",
            "expected 'source <ipv4>[:<port>]'",
        ],
    );
    assert_error(
        &global("source 10.0.0.1:99999"),
        2,
        &["'99999' is not a port number"],
    );
    assert_error(
        &global("source [2001:db8::x]:1"),
        2,
        &["is not an IPv6 address"],
    );
    assert_error(
        &global("dynamic-peers from 10.0.0.0/8"),
        2,
        &["after 'dynamic-peers' in the global section"],
    );
    assert_error(&global("metrics"), 2, &["'metrics' takes one address"]);
    assert_error(&global("metrics 9100"), 2, &["has no port"]);
    assert_error(&global("maxconn 0"), 2, &["'0' is not a connection count"]);
    assert_error(
        &global("maxconn many"),
        2,
        &["'many' is not a connection count"],
    );
    assert_error(&global("maxconn"), 2, &["'maxconn' takes one number"]);
    assert_error(&global("max-entries 0"), 2, &["'0' is not an entry count"]);
    assert_error(
        &global("max-entries 1 2"),
        2,
        &["'max-entries' takes one number"],
    );
    assert_error(
        &format!("{SECTION}max-entries 3\n"),
        5,
        &["'max-entries' is only valid in the global section"],
    );
}

#[test]
fn bind_errors() {
    assert_error(&global("bind"), 2, &["'bind' without an address"]);
    assert_error(
        &global("bind 0.0.0.0"),
        2,
        &[
            "'0.0.0.0' has no port",
            "expected 'bind <ipv4>:<port> or [<ipv6>]:<port>'",
        ],
    );
    assert_error(
        &global("bind gpe:10000"),
        2,
        &["'gpe' is not an IP address (host names are not resolved)"],
    );
    assert_error(
        &global("bind 0.0.0.0:http"),
        2,
        &["'http' is not a port number"],
    );
    assert_error(
        &global("bind :::10000"),
        2,
        &["IPv6 address without brackets"],
    );
    assert_error(&global("bind [::]"), 2, &["'[::]' has no port"]);
    assert_error(
        &global("bind [nope]:1"),
        2,
        &["'nope' is not an IPv6 address"],
    );
    assert_error(
        &global("bind 0.0.0.0:1 ssl"),
        2,
        &[
            "'bind … ssl' without a certificate",
            "expected 'ssl crt <pem>'",
        ],
    );
    assert_error(
        &global("bind 0.0.0.0:1 crt a.pem"),
        2,
        &["'crt' without 'ssl'"],
    );
    assert_error(
        &global("bind 0.0.0.0:1 ssl crt a.pem verify required"),
        2,
        &["without a CA", "expected 'ca-file <pem>'"],
    );
    assert_error(
        &global("bind 0.0.0.0:1 ssl crt a.pem verify always"),
        2,
        &["unknown verify mode 'always'"],
    );
    assert_error(
        &global("bind 0.0.0.0:1 ssl crt"),
        2,
        &["'crt' without a value"],
    );
    assert_error(
        &global("bind 0.0.0.0:1 ssl crt a crt b"),
        2,
        &["duplicate 'crt'"],
    );
    assert_error(
        &global("bind 0.0.0.0:1 ssl ssl crt a"),
        2,
        &["duplicate 'ssl'"],
    );
    assert_error(
        &global("bind 0.0.0.0:1 tls"),
        2,
        &["unknown bind option 'tls'"],
    );
}

#[test]
fn aggregations_header_errors() {
    assert_error(
        &format!("aggregations\n  from any to .agg\n{SECTION}"),
        1,
        &["'aggregations' without a name"],
    );
    assert_error(
        &SECTION.replace("aggregations data", "aggregations data extra"),
        1,
        &["unexpected 'extra' after the section name"],
    );
    assert_error(
        &format!("{SECTION}{SECTION}"),
        5,
        &["duplicate aggregations section 'data' (first at line 1)"],
    );
    let e = Config::parse("global\n", "t.cfg").unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.cfg: no aggregations section, expected at least one 'aggregations <name>' section"
    );
}

#[test]
fn from_errors() {
    let sec = |from: &str| {
        format!("aggregations data\n{from}\npeer gpe 0.0.0.0:1 local\npeer lb 10.0.0.1:1\n")
    };
    assert_error(
        "aggregations data\npeer gpe 0.0.0.0:1 local\npeer lb 10.0.0.1:1\n",
        1,
        &[
            "section 'data' has no 'from' line",
            "expected 'from any|<.suffix> to <.suffix>",
        ],
    );
    assert_error(
        &sec("from any to .agg\nfrom any to .x"),
        3,
        &["duplicate 'from' line (first at line 2)"],
    );
    assert_error(&sec("from any"), 2, &["malformed 'from' line"]);
    assert_error(&sec("from any into .agg"), 2, &["malformed 'from' line"]);
    assert_error(
        &sec("from any to agg"),
        2,
        &["'agg' is not a table suffix", "after 'to'"],
    );
    assert_error(&sec("from any to ."), 2, &["'.' is not a table suffix"]);
    assert_error(&sec("from any to any"), 2, &["'any' is not a table suffix"]);
    assert_error(
        &sec("from nonagg to .agg"),
        2,
        &[
            "'nonagg' is not a table suffix",
            "expected 'any' or a suffix",
        ],
    );
    assert_error(
        &sec("from .agg to .agg"),
        2,
        &[
            "from suffix '.agg' equal to the to suffix",
            "expected different suffixes",
        ],
    );
    assert_error(
        &sec("from .x.agg to .agg"),
        2,
        &["suffixes '.x.agg' and '.agg' overlap"],
    );
    assert_error(&sec("from .agg to .x.agg"), 2, &["overlap"]);
    assert_error(
        &sec("from any to .agg no-ascent"),
        2,
        &[
            "unknown 'from' option 'no-ascent'",
            "did you mean 'no-ascend'?",
        ],
    );
    assert_error(
        &sec("from any to .agg no-feedback no-feedback"),
        2,
        &["duplicate 'no-feedback'"],
    );
}

#[test]
fn forward_errors() {
    let sec = |lines: &str| {
        format!("aggregations data\nfrom .in to .agg\npeer gpe 0.0.0.0:1 local\npeer lb 10.0.0.1:1\n{lines}\npeer top 10.0.0.9:1 up\n")
    };
    assert_error(
        &sec("forward .agg"),
        5,
        &["forward suffix '.agg' equal to the to suffix (line 2)"],
    );
    assert_error(
        &sec("forward .in"),
        5,
        &["forward suffix '.in' equal to the from suffix (line 2)"],
    );
    assert_error(
        &sec("forward .top\nforward .top"),
        6,
        &["duplicate forward suffix '.top' (first at line 5)"],
    );
    assert_error(
        &sec("forward top"),
        5,
        &[
            "'top' is not a table suffix",
            "expected 'forward <.suffix>'",
        ],
    );
    assert_error(&sec("forward"), 5, &["'forward' without a suffix"]);
    // Several suffixes on one line are accepted.
    let c = ok(&sec("forward .top .top2"));
    assert_eq!(c.sections[0].forward, [".top", ".top2"]);
    // Overlapping suffixes: relayed tables would look like outputs or
    // inputs.
    assert_error(
        &sec("forward .x.agg"),
        5,
        &["forward suffix '.x.agg' and suffix '.agg' of line 2 overlap"],
    );
    assert_error(
        &sec("forward .in2 .top.agg"),
        5,
        &["forward suffix '.top.agg' and suffix '.agg' of line 2 overlap"],
    );
    assert_error(
        &sec("forward .a.in"),
        5,
        &["forward suffix '.a.in' and suffix '.in' of line 2 overlap"],
    );
}

#[test]
fn multi_level_mistakes() {
    let base = "aggregations m\nfrom any to .intermediate\npeer me 127.0.0.1:10000 local\npeer lb 10.0.0.1:1\n";
    // `forward` and `no-ascend` only make sense with an up peer.
    assert_error(
        &format!("{base}forward .agg\n"),
        5,
        &["'forward .agg' in a section without an 'up' peer"],
    );
    assert_error(
        &base.replace(".intermediate", ".intermediate no-ascend"),
        2,
        &["'no-ascend' in a section without an 'up' peer"],
    );
    // Ourselves as another level.
    assert_error(
        &format!("{base}peer top 127.0.0.1:10000 up\n"),
        5,
        &["up peer 'top' at 127.0.0.1:10000 is this aggregator itself (it listens on 127.0.0.1:10000, line 3)"],
    );
    let wild = base.replace("127.0.0.1:10000 local", "0.0.0.0:10000 local");
    assert_error(
        &format!("{wild}peer low 127.0.0.5:10000 down\n"),
        5,
        &["down peer 'low' at 127.0.0.5:10000 is this aggregator itself"],
    );
    // The same aggregator above and below us.
    assert_error(
        &format!("{base}peer top 10.0.0.9:1 up\npeer low 10.0.0.9:1 down\n"),
        6,
        &["down peer 'low' has the address 10.0.0.9:1 of up peer 'top' (line 5)"],
    );
    assert_error(
        &format!("{base}peer top 10.0.0.1:1 up\n"),
        5,
        &["up peer 'top' has the address 10.0.0.1:1 of node peer 'lb' (line 4)"],
    );
    // The seed's intermediate with HA, and a middle level of a chain.
    ok(&format!(
        "{base}forward .agg\npeer top1 10.0.0.8:1 up\npeer top2 10.0.0.9:1 up\n"
    ));
    ok(
        "aggregations mid\nfrom .intermediate to .regional\nforward .agg\n\
        peer mid 127.0.0.1:10000 local\npeer top 10.0.0.9:1 up\n\
        peer low1 10.0.0.1:1 down group 1\npeer low2 10.0.0.2:1 down group 1\n",
    );
    // Two nodes at one address are not this check's business.
    ok(&format!("{base}peer lb2 10.0.0.1:1\n"));
}

#[test]
fn peer_line_errors() {
    let sec = |peer: &str| format!("{SECTION}{peer}\n");
    assert_error(
        &sec("peer"),
        5,
        &[
            "'peer' without a name",
            "expected 'peer <name> <addr>:<port>",
        ],
    );
    assert_error(&sec("peer lb2 10.0.0.2"), 5, &["'10.0.0.2' has no port"]);
    assert_error(
        &sec("peer lb2 lb2.example.com:10000"),
        5,
        &["host names are not resolved"],
    );
    assert_error(
        &sec("peer lb2 10.0.0.2:1 up down"),
        5,
        &[
            "peer 'lb2' is both 'up' and 'down'",
            "at most one of local, up, down",
        ],
    );
    assert_error(
        &sec("peer lb2 10.0.0.2:1 up up"),
        5,
        &["both 'up' and 'up'"],
    );
    assert_error(
        &sec("peer lb2 10.0.0.2:1 up group 1"),
        5,
        &["'group' on peer 'lb2' which is not 'down'"],
    );
    assert_error(
        &sec("peer lb2 10.0.0.2:1 group 1"),
        5,
        &["'group' on peer 'lb2' which is not 'down'"],
    );
    assert_error(
        &sec("peer lb2 10.0.0.2:1 down group"),
        5,
        &["'group' without a number"],
    );
    assert_error(
        &sec("peer lb2 10.0.0.2:1 down group -1"),
        5,
        &["'group' without a number"],
    );
    assert_error(
        &sec("peer lb2 10.0.0.2:1 down group 1 group 2"),
        5,
        &["duplicate 'group'"],
    );
    assert_error(
        &sec("peer lb2 10.0.0.2:1 dwon"),
        5,
        &["unknown peer option 'dwon'", "did you mean 'down'?"],
    );
    assert_error(
        &sec("peer lb2 down 10.0.0.2:1"),
        5,
        &["address '10.0.0.2:1' after the peer's options"],
    );
    assert_error(
        &sec("peer lb2 10.0.0.2:1 verify none"),
        5,
        &["'verify' without 'ssl'"],
    );
    assert_error(
        &sec("peer lb2 10.0.0.2:1 ssl verify maybe"),
        5,
        &["unknown verify mode 'maybe'"],
    );
}

#[test]
fn section_peer_errors() {
    assert_error(
        &format!("{SECTION}peer enterprise1 10.0.0.9:1\n"),
        5,
        &[
            "duplicate peer name 'enterprise1' (first at line 4)",
            "unique peer names",
        ],
    );
    assert_error(
        &format!("{SECTION}peer gpe2 127.0.0.1:1 local\n"),
        5,
        &[
            "second local peer 'gpe2' (first: 'gpe' at line 3)",
            "at most one local peer",
        ],
    );
    assert_error(
        &format!("{SECTION}peer lb2\n"),
        5,
        &["peer 'lb2' has no address (only the local peer may omit it)"],
    );
    assert_error(
        &format!("{SECTION}peer lb2 down\n"),
        5,
        &["peer 'lb2' has no address"],
    );
    assert_error(
        &format!("{SECTION}peer lb2 0.0.0.0:10000\n"),
        5,
        &["cannot be connected to"],
    );
    assert_error(
        &format!("{SECTION}peer lb2 10.0.0.2:0\n"),
        5,
        &["cannot be connected to"],
    );
    assert_error(
        &format!("global\nsource 10.0.0.1\n{SECTION}peer lb2 [2001:db8::2]:1\n"),
        7,
        &["is not of the family of the global source 10.0.0.1:0 (line 2)"],
    );
    assert_error(
        "global\nbind 0.0.0.0:1\naggregations data\nfrom any to .agg\npeer data 10.0.0.1:1\n",
        5,
        &["peer 'data' has the section's name"],
    );
    assert_error(
        "aggregations data\nfrom any to .agg\npeer gpe 0.0.0.0:1 local\n",
        1,
        &["section 'data' has no remote peer and no 'dynamic-peers'"],
    );
    assert_error(
        "aggregations data\nfrom any to .agg\npeer gpe 0.0.0.0:1 local ssl\ndynamic-peers\n",
        3,
        &["local peer with 'ssl' without a certificate"],
    );
    assert_error(
        "global\nbind 0.0.0.0:1\naggregations data\nfrom any to .agg\npeer gpe local ssl crt a\ndynamic-peers\n",
        5,
        &["'ssl' on a local peer without an address"],
    );
}

#[test]
fn dynamic_peers_errors() {
    let sec = |line: &str| format!("{SECTION}{line}\n");
    assert_error(
        &sec("dynamic-peers 10.0.0.0/8"),
        5,
        &["unexpected '10.0.0.0/8' after 'dynamic-peers'"],
    );
    assert_error(
        &sec("dynamic-peers from"),
        5,
        &["'dynamic-peers from' without an address block"],
    );
    assert_error(
        &sec("dynamic-peers from 10.0.0.0/40"),
        5,
        &["prefix length '40' is not in 0..=32"],
    );
    assert_error(
        &sec("dynamic-peers from lan"),
        5,
        &["'lan' is not an IP address"],
    );
    assert_error(
        &sec("dynamic-peers\ndynamic-peers"),
        6,
        &["duplicate 'dynamic-peers' (first at line 5)"],
    );
}

#[test]
fn listening_address_errors() {
    assert_error(
        "aggregations data\nfrom any to .agg\ndynamic-peers\n",
        1,
        &[
            "section 'data' has no listening address",
            "or 'bind <addr>:<port>' in the global section",
        ],
    );
    assert_error(
        "aggregations data\nfrom any to .agg\npeer gpe local\ndynamic-peers\n",
        3,
        &["local peer 'gpe' has no address and there is no global 'bind'"],
    );
    // Same address, same local name: the hello cannot tell them apart.
    let text = "aggregations a\nfrom any to .agg\npeer gpe 0.0.0.0:10000 local\ndynamic-peers\n\
                aggregations b\nfrom any to .agg\npeer gpe 0.0.0.0:10000 local\ndynamic-peers\n";
    assert_error(
        text,
        7,
        &["section 'b' listens on 0.0.0.0:10000 under the name 'gpe' like section 'a' (line 3)"],
    );
    // A local peer named like a section listening on the global bind.
    let text = "global\nbind 0.0.0.0:10000\n\
                aggregations a\nfrom any to .agg\ndynamic-peers\n\
                aggregations b\nfrom any to .agg\npeer a 0.0.0.0:10000 local\ndynamic-peers\n";
    assert_error(text, 8, &["under the name 'a' like section 'a' (line 3)"]);
    // Overlapping, different addresses on one port cannot both be bound.
    let text = "aggregations a\nfrom any to .agg\npeer gpe-a 0.0.0.0:10000 local\ndynamic-peers\n\
                aggregations b\nfrom any to .agg\npeer gpe-b 127.0.0.1:10000 local\ndynamic-peers\n";
    assert_error(
        text,
        7,
        &[
            "collides with the peer listener of section 'a' on 0.0.0.0:10000 (line 3)",
            "or the very same address",
        ],
    );
    let text = "aggregations a\nfrom any to .agg\npeer gpe-a [::]:10000 local\ndynamic-peers\n\
                aggregations b\nfrom any to .agg\npeer gpe-b 127.0.0.1:10000 local\ndynamic-peers\n";
    assert_error(text, 7, &["collides"]);
    // One listener, two TLS settings.
    let text = "aggregations a\nfrom any to .agg\npeer gpe-a 0.0.0.0:10000 local ssl crt a.pem\ndynamic-peers\n\
                aggregations b\nfrom any to .agg\npeer gpe-b 0.0.0.0:10000 local\ndynamic-peers\n";
    assert_error(
        text,
        7,
        &["section 'b' listens on 0.0.0.0:10000 with other TLS settings than section 'a' (line 3)"],
    );
    ok(&text.replace("local\ndyn", "local ssl crt a.pem\ndyn"));
    // Different ports, or specific addresses, are fine.
    ok(
        "aggregations a\nfrom any to .agg\npeer gpe-a 0.0.0.0:10000 local\ndynamic-peers\n\
        aggregations b\nfrom any to .agg\npeer gpe-b 127.0.0.1:10001 local\ndynamic-peers\n\
        aggregations c\nfrom any to .agg\npeer gpe-c 127.0.0.2:10002 local\ndynamic-peers\n\
        aggregations d\nfrom any to .agg\npeer gpe-d 127.0.0.3:10002 local\ndynamic-peers\n",
    );
    // Metrics and stats socket on a peer listener.
    assert_error(&global("metrics 0.0.0.0:10000"), 2, &["the metrics endpoint on 0.0.0.0:10000 collides with the peer listener of section 'data'"]);
    assert_error(
        &global("stats socket ipv4@127.0.0.1:10000"),
        2,
        &["the stats socket on 127.0.0.1:10000 collides"],
    );
}

#[test]
fn every_error_is_collected() {
    let errs = errors(
        "global\n\
                       bnd 0.0.0.0:1\n\
                       maxconn 0\n\
                       aggregations a\n\
                       peer lb1 10.0.0.1:1 up down\n\
                       peer lb2\n\
                       aggregations b\n\
                       from any to .agg no-ascnd\n\
                       forward .agg\n",
    );
    // Sorted by line.
    let lines: Vec<&str> = errs.iter().map(|e| e.split(": ").next().unwrap()).collect();
    assert_eq!(
        lines,
        ["t.cfg:2", "t.cfg:3", "t.cfg:4", "t.cfg:4", "t.cfg:5", "t.cfg:6", "t.cfg:7", "t.cfg:8"],
        "{errs:#?}"
    );
    assert_one(&errs, 4, &["has no 'from' line"]);
    assert_one(&errs, 4, &["has no listening address"]);
    assert_one(&errs, 6, &["peer 'lb2' has no address"]);
    assert_one(&errs, 7, &["section 'b' has no listening address"]);
    assert_one(&errs, 8, &["no-ascnd"]);
}

#[test]
fn edit_distance_and_hints() {
    assert_eq!(edit_distance("", ""), 0);
    assert_eq!(edit_distance("peer", "peers"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("dwon", "down"), 1);
    assert_eq!(edit_distance("ab", ""), 2);
    assert_eq!(closest("PEER", &["peer", "bind"]), Some("peer"));
    assert_eq!(closest("xyz", &["peer", "bind"]), None);
    assert_eq!(closest("up", &["up", "down"]), Some("up"));
}

#[test]
fn addresses() {
    assert_eq!(
        parse_addr_port("1.2.3.4:5"),
        Ok("1.2.3.4:5".parse().unwrap())
    );
    assert_eq!(parse_addr_port("[::1]:5"), Ok("[::1]:5".parse().unwrap()));
    assert!(parse_addr_port("::1").is_err());
    assert!(parse_addr_port("[::1]5").is_err());
    assert!(overlaps(
        "0.0.0.0:1".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap()
    ));
    assert!(overlaps(
        "[::]:1".parse().unwrap(),
        "0.0.0.0:1".parse().unwrap()
    ));
    assert!(!overlaps(
        "0.0.0.0:1".parse().unwrap(),
        "[::1]:1".parse().unwrap()
    ));
    assert!(!overlaps(
        "0.0.0.0:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap()
    ));
    assert!(!overlaps(
        "0.0.0.0:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap()
    ));
    assert!(!overlaps(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.2:1".parse().unwrap()
    ));
}
