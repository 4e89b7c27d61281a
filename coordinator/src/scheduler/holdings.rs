//! What one worker holds, for cache affinity: a bounded set of keys that
//! forgets the least recently added ones first. Affinity is only a hint
//! (results live in the coordinator's database), so forgetting old keys
//! costs at most a less local placement, while an unbounded set would grow
//! with every vertex a long-running farm ever ran.

use imgfarm_common::oci::Digest;
use std::collections::{BTreeMap, HashMap};

/// Keys a worker holds, at most `cap` of them, newest kept.
#[derive(Debug)]
pub(super) struct Holdings {
    /// Key → when it was last added.
    stamp: HashMap<Digest, u64>,
    /// When → key, oldest first.
    by_age: BTreeMap<u64, Digest>,
    next: u64,
    cap: usize,
}

impl Holdings {
    /// An empty set holding at most `cap` keys (0 counts as 1).
    pub(super) fn new(cap: usize) -> Self {
        Self {
            stamp: HashMap::new(),
            by_age: BTreeMap::new(),
            next: 0,
            cap: cap.max(1),
        }
    }

    /// Adds `key` as the newest (again, if it was there), forgetting the
    /// oldest keys beyond the cap; returns the keys forgotten.
    pub(super) fn insert(&mut self, key: Digest) -> Vec<Digest> {
        if let Some(old) = self.stamp.insert(key.clone(), self.next) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(self.next, key);
        self.next += 1;
        self.trim()
    }

    /// Changes the cap, forgetting the oldest keys beyond it; returns them.
    pub(super) fn set_cap(&mut self, cap: usize) -> Vec<Digest> {
        self.cap = cap.max(1);
        self.trim()
    }

    fn trim(&mut self) -> Vec<Digest> {
        let mut gone = Vec::new();
        while self.stamp.len() > self.cap {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.stamp.remove(&oldest);
            gone.push(oldest);
        }
        gone
    }

    pub(super) fn len(&self) -> usize {
        self.stamp.len()
    }

    /// Forgets everything; returns the keys forgotten.
    pub(super) fn clear(&mut self) -> Vec<Digest> {
        self.stamp.clear();
        std::mem::take(&mut self.by_age).into_values().collect()
    }
}
