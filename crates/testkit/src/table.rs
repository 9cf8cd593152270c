//! Parsing HAProxy's `show table <name>` output.
//!
//! Observed format (HAProxy 2.6.12 and 3.0.11, identical except that 3.0 adds
//! `shard=`): a header line, one line per entry, then an empty line:
//!
//! ```text
//! # table: mypeers/t, type: ip, size:1024, used:1
//! 0x55b1f6cd9de0: key=127.0.251.50 use=0 exp=29990 shard=0 server_id=1 gpc0=3 conn_cnt=3 http_req_cnt=3 http_req_rate(10000)=3 bytes_in_rate(60000)=249 server_key=s1 gpt0=0 gpt1=0 gpt2=7
//! ```
//!
//! * Data values come in data-type id order, as `name=value`.
//! * Rates (frequency counters) carry their period in milliseconds in the
//!   name: `http_req_rate(10000)=3`.
//! * Arrays (`gpt(3)`, `gpc(2)`, `gpc_rate(2,5s)`) are NOT printed as one
//!   value: each element gets its own name, the index inserted before the
//!   first `_` of the type name: `gpt0=0 gpt1=0 gpt2=7`,
//!   `gpc0=0 gpc1=4 gpc0_rate(5000)=0 gpc1_rate(5000)=1`. So the element 0 of
//!   a `gpc` array prints exactly like the legacy `gpc0` type.
//! * `server_key=-` when unset; `exp=0` for tables without `expire`. `exp` may
//!   exceed the configured expire by a millisecond on 3.0 (per-thread clocks).
//! * String keys are escaped: space, `=` and `\` get a backslash
//!   (`key=a\ b\=c\\x`), control bytes are `\t \n \r \e` or `\xHH`.
//!   Binary keys are printed as hex.

use std::collections::BTreeMap;

/// One entry of `show table`, as HAProxy prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// Address of the entry in HAProxy's memory (`0x55b1f6cd9de0`); only
    /// useful to tell whether an entry was recreated.
    pub ptr: String,
    /// The key, unescaped (see [`unescape`]): `127.0.0.1`, `::1`, `42`, a
    /// string, or hex digits for binary keys.
    pub key: String,
    /// `use=`: how many streams currently reference the entry.
    pub use_count: Option<u64>,
    /// `exp=`: milliseconds until expiry as printed. HAProxy prints 0 for a
    /// table without `expire`; `None` only if the field was absent.
    pub exp: Option<u64>,
    /// `shard=` (HAProxy 3.0+; absent in 2.6).
    pub shard: Option<u64>,
    /// Data values, as text. Every value is stored under the name HAProxy
    /// printed (`http_req_rate(10000)`), and a name with a parenthesised
    /// period is also stored without it (`http_req_rate`), so tests need not
    /// know the configured period.
    pub values: BTreeMap<String, String>,
}

impl TableEntry {
    /// The value of `name` as text (`"s1"` for `server_key`, `"-"` if unset).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `name` as an unsigned integer: `get_u64("http_req_cnt")`,
    /// `get_u64("http_req_rate")` (period optional), `get_u64("gpt2")`.
    pub fn get_u64(&self, name: &str) -> Option<u64> {
        self.get(name)?.parse().ok()
    }

    /// The elements of an array data type, in index order, named the way the
    /// config names the type: `get_array_u64("gpt")` collects `gpt0`, `gpt1`,
    /// ...; `get_array_u64("gpc_rate")` collects `gpc0_rate`, `gpc1_rate`, ...
    /// (HAProxy inserts the index before the first `_`). Empty if absent.
    /// Beware: for a table storing the legacy `gpc0`/`gpc1` types,
    /// `get_array_u64("gpc")` returns those, since HAProxy prints them alike.
    pub fn get_array_u64(&self, name: &str) -> Vec<u64> {
        let (prefix, suffix) = match name.find('_') {
            Some(i) => name.split_at(i),
            None => (name, ""),
        };
        (0..)
            .map_while(|i| self.get_u64(&format!("{prefix}{i}{suffix}")))
            .collect()
    }

    /// The period in milliseconds printed with the rate `name`
    /// (`period_ms("http_req_rate")` is `Some(10000)` for
    /// `http_req_rate(10000)=3`).
    pub fn period_ms(&self, name: &str) -> Option<u64> {
        self.values.keys().find_map(|k| {
            k.strip_prefix(name)?
                .strip_prefix('(')?
                .strip_suffix(')')?
                .parse()
                .ok()
        })
    }
}

