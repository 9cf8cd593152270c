//! Reloading the configuration without losing state (SIGHUP, or `reload` on
//! the stats socket).
//!
//! The new file is parsed and its listeners bound before anything changes;
//! any error leaves the running configuration untouched. Then, section by
//! section: a section whose mapping, local name and listen address are
//! unchanged keeps its engine (every aggregated value) and the sessions of
//! its unchanged peers; peers are added, removed (their session closed,
//! their contributions left to expire like a node that went away) or
//! updated in place. A section whose mapping, name or address changed is
//! replaced by a fresh one, and removed sections close their sessions.
//! Removed peers and sections stay as tombstones, because their indices are
//! engine peer ids and session routes.

use crate::config::{Config, Section};
use crate::net;
use crate::server::{engine_config, engine_limits, maxconn, Hub, Peer, SectionState};
use std::net::SocketAddr;
use tracing::{error, info, warn};

impl Hub {
    /// Re-reads the configuration file; returns a one-line report.
    pub fn reload(&mut self) -> String {
        let path = self.config.path.clone();
        let new = match Config::from_file(&path) {
            Ok(c) => c,
            Err(e) => {
                error!(
                    "reload of {} failed, the running configuration is kept:\n{e}",
                    path.display()
                );
                return format!("Reload failed, the running configuration is kept:\n{e}\n");
            }
        };
        let now = self.now();
        let mut changes = Vec::new();

        // Listeners first: a bind error aborts the reload before any change.
        let mut wanted: Vec<SocketAddr> = Vec::new();
        for s in &new.sections {
            if let Some(a) = s.listen_addr(&new.global) {
                if !wanted.contains(&a) {
                    wanted.push(a);
                }
            }
        }
        let mut bound = Vec::new();
        // PEM files are read again (certificates renewed on disk).
        self.tls_clients.clear();
        for a in &wanted {
            let live = self
                .listeners
                .iter()
                .zip(&self.listener_tasks)
                .any(|(l, t)| l == a && t.is_some());
            if live {
                continue;
            }
            let tls = match crate::tls::listener_config(&new, *a) {
                Ok(t) => t,
                Err(e) => {
                    error!("reload failed: {e}; the running configuration is kept");
                    return format!("Reload failed: {e}\n");
                }
            };
            match bind(*a) {
                Ok(l) => bound.push((*a, l, tls)),
                Err(e) => {
                    error!("reload failed: cannot listen on {a}: {e}; the running configuration is kept");
                    return format!("Reload failed: cannot listen on {a}: {e}\n");
                }
            }
        }
        for (a, l, tls) in bound {
            let idx = self.listeners.len();
            self.listeners.push(a);
            self.listener_tasks.push(Some(net::spawn_listener(
                idx,
                l,
                tls,
                self.events_tx.clone(),
            )));
            info!("listening for peers on {a}");
            changes.push(format!("listening on {a}"));
        }
        for (i, a) in self.listeners.clone().iter().enumerate() {
            if !wanted.contains(a) {
                if let Some(t) = self.listener_tasks[i].take() {
                    t.abort();
                    info!("no longer listening on {a}");
                    changes.push(format!("stopped listening on {a}"));
                }
            }
        }

        // Sections gone from the file.
        for i in 0..self.sections.len() {
            let s = &self.sections[i];
            if !s.removed && !new.sections.iter().any(|n| n.name == s.cfg.name) {
                changes.push(format!("section '{}' removed", s.cfg.name));
                self.remove_section(i, now);
            }
        }
        // Sections added, changed or kept.
        for ns in &new.sections {
            let old = self
                .sections
                .iter()
                .position(|s| !s.removed && s.cfg.name == ns.name);
            match old {
                Some(i) if self.same_core(&self.sections[i].cfg, ns, &new) => {
                    self.update_peers(i, ns, now, &mut changes);
                }
                Some(i) => {
                    changes.push(format!(
                        "section '{}' replaced (mapping, name or address changed)",
                        ns.name
                    ));
                    self.remove_section(i, now);
                    self.sections.push(SectionState::new(ns, &new.global, now));
                }
                None => {
                    changes.push(format!("section '{}' added", ns.name));
                    self.sections.push(SectionState::new(ns, &new.global, now));
                }
            }
        }
        if new.global.stats_socket != self.config.global.stats_socket {
            warn!("the stats socket changed in the configuration: it takes effect at the next restart");
        }
        if new.global.source != self.config.global.source {
            changes.push("source address changed (new connections)".into());
        }
        // Limits apply to the running engines (kept sections keep their
        // state; nothing already held is dropped).
        let limits = engine_limits(&new.global);
        if limits != engine_limits(&self.config.global) {
            changes.push(format!(
                "max-entries {}, max-tables {}",
                limits.max_entries, limits.max_tables
            ));
        }
        for s in self.sections.iter_mut().filter(|s| !s.removed) {
            s.engine.set_limits(limits);
        }
        if maxconn(&new.global) > maxconn(&self.config.global) {
            crate::fdlimit::fit_and_log(maxconn(&new.global));
        }
        self.config = new;
        self.reloads += 1;
        self.connect_out(now);
        let summary = if changes.is_empty() {
            "no change".to_string()
        } else {
            changes.join("; ")
        };
        info!("configuration reloaded: {summary}");
        format!("Configuration reloaded: {summary}\n")
    }

