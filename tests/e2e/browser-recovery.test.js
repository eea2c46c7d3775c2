// Issue 11, points 2 and 3, measured: the video gaps users see when one learner of three
// (each its own browser context, small Y4M camera) reloads its page, loses its network for
// 10 s, or switches networks. Three rounds of each; the figures go to BENCHMARKS.md
// ("Departures and recovery (issue 11)") from the `recovery figures:` JSON line.
// - reload: the others' last frame of the old page to their first frame of the new one;
// - 10 s network loss (tc blackout of the learner's UDP, lib/blackout.js): from the network's
//   return to the first frame decoded again, both ways (the client restarts ICE);
// - network switch: the learner's current UDP sockets stop working at the same moment as the
//   client restarts ICE (`restartIce()`, new candidates on new ports: a new address/port for
//   the server); the longest gap either way. Must stay under 1 s (issue 11, point 3).
// Server flags: --no-turn (the blackout is UDP only; no relay may bypass it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { waitFor, waitForMediaFrom } from './lib/stats.js';
import { gapMonitor, resetGaps, gapReport, gapEpisodes } from './lib/gaps.js';
import { smallCameraFile, fakeCameraArgs } from './lib/fakecam.js';
import { udpPortsOf, startBlackout, blockPorts, clearTc, assertInTestNamespace } from './lib/blackout.js';

const ROOM = 'e2e-recovery';
const ROUNDS = 3;
const OUTAGE_MS = 10000;
const RELOAD_BACK_MS = 5000;
const RECOVER_MS = 3000;
const SWITCH_GAP_MS = 1000;

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, min: s[0], median: s[Math.floor(s.length / 2)], max: s.at(-1), all: s };
};