/// Parses a whole `show table <name>` answer into its entries, skipping the
/// `# table:` header, empty lines and anything else that is not an entry.
pub fn parse_show_table(text: &str) -> Vec<TableEntry> {
    text.lines().filter_map(parse_entry).collect()
}

/// Parses one entry line (`0x...: key=... use=... exp=... name=value ...`);
/// `None` if the line is not an entry.
pub fn parse_entry(line: &str) -> Option<TableEntry> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (ptr, rest) = line.split_once(": ")?;
    if !ptr.starts_with("0x") || !ptr[2..].chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut entry = TableEntry {
        ptr: ptr.to_owned(),
        key: String::new(),
        use_count: None,
        exp: None,
        shard: None,
        values: BTreeMap::new(),
    };
    let mut saw_key = false;
    for token in split_unescaped_spaces(rest) {
        let (name, value) = split_name_value(token)?;
        let value = unescape(value);
        match name {
            "key" => {
                entry.key = value;
                saw_key = true;
            }
            "use" => entry.use_count = value.parse().ok(),
            "exp" => entry.exp = value.parse().ok(),
            "shard" => entry.shard = value.parse().ok(),
            _ => {
                if let Some((base, _period)) = name.split_once('(') {
                    if name.ends_with(')') {
                        entry.values.insert(base.to_owned(), value.clone());
                    }
                }
                entry.values.insert(name.to_owned(), value);
            }
        }
    }
    saw_key.then_some(entry)
}

/// Splits on spaces that are not escaped by a backslash (string keys escape
/// their spaces as `\ `).
fn split_unescaped_spaces(s: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ' ' {
            if i > start {
                tokens.push(&s[start..i]);
            }
            start = i + 1;
        }
    }
    if start < s.len() {
        tokens.push(&s[start..]);
    }
    tokens
}

/// `name=value` at the first unescaped `=` (names never contain one).
fn split_name_value(token: &str) -> Option<(&str, &str)> {
    token.split_once('=')
}

/// Undoes HAProxy's `dump_text()` escaping used for string keys:
/// `\ ` `\=` `\\` → the character, `\t \n \r \e` → control bytes, `\xHH` → the
/// byte. Bytes that do not form UTF-8 are replaced by U+FFFD.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 == bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let c = bytes[i + 1];
        i += 2;
        match c {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'e' => out.push(0x1b),
            b'x' if i + 2 <= bytes.len() => {
                match std::str::from_utf8(&bytes[i..i + 2])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.extend_from_slice(b"\\x"),
                }
            }
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real output captured from Debian's HAProxy 2.6.12-1+deb12u4 with
    //   table t type ip size 1k expire 30s store http_req_cnt,http_req_rate(10s),gpc0,gpt(3),server_id,server_key,conn_cnt,bytes_in_rate(1m)
    // and `stick on src` to a server named s1.
    const SHOW_26: &str = "# table: mypeers/t, type: ip, size:1024, used:2
0x7f97440426d0: key=127.0.0.1 use=0 exp=29995 server_id=1 gpc0=1 conn_cnt=1 http_req_cnt=1 http_req_rate(10000)=1 bytes_in_rate(60000)=93 server_key=s1 gpt0=0 gpt1=0 gpt2=7
0x55e2dec07e10: key=127.0.251.50 use=0 exp=29987 server_id=1 gpc0=3 conn_cnt=3 http_req_cnt=3 http_req_rate(10000)=3 bytes_in_rate(60000)=249 server_key=s1 gpt0=0 gpt1=0 gpt2=7

";

    // Same config, HAProxy 3.0.11 built from Debian trixie's source package.
    const SHOW_30: &str = "# table: mypeers/t, type: ip, size:1024, used:2
0x55b1f6cd9de0: key=127.0.251.50 use=0 exp=29990 shard=0 server_id=1 gpc0=3 conn_cnt=3 http_req_cnt=3 http_req_rate(10000)=3 bytes_in_rate(60000)=249 server_key=s1 gpt0=0 gpt1=0 gpt2=7
0x7fde40053750: key=127.0.0.1 use=0 exp=29996 shard=0 server_id=1 gpc0=1 conn_cnt=1 http_req_cnt=1 http_req_rate(10000)=1 bytes_in_rate(60000)=93 server_key=s1 gpt0=0 gpt1=0 gpt2=7