    /// Same engine mapping, same local name, same listen address: the
    /// section (and its aggregated values) can be kept.
    fn same_core(&self, old: &Section, new: &Section, newcfg: &Config) -> bool {
        engine_config(old) == engine_config(new)
            && old.local_name() == new.local_name()
            && old.listen_addr(&self.config.global) == new.listen_addr(&newcfg.global)
    }

    fn update_peers(&mut self, si: usize, ns: &Section, now: u64, changes: &mut Vec<String>) {
        let sec_name = ns.name.clone();
        // Peers no longer listed (dynamic ones stay while the section allows them).
        for pi in 0..self.sections[si].peers.len() {
            let p = &self.sections[si].peers[pi];
            let keep = if p.dynamic {
                ns.dynamic_peers
            } else {
                ns.peer(&p.name).is_some()
            };
            if !p.removed && !keep {
                changes.push(format!("peer '{}' removed from '{sec_name}'", p.name));
                self.remove_peer(si, pi, now);
            }
        }
        for conf in ns.remote_peers() {
            let existing = self.sections[si]
                .peers
                .iter()
                .position(|p| p.name == conf.name);
            match existing {
                Some(pi) => {
                    let p = &mut self.sections[si].peers[pi];
                    let moved = p.addr != conf.addr;
                    // The engine learns a peer's role and group when its
                    // session starts: a change needs a new session.
                    let reshaped = p.role != conf.role || p.group != conf.group;
                    if p.removed {
                        changes.push(format!("peer '{}' added back to '{sec_name}'", conf.name));
                    } else if moved || reshaped {
                        changes.push(format!("peer '{}' of '{sec_name}' updated", conf.name));
                    }
                    p.removed = false;
                    p.dynamic = false;
                    p.addr = conf.addr;
                    p.role = conf.role;
                    p.group = conf.group;
                    if moved || reshaped {
                        // Reconnect (to the new address, or with the new role).
                        if let Some(c) = p.conn {
                            self.close_conn(c, now);
                        }
                    }
                }
                None => {
                    changes.push(format!("peer '{}' added to '{sec_name}'", conf.name));
                    self.sections[si].peers.push(Peer::new(
                        conf.name.clone(),
                        conf.role,
                        conf.addr,
                        conf.group,
                        false,
                    ));
                }
            }
        }
        self.sections[si].cfg = ns.clone();
    }

    fn remove_peer(&mut self, si: usize, pi: usize, now: u64) {
        let p = &mut self.sections[si].peers[pi];
        p.removed = true;
        if let Some(c) = p.conn {
            self.close_conn(c, now);
        }
    }

    fn remove_section(&mut self, si: usize, now: u64) {
        for pi in 0..self.sections[si].peers.len() {
            self.remove_peer(si, pi, now);
        }
        let s = &mut self.sections[si];
        s.removed = true;
        s.end_hold();
        // Free the aggregated state now; the tombstone keeps only the index.
        s.engine = crate::engine::Engine::new(engine_config(&s.cfg));
    }

    /// Closes a session on our side and forgets it.
    pub(crate) fn close_conn(&mut self, id: crate::net::ConnId, now: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.session.close_local();
            // Drain the Closed event so it is not reported as a failure.
            while c.session.poll_event().is_some() {}
        }
        self.remove_conn(id, now);
    }
}

/// Binds a listener synchronously (the hub is not async here) and hands it
/// to tokio.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}
