//! Moving bytes, nothing else.
//!
//! Every connection gets a reader task and a writer task. The reader
//! forwards whatever it reads to the hub (`server.rs`), which owns all
//! protocol state; the writer writes what the hub hands it. On plain TCP
//! the hub first tries a non-blocking write itself, and only what the
//! socket does not take goes to the writer (see [`ConnHandle::send`]). The hub keeps
//! count of the bytes handed to a writer and not yet written
//! ([`ConnHandle::inflight`]), so a peer that stops reading stops receiving
//! new updates instead of growing a queue: its pending changes stay
//! coalesced in the engine.
//!
//! A connection is plain TCP or TLS ([`PeerStream`]): the TLS handshake is
//! done here, before the hub hears of the connection, so that the hub only
//! ever sees established streams (and a failed handshake is logged and
//! closed without reaching it).

use bytes::{Bytes, BytesMut};
use rustls::pki_types::{CertificateDer, ServerName};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Time allowed for a TLS handshake, incoming or outgoing.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Incoming TLS handshakes in progress per listener; beyond, new
/// connections are closed at once (a flood costs neither memory nor CPU).
const MAX_TLS_HANDSHAKES: usize = 1024;

/// Logs at most one warning a second, counting the ones it swallowed.
#[derive(Default)]
struct LogLimiter {
    last: Option<std::time::Instant>,
    unlogged: u64,
}

impl LogLimiter {
    /// The suffix to log with (`" (3 more since the last report)"`), or
    /// `None` when this one is not to be logged.
    fn admit(&mut self) -> Option<String> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(match std::mem::take(&mut self.unlogged) {
            0 => String::new(),
            n => format!(" ({n} more since the last report)"),
        })
    }
}

fn warn_limited(limiter: &std::sync::Mutex<LogLimiter>, msg: impl FnOnce() -> String) {
    let admitted = limiter.lock().map(|mut l| l.admit()).unwrap_or(None);
    if let Some(more) = admitted {
        tracing::warn!("{}{more}", msg());
    }
}

pub type ConnId = u64;

/// Any byte stream a peer session can run on.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

enum Transport {
    Tcp(TcpStream),
    /// TLS over TCP (either side).
    Tls(Box<dyn Io>),
}

/// An established connection: plain TCP, or TLS once the handshake is done.
pub struct PeerStream {
    transport: Transport,
    /// The other side's address.
    pub remote: SocketAddr,
    /// The client certificate an incoming TLS peer presented, verified
    /// against our CA (listeners with `verify optional|required`).
    pub peer_cert: Option<CertificateDer<'static>>,
}

impl PeerStream {
    /// A plain TCP connection.
    pub fn tcp(stream: TcpStream, remote: SocketAddr) -> PeerStream {
        let _ = stream.set_nodelay(true);
        PeerStream {
            transport: Transport::Tcp(stream),
            remote,
            peer_cert: None,
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }
}

impl fmt::Debug for PeerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerStream")
            .field("remote", &self.remote)
            .field("tls", &self.is_tls())
            .field("peer_cert", &self.peer_cert.is_some())
            .finish()
    }
}

/// TLS of an outgoing connection: the client configuration and the name
/// the server's certificate must carry (the peer name, also sent as SNI).
#[derive(Clone)]
pub struct ConnectTls {
    pub config: Arc<rustls::ClientConfig>,
    pub name: ServerName<'static>,
}

