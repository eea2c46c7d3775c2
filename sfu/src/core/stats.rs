//! Counters and counts of one shard: monotonic counters the driver publishes for
//! metrics, and live object counts that prove everything is freed.

/// Counters (monotonic) of one shard.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardStats {
    /// Datagrams received on the media ports.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written to subscribers.
    pub rtp_forwarded: u64,
    /// Datagrams no transport claimed.
    pub unroutable: u64,
    /// Datagrams a transport rejected (malformed, wrong state).
    pub rejected: u64,
    /// Keyframe requests forwarded to publishers.
    pub keyframe_requests: u64,
    /// Keyframe requests swallowed by throttling.
    pub keyframe_requests_throttled: u64,
    /// Datagrams dropped by test impairment.
    pub impaired_drops: u64,
    /// ICE restarts (a transport got new local credentials).
    pub ice_restarts: u64,
    /// Bytes received on the media ports.
    pub bytes_in: u64,
    /// Bytes handed to the sockets.
    pub bytes_out: u64,
    /// NACKs received from subscribers (answered from the retransmission caches).
    pub nacks_received: u64,
    /// Datagrams the socket refused (send buffer full): set by the driver.
    pub send_drops: u64,
    /// Packets handed to other shards of a spanning room (one per packet and shard).
    pub relayed_out: u64,
    /// Packets received from other shards and fanned out here.
    pub relayed_in: u64,
    /// Packets from other shards for a producer this shard no longer mirrors.
    pub relayed_dropped: u64,
    /// Forwarding latency (datagram read to its fan-out handed to the kernel), packets per
    /// bucket of [`LATENCY_BUCKETS_US`] (the last bucket is +Inf): set by the driver.
    pub latency_buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of the latencies above, in microseconds.
    pub latency_sum_us: u64,
}

/// Upper bounds (µs) of the forwarding-latency histogram buckets.
pub const LATENCY_BUCKETS_US: [u64; 10] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

impl ShardStats {
    /// Add another shard's counters to these.
    pub fn add(&mut self, x: &ShardStats) {
        self.datagrams_in += x.datagrams_in;
        self.datagrams_out += x.datagrams_out;
        self.rtp_in += x.rtp_in;
        self.rtp_forwarded += x.rtp_forwarded;
        self.unroutable += x.unroutable;
        self.rejected += x.rejected;
        self.keyframe_requests += x.keyframe_requests;
        self.keyframe_requests_throttled += x.keyframe_requests_throttled;
        self.impaired_drops += x.impaired_drops;
        self.ice_restarts += x.ice_restarts;
        self.bytes_in += x.bytes_in;
        self.bytes_out += x.bytes_out;
        self.nacks_received += x.nacks_received;
        self.send_drops += x.send_drops;
        self.relayed_out += x.relayed_out;
        self.relayed_in += x.relayed_in;
        self.relayed_dropped += x.relayed_dropped;
        for (a, b) in self
            .latency_buckets
            .iter_mut()
            .zip(x.latency_buckets.iter())
        {
            *a += b;
        }
        self.latency_sum_us += x.latency_sum_us;
    }

    /// Record `packets` forwarded with latency `us`.
    pub fn observe_latency(&mut self, us: u64, packets: u64) {
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[i] += packets;
        self.latency_sum_us += us * packets;
    }
}

/// Live object counts; all zero when the shard is idle.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Rooms.
    pub rooms: usize,
    /// Participants.
    pub participants: usize,
    /// Transports (str0m instances).
    pub transports: usize,
    /// Producers.
    pub producers: usize,
    /// Consumers.
    pub consumers: usize,
    /// Routing-index entries (addresses + ufrags).
    pub routes: usize,
    /// Pending timers.
    pub timers: usize,
}
