//! Answers to stats-socket commands, computed by the hub from its state.

use crate::server::{Hub, Peer};

const HELP: &str = "\
The following commands are valid at this level:
  help                 : this message
  prompt               : toggle interactive mode with prompt
  quit                 : disconnect
  show aggrs           : show each aggregations section and the state of its peers
";

impl Hub {
    /// Answers one command (without its `;` separators).
    pub fn command(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["help"] => HELP.to_string(),
            ["show", "aggrs"] => self.show_aggrs(),
            _ => format!("Unknown command: '{line}'\n{HELP}"),
        }
    }

    /// `show aggrs`, in the vendor's format:
    ///
    /// ```text
    /// aggregations data
    /// peer 'enterprise1'(0) sync_ok: 1 accept: 1(last: 6080) connect: 1(last: 16086) state: 0x7 sync_state: 0x3
    /// sync_req_cnt: 0 sync_fin_cnt: 0 sync_cfm_cnt: 0
    /// ```
    ///
    /// `accept`/`connect`: sessions accepted from it / connection attempts to
    /// it, with the age of the last one in ms (`-` if none). `state`: 0x7
    /// while a session is established, 0x0 after one ended, 0xffffffff if
    /// none ever succeeded. `sync_state`: 0x1 it taught us (we got its
    /// FINISHED), 0x2 we taught it (it CONFIRMed ours); `sync_ok` is 1 once
    /// it taught us on the live session, i.e. our totals include its current
    /// state. (A running HAProxy asks for a resync only once in its life, so
    /// 0x2 is only set when it connected after its own start.) Counters: resync requests, FINISHED/PARTIAL and
    /// CONFIRM messages received from it.
    fn show_aggrs(&self) -> String {
        let now = self.now();
        let mut out = String::new();
        for s in &self.sections {
            out.push_str(&format!("aggregations {}\n", s.cfg.name));
            for (i, p) in s.peers.iter().enumerate() {
                out.push_str(&self.aggr_peer_line(i, p, now));
            }
        }
        out
    }

    fn aggr_peer_line(&self, idx: usize, p: &Peer, now: u64) -> String {
        let age = |t: Option<u64>| t.map_or("-".to_string(), |t| (now - t).to_string());
        let live = p
            .conn
            .and_then(|c| self.conns.get(&c))
            .is_some_and(|c| c.session.is_established());
        let state: u32 = if live {
            0x7
        } else if p.stats.established > 0 {
            0
        } else {
            0xffff_ffff
        };
        let sync_state = (p.learned as u32) | ((p.taught as u32) << 1);
        format!(
            "peer '{}'({idx}) sync_ok: {} accept: {}(last: {}) connect: {}(last: {}) state: 0x{state:x} sync_state: 0x{sync_state:x}\nsync_req_cnt: {} sync_fin_cnt: {} sync_cfm_cnt: {}\n",
            p.name,
            p.learned as u8,
            p.stats.accepts,
            age(p.stats.last_accept),
            p.stats.connects,
            age(p.stats.last_connect),
            p.stats.sync_req,
            p.stats.sync_fin,
            p.stats.sync_cfm,
        )
    }
}
