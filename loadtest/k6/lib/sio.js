// Minimal Socket.IO v5 client (Engine.IO 4 framing by hand) over k6/ws, for the /study namespace.
// Why: k6 has no Socket.IO client, and the load tests must speak the exact signaling protocol
// (docs/protocol.md) that browsers speak. Every request is an event with an ack; this helper
// connects with the token in the auth payload, emits with ack ids, answers Engine.IO pings,
// times acks, and counts every failed operation in the `sio_errors` Rate.
import ws from 'k6/ws';
import { Rate, Trend, Counter } from 'k6/metrics';

export const NSP = '/study';

// One sample per operation (namespace connect, each acked request): true = it failed.
export const sioErrors = new Rate('sio_errors');
// Time from opening the WebSocket to the namespace CONNECT packet (ms).
export const connectMs = new Trend('sio_connect_ms', true);
// Every ack latency, tagged with the event name.
export const ackMs = new Trend('sio_ack_ms', true);
// Pushed (server -> client) events received.
export const eventsReceived = new Counter('sio_events_received');

export function env(name, def) {
  const v = __ENV[name];
  return v === undefined || v === '' ? def : v;
}

// A positive integer from the environment, or a clear error.
export function envInt(name, def) {
  const raw = env(name, String(def));
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

export function baseUrl() {
  const b = env('BASE_URL', 'http://127.0.0.1:5002').replace(/\/+$/, '');
  if (!/^https?:\/\//.test(b)) throw new Error(`BASE_URL must start with http:// or https://, got "${b}"`);
  return b;
}

export function wsUrl(base) {
  return base.replace(/^http/, 'ws') + '/socket.io/?EIO=4&transport=websocket';
}

// Parses the Socket.IO part of an Engine.IO message packet (the text after the leading '4'):
// <type>[/nsp,][ackId][json]
export function parseSio(s) {
  const type = Number(s[0]);
  let i = 1;
  let nsp = '/';
  if (s[i] === '/') {
    const comma = s.indexOf(',', i);
    nsp = comma < 0 ? s.slice(i) : s.slice(i, comma);
    i = comma < 0 ? s.length : comma + 1;
  }
  let j = i;
  while (j < s.length && s.charCodeAt(j) >= 48 && s.charCodeAt(j) <= 57) j++;
  const id = j > i ? Number(s.slice(i, j)) : null;
  const data = j < s.length ? JSON.parse(s.slice(j)) : undefined;
  return { type, nsp, id, data };
}

let loggedErrors = 0;
function logError(kind, detail) {
  // A few lines per VU are enough to see what went wrong without flooding the output.
  if (loggedErrors++ < 3 || env('SIO_DEBUG', '') !== '') {
    console.warn(`sio error vu=${__VU} kind=${kind} ${detail || ''}`);
  }
}

// Opens one Socket.IO session on /study with `token` and calls `onReady(client)` once the
// namespace is connected. Blocks (k6/ws style) until the socket closes.
// client.emit(event, payload, onAck(result, ms)) sends with an ack id; a missing ack
// (timeout or close) or an `{error}` ack counts as a failure and closes the session.
// client.on(event, fn) handles pushed events; client.close() ends the session normally.
// Returns { ok, error, status }.
export function session(base, token, onReady, opts = {}) {
  const ackTimeoutMs = opts.ackTimeoutMs || 10000;
  const sessionTimeoutMs = opts.sessionTimeoutMs || 60000;
  // connectSeen: the namespace connect was counted in sio_errors (as a success or a failure).
  const st = { ok: true, error: null, done: false, connectSeen: false };
  const pending = {};
  const handlers = {};
  let nextId = 0;
  let sock = null;

  const fail = (kind, detail) => {
    if (st.error === null) st.error = kind;
    st.ok = false;
    if (!st.connectSeen) {
      st.connectSeen = true;
      sioErrors.add(true, { op: 'connect' });
    }
    logError(kind, detail);
    for (const id of Object.keys(pending)) {
      // Every outstanding request is one failed operation.
      sioErrors.add(true, { op: pending[id].event });
      delete pending[id];
    }
    st.done = true;
    if (sock) sock.close();
  };

  const client = {
    emit(event, payload, onAck) {
      const id = ++nextId;
      pending[id] = { event, t0: Date.now(), onAck };
      sock.send(`42${NSP},${id}${JSON.stringify([event, payload === undefined ? {} : payload])}`);
      sock.setTimeout(() => {
        if (pending[id]) fail('ack_timeout', `event=${event} after ${ackTimeoutMs}ms`);
      }, ackTimeoutMs);
    },
    on(event, fn) { handlers[event] = fn; },
    close() { st.done = true; sock.close(); },
    setTimeout(fn, ms) { sock.setTimeout(fn, ms); },
  };

  const onAckPacket = (id, data) => {
    const p = pending[id];
    if (!p) return fail('unknown_ack', `id=${id}`);
    delete pending[id];
    const ms = Date.now() - p.t0;
    const result = Array.isArray(data) ? data[0] : undefined;
    if (!result || typeof result !== 'object' || result.error) {
      sioErrors.add(true, { op: p.event });
      const code = result && result.error ? result.error.code : 'bad_ack';
      return fail(`ack_error:${code}`, `event=${p.event} ${JSON.stringify(data).slice(0, 200)}`);
    }
    sioErrors.add(false, { op: p.event });
    ackMs.add(ms, { event: p.event });
    if (p.onAck) p.onAck(result, ms);
  };

  const onMessage = (m) => {
    const eio = m[0];
    if (eio === '2') return sock.send('3'); // ping -> pong
    if (eio === '0') return sock.send(`40${NSP},${JSON.stringify({ token })}`); // open -> connect
    if (eio === '1') return st.done ? undefined : fail('eio_close');
    if (eio !== '4') return undefined; // pong, noop
    let p;
    try { p = parseSio(m.slice(1)); } catch (e) { return fail('bad_packet', m.slice(0, 200)); }
    if (p.nsp !== NSP) return undefined;
    switch (p.type) {
      case 0: // CONNECT
        st.connectSeen = true;
        sioErrors.add(false, { op: 'connect' });
        connectMs.add(Date.now() - t0);
        return onReady(client);
      case 4: // CONNECT_ERROR
        return fail(`connect_error:${p.data && p.data.message}`);
      case 1: // DISCONNECT by the server
        if (!st.done) fail('server_disconnect', `pending=${Object.keys(pending).length}`);
        return undefined;
      case 2: { // EVENT
        eventsReceived.add(1);
        const [event, payload] = p.data;
        if (event === 'error') {
          sioErrors.add(true, { op: 'server_error' });
          return fail(`server_error:${payload && payload.code}`, JSON.stringify(payload).slice(0, 200));
        }
        if (handlers[event]) handlers[event](payload);
        return undefined;
      }
      case 3: // ACK
        return onAckPacket(p.id, p.data);
      default:
        return fail('unexpected_packet', m.slice(0, 200));
    }
  };

  const t0 = Date.now();
  let res = null;
  try {
    res = ws.connect(wsUrl(base), null, (socket) => {
      sock = socket;
      socket.on('message', onMessage);
      socket.on('error', (e) => fail('ws_error', e && e.error ? e.error() : String(e)));
      socket.on('close', () => { if (!st.done) fail('ws_closed_early'); });
      socket.setTimeout(() => { if (!st.done) fail('session_timeout', `${sessionTimeoutMs}ms`); }, sessionTimeoutMs);
    });
  } catch (e) {
    fail('ws_connect', String(e));
    return { ok: false, error: st.error, status: 0 };
  }
  const status = res ? res.status : 0;
  if (status !== 101 && st.ok) fail(`ws_status_${status}`, res && res.error);
  return { ok: st.ok, error: st.error, status };
}