/// What the I/O tasks tell the hub.
#[derive(Debug)]
pub enum NetEvent {
    /// A listener accepted a connection.
    Accepted {
        listener: usize,
        stream: PeerStream,
        remote: SocketAddr,
    },
    /// An outgoing connection attempt to a section's peer succeeded.
    Connected {
        section: usize,
        peer: usize,
        stream: PeerStream,
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
    /// Plain TCP: the socket's write half, which the hub writes to itself
    /// when nothing is waiting in the writer task (see [`ConnHandle::send`]).
    direct: Option<Arc<OwnedWriteHalf>>,
    inflight: Arc<AtomicUsize>,
    /// Bytes read from the socket and not yet handled by the hub.
    queued: Arc<AtomicUsize>,
    reader: JoinHandle<()>,
    peer_cert: Option<CertificateDer<'static>>,
}

impl ConnHandle {
    /// Writes bytes, or queues them for the writer task.
    ///
    /// On plain TCP with nothing queued, the hub writes to the socket
    /// itself (a non-blocking write): handing every batch to a task cost a
    /// wake-up and a context switch per write, most of stickagg's CPU at
    /// moderate rates. What the socket does not take goes to the writer
    /// task. Order is kept: the hub writes only when the writer has
    /// written everything it was given (`inflight` is decremented after
    /// the write).
    pub fn send(&self, mut bytes: Bytes) {
        if let Some(w) = &self.direct {
            if self.inflight.load(Ordering::Acquire) == 0 {
                match w.try_write(&bytes) {
                    Ok(n) if n == bytes.len() => return,
                    Ok(n) => drop(bytes.split_to(n)),
                    // Would block, or failed: the writer task waits for the
                    // socket, or meets the error and ends (the reader
                    // reports the connection's end).
                    Err(_) => {}
                }
            }
        }
        self.inflight.fetch_add(bytes.len(), Ordering::AcqRel);
        let _ = self.tx.send(WriterCmd::Data(bytes));
    }

    /// Bytes queued and not yet written to the socket.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Bytes read from the socket that the hub has not handled yet: while
    /// there are some, the peer is not silent, the hub is behind.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The hub handled `n` bytes of a [`NetEvent::Data`].
    pub fn consumed(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// The verified certificate the other side presented over TLS, if any.
    pub fn peer_cert(&self) -> Option<&CertificateDer<'static>> {
        self.peer_cert.as_ref()
    }

    /// Writes what is queued, then closes. Nothing more is read.
    pub fn close(&self) {
        self.reader.abort();
        let _ = self.tx.send(WriterCmd::Close);
    }
}

/// Starts the reader and writer tasks of a connection.
pub fn spawn_conn(conn: ConnId, stream: PeerStream, events: mpsc::Sender<NetEvent>) -> ConnHandle {
    let peer_cert = stream.peer_cert;
    match stream.transport {
        Transport::Tcp(s) => {
            let (rd, wr) = s.into_split();
            spawn_io(conn, rd, WriteSide::Tcp(Arc::new(wr)), events, peer_cert)
        }
        Transport::Tls(s) => {
            let (rd, wr) = tokio::io::split(s);
            spawn_io(conn, rd, WriteSide::Stream(Box::new(wr)), events, peer_cert)
        }
    }
}

/// Where a connection's writer task writes.
enum WriteSide {
    /// Plain TCP: shared with the hub, which writes directly when it can.
    /// The socket's write side is shut down (FIN) when the last of the two
    /// is dropped (tokio's `OwnedWriteHalf` does it on drop).
    Tcp(Arc<OwnedWriteHalf>),
    /// TLS: only the writer task writes (the TLS state is not shareable).
    Stream(Box<dyn AsyncWrite + Send + Unpin>),
}

impl WriteSide {
    async fn write_all(&mut self, mut b: &[u8]) -> std::io::Result<()> {
        match self {
            WriteSide::Tcp(w) => {
                while !b.is_empty() {
                    w.writable().await?;
                    match w.try_write(b) {
                        Ok(n) => b = &b[n..],
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            WriteSide::Stream(w) => w.write_all(b).await,
        }
    }

    async fn shutdown(self) {
        match self {
            WriteSide::Tcp(w) => drop(w),
            WriteSide::Stream(mut w) => {
                let _ = w.shutdown().await;
            }
        }
    }
}

fn spawn_io<R>(
    conn: ConnId,
    mut rd: R,
    mut wr: WriteSide,
    events: mpsc::Sender<NetEvent>,
    peer_cert: Option<CertificateDer<'static>>,
) -> ConnHandle
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let direct = match &wr {
        WriteSide::Tcp(w) => Some(w.clone()),
        WriteSide::Stream(_) => None,
    };
    let queued = Arc::new(AtomicUsize::new(0));
    let in_queue = queued.clone();
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            buf.reserve(64 * 1024);
            let error = match rd.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => {
                    let bytes = buf.split().freeze();
                    in_queue.fetch_add(bytes.len(), Ordering::Relaxed);
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
                    counter.fetch_sub(b.len(), Ordering::Release);
                }
                WriterCmd::Close => {
                    wr.shutdown().await;
                    break;
                }
            }
        }
    });
    ConnHandle {
        tx,
        direct,
        inflight,
        queued,
        reader,
        peer_cert,
    }
}

