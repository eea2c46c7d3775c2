//! Active speakers: per room, the publishers whose audio level (RFC 6464 header
//! extension) was loud within a hold time, loudest first; evaluated on a fixed period so
//! the event rate does not follow the packet rate.

use std::time::{Duration, Instant};

use str0m::media::MediaKind;

use super::*;
use crate::ids::ParticipantId;

/// Active-speaker evaluation period.
pub(super) const SPEAKER_PERIOD: Duration = Duration::from_millis(500);

/// Audio level (dBov, 0 loudest) at or above which a packet counts as speech.
pub(super) const SPEAKING_DBOV: f32 = -45.0;

/// How long a participant stays an active speaker after its last loud packet.
pub(super) const SPEAKER_HOLD: Duration = Duration::from_millis(1200);

impl ShardCore {
    pub(super) fn update_speakers(&mut self, now: Instant) {
        for (name, room) in self.rooms.iter_mut() {
            let mut speaking: Vec<(ParticipantId, f32)> = Vec::new();
            for id in &room.producers {
                let Some(p) = self.producers.get_mut(id) else {
                    continue;
                };
                if p.info.kind != MediaKind::Audio {
                    continue;
                }
                p.level = p.peak.max(p.level * 0.5);
                p.peak = 0.0;
                let active = !p.info.muted
                    && p.last_loud_at
                        .is_some_and(|at| now.saturating_duration_since(at) < SPEAKER_HOLD);
                if active {
                    speaking.push((p.info.participant, p.level.min(1.0)));
                }
            }
            speaking.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut ids: Vec<ParticipantId> = speaking.iter().map(|s| s.0).collect();
            let mut old = room.speakers.clone();
            // The set (not its order, which follows momentary loudness) decides whether to tell.
            ids.sort();
            old.sort();
            // A room spanning shards: every shard tracks its speakers (mirrors carry the
            // audio levels), the lowest-indexed one tells signaling.
            let leads = self
                .spans
                .get(name)
                .is_none_or(|o| o.iter().all(|s| *s > self.shard_index));
            if ids != old {
                room.speakers = speaking.iter().map(|s| s.0).collect();
                if !leads {
                    continue;
                }
                self.events.push_back(SfuEvent::ActiveSpeakers {
                    room: name.clone(),
                    speakers: speaking,
                });
            }
        }
    }
}
