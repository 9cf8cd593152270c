//! Formatting of stick-table contents for `show table`, in HAProxy's own
//! line format so that operators (and their scripts) read stickagg's tables
//! the way they read a node's:
//!
//! ```text
//! # table: /request_rates.agg, type: ip, size:0, used:1
//! 0x1: key=192.168.50.1 use=0 exp=28056 http_req_cnt=7 http_req_rate(10000)=5
//! ```

use peers::registry::{KeyType, Params, Storage};
use peers::{TableDef, Value};
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A key as HAProxy prints it.
pub fn format_key(kt: KeyType, key: &[u8]) -> String {
    match kt {
        KeyType::Ipv4 if key.len() == 4 => {
            Ipv4Addr::new(key[0], key[1], key[2], key[3]).to_string()
        }
        KeyType::Ipv6 if key.len() == 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(key);
            let ip = Ipv6Addr::from(b);
            // HAProxy prints IPv4-mapped addresses as ::ffff:a.b.c.d.
            match ip.to_ipv4_mapped() {
                Some(v4) => format!("::ffff:{v4}"),
                None => ip.to_string(),
            }
        }
        KeyType::Integer if key.len() == 4 => {
            u32::from_be_bytes([key[0], key[1], key[2], key[3]]).to_string()
        }
        KeyType::String => {
            let mut s = String::new();
            for &b in key {
                match b {
                    b' ' | b'=' | b'\\' => {
                        s.push('\\');
                        s.push(b as char);
                    }
                    0x21..=0x7e => s.push(b as char),
                    _ => {
                        let _ = write!(s, "\\x{b:02x}");
                    }
                }
            }
            s
        }
        _ => key.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        }),
    }
}

/// Parses a key typed by an operator (`show table t key <k>`).
pub fn parse_key(kt: KeyType, key_len: u32, text: &str) -> Option<Vec<u8>> {
    match kt {
        KeyType::Ipv4 => text.parse::<Ipv4Addr>().ok().map(|ip| ip.octets().to_vec()),
        KeyType::Ipv6 => match text.parse::<Ipv6Addr>() {
            Ok(ip) => Some(ip.octets().to_vec()),
            Err(_) => text
                .parse::<Ipv4Addr>()
                .ok()
                .map(|ip| ip.to_ipv6_mapped().octets().to_vec()),
        },
        KeyType::Integer => text.parse::<u32>().ok().map(|v| v.to_be_bytes().to_vec()),
        KeyType::String => {
            Some(text.as_bytes()[..text.len().min(key_len.saturating_sub(1) as usize)].to_vec())
        }
        KeyType::Binary => {
            if !text.len().is_multiple_of(2) {
                return None;
            }
            let mut out: Vec<u8> = (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
                .collect::<Option<_>>()?;
            out.resize(key_len as usize, 0);
            Some(out)
        }
    }
}

/// `name=value` pairs for one entry, in column order; rates are read at the
/// moment the values were computed, as HAProxy shows them.
pub fn format_values(def: &TableDef, values: &[Value]) -> String {
    let mut out = String::new();
    let mut vals = values.iter();
    for col in &def.columns {
        for i in 0..col.nbelem {
            let Some(v) = vals.next() else { return out };
            // Arrays print one name per element: gpt(3) → gpt0 gpt1 gpt2,
            // gpc_rate(2,5s) → gpc0_rate(5000) gpc1_rate(5000).
            let name = match col.ty.params {
                Params::None => col.ty.name.to_string(),
                Params::Period => format!("{}({})", col.ty.name, col.period),
                Params::Elements => format!("{}{i}", col.ty.name),
                Params::ElementsPeriod => format!("gpc{i}_rate({})", col.period),
            };
            let text = match (col.ty.storage, v) {
                (Storage::FreqCtr, Value::Freq(f)) => f.read_after(0, col.period).to_string(),
                (_, Value::ServerId(n)) => n.to_string(),
                (_, Value::U32(n)) => n.to_string(),
                (_, Value::U64(n)) => n.to_string(),
                (_, Value::Dict(Some(s))) => String::from_utf8_lossy(s).into_owned(),
                (_, Value::Dict(None) | Value::DictUnknown) => "-".into(),
                (_, other) => format!("{other:?}"),
            };
            let _ = write!(out, " {name}={text}");
        }
    }
    out
}

/// `store` spelling of a table's data types, e.g.
/// `http_req_cnt,http_req_rate(10000)`.
pub fn format_types(def: &TableDef) -> String {
    def.columns
        .iter()
        .map(|c| c.display_name())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        assert_eq!(format_key(KeyType::Ipv4, &[10, 0, 0, 1]), "10.0.0.1");
        assert_eq!(
            parse_key(KeyType::Ipv4, 4, "10.0.0.1").unwrap(),
            vec![10, 0, 0, 1]
        );
        let v6 = parse_key(KeyType::Ipv6, 16, "127.0.0.9").unwrap();
        assert_eq!(format_key(KeyType::Ipv6, &v6), "::ffff:127.0.0.9");
        assert_eq!(format_key(KeyType::Integer, &7u32.to_be_bytes()), "7");
        assert_eq!(format_key(KeyType::String, b"a b=c"), "a\\ b\\=c");
        assert_eq!(
            parse_key(KeyType::Binary, 4, "0A0b").unwrap(),
            vec![10, 11, 0, 0]
        );
        assert_eq!(format_key(KeyType::Binary, &[10, 11, 0, 0]), "0A0B0000");
        assert_eq!(parse_key(KeyType::Ipv4, 4, "nope"), None);
    }
}
