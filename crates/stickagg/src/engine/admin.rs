//! Operator-level changes to the engine's tables: `clear table`, and
//! adopting a new definition when the nodes change a table (HAProxy
//! reloaded with another `store` or `expire`) without restarting stickagg —
//! the vendor's engine needs a restart for that.

use super::table::Table;
use super::{Binding, Engine, PeerId};
use peers::TableDef;
use std::sync::Arc;

impl Engine {
    fn table_index(&self, name: &str) -> Option<usize> {
        match self.by_output.get(name) {
            Some(&t) => Some(t as usize),
            None => self.tables.iter().position(|t| t.input == name),
        }
    }

    /// Drops the aggregated state of a table (input or output name), or of
    /// one key of it: the keys stop being published and expire on the nodes
    /// by themselves; the next update of a node brings its value back.
    /// `None` when there is no such table.
    pub fn clear(&mut self, table: &str, key: Option<&[u8]>) -> Option<usize> {
        let t = self.table_index(table)?;
        let (tables, mut ctx) = self.split();
        Some(tables[t].clear(&mut ctx, key))
    }

    /// Whether a connected peer other than `peer` feeds table `t` on its
    /// current connection (so its shape is still in use).
    pub(super) fn shape_in_use(&self, t: u32, peer: PeerId) -> bool {
        self.peers.iter().any(|(id, q)| {
            id != peer
                && q.connected
                && q.bindings
                    .iter()
                    .any(|b| matches!(b.1, Binding::Input { table, .. } if table == t))
        })
    }

    /// Replaces table `t`'s shape by `def`: its entries (of the old shape)
    /// are dropped, its output keeps its id and name, and every peer that
    /// wants it is sent the new definition with the next update.
    pub(super) fn reshape(&mut self, t: u32, def: &Arc<TableDef>, by: String) {
        let (tables, mut ctx) = self.split();
        let old = &mut tables[t as usize];
        old.clear(&mut ctx, None);
        let mut table = Table::new(t, def.clone(), old.output.clone(), by, old.forward);
        table.refused = old.refused;
        table.last_refusal = old.last_refusal.take();
        table.dropped = old.dropped;
        // Exported as counters: they must not go back.
        table.updates_in = old.updates_in;
        table.updates_out = old.updates_out;
        tables[t as usize] = table;
        self.counters.reshaped += 1;
        // Peers refused earlier on their live connection with what is now
        // the table's shape are bound at once.
        let shape = def.clone();
        for p in self.peers.values_mut().filter(|p| p.connected) {
            let matching: Vec<(u64, u32)> = p
                .refused
                .iter()
                .filter(|(_, d)| d.name == shape.name && d.same_shape(&shape))
                .map(|(id, d)| (*id, d.expire.unwrap_or(0)))
                .collect();
            for (id, expire) in matching {
                p.bind(id, Binding::Input { table: t, expire });
                p.refused.retain(|r| r.0 != id);
            }
        }
        self.refresh_sends(None);
    }
}
