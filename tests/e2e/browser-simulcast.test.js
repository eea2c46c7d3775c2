// Simulcast: a page publishes its camera as three layers (rids q, h, f); the viewer must
// receive exactly one layer at a time — forwarding every layer into one stream interleaves
// three resolutions — and `setQuality` moves it between layers at a key frame: 'low' gives
// the smallest layer the publisher sends, 'high' the largest, and decoding carries on
// through each switch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { inboundStats, waitFor, waitForVideoFrom } from './lib/stats.js';

const ROOM = 'e2e-simulcast';

// The publisher's sending layers: [{rid, frameWidth, framesSent, bytesSent}], active ones
// only, smallest first.
async function sentLayers(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const pc of window.__pcs || []) {
      if (pc.signalingState === 'closed') continue;
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'outbound-rtp' && r.kind === 'video' && r.rid && r.frameWidth) {
          out.push({ rid: r.rid, frameWidth: r.frameWidth, framesSent: r.framesSent || 0, bytesSent: r.bytesSent || 0 });
        }
      });
    }
    return out.sort((a, b) => a.frameWidth - b.frameWidth);
  });
}

// The viewer's inbound camera stream from `id`, with bytes and frames received.
async function cameraFrom(viewer, id) {
  const s = (await inboundStats(viewer.page)).find((x) => x.participantId === id && x.source === 'camera');
  if (!s) return null;
  const extra = await viewer.page.evaluate(async (mid) => {
    for (const pc of window.__pcs || []) {
      if (pc.signalingState === 'closed') continue;
      for (const tr of pc.getTransceivers()) {
        if (tr.mid !== mid) continue;
        let got = null;
        (await tr.receiver.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') got = { bytesReceived: r.bytesReceived || 0 }; });
        if (got) return got;
      }
    }
    return { bytesReceived: 0 };
  }, s.mid);
  return { ...s, ...extra };
}

// Waits until the viewer decodes `id`'s camera at `width`, then watches 12 more samples
// (every 250 ms): every frame decoded meanwhile has that width, decoding goes on, and the
// viewer receives about as many bytes as the publisher sends on that one layer (all layers
// forwarded at once would be the sum of them).
async function settlesAt(viewer, publisher, id, width, what) {
  await waitFor(async () => (await cameraFrom(viewer, id))?.frameWidth === width,
    { what: `${what}: viewer decodes at width ${width}`, timeoutMs: 30000, progress: () => cameraFrom(viewer, id) });
  const first = await cameraFrom(viewer, id);
  const sentFirst = await sentLayers(publisher.page);
  const widths = new Set();
  let last = first;
  for (let i = 0; i < 12; i++) {
    await new Promise((r) => setTimeout(r, 250));
    last = await cameraFrom(viewer, id);
    widths.add(last.frameWidth);
  }
  const sentLast = await sentLayers(publisher.page);
  assert.deepEqual([...widths], [width], `${what}: one layer only (widths seen ${[...widths]})`);
  assert.ok(last.framesDecoded - first.framesDecoded >= 20, `${what}: decoding goes on (${first.framesDecoded} -> ${last.framesDecoded})`);
  const sent = (w) => {
    const a = sentFirst.find((l) => l.frameWidth === w);
    const b = sentLast.find((l) => l.frameWidth === w);
    return a && b ? b.bytesSent - a.bytesSent : 0;
  };
  const received = last.bytesReceived - first.bytesReceived;
  const layerBytes = sent(width);
  const allBytes = sentLast.reduce((n, l) => n + sent(l.frameWidth), 0);
  assert.ok(layerBytes > 0 && received < layerBytes * 1.5 && received < allBytes * 0.9,
    `${what}: received ${received} B while the layer sent ${layerBytes} B and all layers ${allBytes} B`);
}

test('a simulcast camera reaches the viewer one layer at a time, switched by setQuality', { timeout: 180000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const a = await h.join({ room: ROOM, name: 'Layers', query: { simulcast: 1 } });
    const b = await h.join({ room: ROOM, name: 'Viewer', publish: false });
    await waitForVideoFrom(b, a.id);

    // Chromium sends at least two layers here (the top ones follow its bandwidth estimate).
    const layers = await waitFor(async () => {
      const l = await sentLayers(a.page);
      return l.length >= 2 && l.every((x) => x.framesSent > 10) ? l : null;
    }, { what: 'the publisher to send two or more simulcast layers', timeoutMs: 30000, progress: () => sentLayers(a.page) });
    const widths = layers.map((l) => l.frameWidth);
    t.diagnostic(`layers sent: ${JSON.stringify(layers)}`);
    assert.equal(new Set(widths).size, widths.length, `distinct layer sizes: ${JSON.stringify(layers)}`);

    const setQuality = (q) => b.page.evaluate(([id, quality]) => window.studyroom.setQuality(id, 'camera', quality), [a.id, q]);
    await setQuality('low');
    await settlesAt(b, a, a.id, widths[0], "quality 'low'");
    // 'high': the largest layer flowing now (it may have grown since).
    await setQuality('high');
    const top = await waitFor(async () => {
      const l = await sentLayers(a.page);
      const w = l.length ? l[l.length - 1].frameWidth : 0;
      return (await cameraFrom(b, a.id))?.frameWidth === w ? w : null;
    }, {
      what: "quality 'high': the viewer decodes the largest layer", timeoutMs: 30000,
      progress: async () => ({ viewer: await cameraFrom(b, a.id), sent: await sentLayers(a.page) }),
    });
    assert.ok(top > widths[0], `high (${top}) is larger than low (${widths[0]})`);
    t.diagnostic(`low ${widths[0]} px, high ${top} px`);
    await settlesAt(b, a, a.id, top, "quality 'high'");

    // Bad requests are refused with their codes.
    const bad = await b.page.evaluate(async (id) => {
      const out = [];
      for (const args of [[id, 'camera', 'ultra'], [id, 'nose', 'low'], ['P999999', 'camera', 'low']]) {
        try { await window.studyroom.setQuality(...args); out.push('accepted'); } catch (e) { out.push(e.code); }
      }
      return out;
    }, a.id);
    assert.deepEqual(bad, ['bad_request', 'bad_request', 'unknown_track']);
  });
});
