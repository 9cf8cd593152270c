//! HAProxy's peers protocol (version 2.1), without I/O.
//!
//! Everything here takes bytes and time as inputs and returns bytes, events
//! and deadlines; sockets and timers belong to the caller. See
//! `peers-protocol.md` for the wire format this implements.
//!
//! - [`varint`]: HAProxy's variable-length integers.
//! - [`registry`]: the one table of all data types and key types.
//! - [`freq`]: frequency counters, HAProxy's read, and summing across nodes.
//! - [`message`], [`hello`], [`table`], [`update`], [`dict`]: the codec.
//! - [`session`]: the state machine of one connection, either side.

pub mod dict;
pub mod error;
pub mod freq;
pub mod hello;
pub mod message;
mod reader;
pub mod registry;
pub mod session;
pub mod table;
pub mod update;
pub mod varint;

pub use error::{DecodeError, EncodeError};
pub use freq::{FreqCtr, Window};
pub use hello::{Hello, Status};
pub use registry::{data_type, data_type_by_name, Combine, DataType, KeyType, Storage, DATA_TYPES};
pub use session::{CloseReason, Event, Role, Session, SessionConfig, SessionStats};
pub use table::{Column, TableDef};
pub use update::{Key, Update, Value, Values};

/// Public access to the bounds-checked reader for fuzzing and benchmarks.
pub mod fuzzing {
    pub use crate::reader::Reader;
}
