//! The hub's answers to what happens on a session: hellos (routing to a
//! section and a peer, collisions), establishment, table definitions,
//! updates, resync requests and ends, errors and closes.

use crate::config;
use crate::engine::TableVerdict;
use crate::net::ConnId;
use crate::server::{engine_role, Hub, Peer, MAX_DYNAMIC_PEERS};
use crate::state::more_since;
use peers::hello::Status;
use peers::session::{CloseReason, Event};
use tracing::{debug, info, warn};

impl Hub {
    pub(crate) fn on_session_event(&mut self, id: ConnId, ev: Event, now: u64) {
        let peer = self.conns[&id].peer;
        match ev {
            Event::HelloReceived(hello) => self.on_hello(id, hello, now),
            Event::Established { minor } => {
                let Some((s, p)) = peer else { return };
                self.on_established(id, s, p, minor, now);
            }
            Event::TableDefined { remote_id, def } => {
                let Some((s, p)) = peer else { return };
                let verdict = self.sections[s]
                    .engine
                    .table_defined(p, remote_id, &def, now);
                match verdict {
                    TableVerdict::Input { output } => {
                        debug!(
                            "table {} from {} aggregated into {output}",
                            def.name, self.sections[s].peers[p].name
                        );
                        self.declare_outputs_if_changed(s);
                    }
                    TableVerdict::Output => self.declare_outputs_if_changed(s),
                    TableVerdict::Forwarded => {
                        debug!(
                            "table {} from up peer {} relayed to the peers that declare it",
                            def.name, self.sections[s].peers[p].name
                        );
                        self.declare_outputs_if_changed(s);
                    }
                    TableVerdict::Ignored => debug!(
                        "table {} from {} is not aggregated",
                        def.name, self.sections[s].peers[p].name
                    ),
                    // Returned once per peer and table: logged once.
                    TableVerdict::Unexpected { reason } => {
                        let peer = &self.sections[s].peers[p];
                        let role = match peer.role {
                            config::Role::Up => "up peer",
                            config::Role::Down => "down peer",
                            _ => "peer",
                        };
                        warn!(
                            "table {} from {role} '{}' ignored: {reason}",
                            def.name, peer.name
                        );
                    }
                    TableVerdict::Refused { reason } => {
                        // HAProxy re-sends the DEFINE before every batch:
                        // log and count each distinct refusal once.
                        let sec = &mut self.sections[s];
                        let peer = &mut sec.peers[p];
                        let what = format!("{}: {reason}", def.name);
                        if peer.stats.last_refusal.as_deref() != Some(what.as_str()) {
                            // A peer defining table after table: at most
                            // one line a second per section.
                            let log = match reason.starts_with(crate::engine::TOO_MANY_TABLES) {
                                true => sec.tables_log.check(now),
                                false => Some(0),
                            };
                            if let Some(n) = log {
                                warn!(
                                    "table {} from peer '{}' refused: {reason}{}",
                                    def.name,
                                    peer.name,
                                    more_since(n)
                                );
                            }
                            peer.stats.refused_tables += 1;
                            peer.stats.last_refusal = Some(what);
                        }
                    }
                }
            }
            Event::TableRejected { name, reason, .. } => {
                let label = self.peer_label(&self.conns[&id]);
                warn!("table {name} from {label} cannot be decoded: {reason}");
                if let Some((s, p)) = peer {
                    let st = &mut self.sections[s].peers[p].stats;
                    st.refused_tables += 1;
                    st.last_refusal = Some(format!("{name}: {reason}"));
                }
            }
            Event::Update {
                remote_id, update, ..
            } => {
                if let Some((s, p)) = peer {
                    self.sections[s].engine.update(p, remote_id, &update, now);
                    self.sections[s].note_progress(p, now);
                    self.change_since
                        .get_or_insert_with(std::time::Instant::now);
                }
            }
            Event::ResyncRequest => {
                let Some((s, p)) = peer else { return };
                // Answer at once: everything we publish for it, then FINISHED
                // (sent by the pump when nothing is left). HAProxy pushes us
                // nothing until it has its answer.
                self.sections[s].peers[p].stats.sync_req += 1;
                self.sections[s].engine.resend_all(p);
                if let Some(c) = self.conns.get_mut(&id) {
                    c.teaching = true;
                }
                self.pump(id, now);
            }
            Event::ResyncFinished | Event::ResyncPartial => {
                let Some((s, p)) = peer else { return };
                let pe = &mut self.sections[s].peers[p];
                pe.stats.sync_fin += 1;
                pe.learned = true;
                // Another level answers PARTIAL while its own sources have
                // not all taught it yet (see `pump`): what it sent before
                // is then kept (refreshed or expiring) rather than dropped,
                // so that its restart does not dip the totals. A load
                // balancer's table is its own truth either way.
                let level = matches!(pe.role, config::Role::Up | config::Role::Down);
                if !(level && ev == Event::ResyncPartial) {
                    self.sections[s].engine.resync_finished(p, now);
                }
            }
            Event::ResyncConfirm => {
                if let Some((s, p)) = peer {
                    let pe = &mut self.sections[s].peers[p];
                    pe.stats.sync_cfm += 1;
                    pe.taught = true;
                }
            }
            Event::Ack { .. } | Event::Heartbeat => {}
            Event::PeerError(e) => {
                let label = self.peer_label(&self.conns[&id]);
                warn!("{label} reported a {e:?} error; it will close the session");
            }
            Event::Closed(reason) => self.on_closed(id, reason, now),
        }
    }

