// Adaptive stream and dynacast (issue 12, parts 3 and 4), in Chromium, bandwidth estimation
// off (the default): the client library reports how each remote video is displayed
// (`trackView`) and the server (a) sends nothing of a video nobody sees — the tile hidden —
// while its audio goes on, and sends it again at once when the tile shows; (b) tells a
// simulcast publisher to stop encoding the layer no viewer needs (every viewer shows it in a
// small tile: the 160x120 layer fills it) and to start it again when a viewer enlarges its
// tile — and that viewer decodes it on (a restarted VP8 layer's picture IDs lag the other
// layer's: the server re-bases them, else the viewer stalled after the key frame). Judged
// from getStats: the viewer's inbound-rtp bytesReceived and framesDecoded per track, the
// publisher's outbound-rtp per rid (`active`, bytesSent, framesSent). The dynacast case runs
// twice: on one media shard, and in a room spread over two (the viewer who enlarges its
// tile on the shard that does not host the publisher).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { inboundStats, outboundStats, roomEvents, waitFor, waitForVideoFrom } from './lib/stats.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Bytes received by `viewer` of `fromId`'s camera video and microphone audio.
async function received(viewer, fromId) {
  const s = await inboundStats(viewer.page);
  const video = s.find((x) => x.participantId === fromId && x.kind === 'video' && x.source === 'camera');
  const audio = s.find((x) => x.participantId === fromId && x.kind === 'audio');
  const bytes = (mid) => viewer.page.evaluate(async (m) => {
    for (const pc of window.__pcs || []) {
      if (pc.signalingState === 'closed') continue;
      for (const tr of pc.getTransceivers()) {
        if (tr.mid !== m) continue;
        let n = null;
        (await tr.receiver.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') n = r.bytesReceived || 0; });
        if (n !== null) return n;
      }
    }
    return 0;
  }, mid);
  return {
    video: video ? await bytes(video.mid) : 0,
    audio: audio ? await bytes(audio.mid) : 0,
    framesDecoded: video ? video.framesDecoded : 0,
  };
}

// Sets an inline style on the viewer's tile video of `fromId`'s camera.
function styleTile(viewer, fromId, style) {
  return viewer.page.evaluate(([id, css]) => {
    const el = document.querySelector(`.tile[data-participant-id="${id}"] video.camera`);
    if (!el) throw new Error(`no camera tile of ${id}`);
    el.style.cssText = css;
  }, [fromId, style]);
}

// The publisher's simulcast video layers: [{rid, active, bytesSent}] by rid.
async function layers(publisher) {
  const out = {};
  for (const s of await outboundStats(publisher.page)) {
    if (s.kind === 'video' && s.rid) out[s.rid] = { active: s.active, bytesSent: s.bytesSent, framesSent: s.framesSent, frameWidth: s.frameWidth };
  }
  return out;
}

test('a hidden tile receives no video while its audio goes on, and video again when shown', { timeout: 90000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const a = await h.join({ room: 'e2e-adaptive-hide', name: 'Shown' });
    const b = await h.join({ room: 'e2e-adaptive-hide', name: 'Watcher', publish: false });
    await waitForVideoFrom(b, a.id);

    await styleTile(b, a.id, 'display: none');
    const hiddenAt = Date.now();
    // Stopped: no video byte over a second, once what was in flight has arrived.
    const quiet = await waitFor(async () => {
      const x = await received(b, a.id);
      await sleep(1000);
      const y = await received(b, a.id);
      return y.video === x.video ? [x, y] : null;
    }, { what: 'video bytes to stop for the hidden tile', timeoutMs: 10000, intervalMs: 100, progress: () => received(b, a.id) });
    t.diagnostic(`video stopped within ${Date.now() - hiddenAt} ms of hiding the tile`);
    // ... and stays stopped while the audio flows.
    await sleep(2000);
    const later = await received(b, a.id);
    assert.equal(later.video, quiet[1].video, 'no video bytes for a hidden tile');
    assert.ok(later.audio - quiet[0].audio > 20000 * 3 / 8, `audio goes on (${quiet[0].audio} -> ${later.audio} B in 3 s)`);
    assert.deepEqual(await roomEvents(b.page, 'videoPaused'), [], 'no videoPaused: the client hid it');

    // Shown again: decoding resumes at once (a key frame was asked for).
    await styleTile(b, a.id, '');
    const shownAt = Date.now();
    await waitFor(async () => (await received(b, a.id)).framesDecoded > later.framesDecoded + 5,
      { what: 'the video to be decoded again once shown', timeoutMs: 5000, intervalMs: 100, progress: () => received(b, a.id) });
    t.diagnostic(`video decoded again ${Date.now() - shownAt} ms after showing the tile`);
  });
});

