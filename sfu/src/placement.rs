//! Where rooms and participants live: which shard a new participant goes to, and when a
//! room starts or stops spanning several shards.
//!
//! Pure bookkeeping (no threads, no clock), so the driver and the deterministic tests
//! apply the same decisions:
//!
//! - A new room goes to the shard with the fewest rooms (its *home*).
//! - A room stays on its home shard until it holds [`Placement::new`]'s `span_after`
//!   participants: a six-person meeting never pays a cross-thread hop. Beyond that, each
//!   new participant goes to the shard holding the fewest of the room's participants, so a
//!   lecture's listeners spread over every shard and each shard encrypts for its own.
//! - When a shard gets its first participant of a room others already host, or loses its
//!   last one, the result says so ([`Span`]): the caller tells the shards involved
//!   (`ShardCore::span_set` / `span_add` / `span_remove` / `span_clear`) before anything
//!   else about the room reaches them, so every shard's view of who hosts the room changes
//!   in the order the placement decided it.

use std::collections::HashMap;

use crate::ids::ParticipantId;

/// A change in the set of shards hosting a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// `shard` now hosts `room` too; `others` already did (non-empty).
    Joined {
        /// The room.
        room: String,
        /// The shard that starts hosting it.
        shard: usize,
        /// The shards that already host it.
        others: Vec<usize>,
    },
    /// `shard` no longer hosts `room`; `others` still do (possibly none).
    Left {
        /// The room.
        room: String,
        /// The shard that stops hosting it.
        shard: usize,
        /// The shards that still host it.
        others: Vec<usize>,
    },
}

/// Where a new participant was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Its shard.
    pub shard: usize,
    /// The room now spans one more shard (None: no change).
    pub span: Option<Span>,
}

struct RoomPlacement {
    home: usize,
    /// Participants per shard: counted when a join is posted, uncounted once the shard has
    /// let them go, so never fewer than a shard holds (the room-size check is never looser
    /// than the core's).
    per_shard: Vec<usize>,
    participants: usize,
    /// It has spanned more than one shard at some point.
    spanned: bool,
}

impl RoomPlacement {
    fn hosts(&self) -> Vec<usize> {
        (0..self.per_shard.len())
            .filter(|s| self.per_shard[*s] > 0)
            .collect()
    }
}

struct ParticipantPlacement {
    shard: usize,
    room: String,
}

/// Rooms and participants over `shards` shards (see the module docs).
pub struct Placement {
    rooms: HashMap<String, RoomPlacement>,
    participants: HashMap<ParticipantId, ParticipantPlacement>,
    /// Rooms per home shard (new rooms go to the shard with fewest).
    rooms_per_shard: Vec<usize>,
    span_after: usize,
}

impl Placement {
    /// Bookkeeping for `shards` shards; rooms spread beyond their home shard once they
    /// hold `span_after` participants (0: never).
    pub fn new(shards: usize, span_after: usize) -> Self {
        Placement {
            rooms: HashMap::new(),
            participants: HashMap::new(),
            rooms_per_shard: vec![0; shards.max(1)],
            span_after,
        }
    }

