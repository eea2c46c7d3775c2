// OpenTelemetry: with OTEL_EXPORTER_OTLP_ENDPOINT set, studyroom exports its request spans
// as OTLP/HTTP protobuf. A minimal collector (an HTTP server on 127.0.0.1:4318 that keeps
// what is POSTed to /v1/traces) must receive a `join` span of service `studyroom` after a
// client joined; the batch is flushed at the latest when the server shuts down (SIGTERM).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { io } from 'socket.io-client';
import { startServer } from './lib/server.js';
import { waitFor } from './lib/stats.js';

test('request spans reach an OTLP/HTTP collector', async (t) => {
  const posts = [];
  const collector = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      posts.push({ path: req.url, type: req.headers['content-type'], body: Buffer.concat(chunks) });
      res.writeHead(200, { 'content-type': 'application/x-protobuf' });
      res.end();
    });
  });
  await new Promise((r) => collector.listen(4318, '127.0.0.1', r));
  // The collector closes whatever happens: a server that fails to start must not leave
  // this file hanging on an open listener.
  t.after(() => collector.close());
  const server = await startServer({ args: ['--drain-timeout-secs', '1'], env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' } });
  try {
    const { token } = await (await fetch(`${server.baseUrl}/dev/token?room=otel&name=Olga`)).json();
    const socket = io(`${server.baseUrl}/study`, { auth: { token }, transports: ['websocket'], reconnection: false });
    await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('connect_error', reject); });
    const ack = await socket.timeout(5000).emitWithAck('join', {});
    assert.ok(ack.participant, JSON.stringify(ack));
    socket.close();
    server.signal('SIGTERM');
    await server.waitForExit(15000);
    await waitFor(() => posts.find((p) => p.path === '/v1/traces' && p.body.includes('join')), { what: 'a trace batch with the join span', timeoutMs: 10000 });
    const batch = posts.find((p) => p.path === '/v1/traces' && p.body.includes('join'));
    assert.match(batch.type, /application\/x-protobuf/);
    assert.ok(batch.body.includes('studyroom'), 'service.name studyroom in the resource');
  } finally {
    await server.stop();
    collector.close();
  }
});
