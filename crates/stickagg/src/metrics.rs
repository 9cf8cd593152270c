//! Prometheus metrics (`metrics <addr>:<port>` in `global`): `GET /metrics`
//! in the Prometheus text format and `GET /health`.
//!
//! The exposition is built by the hub at scrape time from the counters it
//! keeps anyway (peer stats, engine tables), so the hot paths pay nothing
//! for metrics. Only the push-delay histogram is observed continuously.
//! Labels are sections, peers and tables — never keys — so their number is
//! bounded by the configuration and what the peers announce.
//!
//! The HTTP side is deliberately tiny (two fixed GET endpoints, one request
//! per connection): a full HTTP stack would dwarf what it serves.

use crate::server::Hub;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// A scrape: the hub answers with the exposition text.
pub struct MetricsRequest {
    pub reply: oneshot::Sender<String>,
}

type Labels = Vec<(String, String)>;

/// Delay between receiving a change and handing the new aggregate to the
/// peers' sockets, in seconds: 100 µs to ~3 s.
pub fn push_delay_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

pub async fn spawn(addr: SocketAddr, hub: mpsc::Sender<MetricsRequest>) -> std::io::Result<()> {
    let sock = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = sock.accept().await {
            let hub = hub.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                // Read the request head (bounded); the body is never needed.
                while n < buf.len() {
                    match stream.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(m) => n += m,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
                        || buf[..n].windows(2).any(|w| w == b"\n\n")
                    {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let (status, ctype, body) = match (method, path) {
                    ("GET", "/metrics") => {
                        let (tx, rx) = oneshot::channel();
                        match hub.send(MetricsRequest { reply: tx }).await {
                            Ok(()) => (
                                "200 OK",
                                "text/plain; version=0.0.4",
                                rx.await.unwrap_or_default(),
                            ),
                            Err(_) => {
                                ("503 Service Unavailable", "text/plain", "stopping\n".into())
                            }
                        }
                    }
                    // Healthy when the hub answers (it owns every session).
                    ("GET", "/health") => {
                        let (tx, rx) = oneshot::channel();
                        let ok = hub.send(MetricsRequest { reply: tx }).await.is_ok()
                            && rx.await.is_ok();
                        if ok {
                            ("200 OK", "text/plain", "OK\n".into())
                        } else {
                            (
                                "503 Service Unavailable",
                                "text/plain",
                                "unhealthy\n".into(),
                            )
                        }
                    }
                    ("GET", _) => (
                        "404 Not Found",
                        "text/plain",
                        "try /metrics or /health\n".into(),
                    ),
                    _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(())
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Hub {
    /// The Prometheus exposition of the current state.
    pub fn metrics_text(&self) -> String {
        let mut reg = Registry::default();
        let gauge = |reg: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Gauge>::default();
            reg.register(name, help, f.clone());
            f
        };
        let counter = |reg: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Counter>::default();
            reg.register(name, help, f.clone());
            f
        };
        let peers = gauge(&mut reg, "stickagg_peers", "Peers by session state");
        let connects = counter(
            &mut reg,
            "stickagg_peer_connects",
            "Outgoing connection attempts",
        );
        let accepts = counter(
            &mut reg,
            "stickagg_peer_accepts",
            "Incoming sessions accepted",
        );
        let collisions = counter(
            &mut reg,
            "stickagg_peer_collisions",
            "Sessions replaced by a newer one from the same peer",
        );
        let upd_in = counter(&mut reg, "stickagg_updates_received", "Updates received");
        let upd_out = counter(&mut reg, "stickagg_updates_sent", "Updates sent");
        let bytes_in = counter(
            &mut reg,
            "stickagg_bytes_received",
            "Bytes received from peers",
        );
        let bytes_out = counter(&mut reg, "stickagg_bytes_sent", "Bytes sent to peers");
        let errors = counter(&mut reg, "stickagg_protocol_errors", "Errors by kind");
        let entries = gauge(
            &mut reg,
            "stickagg_table_entries",
            "Aggregated entries per output table",
        );
        let sources = gauge(
            &mut reg,
            "stickagg_table_sources",
            "Peers contributing to a table",
        );
        let t_in = counter(
            &mut reg,
            "stickagg_table_updates_received",
            "Updates stored, per table",
        );
        let t_out = counter(
            &mut reg,
            "stickagg_table_updates_sent",
            "Aggregates sent to peers, per table",
        );
        let dropped = counter(
            &mut reg,
            "stickagg_entries_dropped",
            "New keys dropped because their table held max-entries keys",
        );
        let refused = counter(
            &mut reg,
            "stickagg_connections_refused",
            "Connections closed by a limit or a refused hello, by reason",
        );
        for (reason, n) in self.limits.by_reason() {
            refused
                .get_or_create(&labels(&[("reason", reason)]))
                .inc_by(n);
        }
        let republished = counter(
            &mut reg,
            "stickagg_rate_republishes",
            "Totals sent again, unchanged, because a rate read on the nodes would part from the sum",
        );
        let expired = counter(
            &mut reg,
            "stickagg_contributions_expired",
            "Contributions of a peer to a key that lapsed with their lifetime",
        );
        let ups = gauge(
            &mut reg,
            "stickagg_updates_per_second",
            "Updates received per second, per section",
        );
        reg.register(
            "stickagg_push_delay_seconds",
            "Delay from receiving a change to pushing the new aggregate",
            self.push_delay.clone(),
        );
        let info = gauge(&mut reg, "stickagg_info", "Version of the running process");
        info.get_or_create(&labels(&[("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        let reloads = counter(&mut reg, "stickagg_reloads", "Configuration reloads");
        reloads.get_or_create(&Vec::new()).inc_by(self.reloads);

        for s in self.sections.iter().filter(|s| !s.removed) {
            let sec = s.cfg.name.as_str();
            let (mut up, mut connecting, mut down) = (0, 0, 0);
            for p in s.peers.iter().filter(|p| !p.removed) {
                let live = p.conn.and_then(|c| self.conns.get(&c));
                match live {
                    Some(c) if c.session.is_established() => up += 1,
                    Some(_) => connecting += 1,
                    None if p.connecting => connecting += 1,
                    None => down += 1,
                }
                let l = labels(&[("section", sec), ("peer", &p.name)]);
                let st = &p.stats;
                connects.get_or_create(&l).inc_by(st.connects);
                accepts.get_or_create(&l).inc_by(st.accepts);
                collisions.get_or_create(&l).inc_by(st.collisions);
                upd_in.get_or_create(&l).inc_by(st.updates_in);
                upd_out.get_or_create(&l).inc_by(st.updates_out);
                bytes_in.get_or_create(&l).inc_by(st.bytes_in);
                bytes_out.get_or_create(&l).inc_by(st.bytes_out);
                for (kind, n) in [
                    ("decode", st.protocol_errors),
                    ("refused_table", st.refused_tables),
                    ("silence", st.silence_closes),
                    ("hello_refused", st.hello_refusals),
                ] {
                    errors
                        .get_or_create(&labels(&[
                            ("section", sec),
                            ("peer", &p.name),
                            ("kind", kind),
                        ]))
                        .inc_by(n);
                }
            }
            for (state, n) in [
                ("established", up),
                ("connecting", connecting),
                ("down", down),
            ] {
                peers
                    .get_or_create(&labels(&[("section", sec), ("state", state)]))
                    .set(n);
            }
            ups.get_or_create(&labels(&[("section", sec)]))
                .set(s.updates_per_sec as i64);
            let c = s.engine.counters();
            republished
                .get_or_create(&labels(&[("section", sec)]))
                .inc_by(c.republished);
            expired
                .get_or_create(&labels(&[("section", sec)]))
                .inc_by(c.expired);
            for t in s.engine.tables() {
                let l = labels(&[("section", sec), ("table", &t.output)]);
                entries.get_or_create(&l).set(t.entries as i64);
                sources.get_or_create(&l).set(t.sources.len() as i64);
                t_in.get_or_create(&l).inc_by(t.updates_in);
                t_out.get_or_create(&l).inc_by(t.updates_out);
                dropped.get_or_create(&l).inc_by(t.dropped);
            }
        }
        let mut out = String::new();
        let _ = encode(&mut out, &reg);
        out
    }
}
