//! The stream allocator: one subscriber transport's bandwidth estimate (str0m's send-side
//! estimator, fed by the browser's transport-cc feedback, with probing) spent on its
//! consumers in priority order.
//!
//! Order: audio first (never paused), then screen shares, then the active speakers'
//! cameras, then the other cameras. Each video gets the highest layer that fits what is
//! left (at most the layer the subscriber asked for with `setQuality`); a video whose
//! lowest layer does not fit is **paused** (audio keeps flowing) and resumed when it fits.
//!
//! Hysteresis, so a steady link does not see layers flap: a consumer goes down at once
//! when what it receives no longer fits (congestion must be relieved now), but up only one
//! step at a time, only once the estimate covers the next step (str0m probes towards the
//! `desired` rate we set, so a rising estimate is a probe that showed the room), and only
//! [`UPGRADE_HOLD`] after it last went down. A climb (up after up, as a new subscriber's
//! estimate ramps) waits [`RAMP_HOLD`] between steps: a link that just showed room for
//! the next layer is not the congested one the long hold protects against. On a steady
//! link a consumer therefore changes at most once per [`UPGRADE_HOLD`] (down, then held).
//!
//! This module is the decision alone (pure: inputs in, targets out); `decide` in
//! `consumer.rs` applies a target per packet, the core wires both (`ShardCore::allocate`).

use std::time::{Duration, Instant};

/// A consumer's allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// No video (below the lowest layer).
    Paused,
    /// Layer index into the producer's ranked layers, lowest first (0 for a video
    /// without simulcast).
    Layer(usize),
}

/// After a consumer went down (or paused), how long before it may go up again.
pub const UPGRADE_HOLD: Duration = Duration::from_secs(5);
/// After a consumer went up, how long before its next step up.
pub const RAMP_HOLD: Duration = Duration::from_secs(1);
/// A video is paused only when its lowest layer has not fit for this long: one low
/// estimate (a burst of jitter read as congestion) moves layers, it does not stop video.
pub const PAUSE_AFTER: Duration = Duration::from_secs(2);
/// Going up needs the next layer to fit with this margin, so a layer that only just fits
/// is not taken, congested and left again.
pub const UP_MARGIN: f64 = 1.2;

/// Whether `from` -> `to` is a move up (a resume included).
pub fn is_up(from: Target, to: Target) -> bool {
    rank(to) > rank(from)
}

/// How long after moving `from` -> `to` the consumer may not go up.
pub fn hold_after(from: Target, to: Target) -> Duration {
    if rank(to) < rank(from) {
        UPGRADE_HOLD
    } else {
        RAMP_HOLD
    }
}
/// Share of the estimate the allocator spends (the rest absorbs RTX, RTCP and estimate
/// noise).
pub const HEADROOM: f64 = 0.9;
/// What an audio consumer is reserved when its producer's rate is not known yet.
pub const AUDIO_RESERVE_BPS: u64 = 48_000;
/// What a video layer is reserved before its bitrate was measured.
pub const UNMEASURED_LAYER_BPS: u64 = 150_000;

/// Priority classes, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Audio: always allocated.
    Audio = 0,
    /// Screen shares.
    Screen = 1,
    /// An active speaker's (or pinned) camera.
    Speaker = 2,
    /// Other cameras.
    Camera = 3,
}

/// One consumer as the allocator sees it.
#[derive(Debug, Clone)]
pub struct Want {
    /// Priority class.
    pub priority: Priority,
    /// Bitrate of each layer it may get, lowest first, already capped by what the
    /// subscriber asked for (one entry for a video without simulcast or for audio).
    pub layers: Vec<u64>,
    /// What it gets now.
    pub current: Target,
    /// No move up before this (see [`hold_after`]; None: free to move).
    pub hold_until: Option<Instant>,
    /// Since when its lowest layer has not fit (None: it fits).
    pub short_since: Option<Instant>,
}

