//! Key-frame requests from subscribers reach the publisher, throttled (see
//! `common/mod.rs` for the simulated peers and network).

mod common;

use std::time::Duration;

use common::{BOTH, Sim};
use sfu::{MediaKind, Source};

#[test]
fn keyframe_requests_are_forwarded_and_throttled() {
    let mut sim = Sim::new(2);
    let a = sim.join(BOTH);
    let subs: Vec<usize> = (0..4).map(|_| sim.join(BOTH)).collect();
    sim.publish(a, &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    sim.stream(a, Some(0), None, Duration::from_millis(500));
    let before = sim.clients[a].keyframe_requests;
    // Four subscribers each ask for a keyframe every 10 ms for 2 s: 800 requests.
    let until = sim.now + Duration::from_secs(2);
    let mut last = sim.now;
    let subs2 = subs.clone();
    sim.run_until(until, |s| {
        if s.now >= last + Duration::from_millis(10) {
            last = s.now;
            for &i in &subs2 {
                s.request_keyframes(i);
            }
        }
    });
    sim.run_for(Duration::from_millis(600));
    let got = sim.clients[a].keyframe_requests - before;
    // 500 ms interval over ~2.6 s: a handful reach the publisher, never hundreds.
    assert!(got >= 3, "keyframe requests reach the publisher ({got})");
    assert!(got <= 7, "keyframe requests are throttled ({got})");
    assert!(sim.cores[0].stats().keyframe_requests_throttled > 50);
}
