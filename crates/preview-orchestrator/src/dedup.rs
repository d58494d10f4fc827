//! Remembers the last N webhook delivery ids, so a redelivery is answered without doing the work
//! twice. Memory is bounded: the oldest id is forgotten first.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// The bounded set of delivery ids.
pub struct DeliveryDedup {
    capacity: usize,
    inner: Mutex<Ring>,
}

/// The ids, for lookups, and their arrival order, for eviction; both share one allocation per id.
struct Ring {
    set: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
}

impl DeliveryDedup {
    /// Remembers at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            inner: Mutex::new(Ring {
                set: HashSet::with_capacity(capacity),
                order: VecDeque::with_capacity(capacity),
            }),
        }
    }

    /// Claims `id`: `true` if it is new (and now remembered), `false` if seen before.
    pub fn claim(&self, id: &str) -> bool {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Ring { set, order } = &mut *guard;
        if set.contains(id) {
            return false;
        }
        if order.len() >= self.capacity
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        let id: Arc<str> = id.into();
        set.insert(id.clone());
        order.push_back(id);
        true
    }

    /// Forgets `id` again (its processing failed, so a redelivery should be processed).
    pub fn forget(&self, id: &str) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Ring { set, order } = &mut *guard;
        if set.remove(id)
            && let Some(pos) = order.iter().rposition(|x| &**x == id)
        {
            order.remove(pos);
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .order
            .len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_forgetful() {
        let d = DeliveryDedup::new(3);
        assert!(d.claim("a"));
        assert!(!d.claim("a"));
        assert!(d.claim("b"));
        assert!(d.claim("c"));
        assert!(d.claim("d"));
        assert_eq!(d.len(), 3);
        assert!(d.claim("a"), "the oldest id was forgotten");
        d.forget("d");
        assert!(d.claim("d"));
        assert_eq!(d.len(), 3);
    }
}
