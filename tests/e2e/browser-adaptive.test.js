// Adaptive stream and dynacast (issue 12, parts 3 and 4), in Chromium, bandwidth estimation
// off (the default): the client library reports how each remote video is displayed
// (`trackView`) and the server (a) sends nothing of a video nobody sees — the tile hidden —
// while its audio goes on, and sends it again at once when the tile shows; (b) tells a
// simulcast publisher to stop encoding the layer no viewer needs (every viewer shows it in a
// small tile: the 160x120 layer fills it) and to start it again when a viewer enlarges its
// tile — and that viewer decodes it on (a restarted VP8 layer's picture IDs lag the other
// layer's: the server re-bases them, else the viewer stalled after the key frame). Judged
// from getStats: the viewer's inbound-rtp bytesReceived and framesDecoded per track, the
// publisher's outbound-rtp per rid (`active`, bytesSent, framesSent).
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

test('a simulcast layer no viewer needs is no longer encoded, and again when a viewer enlarges its tile', { timeout: 90000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const a = await h.join({ room: 'e2e-dynacast', name: 'Layers', query: { simulcast: 1, codec: 'VP8' } });
    const b = await h.join({ room: 'e2e-dynacast', name: 'Small1', publish: false });
    const c = await h.join({ room: 'e2e-dynacast', name: 'Small2', publish: false });
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
    await styleTile(c, a.id, 'width: 1000px');
    const onAt = Date.now();
    await waitFor(async () => {
      const x = await layers(a);
      return x.h.active !== false && x.h.bytesSent > stopped.h.bytesSent + 10000 ? x : null;
    }, { what: 'the h layer to be sent again', timeoutMs: 10000, intervalMs: 100, progress: () => layers(a) });
    t.diagnostic(`h sent again ${Date.now() - onAt} ms after a viewer enlarged its tile`);
    // And that viewer gets it, and keeps getting it.
    const camera = async (v) => (await inboundStats(v.page)).find((x) => x.participantId === a.id && x.kind === 'video');
    const first = await waitFor(async () => {
      const s = await camera(c);
      return s && s.frameWidth === 320 ? s : null;
    }, { what: 'the enlarged viewer to decode the 320 px layer', timeoutMs: 10000, progress: () => camera(c) });
    const sentBefore = await layers(a);
    await sleep(3000);
    const [last, sentAfter] = [await camera(c), await layers(a)];
    t.diagnostic(`over 3 s: h frames sent ${sentAfter.h.framesSent - sentBefore.h.framesSent}, decoded by the enlarged viewer ${last.framesDecoded - first.framesDecoded} at ${last.frameWidth} px`);
    assert.equal(last.frameWidth, 320);
    assert.ok(last.framesDecoded - first.framesDecoded >= 30, `the enlarged viewer decodes on (${first.framesDecoded} -> ${last.framesDecoded} in 3 s)`);
  });
});
