//! The engine's peers by id.
//!
//! A peer's id is the hub's index of it in its section's peer list: small,
//! dense and stable across reconnections (`state.rs`). So a vector indexed
//! by id serves where a hash map did, and looking a peer up costs an index
//! instead of a hash and a probe (each update looks its peer up twice, and
//! each queued update once more to prefetch its key).

use super::PeerId;

/// A slot per id up to the highest seen; `None` for an id not seen yet.
pub(super) struct PeerMap<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for PeerMap<T> {
    fn default() -> Self {
        PeerMap { slots: Vec::new() }
    }
}

impl<T> PeerMap<T> {
    /// How many peers are present (counted: only `Debug` asks).
    pub(super) fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    pub(super) fn get(&self, id: &PeerId) -> Option<&T> {
        self.slots.get(*id)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: &PeerId) -> Option<&mut T> {
        self.slots.get_mut(*id)?.as_mut()
    }

    /// The peer `id`, added with `f` first if it is not there.
    pub(super) fn get_or_insert_with(&mut self, id: PeerId, f: impl FnOnce() -> T) -> &mut T {
        if id >= self.slots.len() {
            self.slots.resize_with(id + 1, || None);
        }
        self.slots[id].get_or_insert_with(f)
    }

    /// In id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (PeerId, &T)> {
        (self.slots.iter().enumerate()).filter_map(|(id, v)| Some((id, v.as_ref()?)))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (PeerId, &mut T)> {
        (self.slots.iter_mut().enumerate()).filter_map(|(id, v)| Some((id, v.as_mut()?)))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten()
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
        let all: Vec<_> = m.iter().map(|(k, &v)| (k, v)).collect();
        assert_eq!(all, vec![(0, 5), (3, 31)]);
        m.values_mut().for_each(|v| *v += 1);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), vec![6, 32]);
    }
}
