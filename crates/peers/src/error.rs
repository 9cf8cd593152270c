//! Typed decoding errors.
//!
//! Every error names what was being read and the byte offset where it went
//! wrong. Offsets count from the start of the session's byte stream once a
//! [`crate::session::Session`] reports them, so a log line can be matched
//! against a packet capture.

use thiserror::Error;

/// Why a peer's bytes could not be decoded. Any of these ends the session:
/// HAProxy answers the same conditions with `01 00` (or `01 01` for
/// [`DecodeError::TooLarge`]) and closes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended inside a field (the message length said there was more).
    #[error("truncated {what} at byte {offset}")]
    Truncated { what: &'static str, offset: u64 },

    /// HAProxy's encoder never produces more than 10 bytes for a u64.
    #[error("varint longer than 10 bytes in {what} at byte {offset}")]
    VarintTooLong { what: &'static str, offset: u64 },

    /// The message length prefix is limited to 5 bytes by HAProxy.
    #[error("message length does not fit in 5 bytes at byte {offset}")]
    LengthTooLong { offset: u64 },

    /// A message longer than the receive limit (HAProxy's `tune.bufsize`).
    #[error("message of {len} bytes exceeds the {max}-byte limit at byte {offset}")]
    TooLarge { len: u64, max: usize, offset: u64 },

    /// Class 255 is reserved; HAProxy treats it as a protocol error.
    #[error("reserved message class 255 at byte {offset}")]
    ReservedClass { offset: u64 },

    /// A field was present but its value is not acceptable.
    #[error("invalid {what} at byte {offset}: {detail}")]
    Invalid {
        what: &'static str,
        detail: String,
        offset: u64,
    },
}

impl DecodeError {
    /// True for the one error HAProxy answers with `01 01` rather than `01 00`.
    pub fn is_size_error(&self) -> bool {
        matches!(self, DecodeError::TooLarge { .. })
    }
}

/// Why something could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("update for table {0} which was never declared on this session")]
    UnknownTable(u64),
    #[error("{0}")]
    Mismatch(String),
}
