//! Participants come and go (see `common/mod.rs` for the simulated peers and network):
//! every leave frees all state, and a peer that vanishes is removed by the consent timeout.

mod common;

use std::time::Duration;

use common::{BOTH, Sim};
use sfu::core::{Counts, RemovalReason};
use sfu::{MediaKind, Source};

#[test]
fn many_joins_and_leaves_free_everything() {
    let mut sim = Sim::new(7);
    for round in 0..5 {
        let ids: Vec<usize> = (0..6).map(|_| sim.join(BOTH)).collect();
        for &i in &ids[..3] {
            sim.publish(
                i,
                &[
                    (MediaKind::Video, Source::Camera),
                    (MediaKind::Audio, Source::Microphone),
                ],
            );
        }
        sim.connect_all();
        sim.stream(ids[0], Some(0), Some(1), Duration::from_millis(300));
        let c = sim.cores[0].counts();
        assert_eq!(c.participants, 6);
        assert_eq!(c.producers, 6);
        // Publishers consume the 2 other publishers' 2 tracks; the rest all 3 publishers'.
        assert_eq!(
            c.consumers,
            3 * 4 + 3 * 6,
            "each subscriber consumes the others' tracks"
        );
        // Leave in a scrambled order.
        for k in [3usize, 0, 5, 1, 4, 2] {
            let i = ids[k];
            sim.cores[0].leave(sim.clients[i].id).expect("leave");
            sim.clients[i].silent = true;
            sim.run_for(Duration::from_millis(10));
        }
        sim.run_for(Duration::from_millis(50));
        assert_eq!(
            sim.cores[0].counts(),
            Counts::default(),
            "round {round}: all state freed"
        );
    }
}

#[test]
fn abrupt_disconnect_is_noticed_by_consent_timeout() {
    let mut sim = Sim::new(8);
    let a = sim.join(BOTH);
    let b = sim.join(BOTH);
    sim.publish(a, &[(MediaKind::Video, Source::Camera)]);
    sim.connect_all();
    sim.stream(a, Some(0), None, Duration::from_millis(500));
    // b vanishes without a word.
    sim.clients[b].silent = true;
    sim.events.clear();
    sim.run_for(Duration::from_secs(40));
    assert_eq!(
        sim.removals(),
        vec![(sim.clients[b].id, RemovalReason::ConsentTimeout)]
    );
    let c = sim.cores[0].counts();
    assert_eq!(c.participants, 1);
    assert_eq!(c.consumers, 0);
    assert_eq!(
        c.transports, 2,
        "a's publisher and subscriber transports remain"
    );
}
