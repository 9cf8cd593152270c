//! The one table describing every stick-table data type and key type.
//!
//! Everything that depends on a data type — how it is stored, how it is
//! encoded on the wire, which parameters its DEFINE carries, whether
//! `write-to` copies it, and how the engine combines values from several
//! sources — is read from [`DATA_TYPES`]. Adding a type means adding a row.
//! Source: peers-protocol.md §5.1 and semantics.md "How values combine".

/// In-memory storage of one element of a data type, which fixes its wire
/// encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `server_id`: i32, sent as a varint of the value sign-extended to 64
    /// bits (−1 takes 10 bytes); received values are truncated to 32 bits.
    SignedInt,
    /// u32 counter or tag, varint; HAProxy truncates received values mod 2^32.
    UnsignedInt,
    /// u64 counter (bytes), varint.
    UnsignedLong,
    /// Frequency counter: three varints `elapsed_ms, curr_ctr, prev_ctr`.
    FreqCtr,
    /// `server_key`: a string through the per-connection dictionary (§5.6).
    Dict,
}

/// How the engine combines the latest values of several sources for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Sum, saturating at 2^32−1 (HAProxy would wrap a larger value).
    Sum32,
    /// Sum, saturating at 2^64−1.
    Sum64,
    /// Sum of each source's sliding-window reading, re-encoded as one counter.
    SumRate,
    /// Maximum: a tag set by any node is visible everywhere.
    Max,
    /// The most recently received value wins (session persistence).
    Latest,
}

/// Which parameter block a type carries in a DEFINE after `expire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params {
    None,
    /// `t, period`
    Period,
    /// `t, nbelem`
    Elements,
    /// `t, nbelem, period`
    ElementsPeriod,
}

impl Params {
    pub fn has_period(self) -> bool {
        matches!(self, Params::Period | Params::ElementsPeriod)
    }
    pub fn is_array(self) -> bool {
        matches!(self, Params::Elements | Params::ElementsPeriod)
    }
}

/// One row of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataType {
    /// Bit position in the DEFINE bitfield.
    pub id: u8,
    /// Name as in HAProxy's `store` keyword and `show table` output.
    pub name: &'static str,
    pub storage: Storage,
    pub params: Params,
    /// Copied by a `write-to` table ("as-is" types).
    pub as_is: bool,
    /// Sent by HAProxy but not learned by a receiver (unless `recv-only`, 3.2+).
    pub local_only: bool,
    pub combine: Combine,
}

const fn dt(
    id: u8,
    name: &'static str,
    storage: Storage,
    params: Params,
    as_is: bool,
    combine: Combine,
) -> DataType {
    DataType {
        id,
        name,
        storage,
        params,
        as_is,
        local_only: false,
        combine,
    }
}

use Combine::*;
use Params::{Elements, ElementsPeriod, Period};
use Storage::*;

/// All 27 data types of HAProxy 3.0 (2.6 knows 0–24), indexed by id.
pub const DATA_TYPES: [DataType; 27] = [
    dt(0, "server_id", SignedInt, Params::None, true, Latest),
    dt(1, "gpt0", UnsignedInt, Params::None, true, Max),
    dt(2, "gpc0", UnsignedInt, Params::None, false, Sum32),
    dt(3, "gpc0_rate", FreqCtr, Period, false, SumRate),
    dt(4, "conn_cnt", UnsignedInt, Params::None, false, Sum32),
    dt(5, "conn_rate", FreqCtr, Period, false, SumRate),
    DataType {
        local_only: true,
        ..dt(6, "conn_cur", UnsignedInt, Params::None, false, Sum32)
    },
    dt(7, "sess_cnt", UnsignedInt, Params::None, false, Sum32),
    dt(8, "sess_rate", FreqCtr, Period, false, SumRate),
    dt(9, "http_req_cnt", UnsignedInt, Params::None, false, Sum32),
    dt(10, "http_req_rate", FreqCtr, Period, false, SumRate),
    dt(11, "http_err_cnt", UnsignedInt, Params::None, false, Sum32),
    dt(12, "http_err_rate", FreqCtr, Period, false, SumRate),
    dt(13, "bytes_in_cnt", UnsignedLong, Params::None, false, Sum64),
    dt(14, "bytes_in_rate", FreqCtr, Period, false, SumRate),
    dt(
        15,
        "bytes_out_cnt",
        UnsignedLong,
        Params::None,
        false,
        Sum64,
    ),
    dt(16, "bytes_out_rate", FreqCtr, Period, false, SumRate),
    dt(17, "gpc1", UnsignedInt, Params::None, false, Sum32),
    dt(18, "gpc1_rate", FreqCtr, Period, false, SumRate),
    dt(19, "server_key", Dict, Params::None, true, Latest),
    dt(20, "http_fail_cnt", UnsignedInt, Params::None, false, Sum32),
    dt(21, "http_fail_rate", FreqCtr, Period, false, SumRate),
    dt(22, "gpt", UnsignedInt, Elements, true, Max),
    dt(23, "gpc", UnsignedInt, Elements, false, Sum32),
    dt(24, "gpc_rate", FreqCtr, ElementsPeriod, false, SumRate),
    dt(25, "glitch_cnt", UnsignedInt, Params::None, false, Sum32),
    dt(26, "glitch_rate", FreqCtr, Period, false, SumRate),
];

