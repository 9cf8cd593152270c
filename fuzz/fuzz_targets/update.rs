//! `update::decode_update` against a table derived from the input.
//!
//! Input: 8 bytes describing the table (see `peers_fuzz::table_from`), one
//! byte choosing the message type (0x80, 0x81, 0x85, 0x86), then update
//! payloads back to back (up to 8 are decoded, sharing one dictionary, so
//! define-form and reference-form `server_key` values meet).
//!
//! Checks: no panic; a decoded update has one value per element; it
//! re-encodes with `encode_update`, and decoding that gives the same update
//! (a reference to an unknown dictionary slot comes back as "no key").
#![no_main]

use libfuzzer_sys::fuzz_target;
use peers::dict::{RxDict, TxDict};
use peers::fuzzing::Reader;
use peers::update::{decode_update, encode_update, Update};
use peers_fuzz::{after_round_trip, table_from, TABLE_HEADER};

const TYPES: [u8; 4] = [0x80, 0x81, 0x85, 0x86];

fuzz_target!(|data: &[u8]| {
    if data.len() <= TABLE_HEADER {
        return;
    }
    let def = table_from(data[..TABLE_HEADER].try_into().unwrap());
    let msg_type = TYPES[data[TABLE_HEADER] as usize % 4];
    let payload = &data[TABLE_HEADER + 1..];

    let mut rx = RxDict::default();
    let mut tx = TxDict::default();
    let mut rx_back = RxDict::default();
    let mut r = Reader::new(payload, 0);
    let mut last_id = 0u32;
    for _ in 0..8 {
        let before = r.offset();
        let Ok(u) = decode_update(msg_type, &mut r, &def, last_id, &mut rx) else {
            return;
        };
        assert!(r.offset() > before, "an update consumes bytes");
        assert_eq!(u.values.len(), def.value_count());
        if let Some(n) = def.key_type.fixed_len(def.key_len) {
            assert_eq!(u.key.len(), n as usize);
        } else {
            assert!(u.key.len() < def.key_len as usize);
        }
        last_id = u.id;

        let mut out = Vec::new();
        let ty = encode_update(&mut out, &def, u.id, u.expire, &u.key, &u.values, &mut tx)
            .expect("a decoded update re-encodes");
        let mut r2 = Reader::new(&out, 0);
        let back =
            decode_update(ty, &mut r2, &def, 0, &mut rx_back).expect("a re-encoded update decodes");
        assert!(r2.is_empty(), "decoding consumes the whole re-encoding");
        let want = Update {
            values: u.values.iter().map(after_round_trip).collect(),
            ..u
        };
        assert_eq!(back, want);

        if r.is_empty() {
            return;
        }
    }
});
