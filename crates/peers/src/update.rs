//! UPDATE messages (0x80, 0x81, 0x85, 0x86) and UPDATE ACK (0x84),
//! peers-protocol.md §4.5–§4.7.
//!
//! An update carries an optional explicit id, an optional remaining lifetime,
//! the key, then one value per element of every column of the current
//! table's definition, in column order.

use crate::dict::{RxDict, TxDict};
use crate::error::{DecodeError, EncodeError};
use crate::freq::FreqCtr;
use crate::reader::Reader;
use crate::registry::{KeyType, Storage};
use crate::table::TableDef;
use crate::varint;
use bytes::{BufMut, Bytes};
use smallvec::SmallVec;

/// An update's key bytes, inline up to 16 (IPv4, IPv6, integers, short
/// strings): decoding an update allocates nothing for them. A heap `Bytes`
/// per key, and a `Vec` per update's values, were a tenth of decoding.
pub type Key = SmallVec<[u8; 16]>;
/// An update's values, inline up to two (a rate, a counter and a rate, a
/// server's id and name); more spill to the heap. Inline room costs every
/// queued event 16 bytes a value: four were 2-3 % slower than two for a
/// two-value table.
pub type Values = SmallVec<[Value; 2]>;

pub const MSG_UPDATE: u8 = 0x80;
pub const MSG_UPDATE_INCR: u8 = 0x81;
pub const MSG_DEFINE: u8 = 0x82;
pub const MSG_SWITCH: u8 = 0x83;
pub const MSG_ACK: u8 = 0x84;
pub const MSG_UPDATE_TIMED: u8 = 0x85;
pub const MSG_UPDATE_TIMED_INCR: u8 = 0x86;

/// One element value, as stored by HAProxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// `server_id`; 0 means "no server".
    ServerId(i32),
    U32(u32),
    U64(u64),
    Freq(FreqCtr),
    /// `server_key`: `None` when the entry has none. Boxed so that a value
    /// takes 16 bytes rather than 40: every decoded update holds its values
    /// inline, and `server_key` is the only type this large (and rare).
    Dict(Option<Box<Bytes>>),
    /// A `server_key` reference to a dictionary slot the peer never filled:
    /// HAProxy leaves the stored value unchanged, and so must the receiver.
    DictUnknown,
}

impl Value {
    /// A `server_key` value.
    pub fn dict(s: impl Into<Bytes>) -> Value {
        Value::Dict(Some(Box::new(s.into())))
    }
}

/// A decoded update, or one to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The sender's update id (explicit, or previous + 1 for incremental forms).
    pub id: u32,
    /// Remaining lifetime in ms for timed updates; `None` means "the table's
    /// expire".
    pub expire: Option<u32>,
    /// Key bytes in the table's stored form: 4 bytes for integers (big
    /// endian) and IPv4, 16 for IPv6, the string bytes (no NUL, at most
    /// key_len − 1), or exactly key_len binary bytes.
    pub key: Key,
    /// One value per element of each column of the definition.
    pub values: Values,
    /// The receiver's notes on this update; see [`Memo`].
    pub memo: Memo,
}

/// Room for the receiver to note what it learned about an update while it
/// waits in a queue, for use when it is applied: stickagg looks each queued
/// update's key up in stages a few updates ahead (to hide memory latency),
/// and keeps the key's hash and slot here so that no stage, and not the
/// update itself, finds them again (four hashes and three index probes per
/// update were a quarter of decoding and aggregating one). The codec never
/// reads it; it is 0 when decoded, and updates compare equal whatever it
/// holds.
#[derive(Clone, Default)]
pub struct Memo(std::cell::Cell<u64>);

impl Memo {
    pub fn get(&self) -> u64 {
        self.0.get()
    }