    /// Routes an incoming hello to a section (by the name it calls us,
    /// line 2) and a peer (by its own name, line 3).
    fn on_hello(&mut self, id: ConnId, hello: peers::Hello, now: u64) {
        let c = &self.conns[&id];
        let remote = c.remote;
        // TLS: a verified client certificate must name the peer it says it is.
        if let Some(cert) = c.handle.peer_cert() {
            if let Err(e) = crate::tls::cert_valid_for(cert, &hello.caller) {
                warn!(
                    "peer '{}' from {remote} refused: {e} (TLS, 504)",
                    hello.caller
                );
                self.refuse(id, Status::UnknownPeer, now);
                return;
            }
        }
        let listen = c.incoming.map(|l| self.listeners[l]);
        let global = &self.config.global;
        let section = self.sections.iter().position(|s| {
            !s.removed && s.cfg.local_name() == hello.callee && s.cfg.listen_addr(global) == listen
        });
        let Some(si) = section else {
            warn!(
                "peer '{}' from {remote} called us '{}', which is not our name here: refused (503)",
                hello.caller, hello.callee
            );
            self.refuse(id, Status::BadCallee, now);
            return;
        };
        let s = &mut self.sections[si];
        // A peer removed by a reload is unknown again, unless it was dynamic.
        let known = s
            .peers
            .iter()
            .position(|p| p.name == hello.caller && (!p.removed || p.dynamic));
        // `strict-peers`: a configured peer only from its own address.
        let expected = known
            .filter(|&pi| !s.peers[pi].dynamic)
            .and_then(|pi| s.cfg.peer(&s.peers[pi].name))
            .and_then(|conf| s.cfg.accepts_from(conf, remote.ip()).err());
        if let Some(expected) = expected {
            self.limits.address_refused += 1;
            if let Some(n) = self.limits.address_log.check(now) {
                warn!(
                    "peer '{}' of '{}' refused (504): it connected from {}, expected {expected} \
                     (strict-peers){}",
                    hello.caller,
                    s.cfg.name,
                    remote.ip(),
                    more_since(n)
                );
            }
            self.refuse_counted(id, Status::UnknownPeer, now);
            return;
        }
        if let Some(pi) = known {
            s.peers[pi].removed = false;
        }
        let dynamic = hello.caller != s.cfg.local_name() && s.cfg.accepts_dynamic(remote.ip());
        let pi = match known {
            Some(pi) => pi,
            None if dynamic
                && s.peers.iter().filter(|p| p.dynamic).count() >= MAX_DYNAMIC_PEERS =>
            {
                self.limits.dynamic_refused += 1;
                if let Some(n) = self.limits.dynamic_log.check(now) {
                    warn!(
                        "dynamic peer '{}' from {remote} refused by section '{}' (504): \
                         it already has {MAX_DYNAMIC_PEERS} dynamic peers{}",
                        hello.caller,
                        s.cfg.name,
                        more_since(n)
                    );
                }
                self.refuse_counted(id, Status::UnknownPeer, now);
                return;
            }
            None if dynamic => {
                info!(
                    "dynamic peer '{}' joined section '{}' from {remote}",
                    hello.caller, s.cfg.name
                );
                s.peers.push(Peer::new(
                    hello.caller.clone(),
                    config::Role::Node,
                    None,
                    None,
                    true,
                ));
                s.peers.len() - 1
            }
            None => {
                warn!(
                    "unknown peer '{}' from {remote} refused by section '{}' (504)",
                    hello.caller, s.cfg.name
                );
                self.refuse(id, Status::UnknownPeer, now);
                return;
            }
        };
        // Collision: the newest session wins, as in HAProxy.
        if let Some(old) = self.sections[si].peers[pi].conn.take() {
            if old != id {
                self.sections[si].peers[pi].stats.collisions += 1;
                info!(
                    "peer '{}' reconnected: replacing its previous session",
                    hello.caller
                );
                self.drop_conn(old, now);
            }
        }
        let p = &mut self.sections[si].peers[pi];
        p.conn = Some(id);
        p.stats.accepts += 1;
        p.stats.last_accept = Some(now);
        let c = self.conns.get_mut(&id).expect("conn exists");
        c.peer = Some((si, pi));
        c.session.accept(now);
    }

