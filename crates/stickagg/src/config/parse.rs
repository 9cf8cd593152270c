//! Line parser and validation of the configuration grammar (see `mod.rs`).
//!
//! Parsing never stops at the first problem: every line is checked, then the
//! sections are validated as a whole, and all errors are returned sorted by
//! line. Each message reads `<what was wrong>, expected <what>`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::model::{
    Bind, Cidr, Config, FromSpec, Global, PeerConf, Role, Section, StatsAddr, StatsLevel,
    StatsSocket, TlsOptions, Verify,
};
use super::{ConfigError, ConfigErrors};

/// Directives of the `global` section.
const GLOBAL_KEYWORDS: &[&str] = &[
    "stats",
    "bind",
    "source",
    "dynamic-peers",
    "metrics",
    "maxconn",
    "max-entries",
    "max-tables",
    "strict-peers",
];
/// Directives of an `aggregations` section.
const SECTION_KEYWORDS: &[&str] = &["from", "forward", "peer", "dynamic-peers", "strict-peers"];
/// Words that start a section.
const HEADERS: &[&str] = &["global", "aggregations"];
/// Section keywords of HAProxy's own configuration: reported once, and their
/// bodies skipped (they would only repeat the same mistake line after line).
const HAPROXY_SECTIONS: &[&str] = &[
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "crt-store",
    "log-forward",
    "traces",
];
/// Options of a `peer` line.
const PEER_OPTIONS: &[&str] = &[
    "local", "up", "down", "group", "ssl", "verify", "ca-file", "crt",
];

const EXPECT_ADDR: &str = "<ipv4>:<port> or [<ipv6>]:<port>";
const EXPECT_FROM: &str = "'from any|<.suffix> to <.suffix> [no-ascend] [no-feedback]'";
const EXPECT_PEER: &str =
    "'peer <name> <addr>:<port> [local|up|down] [group <n>] [ssl [verify …] [ca-file …] [crt …]]'";

pub(super) fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut p = Parser {
        path,
        errors: Vec::new(),
        global: Global::default(),
        seen: Vec::new(),
        drafts: Vec::new(),
        state: State::Start,
    };
    for (i, raw) in text.lines().enumerate() {
        p.line(i + 1, raw);
    }
    p.finish()
}

/// Which section the following lines belong to.
enum State {
    /// Before the first section header.
    Start,
    Global,
    /// Index into `Parser::drafts`.
    Aggregations(usize),
    /// Inside a section already reported as wrong: lines are skipped.
    Skip,
}

/// An `aggregations` section while it is being read.
struct Draft {
    name: String,
    line: usize,
    /// Another section has this name (already reported): the body is checked
    /// but the section is not kept.
    duplicate: bool,
    /// `(from, to, no_ascend, no_feedback)` of a valid `from` line.
    from: Option<(FromSpec, String, bool, bool)>,
    /// Line of the `from` directive, valid or not.
    from_line: Option<usize>,
    forward: Vec<(String, usize)>,
    peers: Vec<PeerConf>,
    /// A `peer` line was refused (and not kept in `peers`).
    broken_peer: bool,
    dynamic_line: Option<usize>,
    dynamic_from: Vec<Cidr>,
    strict_line: Option<usize>,
}

/// TLS options while a line is being read.
#[derive(Default)]
struct TlsDraft {
    ssl: bool,
    /// First option written without `ssl`, for the message.
    first: Option<&'static str>,
    opts: TlsOptions,
}

struct Parser<'p> {
    path: &'p Path,
    errors: Vec<ConfigError>,
    global: Global,
    /// First line of each single-valued global directive.
    seen: Vec<(&'static str, usize)>,
    drafts: Vec<Draft>,
    state: State,
}

