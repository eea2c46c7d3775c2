//! `Sfu::join` through the real driver (shard thread, command channel): it admits and posts
//! without waiting for the shard, so the room-size limit is decided at admission, and a
//! call made right after a posted join must find the participant (it queues behind the
//! join on the same shard).

use sfu::{Grants, ParticipantId, Sfu, SfuConfig, SfuError};

const BOTH: Grants = Grants {
    publish: true,
    subscribe: true,
    proctor: false,
};

#[test]
fn posted_joins_are_admitted_by_room_size_and_never_overtaken() {
    let cfg = SfuConfig {
        // A small range of our own: other tests and servers on this host use 40000-40100.
        port_min: 47_611,
        port_max: 47_612,
        shards: 2,
        max_participants_per_room: 2,
        ..SfuConfig::default()
    };
    let (sfu, _events) = Sfu::start(cfg).expect("media ports free");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        sfu.join(ParticipantId(1), "r", BOTH, 0.0).unwrap();
        sfu.join(ParticipantId(2), "r", BOTH, 0.0).unwrap();
        // The third is refused at once, before the shard has run either join.
        assert!(matches!(
            sfu.join(ParticipantId(3), "r", BOTH, 0.0),
            Err(SfuError::RoomFull)
        ));
        // Another room has its own count.
        sfu.join(ParticipantId(4), "other", BOTH, 0.0).unwrap();
        // Posted, not awaited: leave is the very next call and must find 1 joined.
        sfu.leave(ParticipantId(1)).await.unwrap();
        // Its place is free again.
        sfu.join(ParticipantId(3), "r", BOTH, 0.0).unwrap();
        let c = sfu.counts().await;
        assert_eq!(c.participants, 3);
        assert_eq!(c.rooms, 2);
        // Each subscriber got its transport.
        assert_eq!(c.transports, 3);
    });
    sfu.shutdown();
}
