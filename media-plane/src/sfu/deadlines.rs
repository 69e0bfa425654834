//! A heap of (deadline, session) entries. Entries whose session moved on are left in place
//! and skipped when they surface, so re-arming a session costs one push and no search.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::ids::SessionKey;

/// Deadlines of one core's sessions, earliest first.
#[derive(Debug, Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, SessionKey)>>,
}

impl Deadlines {
    /// Adds a deadline for `key`.
    pub fn push(&mut self, at: Instant, key: SessionKey) {
        self.heap.push(Reverse((at, key)));
    }

    /// Makes a session whose deadline is `next` due no later than `at`.
    pub fn arm(&mut self, next: &mut Instant, at: Instant, key: SessionKey) {
        if *next > at {
            *next = at;
            self.push(at, key);
        }
    }

    /// The earliest entry, valid or not.
    pub fn peek(&self) -> Option<(Instant, SessionKey)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    /// Drops the earliest entry.
    pub fn pop(&mut self) {
        self.heap.pop();
    }
}