impl Parser<'_> {
    fn err(&mut self, line: usize, message: String) {
        self.errors.push(ConfigError::Line {
            path: self.path.to_path_buf(),
            line,
            message,
        });
    }

    fn seen_line(&self, keyword: &str) -> Option<usize> {
        self.seen
            .iter()
            .find(|(k, _)| *k == keyword)
            .map(|(_, l)| *l)
    }

    /// The count of a global limit (`<keyword> <n>`, n > 0) seen for the
    /// first time; `None` after reporting what is wrong with the line.
    fn global_count(
        &mut self,
        n: usize,
        keyword: &'static str,
        args: &[&str],
        what: &str,
    ) -> Option<usize> {
        let [v] = args else {
            self.err(
                n,
                format!("'{keyword}' takes one number, expected '{keyword} <n>'"),
            );
            return None;
        };
        match v.parse::<usize>() {
            Ok(m) if m > 0 => self.once(n, keyword).then_some(m),
            _ => {
                self.err(
                    n,
                    format!("'{v}' is not {what}, expected '{keyword} <n>' with n > 0"),
                );
                None
            }
        }
    }

    /// Records a single-valued global directive; false (and an error) if it
    /// was already given.
    fn once(&mut self, n: usize, keyword: &'static str) -> bool {
        if let Some(first) = self.seen_line(keyword) {
            self.err(
                n,
                format!("duplicate '{keyword}' (first at line {first}), expected at most one"),
            );
            return false;
        }
        self.seen.push((keyword, n));
        true
    }

    fn line(&mut self, n: usize, raw: &str) {
        let text = raw.split('#').next().unwrap_or_default();
        let words: Vec<&str> = text.split_whitespace().collect();
        let Some(&keyword) = words.first() else {
            return;
        };
        match keyword {
            "global" => {
                if let Some(extra) = words.get(1) {
                    self.err(
                        n,
                        format!("unexpected '{extra}' after 'global', expected 'global' alone"),
                    );
                }
                self.state = State::Global;
            }
            "aggregations" => self.header(n, &words),
            _ if HAPROXY_SECTIONS.contains(&keyword) => {
                self.err(
                    n,
                    format!(
                        "'{keyword}' sections belong to HAProxy's configuration, not stickagg's, \
                         expected 'global' or 'aggregations <name>'"
                    ),
                );
                self.state = State::Skip;
            }
            _ => match self.state {
                State::Start => self.err(
                    n,
                    format!(
                        "'{keyword}' before any section{}, expected a 'global' or \
                         'aggregations <name>' line first",
                        hint(keyword, HEADERS)
                    ),
                ),
                State::Global => self.global_line(n, &words),
                State::Aggregations(i) => self.section_line(i, n, &words),
                State::Skip => {}
            },
        }
    }

    fn header(&mut self, n: usize, words: &[&str]) {
        let Some(&name) = words.get(1) else {
            self.err(
                n,
                "'aggregations' without a name, expected 'aggregations <name>'".into(),
            );
            self.state = State::Skip;
            return;
        };
        if let Some(extra) = words.get(2) {
            self.err(
                n,
                format!(
                    "unexpected '{extra}' after the section name, expected 'aggregations <name>'"
                ),
            );
        }
        let first = self.drafts.iter().find(|d| d.name == name).map(|d| d.line);
        if let Some(first) = first {
            self.err(
                n,
                format!(
                    "duplicate aggregations section '{name}' (first at line {first}), \
                     expected unique section names"
                ),
            );
        }
        self.drafts.push(Draft {
            name: name.to_string(),
            line: n,
            duplicate: first.is_some(),
            from: None,
            from_line: None,
            forward: Vec::new(),
            peers: Vec::new(),
            broken_peer: false,
            dynamic_line: None,
            dynamic_from: Vec::new(),
            strict_line: None,
        });
        self.state = State::Aggregations(self.drafts.len() - 1);
    }

    // ----- global -------------------------------------------------------

    fn global_line(&mut self, n: usize, words: &[&str]) {
        let keyword = words[0];
        let args = &words[1..];
        match keyword {
            "stats" => self.stats(n, args),
            "bind" => self.bind(n, args),
            "source" => {
                let [addr] = args else {
                    return self.err(
                        n,
                        "'source' takes one address, expected 'source <addr>[:<port>]'".into(),
                    );
                };
                match parse_source(addr) {
                    Ok(a) if self.once(n, "source") => self.global.source = Some(a),
                    Ok(_) => {}
                    Err(what) => self.err(
                        n,
                        format!("{what}, expected 'source <ipv4>[:<port>]', 'source <ipv6>' or 'source [<ipv6>]:<port>'"),
                    ),
                }
            }
            "dynamic-peers" => {
                if let Some(extra) = args.first() {
                    return self.err(
                        n,
                        format!(
                            "unexpected '{extra}' after 'dynamic-peers' in the global section, \
                             expected 'dynamic-peers' alone (use 'dynamic-peers from <cidr>…' \
                             in an aggregations section)"
                        ),
                    );
                }
                if self.once(n, "dynamic-peers") {
                    self.global.dynamic_peers = true;
                }
            }
            "metrics" => {
                let [addr] = args else {
                    return self.err(
                        n,
                        "'metrics' takes one address, expected 'metrics <addr>:<port>'".into(),
                    );
                };
                match parse_addr_port(addr) {
                    Ok(a) if self.once(n, "metrics") => self.global.metrics = Some(a),
                    Ok(_) => {}
                    Err(what) => self.err(n, format!("{what}, expected 'metrics {EXPECT_ADDR}'")),
                }
            }
            "maxconn" => {
                if let Some(m) = self.global_count(n, "maxconn", args, "a connection count") {
                    self.global.maxconn = Some(m);
                }
            }
            "max-entries" => {
                if let Some(m) = self.global_count(n, "max-entries", args, "an entry count") {
                    self.global.max_entries = Some(m);
                }
            }
            "max-tables" => {
                if let Some(m) = self.global_count(n, "max-tables", args, "a table count") {
                    self.global.max_tables = Some(m);
                }
            }
            "strict-peers" => {
                if let Some(extra) = args.first() {
                    return self.err(
                        n,
                        format!(
                            "unexpected '{extra}' after 'strict-peers', expected 'strict-peers' alone"
                        ),
                    );
                }
                if self.once(n, "strict-peers") {
                    self.global.strict_peers = true;
                }
            }
            "from" | "forward" | "peer" => self.err(
                n,
                format!(
                    "'{keyword}' is only valid in an aggregations section, \
                     expected an 'aggregations <name>' line before it"
                ),
            ),
            _ => self.unknown(n, keyword, "the global section", GLOBAL_KEYWORDS),
        }
    }

    fn stats(&mut self, n: usize, args: &[&str]) {
        if args.first() != Some(&"socket") {
            let what = args.first().map_or_else(
                || "'stats' alone".to_string(),
                |w| format!("unknown stats directive '{w}'"),
            );
            return self.err(
                n,
                format!("{what}, expected 'stats socket <path> [mode <octal>] [level <level>]'"),
            );
        }
        let Some(&spec) = args.get(1) else {
            return self.err(
                n,
                "'stats socket' without an address, expected 'stats socket <path>', \
                 'stats socket ipv4@<addr>:<port>' or 'stats socket ipv6@[<addr>]:<port>'"
                    .into(),
            );
        };
        let addr = match parse_stats_addr(spec) {
            Ok(a) => a,
            Err(what) => {
                return self.err(
                    n,
                    format!(
                        "{what}, expected a socket path, unix@<path>, ipv4@<addr>:<port> \
                         or ipv6@[<addr>]:<port>"
                    ),
                )
            }
        };
        let mut socket = StatsSocket {
            addr,
            mode: None,
            level: None,
        };
        let mut ok = true;
        let mut k = 2;
        while k < args.len() {
            let (opt, value) = (args[k], args.get(k + 1).copied());
            k += 2;
            match (opt, value) {
                ("mode" | "level", None) => {
                    ok = false;
                    self.err(
                        n,
                        format!("'{opt}' without a value, expected '{opt} <value>'"),
                    );
                }
                ("mode", Some(v)) => match u32::from_str_radix(v, 8) {
                    Ok(m) if m <= 0o7777 && socket.mode.is_none() => socket.mode = Some(m),
                    Ok(_) if socket.mode.is_some() => {
                        ok = false;
                        self.err(n, "duplicate 'mode', expected at most one".into());
                    }
                    _ => {
                        ok = false;
                        self.err(
                            n,
                            format!("'{v}' is not a file mode, expected an octal mode such as 'mode 600'"),
                        );
                    }
                },
                ("level", Some(v)) => {
                    let level = match v {
                        "user" => StatsLevel::User,
                        "operator" => StatsLevel::Operator,
                        "admin" => StatsLevel::Admin,
                        _ => {
                            ok = false;
                            self.err(
                                n,
                                format!("unknown level '{v}', expected user, operator or admin"),
                            );
                            continue;
                        }
                    };
                    if socket.level.replace(level).is_some() {
                        ok = false;
                        self.err(n, "duplicate 'level', expected at most one".into());
                    }
                }
                _ => {
                    self.err(
                        n,
                        format!(
                            "unknown stats socket option '{opt}'{}, expected 'mode <octal>' or \
                             'level <level>'",
                            hint(opt, &["mode", "level"])
                        ),
                    );
                    return;
                }
            }
        }
        if socket.mode.is_some() && matches!(socket.addr, StatsAddr::Tcp(_)) {
            ok = false;
            self.err(
                n,
                "'mode' on a TCP stats socket, expected 'mode' only on a unix socket".into(),
            );
        }
        if ok && self.once(n, "stats socket") {
            self.global.stats_socket = Some(socket);
        }
    }

    fn bind(&mut self, n: usize, args: &[&str]) {
        let Some(&spec) = args.first() else {
            return self.err(
                n,
                format!("'bind' without an address, expected 'bind {EXPECT_ADDR}'"),
            );
        };
        let addr = match parse_addr_port(spec) {
            Ok(a) => a,
            Err(what) => return self.err(n, format!("{what}, expected 'bind {EXPECT_ADDR}'")),
        };
        let errors_before = self.errors.len();
        let mut tls = TlsDraft::default();
        let mut k = 1;
        while k < args.len() {
            match self.tls_option(n, args, k, &mut tls) {
                Some(next) => k = next,
                None => {
                    self.err(
                        n,
                        format!(
                            "unknown bind option '{}'{}, expected 'ssl', 'crt <pem>', \
                             'ca-file <pem>' or 'verify none|optional|required'",
                            args[k],
                            hint(args[k], &["ssl", "crt", "ca-file", "verify"])
                        ),
                    );
                    k += 1;
                }
            }
        }
        let tls = self.finish_tls(n, tls);
        match &tls {
            Some(t) if self.errors.len() == errors_before => {
                self.check_server_tls(n, t, "'bind … ssl'")
            }
            _ => {}
        }
        if self.once(n, "bind") {
            self.global.bind = Some(Bind { addr, tls });
        }
    }

    // ----- TLS options (bind and peer lines) ----------------------------

    /// Reads the TLS option at `words[k]`; returns the index after it, or
    /// `None` if `words[k]` is not a TLS option.
    fn tls_option(
        &mut self,
        n: usize,
        words: &[&str],
        k: usize,
        tls: &mut TlsDraft,
    ) -> Option<usize> {
        let keyword: &'static str = match words[k] {
            "ssl" => {
                if tls.ssl {
                    self.err(n, "duplicate 'ssl', expected at most one".into());
                }
                tls.ssl = true;
                return Some(k + 1);
            }
            "crt" => "crt",
            "ca-file" => "ca-file",
            "verify" => "verify",
            _ => return None,
        };
        if !tls.ssl && tls.first.is_none() {
            tls.first = Some(keyword);
        }
        let Some(&value) = words.get(k + 1) else {
            let arg = if keyword == "verify" {
                "none|optional|required"
            } else {
                "<pem>"
            };
            self.err(
                n,
                format!("'{keyword}' without a value, expected '{keyword} {arg}'"),
            );
            return Some(k + 1);
        };
        let duplicate = match keyword {
            "crt" => tls.opts.crt.replace(PathBuf::from(value)).is_some(),
            "ca-file" => tls.opts.ca_file.replace(PathBuf::from(value)).is_some(),
            _ => {
                let verify = match value {
                    "none" => Verify::None,
                    "optional" => Verify::Optional,
                    "required" => Verify::Required,
                    _ => {
                        self.err(
                            n,
                            format!("unknown verify mode '{value}', expected none, optional or required"),
                        );
                        return Some(k + 2);
                    }
                };
                tls.opts.verify.replace(verify).is_some()
            }
        };
        if duplicate {
            self.err(n, format!("duplicate '{keyword}', expected at most one"));
        }
        Some(k + 2)
    }

    fn finish_tls(&mut self, n: usize, tls: TlsDraft) -> Option<TlsOptions> {
        if tls.ssl {
            return Some(tls.opts);
        }
        if let Some(first) = tls.first {
            self.err(
                n,
                format!("'{first}' without 'ssl', expected 'ssl' to enable TLS on this line"),
            );
        }
        None
    }

    /// Checks TLS settings of a listener (the global bind, a local peer).
    fn check_server_tls(&mut self, n: usize, tls: &TlsOptions, what: &str) {
        if tls.crt.is_none() {
            self.err(
                n,
                format!("{what} without a certificate, expected 'ssl crt <pem>'"),
            );
        }
        if matches!(tls.verify, Some(Verify::Optional | Verify::Required)) && tls.ca_file.is_none()
        {
            self.err(
                n,
                format!(
                    "{what} verifies client certificates without a CA, \
                     expected 'ca-file <pem>' (or 'verify none')"
                ),
            );
        }
    }

    // ----- aggregations -------------------------------------------------

    fn section_line(&mut self, i: usize, n: usize, words: &[&str]) {
        let keyword = words[0];
        match keyword {
            "from" => self.from(i, n, words),
            "forward" => self.forward(i, n, words),
            "peer" => self.peer(i, n, words),
            "dynamic-peers" => self.section_dynamic(i, n, words),
            "strict-peers" => self.section_strict(i, n, words),
            "bind" => self.err(
                n,
                "'bind' is only valid in the global section, expected it under 'global' \
                 or a 'peer <name> <addr>:<port> local' line here"
                    .into(),
            ),
            "stats" | "source" | "metrics" | "maxconn" | "max-entries" | "max-tables" => self.err(
                n,
                format!(
                    "'{keyword}' is only valid in the global section, expected it under 'global'"
                ),
            ),
            _ => self.unknown(n, keyword, "an aggregations section", SECTION_KEYWORDS),
        }
    }

    fn from(&mut self, i: usize, n: usize, words: &[&str]) {
        if let Some(first) = self.drafts[i].from_line {
            return self.err(
                n,
                format!(
                    "duplicate 'from' line (first at line {first}), \
                     expected exactly one per section"
                ),
            );
        }
        self.drafts[i].from_line = Some(n);
        let (Some(&input), Some(&"to"), Some(&to)) = (words.get(1), words.get(2), words.get(3))
        else {
            return self.err(n, format!("malformed 'from' line, expected {EXPECT_FROM}"));
        };
        let mut ok = true;
        let from = if input == "any" {
            FromSpec::Any
        } else if let Err(what) = check_suffix(input) {
            ok = false;
            self.err(
                n,
                format!("{what}, expected 'any' or a suffix after 'from'"),
            );
            FromSpec::Any
        } else {
            FromSpec::Suffix(input.to_string())
        };
        if let Err(what) = check_suffix(to) {
            ok = false;
            self.err(
                n,
                format!("{what}, expected a suffix after 'to', such as '.agg'"),
            );
        }
        if let (FromSpec::Suffix(s), true) = (&from, ok) {
            if s == to {
                ok = false;
                self.err(
                    n,
                    format!(
                        "from suffix '{s}' equal to the to suffix, expected different suffixes"
                    ),
                );
            } else if s.ends_with(to) || to.ends_with(s.as_str()) {
                ok = false;
                self.err(
                    n,
                    format!(
                        "suffixes '{s}' and '{to}' overlap (one ends with the other, so outputs \
                         would be read as inputs or inputs as outputs), expected suffixes \
                         where neither ends with the other"
                    ),
                );
            }
        }
        let (mut no_ascend, mut no_feedback) = (false, false);
        for &opt in &words[4..] {
            let flag = match opt {
                "no-ascend" => &mut no_ascend,
                "no-feedback" => &mut no_feedback,
                _ => {
                    ok = false;
                    self.err(
                        n,
                        format!(
                            "unknown 'from' option '{opt}'{}, expected 'no-ascend' or 'no-feedback'",
                            hint(opt, &["no-ascend", "no-feedback"])
                        ),
                    );
                    continue;
                }
            };
            if std::mem::replace(flag, true) {
                ok = false;
                self.err(n, format!("duplicate '{opt}', expected at most one"));
            }
        }
        if ok {
            self.drafts[i].from = Some((from, to.to_string(), no_ascend, no_feedback));
        }
    }

    fn forward(&mut self, i: usize, n: usize, words: &[&str]) {
        if words.len() < 2 {
            return self.err(
                n,
                "'forward' without a suffix, expected 'forward <.suffix>'".into(),
            );
        }
        for &suffix in &words[1..] {
            if let Err(what) = check_suffix(suffix) {
                self.err(n, format!("{what}, expected 'forward <.suffix>'"));
            } else if let Some((_, first)) =
                self.drafts[i].forward.iter().find(|(s, _)| s == suffix)
            {
                let first = *first;
                self.err(
                    n,
                    format!("duplicate forward suffix '{suffix}' (first at line {first}), expected each suffix once"),
                );
            } else {
                self.drafts[i].forward.push((suffix.to_string(), n));
            }
        }
    }

    fn peer(&mut self, i: usize, n: usize, words: &[&str]) {
        let Some(&name) = words.get(1) else {
            self.drafts[i].broken_peer = true;
            return self.err(n, format!("'peer' without a name, expected {EXPECT_PEER}"));
        };
        let mut ok = true;
        let mut k = 2;
        let mut addr = None;
        if let Some(&w) = words.get(2).filter(|w| looks_like_addr(w)) {
            match parse_addr_port(w) {
                Ok(a) => addr = Some(a),
                Err(what) => {
                    ok = false;
                    self.err(n, format!("{what}, expected {EXPECT_PEER}"));
                }
            }
            k = 3;
        }
        let errors_before = self.errors.len();
        let mut role: Option<(Role, &str)> = None;
        let mut group = None;
        let mut tls = TlsDraft::default();
        while k < words.len() {
            let w = words[k];
            let this_role = match w {
                "local" => Role::Local,
                "up" => Role::Up,
                "down" => Role::Down,
                "group" => {
                    match words.get(k + 1).map(|v| v.parse::<u32>()) {
                        Some(Ok(g)) if group.is_none() => group = Some(g),
                        Some(Ok(_)) => {
                            ok = false;
                            self.err(n, "duplicate 'group', expected at most one".into());
                        }
                        _ => {
                            ok = false;
                            self.err(
                                n,
                                "'group' without a number, expected 'group <n>' (0 to 4294967295)"
                                    .into(),
                            );
                        }
                    }
                    k += 2;
                    continue;
                }
                _ => {
                    if let Some(next) = self.tls_option(n, words, k, &mut tls) {
                        k = next;
                    } else {
                        ok = false;
                        let message = if looks_like_addr(w) {
                            format!(
                                "address '{w}' after the peer's options, expected {EXPECT_PEER}"
                            )
                        } else {
                            format!(
                                "unknown peer option '{w}'{}, expected local, up, down, \
                                 group <n> or ssl options",
                                hint(w, PEER_OPTIONS)
                            )
                        };
                        self.err(n, message);
                        k += 1;
                    }
                    continue;
                }
            };
            if let Some((_, prev)) = role {
                ok = false;
                self.err(
                    n,
                    format!(
                        "peer '{name}' is both '{prev}' and '{w}', expected at most one of local, up, down"
                    ),
                );
            } else {
                role = Some((this_role, w));
            }
            k += 1;
        }
        let role = role.map_or(Role::Node, |(r, _)| r);
        if group.is_some() && role != Role::Down {
            ok = false;
            self.err(
                n,
                format!(
                    "'group' on peer '{name}' which is not 'down', expected \
                     'peer {name} <addr>:<port> down group <n>'"
                ),
            );
        }
        let tls = self.finish_tls(n, tls);
        ok &= self.errors.len() == errors_before;
        if role == Role::Local && ok {
            if let Some(t) = &tls {
                if addr.is_some() {
                    self.check_server_tls(n, t, "local peer with 'ssl'");
                } else {
                    ok = false;
                    self.err(
                        n,
                        "'ssl' on a local peer without an address, expected the TLS options \
                         on the global 'bind' it listens on"
                            .into(),
                    );
                }
            }
        }
        // A peer with a broken line is not kept, so that section-level checks
        // do not report it a second time (e.g. "needs an address").
        self.drafts[i].broken_peer |= !ok;
        if ok {
            self.drafts[i].peers.push(PeerConf {
                name: name.to_string(),
                addr,
                role,
                group,
                tls,
                line: n,
            });
        }
    }

    fn section_strict(&mut self, i: usize, n: usize, words: &[&str]) {
        if let Some(first) = self.drafts[i].strict_line {
            return self.err(
                n,
                format!("duplicate 'strict-peers' (first at line {first}), expected at most one per section"),
            );
        }
        if let Some(extra) = words.get(1) {
            return self.err(
                n,
                format!("unexpected '{extra}' after 'strict-peers', expected 'strict-peers' alone"),
            );
        }
        self.drafts[i].strict_line = Some(n);
    }

    fn section_dynamic(&mut self, i: usize, n: usize, words: &[&str]) {
        if let Some(first) = self.drafts[i].dynamic_line {
            return self.err(
                n,
                format!("duplicate 'dynamic-peers' (first at line {first}), expected at most one per section"),
            );
        }
        self.drafts[i].dynamic_line = Some(n);
        match words.get(1) {
            None => {}
            Some(&"from") if words.len() > 2 => {
                for &c in &words[2..] {
                    match c.parse::<Cidr>() {
                        Ok(cidr) => self.drafts[i].dynamic_from.push(cidr),
                        Err(what) => self.err(
                            n,
                            format!("{what} in '{c}', expected an address block such as 192.168.0.0/16 or 2001:db8::/32"),
                        ),
                    }
                }
            }
            Some(&"from") => self.err(
                n,
                "'dynamic-peers from' without an address block, expected \
                 'dynamic-peers from <cidr> [<cidr>…]'"
                    .into(),
            ),
            Some(other) => self.err(
                n,
                format!(
                    "unexpected '{other}' after 'dynamic-peers', expected 'dynamic-peers' or \
                     'dynamic-peers from <cidr> [<cidr>…]'"
                ),
            ),
        }
    }

    fn unknown(&mut self, n: usize, keyword: &str, place: &str, valid: &[&str]) {
        let all: Vec<&str> = GLOBAL_KEYWORDS
            .iter()
            .chain(SECTION_KEYWORDS)
            .chain(HEADERS)
            .copied()
            .collect();
        let hint = match closest(keyword, &all) {
            Some(k) if valid.contains(&k) => format!(" (did you mean '{k}'?)"),
            Some(k) if HEADERS.contains(&k) => format!(" (did you mean '{k}', a section header?)"),
            Some(k) if GLOBAL_KEYWORDS.contains(&k) => {
                format!(" (did you mean '{k}'? it belongs in the global section)")
            }
            Some(k) => format!(" (did you mean '{k}'? it belongs in an aggregations section)"),
            None => String::new(),
        };
        self.err(
            n,
            format!(
                "unknown directive '{keyword}' in {place}{hint}, expected one of: {}",
                valid.join(", ")
            ),
        );
    }

    // ----- whole-file validation ----------------------------------------

    fn finish(mut self) -> Result<Config, ConfigErrors> {
        if self.drafts.is_empty() && self.errors.is_empty() {
            self.errors.push(ConfigError::File {
                path: self.path.to_path_buf(),
                message: "no aggregations section, expected at least one \
                          'aggregations <name>' section"
                    .into(),
            });
        }
        let drafts = std::mem::take(&mut self.drafts);
        let sections: Vec<Section> = drafts
            .into_iter()
            .filter_map(|d| self.finish_section(d))
            .collect();
        self.check_listeners(&sections);
        if self.errors.is_empty() {
            return Ok(Config {
                global: self.global,
                sections,
                path: self.path.to_path_buf(),
            });
        }
        self.errors.sort_by_key(|e| e.line().unwrap_or(usize::MAX));
        Err(ConfigErrors(self.errors))
    }

    fn finish_section(&mut self, d: Draft) -> Option<Section> {
        let name = d.name.as_str();
        let mut ok = true;
        let mut local: Option<&PeerConf> = None;
        for (j, p) in d.peers.iter().enumerate() {
            if let Some(first) = d.peers[..j].iter().find(|q| q.name == p.name) {
                ok = false;
                self.err(
                    p.line,
                    format!(
                        "duplicate peer name '{}' (first at line {}), expected unique peer \
                         names in a section",
                        p.name, first.line
                    ),
                );
                continue;
            }
            if p.role == Role::Local {
                if let Some(first) = local {
                    ok = false;
                    self.err(
                        p.line,
                        format!(
                            "second local peer '{}' (first: '{}' at line {}), expected at most \
                             one local peer per section",
                            p.name, first.name, first.line
                        ),
                    );
                } else {
                    local = Some(p);
                }
                continue;
            }
            ok &= self.check_remote_peer(p);
        }
        match local {
            Some(l) => {
                if l.addr.is_none() && self.global.bind.is_none() {
                    ok = false;
                    self.err(
                        l.line,
                        format!(
                            "local peer '{}' has no address and there is no global 'bind', \
                             expected 'peer {} <addr>:<port> local' or 'bind <addr>:<port>' \
                             in the global section",
                            l.name, l.name
                        ),
                    );
                }
            }
            None => {
                if self.global.bind.is_none() {
                    ok = false;
                    self.err(
                        d.line,
                        format!(
                            "section '{name}' has no listening address, expected a \
                             'peer <name> <addr>:<port> local' line or 'bind <addr>:<port>' \
                             in the global section"
                        ),
                    );
                }
                // With the global bind the load balancers call us by the
                // section name: a remote peer of that name could not be told
                // apart from ourselves.
                if let Some(p) = d.peers.iter().find(|p| p.name == d.name) {
                    ok = false;
                    self.err(
                        p.line,
                        format!(
                            "peer '{name}' has the section's name, which is the aggregator's \
                             own name when there is no local peer, expected another name"
                        ),
                    );
                }
            }
        }
        let dynamic_peers = d.dynamic_line.is_some() || self.global.dynamic_peers;
        let no_remote = d.peers.iter().all(|p| p.role == Role::Local) && !d.broken_peer;
        if !dynamic_peers && no_remote && ok {
            ok = false;
            self.err(
                d.line,
                format!(
                    "section '{name}' has no remote peer and no 'dynamic-peers', expected \
                     at least one 'peer <name> <addr>:<port>' line or 'dynamic-peers'"
                ),
            );
        }
        let Some(from_line) = d.from_line else {
            self.err(
                d.line,
                format!("section '{name}' has no 'from' line, expected {EXPECT_FROM}"),
            );
            return None;
        };
        // A broken `from` line has been reported already.
        let (from, to, no_ascend, no_feedback) = d.from?;
        let errors_before = self.errors.len();
        for (f, line) in &d.forward {
            if *f == to {
                ok = false;
                self.err(
                    *line,
                    format!(
                        "forward suffix '{f}' equal to the to suffix (line {from_line}), expected a \
                         suffix other than the section's output",
                    ),
                );
            } else if from == FromSpec::Suffix(f.clone()) {
                ok = false;
                self.err(
                    *line,
                    format!(
                        "forward suffix '{f}' equal to the from suffix (line {from_line}), expected a \
                         suffix other than the section's input",
                    ),
                );
            } else if let Some(other) = [Some(to.as_str()), from.suffix()]
                .into_iter()
                .flatten()
                .find(|o| f.ends_with(o) || o.ends_with(f.as_str()))
            {
                ok = false;
                self.err(
                    *line,
                    format!(
                        "forward suffix '{f}' and suffix '{other}' of line {from_line} overlap (one \
                         ends with the other, so relayed tables would be taken for outputs or \
                         inputs), expected suffixes where neither ends with the other",
                    ),
                );
            }
        }
        // A broken `forward` or `peer` line (maybe the up peer) was reported
        // already: checking the topology would only add confusing errors.
        if self.errors.len() == errors_before && !d.broken_peer {
            ok &= self.check_levels(&d.peers, &d.forward, no_ascend, from_line, d.line);
        }
        (ok && !d.duplicate).then(|| Section {
            name: d.name,
            line: d.line,
            from,
            to,
            no_ascend,
            no_feedback,
            forward: d.forward.into_iter().map(|(f, _)| f).collect(),
            peers: d.peers,
            dynamic_peers,
            dynamic_from: d.dynamic_from,
            strict_peers: d.strict_line.is_some() || self.global.strict_peers,
        })
    }

    /// Mistakes of a multi-level setup that would make data flow in a loop
    /// or go nowhere (the grammar already makes a peer both `up` and `down`
    /// impossible):
    ///
    /// - `forward` without an `up` peer: nothing would ever be relayed;
    /// - `no-ascend` without an `up` peer: nothing to stop;
    /// - an `up` or `down` peer at our own listening address: we would
    ///   aggregate our own outputs;
    /// - an `up` or `down` peer at the address of another peer: the same
    ///   aggregator seen under two names (both above and below us, or twice
    ///   in a sum).
    fn check_levels(
        &mut self,
        peers: &[PeerConf],
        forward: &[(String, usize)],
        no_ascend: bool,
        from_line: usize,
        section_line: usize,
    ) -> bool {
        let mut ok = true;
        let has_up = peers.iter().any(|p| p.role == Role::Up);
        if !has_up {
            if let Some((f, line)) = forward.first() {
                ok = false;
                self.err(
                    *line,
                    format!(
                        "'forward {f}' in a section without an 'up' peer: forwarded tables only \
                         come from upper levels, expected a 'peer <name> <addr>:<port> up' line \
                         (or no 'forward')"
                    ),
                );
            }
            if no_ascend {
                ok = false;
                self.err(
                    from_line,
                    "'no-ascend' in a section without an 'up' peer, expected a \
                     'peer <name> <addr>:<port> up' line (or no 'no-ascend')"
                        .into(),
                );
            }
        }
        let local = peers.iter().find(|p| p.role == Role::Local);
        let listen = local
            .and_then(|p| p.addr)
            .or_else(|| self.global.bind.as_ref().map(|b| b.addr));
        let level = |p: &PeerConf| matches!(p.role, Role::Up | Role::Down);
        let role = |p: &PeerConf| match p.role {
            Role::Up => "up",
            Role::Down => "down",
            Role::Local => "local",
            Role::Node => "node",
        };
        for (j, p) in peers.iter().enumerate() {
            let (Some(addr), true) = (p.addr, p.role != Role::Local) else {
                continue;
            };
            if level(p) {
                if let Some(l) = listen.filter(|l| *l == addr || is_own(*l, addr)) {
                    ok = false;
                    let line = local.map_or(section_line, |p| p.line);
                    self.err(
                        p.line,
                        format!(
                            "{} peer '{}' at {addr} is this aggregator itself (it listens on {l}, \
                             line {line}): a loop, expected the address of another aggregator",
                            role(p),
                            p.name
                        ),
                    );
                    continue;
                }
            }
            let twin = peers[..j]
                .iter()
                .find(|q| q.role != Role::Local && q.addr == Some(addr) && (level(p) || level(q)));
            if let Some(q) = twin {
                ok = false;
                self.err(
                    p.line,
                    format!(
                        "{} peer '{}' has the address {addr} of {} peer '{}' (line {}): one \
                         process at two places of the topology makes a loop or a double count, \
                         expected each aggregator once",
                        role(p),
                        p.name,
                        role(q),
                        q.name,
                        q.line
                    ),
                );
            }
        }
        ok
    }

    /// A peer we connect to: needs a usable address, of the family of the
    /// global `source` if any.
    fn check_remote_peer(&mut self, p: &PeerConf) -> bool {
        let Some(addr) = p.addr else {
            self.err(
                p.line,
                format!(
                    "peer '{}' has no address (only the local peer may omit it), expected \
                     'peer {} <addr>:<port>'",
                    p.name, p.name
                ),
            );
            return false;
        };
        if addr.ip().is_unspecified() || addr.port() == 0 {
            self.err(
                p.line,
                format!(
                    "peer '{}' address {addr} cannot be connected to, expected a host \
                     address and a non-zero port",
                    p.name
                ),
            );
            return false;
        }
        if let Some(source) = self.global.source {
            if source.is_ipv4() != addr.is_ipv4() {
                let line = self.seen_line("source").unwrap_or(0);
                self.err(
                    p.line,
                    format!(
                        "peer '{}' address {addr} is not of the family of the global source \
                         {source} (line {line}), expected an address of the same family",
                        p.name
                    ),
                );
                return false;
            }
        }
        true
    }

    /// Sections sharing an address must be told apart by the hello (their
    /// local names differ) and agree on TLS; listeners must not collide with
    /// one another.
    fn check_listeners(&mut self, sections: &[Section]) {
        struct PeerListener<'s> {
            addr: SocketAddr,
            /// Our name there (hello line 2).
            name: &'s str,
            section: &'s str,
            tls: Option<TlsOptions>,
            /// Line of the address (local peer, else section header).
            line: usize,
        }
        let mut peer_listeners: Vec<PeerListener> = Vec::new();
        for s in sections {
            let Some(addr) = s.listen_addr(&self.global) else {
                continue;
            };
            let line = match s.local_peer() {
                Some(PeerConf {
                    addr: Some(_),
                    line,
                    ..
                }) => *line,
                _ => s.line,
            };
            let this = PeerListener {
                addr,
                name: s.local_name(),
                section: &s.name,
                tls: s.listen_tls(&self.global).cloned(),
                line,
            };
            let shared = peer_listeners.iter().filter(|l| l.addr == addr);
            if let Some(other) = shared.clone().find(|l| l.name == this.name) {
                let message = format!(
                    "section '{}' listens on {addr} under the name '{}' like section \
                     '{}' (line {}), so incoming hellos could not tell them apart, \
                     expected a different local peer name or address",
                    this.section, this.name, other.section, other.line
                );
                self.err(line, message);
            } else if let Some(other) = shared.clone().find(|l| l.tls != this.tls) {
                let message = format!(
                    "section '{}' listens on {addr} with other TLS settings than section \
                     '{}' (line {}), expected the same 'ssl' options on both (they share \
                     one listener) or different addresses",
                    this.section, other.section, other.line
                );
                self.err(line, message);
            }
            peer_listeners.push(this);
        }
        // Every socket the process will listen on, one per distinct peer address.
        let mut listeners: Vec<(SocketAddr, String, usize)> = Vec::new();
        for PeerListener {
            addr,
            section,
            line,
            ..
        } in &peer_listeners
        {
            if !listeners.iter().any(|(a, _, _)| a == addr) {
                listeners.push((
                    *addr,
                    format!("the peer listener of section '{section}'"),
                    *line,
                ));
            }
        }
        if let Some(StatsSocket {
            addr: StatsAddr::Tcp(a),
            ..
        }) = &self.global.stats_socket
        {
            let line = self.seen_line("stats socket").unwrap_or(0);
            listeners.push((*a, "the stats socket".into(), line));
        }
        if let Some(a) = self.global.metrics {
            let line = self.seen_line("metrics").unwrap_or(0);
            listeners.push((a, "the metrics endpoint".into(), line));
        }
        for j in 0..listeners.len() {
            for i in 0..j {
                let ((a, what_a, line_a), (b, what_b, line_b)) = (&listeners[i], &listeners[j]);
                if a == b || overlaps(*a, *b) {
                    let message = format!(
                        "{what_b} on {b} collides with {what_a} on {a} (line {line_a}), \
                         expected different ports{}",
                        if a != b
                            && what_a.starts_with("the peer")
                            && what_b.starts_with("the peer")
                        {
                            " or the very same address (to share one listener)"
                        } else {
                            ""
                        }
                    );
                    self.err(*line_b, message);
                }
            }
        }
    }
}

