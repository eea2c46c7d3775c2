// Node death (docs/protocol.md "Several nodes"): a room lives on node A with Ana (page on A)
// and Ben (page on B, sent to A). A is killed with SIGKILL. Both clients see their socket
// drop, rejoin on B (the other URL in their join ack's `nodes`), B finds A's signaling port
// dead and takes the room over, and within 5 s of the kill both are joined on B again, see
// each other and decode each other's video on new peer connections. Afterwards A's expired
// heartbeat gets it removed from the registry, and the shared state has the room on B.
// Second test: A is frozen (SIGSTOP) instead, so no socket closes: the clients notice through
// ICE (peer connections disconnected), move to B, and B, finding A's /healthz silent, takes
// the room over; both are back and decoding each other within seconds.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, openParticipant } from './lib/browser.js';
import { waitFor, waitForMediaFrom, waitForVideoFrom, inboundStats, roomEvents } from './lib/stats.js';
import { startDeployment, clusterView, pageView, processLogs, nodeUrl, NODES } from './lib/cluster.js';

const ROOM = 'e2e-failover';
const BACK_WITHIN_MS = 5000;
const FROZEN_BACK_WITHIN_MS = 15000;
let procs = {};
let pages = [];
let browser = null;

async function cleanup() {
  for (const p of pages) await p.close();
  if (browser) await browser.close().catch(() => {});
  // A frozen node takes no SIGTERM: kill it outright.
  if (procs.a && !procs.a.exited()) procs.a.signal('SIGKILL');
  for (const name of ['a', 'b', 'redis']) if (procs[name]) await procs[name].stop();
  procs = {};
  pages = [];
  browser = null;
}
after(cleanup);

/** Both pages joined on node `n`, seeing each other, decoding each other's video (new ids). */
async function backOn(n, ana, ben) {
  const back = async (p, other) => {
    const v = await pageView(p.page);
    const o = await pageView(other.page);
    if (v.url !== nodeUrl(n) || v.state !== 'joined' || !v.id || !o.id || v.id === p.id) return null;
    if (!v.others.includes(o.id)) return null;
    const video = (await inboundStats(p.page)).find((s) => s.participantId === o.id && s.kind === 'video');
    return video && video.framesDecoded > 0 ? { ...v, other: o.id } : null;
  };
  const a = await back(ana, ben);
  const b = a && await back(ben, ana);
  return b ? { a, b, at: Date.now() } : null;
}

/** Redis, nodes A and B, Ana on A and Ben sent there from B, decoding each other. */
async function roomOnA(room) {
  Object.assign(procs, await startDeployment());
  browser = await launchBrowser();
  await waitFor(async () => (await clusterView('b')).nodes?.length === 2, { what: 'both nodes in the registry' });
  const ana = await openParticipant(browser, nodeUrl('a'), { room, name: 'Ana' });
  pages.push(ana);
  const ben = await openParticipant(browser, nodeUrl('b'), { room, name: 'Ben' });
  pages.push(ben);
  for (const p of pages) assert.equal((await pageView(p.page)).url, nodeUrl('a'), `${p.name} is on A`);
  await waitForMediaFrom(ana, [ben.id]);
  await waitForMediaFrom(ben, [ana.id]);
  return { ana, ben };
}

test('killing the node hosting a room: its participants are back in the room on a live node within 5 s', { timeout: 180000 }, async (t) => {
  t.after(cleanup);
  try {
    const { ana, ben } = await roomOnA(ROOM);

    // ---- A dies -------------------------------------------------------------------------
    const killedAt = Date.now();
    procs.a.signal('SIGKILL');
    // Back in the room: joined on B, each sees the other and decodes the other's video on the
    // new peer connections, all within BACK_WITHIN_MS of the kill.
    const views = await waitFor(() => backOn('b', ana, ben), {
      what: `both participants back in the room on B, decoding each other, within ${BACK_WITHIN_MS} ms of the kill`,
      timeoutMs: BACK_WITHIN_MS, intervalMs: 100,
      progress: async () => ({ ana: await pageView(ana.page), ben: await pageView(ben.page) }) });
    t.diagnostic(`back in the room ${views.at - killedAt} ms after the kill`);
    assert.ok(views.at - killedAt <= BACK_WITHIN_MS);
    assert.deepEqual(procs.a.exitInfo(), { code: null, signal: 'SIGKILL' });

    // Media keeps flowing on B.
    const anaB = { ...ana, id: views.a.id };
    const benB = { ...ben, id: views.b.id };
    await waitForVideoFrom(anaB, benB.id);
    await waitForVideoFrom(benB, anaB.id);

    // The deployment forgets A (heartbeat expired) and has the room on B with both.
    const view = await waitFor(async () => {
      const v = await clusterView('b');
      const room = v.rooms?.find((r) => r.name === ROOM);
      return v.nodes?.length === 1 && room && room.participants.length === 2 ? v : null;
    }, { what: 'the registry without A, the room on B', timeoutMs: 15000, progress: () => clusterView('b') });
    assert.equal(view.nodes[0].id, NODES.b.id);
    const room = view.rooms.find((r) => r.name === ROOM);
    assert.equal(room.host, NODES.b.id);
    assert.deepEqual(room.participants.map((p) => [p.id, p.node]).sort(), [[anaB.id, NODES.b.id], [benB.id, NODES.b.id]].sort());
    assert.equal(procs.b.exited(), false, 'B still runs');
  } catch (e) {
    console.error(processLogs(procs));
    for (const p of pages) console.error(`==== ${p.name}\n${p.consoleLines.slice(-80).join('\n')}`);
    throw e;
  }
});

test('a frozen node (SIGSTOP): its participants notice through ICE and are back on a live node within seconds', { timeout: 180000 }, async (t) => {
  t.after(cleanup);
  try {
    const { ana, ben } = await roomOnA('e2e-frozen');
    const frozenAt = Date.now();
    procs.a.signal('SIGSTOP');
    const views = await waitFor(() => backOn('b', ana, ben), {
      what: `both participants back in the room on B within ${FROZEN_BACK_WITHIN_MS} ms of the freeze`,
      timeoutMs: FROZEN_BACK_WITHIN_MS, intervalMs: 200,
      progress: async () => ({ ana: await pageView(ana.page), ben: await pageView(ben.page) }) });
    t.diagnostic(`back in the room ${views.at - frozenAt} ms after the freeze`);
    for (const p of [ana, ben]) {
      const moves = (await roomEvents(p.page, 'reconnecting')).map((e) => e.data[0].reason);
      assert.ok(moves.includes('media_lost'), `${p.name} noticed through ICE: ${moves}`);
    }
    await waitForVideoFrom({ ...ana, id: views.a.id }, views.b.id);
    await waitForVideoFrom({ ...ben, id: views.b.id }, views.a.id);
  } catch (e) {
    console.error(processLogs(procs));
    for (const p of pages) console.error(`==== ${p.name}\n${p.consoleLines.slice(-80).join('\n')}`);
    throw e;
  }
});
