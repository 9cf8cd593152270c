//! A bounds-checked cursor over one message, tracking absolute offsets so
//! errors can say where they happened. Never panics: every read is checked.

use crate::error::DecodeError;
use crate::varint;

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Absolute offset of `buf[0]` in the session stream.
    base: u64,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], base: u64) -> Self {
        Reader { buf, pos: 0, base }
    }

    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        match varint::decode(&self.buf[self.pos..]) {
            Ok((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            Err(varint::VarintError::Incomplete) => Err(DecodeError::Truncated {
                what,
                offset: self.offset(),
            }),
            Err(varint::VarintError::TooLong) => Err(DecodeError::VarintTooLong {
                what,
                offset: self.offset(),
            }),
        }
    }

    /// A varint that must fit in 32 bits on our side (ids, lengths). HAProxy
    /// would silently truncate; we refuse, since a sane peer never sends it.
    pub fn varint_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let at = self.offset();
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| DecodeError::Invalid {
            what,
            detail: format!("{v} does not fit in 32 bits"),
            offset: at,
        })
    }

    pub fn u32_be(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                what,
                offset: self.offset(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        self.bytes(n, what).map(|_| ())
    }

    pub fn invalid(&self, what: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            what,
            detail: detail.into(),
            offset: self.offset(),
        }
    }
}
