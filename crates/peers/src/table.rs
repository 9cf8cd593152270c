//! TABLE DEFINITION (0x82) messages (peers-protocol.md §4.1, §4.3).
//!
//! A DEFINE names a table, its key type and length, the data types it stores
//! (a bitfield), the table's `expire`, and one parameter block per type that
//! has parameters (rates: period; arrays: number of elements). Values in
//! updates are positional, so the decoded definition is what gives them
//! meaning.

use crate::error::DecodeError;
use crate::reader::Reader;
use crate::registry::{self, DataType, KeyType, Params, KNOWN_TYPES, MAX_ARRAY};
use crate::varint;
use bytes::BufMut;

/// One stored data type of a table, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub ty: &'static DataType,
    /// Number of elements: 1 for scalar types.
    pub nbelem: u32,
    /// Rate period in ms; 0 for types without one.
    pub period: u32,
}

impl Column {
    pub fn new(ty: &'static DataType, nbelem: u32, period: u32) -> Column {
        Column { ty, nbelem, period }
    }

    /// HAProxy's `show table` spelling, e.g. `http_req_rate(10000)`, `gpc(2)`.
    pub fn display_name(&self) -> String {
        match self.ty.params {
            Params::None => self.ty.name.to_string(),
            Params::Period => format!("{}({})", self.ty.name, self.period),
            Params::Elements => format!("{}({})", self.ty.name, self.nbelem),
            Params::ElementsPeriod => format!("{}({},{})", self.ty.name, self.nbelem, self.period),
        }
    }
}

/// A decoded (or to-be-sent) table definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// The sender's id for this table on this connection.
    pub id: u64,
    /// Network name: `/name` for a table of a `peers` section, the proxy
    /// name for a backend table.
    pub name: String,
    pub key_type: KeyType,
    /// Announced key length (`string len N` announces N+1).
    pub key_len: u32,
    /// Table `expire` in ms; `None` when the sender used the pre-1.8 format.
    pub expire: Option<u32>,
    /// Known data types, in increasing id order.
    pub columns: Vec<Column>,
    /// Announced type bits we do not know (≥ 27). Their values cannot be
    /// decoded, but they are last, so the known ones stay aligned.
    pub unknown_types: u64,
}

/// A DEFINE that is well formed but that we cannot use. HAProxy ignores such
/// definitions (and every update that follows until the next DEFINE/SWITCH)
/// rather than closing the session; so do we.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedDef {
    pub id: u64,
    pub name: String,
    pub reason: String,
}

impl TableDef {
    pub fn bitfield(&self) -> u64 {
        self.columns.iter().fold(0, |b, c| b | 1 << c.ty.id)
    }

    /// Number of values an update carries (arrays count each element).
    pub fn value_count(&self) -> usize {
        self.columns.iter().map(|c| c.nbelem as usize).sum()
    }