";

    #[test]
    fn parses_26_output() {
        let entries = parse_show_table(SHOW_26);
        assert_eq!(entries.len(), 2);
        let e = &entries[1];
        assert_eq!(e.ptr, "0x55e2dec07e10");
        assert_eq!(e.key, "127.0.251.50");
        assert_eq!(e.use_count, Some(0));
        assert_eq!(e.exp, Some(29987));
        assert_eq!(e.shard, None);
        assert_eq!(e.get_u64("http_req_cnt"), Some(3));
        assert_eq!(e.get_u64("http_req_rate"), Some(3));
        assert_eq!(e.get_u64("http_req_rate(10000)"), Some(3));
        assert_eq!(e.period_ms("http_req_rate"), Some(10000));
        assert_eq!(e.period_ms("bytes_in_rate"), Some(60000));
        assert_eq!(e.get_u64("bytes_in_rate"), Some(249));
        assert_eq!(e.get_u64("gpc0"), Some(3));
        assert_eq!(e.get_u64("server_id"), Some(1));
        assert_eq!(e.get("server_key"), Some("s1"));
        assert_eq!(e.get_array_u64("gpt"), vec![0, 0, 7]);
        assert!(!e.values.contains_key("key"));
    }

    #[test]
    fn parses_30_output() {
        let entries = parse_show_table(SHOW_30);
        assert_eq!(entries.len(), 2);
        let e = &entries[0];
        assert_eq!(e.key, "127.0.251.50");
        assert_eq!(e.exp, Some(29990));
        assert_eq!(e.shard, Some(0));
        assert!(!e.values.contains_key("shard"));
        assert_eq!(e.get_u64("http_req_cnt"), Some(3));
        assert_eq!(e.get_u64("conn_cnt"), Some(3));
        assert_eq!(e.get("server_key"), Some("s1"));
        assert_eq!(e.get_array_u64("gpt"), vec![0, 0, 7]);
        assert_eq!(entries[1].get_u64("gpc0"), Some(1));
    }

    #[test]
    fn parses_gpc_arrays_and_rates() {
        // 3.0.11, `table i type integer size 1k store http_req_cnt,gpt0,gpc(2),gpc_rate(2,5s)`
        let line = "0x56374d5e8e58: key=42 use=0 exp=0 shard=0 gpt0=5 http_req_cnt=4 gpc0=0 gpc1=4 gpc0_rate(5000)=0 gpc1_rate(5000)=1";
        let e = parse_entry(line).unwrap();
        assert_eq!(e.key, "42");
        assert_eq!(e.exp, Some(0));
        assert_eq!(e.get_array_u64("gpc"), vec![0, 4]);
        assert_eq!(e.get_array_u64("gpc_rate"), vec![0, 1]);
        assert_eq!(e.get_u64("gpc1_rate"), Some(1));
        assert_eq!(e.period_ms("gpc1_rate"), Some(5000));
        assert_eq!(e.get_array_u64("gpt"), vec![5]);
        assert!(e.get_array_u64("absent").is_empty());
    }

    #[test]
    fn unescapes_string_keys() {
        // 2.6.12, string table, key sent as the header value `a b=c\x`.
        let line = r"0x7fae88042788: key=a\ b\=c\\x use=0 exp=26986 http_req_cnt=1";
        let e = parse_entry(line).unwrap();
        assert_eq!(e.key, r"a b=c\x");
        assert_eq!(e.get_u64("http_req_cnt"), Some(1));
        assert_eq!(unescape(r"\t\n\r\e\x41\xzz"), "\t\n\r\x1bA\\xzz");
        assert_eq!(unescape("plain"), "plain");
    }

    #[test]
    fn other_key_types() {
        // 3.0.11 ipv6 and binary tables.
        let e = parse_entry("0x56374d537d38: key=::1 use=0 exp=0 shard=0 http_req_cnt=4").unwrap();
        assert_eq!(e.key, "::1");
        let e =
            parse_entry("0x56374d5f1808: key=3031303200000000 use=1 exp=0 shard=0 http_req_cnt=0")
                .unwrap();
        assert_eq!(e.key, "3031303200000000");
        assert_eq!(e.use_count, Some(1));
    }

    #[test]
    fn skips_non_entries() {
        assert!(parse_entry("# table: mypeers/t, type: ip, size:1024, used:2").is_none());
        assert!(parse_entry("").is_none());
        assert!(parse_entry("Unknown table name.").is_none());
        assert!(parse_entry("0x12: use=0").is_none());
        assert!(parse_show_table("No such table: x\n").is_empty());
    }
}