/// Two different listening addresses that cannot both be bound: same port,
/// and one is a wildcard covering the other (`[::]` is dual-stack on Linux).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |w: SocketAddr, x: SocketAddr| w.ip().is_unspecified() && (w.is_ipv6() || x.is_ipv4());
    a != b && a.port() != 0 && a.port() == b.port() && (covers(a, b) || covers(b, a))
}

/// Whether connecting to `peer` reaches our listener on `listen`: a
/// wildcard listener takes the port on every local address, and loopback
/// addresses are always local.
fn is_own(listen: SocketAddr, peer: SocketAddr) -> bool {
    listen.port() == peer.port()
        && listen.ip().is_unspecified()
        && peer.ip().is_loopback()
        && (listen.is_ipv6() || peer.is_ipv4())
}

/// Whether a word after a peer name is meant as an address.
fn looks_like_addr(w: &str) -> bool {
    w.contains(':') || w.starts_with('[') || w.starts_with(|c: char| c.is_ascii_digit())
}

/// `.suffix`: a dot and at least one more character, no `/`.
fn check_suffix(s: &str) -> Result<(), String> {
    if s.len() < 2 || !s.starts_with('.') || s.contains('/') {
        return Err(format!(
            "'{s}' is not a table suffix (a '.' followed by a name, such as '.agg')"
        ));
    }
    Ok(())
}