    /// Participants placed in `room` (0 for a room not placed).
    pub fn room_size(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.participants)
    }

    /// The shard of a placed participant.
    pub fn shard_of(&self, participant: ParticipantId) -> Option<usize> {
        self.participants.get(&participant).map(|p| p.shard)
    }

    /// The shards hosting `room`, in order.
    pub fn hosts(&self, room: &str) -> Vec<usize> {
        self.rooms.get(room).map_or_else(Vec::new, |r| r.hosts())
    }

    /// Place a new participant of `room` (placing the room if new).
    pub fn place(&mut self, participant: ParticipantId, room: &str) -> Placed {
        let nshards = self.rooms_per_shard.len();
        let per_shard = &mut self.rooms_per_shard;
        let entry = self.rooms.entry(room.to_owned()).or_insert_with(|| {
            let (home, _) = per_shard
                .iter()
                .enumerate()
                .min_by_key(|(i, n)| (**n, *i))
                .expect("at least one shard");
            per_shard[home] += 1;
            RoomPlacement {
                home,
                per_shard: vec![0; nshards],
                participants: 0,
                spanned: false,
            }
        });
        let spread = self.span_after > 0 && entry.participants >= self.span_after;
        let shard = if spread {
            // The shard with the fewest of this room's participants; the home shard on a
            // tie (it already receives the room's publishers).
            (0..nshards)
                .min_by_key(|s| (entry.per_shard[*s], *s != entry.home, *s))
                .expect("at least one shard")
        } else if entry.per_shard[entry.home] > 0 || entry.participants == 0 {
            entry.home
        } else {
            // The room spread and its home emptied: stay where it lives.
            entry.hosts()[0]
        };
        let span = (entry.per_shard[shard] == 0 && entry.participants > 0).then(|| Span::Joined {
            room: room.to_owned(),
            shard,
            others: entry.hosts(),
        });
        entry.spanned |= span.is_some();
        entry.per_shard[shard] += 1;
        entry.participants += 1;
        self.participants.insert(
            participant,
            ParticipantPlacement {
                shard,
                room: room.to_owned(),
            },
        );
        Placed { shard, span }
    }

    /// The participant is gone (its room too when it was the last). Returns the span
    /// change when its shard no longer hosts the room while others still may.
    pub fn forget(&mut self, participant: ParticipantId) -> Option<Span> {
        let p = self.participants.remove(&participant)?;
        let r = self.rooms.get_mut(&p.room)?;
        r.participants -= 1;
        r.per_shard[p.shard] -= 1;
        if r.participants == 0 {
            let home = r.home;
            let spanned = r.spanned;
            self.rooms.remove(&p.room);
            self.rooms_per_shard[home] -= 1;
            // A room that only ever lived on one shard has no span to undo; one that
            // spread tells its last shard to drop what it kept for the others.
            return spanned.then(|| Span::Left {
                room: p.room,
                shard: p.shard,
                others: Vec::new(),
            });
        }
        (r.per_shard[p.shard] == 0).then(|| Span::Left {
            room: p.room.clone(),
            shard: p.shard,
            others: r.hosts(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u64) -> ParticipantId {
        ParticipantId(n)
    }

    #[test]
    fn small_rooms_stay_on_their_home_shard() {
        let mut pl = Placement::new(2, 50);
        for i in 0..6 {
            let placed = pl.place(pid(i), "meeting");
            assert_eq!(placed.shard, 0);
            assert_eq!(placed.span, None);
        }
        // The next room goes to the other shard.
        assert_eq!(pl.place(pid(100), "other").shard, 1);
        assert_eq!(pl.hosts("meeting"), vec![0]);
    }

    #[test]
    fn a_big_room_spreads_evenly_and_says_when_it_spans() {
        let mut pl = Placement::new(2, 4);
        let mut spans = Vec::new();
        let mut shards = Vec::new();
        for i in 0..12 {
            let placed = pl.place(pid(i), "lecture");
            shards.push(placed.shard);
            spans.extend(placed.span);
        }
        // The first four stay home; then the other shard fills up to even, and the two
        // take turns.
        assert_eq!(shards, vec![0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1]);
        assert_eq!(
            spans,
            vec![Span::Joined {
                room: "lecture".into(),
                shard: 1,
                others: vec![0]
            }]
        );
        assert_eq!(pl.hosts("lecture"), vec![0, 1]);
    }

    #[test]
    fn a_shard_losing_its_last_participant_of_a_spanning_room_says_so() {
        let mut pl = Placement::new(2, 1);
        assert_eq!(pl.place(pid(1), "r").shard, 0);
        let second = pl.place(pid(2), "r");
        assert_eq!(second.shard, 1);
        assert!(second.span.is_some());
        assert_eq!(
            pl.forget(pid(2)),
            Some(Span::Left {
                room: "r".into(),
                shard: 1,
                others: vec![0]
            })
        );
        // The home shard's last participant: the room is gone, and the shard is told to
        // drop what it kept for the others.
        assert_eq!(
            pl.forget(pid(1)),
            Some(Span::Left {
                room: "r".into(),
                shard: 0,
                others: vec![]
            })
        );
        assert_eq!(pl.room_size("r"), 0);
        assert_eq!(pl.forget(pid(1)), None);
    }

    #[test]
    fn one_shard_never_spans() {
        let mut pl = Placement::new(1, 2);
        for i in 0..10 {
            let placed = pl.place(pid(i), "r");
            assert_eq!((placed.shard, placed.span), (0, None));
        }
        for i in 0..10 {
            assert_eq!(pl.forget(pid(i)), None);
        }
    }

    #[test]
    fn a_room_whose_home_emptied_stays_where_it_lives() {
        let mut pl = Placement::new(2, 1);
        pl.place(pid(1), "r"); // home 0
        pl.place(pid(2), "r"); // spreads to 1
        assert!(pl.forget(pid(1)).is_some()); // home empties
        // Below the spread threshold? No: 1 participant >= 1, so it spreads to the emptiest,
        // which is the home shard again, and says so.
        let placed = pl.place(pid(3), "r");
        assert_eq!(placed.shard, 0);
        assert_eq!(
            placed.span,
            Some(Span::Joined {
                room: "r".into(),
                shard: 0,
                others: vec![1]
            })
        );
    }
}
