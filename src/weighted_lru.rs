//! An LRU map bounded by the summed weight (bytes, say) of its values.
//!
//! The `lru` crate bounds entries, not weights: this one is created
//! unbounded and evicts from the cold end until the budget fits. The newest
//! entry stays even when it alone is over budget, so one huge folder's tree
//! (or one huge file's chunk table) is not decoded again on every access.
//!
//! The mount's chunk cache does not use this: it also shares concurrent
//! fetches, hands evicted buffers on for reuse, and keeps small chunks to a
//! share of their own (`crate::chunk_cache`).

use lru::LruCache;
use std::hash::Hash;

pub struct WeightedLru<K: Hash + Eq, V> {
    lru: LruCache<K, (V, usize)>,
    weight: usize,
    budget: usize,
}

impl<K: Hash + Eq, V: Clone> WeightedLru<K, V> {
    pub fn new(budget: usize) -> WeightedLru<K, V> {
        WeightedLru {
            lru: LruCache::unbounded(),
            weight: 0,
            budget,
        }
    }

    /// The value for `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.lru.get(key).map(|(value, _)| value.clone())
    }

    /// Insert (or replace) `key`, then evict the least recently used
    /// entries until the weights fit the budget, but never `key` itself.
    pub fn put(&mut self, key: K, value: V, weight: usize) {
        self.weight += weight;
        if let Some((_, old)) = self.lru.put(key, (value, weight)) {
            self.weight -= old;
        }
        while self.weight > self.budget && self.lru.len() > 1 {
            if let Some((_, (_, evicted))) = self.lru.pop_lru() {
                self.weight -= evicted;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    /// The summed weight of the entries.
    pub fn weight(&self) -> usize {
        self.weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recent_until_the_weights_fit() {
        let mut lru = WeightedLru::new(100);
        lru.put(1, "a", 40);
        lru.put(2, "b", 40);
        assert_eq!(lru.get(&1), Some("a")); // 2 is now the least recent
        lru.put(3, "c", 40);
        assert_eq!(lru.get(&2), None);
        assert_eq!((lru.len(), lru.weight()), (2, 80));
        lru.put(3, "c2", 10); // replacing counts the new weight only
        assert_eq!((lru.get(&3), lru.weight()), (Some("c2"), 50));
    }

    #[test]
    fn the_newest_stays_even_over_budget() {
        let mut lru = WeightedLru::new(100);
        lru.put(1, "small", 10);
        lru.put(2, "huge", 500);
        assert_eq!(lru.get(&1), None);
        assert_eq!(lru.get(&2), Some("huge"));
        assert_eq!(lru.weight(), 500);
        lru.put(3, "next", 10);
        assert_eq!(lru.get(&2), None, "no longer the newest");
        assert!(!lru.is_empty());
    }
}
