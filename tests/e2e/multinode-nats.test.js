// NATS commands in a two-node deployment (Redis + NATS shared): both nodes answer
// `studyroom.cmd.*` in one queue group, so a command about a room reaches either node; the
// one that does not host the room forwards it to the host (`via` in the reply names the
// forwarder). rooms.list shows the whole deployment with each room's host, whichever node
// answers; participant.remove and room.close act on the host's clients every time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, StringCodec } from 'nats';
import { startNats, startRedis } from './lib/server.js';
import { REDIS_PORT, startNode, nodeUrl, processLogs } from './lib/cluster.js';
import { joinClient } from './lib/sio-client.js';
import { waitFor } from './lib/stats.js';

const NATS_PORT = 14232;
const sc = StringCodec();

async function command(nc, name, body) {
  const m = await nc.request(`studyroom.cmd.${name}`, sc.encode(JSON.stringify(body)), { timeout: 10000 });
  return JSON.parse(sc.decode(m.data));
}

test('commands reach the room on its host node, forwarded by the other node', { timeout: 180000 }, async (t) => {
  const storeDir = await mkdtemp(path.join(os.tmpdir(), 'studyroom-nats-'));
  const procs = {};
  let nc = null;
  const clients = [];
  t.after(async () => {
    for (const c of clients) c.close();
    if (nc) await nc.close().catch(() => {});
    for (const p of [procs.b, procs.a, procs.redis, procs.nats]) if (p) await p.stop();
    await rm(storeDir, { recursive: true, force: true });
  });
  try {
    procs.redis = await startRedis({ port: REDIS_PORT });
    procs.nats = await startNats({ port: NATS_PORT, storeDir });
    const env = { NATS_URL: procs.nats.url };
    procs.a = await startNode('a', procs.redis.url, { env });
    procs.b = await startNode('b', procs.redis.url, { env });
    nc = await connect({ servers: procs.nats.url });

    // Room "on-a" starts on node a (the node a join reaches hosts a new room on a tie),
    // "on-b" on node b. Eight learners in "on-a", one in "on-b".
    for (let i = 0; i < 8; i++) clients.push(await joinClient(nodeUrl('a'), { room: 'on-a', name: `L${i}` }));
    const bob = await joinClient(nodeUrl('b'), { room: 'on-b', name: 'Bob' });
    clients.push(bob);

    // Both nodes answer (queue group) and both lists show the whole deployment.
    const answered = new Set();
    await waitFor(async () => {
      const r = await command(nc, 'rooms.list', {});
      if (!r.ok) return false;
      const byRoom = Object.fromEntries(r.rooms.map((x) => [x.room, x]));
      if (byRoom['on-a']?.participants.length !== 8 || byRoom['on-b']?.participants.length !== 1) return false;
      assert.deepEqual([byRoom['on-a'].node, byRoom['on-b'].node], ['node-a', 'node-b']);
      answered.add(r.node);
      return answered.size === 2;
    }, { what: 'rooms.list from both nodes showing both rooms with their hosts', timeoutMs: 30000, intervalMs: 50 });

    // Remove the eight learners of "on-a" one by one: each removal acts on node a, and
    // (queue group) some arrive at node b first and are forwarded.
    const vias = [];
    for (const c of clients.slice(0, 8)) {
      const r = await command(nc, 'participant.remove', { room: 'on-a', participant: c.id, reason: 'test' });
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.node, 'node-a', `acted on the host: ${JSON.stringify(r)}`);
      vias.push(r.via ?? null);
      await waitFor(() => c.inbox.some((m) => m.event === 'removed') && !c.socket.connected, { what: `${c.id} removed` });
    }
    // An unknown participant of a room on a: participant_not_found from a, wherever asked.
    for (let i = 0; i < 8; i++) {
      const r = await command(nc, 'participant.remove', { room: 'on-b', participant: 'P1', reason: 'x' });
      assert.deepEqual([r.ok, r.error.code, r.node], [false, 'participant_not_found', 'node-b']);
      vias.push(r.via ?? null);
    }
    t.diagnostic(`forwarded: ${vias.filter(Boolean).length} of ${vias.length}`);
    assert.ok(vias.every((v) => v === null || v === 'node-a' || v === 'node-b'), `${vias}`);
    assert.ok(vias.some((v) => v !== null), 'at least one of 16 commands was forwarded (odds of none: 1 in 65 536)');

    // room.close of b's room, and a room nobody hosts.
    const closed = await command(nc, 'room.close', { room: 'on-b', reason: 'done' });
    assert.deepEqual([closed.ok, closed.removed, closed.node], [true, 1, 'node-b']);
    await waitFor(() => bob.inbox.some((m) => m.event === 'roomClosed' && m.data.reason === 'done'), { what: 'Bob told the room closed' });
    const none = await command(nc, 'room.close', { room: 'nowhere' });
    assert.deepEqual([none.ok, none.error.code], [false, 'room_not_found']);
  } catch (e) {
    console.error(processLogs(procs));
    throw e;
  }
});
