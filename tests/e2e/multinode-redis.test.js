// Redis outages (ARCHITECTURE.md "Several nodes"): media never waits on Redis.
// 1. A room on node A (Ana on A, Ben sent there from B) is decoding both ways; Redis is
//    killed and stays away for a while: both keep decoding (framesDecoded grows) and the
//    nodes keep serving; Redis comes back empty (no persistence): the nodes write their
//    registry entries and rooms again, so the shared state lists the room on A with both
//    participants and their tracks, and media still flows.
// 2. Split brain: while Redis is away, Ana joins a room on A and Ben the same room on B (each
//    node serves it alone: no Redis to ask). When Redis returns, the first node to write the
//    room keeps it; the other tells its client to `reconnect` (reason `moved`) there, and
//    Ana and Ben end up on one node, decoding each other, the shared state agreeing.
// 3. Startup with REDIS_URL pointing at nothing exits 1 with a message naming Redis and
//    --redis-wait-secs; with --redis-wait-secs it waits and starts once Redis is there.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, openParticipant } from './lib/browser.js';
import { waitFor, waitForMediaFrom, inboundStats, roomEvents } from './lib/stats.js';
import { spawnLogged, studyroomBin, startRedis } from './lib/server.js';
import { closeDeployment, startDeployment, clusterView, pageView, processLogs, nodeUrl, NODES, REDIS_PORT } from './lib/cluster.js';

const ROOM = 'e2e-redis-outage';
const OUTAGE_MS = 4000;
const procs = {};
const pages = [];
let browser = null;

after(() => closeDeployment({ pages, browser, procs }));

/** framesDecoded of `p`'s video from participant `from`. */
async function decoded(p, from) {
  const s = (await inboundStats(p.page)).find((x) => x.participantId === from && x.kind === 'video');
  return s ? s.framesDecoded : 0;
}

