// Draining a node (operations issue, docs/protocol.md `reconnect` / `draining`): two nodes A
// and B on one machine (separate HTTP, media and metrics ports; no shared rooms). Two pages
// join a room on A and see each other (one also shares its screen and mutes its mic). On
// SIGTERM, A answers /readyz 503, refuses a fresh `join` with `draining` and pushes
// `reconnect` {url: B}; both pages close their PCs, reconnect their socket to B (cross-origin:
// the pages stay loaded from A), join, publish the same tracks with the same mute state and
// decode each other again on new PCs. A exits 0 once nobody is left, within its drain timeout.
// A plain socket.io-client participant stays on A until the checks on A are done, so A cannot
// finish draining (and exit) before it was observed draining.
// Second test: a page opened on A while A drains (its `join` is refused with `draining`) also
// ends up joined and publishing on B.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { startServer } from './lib/server.js';
import { launchBrowser, openParticipant } from './lib/browser.js';
import { waitFor, waitForMediaFrom, waitForVideoFrom, roomEvents } from './lib/stats.js';

const ROOM = 'e2e-drain';
const DRAIN_TIMEOUT_S = 10;
const NODE_B = { http: '127.0.0.1:5003', args: ['--media-ports', '40050-40100', '--metrics', '127.0.0.1:9101', '--no-turn'] }; // TURN ports are node A's
const NODE_B_URL = `http://${NODE_B.http}`;
const NODE_B_METRICS = 'http://127.0.0.1:9101/metrics';
const NODE_A = {
  http: '127.0.0.1:5002',
  args: ['--media-ports', '40000-40049', '--metrics', '127.0.0.1:9100',
    '--drain-redirect-url', NODE_B_URL, '--drain-timeout-secs', String(DRAIN_TIMEOUT_S)],
};

async function devToken(baseUrl, query) {
  const res = await fetch(`${baseUrl}/dev/token?${new URLSearchParams(query)}`);
  const body = await res.text();
  assert.equal(res.status, 200, `dev token from ${baseUrl}: ${res.status} ${body}`);
  return JSON.parse(body).token;
}

/** A socket.io-client on `baseUrl`/study that records every push in `socket.inbox`. */
async function sioClient(baseUrl, token) {
  const socket = io(`${baseUrl}/study`, {
    auth: { token }, transports: ['websocket'], reconnection: false, forceNew: true, timeout: 5000,
  });
  socket.inbox = [];
  socket.onAny((event, data) => socket.inbox.push({ event, data }));
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', (e) => reject(new Error(`connect to ${baseUrl} refused: ${e.message}`)));
  });
  return socket;
}

/** The value of an unlabelled sample `name` in Prometheus text, or null. */
async function metric(url, name) {
  const text = await (await fetch(url)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.trim().split(/\s+/)[1]) : null;
}

/** What the page's client says about itself: node URL, state, ids, the others and their tracks. */
function clientView(page) {
  return page.evaluate(() => {
    const r = window.studyroom;
    return {
      url: r.url, state: r.state, bodyState: document.body.dataset.state, server: document.body.dataset.server,
      id: r.participant && r.participant.id, identity: r.participant && r.participant.identity,
      others: [...r.participants.values()].map((p) => ({ id: p.id, identity: p.identity, name: p.name,
        tracks: p.tracks.map((t) => ({ id: t.id, source: t.source, muted: t.muted })) })),
      local: [...r.localTracks.values()].map((t) => ({ source: t.source, trackId: t.trackId, muted: t.muted,
        enabled: t.track.enabled, readyState: t.track.readyState })),
    };
  });
}

