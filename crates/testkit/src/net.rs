use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Connect timeout of the test HTTP client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read/write timeout of the test HTTP client and server: bounded so a stuck
/// peer fails the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head [`HttpBackend`] accepts.
const MAX_HEAD: usize = 64 * 1024;

/// A private /24 of loopback addresses for one test: 127.0.`id`.0/24.
///
/// On Linux the whole 127.0.0.0/8 is routed to `lo`, so every 127.x.y.z can be
/// bound and used as a source address without any setup. Giving each test its
/// own /24 means tests running in parallel (threads of one test binary, test
/// binaries of different crates, or several developers' runs on one machine)
/// never collide on an address or a port, so fixed ports can be used and no
/// "free port" probing (which races) is needed.
///
/// Reserved `id` ranges (keep them disjoint, one id per test):
///
/// | ids      | owner                                         |
/// |----------|-----------------------------------------------|
/// | 0        | never: 127.0.0.x is the machine's default loopback |
/// | 1–19     | crate `peers`                                 |
/// | 20–199   | crate `stickagg`                              |
/// | 200–250  | benchmarks and the simulator                  |
/// | 251–254  | crate `testkit`'s own tests                   |
/// | 255      | unused                                        |
///
/// Hosts: by convention .1–.49 are HAProxy/stickagg listeners, .50–.199
/// test clients (each client IP is its own stick-table key) and .200–.254
/// backend servers, but nothing enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Net {
    id: u8,
}

impl Net {
    /// The net 127.0.`id`.0/24. Panics for `id` 0 (the shared default loopback).
    pub const fn new(id: u8) -> Net {
        assert!(
            id != 0,
            "Net id 0 is the machine's default loopback; use a reserved id"
        );
        Net { id }
    }

    /// The `id` this net was made with.
    pub const fn id(&self) -> u8 {
        self.id
    }

    /// 127.0.`id`.`host`.
    pub const fn ipv4(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.id, host)
    }

    /// 127.0.`id`.`host`.
    pub const fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(self.ipv4(host))
    }

    /// 127.0.`id`.`host`:`port`.
    pub const fn addr(&self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(host), port)
    }
}

/// `GET path` on `target` from the source address `source_ip`; returns the
/// status code. See [`http_get_body`].
pub fn http_get(target: SocketAddr, source_ip: IpAddr, path: &str) -> io::Result<u16> {
    http_get_body(target, source_ip, path).map(|(status, _)| status)
}

/// `GET path` on `target` from the source address `source_ip`; returns the
/// status code and the body.
///
/// A hand-written HTTP/1.1 client because the source address is the point:
/// HAProxy keys its stick tables on `src`, so a test makes N distinct clients
/// by connecting from N loopback addresses (see [`Net`]). One request per
/// connection (`Connection: close`), so the server closes first and no
/// TIME_WAIT state piles up on the client addresses. Handles
/// `Content-Length`, chunked and read-to-EOF bodies.
pub fn http_get_body(
    target: SocketAddr,
    source_ip: IpAddr,
    path: &str,
) -> io::Result<(u16, String)> {
    let mut stream = connect_from(target, source_ip)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: stickagg-testkit\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_response(&response)
}

/// A TCP connection to `target` whose local address is `source_ip`.
fn connect_from(target: SocketAddr, source_ip: IpAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // Lets bind() hand out ports still in TIME_WAIT from earlier tests.
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(SocketAddr::new(source_ip, 0)))?;
    socket.connect_timeout(&SockAddr::from(target), CONNECT_TIMEOUT)?;
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Index just past the `\r\n\r\n` ending an HTTP head, if complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The value of header `name` (case-insensitive) in an HTTP head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn parse_response(response: &[u8]) -> io::Result<(u16, String)> {
    let end = head_end(response).ok_or_else(|| {
        invalid(format!(
            "incomplete HTTP response: {:?}",
            String::from_utf8_lossy(response)
        ))
    })?;
    let head =
        std::str::from_utf8(&response[..end]).map_err(|_| invalid("HTTP head is not UTF-8"))?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .filter(|_| status_line.starts_with("HTTP/"))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad HTTP status line: {status_line:?}")))?;
    let mut body = &response[end..];
    let decoded;
    if header(head, "transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        decoded = decode_chunked(body)?;
        body = &decoded;
    } else if let Some(len) = header(head, "content-length").and_then(|l| l.parse::<usize>().ok()) {
        body = &body[..len.min(body.len())];
    }
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}

