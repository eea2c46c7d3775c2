// A protocol-level participant (socket.io-client, no media) for e2e tests that need a
// learner or proctor without a browser page: dev tokens, connect + join, requests with acks.
// Why: the proctoring tests drive focus events and proctor-only requests directly, and a
// refused request must fail the test with the server's own error code.
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

const ACK_TIMEOUT_MS = 5000;

/** GET /dev/token?query; returns { token, room, identity }. */
export async function devToken(baseUrl, query) {
  const q = new URLSearchParams(query);
  const res = await fetch(`${baseUrl}/dev/token?${q}`);
  const text = await res.text();
  assert.equal(res.status, 200, `GET /dev/token?${q} -> ${res.status} ${text}`);
  const body = JSON.parse(text);
  assert.equal(typeof body.token, 'string', `no token in ${text}`);
  return body;
}

/**
 * Sends `event` with `args` (none, one payload, or several: malformed calls are tests too)
 * and resolves with the ack (a result or `{error}`); rejects if none comes.
 */
export async function request(socket, event, ...args) {
  try {
    return await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, ...args);
  } catch (e) {
    const gone = socket.disconnectReason ? `, disconnect reason=${socket.disconnectReason}` : '';
    throw new Error(`no ack for '${event}' within ${ACK_TIMEOUT_MS} ms (${e.message}; connected=${socket.connected}${gone})`);
  }
}

/** Like request() but the ack must not be an error; returns it. */
export async function ok(socket, event, payload) {
  const ack = await request(socket, event, payload);
  assert.ok(ack && !ack.error, `${event} ${JSON.stringify(payload)} was refused: ${JSON.stringify(ack)}`);
  return ack;
}

/**
 * Connects to `${baseUrl}/study` with a fresh dev token for {room, name, role} (other keys,
 * e.g. `chat: '0'`, go to /dev/token as they are) and joins.
 * Returns { socket, ack, token, identity, id, inbox, close() }; `inbox` holds every push.
 */
export async function joinClient(baseUrl, { room, name, role = 'learner', ...grants }) {
  const { token, identity } = await devToken(baseUrl, { room, name, role, ...grants });
  const socket = io(`${baseUrl}/study`, {
    auth: { token }, transports: ['websocket'], reconnection: false, forceNew: true, timeout: ACK_TIMEOUT_MS,
  });
  const inbox = [];
  socket.onAny((event, data) => inbox.push({ event, data }));
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', (e) => reject(new Error(`${name}: connect refused: ${e.message}`)));
  });
  const ack = await ok(socket, 'join', {});
  return { socket, ack, token, identity, id: ack.participant.id, inbox, close: () => socket.close() };
}
