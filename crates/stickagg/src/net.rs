//! Moving bytes, nothing else.
//!
//! Every TCP connection gets a reader task and a writer task. The reader
//! forwards whatever it reads to the hub (`server.rs`), which owns all
//! protocol state; the writer writes what the hub hands it. The hub keeps
//! count of the bytes handed to a writer and not yet written
//! ([`ConnHandle::inflight`]), so a peer that stops reading stops receiving
//! new updates instead of growing a queue: its pending changes stay
//! coalesced in the engine.

use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub type ConnId = u64;

/// What the I/O tasks tell the hub.
#[derive(Debug)]
pub enum NetEvent {
    /// A listener accepted a connection.
    Accepted {
        listener: usize,
        stream: TcpStream,
        remote: SocketAddr,
    },
    /// An outgoing connection attempt to a section's peer succeeded.
    Connected {
        section: usize,
        peer: usize,
        stream: TcpStream,
    },
    ConnectFailed {
        section: usize,
        peer: usize,
        error: String,
    },
    /// Bytes read from a connection.
    Data { conn: ConnId, bytes: Bytes },
    /// The connection was closed by the peer or failed.
    Eof { conn: ConnId, error: Option<String> },
}

enum WriterCmd {
    Data(Bytes),
    Close,
}

/// The hub's end of a connection.
pub struct ConnHandle {
    tx: mpsc::UnboundedSender<WriterCmd>,
    inflight: Arc<AtomicUsize>,
    reader: JoinHandle<()>,
}

impl ConnHandle {
    /// Queues bytes for writing.
    pub fn send(&self, bytes: Bytes) {
        self.inflight.fetch_add(bytes.len(), Ordering::Relaxed);
        let _ = self.tx.send(WriterCmd::Data(bytes));
    }

    /// Bytes queued and not yet written to the socket.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Writes what is queued, then closes. Nothing more is read.
    pub fn close(&self) {
        self.reader.abort();
        let _ = self.tx.send(WriterCmd::Close);
    }
}

/// Starts the reader and writer tasks of a connection.
pub fn spawn_conn(conn: ConnId, stream: TcpStream, events: mpsc::Sender<NetEvent>) -> ConnHandle {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            buf.reserve(64 * 1024);
            let error = match rd.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => {
                    let bytes = buf.split().freeze();
                    // A full channel makes the reader wait: the hub's pace is
                    // the peers' pace, and memory stays bounded.
                    if events.send(NetEvent::Data { conn, bytes }).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => Some(e.to_string()),
            };
            let _ = events.send(NetEvent::Eof { conn, error }).await;
            return;
        }
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let inflight = Arc::new(AtomicUsize::new(0));
    let counter = inflight.clone();
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                WriterCmd::Data(b) => {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                    counter.fetch_sub(b.len(), Ordering::Relaxed);
                }
                WriterCmd::Close => {
                    let _ = wr.shutdown().await;
                    break;
                }
            }
        }
    });
    ConnHandle {
        tx,
        inflight,
        reader,
    }
}

/// Accepts connections forever, handing them to the hub.
pub fn spawn_listener(
    listener: usize,
    sock: TcpListener,
    events: mpsc::Sender<NetEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match sock.accept().await {
                Ok((stream, remote)) => {
                    if events
                        .send(NetEvent::Accepted {
                            listener,
                            stream,
                            remote,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// One outgoing connection attempt, from `source` when set, with HAProxy's
/// own connect timeout (1 s).
pub fn spawn_connect(
    section: usize,
    peer: usize,
    addr: SocketAddr,
    source: Option<SocketAddr>,
    events: mpsc::Sender<NetEvent>,
) {
    tokio::spawn(async move {
        let attempt = async {
            let sock = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(src) = source {
                // Several peers may be reached from one fixed source port.
                sock.set_reuseaddr(true)?;
                sock.bind(src)?;
            }
            sock.connect(addr).await
        };
        let ev = match tokio::time::timeout(Duration::from_secs(1), attempt).await {
            Ok(Ok(stream)) => NetEvent::Connected {
                section,
                peer,
                stream,
            },
            Ok(Err(e)) => NetEvent::ConnectFailed {
                section,
                peer,
                error: e.to_string(),
            },
            Err(_) => NetEvent::ConnectFailed {
                section,
                peer,
                error: "connect timeout".into(),
            },
        };
        let _ = events.send(ev).await;
    });
}
