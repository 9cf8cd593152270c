//! One peers-protocol session, without I/O.
//!
//! Feed it the bytes read from the socket and the current time
//! ([`Session::handle_input`]), the time when its timer fires
//! ([`Session::handle_timeout`]); take back events ([`Session::poll_event`]),
//! bytes to write ([`Session::transmit`]) and the next deadline
//! ([`Session::poll_timeout`]). Time is a monotonic millisecond count chosen
//! by the caller, so tests can run in virtual time.
//!
//! The session does on its own what the protocol requires of every peer:
//! heartbeats when idle, closing a silent peer, CONFIRM for every
//! FINISHED/PARTIAL, ACKs for received updates, a DEFINE before the first
//! update of a table, explicit update ids, the size limit, and the status
//! codes for a malformed hello. Decisions that need the application's
//! configuration — whether a peer name is known, what to teach on a resync
//! request — are surfaced as events.
//!
//! All per-connection state (table ids, current tables, dictionaries, update
//! ids) lives here, so a new connection is a new `Session` and starts clean.

use crate::dict::{RxDict, TxDict};
use crate::error::{DecodeError, EncodeError};
use crate::hello::{self, Hello, Status};
use crate::message::{self, Control, Frame, PeerError, DEFAULT_MAX_MESSAGE};
use crate::reader::Reader;
use crate::table::TableDef;
use crate::update::{self, Update, Value};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Tunables; the defaults match what HAProxy expects of a peer.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Largest message accepted or sent (HAProxy's `tune.bufsize`).
    pub max_message: usize,
    /// Send a heartbeat after this long without sending anything. HAProxy
    /// kills a session after 5 s of silence, so this must stay well below.
    pub heartbeat_ms: u64,
    /// Close the session after this long without receiving anything.
    pub silence_ms: u64,
    /// Close a connection whose handshake is not complete after this long.
    pub hello_timeout_ms: u64,
    /// Longest hello or status line; a longer one closes without status.
    pub max_line: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_message: DEFAULT_MAX_MESSAGE,
            heartbeat_ms: 2_000,
            silence_ms: 5_000,
            hello_timeout_ms: 5_000,
            max_line: 512,
        }
    }
}

/// Which side of the TCP connection we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// We accepted the connection: we read a hello and answer a status.
    Accept,
    /// We connected: we send a hello naming the callee and ourselves.
    Connect {
        callee: String,
        caller: String,
        pid: u32,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent something undecodable; we answered `01 00`/`01 01`.
    Protocol(DecodeError),
    /// We refused the hello with this status.
    SentStatus(u16),
    /// The peer refused our hello with this status (0: no parsable status).
    Refused(u16),
    /// A hello or status line longer than the limit.
    LineTooLong,
    /// Handshake not complete in time.
    HelloTimeout,
    /// Nothing received for `silence_ms`.
    Silence,
    /// The application closed it.
    Local,
}

/// What happened on the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Accepting side: a complete, well-formed hello. Answer with
    /// [`Session::accept`] or [`Session::refuse`] (or close).
    HelloReceived(Hello),
    /// The handshake succeeded; binary messages follow. `minor` is the
    /// peer's protocol minor version (0: never send it timed updates).
    Established {
        minor: u32,
    },
    /// The peer announced a table we can decode.
    TableDefined {
        remote_id: u64,
        def: Arc<TableDef>,
    },
    /// The peer announced a table we cannot use; its updates are ignored.
    TableRejected {
        remote_id: u64,
        name: String,
        reason: String,
    },
    /// An entry of a table defined by the peer. Its definition is the one
    /// last announced under `remote_id` ([`Session::rx_def`]); the event does
    /// not carry it, because a reference count per update (an atomic
    /// increment and decrement) was 12 % of decoding.
    Update {
        remote_id: u64,
        update: Update,
    },
    /// The peer acknowledged our updates of table `table_id` up to `update_id`.
    Ack {
        table_id: u64,
        update_id: u32,
    },
    ResyncRequest,
    /// (CONFIRM already queued.)
    ResyncFinished,
    /// (CONFIRM already queued.)
    ResyncPartial,
    ResyncConfirm,
    Heartbeat,
    /// The peer reported an error; it will close the connection.
    PeerError(PeerError),
    /// The session is over; flush [`Session::transmit`] and close.
    Closed(CloseReason),
}

/// Counters for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    pub updates_out: u64,
    pub heartbeats_in: u64,
    pub heartbeats_out: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Accepting side, reading hello line 1, 2 or 3.
    HelloLine(u8),
    AwaitDecision,
    AwaitStatus,
    Established,
    Closed,
}

