// Shared pieces of the join load tests: dev tokens, the join metrics, and one
// connect -> join (ack) -> hold -> leave (ack) -> close session on /study.
import http from 'k6/http';
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { session } from './sio.js';

// Time from emitting `join` to its ack (ms).
export const joinAckMs = new Trend('join_ack_ms', true);
// Time from emitting `leave` to its ack (ms).
export const leaveAckMs = new Trend('leave_ack_ms', true);
// Joins emitted, and joins answered with a result (not an error): they must be equal.
export const joinsAttempted = new Counter('joins_attempted');
export const joinsAcked = new Counter('joins_acked');

export const THRESHOLDS = {
  join_ack_ms: ['p(95)<250'],
  sio_errors: ['rate<0.01'],
  joins_acked: ['count>0'],
};

// Fails fast, with the address, when no server answers at `base`.
export function requireServer(base) {
  const r = http.get(`${base}/healthz`, { timeout: '5s' });
  if (r.status !== 200) {
    throw new Error(`no studyroom server at ${base} (GET /healthz -> ${r.status} ${r.error || ''}); start one with: studyroom --dev`);
  }
}

function tokenUrl(base, room, name) {
  return `${base}/dev/token?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}`;
}

function parseToken(r, room) {
  let body = null;
  try { body = r.json(); } catch (e) { /* reported below */ }
  if (r.status !== 200 || !body || typeof body.token !== 'string') {
    throw new Error(`GET /dev/token for room ${room} -> ${r.status} ${String(r.body).slice(0, 200)} (is the server running with --dev?)`);
  }
  return { token: body.token, identity: body.identity, room };
}

export function fetchToken(base, room, name) {
  return parseToken(http.get(tokenUrl(base, room, name), { tags: { name: 'dev_token' } }), room);
}

// Fetches many tokens, `chunk` requests at a time. specs: [{room, name}].
export function fetchTokens(base, specs, chunk = 50) {
  const out = [];
  for (let i = 0; i < specs.length; i += chunk) {
    const part = specs.slice(i, i + chunk);
    const rs = http.batch(part.map((s) => ['GET', tokenUrl(base, s.room, s.name), null, { tags: { name: 'dev_token' } }]));
    rs.forEach((r, k) => out.push(parseToken(r, part[k].room)));
  }
  return out;
}

// One participant's visit: connect, join, stay, leave, close. It stays holdMs after its join
// ack, or, with opts.leaveAt (epoch ms), until that instant (so a whole room leaves together).
// Returns { ok, error, others, ackedAt }: `others` counts the other participant ids this client
// learned of (join ack list + participantJoined events) before leaving.
export function joinAndLeave(base, tok, holdMs, opts = {}) {
  const others = {};
  let self = null;
  let joined = false;
  let left = false;
  let ackedAt = 0;
  const res = session(base, tok.token, (c) => {
    c.on('participantJoined', (p) => { if (p && p.id) others[p.id] = true; });
    joinsAttempted.add(1);
    c.emit('join', {}, (ack, ms) => {
      joined = !!(ack.participant && typeof ack.participant.id === 'string' && Array.isArray(ack.participants));
      if (!joined) return c.close();
      joinsAcked.add(1);
      joinAckMs.add(ms);
      self = ack.participant.id;
      ackedAt = Date.now();
      for (const p of ack.participants) others[p.id] = true;
      const leave = () => c.emit('leave', {}, (lack, lms) => {
        left = lack.ok === true;
        leaveAckMs.add(lms);
        c.close();
      });
      const hold = opts.leaveAt ? opts.leaveAt - Date.now() : holdMs;
      if (hold > 0) c.setTimeout(leave, hold); else leave();
    });
  }, opts);
  check(res, {
    'ws upgraded (101)': (r) => r.status === 101,
    'join acked': () => joined,
    'leave acked': () => left,
  });
  delete others[self];
  return { ok: res.ok && joined && left, error: res.error, others: Object.keys(others).length, ackedAt };
}