fn decode_chunked(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("truncated chunk size"))?;
        let size_text =
            std::str::from_utf8(&data[..line_end]).map_err(|_| invalid("bad chunk size"))?;
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_hex:?}")))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(invalid("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A tiny HTTP server standing in for a real backend server: answers every
/// request with `200 OK` and its own name as the body (and an `X-Backend`
/// header), one request per connection. Lets session-persistence tests see
/// which server HAProxy picked. Stops when dropped.
pub struct HttpBackend {
    addr: SocketAddr,
    name: String,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl HttpBackend {
    /// Binds `addr` and serves in a background thread (one thread per
    /// connection, so an idle connection, like a health check, never blocks
    /// the others).
    pub fn start(addr: SocketAddr, name: &str) -> io::Result<HttpBackend> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, hits, name) = (stop.clone(), hits.clone(), name.to_owned());
            std::thread::Builder::new()
                .name(format!("http-backend-{name}"))
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let (hits, name) = (hits.clone(), name.clone());
                        std::thread::spawn(move || {
                            let _ = serve_one(conn, &name, &hits);
                        });
                    }
                })?
        };
        Ok(HttpBackend {
            addr,
            name: name.to_owned(),
            stop,
            hits,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many requests it has received so far (each is answered; counted
    /// before the answer is written).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Reads one request head (and a `Content-Length` body) and answers it.
/// The hit is counted before the response is written, so a client that has
/// its response always sees it in [`HttpBackend::hits`].
fn serve_one(mut conn: TcpStream, name: &str, hits: &AtomicU64) -> io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("request head too large"));
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    if let Some(len) = header(&head, "content-length").and_then(|l| l.parse::<usize>().ok()) {
        let mut remaining = len.saturating_sub(buf.len() - end);
        while remaining > 0 {
            let n = conn.read(&mut chunk[..remaining.min(4096)])?;
            if n == 0 {
                break;
            }
            remaining -= n;
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    );
    hits.fetch_add(1, Ordering::SeqCst);
    conn.write_all(response.as_bytes())?;
    let _ = conn.shutdown(Shutdown::Write);
    Ok(())
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees the flag. If the
        // connect fails the listener is already gone and the thread ending.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Net 251 belongs to testkit's own tests (see the table on `Net`).
    const NET: Net = Net::new(251);

    #[test]
    fn net_addresses() {
        let net = Net::new(42);
        assert_eq!(net.ip(7).to_string(), "127.0.42.7");
        assert_eq!(net.addr(7, 8080).to_string(), "127.0.42.7:8080");
        assert_eq!(net.id(), 42);
    }

    #[test]
    #[should_panic(expected = "default loopback")]
    fn net_zero_is_refused() {
        let _ = Net::new(0);
    }

    #[test]
    fn backend_answers_with_its_name_and_counts_hits() {
        let backend = HttpBackend::start(NET.addr(200, 18080), "s1").unwrap();
        assert_eq!(backend.addr(), NET.addr(200, 18080));
        for client in [60, 61] {
            let (status, body) = http_get_body(backend.addr(), NET.ip(client), "/x").unwrap();
            assert_eq!((status, body.as_str()), (200, "s1"));
        }
        assert_eq!(http_get(backend.addr(), NET.ip(62), "/").unwrap(), 200);
        assert_eq!(backend.hits(), 3);
        drop(backend);
        // Stopped: the address is free again and nothing answers.
        assert!(http_get(NET.addr(200, 18080), NET.ip(60), "/").is_err());
    }

    #[test]
    fn client_uses_the_chosen_source_address() {
        let listener = TcpListener::bind(NET.addr(201, 18081)).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, peer) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
                .unwrap();
            peer.ip()
        });
        let (status, body) = http_get_body(NET.addr(201, 18081), NET.ip(99), "/").unwrap();
        assert_eq!((status, body.as_str()), (404, "abcde"));
        assert_eq!(server.join().unwrap(), NET.ip(99));
    }

    #[test]
    fn parses_responses() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").unwrap();
        assert_eq!((s, b.as_str()), (200, "hi"));
        let (s, b) = parse_response(b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy").unwrap();
        assert_eq!((s, b.as_str()), (503, "busy"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }
}