// The dynacast scenario: publisher a, viewers b and c in small tiles; then `enlarger`
// ('b' or 'c') enlarges its tile. `serverArgs` may spread the room over the media shards.
async function dynacast(t, { room, serverArgs = [], enlarger = 'c' }) {
  const h = await startHarness(t, { serverArgs });
  await h.run(async () => {
    const a = await h.join({ room, name: 'Layers', query: { simulcast: 1, codec: 'VP8' } });
    const b = await h.join({ room, name: 'Small1', publish: false });
    const c = await h.join({ room, name: 'Small2', publish: false });
    // Both viewers show the camera in a small tile (120x68 CSS px: the 160x120 layer fills it).
    for (const v of [b, c]) await styleTile(v, a.id, 'width: 120px');
    await waitForVideoFrom(b, a.id);
    // The publisher sends the 320x240 layer, or did: Chromium's 640x480 fake camera sends
    // two layers, q and h.
    await waitFor(async () => (await layers(a)).h?.bytesSent > 0,
      { what: 'the publisher to send its h layer', timeoutMs: 20000, progress: () => layers(a) });

    // Nobody needs h: it is turned off (after the server's 2.5 s debounce) and stops.
    const offAt = Date.now();
    const stopped = await waitFor(async () => {
      const x = await layers(a);
      if (x.h.active !== false) return null;
      await sleep(1000);
      const y = await layers(a);
      return y.h.bytesSent === x.h.bytesSent && y.q.bytesSent > x.q.bytesSent ? y : null;
    }, { what: 'the h layer to be turned off and stop', timeoutMs: 20000, progress: () => layers(a) });
    t.diagnostic(`h off and silent ${Date.now() - offAt} ms after the viewers went small: ${JSON.stringify(stopped)}`);
    const told = await roomEvents(a.page, 'publisherLayers');
    assert.ok(told.some((e) => JSON.stringify(e.args || e).includes('"rid":"h","active":false')),
      `publisherLayers told the publisher: ${JSON.stringify(told)}`);

    // A viewer enlarges its tile (1000 px wide: more than any layer): h is back at once.
    const big = enlarger === 'b' ? b : c;
    await styleTile(big, a.id, 'width: 1000px');
    const onAt = Date.now();
    await waitFor(async () => {
      const x = await layers(a);
      return x.h.active !== false && x.h.bytesSent > stopped.h.bytesSent + 10000 ? x : null;
    }, { what: 'the h layer to be sent again', timeoutMs: 10000, intervalMs: 100, progress: () => layers(a) });
    t.diagnostic(`h sent again ${Date.now() - onAt} ms after a viewer enlarged its tile`);
    // And that viewer gets it, and keeps getting it.
    const camera = async (v) => (await inboundStats(v.page)).find((x) => x.participantId === a.id && x.kind === 'video');
    const first = await waitFor(async () => {
      const s = await camera(big);
      return s && s.frameWidth === 320 ? s : null;
    }, { what: 'the enlarged viewer to decode the 320 px layer', timeoutMs: 10000, progress: () => camera(big) });
    const sentBefore = await layers(a);
    await sleep(3000);
    const [last, sentAfter] = [await camera(big), await layers(a)];
    t.diagnostic(`over 3 s: h frames sent ${sentAfter.h.framesSent - sentBefore.h.framesSent}, decoded by the enlarged viewer ${last.framesDecoded - first.framesDecoded} at ${last.frameWidth} px`);
    assert.equal(last.frameWidth, 320);
    assert.ok(last.framesDecoded - first.framesDecoded >= 30, `the enlarged viewer decodes on (${first.framesDecoded} -> ${last.framesDecoded} in 3 s)`);
    if (serverArgs.includes('--shards')) {
      // The video crossed between the shards, or the room never spanned.
      const text = await (await fetch('http://127.0.0.1:9100/metrics')).text();
      const line = text.split('\n').find((l) => l.startsWith('studyroom_relayed_packets_in_total '));
      assert.ok(line && Number(line.split(' ')[1]) > 0, `packets were relayed between the shards: ${line}`);
    }
  });
}

test('a simulcast layer no viewer needs is no longer encoded, and again when a viewer enlarges its tile', { timeout: 90000 }, async (t) => {
  await dynacast(t, { room: 'e2e-dynacast' });
});

// The same in a room spread over both media shards (--room-span-after 1): the publisher
// and c on the room's home shard, b on the other, whose subscribers' wants cross to the
// publisher's shard (ARCHITECTURE.md "Adaptive stream and dynacast"). b enlarges its tile.
test('dynacast in a room spanning both media shards: the other shard\'s viewer counts', { timeout: 90000 }, async (t) => {
  await dynacast(t, { room: 'e2e-dynacast-span', serverArgs: ['--shards', '2', '--room-span-after', '1'], enlarger: 'b' });
});

// H.264 simulcast (issue 12, adaptive stream): the server reads each layer's size from the
// SPS Chromium sends with every key frame (sfu/src/core/frame_size.rs). The 640x480 fake
// camera sends 160x120 and 320x240 layers; a 300 px wide tile needs the 320x240 one. Had the
// sizes been guessed (the top layer taken as 1280x720, halving below), the 160x120 layer
// would have been taken as 640x360, "filling" the tile, and the viewer would get 160 px.
test('H.264 simulcast: a tile gets the layer that fills it, by the sizes in the SPS', { timeout: 90000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const a = await h.join({ room: 'e2e-adaptive-h264', name: 'H264', query: { simulcast: 1, codec: 'H264' } });
    const b = await h.join({ room: 'e2e-adaptive-h264', name: 'Viewer', publish: false });
    await styleTile(b, a.id, 'width: 300px');
    await waitForVideoFrom(b, a.id);
    const camera = async () => (await inboundStats(b.page)).find((x) => x.participantId === a.id && x.kind === 'video');
    const first = await waitFor(async () => {
      const s = await camera();
      return s && s.frameWidth === 320 ? s : null;
    }, { what: 'the 300 px tile to decode the 320 px layer', timeoutMs: 20000, progress: async () => ({ viewer: await camera(), layers: await layers(a) }) });
    await sleep(3000);
    const last = await camera();
    t.diagnostic(`300 px tile: ${last.frameWidth} px, ${last.framesDecoded - first.framesDecoded} frames decoded in 3 s; publisher ${JSON.stringify(await layers(a))}`);
    assert.equal(last.frameWidth, 320, 'the tile stays on the layer that fills it');
    assert.ok(last.framesDecoded - first.framesDecoded >= 30, `it decodes on (${first.framesDecoded} -> ${last.framesDecoded} in 3 s)`);
  });
});
