//! Message framing (peers-protocol.md §2.1, §3).
//!
//! Every message starts with a class byte and a type byte. Whether a varint
//! length and a payload follow depends only on bit 7 of the type, for every
//! class. Unknown classes and types are skipped, as HAProxy does, so that a
//! newer peer can add messages; class 255 is reserved and is an error.

use crate::error::DecodeError;
use crate::varint;
use bytes::BufMut;

pub const CLASS_CONTROL: u8 = 0;
pub const CLASS_ERROR: u8 = 1;
pub const CLASS_TABLE: u8 = 10;
pub const CLASS_RESERVED: u8 = 255;

/// HAProxy's receive buffer (`tune.bufsize`): the largest message it accepts.
pub const DEFAULT_MAX_MESSAGE: usize = 16384;

/// The length prefix may use at most this many bytes.
const MAX_LENGTH_BYTES: usize = 5;

/// Control messages (class 0), all exactly two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// "Teach me everything you have."
    ResyncRequest = 0,
    /// End of a full push; the sender is fully synced.
    ResyncFinished = 1,
    /// End of a full push; the sender is not fully synced itself.
    ResyncPartial = 2,
    /// Acknowledges FINISHED/PARTIAL.
    ResyncConfirm = 3,
    Heartbeat = 4,
}

impl Control {
    pub fn from_wire(t: u8) -> Option<Control> {
        Some(match t {
            0 => Control::ResyncRequest,
            1 => Control::ResyncFinished,
            2 => Control::ResyncPartial,
            3 => Control::ResyncConfirm,
            4 => Control::Heartbeat,
            _ => return None,
        })
    }
}

/// Error messages (class 1): the sender closes right after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    Protocol = 0,
    SizeLimit = 1,
}

/// One framed message, borrowed from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Control(Control),
    Error(PeerError),
    /// A stick-table message (class 10) with its payload and the payload's
    /// absolute offset in the stream.
    Table {
        ty: u8,
        payload: &'a [u8],
        offset: u64,
    },
    /// Anything we do not know: skipped.
    Skipped {
        class: u8,
        ty: u8,
    },
}

/// Splits one frame off the front of `buf`. `Ok(None)` means more bytes are
/// needed. `base` is the absolute stream offset of `buf[0]`.
pub fn next_frame(
    buf: &[u8],
    max: usize,
    base: u64,
) -> Result<Option<(Frame<'_>, usize)>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (class, ty) = (buf[0], buf[1]);
    if class == CLASS_RESERVED {
        return Err(DecodeError::ReservedClass { offset: base });
    }
    let (payload, used) = if ty & 0x80 != 0 {
        let lenbuf = &buf[2..buf.len().min(2 + MAX_LENGTH_BYTES)];
        let (len, n) = match varint::decode(lenbuf) {
            Ok(v) => v,
            Err(_) if lenbuf.len() < MAX_LENGTH_BYTES => return Ok(None),
            Err(_) => return Err(DecodeError::LengthTooLong { offset: base + 2 }),
        };
        if len > max as u64 {
            return Err(DecodeError::TooLarge {
                len,
                max,
                offset: base + 2,
            });
        }
        let start = 2 + n;
        let end = start + len as usize;
        if buf.len() < end {
            return Ok(None);
        }
        (&buf[start..end], end)
    } else {
        (&buf[2..2], 2)
    };
    let frame = match class {
        CLASS_CONTROL => match Control::from_wire(ty) {
            Some(c) => Frame::Control(c),
            None => Frame::Skipped { class, ty },
        },
        CLASS_ERROR => match ty {
            0 => Frame::Error(PeerError::Protocol),
            1 => Frame::Error(PeerError::SizeLimit),
            _ => Frame::Skipped { class, ty },
        },
        CLASS_TABLE if (0x80..=0x86).contains(&ty) => Frame::Table {
            ty,
            payload,
            offset: base + (used - payload.len()) as u64,
        },
        _ => Frame::Skipped { class, ty },
    };
    Ok(Some((frame, used)))
}

pub fn encode_control(out: &mut impl BufMut, c: Control) {
    out.put_u8(CLASS_CONTROL);
    out.put_u8(c as u8);
}

pub fn encode_error(out: &mut impl BufMut, e: PeerError) {
    out.put_u8(CLASS_ERROR);
    out.put_u8(e as u8);
}

/// Frames a stick-table payload: class, type, varint length, payload.
pub fn encode_table_msg(out: &mut impl BufMut, ty: u8, payload: &[u8]) {
    out.put_u8(CLASS_TABLE);
    out.put_u8(ty);
    varint::encode(payload.len() as u64, out);
    out.put_slice(payload);
}

/// Total framed size of a stick-table message with this payload length.
pub fn framed_len(payload_len: usize) -> usize {
    2 + varint::encoded_len(payload_len as u64) + payload_len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_error_and_skips() {
        assert_eq!(
            next_frame(&[0, 4], 100, 0).unwrap(),
            Some((Frame::Control(Control::Heartbeat), 2))
        );
        assert_eq!(
            next_frame(&[1, 1], 100, 0).unwrap(),
            Some((Frame::Error(PeerError::SizeLimit), 2))
        );
        assert_eq!(
            next_frame(&[2, 5], 100, 0).unwrap(),
            Some((Frame::Skipped { class: 2, ty: 5 }, 2))
        );
        // Unknown table type with a length: skipped whole.
        assert_eq!(
            next_frame(&[10, 0x87, 2, 9, 9, 0, 4], 100, 0).unwrap(),
            Some((
                Frame::Skipped {
                    class: 10,
                    ty: 0x87
                },
                5
            ))
        );
        // Bit 7 decides the length even for the control class.
        assert_eq!(
            next_frame(&[0, 0x85, 1, 7], 100, 0).unwrap(),
            Some((Frame::Skipped { class: 0, ty: 0x85 }, 4))
        );
        assert!(matches!(
            next_frame(&[255, 0], 100, 7),
            Err(DecodeError::ReservedClass { offset: 7 })
        ));
    }

    #[test]
    fn lengths() {
        assert_eq!(next_frame(&[10, 0x84], 100, 0).unwrap(), None);
        assert_eq!(next_frame(&[10, 0x84, 5, 1], 100, 0).unwrap(), None);
        let msg = [10, 0x84, 5, 3, 0, 0, 0, 3];
        assert_eq!(
            next_frame(&msg, 100, 10).unwrap(),
            Some((
                Frame::Table {
                    ty: 0x84,
                    payload: &msg[3..],
                    offset: 13
                },
                8
            ))
        );
        // 20000 > 16384: size error.
        let mut big = vec![10, 0x80];
        varint::encode(20000, &mut big);
        assert!(next_frame(&big, DEFAULT_MAX_MESSAGE, 0)
            .unwrap_err()
            .is_size_error());
        // A length still incomplete after 5 bytes.
        assert!(matches!(
            next_frame(&[10, 0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], 100, 0),
            Err(DecodeError::LengthTooLong { .. })
        ));
        assert_eq!(next_frame(&[10, 0x80, 0xFF, 0xFF], 100, 0).unwrap(), None);
    }
}
