//! HAProxy's variable-length integer ("encoded integer", peers-protocol.md §2.2).
//!
//! It is *not* LEB128: values below 240 take one byte; otherwise the first
//! byte is ≥ 0xF0 and carries 4 bits, every further byte carries 7 bits and
//! is ≥ 0x80 while more follow. The marker bits are *not* masked off when
//! decoding — the encoder subtracted 240/128 beforehand to compensate — so
//! a masking decoder gets wrong values.

use bytes::BufMut;

/// Longest encoding of a u64. HAProxy's own decoder has no limit; we refuse
/// an 11th byte because no encoder produces one.
pub const MAX_LEN: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// Input ended before the last byte.
    Incomplete,
    /// More than [`MAX_LEN`] bytes.
    TooLong,
}

/// Appends the encoding of `v`.
#[inline]
pub fn encode(mut v: u64, out: &mut impl BufMut) {
    if v < 240 {
        out.put_u8(v as u8);
        return;
    }
    out.put_u8((v | 0xF0) as u8);
    v = (v - 240) >> 4;
    while v >= 128 {
        out.put_u8((v | 0x80) as u8);
        v = (v - 128) >> 7;
    }
    out.put_u8(v as u8);
}

/// Number of bytes [`encode`] writes for `v`.
#[inline]
pub fn encoded_len(mut v: u64) -> usize {
    if v < 240 {
        return 1;
    }
    let mut n = 2;
    v = (v - 240) >> 4;
    while v >= 128 {
        v = (v - 128) >> 7;
        n += 1;
    }
    n
}

/// Decodes one varint from the start of `buf`; returns the value and the
/// number of bytes used. Arithmetic wraps like HAProxy's u64 code.
#[inline]
pub fn decode(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let Some(&b0) = buf.first() else {
        return Err(VarintError::Incomplete);
    };
    let mut v = b0 as u64;
    if b0 < 240 {
        return Ok((v, 1));
    }
    let mut shift = 4u32;
    let mut i = 1;
    loop {
        if i >= MAX_LEN {
            return Err(VarintError::TooLong);
        }
        let Some(&b) = buf.get(i) else {
            return Err(VarintError::Incomplete);
        };
        // shift is at most 4 + 7*8 = 60 here, so the shift itself is defined.
        v = v.wrapping_add((b as u64) << shift);
        i += 1;
        if b < 128 {
            return Ok((v, i));
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    /// Every worked example of peers-protocol.md §2.2.
    #[test]
    fn worked_examples() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (239, &[0xEF]),
            (240, &[0xF0, 0x00]),
            (241, &[0xF1, 0x00]),
            (502, &[0xF6, 0x10]),
            (2287, &[0xFF, 0x7F]),
            (2288, &[0xF0, 0x80, 0x00]),
            (0x1234, &[0xF4, 0x94, 0x01]),
            (5000, &[0xF8, 0xA9, 0x01]),
            (10000, &[0xF0, 0xE2, 0x03]),
            (30000, &[0xF0, 0xC4, 0x0D]),
            (60000, &[0xF0, 0x97, 0x1C]),
            (264431, &[0xFF, 0xFF, 0x7F]),
            (264432, &[0xF0, 0x80, 0x80, 0x00]),
            (1 << 31, &[0xF0, 0xF1, 0xFE, 0xFE, 0x3E]),
            (u32::MAX as u64, &[0xFF, 0xF0, 0xFE, 0xFE, 0x7E]),
            (
                u64::MAX,
                &[0xFF, 0xF0, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0x0E],
            ),
        ];
        for &(v, bytes) in cases {
            assert_eq!(enc(v), bytes, "encoding {v}");
            assert_eq!(decode(bytes), Ok((v, bytes.len())), "decoding {v}");
            assert_eq!(encoded_len(v), bytes.len());
        }
    }

    /// The size-range table of §2.2: boundaries change length exactly there.
    #[test]
    fn size_ranges() {
        let bounds: &[(u64, usize)] = &[
            (239, 1),
            (240, 2),
            (2_287, 2),
            (2_288, 3),
            (264_431, 3),
            (264_432, 4),
            (33_818_863, 4),
            (33_818_864, 5),
            (4_328_786_159, 5),
            (4_328_786_160, 6),
            (554_084_600_047, 6),
            (554_084_600_048, 7),
            (70_922_828_777_711, 7),
            (70_922_828_777_712, 8),
            (9_078_122_083_518_703, 8),
            (9_078_122_083_518_704, 9),
            (1_161_999_626_690_365_679, 9),
            (1_161_999_626_690_365_680, 10),
        ];
        for &(v, n) in bounds {
            assert_eq!(enc(v).len(), n, "length of {v}");
        }
    }

    #[test]
    fn incomplete_and_too_long() {
        assert_eq!(decode(&[]), Err(VarintError::Incomplete));
        assert_eq!(decode(&[0xF0]), Err(VarintError::Incomplete));
        assert_eq!(decode(&[0xF0, 0x80]), Err(VarintError::Incomplete));
        let eleven = [
            0xFF, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
        ];
        assert_eq!(decode(&eleven), Err(VarintError::TooLong));
        // Ten continuing bytes already mean an 11th would be needed.
        assert_eq!(decode(&eleven[..10]), Err(VarintError::TooLong));
    }

    proptest! {
        #[test]
        fn round_trip(v: u64) {
            let bytes = enc(v);
            prop_assert!(bytes.len() <= MAX_LEN);
            prop_assert_eq!(bytes.len(), encoded_len(v));
            prop_assert_eq!(decode(&bytes), Ok((v, bytes.len())));
        }

        #[test]
        fn decode_never_panics(bytes: Vec<u8>) {
            let _ = decode(&bytes);
        }
    }
}
