//! The engine's peers by id.
//!
//! A peer's id is the hub's index of it in its section's peer list: small,
//! dense and stable across reconnections (`state.rs`). So a vector indexed
//! by id serves where a hash map did, and looking a peer up costs an index
//! instead of a hash and a probe (each update looks its peer up twice, and
//! each queued update once more to prefetch its key).

use super::PeerId;

pub(super) struct PeerMap<T> {
    slots: Vec<Option<(PeerId, T)>>,
    len: usize,
}

impl<T> Default for PeerMap<T> {
    fn default() -> Self {
        PeerMap {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<T> PeerMap<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, id: &PeerId) -> Option<&T> {
        self.slots.get(*id)?.as_ref().map(|(_, v)| v)
    }

    pub(super) fn get_mut(&mut self, id: &PeerId) -> Option<&mut T> {
        self.slots.get_mut(*id)?.as_mut().map(|(_, v)| v)
    }

    /// The peer `id`, added with `f` first if it is not there.
    pub(super) fn get_or_insert_with(&mut self, id: PeerId, f: impl FnOnce() -> T) -> &mut T {
        if id >= self.slots.len() {
            self.slots.resize_with(id + 1, || None);
        }
        let slot = &mut self.slots[id];
        if slot.is_none() {
            self.len += 1;
        }
        &mut slot.get_or_insert_with(|| (id, f())).1
    }

    /// In id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&PeerId, &T)> {
        self.slots.iter().flatten().map(|(k, v)| (k, v))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&PeerId, &mut T)> {
        self.slots.iter_mut().flatten().map(|(k, v)| (&*k, v))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, v)| v)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.iter_mut().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_like_a_map() {
        let mut m = PeerMap::default();
        assert!(m.get(&3).is_none());
        *m.get_or_insert_with(3, || 30) += 1;
        *m.get_or_insert_with(0, || 0) += 1;
        assert_eq!(*m.get_or_insert_with(3, || 99), 31);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(&0), Some(&1));
        assert!(m.get(&1).is_none() && m.get(&7).is_none());
        *m.get_mut(&0).unwrap() = 5;
        let all: Vec<_> = m.iter().map(|(&k, &v)| (k, v)).collect();
        assert_eq!(all, vec![(0, 5), (3, 31)]);
        m.values_mut().for_each(|v| *v += 1);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), vec![6, 32]);
    }
}