/// The allocation of one transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// A target per want, in the order given.
    pub targets: Vec<Target>,
    /// Per want: its lowest layer does not fit now (feed back as `short_since`).
    pub short: Vec<bool>,
    /// What the transport would like to send: every video one step above its target
    /// (the rate to probe for).
    pub desired_bps: u64,
    /// What the targets add up to.
    pub allocated_bps: u64,
}

/// Spend `estimate_bps` on `wants` (see the module docs).
pub fn allocate(estimate_bps: u64, wants: &[Want], now: Instant) -> Allocation {
    let mut budget = (estimate_bps as f64 * HEADROOM) as u64;
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|i| (wants[*i].priority, *i));
    let mut targets = vec![Target::Paused; wants.len()];
    let mut short = vec![false; wants.len()];
    let mut desired = 0u64;
    let mut allocated = 0u64;
    for i in order {
        let w = &wants[i];
        if w.layers.is_empty() {
            continue;
        }
        if w.priority == Priority::Audio {
            let need = w.layers[0];
            budget = budget.saturating_sub(need);
            targets[i] = Target::Layer(0);
            desired += need;
            allocated += need;
            continue;
        }
        // The highest layer that fits what is left.
        let fits = w.layers.iter().rposition(|b| *b <= budget);
        short[i] = fits.is_none();
        let mut t = match fits {
            Some(l) => Target::Layer(l),
            None => Target::Paused,
        };
        // Up: only what fits with the margin, one step at a time, and not while held.
        if rank(t) > rank(w.current) {
            let with_margin = w
                .layers
                .iter()
                .rposition(|b| (*b as f64 * UP_MARGIN) as u64 <= budget)
                .map_or(Target::Paused, Target::Layer);
            let held = w.hold_until.is_some_and(|until| now < until);
            t = if held || rank(with_margin) <= rank(w.current) {
                w.current
            } else {
                step_up(w.current)
            };
        }
        // Pause only on sustained evidence: until then the lowest layer.
        if t == Target::Paused && w.current != Target::Paused {
            let sustained = w
                .short_since
                .is_some_and(|since| now.saturating_duration_since(since) >= PAUSE_AFTER);
            if !sustained {
                t = Target::Layer(0);
            }
        }
        let need = match t {
            Target::Paused => 0,
            Target::Layer(l) => w.layers[l.min(w.layers.len() - 1)],
        };
        budget = budget.saturating_sub(need);
        allocated += need;
        let next = match step_up(t) {
            Target::Layer(l) if l < w.layers.len() => w.layers[l],
            _ => need,
        };
        desired += next.max(need);
        targets[i] = t;
    }
    Allocation {
        targets,
        short,
        desired_bps: desired,
        allocated_bps: allocated,
    }
}

fn rank(t: Target) -> i64 {
    match t {
        Target::Paused => -1,
        Target::Layer(l) => l as i64,
    }
}