test('SIGTERM drains node A: both pages move to node B, see each other again, A exits 0', { timeout: 240000 }, async (t) => {
  const nodes = [];
  const pages = [];
  const sockets = [];
  let browser = null;
  t.after(async () => {
    for (const p of pages) await p.close();
    if (browser) await browser.close().catch(() => {});
    for (const s of sockets) s.close();
    for (const n of nodes) await n.stop();
  });
  const diagnostics = async () => {
    const parts = [];
    for (const [name, n] of [['A', nodes[1]], ['B', nodes[0]]]) {
      if (!n) continue;
      parts.push(`==== node ${name} (exit: ${JSON.stringify(n.exitInfo())}), last 300 lines`, n.logs().split('\n').slice(-300).join('\n'));
    }
    for (const p of pages) {
      parts.push(`==== ${p.name}`, p.consoleLines.slice(-150).join('\n'));
      parts.push(JSON.stringify(await p.page.evaluate(() => ({
        states: window.__states, pcs: (window.__pcs || []).map((pc) => `${pc.signalingState}/${pc.connectionState}`),
        events: (window.studyroom?.eventLog || []).slice(-60)
          .map((e) => `${new Date(e.at).toISOString().slice(11, 23)} ${e.event} ${JSON.stringify(e.data).slice(0, 200)}`),
      })).catch((e) => e.message), null, 2));
    }
    return parts.join('\n');
  };

  try {
    nodes.push(await startServer(NODE_B));
    nodes.push(await startServer(NODE_A));
    const [nodeB, nodeA] = nodes;
    browser = await launchBrowser();

    // ---- before: a room on A, media both ways, a screen share, a muted mic --------------
    const ana = await openParticipant(browser, nodeA.baseUrl, { room: ROOM, name: 'Ana' });
    pages.push(ana);
    const ben = await openParticipant(browser, nodeA.baseUrl, { room: ROOM, name: 'Ben' });
    pages.push(ben);
    for (const p of pages) {
      p.wsUrls = [];
      p.page.on('websocket', (ws) => p.wsUrls.push(ws.url()));
    }
    const lurker = await sioClient(nodeA.baseUrl, await devToken(nodeA.baseUrl, { room: ROOM, name: 'Lurker', role: 'learner', publish: '0' }));
    sockets.push(lurker);
    const lurkerJoin = await lurker.timeout(5000).emitWithAck('join', {});
    assert.ok(lurkerJoin && lurkerJoin.participant, `the lurker joined A: ${JSON.stringify(lurkerJoin)}`);

    await waitForMediaFrom(ben, [ana.id]);
    await waitForMediaFrom(ana, [ben.id]);
    await ana.page.click('#btn-screen');
    await waitForVideoFrom(ben, ana.id, { source: 'screen' });
    await ana.page.click('#btn-mic');
    await waitFor(async () => (await clientView(ben.page)).others
      .find((o) => o.id === ana.id)?.tracks.some((tr) => tr.source === 'microphone' && tr.muted),
    { what: 'Ben to see Ana\'s mic muted on A' });
    const before = {};
    for (const p of pages) {
      before[p.name] = await clientView(p.page);
      p.pcsBefore = await p.page.evaluate(() => window.__pcs.length);
      // Every state the page shows from now on, with its status line.
      await p.page.evaluate(() => {
        window.__states = [];
        new MutationObserver(() => window.__states.push([document.body.dataset.state, document.querySelector('#status').textContent]))
          .observe(document.body, { attributes: true, attributeFilter: ['data-state'] });
      });
    }
    assert.deepEqual(before.Ana.local.map((l) => [l.source, l.muted]), [['camera', false], ['microphone', true], ['screen', false]]);

    // ---- SIGTERM: A drains ------------------------------------------------------------------
    const termAt = Date.now();
    nodeA.signal('SIGTERM');
    const exited = nodeA.waitForExit(DRAIN_TIMEOUT_S * 1000 + 5000)
      .then((info) => ({ ...info, afterMs: Date.now() - termAt }), (error) => ({ error: error.message }));
    await waitFor(async () => (await fetch(`${nodeA.baseUrl}/readyz`)).status === 503,
      { what: 'A\'s /readyz to answer 503 while draining', timeoutMs: 5000, intervalMs: 100 });
    const reconnect = await waitFor(() => lurker.inbox.find((m) => m.event === 'reconnect'),
      { what: 'the lurker on A to get the reconnect push', timeoutMs: 5000, progress: () => lurker.inbox.map((m) => m.event) });
    assert.equal(reconnect.data.reason, 'draining');
    assert.equal(reconnect.data.url, NODE_B_URL, `reconnect url: ${JSON.stringify(reconnect.data)}`);
    assert.equal(typeof reconnect.data.deadlineMs, 'number');
    assert.ok(reconnect.data.deadlineMs > 0 && reconnect.data.deadlineMs <= DRAIN_TIMEOUT_S * 1000,
      `deadlineMs ${reconnect.data.deadlineMs} within the ${DRAIN_TIMEOUT_S} s drain timeout`);

    // A fresh participant (token from B: both nodes sign with the dev secret) is turned away.
    const late = await sioClient(nodeA.baseUrl, await devToken(nodeB.baseUrl, { room: ROOM, name: 'Late', role: 'learner' }));
    sockets.push(late);
    const lateJoin = await late.timeout(5000).emitWithAck('join', {});
    assert.equal(lateJoin?.error?.code, 'draining', `a join on draining A: ${JSON.stringify(lateJoin)}`);
    late.close();

    // ---- the pages move to B ----------------------------------------------------------------
    const after = {};
    for (const p of pages) {
      after[p.name] = await waitFor(async () => {
        const v = await clientView(p.page);
        return v.url === NODE_B_URL && v.state === 'joined' && v.bodyState === 'joined' && v.id
          && v.local.every((l) => l.trackId) ? v : null;
      }, { what: `${p.name} to be joined and published on B`, timeoutMs: 30000, progress: () => clientView(p.page) });
    }
    // Nobody else is left on A but the lurker: when it leaves, A is empty and exits.
    const leftAt = Date.now();
    await lurker.timeout(5000).emitWithAck('leave', {});

    for (const p of pages) {
      const v = after[p.name];
      assert.equal(v.server, NODE_B_URL, `${p.name}'s page names B as its server`);
      assert.ok(p.wsUrls.some((u) => u.startsWith(`ws://${NODE_B.http}/socket.io/`)), `${p.name} opened a WebSocket to B: ${p.wsUrls}`);
      assert.equal(await p.page.evaluate(() => location.origin), nodeA.baseUrl, `${p.name}'s page is still A's`);
      assert.equal(v.identity, before[p.name].identity, `${p.name} kept its identity (same token)`);
      const moved = await roomEvents(p.page, 'migrated');
      assert.equal(moved.length, 1, `${p.name} moved once`);
      assert.equal(moved[0].data[0].url, NODE_B_URL);
      const states = await p.page.evaluate(() => window.__states);
      assert.ok(states.some(([s, text]) => s === 'reconnecting' && /다른 서버로 이동 중/.test(text) && /Moving to another server/.test(text)),
        `${p.name} showed "moving to another server": ${JSON.stringify(states)}`);
      assert.deepEqual(v.local.map((l) => [l.source, l.muted, l.enabled, l.readyState]),
        before[p.name].local.map((l) => [l.source, l.muted, !l.muted, 'live']), `${p.name} publishes the same tracks on B`);
      // Both old PCs are closed; the client's PCs now are new ones.
      const pcs = await p.page.evaluate((n) => ({
        oldOpen: window.__pcs.slice(0, n).filter((pc) => pc.signalingState !== 'closed').length,
        publisher: window.__pcs.indexOf(window.studyroom.publisherPc),
        subscriber: window.__pcs.indexOf(window.studyroom.subscriberPc),
      }), p.pcsBefore);
      assert.equal(pcs.oldOpen, 0, `${p.name}: PCs from A left open`);
      assert.ok(pcs.publisher >= p.pcsBefore && pcs.subscriber >= p.pcsBefore, `${p.name} uses new PCs: ${JSON.stringify(pcs)}`);
    }

    // ---- media again, on B ------------------------------------------------------------------
    const anaB = { ...ana, id: after.Ana.id };
    const benB = { ...ben, id: after.Ben.id };
    await waitForVideoFrom(benB, anaB.id, { source: 'camera' });
    await waitForVideoFrom(benB, anaB.id, { source: 'screen' });
    await waitForMediaFrom(anaB, [benB.id]);
    const anaSeen = await waitFor(async () => (await clientView(ben.page)).others.find((o) => o.id === anaB.id && o.tracks.length === 3),
      { what: 'Ben to know Ana\'s three tracks on B', progress: () => clientView(ben.page) });
    assert.deepEqual(anaSeen.tracks.map((tr) => [tr.source, tr.muted]).sort(),
      [['camera', false], ['microphone', true], ['screen', false]], 'Ana\'s tracks on B, mute state kept');
    assert.equal(anaSeen.identity, before.Ana.identity);
    await waitFor(async () => (await metric(NODE_B_METRICS, 'studyroom_participants')) === 2,
      { what: 'B\'s metrics to count both participants', progress: () => metric(NODE_B_METRICS, 'studyroom_participants') });

    // ---- A is gone, cleanly and in time -----------------------------------------------------
    const { afterMs: exitAfterMs, ...exit } = await exited;
    assert.deepEqual(exit, { code: 0, signal: null }, 'A exits with status 0');
    assert.ok(exitAfterMs <= DRAIN_TIMEOUT_S * 1000 + 2000, `A exited ${exitAfterMs} ms after SIGTERM (drain timeout ${DRAIN_TIMEOUT_S} s)`);
    // The lurker left well before the drain timeout: an empty node does not wait for it.
    const leftAfterMs = leftAt - termAt;
    assert.ok(leftAfterMs < DRAIN_TIMEOUT_S * 1000 - 3000, `the pages took ${leftAfterMs} ms to move, too long to tell`);
    assert.ok(exitAfterMs < leftAfterMs + 2500, `A exited ${exitAfterMs - leftAfterMs} ms after its last participant left`);
    assert.equal(nodeB.exited(), false, 'B still runs');
  } catch (e) {
    console.error(await diagnostics());
    throw e;
  }
});

