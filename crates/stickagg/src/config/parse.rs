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
            "maxconn" => match args {
                [v] => match v.parse::<usize>() {
                    Ok(m) if m > 0 => {
                        if self.once(n, "maxconn") {
                            self.global.maxconn = Some(m);
                        }
                    }
                    _ => self.err(
                        n,
                        format!(
                            "'{v}' is not a connection count, expected 'maxconn <n>' with n > 0"
                        ),
                    ),
                },
                _ => self.err(
                    n,
                    "'maxconn' takes one number, expected 'maxconn <n>'".into(),
                ),
            },
            "max-entries" => match args {
                [v] => match v.parse::<usize>() {
                    Ok(m) if m > 0 => {
                        if self.once(n, "max-entries") {
                            self.global.max_entries = Some(m);
                        }
                    }
                    _ => self.err(
                        n,
                        format!(
                            "'{v}' is not an entry count, expected 'max-entries <n>' with n > 0"
                        ),
                    ),
                },
                _ => self.err(
                    n,
                    "'max-entries' takes one number, expected 'max-entries <n>'".into(),
                ),
            },
            "max-tables" => match args {
                [v] => match v.parse::<usize>() {
                    Ok(m) if m > 0 => {
                        if self.once(n, "max-tables") {
                            self.global.max_tables = Some(m);
                        }
                    }
                    _ => self.err(
                        n,
                        format!("'{v}' is not a table count, expected 'max-tables <n>' with n > 0"),
                    ),
                },
                _ => self.err(
                    n,
                    "'max-tables' takes one number, expected 'max-tables <n>'".into(),
                ),
            },
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
mod tests {
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
        let c = ok("aggregations a\nfrom any to .agg\npeer gpe-a 0.0.0.0:10000 local\ndynamic-peers\n\
                    aggregations b\nfrom any to .agg\npeer gpe-b 0.0.0.0:10000 local\ndynamic-peers\n");
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
        let c =
            ok("aggregations data\nfrom any to .agg\npeer gpe 127.0.0.1:0 local\ndynamic-peers\n");
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
        assert_error(text, 7, &["section 'b' listens on 0.0.0.0:10000 under the name 'gpe' like section 'a' (line 3)"]);
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
            [
                "t.cfg:2", "t.cfg:3", "t.cfg:4", "t.cfg:4", "t.cfg:5", "t.cfg:6", "t.cfg:7",
                "t.cfg:8"
            ],
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
}