fn step_up(t: Target) -> Target {
    match t {
        Target::Paused => Target::Layer(0),
        Target::Layer(l) => Target::Layer(l + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(priority: Priority, layers: &[u64], current: Target) -> Want {
        Want {
            priority,
            layers: layers.to_vec(),
            current,
            hold_until: None,
            short_since: None,
        }
    }

    fn audio() -> Want {
        video(Priority::Audio, &[40_000], Target::Layer(0))
    }

    const SIM: [u64; 3] = [150_000, 500_000, 1_500_000];

    #[test]
    fn a_big_estimate_gives_every_video_its_top_layer_one_step_at_a_time() {
        let now = Instant::now();
        let mut wants = vec![audio(), video(Priority::Camera, &SIM, Target::Layer(0))];
        let a = allocate(10_000_000, &wants, now);
        assert_eq!(a.targets[1], Target::Layer(1), "one step up");
        wants[1].current = Target::Layer(1);
        wants[1].hold_until = Some(now + hold_after(Target::Layer(0), Target::Layer(1)));
        let a = allocate(10_000_000, &wants, now + RAMP_HOLD / 2);
        assert_eq!(a.targets[1], Target::Layer(1), "held within RAMP_HOLD");
        let a = allocate(10_000_000, &wants, now + RAMP_HOLD);
        assert_eq!(a.targets[1], Target::Layer(2));
    }

    #[test]
    fn after_going_down_a_consumer_waits_the_long_hold_before_going_up() {
        let now = Instant::now();
        let mut wants = vec![audio(), video(Priority::Camera, &SIM, Target::Layer(2))];
        let a = allocate(700_000, &wants, now);
        assert_eq!(a.targets[1], Target::Layer(1));
        wants[1].current = Target::Layer(1);
        wants[1].hold_until = Some(now + hold_after(Target::Layer(2), Target::Layer(1)));
        // The link frees up at once: still held (no flapping on a steady link).
        for s in 1..5 {
            let at = now + Duration::from_secs(s);
            assert_eq!(
                allocate(10_000_000, &wants, at).targets[1],
                Target::Layer(1)
            );
        }
        assert_eq!(
            allocate(10_000_000, &wants, now + UPGRADE_HOLD).targets[1],
            Target::Layer(2)
        );
    }

    #[test]
    fn down_at_once_to_what_fits_and_pause_below_the_lowest_layer() {
        let now = Instant::now();
        let mut wants = vec![audio(), video(Priority::Camera, &SIM, Target::Layer(2))];
        wants[1].hold_until = Some(now + UPGRADE_HOLD);
        // 300 kbit/s: 270 spendable, 40 for audio: the 150 k layer fits.
        let a = allocate(300_000, &wants, now);
        assert_eq!(a.targets, vec![Target::Layer(0), Target::Layer(0)]);
        // 100 kbit/s: the lowest layer does not fit; kept until that has lasted PAUSE_AFTER,
        // then audio only.
        let a = allocate(100_000, &wants, now);
        assert_eq!(a.targets, vec![Target::Layer(0), Target::Layer(0)]);
        assert!(a.short[1]);
        wants[1].short_since = Some(now);
        let a = allocate(100_000, &wants, now + PAUSE_AFTER / 2);
        assert_eq!(a.targets[1], Target::Layer(0));
        let later = now + PAUSE_AFTER;
        let a = allocate(100_000, &wants, later);
        assert_eq!(a.targets, vec![Target::Layer(0), Target::Paused]);
        assert!(a.allocated_bps <= 90_000);
        // The paused video asks to probe for its lowest layer.
        assert!(a.desired_bps >= 40_000 + 150_000);
    }

    #[test]
    fn audio_is_never_paused_and_screens_come_before_cameras() {
        let start = Instant::now();
        let mut wants = vec![
            video(Priority::Camera, &SIM, Target::Layer(0)),
            video(Priority::Screen, &[400_000], Target::Layer(0)),
            audio(),
            video(Priority::Speaker, &SIM, Target::Layer(0)),
        ];
        // Short of bandwidth for a while (pauses need sustained evidence).
        for w in &mut wants {
            w.short_since = Some(start);
        }
        let now = start + PAUSE_AFTER;
        // 700 kbit/s: 630 spendable; audio 40, screen 400, speaker 150, camera: 40 left.
        let a = allocate(700_000, &wants, now);
        assert_eq!(a.targets[2], Target::Layer(0), "audio");
        assert_eq!(a.targets[1], Target::Layer(0), "screen");
        assert_eq!(a.targets[3], Target::Layer(0), "speaker");
        assert_eq!(a.targets[0], Target::Paused, "the other camera waits");
        // Nothing at all: audio still flows.
        let a = allocate(0, &wants, now);
        assert_eq!(a.targets[2], Target::Layer(0));
        assert_eq!(a.targets[1], Target::Paused);
    }

    #[test]
    fn a_paused_video_resumes_on_its_lowest_layer_when_it_fits() {
        let now = Instant::now();
        let mut wants = vec![audio(), video(Priority::Camera, &SIM, Target::Paused)];
        wants[1].hold_until = Some(now + UPGRADE_HOLD);
        let later = now + UPGRADE_HOLD;
        assert_eq!(allocate(200_000, &wants, later).targets[1], Target::Paused);
        assert_eq!(
            allocate(250_000, &wants, later).targets[1],
            Target::Layer(0)
        );
    }
}
