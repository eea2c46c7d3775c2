// Issue 11, point 6: renegotiation stays bounded over a room's life.
// A browser listener (publish=0) stays in a room of 6 while at least 100 participants come and
// go through the other five places (`studyroom-loadtest churn`: real Socket.IO + str0m peers,
// each joins, publishes camera + mic, stays ~1.2 s, leaves politely). The listener's
// subscriber SDP must stay bounded by the live m-lines (departed publishers' m-lines are
// recycled: inactive, then reused, never one more per departure): at most 2x the five
// places' tracks (10) at every sample. Every offer pushed to it is answered and the answer
// acknowledged without error (no payload_too_large), its client reports no error, the
// server never removes it. At the end two browser publishers join: the listener decodes
// both, on recycled m-lines (its m-line count does not grow).
// Bounded in time: ~30 s of churn at a light media load (15 fps, 100 kbit/s per camera).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtemp, readFile } from 'node:fs/promises';
import { startHarness } from './lib/harness.js';
import { spawnLogged, studyroomBin } from './lib/server.js';
import { waitFor, waitForMediaFrom, roomEvents } from './lib/stats.js';
import { trackSignaling } from './lib/sigtrack.js';
import { smallCameraFile, fakeCameraArgs } from './lib/fakecam.js';

const PREFIX = 'e2e-mrec';
const ROOM = `${PREFIX}-churn-0`; // the load generator's room name: <prefix>-<scenario>-<n>
const PLACES = 5; // churning places; with the listener a room of 6
const LIVE_TRACKS_MAX = PLACES * 2; // camera + mic per place
const MIN_PARTICIPANTS = 100;
const CHURN_SECONDS = 30;

const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

function loadtestBin() {
  return process.env.LOADTEST_BIN || path.join(path.dirname(studyroomBin()), 'studyroom-loadtest');
}

// The listener's subscriber PC as the server last offered it.
function sdpShape(page) {
  return page.evaluate(() => {
    const room = window.studyroom;
    const pc = room.subscriberPc;
    const sdp = (pc && pc.remoteDescription && pc.remoteDescription.sdp) || '';
    const sections = sdp.split(/^(?=m=)/m).slice(1);
    const inactive = sections.filter((s) => /^a=inactive\s*$/m.test(s)).length;
    const rejected = sections.filter((s) => /^m=\S+ 0 /.test(s)).length;
    let live = 0;
    for (const p of room.participants.values()) live += (p.tracks || []).length;
    return { mlines: sections.length, inactive, rejected, bytes: sdp.length, live,
      mids: sections.map((s) => (/^a=mid:(\S+)/m.exec(s) || [])[1]),
      participantId: room.participant && room.participant.id, state: document.body.dataset.state };
  });
}

