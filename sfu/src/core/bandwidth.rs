//! Wiring of the stream allocator into the core: every [`ALLOCATION_PERIOD`], each
//! subscriber transport with a bandwidth estimate gets its consumers' targets recomputed
//! ([`allocator::allocate`]), pauses and resumes announced ([`SfuEvent::VideoPaused`] /
//! [`SfuEvent::VideoResumed`]), and str0m's estimator told what to probe for.
//!
//! The estimate is str0m's send-side one with `--bwe`; by default it is the loss-based
//! one (`loss_estimate.rs`), which exists only once a subscriber showed congestion (until
//! then the transport is not allocated at all) and cannot probe: a step up is a guess
//! the next receiver reports confirm or undo (one lossy report undoes it), so with it a
//! move down holds [`UPGRADE_HOLD_LOSS`], steps up are spaced [`RAMP_HOLD_LOSS`] apart,
//! and a step undone within [`FAILED_UP_WINDOW_LOSS`] counts as failed (doubling the
//! next hold, up to 8 x).
//!
//! Where it sits in the packet path: the allocator only writes each consumer's `target`;
//! `Consumer::decide` reads it per packet (decide), `Consumer::write` is untouched (apply).

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::MediaKind;
use tracing::debug;

use super::allocator::{self, AUDIO_RESERVE_BPS, Priority, Target, UNMEASURED_LAYER_BPS, Want};
use super::*;
use crate::ids::{ParticipantId, Source, TrackId, TransportId};

/// A move down this soon after a move up means the step up failed (see `failed_ups`).
const FAILED_UP_WINDOW: Duration = Duration::from_secs(2);
/// The same for the loss-based estimate, which needs longer to see a step fail: the
/// receiver reports the loss within about a second, str0m's stats round passes it on
/// within another, and the estimate wants two lossy reports in a row.
const FAILED_UP_WINDOW_LOSS: Duration = Duration::from_secs(6);
/// With the loss-based estimate, the shortest wait between two steps up: long enough for
/// a step that does not fit to show as loss before the next one is taken.
const RAMP_HOLD_LOSS: Duration = Duration::from_secs(4);
/// With the loss-based estimate, the wait after a move down before the next step up (each
/// failed step up doubles it, up to 8 x): a step up is a guess that costs the subscriber
/// a second or two of loss when wrong, so guesses are rarer than with probing.
const UPGRADE_HOLD_LOSS: Duration = Duration::from_secs(8);

/// How often allocations are recomputed.
pub(super) const ALLOCATION_PERIOD: Duration = Duration::from_millis(200);

impl ShardCore {
    /// Recompute every subscriber transport's allocation.
    pub(super) fn allocate_all(&mut self, now: Instant) {
        let subs: Vec<TransportId> = self
            .transports
            .iter()
            .filter(|(_, t)| {
                t.estimate.is_some() && matches!(t.kind, TransportKind::Subscriber { .. })
            })
            .map(|(id, _)| *id)
            .collect();
        for tid in subs {
            self.allocate(tid, now);
        }
    }