test('a page opened on a draining node joins the node it redirects to', { timeout: 120000 }, async (t) => {
  const nodes = [];
  const sockets = [];
  let page = null;
  let browser = null;
  t.after(async () => {
    if (page) await page.close();
    if (browser) await browser.close().catch(() => {});
    for (const s of sockets) s.close();
    for (const n of nodes) await n.stop();
  });
  try {
    nodes.push(await startServer(NODE_B));
    nodes.push(await startServer(NODE_A));
    const [, nodeA] = nodes;
    browser = await launchBrowser();
    // Someone on A keeps it draining (not exited) while the page arrives.
    const lurker = await sioClient(nodeA.baseUrl, await devToken(nodeA.baseUrl, { room: ROOM, name: 'Lurker', role: 'learner', publish: '0' }));
    sockets.push(lurker);
    const joined = await lurker.timeout(5000).emitWithAck('join', {});
    assert.ok(joined && joined.participant, `the lurker joined A: ${JSON.stringify(joined)}`);
    nodeA.signal('SIGTERM');
    await waitFor(async () => (await fetch(`${nodeA.baseUrl}/readyz`)).status === 503,
      { what: 'A\'s /readyz to answer 503 while draining', timeoutMs: 5000, intervalMs: 100 });

    page = await openParticipant(browser, nodeA.baseUrl, { room: ROOM, name: 'Cal', joinTimeoutMs: 30000 });
    const v = await clientView(page.page);
    assert.equal(v.url, NODE_B_URL, `Cal joined B: ${JSON.stringify(v)}`);
    assert.equal(v.server, NODE_B_URL);
    assert.deepEqual(v.local.map((l) => [l.source, !!l.trackId]), [['camera', true], ['microphone', true]], 'Cal publishes on B');
    const refused = page.consoleLines.filter((l) => /"code":"draining"/.test(l));
    assert.ok(refused.length >= 1, 'Cal\'s first join (on A) was refused with draining');
    assert.equal(await metric(NODE_B_METRICS, 'studyroom_participants'), 1, 'B counts Cal');

    await lurker.timeout(5000).emitWithAck('leave', {});
    assert.deepEqual(await nodeA.waitForExit(DRAIN_TIMEOUT_S * 1000 + 5000), { code: 0, signal: null });
  } catch (e) {
    for (const [name, n] of [['B', nodes[0]], ['A', nodes[1]]]) {
      if (n) console.error(`==== node ${name} (exit: ${JSON.stringify(n.exitInfo())})\n${n.logs().split('\n').slice(-150).join('\n')}`);
    }
    if (page) console.error(`==== Cal\n${page.consoleLines.slice(-80).join('\n')}`);
    throw e;
  }
});
