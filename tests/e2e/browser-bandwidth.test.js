// Default adaptation to a slow downlink (issue 12), in Chromium with a real bottleneck and
// the server's DEFAULT flags (no --bwe: the loss-based estimate, sfu/src/core/loss_estimate.rs).
// A publisher sends its camera as simulcast (Chromium's fake camera: a 160x120 layer of
// ~130 kbit/s and a 320x240 one of ~250 kbit/s), two listeners watch it on the 320 px
// layer, then one listener's downlink is capped at 220 kbit/s (tc htb + a short pfifo on
// its UDP ports, lib/bottleneck.js): the top layer and audio no longer fit, the small
// layer and audio do. Judged with getStats: the capped listener ends on the small layer
// and keeps decoding without new freezes; the open one stays on 320 px.
//
// Robust on a loaded 2-core machine: every wait is a poll with a generous deadline, and
// what is judged is a later stretch of steady behaviour, not how fast it came.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { inboundStats, waitFor } from './lib/stats.js';
import { udpPortsOf } from './lib/blackout.js';
import { cappedRoom, downlinkCap } from './lib/bottleneck.js';

const ROOM = 'e2e-bandwidth-default';
const CAP_KBPS = 220;
// A steady stretch: this long on the small layer, decoding, without a new freeze.
const STEADY_MS = 6000;

async function camera(page, id) {
  return (await inboundStats(page)).find((x) => x.participantId === id && x.source === 'camera') || null;
}

// One stretch of `ms` (sampled every 500 ms): widths seen, frames decoded per second,
// freezes and packets lost in it.
async function stretch(page, id, ms) {
  const a = await camera(page, id);
  const widths = [];
  const start = Date.now();
  while (Date.now() - start < ms) {
    await new Promise((r) => setTimeout(r, 500));
    widths.push((await camera(page, id))?.frameWidth);
  }
  const b = await camera(page, id);
  const seconds = (Date.now() - start) / 1000;
  return {
    widths: [...new Set(widths)],
    fps: (b.framesDecoded - a.framesDecoded) / seconds,
    freezes: b.freezeCount - a.freezeCount,
    lost: b.packetsLost - a.packetsLost,
  };
}

test('by default a listener behind a slow downlink moves to the small layer and keeps decoding; the open one keeps 320 px', { timeout: 150000 }, async (t) => {
  const h = await startHarness(t);
  let cap = null;
  try {
    await h.run(async () => {
      const { a, b, c } = await cappedRoom(h, ROOM);
      const top = await waitFor(async () => {
        const [wb, wc] = [(await camera(b.page, a.id))?.frameWidth, (await camera(c.page, a.id))?.frameWidth];
        return wb && wb === wc && wb >= 320 ? wb : null;
      }, { what: 'both listeners decode the 320 px layer', timeoutMs: 40000,
        progress: async () => [await camera(b.page, a.id), await camera(c.page, a.id)] });

      cap = downlinkCap((await udpPortsOf(b.page)).all, CAP_KBPS);
      const capped = Date.now();
      // Moves down: some sample shows a smaller frame.
      await waitFor(async () => ((await camera(b.page, a.id))?.frameWidth || top) < top || null,
        { what: `the capped listener leaves the ${top} px layer`, timeoutMs: 30000, progress: () => camera(b.page, a.id) });
      const adaptMs = Date.now() - capped;
      // Then settles: a whole stretch on the small layer, decoding, with no new freeze
      // (a stretch spoiled by a step up the link could not carry, or by the switch itself,
      // is followed by another: the wait after a failed step up doubles).
      const stretches = [];
      const steady = await waitFor(async () => {
        const s = await stretch(b.page, a.id, STEADY_MS);
        stretches.push(s);
        return s.widths.length === 1 && s.widths[0] < top && s.fps >= 8 && s.freezes === 0 ? s : null;
      }, { what: 'a steady stretch on the small layer without freezes', timeoutMs: 50000, intervalMs: 0,
        progress: () => stretches });
      const open = await stretch(c.page, a.id, 3000);
      t.diagnostic(`cap ${CAP_KBPS} kbit/s: left the top layer after ${adaptMs} ms; stretches ${JSON.stringify(stretches)}; ` +
        `open listener ${JSON.stringify(open)}; tc ${JSON.stringify(cap.counters())}`);
      assert.ok(steady.widths[0] < top, 'the capped listener is on the small layer');
      assert.deepEqual(open.widths, [top], 'the open listener stays on the top layer');
      assert.ok(open.fps >= 8, `the open listener keeps decoding (${open.fps.toFixed(1)} frames/s)`);
      const events = await b.page.evaluate(() => (window.studyroom?.eventLog || []).map((e) => e.event));
      assert.ok(!events.includes('videoPaused'), 'the small layer fits: no pause');
    });
  } finally {
    if (cap) cap.lift();
  }
});
