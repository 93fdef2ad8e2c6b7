//! Rendered event bodies, shared by a worker process' drainers.
//!
//! An event goes to every endpoint that subscribes to it, each with its
//! own drainer, and its body is the same for all of them (the signature,
//! made per endpoint, is apart). Events never change, so the first drainer
//! to send one reads and renders it, and the others take the same bytes
//! from here instead of reading the event, its order's lines and rendering
//! again. Bounded: the oldest entries go first, so a drainer takes the
//! bodies it needs out of here at once ([`Bodies::held`]) and keeps them
//! until sent: a body evicted meanwhile is never one it lacks.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use actix_web::web::Bytes;
use uuid::Uuid;

use crate::db::events::Event;
use crate::http::views::EventView;

/// How many bodies a process keeps: about a second of deliveries at the
/// fan-out rate, some MB.
pub const CAPACITY: usize = 4096;

pub struct Bodies {
    inner: Mutex<Ring>,
    capacity: usize,
}

impl Default for Bodies {
    fn default() -> Self {
        Bodies::with_capacity(CAPACITY)
    }
}

#[derive(Default)]
struct Ring {
    by_event: HashMap<Uuid, Bytes>,
    order: VecDeque<Uuid>,
}

/// Bodies a drainer holds, by event.
pub type Held = HashMap<Uuid, Bytes>;

impl Bodies {
    /// A cache of at most `capacity` bodies (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Bodies {
            inner: Mutex::new(Ring::default()),
            capacity: capacity.max(1),
        }
    }

    /// Of `events`, the bodies kept here (the caller's from now on,
    /// whatever is evicted later), and the events whose body is not.
    pub fn held(&self, events: &[Uuid]) -> (Held, Vec<Uuid>) {
        let ring = self.lock();
        let mut held = Held::with_capacity(events.len());
        let mut missing = Vec::new();
        for id in events {
            match ring.by_event.get(id) {
                Some(body) => {
                    held.insert(*id, body.clone());
                }
                None => missing.push(*id),
            }
        }
        (held, missing)
    }

    /// Renders `events`, keeps their bodies for other drainers and adds
    /// them to `held`.
    pub fn render(&self, events: Vec<Event>, held: &mut Held) {
        let rendered: Vec<(Uuid, Bytes)> = events
            .into_iter()
            .map(|e| {
                let id = e.row.id;
                let body = serde_json::to_vec(&EventView::from(e)).unwrap_or_default();
                (id, Bytes::from(body))
            })
            .collect();
        held.extend(rendered.iter().cloned());
        self.keep(rendered);
    }

    fn keep(&self, bodies: Vec<(Uuid, Bytes)>) {
        let mut ring = self.lock();
        for (id, body) in bodies {
            if ring.by_event.insert(id, body).is_none() {
                ring.order.push_back(id);
            }
        }
        while ring.order.len() > self.capacity {
            if let Some(oldest) = ring.order.pop_front() {
                ring.by_event.remove(&oldest);
            }
        }
    }

    /// The body of `event`, if kept.
    pub fn get(&self, event: Uuid) -> Option<Bytes> {
        self.lock().by_event.get(&event).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> (Uuid, Bytes) {
        (Uuid::from_u128(n as u128), Bytes::from(n.to_string()))
    }

    #[test]
    fn a_kept_body_is_not_missing_and_is_the_same_bytes_for_every_drainer() {
        let bodies = Bodies::default();
        bodies.keep(vec![body(1), body(2)]);
        let ids = [1, 2, 3].map(Uuid::from_u128);
        let (held, missing) = bodies.held(&ids);
        assert_eq!(missing, vec![Uuid::from_u128(3)]);
        assert_eq!(held.get(&ids[1]), Some(&Bytes::from("2")));
        assert_eq!(bodies.get(ids[2]), None);
    }

    #[test]
    fn a_held_body_outlives_its_eviction() {
        let bodies = Bodies::with_capacity(2);
        bodies.keep(vec![body(1)]);
        let (held, _) = bodies.held(&[Uuid::from_u128(1)]);
        bodies.keep(vec![body(2), body(3)]);
        assert_eq!(bodies.get(Uuid::from_u128(1)), None, "evicted here");
        assert_eq!(held.get(&Uuid::from_u128(1)), Some(&Bytes::from("1")));
    }

    #[test]
    fn past_capacity_the_oldest_bodies_go_first() {
        let bodies = Bodies::default();
        bodies.keep((0..CAPACITY + 10).map(body).collect());
        // Kept again: not a second entry.
        bodies.keep(vec![body(CAPACITY + 9)]);
        assert_eq!(bodies.lock().order.len(), CAPACITY);
        assert_eq!(bodies.get(Uuid::from_u128(9)), None);
        assert_eq!(bodies.get(Uuid::from_u128(10)), Some(Bytes::from("10")));
        assert!(bodies
            .get(Uuid::from_u128((CAPACITY + 9) as u128))
            .is_some());
    }
}
