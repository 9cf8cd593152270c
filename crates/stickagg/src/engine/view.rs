//! Read-only views for the stats socket (`show table <name> [key k]
//! [detail]`, table lists, refusals and warnings). Everything is computed on
//! demand from the engine's state, so the hot paths keep no extra data.

use super::table::Table;
use super::{Engine, PeerId};
use bytes::Bytes;
use peers::{TableDef, Value, Values};
use std::sync::Arc;

/// One output table and how it is fed.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Our table id on the wire.
    pub id: u64,
    /// A forwarded table (relayed from `up` peers; `input` = `output`).
    pub forwarded: bool,
    pub input: String,
    pub output: String,
    /// The output definition (same shape as the input).
    pub def: Arc<TableDef>,
    /// The peer whose definition fixed the shape.
    pub announced_by: String,
    /// Keys currently published.
    pub entries: usize,
    /// Sources with at least one live contribution.
    pub sources: Vec<SourceInfo>,
    /// Definitions refused for a different shape, and the latest reason.
    pub refused: u64,
    /// Updates stored into the table, and aggregates sent from it.
    pub updates_in: u64,
    pub updates_out: u64,
    pub last_refusal: Option<String>,
    /// New keys dropped because the table held `max-entries` keys.
    pub dropped: u64,
    /// Peers that declared the output.
    pub wanted_by: Vec<String>,
    /// Problems worth showing, e.g. a peer whose output table has a
    /// different key type or length (HAProxy would silently ignore our
    /// updates).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub peer: PeerId,
    pub name: String,
    pub connected: bool,
    /// Keys it contributes to.
    pub entries: u32,
}

/// One key: the aggregate and, with `detail`, each source's contribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key: Bytes,
    /// What a peer would receive now.
    pub values: Vec<Value>,
    pub expire: Option<u32>,
    pub sources: Vec<ContributionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContributionInfo {
    pub peer: PeerId,
    pub name: String,
    /// The values as received; rates re-based to now.
    pub values: Vec<Value>,
    /// Remaining lifetime; `None`: never expires.
    pub expire: Option<u32>,
    /// Since the last update from this source.
    pub age_ms: u64,
}

impl Engine {
    fn table_by_name(&self, name: &str) -> Option<&Table> {
        match self.by_output.get(name) {
            Some(&t) => self.tables.get(t as usize),
            None => self.tables.iter().find(|t| t.input == name),
        }
    }

    fn peer_name(&self, peer: PeerId) -> String {
        self.peers
            .get(&peer)
            .map_or_else(|| format!("#{peer}"), |p| p.name.clone())
    }

    /// Distinct `server_key` strings currently referenced.
    pub fn interned_names(&self) -> usize {
        self.dict.len()
    }

    /// Why the output `name` that `peer` declared will not work, if it will
    /// not: a different key type or length than the input's (HAProxy
    /// silently ignores updates for such a table). For logging the DEFINE.
    pub fn output_warning(&self, peer: PeerId, name: &str) -> Option<String> {
        let p = self.peers.get(&peer)?;
        let w = p.wants.iter().find(|w| w.output == name)?;
        let t = self.tables.get(w.table? as usize)?;
        self.want_warning(&p.name, w, t)
    }

    fn want_warning(&self, peer: &str, w: &super::Want, t: &Table) -> Option<String> {
        (w.key_type != t.shape.key_type || w.key_len != t.shape.key_len).then(|| {
            format!(
                "{peer} declares {} with key {} len {} but the input {} has key {} len {}: \
                 HAProxy will ignore our updates",
                t.output,
                w.key_type.name(),
                w.key_len,
                t.input,
                t.shape.key_type.name(),
                t.shape.key_len
            )
        })
    }

    /// All output tables, in id order.
    pub fn tables(&self) -> Vec<TableInfo> {
        self.tables.iter().map(|t| self.table_info_of(t)).collect()
    }

    /// One table, by input or output name.
    pub fn table_info(&self, name: &str) -> Option<TableInfo> {
        self.table_by_name(name).map(|t| self.table_info_of(t))
    }

    fn table_info_of(&self, t: &Table) -> TableInfo {
        let mut sources: Vec<SourceInfo> = t
            .per_source
            .iter()
            .map(|(&s, c)| SourceInfo {
                peer: s as PeerId,
                name: self.peer_name(s as PeerId),
                connected: self.peers.get(&(s as PeerId)).is_some_and(|p| p.connected),
                entries: c.entries,
            })
            .collect();
        sources.sort_by(|a, b| a.name.cmp(&b.name).then(a.peer.cmp(&b.peer)));
        let mut wanted_by = Vec::new();
        let mut warnings = Vec::new();
        let mut peers: Vec<_> = self.peers.values().collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        for p in peers {
            for w in p.wants.iter().filter(|w| w.table == Some(t.idx)) {
                wanted_by.push(p.name.clone());
                warnings.extend(self.want_warning(&p.name, w, t));
            }
        }
        TableInfo {
            id: t.id,
            forwarded: t.forward,
            input: t.input.clone(),
            output: t.output.clone(),
            def: t.out_def.clone(),
            announced_by: t.announced_by.clone(),
            entries: t.len(),
            sources,
            refused: t.refused,
            updates_in: t.updates_in,
            updates_out: t.updates_out,
            last_refusal: t.last_refusal.clone(),
            dropped: t.dropped,
            wanted_by,
            warnings,
        }
    }

    /// One key of a table (by input or output name), computed at `now`.
    pub fn key_info(&self, table: &str, key: &[u8], now: u64, detail: bool) -> Option<KeyInfo> {
        let t = self.table_by_name(table)?;
        let e = t.lookup(key)?;
        Some(self.key_info_of(t, e, now, detail))
    }

    /// Up to `limit` keys of a table, in no particular order, computed at
    /// `now`.
    pub fn keys(&self, table: &str, now: u64, detail: bool, limit: usize) -> Vec<KeyInfo> {
        let Some(t) = self.table_by_name(table) else {
            return Vec::new();
        };
        t.entries()
            .filter(|e| e.has_live(now))
            .take(limit)
            .map(|e| self.key_info_of(t, e, now, detail))
            .collect()
    }

    fn key_info_of(
        &self,
        t: &Table,
        e: &super::table::KeyEntry,
        now: u64,
        detail: bool,
    ) -> KeyInfo {
        let mut values = Values::new();
        let expire = t.aggregate(e, now, &self.dict, &mut values);
        let values = values.into_vec();
        let mut sources = Vec::new();
        if detail {
            let w = t.layout.width;
            for (i, h) in e.heads.iter().enumerate() {
                if !h.is_live(now) {
                    continue;
                }
                let mut v = Values::new();
                t.layout.load(
                    &e.words[i * w..(i + 1) * w],
                    h.age(now) as i64,
                    &self.dict,
                    &mut v,
                );
                sources.push(ContributionInfo {
                    peer: h.source as PeerId,
                    name: self.peer_name(h.source as PeerId),
                    values: v.into_vec(),
                    expire: h.remaining(now),
                    age_ms: h.age(now),
                });
            }
            sources.sort_by(|a, b| a.name.cmp(&b.name).then(a.peer.cmp(&b.peer)));
        }
        KeyInfo {
            key: Bytes::copy_from_slice(&e.key),
            values,
            expire,
            sources,
        }
    }
}
