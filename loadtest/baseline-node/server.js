// Benchmark baseline for the join storm (loadtest/k6/join_storm.js): a plain socket.io 4.x
// server doing what studyroom's signaling does for a join *without media*: check an HS256
// token on connect, put the socket in its room, answer `join` with an ack of the same shape
// (docs/protocol.md), tell the room `participantJoined`; `leave` acks, tells the room
// `participantLeft`, disconnects. Why it exists: "is a studyroom join slow?" needs a
// reference that costs only Socket.IO + JSON on the same machine in the same run
// (loadtest/join_baseline.sh runs both). Serves GET /healthz and GET /dev/token like
// `studyroom --dev`, so the k6 scripts run unchanged. Not a product: no media, no limits.
//   node loadtest/baseline-node/server.js          (PORT, default 5002)
'use strict';
const crypto = require('node:crypto');
const http = require('node:http');
const { Server } = require('socket.io');

const PORT = Number(process.env.PORT || 5002);
const SECRET = 'baseline-dev-secret';
const b64url = (buf) => Buffer.from(buf).toString('base64url');

function sign(claims) {
  const body = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
  return `${body}.${crypto.createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

function verify(token) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) return null;
  const mac = crypto.createHmac('sha256', SECRET).update(`${parts[0]}.${parts[1]}`).digest();
  const got = Buffer.from(parts[2], 'base64url');
  if (got.length !== mac.length || !crypto.timingSafeEqual(got, mac)) return null;
  const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  return claims.exp > Date.now() / 1000 ? claims : null;
}

const httpServer = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const reply = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (url.pathname === '/healthz') return res.end('ok');
  if (url.pathname !== '/dev/token') return reply(404, { error: { code: 'not_found', message: 'not found' } });
  const room = url.searchParams.get('room') || 'lobby';
  const name = (url.searchParams.get('name') || 'guest').slice(0, 64);
  const identity = `${name.replace(/[^A-Za-z0-9]/g, '')}-${crypto.randomBytes(4).toString('hex')}`;
  const exp = Math.floor(Date.now() / 1000) + 21600;
  return reply(200, { token: sign({ sub: identity, name, room, role: 'learner', exp }), room, identity });
});

// Same Engine.IO heartbeat as studyroom (docs/protocol.md, Keepalive).
const io = new Server(httpServer, { pingInterval: 10000, pingTimeout: 10000, transports: ['websocket', 'polling'] });
const study = io.of('/study');
study.use((socket, next) => {
  const claims = verify(socket.handshake.auth && socket.handshake.auth.token);
  if (!claims) return next(new Error('invalid_token'));
  socket.data.claims = claims;
  return next();
});

const rooms = new Map(); // room -> Map(participant id -> Participant)

study.on('connection', (socket) => {
  const { sub, name, room, role } = socket.data.claims;
  let me = null;
  const leaveRoom = (reason) => {
    if (!me) return;
    rooms.get(room).delete(me.id);
    if (rooms.get(room).size === 0) rooms.delete(room);
    socket.to(room).emit('participantLeft', { id: me.id, reason });
    me = null;
  };
  socket.on('join', (_payload, ack) => {
    if (typeof ack !== 'function') return;
    if (me) return ack({ error: { code: 'already_joined', message: 'already joined' } });
    me = { id: `p${crypto.randomBytes(6).toString('hex')}`, identity: sub, name, role, joinedAt: Date.now(), tracks: [] };
    if (!rooms.has(room)) rooms.set(room, new Map());
    const others = [...rooms.get(room).values()];
    rooms.get(room).set(me.id, me);
    socket.join(room);
    socket.to(room).emit('participantJoined', me);
    ack({
      protocol: 2, participant: me, participants: others, iceServers: [],
      resumeToken: crypto.randomBytes(16).toString('hex'), resumeWindowMs: 30000, chat: true, chatHistory: [],
    });
  });
  socket.on('leave', (_payload, ack) => {
    leaveRoom('left');
    if (typeof ack === 'function') ack({ ok: true });
    socket.disconnect(true);
  });
  socket.on('disconnect', () => leaveRoom('disconnected'));
});

httpServer.listen(PORT, '127.0.0.1', () => console.log(`baseline socket.io ${require('socket.io/package.json').version} on 127.0.0.1:${PORT}`));