    pub(super) fn allocate(&mut self, tid: TransportId, now: Instant) {
        let Some(t) = self.transports.get(&tid) else {
            return;
        };
        let Some(estimate) = t.estimate else {
            return;
        };
        let TransportKind::Subscriber { consumers, .. } = &t.kind else {
            return;
        };
        let room = self
            .participants
            .get(&t.participant)
            .and_then(|p| self.rooms.get(&p.room));
        let mut keys = Vec::new();
        let mut wants = Vec::new();
        for (key, c) in consumers {
            let Some(p) = c.producer.and_then(|id| self.producers.get(&id)) else {
                continue;
            };
            if !c.active || c.hidden() {
                // Hidden (adaptive stream): no budget, no pause announced; `decide`
                // sends it nothing.
                continue;
            }
            let want = if c.kind == MediaKind::Audio {
                Want {
                    priority: Priority::Audio,
                    layers: vec![p.rate.bps.max(AUDIO_RESERVE_BPS)],
                    current: Target::Layer(0),
                    hold_until: None,
                    short_since: None,
                }
            } else {
                let priority = if c.source == Source::Screen {
                    Priority::Screen
                } else if room.is_some_and(|r| r.speakers.contains(&c.publisher)) {
                    Priority::Speaker
                } else {
                    Priority::Camera
                };
                let layers = if p.svc.is_svc() && p.layers.is_empty() {
                    // SVC: the ladder of (spatial, temporal) steps (`svc.rs`).
                    let mut l = p.svc.ladder_bitrates(UNMEASURED_LAYER_BPS);
                    l.truncate(p.svc.index_for(c.sel.quality) + 1);
                    l
                } else if p.layers.is_empty() {
                    vec![if p.rate.bps > 0 {
                        p.rate.bps
                    } else {
                        UNMEASURED_LAYER_BPS
                    }]
                } else {
                    let mut l = p.layers.ranked_bitrates(UNMEASURED_LAYER_BPS);
                    let mut top = p.layers.index_for(c.sel.quality);
                    if let Some(v) = c.view {
                        // Never more than what is displayed (adaptive stream).
                        top = top.min(p.layers.index_for_view((v.width, v.height)));
                    }
                    l.truncate(top + 1);
                    l
                };
                let current = match c.target {
                    Target::Layer(l) => Target::Layer(l.min(layers.len().saturating_sub(1))),
                    Target::Paused => Target::Paused,
                };
                Want {
                    priority,
                    layers,
                    current,
                    hold_until: c.hold_until,
                    short_since: c.short_since,
                }
            };
            keys.push(*key);
            wants.push(want);
        }
        let subscriber = t.participant;
        let loss_based = !self.cfg.bandwidth_estimation;
        let mut resumed: Vec<TrackId> = Vec::new();
        let Some(t) = self.transports.get_mut(&tid) else {
            return;
        };
        let estimate = if loss_based {
            // A cap well above what every consumer's top layer needs is dropped once they
            // all are on it: this link has shown it carries all of it. (Not before: the
            // cap grows while a consumer is held down, which shows nothing.)
            let need = wants.iter().filter_map(|w| w.layers.last()).sum::<u64>() as f64
                / allocator::HEADROOM;
            let all_on_top = wants
                .iter()
                .all(|w| w.current == Target::Layer(w.layers.len().saturating_sub(1)));
            if all_on_top {
                t.loss_estimate.release_above(need as u64);
            }
            t.estimate = t.loss_estimate.estimate();
            t.estimate.unwrap_or(estimate)
        } else {
            estimate
        };
        let alloc = allocator::allocate(estimate, &wants, now);
        if let TransportKind::Subscriber { consumers, .. } = &mut t.kind {
            for (((key, want), target), short) in keys
                .iter()
                .zip(&wants)
                .zip(&alloc.targets)
                .zip(&alloc.short)
            {
                let Some(c) = consumers.get_mut(key) else {
                    continue;
                };
                c.short_since = if *short {
                    c.short_since.or(Some(now))
                } else {
                    None
                };
                if c.kind == MediaKind::Audio || *target == want.current {
                    // Unchanged (a first allocation only records where it starts).
                    if c.target == Target::Layer(usize::MAX) {
                        c.target = *target;
                    }
                    continue;
                }
                let was_paused = c.target == Target::Paused;
                // The first allocation (from "whatever was asked") is a start, not a
                // congestion event: only the short hold, and no pause before the estimate
                // has shown the link cannot carry the lowest layer.
                let first = c.target == Target::Layer(usize::MAX);
                let target = &if first && *target == Target::Paused {
                    Target::Layer(0)
                } else {
                    *target
                };
                let up = allocator::is_up(want.current, *target);
                // (With the loss-based estimate a first allocation is the first sign of
                // congestion: a move down like any other.)
                let hold = if first && !loss_based {
                    allocator::RAMP_HOLD
                } else if up {
                    c.last_up = Some(now);
                    let hold = allocator::hold_after(want.current, *target);
                    if loss_based {
                        t.loss_estimate.probing(now + FAILED_UP_WINDOW_LOSS);
                        hold.max(RAMP_HOLD_LOSS)
                    } else {
                        hold
                    }
                } else {
                    // Down soon after going up: that step did not fit after all (a probe
                    // overestimated). Back off: each such failure doubles the hold.
                    // (Counted once per move up: the steps down that follow are one event.)
                    let window = if loss_based {
                        FAILED_UP_WINDOW_LOSS
                    } else {
                        FAILED_UP_WINDOW
                    };
                    // (A trial undone by its growing queue before anything was lost cost
                    // no picture: it does not lengthen the wait, so a link that frees up
                    // is found again within one hold.)
                    let failed = !loss_based || t.loss_estimate.last_cut_for_loss();
                    match c.last_up.take() {
                        Some(at) if now.saturating_duration_since(at) < window => {
                            c.failed_ups = (c.failed_ups + u32::from(failed)).min(3);
                        }
                        Some(_) => c.failed_ups = 0,
                        None => {}
                    }
                    let hold = if loss_based {
                        UPGRADE_HOLD_LOSS
                    } else {
                        allocator::hold_after(want.current, *target)
                    };
                    hold * (1 << c.failed_ups)
                };
                debug!(
                    %subscriber,
                    mid = %c.mid,
                    estimate_kbps = estimate / 1000,
                    layers_kbps = ?want.layers.iter().map(|b| b / 1000).collect::<Vec<_>>(),
                    from = ?c.target,
                    to = ?target,
                    "allocation changes"
                );
                c.target = *target;
                c.hold_until = Some(now + hold);
                // Down for loss: the link does not carry the layer it is on, so that
                // layer stops at once (`Consumer::decide`), not at the lower one's key
                // frame. (Not with `--bwe`: its delay-based estimate reads the gap as a
                // link that recovered, and a capped listener then never settled.)
                c.hard_down = !up && loss_based && t.loss_estimate.last_cut_for_loss();
                let Some(track) = c.producer else { continue };
                match (was_paused, *target == Target::Paused) {
                    (false, true) => {
                        self.events.push_back(SfuEvent::VideoPaused {
                            participant: subscriber,
                            track,
                        });
                    }
                    (true, false) => {
                        // Start clean: a key frame of the layer it gets now.
                        c.sel.current = None;
                        c.svc.current = None;
                        c.await_keyframe = true;
                        c.rewriter.switch_source();
                        resumed.push(track);
                        self.events.push_back(SfuEvent::VideoResumed {
                            participant: subscriber,
                            track,
                        });
                    }
                    _ => {}
                }
            }
        }
        // Probe towards what the consumers would take next; keep sending at least what
        // they get now (padding fills in when media falls short).
        if !loss_based {
            t.rtc.bwe().set_bitrate(
                Bitrate::bps(alloc.allocated_bps),
                Bitrate::bps(alloc.desired_bps.max(alloc.allocated_bps)),
            );
        }
        for track in resumed {
            self.request_keyframe(track, now);
        }
    }
}

impl ShardCore {
    /// The downlink estimate the allocator spends on `participant`'s subscriber transport
    /// (bits per second): str0m's with `--bwe` once it has one, else the loss-based one once
    /// the subscriber showed congestion (`loss_estimate::UNCAPPED_BPS` after its cap was
    /// dropped again).
    pub fn subscriber_estimate(&self, participant: ParticipantId) -> Option<u64> {
        self.transports
            .values()
            .find(|t| {
                t.participant == participant && matches!(t.kind, TransportKind::Subscriber { .. })
            })
            .and_then(|t| t.estimate)
    }
}