/// `a.b.c.d:port`, `[ipv6]:port`, `:port` or `*:port` (any IPv4 address).
fn parse_addr_port(s: &str) -> Result<SocketAddr, String> {
    let (ip, port): (IpAddr, &str) = if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("'{s}' has no port"))?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("'{ip}' is not an IPv6 address"))?;
        (ip.into(), port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("'{s}' has no port"))?;
        if host.contains(':') {
            return Err(format!(
                "'{s}' is an IPv6 address without brackets, which cannot carry a port"
            ));
        }
        let ip = match host {
            "" | "*" => Ipv4Addr::UNSPECIFIED,
            _ => host.parse().map_err(|_| {
                format!("'{host}' is not an IP address (host names are not resolved)")
            })?,
        };
        (ip.into(), port)
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("'{port}' is not a port number (0 to 65535)"))?;
    Ok(SocketAddr::new(ip, port))
}

/// `source`: an address alone (port 0 = any) or with a port.
fn parse_source(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    if let Some(ip) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("'{ip}' is not an IPv6 address"))?;
        return Ok(SocketAddr::new(ip.into(), 0));
    }
    parse_addr_port(s)
}

/// The `stats socket` address forms.
fn parse_stats_addr(s: &str) -> Result<StatsAddr, String> {
    if let Some(path) = s.strip_prefix("unix@") {
        if path.is_empty() {
            return Err("'unix@' without a path".into());
        }
        return Ok(StatsAddr::Unix(path.into()));
    }
    if let Some(a) = s.strip_prefix("ipv4@") {
        let addr = parse_addr_port(a)?;
        if !addr.is_ipv4() {
            return Err(format!("'{a}' is not an IPv4 address and port"));
        }
        return Ok(StatsAddr::Tcp(addr));
    }
    if let Some(a) = s.strip_prefix("ipv6@") {
        if !a.starts_with('[') {
            return Err(format!("'{a}' is not a bracketed IPv6 address and port"));
        }
        return parse_addr_port(a).map(StatsAddr::Tcp);
    }
    if let Some((family, _)) = s.split_once('@').filter(|(f, _)| !f.contains('/')) {
        return Err(format!("unknown address family '{family}@'"));
    }
    if s.starts_with('/') || s.starts_with('.') || !s.contains(':') {
        return Ok(StatsAddr::Unix(s.into()));
    }
    parse_addr_port(s).map(StatsAddr::Tcp)
}

/// ` (did you mean 'x'?)` when a candidate is close to `word`.
fn hint(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates).map_or_else(String::new, |k| format!(" (did you mean '{k}'?)"))
}

/// The candidate closest to `word`, if close enough to be a typo.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(&word.to_ascii_lowercase(), c), *c))
        .filter(|(d, c)| *d <= ((c.len() + 1) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of
/// two neighbouring characters (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests;