test('recovery figures: reload, 10 s network loss, network switch (ICE restart)', { timeout: 300000 }, async (t) => {
  assertInTestNamespace();
  const camArgs = fakeCameraArgs(await smallCameraFile());
  const h = await startHarness(t, { serverArgs: ['--no-turn'], browserArgs: camArgs });
  t.after(() => clearTc());
  const raw = { reloadGapMs: [], reloadBackMs: [], lossRecoveredMs: [], switchGapMs: [] };
  const join = (name) => h.join({ room: ROOM, name, initScripts: [gapMonitor] });

  // Waits until each of `pairs` ([viewer, sender]) shows a frame of sender decoded after `t`.
  async function decodingAfter(pairs, t, what) {
    await waitFor(async () => {
      for (const [viewer, sender] of pairs) {
        const s = (await gapReport(viewer.page)).byPid[sender.id];
        if (!s || !(s.lastAt > t)) return false;
      }
      return true;
    }, { what, timeoutMs: 20000, intervalMs: 100 });
  }

  await h.run(async () => { try {
    const ana = await join('Ana');
    const cleo = await join('Cleo');
    const ben = await join('Ben');
    const all = [ana, ben, cleo];
    await Promise.all(all.map((p) => waitForMediaFrom(p, all.filter((o) => o !== p).map((o) => o.id), { minFrames: 20 })));

    for (let round = 1; round <= ROUNDS; round++) {
      // ---- reload (Ben) ----
      const viewers = [ana, cleo];
      const oldId = ben.id;
      const t0 = Date.now();
      await ben.page.reload();
      await ben.page.waitForFunction(() => document.body.dataset.state === 'joined', null, { timeout: 20000 });
      ben.id = await ben.page.evaluate(() => window.studyroom.participant.id);
      const firsts = {};
      await waitFor(async () => {
        for (const v of viewers) firsts[`${v.name}<-Ben`] = (await gapReport(v.page)).byPid[ben.id]?.firstAt ?? null;
        const mine = await gapReport(ben.page);
        for (const v of viewers) firsts[`Ben<-${v.name}`] = mine.byPid[v.id]?.firstAt ?? null;
        return Object.values(firsts).every((x) => x !== null);
      }, { what: `round ${round}: Ben back after the reload`, timeoutMs: 20000, intervalMs: 100, progress: () => firsts });
      raw.reloadBackMs.push(Math.max(...Object.values(firsts)) - t0);
      for (const v of viewers) {
        const rep = await gapReport(v.page);
        raw.reloadGapMs.push(rep.byPid[ben.id].firstAt - rep.byPid[oldId].lastAt);
      }

      // ---- network switch (Cleo): its sockets die as it restarts ICE on new ones ----
      const ports = await udpPortsOf(cleo.page);
      await waitFor(async () => (await gapReport(ana.page)).byPid[ben.id]?.lastAt > Date.now() - 500, { what: 'steady media' });
      await resetGaps(all);
      const block = blockPorts([...ports.selected, ...ports.all]);
      const t1 = block.startedAt;
      const restarted = await cleo.page.evaluate(async () => {
        if (typeof window.studyroom.restartIce !== 'function') return 'StudyRoom has no restartIce()';
        await window.studyroom.restartIce();
        return 'ok';
      });
      assert.equal(restarted, 'ok', 'the client library can restart ICE on demand');
      // Decoding continues for a second after the switch, both ways; then read the gaps.
      const switchPairs = [[ana, cleo], [ben, cleo], [cleo, ana], [cleo, ben]];
      await decodingAfter(switchPairs, t1 + 1000, `round ${round}: decoding again after Cleo's network switch`);
      const lifted = block.lift();
      assert.ok((lifted.blackout?.droppedPackets ?? 0) > 0, `the old sockets' datagrams were dropped: ${JSON.stringify(lifted)}`);
      let worst = 0;
      for (const [viewer, sender] of switchPairs) worst = Math.max(worst, (await gapReport(viewer.page)).byPid[sender.id].maxGap);
      raw.switchGapMs.push(worst);

      // ---- 10 s network loss (Ana) ----
      const keep = new Set();
      for (const o of [ben, cleo]) {
        const p = await udpPortsOf(o.page);
        for (const port of [...p.selected, ...p.all]) keep.add(port);
      }
      const blackout = startBlackout([...keep]);
      await new Promise((r) => setTimeout(r, OUTAGE_MS)); // the outage itself, not an assertion
      const tBack = blackout.lift().liftedAt;
      const rec = {};
      await waitFor(async () => {
        const mine = await gapEpisodes(ana.page);
        for (const o of [ben, cleo]) {
          const ep = mine.find((e) => e.pid === o.id && e.start < tBack && e.end > tBack);
          rec[`Ana<-${o.name}`] = ep ? ep.end - tBack : null;
          const theirs = (await gapEpisodes(o.page)).find((e) => e.pid === ana.id && e.start < tBack && e.end > tBack);
          rec[`${o.name}<-Ana`] = theirs ? theirs.end - tBack : null;
        }
        return Object.values(rec).every((x) => x !== null);
      }, { what: `round ${round}: Ana decoding again after the outage`, timeoutMs: 30000, intervalMs: 200, progress: () => rec });
      raw.lossRecoveredMs.push(Math.max(...Object.values(rec)));
    }
  } finally {
    const figures = Object.fromEntries(Object.entries(raw).filter(([, v]) => v.length).map(([k, v]) => [k, stats(v)]));
    console.log('recovery figures:', JSON.stringify(figures));
  }
  assert.ok(Math.max(...raw.reloadBackMs) <= RELOAD_BACK_MS, `reload: back and decoding within ${RELOAD_BACK_MS} ms: ${raw.reloadBackMs}`);
  assert.ok(Math.max(...raw.lossRecoveredMs) <= RECOVER_MS, `10 s loss: decoding again within ${RECOVER_MS} ms of the network's return: ${raw.lossRecoveredMs}`);
  assert.ok(Math.max(...raw.switchGapMs) < SWITCH_GAP_MS, `network switch: video gap under ${SWITCH_GAP_MS} ms: ${raw.switchGapMs}`);
  });
});