    /// Same key and same columns (types, sizes and periods): values of two
    /// such tables can be combined. The name and id may differ.
    pub fn same_shape(&self, o: &TableDef) -> bool {
        self.key_type == o.key_type && self.key_len == o.key_len && self.columns == o.columns
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.ty.name == name)
    }

    /// Appends the DEFINE payload. `expire` and every parameter block are
    /// always sent (HAProxy rejects an array table without them).
    pub fn encode(&self, out: &mut impl BufMut) {
        varint::encode(self.id, out);
        varint::encode(self.name.len() as u64, out);
        out.put_slice(self.name.as_bytes());
        varint::encode(self.key_type.wire(), out);
        varint::encode(self.key_len as u64, out);
        varint::encode(self.bitfield(), out);
        varint::encode(self.expire.unwrap_or(0) as u64, out);
        for c in &self.columns {
            if c.ty.params == Params::None {
                continue;
            }
            varint::encode(c.ty.id as u64, out);
            if c.ty.params.is_array() {
                varint::encode(c.nbelem as u64, out);
            }
            if c.ty.params.has_period() {
                varint::encode(c.period as u64, out);
            }
        }
    }

    /// Decodes a DEFINE payload. `Err` is a protocol error (the session must
    /// close); `Ok(Err(_))` a definition to ignore.
    pub fn decode(r: &mut Reader) -> Result<Result<TableDef, RejectedDef>, DecodeError> {
        let id = r.varint("table id")?;
        let name_len = r.varint("table name length")?;
        if name_len == 0 {
            return Err(r.invalid("table name", "empty"));
        }
        if name_len >= r.remaining() as u64 {
            // HAProxy: a name that reaches the end of the payload is an error.
            return Err(DecodeError::Truncated {
                what: "table definition after name",
                offset: r.offset(),
            });
        }
        let name = String::from_utf8_lossy(r.bytes(name_len as usize, "table name")?).into_owned();
        let reject = |reason: String| {
            Ok(Err(RejectedDef {
                id,
                name: name.clone(),
                reason,
            }))
        };
        let key_type_raw = r.varint("key type")?;
        let key_len = r.varint("key length")?;
        let bits = r.varint("data types")?;
        let Some(key_type) = KeyType::from_wire(key_type_raw) else {
            return reject(format!("unknown key type {key_type_raw}"));
        };
        let key_len = match u32::try_from(key_len) {
            Ok(l) if key_type.valid_len(l) && l <= u16::MAX as u32 => l,
            _ => {
                return reject(format!(
                    "key length {key_len} invalid for {} keys",
                    key_type.name()
                ))
            }
        };
        let known = bits & ((1u64 << KNOWN_TYPES) - 1);
        let unknown_types = bits & !((1u64 << KNOWN_TYPES) - 1);
        let types = (0..KNOWN_TYPES)
            .filter(|t| known & (1 << t) != 0)
            .filter_map(registry::data_type);

        if r.is_empty() {
            // Pre-1.8 format: no expire and no parameters.
            let mut columns = Vec::new();
            for ty in types {
                if ty.params != Params::None {
                    return reject(format!("{} announced without parameters", ty.name));
                }
                columns.push(Column::new(ty, 1, 0));
            }
            return Ok(Ok(TableDef {
                id,
                name,
                key_type,
                key_len,
                expire: None,
                columns,
                unknown_types,
            }));
        }
        let expire = r.varint("expire")?;
        let mut columns = Vec::new();
        for ty in types {
            let (mut nbelem, mut period) = (1u64, 0u64);
            if ty.params != Params::None {
                if r.is_empty() {
                    return reject(format!("parameters of {} missing", ty.name));
                }
                let t = r.varint("repeated data type")?;
                if t != ty.id as u64 {
                    return reject(format!(
                        "parameter block for type {t} where {} was expected",
                        ty.name
                    ));
                }
                if ty.params.is_array() {
                    nbelem = r.varint("array size")?;
                    if nbelem == 0 || nbelem > MAX_ARRAY as u64 {
                        return reject(format!("{} with {nbelem} elements", ty.name));
                    }
                }
                if ty.params.has_period() {
                    period = r.varint("period")?;
                    if period > u32::MAX as u64 {
                        return reject(format!("{} period {period} out of range", ty.name));
                    }
                }
            }
            columns.push(Column::new(ty, nbelem as u32, period as u32));
        }
        Ok(Ok(TableDef {
            id,
            name,
            key_type,
            key_len,
            expire: Some(expire.min(u32::MAX as u64) as u32),
            columns,
            unknown_types,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::data_type_by_name as by;

    fn decode(bytes: &[u8]) -> Result<Result<TableDef, RejectedDef>, DecodeError> {
        TableDef::decode(&mut Reader::new(bytes, 0))
    }

    /// Captured from HAProxy 3.0.11 (§4.1): string len 20, expire 30s,
    /// gpt(3), gpc(2), gpc_rate(2,5s).
    #[test]
    fn captured_array_table() {
        let mut b = vec![0x05, 0x06];
        b.extend_from_slice(b"/t_str");
        b.extend_from_slice(&[
            0x06, 0x15, 0xF0, 0xF1, 0xFE, 0x6E, 0xF0, 0xC4, 0x0D, 0x16, 0x03, 0x17, 0x02, 0x18,
            0x02, 0xF8, 0xA9, 0x01,
        ]);
        let def = decode(&b).unwrap().unwrap();
        assert_eq!(def.id, 5);
        assert_eq!(def.name, "/t_str");
        assert_eq!(def.key_type, KeyType::String);
        assert_eq!(def.key_len, 21);
        assert_eq!(def.expire, Some(30000));
        assert_eq!(def.bitfield(), 0x1C0_0000);
        assert_eq!(
            def.columns,
            vec![
                Column::new(by("gpt").unwrap(), 3, 0),
                Column::new(by("gpc").unwrap(), 2, 0),
                Column::new(by("gpc_rate").unwrap(), 2, 5000),
            ]
        );
        let mut out = Vec::new();
        def.encode(&mut out);
        assert_eq!(out, b);
    }

    #[test]
    fn unknown_type_bits_are_tolerated() {
        // http_req_cnt (9) plus bit 40, which carries a trailing value.
        let mut out = Vec::new();
        let def = TableDef {
            id: 3,
            name: "/t".into(),
            key_type: KeyType::Ipv4,
            key_len: 4,
            expire: Some(1000),
            columns: vec![Column::new(by("http_req_cnt").unwrap(), 1, 0)],
            unknown_types: 0,
        };
        def.encode(&mut out);
        // Patch the bitfield: rebuild by hand.
        let mut b = vec![3, 2, b'/', b't', 4, 4];
        varint::encode((1 << 9) | (1 << 40), &mut b);
        varint::encode(1000, &mut b);
        b.extend_from_slice(&[40, 7]); // parameters of the unknown type
        let got = decode(&b).unwrap().unwrap();
        assert_eq!(got.columns, def.columns);
        assert_eq!(got.unknown_types, 1 << 40);
    }

    #[test]
    fn rejections_and_errors() {
        // Empty name: protocol error.
        assert!(decode(&[1, 0, 4, 4, 0]).is_err());
        // Name reaching the end of the payload: protocol error.
        assert!(decode(&[1, 2, b'/', b't']).is_err());
        // Unknown key type: ignored, not an error.
        let r = decode(&[1, 2, b'/', b't', 3, 4, 0, 0]).unwrap();
        assert!(r.unwrap_err().reason.contains("key type"));
        // Array without parameters (pre-1.8 format): ignored.
        let mut b = vec![1, 2, b'/', b't', 6, 32];
        varint::encode(1 << 22, &mut b);
        assert!(decode(&b).unwrap().is_err());
        // Wrong repeated type id: ignored.
        let mut b = vec![1, 2, b'/', b't', 4, 4];
        varint::encode(1 << 10, &mut b);
        b.extend_from_slice(&[0, 9, 100]);
        assert!(decode(&b).unwrap().is_err());
        // Truncated bitfield: protocol error.
        assert!(decode(&[1, 2, b'/', b't', 4, 4, 0xF0]).is_err());
    }

    #[test]
    fn pre_18_format_accepted_without_arrays() {
        let mut b = vec![1, 2, b'/', b't', 4, 4];
        varint::encode(1 << 9, &mut b);
        let def = decode(&b).unwrap().unwrap();
        assert_eq!(def.expire, None);
        assert_eq!(def.columns.len(), 1);
    }
}
