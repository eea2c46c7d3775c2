// WebRTC statistics and polling helpers for the e2e tests.
// Why: "media works" is asserted from the browser's own getStats() (frames decoded, packets
// received, NACKs) read from every PC the page made (window.__pcs), and every wait is a poll
// with a deadline that fails with a description of what was last seen — never a bare sleep.

/**
 * Polls `fn` until it returns a truthy value. On timeout throws an error naming `what` and
 * `progress()` (what was last observed), or the last exception `fn` threw.
 */
export async function waitFor(fn, { what, timeoutMs = 20000, intervalMs = 250, progress } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError = null;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      lastError = null;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      const seen = lastError ? `threw: ${lastError.message}` : progress ? describe(await progress()) : 'n/a';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what || 'condition'}; last seen: ${seen}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

function describe(v) {
  if (typeof v === 'string') return v;
  try { return JSON.stringify(v); } catch { return String(v); }
}

/**
 * Every inbound RTP stream on the page's PCs, labelled with the remote participant and
 * source from the app's mid -> track mapping (window.studyroom.remoteByMid).
 */
export async function inboundStats(page) {
  return page.evaluate(async () => {
    const out = [];
    const byMid = (window.studyroom && window.studyroom.remoteByMid) || new Map();
    for (const pc of window.__pcs || []) {
      if (pc.signalingState === 'closed') continue;
      for (const tr of pc.getTransceivers()) {
        if (tr.mid == null || !tr.receiver) continue;
        let report;
        try { report = await tr.receiver.getStats(); } catch { continue; }
        report.forEach((r) => {
          if (r.type !== 'inbound-rtp') return;
          const info = byMid.get(tr.mid) || {};
          out.push({
            mid: tr.mid, kind: r.kind, participantId: info.participantId, trackId: info.trackId, source: info.source,
            framesDecoded: r.framesDecoded || 0, framesReceived: r.framesReceived || 0, framesPerSecond: r.framesPerSecond,
            packetsReceived: r.packetsReceived || 0, packetsLost: r.packetsLost || 0, nackCount: r.nackCount || 0,
            retransmittedPacketsReceived: r.retransmittedPacketsReceived || 0,
            freezeCount: r.freezeCount || 0, totalFreezesDuration: r.totalFreezesDuration || 0,
            keyFramesDecoded: r.keyFramesDecoded || 0, pliCount: r.pliCount || 0, firCount: r.firCount || 0,
            frameWidth: r.frameWidth, frameHeight: r.frameHeight,
          });
        });
      }
    }
    return out;
  });
}

/** Every outbound RTP stream on the page's PCs. */
export async function outboundStats(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const pc of window.__pcs || []) {
      if (pc.signalingState === 'closed') continue;
      const report = await pc.getStats();
      report.forEach((r) => {
        if (r.type !== 'outbound-rtp') return;
        out.push({
          kind: r.kind, mid: r.mid, ssrc: r.ssrc, rid: r.rid, active: r.active, frameWidth: r.frameWidth,
          packetsSent: r.packetsSent || 0, bytesSent: r.bytesSent || 0,
          framesEncoded: r.framesEncoded || 0, framesSent: r.framesSent || 0, nackCount: r.nackCount || 0,
          retransmittedPacketsSent: r.retransmittedPacketsSent || 0,
        });
      });
    }
    return out;
  });
}

/**
 * Waits until `participant`'s page decodes camera video from each of `fromIds` (framesDecoded
 * rising by at least `minFrames` since first seen decoding) and, unless `audio` is false,
 * receives their microphone audio (packetsReceived rising by `minPackets`). Each remote
 * participant must arrive as a distinct track. Returns the last stats.
 */
