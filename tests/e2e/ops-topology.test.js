// The docker-compose.yml topology, natively, as a smoke test: redis-server and nats-server
// (JetStream) on loopback, then studyroom in production mode (no --dev) with the
// environment docker-compose.yml gives it (REDIS_URL, NATS_URL, STUDYROOM_NODE_IP, HTTP on
// 5002, media 40000-40100, metrics 9100). A socket.io-client joins a room with a token we
// sign ourselves; /metrics must then count it and report Redis and NATS up; /healthz and
// /readyz answer 200. Every process is stopped by its own PID afterwards.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { io } from 'socket.io-client';
import { startServer, startRedis, startNats } from './lib/server.js';
import { waitFor } from './lib/stats.js';

const API_SECRET = 'ops-topology-test-secret-0123456789';
const BASE = 'http://127.0.0.1:5002';
const METRICS = 'http://127.0.0.1:9100/metrics';
const REDIS_PORT = 16379;
const NATS_PORT = 14222;

const procs = {};
let natsDir = null;
const sockets = [];

before(async () => {
  natsDir = await mkdtemp(path.join(os.tmpdir(), 'studyroom-nats-'));
  procs.redis = await startRedis({ port: REDIS_PORT });
  procs.nats = await startNats({ port: NATS_PORT, storeDir: natsDir });
  // docker-compose.yml's `environment:` for studyroom, with the services on loopback ports.
  procs.studyroom = await startServer({
    dev: false,
    env: {
      STUDYROOM_HTTP: '0.0.0.0:5002',
      STUDYROOM_NODE_IP: '127.0.0.1',
      STUDYROOM_API_SECRET: API_SECRET,
      STUDYROOM_LOG_JSON: 'false',
      STUDYROOM_MEDIA_PORTS: '40000-40100',
      REDIS_URL: `redis://127.0.0.1:${REDIS_PORT}`,
      NATS_URL: `nats://127.0.0.1:${NATS_PORT}`,
    },
  });
});

after(async () => {
  for (const s of sockets) s.close();
  for (const name of ['studyroom', 'nats', 'redis']) if (procs[name]) await procs[name].stop();
  if (natsDir) await rm(natsDir, { recursive: true, force: true });
});

function logsOnFailure(t) {
  if (t.passed !== false) return;
  for (const [name, p] of Object.entries(procs)) {
    console.error(`---- ${name} (pid ${p.pid}, exit ${JSON.stringify(p.exitInfo())}) ----\n${p.logs().split('\n').slice(-150).join('\n')}`);
  }
}

function signToken(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${unsigned}.${createHmac('sha256', API_SECRET).update(unsigned).digest('base64url')}`;
}

/** Every unlabelled sample of a Prometheus text exposition: name -> value. */
async function scrape() {
  const res = await fetch(METRICS);
  assert.equal(res.status, 200, `GET ${METRICS}`);
  const samples = new Map();
  for (const line of (await res.text()).split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && !samples.has(m[1])) samples.set(m[1], Number(m[2]));
  }
  return samples;
}

test('the compose topology: a participant joins; metrics, health and readiness agree', { timeout: 60000 }, async (t) => {
  t.after(() => logsOnFailure(t));
  for (const p of ['/healthz', '/readyz']) {
    assert.equal((await fetch(`${BASE}${p}`)).status, 200, `GET ${p}`);
  }
  assert.equal((await fetch(`${BASE}/dev/token?room=r&name=n&role=learner`)).status, 404,
    'production mode serves no dev tokens');

  const exp = Math.floor(Date.now() / 1000) + 600;
  const socket = io(`${BASE}/study`, {
    auth: { token: signToken({ sub: 'ops-1', name: 'Ops', room: 'ops-room', role: 'learner', exp }) },
    transports: ['websocket'], reconnection: false, forceNew: true, timeout: 5000,
  });
  sockets.push(socket);
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', (e) => reject(new Error(`handshake refused: ${e.message}`)));
  });
  const ack = await socket.timeout(5000).emitWithAck('join', {});
  assert.ok(ack && ack.participant && !ack.error, `join ack: ${JSON.stringify(ack)}`);
  assert.equal(ack.participant.identity, 'ops-1');

  let last = null;
  await waitFor(async () => {
    last = Object.fromEntries(await scrape());
    return last.studyroom_participants === 1 && last.studyroom_rooms === 1 && last.studyroom_socketio_connections >= 1
      && last.studyroom_redis_up === 1 && last.studyroom_nats_up === 1;
  }, { what: 'metrics: 1 participant, 1 room, a Socket.IO connection, Redis and NATS up', timeoutMs: 15000,
    progress: () => ['studyroom_participants', 'studyroom_rooms', 'studyroom_socketio_connections', 'studyroom_redis_up',
      'studyroom_nats_up'].map((k) => `${k}=${last?.[k]}`).join(' ') });
});

test('studyroom_redis_up drops to 0 when Redis goes away, and the node keeps serving', { timeout: 60000 }, async (t) => {
  t.after(() => logsOnFailure(t));
  await procs.redis.stop();
  let last = null;
  await waitFor(async () => {
    last = await scrape();
    return last.get('studyroom_redis_up') === 0;
  }, { what: 'studyroom_redis_up to become 0 after redis-server stopped', timeoutMs: 30000, intervalMs: 500,
    progress: () => `studyroom_redis_up=${last?.get('studyroom_redis_up')} studyroom_nats_up=${last?.get('studyroom_nats_up')}` });
  assert.equal(last.get('studyroom_nats_up'), 1, 'NATS is still up');
  assert.equal((await fetch(`${BASE}/healthz`)).status, 200, 'the node is alive without Redis');
  assert.equal(procs.studyroom.exited(), false);
});
