// The world of a signaling-*.test.js file: one `studyroom --dev` on the default ports for
// the whole file, socket.io-client sockets on /study that record every push, and the small
// helpers those tests assert with (acks, error codes, polling the inbox).
// Why one file-wide server: the signaling tests are many short exchanges; a server per test
// would spend most of the run starting servers. Its log is printed under any failing test.
import { before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { io } from 'socket.io-client';
import { startServer } from './server.js';
import { devToken as devTokenAt, request } from './sio-client.js';

export { request };

/** Where the file's server listens (lib/server.js's default). */
export const BASE = 'http://127.0.0.1:5002';
const LOG_CHARS_SHOWN = 20_000;

/**
 * Registers the file's before/after/afterEach hooks and returns the harness `h`:
 * `h.client(token, opts)`, `h.joined(query)`, `h.assertAlive()`, `h.server`.
 * `setup(h)` runs once the server is up (a second root-level before() would run
 * concurrently with the first one on Node 20). `args`: extra server flags for the file.
 */
export function harness(setup = async () => {}, { args = [] } = {}) {
  const h = { server: null, sockets: [] };
  before(async () => {
    assert.ok(!(await healthy()), `something already answers on ${BASE} (a leftover server?)`);
    // RUST_LOG from the environment wins, as it does for a server started by hand.
    h.server = await startServer({ args, env: { RUST_LOG: process.env.RUST_LOG ?? 'info' } });
    await setup(h);
  });
  after(async () => {
    for (const s of h.sockets) s.close();
    if (h.server) await h.server.stop();
  });
  afterEach((t) => {
    // Clients live for one test, unless marked `keep` (a file-wide client).
    for (const s of h.sockets.filter((s) => !s.keep)) s.close();
    h.sockets = h.sockets.filter((s) => s.keep);
    if (!t.passed && h.server) {
      const exit = h.server.exited() ? ` (exited: ${JSON.stringify(h.server.exitInfo())})` : '';
      console.log(`---- studyroom log${exit} ----\n${h.server.logs().slice(-LOG_CHARS_SHOWN)}\n---- end of log ----`);
    }
  });
  /** A Socket.IO client on /study that records every pushed event in `socket.inbox`. */
  h.client = (token, opts = {}) => {
    const socket = io(`${BASE}/study`, {
      auth: token === undefined ? {} : { token },
      transports: ['websocket'], reconnection: false, forceNew: true, timeout: 5000, ...opts,
    });
    socket.inbox = [];
    socket.onAny((ev, ...args) => socket.inbox.push({ ev, data: args[0] }));
    socket.on('disconnect', (reason) => { socket.disconnectReason = reason; });
    h.sockets.push(socket);
    return socket;
  };
  /** Connects with a fresh dev token and joins; returns { socket, ack, token }. */
  h.joined = async (query) => {
    const token = await devToken(query);
    const socket = h.client(token.token);
    await connected(socket);
    const ack = await request(socket, 'join', {});
    assert.ok(!ack?.error, `join failed: ${JSON.stringify(ack)}`);
    return { socket, ack, token };
  };
  h.assertAlive = () => assert.ok(!h.server.exited(), `studyroom exited: ${JSON.stringify(h.server.exitInfo())}`);
  return h;
}

async function healthy() {
  try {
    const r = await fetch(`${BASE}/healthz`, { signal: AbortSignal.timeout(1000) });
    return r.status === 200;
  } catch {
    return false;
  }
}

/** GET /dev/token from the file's server; returns { token, room, identity }. */
export function devToken(query) {
  return devTokenAt(BASE, query);
}

/** Resolves once connected; rejects with the connect_error (message = error code). */
export function connected(socket) {
  return new Promise((resolve, reject) => {
    if (socket.connected) return resolve();
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
}

/** The ack is an error with `code` and a message; `what` names the case in the failure. */
export function assertError(ack, code, what) {
  assert.ok(ack && typeof ack.error === 'object', `${what}: expected error ${code}, got ${JSON.stringify(ack)}`);
  assert.equal(ack.error.code, code, `${what}: wrong error code in ${JSON.stringify(ack)}`);
  assert.ok(typeof ack.error.message === 'string' && ack.error.message.length > 0,
    `${what}: error without a message: ${JSON.stringify(ack)}`);
}

/** Polls `fn` until it returns something truthy; fails after `ms` naming `what`. */
export async function until(fn, what, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await delay(20);
  }
}

/** Pushed events of one name received so far by a harness client. */
export function received(socket, event) {
  return socket.inbox.filter((e) => e.ev === event).map((e) => e.data);
}
