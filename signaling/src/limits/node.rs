//! Participants per node (`--max-participants`): past it `join` is refused with
//! `server_full`, so a load balancer or the client goes to another node instead of every
//! room on this one degrading. Counted: the participants in the node's room store (joined
//! or waiting for a `resume`, learners and proctors) plus joins admitted and still in
//! progress, so joins racing each other cannot overshoot. 0 turns it off.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The node's participant cap.
pub(crate) struct NodeLimit {
    max: usize,
    in_flight: AtomicUsize,
    refused: AtomicU64,
}

/// A join admitted under the cap; dropped when the join is done (the participant is then
/// in the store, or the join failed).
pub(crate) struct JoinSlot<'a>(Option<&'a NodeLimit>);

impl Drop for JoinSlot<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.0 {
            l.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl NodeLimit {
    pub(crate) fn new(max: usize) -> Self {
        NodeLimit {
            max,
            in_flight: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// A join on a node where `present` participants are in the store (not counting one
    /// this join replaces): a slot, or `None` when the node is full.
    pub(crate) fn admit(&self, present: usize) -> Option<JoinSlot<'_>> {
        if self.max == 0 {
            return Some(JoinSlot(None));
        }
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if present + before >= self.max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(JoinSlot(Some(self)))
    }

    /// Joins refused with `server_full`.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The cap (0: none).
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_in_flight_count_until_done() {
        let l = NodeLimit::new(3);
        let a = l.admit(1).expect("1 of 3");
        let b = l.admit(1).expect("2 of 3 with one in flight");
        assert!(l.admit(1).is_none(), "1 present + 2 in flight = full");
        drop(a);
        drop(b);
        // Both landed in the store.
        assert!(l.admit(3).is_none());
        assert!(l.admit(2).is_some());
        assert_eq!(l.refused(), 2);
        assert_eq!(l.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn zero_is_off() {
        let l = NodeLimit::new(0);
        let slots: Vec<_> = (0..100).map(|_| l.admit(1_000_000).unwrap()).collect();
        drop(slots);
        assert_eq!(l.refused(), 0);
    }
}
