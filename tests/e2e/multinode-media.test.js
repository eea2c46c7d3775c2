// Two nodes sharing Redis form one deployment (docs/protocol.md "Several nodes"): Ana opens
// the page on node A, Ben on node B, same room. The room starts on A (the least loaded node,
// A on the tie since Ana's join reached it); Ben's join on B is answered `moved` with A's URL
// and his client joins there (his page stays B's). Each decodes the other's video, both
// pages know both nodes' URLs (join ack `nodes`), and both nodes' view of the shared state
// (GET /cluster on the metrics port, read from Redis) has the room on A with both.
// Then A drains (SIGTERM): it leaves the registry at once and sends its clients to B (the
// other live node, without --drain-redirect-url); both decode each other on B, the room is
// B's in the shared state, and A exits 0.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, openParticipant } from './lib/browser.js';
import { waitFor, waitForMediaFrom, roomEvents } from './lib/stats.js';
import { closeDeployment, startDeployment, clusterView, pageView, processLogs, nodeUrl, NODES } from './lib/cluster.js';

const ROOM = 'e2e-multinode';
const procs = {};
const pages = [];
let browser = null;

after(() => closeDeployment({ pages, browser, procs }));

test('participants connecting to different nodes meet on the room\'s node and decode each other; a drain moves them to the other node', { timeout: 180000 }, async (t) => {
  try {
    Object.assign(procs, await startDeployment());
    browser = await launchBrowser();
    // Both nodes registered before the room starts.
    await waitFor(async () => (await clusterView('a')).nodes?.length === 2,
      { what: 'both nodes in the registry', progress: () => clusterView('a') });

    const ana = await openParticipant(browser, nodeUrl('a'), { room: ROOM, name: 'Ana' });
    pages.push(ana);
    const ben = await openParticipant(browser, nodeUrl('b'), { room: ROOM, name: 'Ben' });
    pages.push(ben);

    const va = await pageView(ana.page);
    const vb = await pageView(ben.page);
    assert.equal(va.url, nodeUrl('a'), 'Ana joined on A, where the room started');
    assert.equal(vb.origin, nodeUrl('b'), 'Ben\'s page is B\'s');
    assert.equal(vb.url, nodeUrl('a'), 'Ben was sent to A, the room\'s node');
    const moved = await roomEvents(ben.page, 'reconnecting');
    assert.equal(moved.length, 1, `Ben was redirected once: ${JSON.stringify(moved)}`);
    assert.equal(moved[0].data[0].reason, 'moved');
    assert.equal(moved[0].data[0].url, nodeUrl('a'));
    assert.ok(ben.consoleLines.some((l) => l.includes('"code":"moved"') && l.includes(nodeUrl('a'))),
      'B answered Ben\'s join with moved and A\'s URL');
    for (const v of [va, vb]) {
      assert.deepEqual([...v.nodes].sort(), [nodeUrl('a'), nodeUrl('b')], `live nodes in the join ack: ${v.nodes}`);
    }

    await waitForMediaFrom(ana, [ben.id]);
    await waitForMediaFrom(ben, [ana.id]);

    // The shared state, as either node reads it from Redis.
    for (const n of ['a', 'b']) {
      const view = await waitFor(async () => {
        const v = await clusterView(n);
        const room = v.rooms?.find((r) => r.name === ROOM);
        return room && room.participants.length === 2 && room.participants.every((p) => p.tracks.length === 2) ? v : null;
      }, { what: `node ${n}'s view of the room`, progress: () => clusterView(n) });
      const room = view.rooms.find((r) => r.name === ROOM);
      assert.equal(room.host, NODES.a.id);
      assert.deepEqual(room.participants.map((p) => [p.id, p.name, p.node]).sort(),
        [[ana.id, 'Ana', NODES.a.id], [ben.id, 'Ben', NODES.a.id]].sort());
      assert.deepEqual(view.nodes.map((x) => [x.id, x.url]).sort(), [[NODES.a.id, nodeUrl('a')], [NODES.b.id, nodeUrl('b')]]);
    }
    const metrics = await (await fetch(`http://${NODES.a.metrics}/metrics`)).text();
    assert.match(metrics, /^studyroom_cluster_nodes 2$/m, 'A\'s metrics count both nodes');
    // The mirror writes changed rooms every 100 ms; a change (a track event) can be in flight.
    await waitFor(async () => /^studyroom_cluster_rooms_unsynced 0$/m.test(await (await fetch(`http://${NODES.a.metrics}/metrics`)).text()),
      { what: "A's rooms all written to Redis (studyroom_cluster_rooms_unsynced 0)" });
    const a = view => view.nodes.find((x) => x.id === NODES.a.id);
    await waitFor(async () => a(await clusterView('b'))?.load === 2,
      { what: 'A\'s heartbeat to report its load (2 participants)', progress: async () => a(await clusterView('b')) });

    // ---- A drains: its clients go to B ---------------------------------------------------
    procs.a.signal('SIGTERM');
    const onB = {};
    for (const p of [ana, ben]) {
      onB[p.name] = await waitFor(async () => {
        const v = await pageView(p.page);
        return v.url === nodeUrl('b') && v.state === 'joined' && v.id && v.id !== p.id ? v : null;
      }, { what: `${p.name} to move to B`, timeoutMs: 20000, progress: () => pageView(p.page) });
      const r = await roomEvents(p.page, 'reconnecting');
      assert.ok(r.some((e) => e.data[0].reason === 'draining' && e.data[0].url === nodeUrl('b')),
        `${p.name} was sent to B by the draining node: ${JSON.stringify(r.map((e) => e.data[0]))}`);
    }
    await waitForMediaFrom({ ...ana, id: onB.Ana.id }, [onB.Ben.id]);
    await waitForMediaFrom({ ...ben, id: onB.Ben.id }, [onB.Ana.id]);
    const afterDrain = await waitFor(async () => {
      const v = await clusterView('b');
      const room = v.rooms?.find((r) => r.name === ROOM);
      return room && room.host === NODES.b.id && room.participants.length === 2 ? v : null;
    }, { what: 'the room on B in the shared state', progress: () => clusterView('b') });
    assert.deepEqual(afterDrain.nodes.map((x) => x.id), [NODES.b.id], 'A left the registry');
    assert.deepEqual(await procs.a.waitForExit(20000), { code: 0, signal: null }, 'A exits 0 once empty');
  } catch (e) {
    console.error(processLogs(procs));
    for (const p of pages) console.error(`==== ${p.name}\n${p.consoleLines.slice(-80).join('\n')}`);
    throw e;
  }
});