/// A table the peer defined on this connection.
struct RxTable {
    id: u64,
    /// `None`: defined but rejected; its updates are dropped unread.
    def: Option<Arc<TableDef>>,
    last_id: u32,
}

/// A table we send on this connection.
struct TxTable {
    def: Arc<TableDef>,
    next_id: u32,
}

pub struct Session {
    cfg: SessionConfig,
    role: Role,
    state: State,
    rx: BytesMut,
    tx: BytesMut,
    scratch: BytesMut,
    /// Stream offset of `rx[0]`, for error messages.
    rx_offset: u64,
    events: VecDeque<Event>,
    started: u64,
    last_rx: u64,
    last_tx: u64,
    minor: u32,
    callee: String,
    version: (u32, u32),
    /// Tables the peer defined, by its id: an index into `rx_tables`.
    remote: HashMap<u64, usize>,
    /// The peer's tables. The current one is kept as an index so that an
    /// update, the most frequent message, costs no lookup by id.
    rx_tables: Vec<RxTable>,
    current_rx: Option<usize>,
    acks: Vec<u64>,
    local: HashMap<u64, TxTable>,
    current_tx: Option<u64>,
    rx_dict: RxDict,
    tx_dict: TxDict,
    stats: SessionStats,
}

impl Session {
    /// A new session at time `now` (ms). A connecting session queues its
    /// hello at once.
    pub fn new(role: Role, cfg: SessionConfig, now: u64) -> Session {
        let mut s = Session {
            cfg,
            state: State::HelloLine(0),
            rx: BytesMut::new(),
            tx: BytesMut::new(),
            scratch: BytesMut::new(),
            rx_offset: 0,
            events: VecDeque::new(),
            started: now,
            last_rx: now,
            last_tx: now,
            minor: 1,
            callee: String::new(),
            version: (2, 1),
            remote: HashMap::new(),
            rx_tables: Vec::new(),
            current_rx: None,
            acks: Vec::new(),
            local: HashMap::new(),
            current_tx: None,
            rx_dict: RxDict::default(),
            tx_dict: TxDict::default(),
            stats: SessionStats::default(),
            role,
        };
        if let Role::Connect {
            callee,
            caller,
            pid,
        } = &s.role
        {
            let hello = hello::encode_hello(callee, caller, *pid);
            s.tx.extend_from_slice(&hello);
            s.state = State::AwaitStatus;
        }
        s
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// True once the session has ended: write out what [`Session::transmit`]
    /// returns, then close the socket.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Bytes queued but not yet taken by [`Session::transmit`]: lets the I/O
    /// layer stop feeding updates to a peer that does not read.
    pub fn pending_tx(&self) -> usize {
        self.tx.len()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The event `n` places ahead of the next [`Session::poll_event`],
    /// without taking it: lets the application start fetching what an
    /// update will touch before its turn (see stickagg's `Engine::prefetch`).
    pub fn peek_event(&self, n: usize) -> Option<&Event> {
        self.events.get(n)
    }

    /// The definition the peer last announced under `remote_id`, if it was
    /// decodable. Events already queued were decoded with the definition
    /// current when they arrived; a later DEFINE of the same id comes after
    /// them as a [`Event::TableDefined`].
    pub fn rx_def(&self, remote_id: u64) -> Option<&Arc<TableDef>> {
        let &i = self.remote.get(&remote_id)?;
        self.rx_tables[i].def.as_ref()
    }

    /// Bytes to write to the socket, if any.
    pub fn transmit(&mut self) -> Option<Bytes> {
        if self.tx.is_empty() {
            return None;
        }
        self.stats.bytes_out += self.tx.len() as u64;
        Some(self.tx.split().freeze())
    }

    /// The next instant [`Session::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::HelloLine(_) | State::AwaitStatus => {
                Some(self.started + self.cfg.hello_timeout_ms)
            }
            State::Established => {
                Some((self.last_tx + self.cfg.heartbeat_ms).min(self.last_rx + self.cfg.silence_ms))
            }
            State::AwaitDecision | State::Closed => None,
        }
    }

    pub fn handle_timeout(&mut self, now: u64) {
        match self.state {
            State::HelloLine(_) | State::AwaitStatus
                if now >= self.started + self.cfg.hello_timeout_ms =>
            {
                self.close(CloseReason::HelloTimeout);
            }
            State::Established => {
                if now >= self.last_rx + self.cfg.silence_ms {
                    self.close(CloseReason::Silence);
                } else if now >= self.last_tx + self.cfg.heartbeat_ms {
                    self.queue_control(Control::Heartbeat, now);
                    self.stats.heartbeats_out += 1;
                }
            }
            _ => {}
        }
    }

    /// Bytes from the peer have been read from the socket but wait, behind
    /// other work, to be passed to [`Session::handle_input`]: the peer is not
    /// silent. An application that is behind must not take its own lag for
    /// the peer's silence and close a healthy session.
    pub fn note_input_pending(&mut self, now: u64) {
        if self.state == State::Established {
            self.last_rx = self.last_rx.max(now);
        }
    }

    /// Processes bytes read from the socket.
    pub fn handle_input(&mut self, data: &[u8], now: u64) {
        if self.state == State::Closed || data.is_empty() {
            return;
        }
        self.stats.bytes_in += data.len() as u64;
        self.last_rx = now;
        self.rx.extend_from_slice(data);
        loop {
            let progressed = match self.state {
                State::HelloLine(_) | State::AwaitStatus => self.read_line(now),
                State::Established => self.read_frame(now),
                State::AwaitDecision | State::Closed => false,
            };
            if !progressed {
                break;
            }
        }
        self.flush_acks(now);
    }

    /// Accepting side: answer 200 to the hello just received.
    pub fn accept(&mut self, now: u64) {
        if self.state != State::AwaitDecision {
            return;
        }
        self.tx
            .extend_from_slice(&hello::encode_status(Status::Ok.code()));
        self.last_tx = now;
        self.last_rx = now;
        self.state = State::Established;
        self.events
            .push_back(Event::Established { minor: self.minor });
        // Binary bytes may have arrived right behind the hello.
        while self.read_frame(now) {}
        self.flush_acks(now);
    }

    /// Accepting side: refuse the hello with a status and close.
    pub fn refuse(&mut self, status: Status) {
        if matches!(self.state, State::HelloLine(_) | State::AwaitDecision) {
            self.tx
                .extend_from_slice(&hello::encode_status(status.code()));
            self.close(CloseReason::SentStatus(status.code()));
        }
    }

    /// Ends the session without a status or error message.
    pub fn close_local(&mut self) {
        if self.state != State::Closed {
            self.close(CloseReason::Local);
        }
    }

    /// The name the peer called us by (accepting side).
    pub fn callee(&self) -> &str {
        &self.callee
    }

    pub fn send_resync_request(&mut self, now: u64) {
        self.send_control(Control::ResyncRequest, now);
    }

    /// Ends a teach: FINISHED (we are fully synced) or PARTIAL.
    pub fn send_resync_end(&mut self, partial: bool, now: u64) {
        let c = if partial {
            Control::ResyncPartial
        } else {
            Control::ResyncFinished
        };
        self.send_control(c, now);
    }

    fn send_control(&mut self, c: Control, now: u64) {
        if self.state == State::Established {
            self.queue_control(c, now);
        }
    }

    /// Registers a table we will send on this session. Its DEFINE goes out
    /// before its first update, or now with [`Session::send_define`].
    pub fn declare_table(&mut self, def: Arc<TableDef>) {
        let id = def.id;
        match self.local.get_mut(&id) {
            Some(t) if t.def == def => {}
            Some(t) => {
                t.def = def;
                if self.current_tx == Some(id) {
                    self.current_tx = None;
                }
            }
            None => {
                self.local.insert(id, TxTable { def, next_id: 1 });
            }
        }
    }

    /// Sends the DEFINE of a declared table now (a resync teach announces
    /// every table, even empty ones).
    pub fn send_define(&mut self, table_id: u64, now: u64) -> Result<(), EncodeError> {
        if self.state != State::Established {
            return Ok(());
        }
        let def = self
            .local
            .get(&table_id)
            .ok_or(EncodeError::UnknownTable(table_id))?
            .def
            .clone();
        self.scratch.clear();
        def.encode(&mut self.scratch);
        self.queue_table_msg(update::MSG_DEFINE, now)?;
        self.current_tx = Some(table_id);
        Ok(())
    }

    /// Sends one entry of a declared table, always with an explicit update
    /// id; timed (with a remaining lifetime) when `expire` is set and the
    /// peer speaks 2.1. Returns the update id used. An update that would not
    /// fit in one message is refused and nothing is sent.
    pub fn send_update(
        &mut self,
        table_id: u64,
        key: &[u8],
        values: &[Value],
        expire: Option<u32>,
        now: u64,
    ) -> Result<u32, EncodeError> {
        if self.state != State::Established {
            return Err(EncodeError::Mismatch("session not established".into()));
        }
        if self.current_tx != Some(table_id) {
            self.send_define(table_id, now)?;
        }
        let expire = if self.minor == 0 { None } else { expire };
        let t = self
            .local
            .get_mut(&table_id)
            .ok_or(EncodeError::UnknownTable(table_id))?;
        let id = t.next_id;
        self.scratch.clear();
        let ty = update::encode_update(
            &mut self.scratch,
            &t.def,
            id,
            expire,
            key,
            values,
            &mut self.tx_dict,
        );
        let ty = match ty {
            Ok(ty) => ty,
            Err(e) => {
                // The dictionary may hold a value the peer never received.
                self.tx_dict = TxDict::default();
                return Err(e);
            }
        };
        t.next_id = id.wrapping_add(1).max(1);
        if let Err(e) = self.queue_table_msg(ty, now) {
            self.tx_dict = TxDict::default();
            return Err(e);
        }
        self.stats.updates_out += 1;
        Ok(id)
    }

    // ---- internals -------------------------------------------------------

    fn close(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.events.push_back(Event::Closed(reason));
    }

    fn queue_control(&mut self, c: Control, now: u64) {
        message::encode_control(&mut self.tx, c);
        self.stats.messages_out += 1;
        self.last_tx = now;
    }

    /// Frames `self.scratch` as a table message, enforcing the size limit.
    fn queue_table_msg(&mut self, ty: u8, now: u64) -> Result<(), EncodeError> {
        let len = message::framed_len(self.scratch.len());
        if len > self.cfg.max_message {
            return Err(EncodeError::TooLarge {
                len,
                max: self.cfg.max_message,
            });
        }
        message::encode_table_msg(&mut self.tx, ty, &self.scratch);
        self.stats.messages_out += 1;
        self.last_tx = now;
        Ok(())
    }

    fn protocol_error(&mut self, err: DecodeError) {
        let e = if err.is_size_error() {
            PeerError::SizeLimit
        } else {
            PeerError::Protocol
        };
        message::encode_error(&mut self.tx, e);
        self.close(CloseReason::Protocol(err));
    }

    /// Reads one handshake line if complete. Returns whether it progressed.
    fn read_line(&mut self, now: u64) -> bool {
        let Some(nl) = self.rx.iter().position(|&b| b == b'\n') else {
            if self.rx.len() > self.cfg.max_line {
                self.close(CloseReason::LineTooLong);
            }
            return false;
        };
        if nl > self.cfg.max_line {
            self.close(CloseReason::LineTooLong);
            return false;
        }
        let raw = self.rx.split_to(nl + 1);
        self.rx_offset += raw.len() as u64;
        let line = hello::trim_line(&raw);
        match self.state {
            State::AwaitStatus => {
                let code = hello::parse_status_line(line);
                if code == Status::Ok.code() {
                    self.state = State::Established;
                    self.last_tx = now;
                    self.events
                        .push_back(Event::Established { minor: self.minor });
                } else {
                    self.close(CloseReason::Refused(code));
                }
            }
            State::HelloLine(0) => match hello::parse_version_line(line) {
                Ok(v) => {
                    self.version = v;
                    self.minor = v.1;
                    self.state = State::HelloLine(1);
                }
                Err(st) => self.refuse(st),
            },
            State::HelloLine(1) => {
                self.callee = String::from_utf8_lossy(line).into_owned();
                self.state = State::HelloLine(2);
            }
            State::HelloLine(_) => match hello::parse_caller_line(line) {
                Ok(caller) => {
                    self.state = State::AwaitDecision;
                    self.events.push_back(Event::HelloReceived(Hello {
                        version: self.version,
                        callee: self.callee.clone(),
                        caller,
                    }));
                }
                Err(st) => self.refuse(st),
            },
            _ => return false,
        }
        self.state != State::Closed
    }

    /// Decodes and handles one binary message if complete.
    fn read_frame(&mut self, now: u64) -> bool {
        let frame = match message::next_frame(&self.rx, self.cfg.max_message, self.rx_offset) {
            Ok(Some(f)) => f,
            Ok(None) => return false,
            Err(e) => {
                self.protocol_error(e);
                return false;
            }
        };
        let (frame, used) = frame;
        // Turn the borrowed frame into plain data, then take the buffer out
        // while the message is handled, so that handling can borrow `self`
        // mutably (`split_to` per message did the same with two atomic
        // reference counts per message: 10 % of decoding).
        enum Kind {
            Control(Control),
            Error(PeerError),
            Table { ty: u8, start: usize, offset: u64 },
            Skipped,
        }
        let kind = match frame {
            Frame::Control(c) => Kind::Control(c),
            Frame::Error(e) => Kind::Error(e),
            Frame::Table {
                ty,
                payload,
                offset,
            } => Kind::Table {
                ty,
                start: used - payload.len(),
                offset,
            },
            Frame::Skipped { .. } => Kind::Skipped,
        };
        let msg = std::mem::take(&mut self.rx);
        let result = match kind {
            Kind::Table { ty, start, offset } => self.on_table_msg(ty, &msg[start..used], offset),
            Kind::Control(c) => {
                self.on_control(c, now);
                Ok(())
            }
            Kind::Error(e) => {
                self.events.push_back(Event::PeerError(e));
                Ok(())
            }
            Kind::Skipped => Ok(()),
        };
        self.rx = msg;
        self.rx.advance(used);
        self.stats.messages_in += 1;
        self.rx_offset += used as u64;
        match result {
            Ok(()) => true,
            Err(e) => {
                self.protocol_error(e);
                false
            }
        }
    }

    fn on_control(&mut self, c: Control, now: u64) {
        let ev = match c {
            Control::ResyncRequest => Event::ResyncRequest,
            Control::ResyncFinished | Control::ResyncPartial => {
                // Every FINISHED/PARTIAL gets a CONFIRM, solicited or not;
                // without it HAProxy stops pushing updates to us.
                self.queue_control(Control::ResyncConfirm, now);
                if c == Control::ResyncFinished {
                    Event::ResyncFinished
                } else {
                    Event::ResyncPartial
                }
            }
            Control::ResyncConfirm => Event::ResyncConfirm,
            Control::Heartbeat => {
                self.stats.heartbeats_in += 1;
                Event::Heartbeat
            }
        };
        self.events.push_back(ev);
    }

    /// The index in `rx_tables` of the peer's table `id`, added (undefined,
    /// no update received) if new.
    fn rx_table(&mut self, id: u64) -> usize {
        *self.remote.entry(id).or_insert_with(|| {
            self.rx_tables.push(RxTable {
                id,
                def: None,
                last_id: 0,
            });
            self.rx_tables.len() - 1
        })
    }

    fn on_table_msg(&mut self, ty: u8, payload: &[u8], offset: u64) -> Result<(), DecodeError> {
        let mut r = Reader::new(payload, offset);
        match ty {
            update::MSG_DEFINE => match TableDef::decode(&mut r)? {
                Ok(def) => {
                    let id = def.id;
                    let def = Arc::new(def);
                    // The last received id survives a re-announcement, as in
                    // HAProxy: an incremental update may follow a DEFINE.
                    let i = self.rx_table(id);
                    self.rx_tables[i].def = Some(def.clone());
                    self.current_rx = Some(i);
                    self.events
                        .push_back(Event::TableDefined { remote_id: id, def });
                }
                Err(rej) => {
                    let i = self.rx_table(rej.id);
                    self.rx_tables[i].def = None;
                    self.rx_tables[i].last_id = 0;
                    self.current_rx = None;
                    self.events.push_back(Event::TableRejected {
                        remote_id: rej.id,
                        name: rej.name,
                        reason: rej.reason,
                    });
                }
            },
            update::MSG_SWITCH => {
                let id = r.varint("table id")?;
                self.current_rx = self.remote.get(&id).copied();
            }
            update::MSG_ACK => {
                let (table_id, update_id) = update::decode_ack(&mut r)?;
                self.events.push_back(Event::Ack {
                    table_id,
                    update_id,
                });
            }
            _ => {
                // An update: without a usable current table it is ignored
                // unread, as HAProxy does (no error, no ACK).
                let Some(t) = self.current_rx.and_then(|i| self.rx_tables.get_mut(i)) else {
                    return Ok(());
                };
                let id = t.id;
                let Some(def) = t.def.as_deref() else {
                    return Ok(());
                };
                let upd = update::decode_update(ty, &mut r, def, t.last_id, &mut self.rx_dict)?;
                t.last_id = upd.id;
                if !self.acks.contains(&id) {
                    self.acks.push(id);
                }
                self.stats.updates_in += 1;
                self.events.push_back(Event::Update {
                    remote_id: id,
                    update: upd,
                });
            }
        }
        Ok(())
    }

    /// One ACK per table that received updates since the last call, like
    /// HAProxy's lazy ACKs after draining its input.
    fn flush_acks(&mut self, now: u64) {
        if self.state != State::Established || self.acks.is_empty() {
            return;
        }
        let acks = std::mem::take(&mut self.acks);
        for id in acks {
            if let Some(t) = self.remote.get(&id).map(|&i| &self.rx_tables[i]) {
                let last = t.last_id;
                self.scratch.clear();
                update::encode_ack(&mut self.scratch, id, last);
                let _ = self.queue_table_msg(update::MSG_ACK, now);
            }
        }
    }
}

#[cfg(test)]
mod tests;