test('Redis going away mid-room: media keeps flowing; the shared state is whole once it is back', { timeout: 180000 }, async (t) => {
  try {
    Object.assign(procs, await startDeployment());
    browser = await launchBrowser();
    await waitFor(async () => (await clusterView('a')).nodes?.length === 2, { what: 'both nodes in the registry' });
    const ana = await openParticipant(browser, nodeUrl('a'), { room: ROOM, name: 'Ana' });
    pages.push(ana);
    const ben = await openParticipant(browser, nodeUrl('b'), { room: ROOM, name: 'Ben' });
    pages.push(ben);
    assert.equal((await pageView(ben.page)).url, nodeUrl('a'), 'Ben is on A, the room\'s node');
    await waitForMediaFrom(ana, [ben.id]);
    await waitForMediaFrom(ben, [ana.id]);

    // ---- Redis goes away ----------------------------------------------------------------
    procs.redis.signal('SIGKILL');
    await procs.redis.waitForExit(5000);
    const downAt = Date.now();
    const start = { ana: await decoded(ana, ben.id), ben: await decoded(ben, ana.id) };
    await waitFor(async () => (await clusterView('a')).status === 503,
      { what: 'A to notice Redis is gone (GET /cluster answers 503)', timeoutMs: 10000 });
    // Throughout the outage both keep decoding, and the pages stay joined.
    const samples = [];
    while (Date.now() - downAt < OUTAGE_MS) {
      const s = { ana: await decoded(ana, ben.id), ben: await decoded(ben, ana.id) };
      samples.push(s);
      for (const p of pages) assert.equal((await pageView(p.page)).state, 'joined', `${p.name} still joined`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    const end = samples[samples.length - 1];
    t.diagnostic(`during the outage: Ana decoded ${end.ana - start.ana} frames of Ben, Ben ${end.ben - start.ben} of Ana`);
    assert.ok(end.ana - start.ana >= 20, `Ana kept decoding Ben: ${JSON.stringify(samples)}`);
    assert.ok(end.ben - start.ben >= 20, `Ben kept decoding Ana: ${JSON.stringify(samples)}`);
    for (const n of ['a', 'b']) assert.equal(procs[n].exited(), false, `node ${n} still runs`);

    // ---- Redis is back, empty -------------------------------------------------------------
    procs.redis = await startRedis({ port: REDIS_PORT });
    for (const n of ['a', 'b']) {
      const view = await waitFor(async () => {
        const v = await clusterView(n);
        const room = v.rooms?.find((r) => r.name === ROOM);
        return v.nodes?.length === 2 && room && room.participants.length === 2
          && room.participants.every((p) => p.tracks.length === 2) ? v : null;
      }, { what: `node ${n}: the registry and the room written again`, timeoutMs: 20000, progress: () => clusterView(n) });
      const room = view.rooms.find((r) => r.name === ROOM);
      assert.equal(room.host, NODES.a.id);
      assert.deepEqual(room.participants.map((p) => [p.id, p.node]).sort(), [[ana.id, NODES.a.id], [ben.id, NODES.a.id]].sort());
    }
    const again = { ana: await decoded(ana, ben.id), ben: await decoded(ben, ana.id) };
    await waitFor(async () => (await decoded(ana, ben.id)) - again.ana >= 20 && (await decoded(ben, ana.id)) - again.ben >= 20,
      { what: 'media still flowing after Redis returned' });
  } catch (e) {
    console.error(processLogs(procs));
    for (const p of pages) console.error(`==== ${p.name}\n${p.consoleLines.slice(-60).join('\n')}`);
    throw e;
  }
});

test('rooms started on two nodes while Redis was away end up on one node once it returns', { timeout: 180000 }, async (t) => {
  for (const name of ['a', 'b', 'redis']) if (procs[name]) await procs[name].stop();
  for (const p of pages.splice(0)) await p.close();
  const room = 'e2e-split';
  try {
    Object.assign(procs, await startDeployment());
    await waitFor(async () => (await clusterView('a')).nodes?.length === 2, { what: 'both nodes in the registry' });
    procs.redis.signal('SIGKILL');
    await procs.redis.waitForExit(5000);
    for (const n of ['a', 'b']) {
      await waitFor(async () => (await clusterView(n)).status === 503, { what: `node ${n} to notice Redis is gone`, timeoutMs: 10000 });
    }
    const ana = await openParticipant(browser, nodeUrl('a'), { room, name: 'Ana' });
    pages.push(ana);
    const ben = await openParticipant(browser, nodeUrl('b'), { room, name: 'Ben' });
    pages.push(ben);
    assert.equal((await pageView(ana.page)).url, nodeUrl('a'), 'without Redis, A serves the room itself');
    assert.equal((await pageView(ben.page)).url, nodeUrl('b'), 'and so does B');
    assert.deepEqual((await pageView(ana.page)).others, [], 'two halves of the room');

    procs.redis = await startRedis({ port: REDIS_PORT });
    const together = await waitFor(async () => {
      const va = await pageView(ana.page);
      const vb = await pageView(ben.page);
      return va.state === 'joined' && vb.state === 'joined' && va.url === vb.url
        && va.others.includes(vb.id) && vb.others.includes(va.id) ? { va, vb } : null;
    }, { what: 'Ana and Ben on one node, seeing each other', timeoutMs: 30000,
      progress: async () => ({ ana: await pageView(ana.page), ben: await pageView(ben.page) }) });
    const host = together.va.url === nodeUrl('a') ? 'a' : 'b';
    const mover = host === 'a' ? ben : ana;
    const moves = (await roomEvents(mover.page, 'reconnecting')).map((e) => e.data[0]);
    assert.ok(moves.some((m) => m.reason === 'moved' && m.url === nodeUrl(host)), `${mover.name} was moved to ${host}: ${JSON.stringify(moves)}`);
    await waitForMediaFrom({ ...ana, id: together.va.id }, [together.vb.id]);
    await waitForMediaFrom({ ...ben, id: together.vb.id }, [together.va.id]);
    const view = await waitFor(async () => {
      const v = await clusterView(host === 'a' ? 'b' : 'a');
      const r = v.rooms?.find((x) => x.name === room);
      return r && r.participants.length === 2 ? { v, r } : null;
    }, { what: 'the shared state: one room, both participants', progress: () => clusterView('a') });
    assert.equal(view.r.host, NODES[host].id);
    assert.deepEqual(view.r.participants.map((p) => p.node), [NODES[host].id, NODES[host].id]);
  } catch (e) {
    console.error(processLogs(procs));
    for (const p of pages) console.error(`==== ${p.name}\n${p.consoleLines.slice(-60).join('\n')}`);
    throw e;
  }
});

test('startup with an unreachable Redis: exit 1 with a clear message, or wait for it', { timeout: 60000 }, async () => {
  // --no-turn: the deployment's nodes of the tests above hold the TURN ports.
  const args = ['--dev', '--http', '127.0.0.1:5104', '--media-ports', '40300-40310', '--metrics', '127.0.0.1:9112', '--shards', '1', '--no-turn'];
  const port = REDIS_PORT + 1;
  const failing = spawnLogged('studyroom (no redis)', studyroomBin(), args, { env: { REDIS_URL: `redis://127.0.0.1:${port}` } });
  procs.failing = failing;
  const exit = await failing.waitForExit(20000);
  assert.deepEqual(exit, { code: 1, signal: null }, failing.logs());
  assert.match(failing.logs(), /Redis is unreachable/);
  assert.match(failing.logs(), /--redis-wait-secs/);

  const waiting = spawnLogged('studyroom (waits)', studyroomBin(), [...args, '--redis-wait-secs', '30'],
    { env: { REDIS_URL: `redis://127.0.0.1:${port}` } });
  procs.waiting = waiting;
  await waitFor(() => /waiting for it/.test(waiting.logs()), { what: 'the node to say it waits for Redis', timeoutMs: 10000 });
  assert.equal(waiting.exited(), false);
  await assert.rejects(fetch('http://127.0.0.1:5104/healthz'), 'not serving before Redis is there');
  procs.redis2 = await startRedis({ port });
  await waitFor(async () => (await fetch('http://127.0.0.1:5104/healthz').catch(() => null))?.status === 200,
    { what: 'the waiting node to start once Redis answers', timeoutMs: 20000, progress: () => waiting.logs().split('\n').slice(-5).join('\n') });
});