test('a listener stays while 100 participants churn through a room of 6: its SDP stays bounded, every offer answered',
  { timeout: 240000 }, async (t) => {
    const camArgs = fakeCameraArgs(await smallCameraFile());
    const h = await startHarness(t, { browserArgs: camArgs });
    await h.run(async () => {
      let sig = null;
      const listener = await h.join({ room: ROOM, name: 'Listener', publish: false, onPage: (page) => { sig = trackSignaling(page); } });
      const listenerId = listener.id;

      const out = path.join(await mkdtemp(path.join(os.tmpdir(), 'studyroom-mrec-')), 'churn.json');
      const lg = spawnLogged('studyroom-loadtest churn', loadtestBin(), ['churn', '--url', h.server.baseUrl,
        '--rooms', '1', '--per-room', String(PLACES), '--room-prefix', PREFIX, '--stay', '1.2', '--ramp', '10',
        '--seconds', String(CHURN_SECONDS), '--fps', '15', '--video-kbps', '100', '--json', out]);
      t.after(() => lg.stop());

      // Sample the listener's SDP while the churn runs.
      const samples = [];
      let worst = null;
      while (!lg.exited()) {
        const s = await sdpShape(listener.page);
        samples.push({ at: Date.now(), ...s });
        if (!worst || s.mlines > worst.mlines) worst = s;
        await new Promise((r) => setTimeout(r, 250));
      }
      const exit = await lg.waitForExit(1000);
      const lgLines = lg.logs().split('\n').filter((l) => !/^\[err\]\s+(\d+: |at )/.test(l)); // no backtrace frames
      assert.equal(exit.code, 0, `the load generator exited 0:\n${lgLines.slice(-30).join('\n')}`);
      const summary = JSON.parse(await readFile(out, 'utf8'));
      const joins = summary.joins;
      const final = await sdpShape(listener.page);
      const report = {
        participants: joins.attempted, joinErrors: joins.errors, leftOk: joins.left_ok,
        offers: sig.offers, answersSent: sig.answersSent, answersAcked: sig.answersAcked,
        maxOfferBytes: sig.maxOfferBytes, maxAnswerBytes: sig.maxAnswerBytes,
        maxMlines: worst && worst.mlines, atMaxMlines: worst && { live: worst.live, inactive: worst.inactive, rejected: worst.rejected, bytes: worst.bytes },
        maxLiveSeen: Math.max(...samples.map((s) => s.live)), samples: samples.length,
        mlinesOverTime: samples.filter((_, i) => i % 16 === 0).map((s) => `${s.mlines}/${s.live}`),
        final: { mlines: final.mlines, live: final.live, inactive: final.inactive, bytes: final.bytes },
      };
      console.log('m-line recycling:', JSON.stringify(report));

      // The churn happened: 100+ participants came and went, every one politely.
      assert.ok(joins.attempted >= MIN_PARTICIPANTS, `at least ${MIN_PARTICIPANTS} participants came and went (got ${joins.attempted})`);
      assert.equal(joins.errors, 0, `no load-generator participant failed: ${JSON.stringify(joins.first_errors)}`);
      // The listener stayed, unharmed.
      assert.equal(final.state, 'joined', 'the listener is still joined');
      assert.equal(final.participantId, listenerId, 'the listener is still the same participant');
      const removals = stripAnsi(h.server.logs()).split('\n')
        .filter((l) => /removing participant|participant left/.test(l) && new RegExp(`participant=${listenerId}(\\s|$|,|")`).test(l));
      assert.deepEqual(removals, [], 'the server never removed the listener');
      // Every offer answered and acknowledged without error.
      assert.ok(sig.offers >= MIN_PARTICIPANTS / 2, `the listener was offered the churn (${sig.offers} offers)`);
      await waitFor(() => sig.answersAcked === sig.offers, { what: 'every offer answered and acknowledged', timeoutMs: 10000,
        progress: () => ({ offers: sig.offers, answersSent: sig.answersSent, answersAcked: sig.answersAcked }) });
      assert.deepEqual(sig.answerErrors, [], 'no answer was refused (e.g. payload_too_large)');
      assert.deepEqual(sig.errorEvents, [], 'the server pushed no error to the listener');
      assert.deepEqual(await roomEvents(listener.page, 'error'), [], 'the listener\'s client reported no error');
      // Bounded: recycled m-lines, never one per departed publisher.
      assert.equal(worst.rejected, 0, `no m-line rejected with port 0 (at the largest offer: ${JSON.stringify(report.atMaxMlines)})`);
      assert.ok(worst.mlines <= 2 * LIVE_TRACKS_MAX,
        `the listener's SDP stays under 2x the room's live m-lines (${2 * LIVE_TRACKS_MAX}): at most ${worst.mlines} m-lines (${JSON.stringify(report.mlinesOverTime)})`);

      // Every churner left with `leave` (acked ok): the server must not have taken any of those
      // departures for a dropped socket (kept for resume: a frozen ghost for 15 s), and the
      // listener's room is empty again at once.
      const ghosts = stripAnsi(h.server.logs()).split('\n').filter((l) => /socket dropped without leave/.test(l));
      assert.equal(joins.left_ok, joins.attempted, 'every churner\'s leave was acked ok');
      assert.deepEqual(ghosts, [], 'no politely leaving churner was kept as if its socket had dropped');
      await waitFor(async () => (await listener.page.evaluate(() => window.studyroom.participants.size)) === 0,
        { what: 'the listener to see the room empty after the churn', timeoutMs: 5000,
          progress: () => listener.page.evaluate(() => [...window.studyroom.participants.keys()]) });

      // Whoever is live at the end is decoded, on recycled m-lines.
      const before = await sdpShape(listener.page);
      const pia = await h.join({ room: ROOM, name: 'Pia' });
      const quinn = await h.join({ room: ROOM, name: 'Quinn' });
      await waitForMediaFrom(listener, [pia.id, quinn.id], { minFrames: 30, timeoutMs: 30000 });
      const after = await sdpShape(listener.page);
      console.log('m-line recycling, end:', JSON.stringify({ before: { mlines: before.mlines, inactive: before.inactive },
        after: { mlines: after.mlines, inactive: after.inactive, live: after.live, bytes: after.bytes } }));
      assert.ok(after.mlines <= Math.max(before.mlines, 4),
        `the two new publishers reuse recycled m-lines (${before.mlines} m-lines before, ${after.mlines} after)`);
      assert.deepEqual(await listener.page.evaluate(() => [...window.studyroom.participants.keys()].sort()),
        [pia.id, quinn.id].sort(), 'the listener\'s room is exactly who is live');
      assert.equal(sig.answersAcked, sig.offers, 'every offer answered');
      assert.deepEqual(sig.answerErrors, [], 'no answer refused');
    });
  });