    fn refuse(&mut self, id: ConnId, status: Status, _now: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.session.refuse(status);
        }
    }

    /// [`refuse`](Self::refuse), for a refusal already counted under its
    /// own reason (not again as `hello_refused`).
    fn refuse_counted(&mut self, id: ConnId, status: Status, now: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.refusal_counted = true;
        }
        self.refuse(id, status, now);
    }

    fn on_established(&mut self, id: ConnId, s: usize, p: usize, minor: u32, now: u64) {
        let sec = &mut self.sections[s];
        let peer = &mut sec.peers[p];
        peer.failures = 0;
        peer.learned = false;
        peer.taught = false;
        peer.stats.established += 1;
        peer.stats.last_established = Some(now);
        peer.stats.last_status = Some(200);
        info!(
            "session with peer '{}' of '{}' established (protocol 2.{minor})",
            peer.name, sec.cfg.name
        );
        sec.engine
            .peer_connected(p, &peer.name, engine_role(peer.role), now);
        sec.engine.set_group(p, peer.group);
        self.declare_outputs(s);
        // Learn the peer's tables and definitions (HAProxy only announces a
        // table it has not touched during such a teach).
        if let Some(c) = self.conns.get_mut(&id) {
            c.session.send_resync_request(now);
        }
    }

    /// [`declare_outputs`](Self::declare_outputs) when the engine says some
    /// peer's outputs may have changed since the last time: a DEFINE arrives
    /// before every batch of a node's updates, and most change nothing.
    fn declare_outputs_if_changed(&mut self, s: usize) {
        if self.sections[s].declared_gen != self.sections[s].engine.outputs_generation() {
            self.declare_outputs(s);
        }
    }

    /// (Re)declares, on every established session of a section, the output
    /// tables its peer should receive. Cheap and idempotent.
    fn declare_outputs(&mut self, s: usize) {
        let gen = self.sections[s].engine.outputs_generation();
        self.sections[s].declared_gen = gen;
        let sec = &self.sections[s];
        for (pi, p) in sec.peers.iter().enumerate() {
            let Some(cid) = p.conn else { continue };
            let Some(c) = self.conns.get_mut(&cid) else {
                continue;
            };
            for def in sec.engine.outputs_for(pi) {
                c.session.declare_table(def);
            }
        }
    }

    fn on_closed(&mut self, id: ConnId, reason: CloseReason, now: u64) {
        let label = self.peer_label(&self.conns[&id]);
        let remote = self.conns[&id].remote;
        match &reason {
            CloseReason::Protocol(e) => {
                warn!("protocol error from {label} ({remote}): {e}; session closed");
                if let Some((s, p)) = self.conns[&id].peer {
                    self.sections[s].peers[p].stats.protocol_errors += 1;
                }
            }
            CloseReason::Refused(code) => {
                warn!(
                    "{label} ({remote}) refused our hello with status {code} ({})",
                    Status::label(*code)
                );
                if let Some((s, p)) = self.conns[&id].peer {
                    let st = &mut self.sections[s].peers[p].stats;
                    st.last_status = Some(*code);
                    st.hello_refusals += 1;
                }
            }
            CloseReason::SentStatus(code) => {
                if !self.conns[&id].refusal_counted {
                    self.limits.hello_refused += 1;
                }
                info!(
                    "hello from {remote} refused with status {code} ({})",
                    Status::label(*code)
                )
            }
            CloseReason::Silence => {
                warn!("{label} ({remote}) silent for 5 s: session closed");
                if let Some((s, p)) = self.conns[&id].peer {
                    self.sections[s].peers[p].stats.silence_closes += 1;
                }
            }
            CloseReason::HelloTimeout => {
                self.limits.hello_timeouts += 1;
                info!("{remote}: handshake not completed in time: closed")
            }
            CloseReason::LineTooLong => {
                self.limits.hello_too_long += 1;
                warn!("{remote}: hello line too long: closed")
            }
            CloseReason::Local => {}
        }
        self.flush(id);
        self.remove_conn(id, now);
    }
}