/// Accepts connections forever, handing them to the hub; with `tls`, each
/// connection first completes a TLS handshake (in its own task), and one
/// that fails it (plain TCP, an unknown CA, no client certificate when one
/// is required) is logged (at most once a second) and closed.
pub fn spawn_listener(
    listener: usize,
    sock: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    events: mpsc::Sender<NetEvent>,
) -> JoinHandle<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_TLS_HANDSHAKES));
    let limiter = Arc::new(std::sync::Mutex::new(LogLimiter::default()));
    tokio::spawn(async move {
        loop {
            match sock.accept().await {
                Ok((stream, remote)) => {
                    let Some(acceptor) = acceptor.clone() else {
                        let stream = PeerStream::tcp(stream, remote);
                        let ev = NetEvent::Accepted {
                            listener,
                            stream,
                            remote,
                        };
                        if events.send(ev).await.is_err() {
                            return;
                        }
                        continue;
                    };
                    let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                        warn_limited(&limiter, || {
                            format!("connection from {remote} closed: {MAX_TLS_HANDSHAKES} TLS handshakes in progress")
                        });
                        continue;
                    };
                    tokio::spawn(accept_tls(
                        listener,
                        acceptor,
                        stream,
                        remote,
                        events.clone(),
                        limiter.clone(),
                        permit,
                    ));
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

/// The TLS handshake of one incoming connection, then hands it to the hub.
async fn accept_tls(
    listener: usize,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
    events: mpsc::Sender<NetEvent>,
    limiter: Arc<std::sync::Mutex<LogLimiter>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            return warn_limited(&limiter, || {
                format!("TLS handshake with {remote} on {local} failed: {e}: connection closed")
            })
        }
        Err(_) => {
            return warn_limited(&limiter, || {
                format!(
                    "TLS handshake with {remote} on {local} not completed in {} s: connection closed",
                    TLS_HANDSHAKE_TIMEOUT.as_secs()
                )
            })
        }
    };
    let session = tls.get_ref().1;
    let peer_cert = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    tracing::debug!(
        "TLS session with {remote} on {local} ({:?}, client certificate: {})",
        session.protocol_version(),
        if peer_cert.is_some() {
            "verified"
        } else {
            "none"
        }
    );
    let stream = PeerStream {
        transport: Transport::Tls(Box::new(tls)),
        remote,
        peer_cert,
    };
    let _ = events
        .send(NetEvent::Accepted {
            listener,
            stream,
            remote,
        })
        .await;
}

/// One outgoing connection attempt, from `source` when set, with HAProxy's
/// own connect timeout (1 s), then the TLS handshake when `tls` is set (a
/// failed handshake is a failed attempt, its error starting with "TLS").
pub fn spawn_connect(
    section: usize,
    peer: usize,
    addr: SocketAddr,
    source: Option<SocketAddr>,
    tls: Option<ConnectTls>,
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
        let failed = |error: String| NetEvent::ConnectFailed {
            section,
            peer,
            error,
        };
        let ev = match tokio::time::timeout(Duration::from_secs(1), attempt).await {
            Ok(Ok(stream)) => {
                let remote = stream.peer_addr().unwrap_or(addr);
                match tls {
                    None => NetEvent::Connected {
                        section,
                        peer,
                        stream: PeerStream::tcp(stream, remote),
                    },
                    Some(t) => {
                        let _ = stream.set_nodelay(true);
                        let connector = tokio_rustls::TlsConnector::from(t.config);
                        let hs = connector.connect(t.name, stream);
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, hs).await {
                            // rustls checked the chain and the name.
                            Ok(Ok(tls)) => NetEvent::Connected {
                                section,
                                peer,
                                stream: PeerStream {
                                    transport: Transport::Tls(Box::new(tls)),
                                    remote,
                                    peer_cert: None,
                                },
                            },
                            Ok(Err(e)) => failed(format!("TLS handshake failed: {e}")),
                            Err(_) => failed("TLS handshake timeout".into()),
                        }
                    }
                }
            }
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed("connect timeout".into()),
        };
        let _ = events.send(ev).await;
    });
}
