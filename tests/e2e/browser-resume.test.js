// Session resume in headless Chromium (docs/protocol.md, "Resuming a session"): a page whose
// signaling socket dies (closed under it, no `leave`) while it cannot reconnect at once comes
// back as the same participant. Nobody sees it leave or join, its peer connections are the
// same objects (nothing re-published), what happened meanwhile (a participant joined and
// published) reaches it after the resume, ICE restarts on both of its peer connections, and
// everyone keeps decoding everyone.
// Why a browser: the client library must do this by itself, with the real WebSocket and
// real peer connections that outlive the socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { waitFor, waitForMediaFrom, roomEvents } from './lib/stats.js';

const ROOM = 'e2e-resume';

/** The page's events named `event` since `since` (page clock, ms). */
async function eventsSince(p, event, since) {
  return (await roomEvents(p.page, event)).filter((e) => e.at >= since);
}

test('a page whose socket dies resumes the same participant; pushes made meanwhile arrive; media never stops', { timeout: 240000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const a = await h.join({ room: ROOM, name: 'Ahn' });
    const b = await h.join({ room: ROOM, name: 'Bae' });
    await waitForMediaFrom(a, [b.id]);
    await waitForMediaFrom(b, [a.id]);

    // Ahn's signaling goes offline (new connections fail; WebRTC is not affected), then its
    // socket dies under it: no `leave`, no namespace DISCONNECT.
    const droppedAt = await a.page.evaluate(() => {
      const room = window.studyroom;
      window.__beforeDrop = { publisherPc: room.publisherPc, subscriberPc: room.subscriberPc };
      return Date.now();
    });
    await a.context.setOffline(true);
    await a.page.evaluate(() => window.studyroom.socket._ws.close());
    await waitFor(async () => (await eventsSince(a, 'resuming', droppedAt)).length > 0, { what: 'Ahn to start resuming' });
    await waitFor(() => h.server.logs().includes(`participant kept for resume participant=${a.id}`),
      { what: 'the server to keep Ahn for a resume' });

    // While Ahn has no socket, Choi joins and publishes: Ahn's participantJoined, the track
    // events and the subscriber offer for Choi's tracks wait in Ahn's queue.
    const c = await h.join({ room: ROOM, name: 'Choi' });
    await waitForMediaFrom(b, [c.id]);
    await a.context.setOffline(false);

    await waitFor(async () => (await eventsSince(a, 'resumed', droppedAt)).length > 0,
      { what: 'Ahn to resume', timeoutMs: 15000, progress: () => a.page.evaluate(() => window.studyroom.state) });
    const resumed = h.server.logs().split('\n').find((l) => l.includes('participant resumed on a new socket') && l.includes(`participant=${a.id}`));
    assert.ok(resumed, 'the server logged the resume');
    const replayed = Number(/replayed=(\d+)/.exec(resumed)?.[1]);
    assert.ok(replayed > 0, `pushes made while Ahn was away were queued and replayed: ${resumed}`);
    const after = await a.page.evaluate(() => {
      const room = window.studyroom;
      return {
        id: room.participant.id, state: room.state, bodyState: document.body.dataset.state,
        samePcs: room.publisherPc === window.__beforeDrop.publisherPc && room.subscriberPc === window.__beforeDrop.subscriberPc,
      };
    });
    assert.deepEqual(after, { id: a.id, state: 'joined', bodyState: 'joined', samePcs: true });

    // The drop may have been a network change: ICE restarts on both PCs (docs/protocol.md,
    // "ICE restart"), the transports stay.
    await waitFor(async () => {
      const restarts = (await eventsSince(a, 'iceRestart', droppedAt)).map((e) => e.data[0]);
      return ['publisher', 'subscriber'].every((w) => restarts.some((r) => r.target === w && r.reason === 'resume'));
    }, { what: 'Ahn to restart ICE on both PCs after the resume', progress: () => eventsSince(a, 'iceRestart', droppedAt) });

    // Ahn gets Choi (from the queue) and still Bae, on the same peer connections; they get Ahn.
    await waitForMediaFrom(a, [b.id, c.id]);
    await waitForMediaFrom(b, [a.id]);
    await waitForMediaFrom(c, [a.id]);

    // No flicker: nobody saw Ahn leave or join again; Ahn saw nobody leave, and Choi join once.
    for (const p of [b, c]) {
      assert.deepEqual(await eventsSince(p, 'participantLeft', 0), [], `${p.name} saw someone leave`);
      const joins = (await roomEvents(p.page, 'participantJoined')).filter((e) => e.data[0].id === a.id);
      assert.equal(joins.length, 1, `${p.name} saw Ahn join ${joins.length} times`);
    }
    assert.deepEqual(await eventsSince(a, 'participantLeft', droppedAt), [], 'Ahn saw someone leave');
    const joinedMeanwhile = (await eventsSince(a, 'participantJoined', droppedAt)).map((e) => e.data[0].id);
    assert.deepEqual(joinedMeanwhile, [c.id], 'Ahn heard of Choi once, and of nobody else');
    assert.deepEqual(await eventsSince(a, 'localTrack', droppedAt), [], 'Ahn published nothing again');

    const metrics = await (await fetch('http://127.0.0.1:9100/metrics')).text();
    assert.match(metrics, /^studyroom_session_resumes_total 1$/m);
    assert.match(metrics, /^studyroom_participant_removals_total\{reason="disconnected"\} 0$/m);
    const restarts = Number(/^studyroom_ice_restarts_total (\d+)$/m.exec(metrics)?.[1]);
    assert.ok(restarts >= 2, `the server restarted ICE on Ahn's two transports (studyroom_ice_restarts_total ${restarts})`);
  });
});