    pub fn set(&self, v: u64) {
        self.0.set(v)
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo({:#x})", self.0.get())
    }
}

/// Decodes the payload of an update of type `msg_type`. `last_id` is the
/// table's last received id, used and advanced by incremental forms.
pub fn decode_update(
    msg_type: u8,
    r: &mut Reader,
    def: &TableDef,
    last_id: u32,
    dict: &mut RxDict,
) -> Result<Update, DecodeError> {
    let id = if msg_type == MSG_UPDATE || msg_type == MSG_UPDATE_TIMED {
        r.u32_be("update id")?
    } else {
        last_id.wrapping_add(1)
    };
    let expire = if msg_type == MSG_UPDATE_TIMED || msg_type == MSG_UPDATE_TIMED_INCR {
        Some(r.u32_be("update expire")?)
    } else {
        None
    };
    let key = decode_key(r, def)?;
    let mut values = Values::with_capacity(def.value_count());
    for col in &def.columns {
        for _ in 0..col.nbelem {
            values.push(decode_value(r, col.ty.storage, dict)?);
        }
    }
    // Values of unknown types and any appended fields are skipped (§2.1).
    Ok(Update {
        id,
        expire,
        key,
        values,
        memo: Memo::default(),
    })
}

fn decode_key(r: &mut Reader, def: &TableDef) -> Result<Key, DecodeError> {
    match def.key_type.fixed_len(def.key_len) {
        Some(n) => Ok(Key::from_slice(r.bytes(n as usize, "key")?)),
        None => {
            let at = r.offset();
            let len = r.varint("key length")?;
            if len > r.remaining() as u64 {
                return Err(DecodeError::Truncated {
                    what: "key",
                    offset: at,
                });
            }
            let bytes = r.bytes(len as usize, "key")?;
            // HAProxy keeps at most key_len − 1 bytes and skips the rest.
            let keep = bytes.len().min(def.key_len.saturating_sub(1) as usize);
            Ok(Key::from_slice(&bytes[..keep]))
        }
    }
}

fn decode_value(r: &mut Reader, storage: Storage, dict: &mut RxDict) -> Result<Value, DecodeError> {
    Ok(match storage {
        // Received values are truncated to 32 bits, exactly as HAProxy does.
        Storage::SignedInt => Value::ServerId(r.varint("server_id")? as u32 as i32),
        Storage::UnsignedInt => Value::U32(r.varint("counter")? as u32),
        Storage::UnsignedLong => Value::U64(r.varint("counter")?),
        Storage::FreqCtr => Value::Freq(FreqCtr {
            elapsed: r.varint("rate elapsed")? as u32,
            curr: r.varint("rate current")? as u32,
            prev: r.varint("rate previous")? as u32,
        }),
        Storage::Dict => decode_dict(r, dict)?,
    })
}

fn decode_dict(r: &mut Reader, dict: &mut RxDict) -> Result<Value, DecodeError> {
    let len = r.varint("dictionary entry length")?;
    if len == 0 {
        return Ok(Value::Dict(None));
    }
    if len > r.remaining() as u64 {
        return Err(DecodeError::Truncated {
            what: "dictionary entry",
            offset: r.offset(),
        });
    }
    let base = r.offset();
    let body = r.bytes(len as usize, "dictionary entry")?;
    let mut sub = Reader::new(body, base);
    let id = sub.varint("dictionary id")?;
    if !RxDict::valid_id(id) {
        return Err(DecodeError::Invalid {
            what: "dictionary id",
            detail: format!("{id} is outside 1..=128"),
            offset: base,
        });
    }
    if sub.is_empty() {
        return Ok(match dict.get(id) {
            Some(v) => Value::dict(v.clone()),
            None => Value::DictUnknown,
        });
    }
    let n = sub.varint("dictionary value length")?;
    if n > sub.remaining() as u64 {
        return Err(DecodeError::Truncated {
            what: "dictionary value",
            offset: sub.offset(),
        });
    }
    let value = Bytes::copy_from_slice(sub.bytes(n as usize, "dictionary value")?);
    dict.define(id, value.clone());
    Ok(Value::dict(value))
}

/// Appends the payload of an update (explicit id; timed when `expire` is set).
/// Returns the message type to frame it with.
pub fn encode_update(
    out: &mut impl BufMut,
    def: &TableDef,
    id: u32,
    expire: Option<u32>,
    key: &[u8],
    values: &[Value],
    dict: &mut TxDict,
) -> Result<u8, EncodeError> {
    if values.len() != def.value_count() {
        return Err(EncodeError::Mismatch(format!(
            "{} values for table {} which stores {}",
            values.len(),
            def.name,
            def.value_count()
        )));
    }
    out.put_u32(id);
    let msg = match expire {
        Some(e) => {
            out.put_u32(e);
            MSG_UPDATE_TIMED
        }
        None => MSG_UPDATE,
    };
    encode_key(out, def, key)?;
    let mut vals = values.iter();
    for col in &def.columns {
        for _ in 0..col.nbelem {
            let v = vals.next().expect("length checked above");
            encode_value(out, col.ty.storage, v, dict).map_err(|e| {
                EncodeError::Mismatch(format!("{} in table {}: {e}", col.ty.name, def.name))
            })?;
        }
    }
    Ok(msg)
}

fn encode_key(out: &mut impl BufMut, def: &TableDef, key: &[u8]) -> Result<(), EncodeError> {
    match def.key_type {
        KeyType::String => {
            let n = key.len().min(def.key_len.saturating_sub(1) as usize);
            varint::encode(n as u64, out);
            out.put_slice(&key[..n]);
        }
        KeyType::Binary => {
            let n = key.len().min(def.key_len as usize);
            out.put_slice(&key[..n]);
            out.put_bytes(0, def.key_len as usize - n);
        }
        KeyType::Integer | KeyType::Ipv4 | KeyType::Ipv6 => {
            let want = def.key_type.fixed_len(def.key_len).unwrap_or(0) as usize;
            if key.len() != want {
                return Err(EncodeError::Mismatch(format!(
                    "{}-byte key for a {} table",
                    key.len(),
                    def.key_type.name()
                )));
            }
            out.put_slice(key);
        }
    }
    Ok(())
}

fn encode_value(
    out: &mut impl BufMut,
    storage: Storage,
    v: &Value,
    dict: &mut TxDict,
) -> Result<(), String> {
    match (storage, v) {
        // Sign extension: −1 goes out as 2^64 − 1, as HAProxy sends it.
        (Storage::SignedInt, Value::ServerId(i)) => varint::encode(*i as i64 as u64, out),
        (Storage::UnsignedInt, Value::U32(n)) => varint::encode(*n as u64, out),
        (Storage::UnsignedLong, Value::U64(n)) => varint::encode(*n, out),
        (Storage::FreqCtr, Value::Freq(f)) => {
            varint::encode(f.elapsed as u64, out);
            varint::encode(f.curr as u64, out);
            varint::encode(f.prev as u64, out);
        }
        (Storage::Dict, Value::Dict(None) | Value::DictUnknown) => varint::encode(0, out),
        (Storage::Dict, Value::Dict(Some(s))) => {
            let (id, define) = dict.slot_for(s);
            if define {
                let len = varint::encoded_len(id) + varint::encoded_len(s.len() as u64) + s.len();
                varint::encode(len as u64, out);
                varint::encode(id, out);
                varint::encode(s.len() as u64, out);
                out.put_slice(s);
            } else {
                varint::encode(varint::encoded_len(id) as u64, out);
                varint::encode(id, out);
            }
        }
        (s, v) => return Err(format!("value {v:?} does not fit storage {s:?}")),
    }
    Ok(())
}

/// UPDATE ACK payload: the update sender's table id and the last id received.
pub fn encode_ack(out: &mut impl BufMut, table_id: u64, update_id: u32) {
    varint::encode(table_id, out);
    out.put_u32(update_id);
}

pub fn decode_ack(r: &mut Reader) -> Result<(u64, u32), DecodeError> {
    Ok((r.varint("ack table id")?, r.u32_be("ack update id")?))
}

#[cfg(test)]
mod tests {
    /// Decoded updates are queued and moved as events; above 128 bytes each
    /// move became a call to `memcpy` (9 % of decoding). A new value type or
    /// wider inline room must be paid for knowingly.
    #[test]
    fn an_update_event_moves_inline() {
        assert_eq!(std::mem::size_of::<super::Value>(), 16);
        assert!(std::mem::size_of::<crate::Event>() <= 128);
    }

    use super::*;
    use crate::registry::data_type_by_name as by;
    use crate::table::Column;

    fn table(key_type: KeyType, key_len: u32, cols: &[(&str, u32, u32)]) -> TableDef {
        TableDef {
            id: 1,
            name: "/t".into(),
            key_type,
            key_len,
            expire: Some(30_000),
            columns: cols
                .iter()
                .map(|&(n, e, p)| Column::new(by(n).unwrap(), e, p))
                .collect(),
            unknown_types: 0,
        }
    }

    /// Captured (§4.5): string table with gpt(3), gpc(2), gpc_rate(2,5s).
    #[test]
    fn captured_string_update() {
        let def = table(
            KeyType::String,
            21,
            &[("gpt", 3, 0), ("gpc", 2, 0), ("gpc_rate", 2, 5000)],
        );
        let mut b = vec![0, 0, 0, 2, 5];
        b.extend_from_slice(b"hello");
        b.extend_from_slice(&[0, 0, 7, 2, 2, 0xF6, 0x10, 2, 0, 0xF6, 0x10, 2, 0]);
        let u = decode_update(
            MSG_UPDATE,
            &mut Reader::new(&b, 0),
            &def,
            0,
            &mut RxDict::default(),
        )
        .unwrap();
        assert_eq!(u.id, 2);
        assert_eq!(&u.key[..], b"hello");
        let rate = Value::Freq(FreqCtr {
            elapsed: 502,
            curr: 2,
            prev: 0,
        });
        assert_eq!(
            u.values.to_vec(),
            vec![
                Value::U32(0),
                Value::U32(0),
                Value::U32(7),
                Value::U32(2),
                Value::U32(2),
                rate.clone(),
                rate
            ]
        );
        let mut out = Vec::new();
        encode_update(
            &mut out,
            &def,
            2,
            None,
            &u.key,
            &u.values,
            &mut TxDict::default(),
        )
        .unwrap();
        assert_eq!(out, b);
    }

    /// Captured (§4.5): stickiness table (server_id, server_key), define form
    /// then reference form.
    #[test]
    fn captured_dictionary() {
        let def = table(
            KeyType::String,
            32,
            &[("server_id", 1, 0), ("server_key", 1, 0)],
        );
        let mut rx = RxDict::default();
        let first = [0, 0, 0, 1, 1, b'a', 5, 4, 1, 2, b's', b'1'];
        let u = decode_update(MSG_UPDATE, &mut Reader::new(&first, 0), &def, 0, &mut rx).unwrap();
        assert_eq!(
            u.values.to_vec(),
            vec![Value::ServerId(5), Value::dict(Bytes::from_static(b"s1"))]
        );
        let again = [0, 0, 0, 3, 1, b'c', 5, 1, 1];
        let u = decode_update(MSG_UPDATE, &mut Reader::new(&again, 0), &def, 0, &mut rx).unwrap();
        assert_eq!(u.values[1], Value::dict(Bytes::from_static(b"s1")));
        // Our encoder produces the same two forms.
        let mut tx = TxDict::default();
        let mut out = Vec::new();
        encode_update(
            &mut out,
            &def,
            1,
            None,
            b"a",
            &[Value::ServerId(5), Value::dict("s1")],
            &mut tx,
        )
        .unwrap();
        assert_eq!(out, first);
        out.clear();
        encode_update(
            &mut out,
            &def,
            3,
            None,
            b"c",
            &[Value::ServerId(5), Value::dict("s1")],
            &mut tx,
        )
        .unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn dictionary_errors() {
        let def = table(KeyType::Integer, 4, &[("server_key", 1, 0)]);
        let dec = |b: &[u8]| {
            decode_update(
                MSG_UPDATE_INCR,
                &mut Reader::new(b, 0),
                &def,
                0,
                &mut RxDict::default(),
            )
        };
        assert!(dec(&[0, 0, 0, 1, 1, 0]).is_err()); // id 0
        assert!(dec(&[0, 0, 0, 1, 2, 0xF0, 0x00 /* 240 */]).is_err());
        assert_eq!(
            dec(&[0, 0, 0, 1, 1, 7]).unwrap().values.to_vec(),
            vec![Value::DictUnknown]
        );
        assert!(dec(&[0, 0, 0, 1, 5, 1, 9, b'x']).is_err()); // value runs past entry
    }

    #[test]
    fn server_id_sign_extension_and_truncation() {
        let def = table(KeyType::Integer, 4, &[("server_id", 1, 0)]);
        let mut out = Vec::new();
        encode_update(
            &mut out,
            &def,
            9,
            None,
            &7u32.to_be_bytes(),
            &[Value::ServerId(-1)],
            &mut TxDict::default(),
        )
        .unwrap();
        assert_eq!(
            &out[8..],
            &[0xFF, 0xF0, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0x0E]
        );
        let u = decode_update(
            MSG_UPDATE,
            &mut Reader::new(&out, 0),
            &def,
            0,
            &mut RxDict::default(),
        )
        .unwrap();
        assert_eq!(u.values.to_vec(), vec![Value::ServerId(-1)]);
        // 2^32 − 1 is also −1 after truncation.
        let mut b = vec![0, 0, 0, 1, 0, 0, 0, 7];
        varint::encode(u32::MAX as u64, &mut b);
        let u = decode_update(
            MSG_UPDATE,
            &mut Reader::new(&b, 0),
            &def,
            0,
            &mut RxDict::default(),
        )
        .unwrap();
        assert_eq!(u.values.to_vec(), vec![Value::ServerId(-1)]);
    }

    #[test]
    fn keys() {
        // Long string keys are truncated to key_len − 1 like HAProxy.
        let def = table(KeyType::String, 21, &[]);
        let mut b = vec![0, 0, 0, 1, 30];
        b.extend_from_slice(&[b'x'; 30]);
        let u = decode_update(
            MSG_UPDATE,
            &mut Reader::new(&b, 0),
            &def,
            0,
            &mut RxDict::default(),
        )
        .unwrap();
        assert_eq!(u.key.len(), 20);
        // Binary keys are zero padded.
        let def = table(KeyType::Binary, 8, &[]);
        let mut out = Vec::new();
        encode_update(&mut out, &def, 1, None, b"ab", &[], &mut TxDict::default()).unwrap();
        assert_eq!(&out[4..], b"ab\0\0\0\0\0\0");
        // A wrong-size IPv4 key is refused rather than sent.
        let def = table(KeyType::Ipv4, 4, &[]);
        assert!(
            encode_update(&mut out, &def, 1, None, b"abc", &[], &mut TxDict::default()).is_err()
        );
    }

    #[test]
    fn incremental_and_timed_forms() {
        let def = table(KeyType::Ipv4, 4, &[("gpc0", 1, 0)]);
        let b = [0, 0, 0x75, 0x30, 127, 0, 0, 1, 3];
        let u = decode_update(
            MSG_UPDATE_TIMED_INCR,
            &mut Reader::new(&b, 0),
            &def,
            41,
            &mut RxDict::default(),
        )
        .unwrap();
        assert_eq!((u.id, u.expire), (42, Some(30_000)));
        assert_eq!(u.values.to_vec(), vec![Value::U32(3)]);
        assert!(decode_update(
            MSG_UPDATE_TIMED,
            &mut Reader::new(&b, 0),
            &def,
            0,
            &mut RxDict::default()
        )
        .is_err());
    }
}
