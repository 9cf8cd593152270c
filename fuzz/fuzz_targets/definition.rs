//! `TableDef::decode` over an arbitrary DEFINE payload.
//!
//! Checks: no panic; an accepted definition is internally consistent, and
//! re-encoding it decodes to the same definition (with `expire` always
//! present and unknown type bits dropped, as our encoder sends them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peers::fuzzing::Reader;
use peers::TableDef;
use peers_fuzz::columns_consistent;

fuzz_target!(|data: &[u8]| {
    let Ok(Ok(def)) = TableDef::decode(&mut Reader::new(data, 0)) else {
        return;
    };
    assert!(!def.name.is_empty());
    assert!(def.key_type.valid_len(def.key_len), "{def:?}");
    assert!(columns_consistent(&def), "{def:?}");
    assert_eq!(def.unknown_types & ((1 << 27) - 1), 0);

    let mut out = Vec::new();
    def.encode(&mut out);
    let back = TableDef::decode(&mut Reader::new(&out, 0))
        .expect("our DEFINE is well formed")
        .expect("our DEFINE is usable");
    let want = TableDef {
        expire: Some(def.expire.unwrap_or(0)),
        unknown_types: 0,
        ..def
    };
    assert_eq!(back, want);
    let mut again = Vec::new();
    back.encode(&mut again);
    assert_eq!(again, out, "encoding is deterministic");
});