export async function waitForMediaFrom(participant, fromIds, { audio = true, minFrames = 20, minPackets = 50, timeoutMs = 30000 } = {}) {
  const firstSeen = new Map(); // `${participantId}/${kind}` -> counter when first seen > 0
  let lastSummary = null;
  await waitFor(async () => {
    const stats = await inboundStats(participant.page);
    const summary = {};
    let done = true;
    const trackIds = new Set();
    for (const id of fromIds) {
      const video = stats.find((s) => s.participantId === id && s.kind === 'video' && s.source === 'camera');
      const mic = stats.find((s) => s.participantId === id && s.kind === 'audio');
      const kinds = [['video', video, video && video.framesDecoded, minFrames]];
      if (audio) kinds.push(['audio', mic, mic && mic.packetsReceived, minPackets]);
      for (const [kind, stat, value, needed] of kinds) {
        const key = `${id}/${kind}`;
        if (stat && stat.trackId) trackIds.add(stat.trackId);
        if (!firstSeen.has(key) && value > 0) firstSeen.set(key, value);
        const gained = firstSeen.has(key) ? value - firstSeen.get(key) : 0;
        summary[key] = { value: value ?? null, gained, mid: stat && stat.mid };
        if (gained < needed) done = false;
      }
    }
    const expectedTracks = fromIds.length * (audio ? 2 : 1);
    if (trackIds.size < expectedTracks) done = false;
    lastSummary = { at: participant.name, distinctTracks: trackIds.size, ...summary };
    return done ? stats : null;
  }, { what: `${participant.name} to receive media from ${fromIds.join(', ')}`, timeoutMs, intervalMs: 500,
    progress: () => lastSummary });
  return lastSummary;
}

/** The page's StudyRoom event log entries named `event`, as plain data. */
export async function roomEvents(page, event) {
  return page.evaluate((name) => (window.studyroom ? window.studyroom.eventLog : [])
    .filter((e) => e.event === name).map((e) => JSON.parse(JSON.stringify(e))), event);
}

/**
 * Waits until `participant` decodes `minFrames` more frames of `fromId`'s video from
 * `source` (camera | screen) than when first seen decoding. Returns the last stat.
 */
export async function waitForVideoFrom(participant, fromId, { source = 'camera', minFrames = 20, timeoutMs = 30000 } = {}) {
  let first = null;
  let last = null;
  return waitFor(async () => {
    const stats = await inboundStats(participant.page);
    last = stats.find((s) => s.participantId === fromId && s.kind === 'video' && s.source === source) || null;
    if (!last || last.framesDecoded === 0) return null;
    if (first === null) first = last.framesDecoded;
    return last.framesDecoded - first >= minFrames ? last : null;
  }, { what: `${participant.name} to decode ${source} video of ${fromId}`, timeoutMs, intervalMs: 500,
    progress: () => ({ first, last }) });
}

/**
 * Every stat of every open PC on the page, as plain objects, with the PC's role in the app
 * (`publisher` | `subscriber` | `other`): [{ role, stats: [RTCStats...] }].
 */
export async function pcStats(page) {
  return page.evaluate(async () => {
    const room = window.studyroom || {};
    const out = [];
    for (const pc of window.__pcs || []) {
      if (pc.signalingState === 'closed') continue;
      const role = pc === room.publisherPc ? 'publisher' : pc === room.subscriberPc ? 'subscriber' : 'other';
      const stats = [];
      (await pc.getStats()).forEach((r) => stats.push(JSON.parse(JSON.stringify(r))));
      out.push({ role, stats });
    }
    return out;
  });
}

/**
 * The RTP streams of one PC's stats (from pcStats) with their codec: for each inbound-rtp
 * and outbound-rtp, { type, kind, mid, ssrc, mimeType, sdpFmtpLine, payloadType, stat }.
 */
export function rtpWithCodecs(stats) {
  const byId = new Map(stats.map((s) => [s.id, s]));
  return stats.filter((s) => s.type === 'inbound-rtp' || s.type === 'outbound-rtp').map((s) => {
    const codec = byId.get(s.codecId) || {};
    return { type: s.type, kind: s.kind, mid: s.mid, ssrc: s.ssrc, mimeType: codec.mimeType,
      sdpFmtpLine: codec.sdpFmtpLine, payloadType: codec.payloadType, stat: s };
  });
}