/// Number of data types we know; bits at or above it are tolerated in a
/// DEFINE but their values cannot be decoded.
pub const KNOWN_TYPES: u8 = DATA_TYPES.len() as u8;

/// Largest array HAProxy allows (`gpt(N)`, `gpc(N)`, `gpc_rate(N,P)`).
pub const MAX_ARRAY: u32 = 100;

pub fn data_type(id: u8) -> Option<&'static DataType> {
    DATA_TYPES.get(id as usize)
}

pub fn data_type_by_name(name: &str) -> Option<&'static DataType> {
    // `server_name` is the 2.0–2.3 name of `server_key`, still accepted.
    let name = if name == "server_name" {
        "server_key"
    } else {
        name
    };
    DATA_TYPES.iter().find(|t| t.name == name)
}

/// Stick-table key types as numbered on the wire (§4.2). 0, 1 and 3 are
/// historical sample types that HAProxy never sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// 4 bytes big-endian u32.
    Integer = 2,
    /// 4 raw bytes, network order.
    Ipv4 = 4,
    /// 16 raw bytes.
    Ipv6 = 5,
    /// varint length + bytes (no NUL), at most key_len − 1 bytes.
    String = 6,
    /// exactly key_len bytes, zero padded.
    Binary = 7,
}

impl KeyType {
    pub fn from_wire(v: u64) -> Option<KeyType> {
        Some(match v {
            2 => KeyType::Integer,
            4 => KeyType::Ipv4,
            5 => KeyType::Ipv6,
            6 => KeyType::String,
            7 => KeyType::Binary,
            _ => return None,
        })
    }

    pub fn wire(self) -> u64 {
        self as u64
    }

    /// The `type` keyword of HAProxy's table declaration.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Integer => "integer",
            KeyType::Ipv4 => "ip",
            KeyType::Ipv6 => "ipv6",
            KeyType::String => "string",
            KeyType::Binary => "binary",
        }
    }

    /// The key_len HAProxy announces for `type <t> [len N]`. Note the string
    /// quirk: `string len N` announces N+1 (room for a NUL), while plain
    /// `string` announces 32.
    pub fn announced_len(self, len: Option<u32>) -> u32 {
        match self {
            KeyType::Integer | KeyType::Ipv4 => 4,
            KeyType::Ipv6 => 16,
            KeyType::String => len.map_or(32, |n| n.saturating_add(1)),
            KeyType::Binary => len.unwrap_or(32),
        }
    }

    /// Fixed number of key bytes in an update, or `None` for strings.
    pub fn fixed_len(self, key_len: u32) -> Option<u32> {
        match self {
            KeyType::Integer | KeyType::Ipv4 => Some(4),
            KeyType::Ipv6 => Some(16),
            KeyType::String => None,
            KeyType::Binary => Some(key_len),
        }
    }

    /// Whether `key_len` is what a real HAProxy could announce for this type.
    pub fn valid_len(self, key_len: u32) -> bool {
        match self {
            KeyType::Integer | KeyType::Ipv4 => key_len == 4,
            KeyType::Ipv6 => key_len == 16,
            KeyType::String | KeyType::Binary => key_len >= 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_positions() {
        for (i, t) in DATA_TYPES.iter().enumerate() {
            assert_eq!(t.id as usize, i, "{}", t.name);
        }
    }

    #[test]
    fn rates_have_periods_and_sum_as_rates() {
        for t in &DATA_TYPES {
            assert_eq!(
                t.storage == Storage::FreqCtr,
                t.params.has_period(),
                "{}",
                t.name
            );
            assert_eq!(
                t.storage == Storage::FreqCtr,
                t.combine == Combine::SumRate,
                "{}",
                t.name
            );
            assert_eq!(
                t.name.ends_with("_rate"),
                t.storage == Storage::FreqCtr,
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn as_is_types_are_the_write_to_ones() {
        let as_is: Vec<_> = DATA_TYPES
            .iter()
            .filter(|t| t.as_is)
            .map(|t| t.name)
            .collect();
        assert_eq!(as_is, ["server_id", "gpt0", "server_key", "gpt"]);
    }

    #[test]
    fn lookups() {
        assert_eq!(data_type_by_name("http_req_rate").unwrap().id, 10);
        assert_eq!(data_type_by_name("server_name").unwrap().id, 19);
        assert!(data_type(27).is_none());
        assert_eq!(KeyType::String.announced_len(Some(20)), 21);
        assert_eq!(KeyType::String.announced_len(None), 32);
        assert_eq!(KeyType::Binary.announced_len(None), 32);
        assert_eq!(KeyType::from_wire(3), None);
    }
}
