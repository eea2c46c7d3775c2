// The embedded TURN relay of a real `studyroom --dev`, driven by coturn's turnutils_uclient
// (an independent TURN client) and by our small RFC client (tests/e2e/lib/turn-client.js)
// where the exact error code matters: relaying over UDP, TCP and TLS with REST credentials,
// wrong/expired credentials refused, denied peers (403), the per-user quota (486),
// garbage on the TURN ports that must not stop it serving, and the pre-authentication
// Allocate limit per source address (508) that a flood meets while other addresses relay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { startServer } from './lib/server.js';
import { ATTR, METHOD, TurnClient, decode, encode, restCredential } from './lib/turn-client.js';

const SECRET = 'e2e-turn-secret';
const LOOPBACK_PEERS = ['--turn-allow-peer', '127.0.0.0/8'];
const now = () => Math.floor(Date.now() / 1000);

function uclient(args, timeoutMs = 60000) {
  return new Promise((resolve) => {
    const child = spawn('turnutils_uclient', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => { clearTimeout(timer); resolve({ code, signal, out }); });
  });
}

/** uclient's final totals: "tot_send_msgs=N, tot_recv_msgs=M" (the line without msz=). */
function totals(out) {
  const lines = out.split('\n').filter((l) => /tot_send_msgs=\d+, tot_recv_msgs=\d+\s*$/.test(l));
  const last = lines.at(-1);
  if (!last) return null;
  const [, sent, recv] = last.match(/tot_send_msgs=(\d+), tot_recv_msgs=(\d+)/);
  const lost = out.match(/Total lost packets (\d+)/);
  return { sent: Number(sent), recv: Number(recv), lost: lost ? Number(lost[1]) : null };
}

async function withServer(args, fn) {
  const server = await startServer({ args: ['--turn-secret', SECRET, ...args] });
  try {
    return await fn(server);
  } catch (e) {
    console.error(`--- studyroom log ---\n${server.logs().split('\n').slice(-200).join('\n')}`);
    throw e;
  } finally {
    await server.stop();
  }
}

const CLIENTS = 4;
const MESSAGES = 50;

test('turnutils_uclient relays every message over UDP, TCP and TLS with REST credentials', { timeout: 120000 }, async () => {
  await withServer([...LOOPBACK_PEERS, '--turn-user-quota', '50'], async (server) => {
    const common = ['-W', SECRET, '-u', 'uclient', '-m', String(CLIENTS), '-n', String(MESSAGES), '-l', '400', '-z', '5', '-y', '-c', '-X', '-e', '127.0.0.1'];
    for (const [name, extra] of [['udp', []], ['tcp', ['-t']], ['tls', ['-t', '-S', '-p', '5349']]]) {
      const r = await uclient([...common, ...extra, '127.0.0.1']);
      const t = totals(r.out);
      assert.equal(r.code, 0, `${name}: uclient failed:\n${r.out.slice(-3000)}`);
      assert.ok(t, `${name}: no totals in uclient output:\n${r.out.slice(-3000)}`);
      assert.equal(t.sent, CLIENTS * MESSAGES, `${name}: sent ${JSON.stringify(t)}`);
      assert.equal(t.recv, t.sent, `${name}: every message relayed back ${JSON.stringify(t)}`);
      assert.equal(t.lost, 0, `${name}: none lost`);
    }
    const metrics = await (await fetch('http://127.0.0.1:9100/metrics')).text();
    assert.match(metrics, /studyroom_turn_allocations \d+/);
    assert.ok(server.logs().includes('TURN relay listening'));
  });
});

test('wrong password and expired REST username are refused (uclient and exact 401)', { timeout: 120000 }, async () => {
  await withServer(LOOPBACK_PEERS, async () => {
    const wrong = await uclient(['-u', `${now() + 3600}:alice`, '-w', 'not-the-password', '-m', '1', '-n', '5', '-y', '-c', '-X', '-e', '127.0.0.1', '127.0.0.1'], 30000);
    assert.notEqual(wrong.code, 0, wrong.out);
    assert.match(wrong.out, /Cannot complete Allocation/);
    const expired = restCredential(SECRET, 'alice', now() - 60);
    const old = await uclient(['-u', expired.username, '-w', expired.password, '-m', '1', '-n', '5', '-y', '-c', '-X', '-e', '127.0.0.1', '127.0.0.1'], 30000);
    assert.notEqual(old.code, 0, old.out);
    assert.match(old.out, /Cannot complete Allocation/);
    // The same refusals, with the code.
    for (const transport of ['udp', 'tcp']) {
      const bad = await new TurnClient({ transport, username: `${now() + 3600}:alice`, password: 'nope' }).open();
      assert.deepEqual(await bad.allocate(), { error: 401 }, `${transport}: wrong password`);
      bad.close();
      const exp = await new TurnClient({ transport, ...expired }).open();
      assert.deepEqual(await exp.allocate(), { error: 401 }, `${transport}: expired username`);
      exp.close();
      const good = await new TurnClient({ transport, ...restCredential(SECRET, 'alice', now() + 600) }).open();
      const a = await good.allocate();
      assert.ok(a.relayed, `${transport}: valid credentials allocate: ${JSON.stringify(a)}`);
      good.close();
    }
  });
});

test('peers in denied ranges are refused with 403, our own media ports are not', { timeout: 120000 }, async () => {
  await withServer([], async () => {
    const c = await new TurnClient({ ...restCredential(SECRET, 'bob', now() + 600) }).open();
    const a = await c.allocate();
    assert.ok(a.relayed, JSON.stringify(a));
    for (const [host, port] of [['127.0.0.1', 9], ['10.0.0.1', 9], ['192.168.1.1', 9], ['169.254.0.1', 9], ['224.0.0.1', 9], ['0.0.0.0', 9]]) {
      assert.equal(await c.createPermission(host, port), 403, `${host}`);
      assert.equal(await c.channelBind(0x4001, host, port), 403, `${host}`);
    }
    // The SFU's own media address (advertised 127.0.0.1, ports 40000-40100) is the point of the relay.
    assert.equal(await c.createPermission('127.0.0.1', 40000), 'ok');
    assert.equal(await c.channelBind(0x4002, '127.0.0.1', 40001), 'ok');
    c.close();
    // uclient's loopback peers are denied too: its allocations work, its permissions fail.
    const r = await uclient(['-W', SECRET, '-u', 'carol', '-m', '1', '-n', '5', '-y', '-c', '-X', '-e', '127.0.0.1', '127.0.0.1'], 30000);
    const t = totals(r.out);
    assert.ok(r.code !== 0 || (t && t.recv === 0), `nothing relayed to a denied peer:\n${r.out.slice(-2000)}`);
  });
});

test('the per-user allocation quota answers 486', { timeout: 120000 }, async () => {
  await withServer([...LOOPBACK_PEERS, '--turn-user-quota', '2'], async () => {
    const cred = restCredential(SECRET, 'dave', now() + 600);
    const clients = [];
    for (let i = 0; i < 3; i++) clients.push(await new TurnClient({ ...cred }).open());
    assert.ok((await clients[0].allocate()).relayed);
    assert.ok((await clients[1].allocate()).relayed);
    assert.deepEqual(await clients[2].allocate(), { error: 486 });
    // Another user is not affected; a freed slot is reusable.
    const other = await new TurnClient({ ...restCredential(SECRET, 'erin', now() + 600) }).open();
    assert.ok((await other.allocate()).relayed);
    await clients[0].request(0x004, [[0x000d, Buffer.from([0, 0, 0, 0])]]); // Refresh lifetime 0
    assert.ok((await clients[2].allocate()).relayed, 'slot freed by Refresh(0)');
    for (const c of [...clients, other]) c.close();
  });
});

test('garbage on the TURN UDP and TCP ports does no harm', { timeout: 60000 }, async () => {
  await withServer(LOOPBACK_PEERS, async (server) => {
    const udp = dgram.createSocket('udp4');
    await new Promise((r) => udp.bind(0, '127.0.0.1', r));
    const junk = [];
    for (let i = 0; i < 300; i++) junk.push(randomBytes(Math.floor(Math.random() * 1500)));
    for (let i = 0; i < 100; i++) {
      const b = randomBytes(20 + 4 * Math.floor(Math.random() * 50));
      b[0] &= 0x3f; b.writeUInt32BE(0x2112a442, 4); // STUN-looking header, random attributes
      if (i % 2) b.writeUInt16BE(b.length - 20, 2);
      junk.push(b);
      const cd = randomBytes(4 + Math.floor(Math.random() * 200)); cd[0] = 0x40; // ChannelData-looking
      junk.push(cd);
    }
    for (const j of junk) udp.send(j, 3478, '127.0.0.1');
    udp.close();
    // TCP: non-TURN bytes close the connection; a huge announced frame just waits.
    const tcp = net.connect({ host: '127.0.0.1', port: 3478 });
    await new Promise((r) => tcp.once('connect', r));
    tcp.resume();
    const closed = new Promise((r) => tcp.once('close', r));
    tcp.write(Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), randomBytes(500)]));
    await closed;
    const stalled = net.connect({ host: '127.0.0.1', port: 3478 });
    await new Promise((r) => stalled.once('connect', r));
    stalled.write(Buffer.from([0x00, 0x03, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42]));
    // TLS port: plaintext fails the handshake and is closed (random bytes that look like
    // a partial TLS record wait for the 10 s handshake timeout instead).
    const tls = net.connect({ host: '127.0.0.1', port: 5349 });
    await new Promise((r) => tls.once('connect', r));
    tls.on('error', () => {});
    tls.resume(); // consume the alert so 'end' (and 'close') arrive
    const tlsClosed = new Promise((r) => tls.once('close', r));
    tls.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await tlsClosed;

    // Still serving: two clients relay to each other, over UDP and over TCP.
    for (const transport of ['udp', 'tcp']) {
      const a = await new TurnClient({ transport, ...restCredential(SECRET, 'frank', now() + 600) }).open();
      const b = await new TurnClient({ transport, ...restCredential(SECRET, 'grace', now() + 600) }).open();
      const ra = (await a.allocate()).relayed;
      const rb = (await b.allocate()).relayed;
      assert.ok(ra && rb);
      assert.equal(await a.createPermission(rb.host, rb.port), 'ok');
      assert.equal(await b.createPermission(ra.host, ra.port), 'ok');
      a.sendIndication(rb.host, rb.port, Buffer.from(`hello over ${transport}`));
      assert.equal((await b.receive()).toString(), `hello over ${transport}`);
      assert.equal(await b.channelBind(0x4000, ra.host, ra.port), 'ok');
      a.sendIndication(rb.host, rb.port, Buffer.from('again'));
      assert.equal((await b.receive()).toString(), 'again');
      a.close(); b.close();
    }
    stalled.destroy();
    assert.ok(!server.exited(), 'server still running');
  });
});

async function metricValue(name) {
  const text = await (await fetch('http://127.0.0.1:9100/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : null;
}

test('an unauthenticated Allocate flood from one address gets 508; other addresses allocate and relay', { timeout: 120000 }, async () => {
  // 20/s, 50 at once: small enough that a flood of a few thousand is mostly refused.
  await withServer([...LOOPBACK_PEERS, '--turn-allocate-rate', '20', '--turn-allocate-burst', '50'], async (server) => {
    const before = await metricValue('studyroom_turn_allocations_rate_limited_total');
    assert.equal(before, 0, 'the server exports studyroom_turn_allocations_rate_limited_total');
    // The flood: credential-less Allocates from 127.0.0.1, 4 000 over ~1 s, answers counted.
    const flood = dgram.createSocket('udp4');
    await new Promise((r) => flood.bind(0, '127.0.0.1', r));
    const codes = new Map();
    flood.on('message', (m) => {
      const d = decode(m);
      if (d) codes.set(d.error, (codes.get(d.error) ?? 0) + 1);
    });
    const bare = () => encode(METHOD.ALLOCATE, 0, randomBytes(12), [[ATTR.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0])]]);
    const start = Date.now();
    const sending = (async () => {
      for (let round = 0; round < 40; round++) {
        for (let i = 0; i < 100; i++) flood.send(bare(), 3478, '127.0.0.1');
        await new Promise((r) => setTimeout(r, 25));
      }
    })();

    // Meanwhile two clients at other addresses allocate (challenge included) and relay.
    const t0 = Date.now();
    const a = await new TurnClient({ localAddress: '127.0.0.2', ...restCredential(SECRET, 'heidi', now() + 600) }).open();
    const b = await new TurnClient({ localAddress: '127.0.0.3', ...restCredential(SECRET, 'ivan', now() + 600) }).open();
    const ra = (await a.allocate()).relayed;
    const rb = (await b.allocate()).relayed;
    const allocMs = Date.now() - t0;
    assert.ok(ra && rb, 'other addresses allocate during the flood');
    assert.equal(await a.createPermission(rb.host, rb.port), 'ok');
    assert.equal(await b.createPermission(ra.host, ra.port), 'ok');
    a.sendIndication(rb.host, rb.port, Buffer.from('through the flood'));
    assert.equal((await b.receive()).toString(), 'through the flood');
    // While the flood goes on, the flooding address itself is limited: its valid
    // credentials are not even looked at (a token refilled every 50 ms is taken by the
    // flood's next datagram within a fraction of a millisecond).
    const c = await new TurnClient({ ...restCredential(SECRET, 'judy', now() + 600) }).open();
    assert.deepEqual(await c.allocate(), { error: 508 }, 'the flooding address is refused before authentication');
    await sending;
    const floodMs = Date.now() - start;
    // Answers still in flight: wait until the counts stop moving.
    let last = -1;
    for (let i = 0; i < 50; i++) {
      const total = [...codes.values()].reduce((x, y) => x + y, 0);
      if (total === last) break;
      last = total;
      await new Promise((r) => setTimeout(r, 100));
    }
    const challenged = codes.get(401) ?? 0;
    const refused = codes.get(508) ?? 0;
    console.log(`TURN Allocate flood: 4000 sent in ${floodMs} ms from one address: ${challenged} challenged (401), ${refused} refused (508), other codes ${JSON.stringify([...codes].filter(([c]) => c !== 401 && c !== 508))}; two other addresses allocated in ${allocMs} ms and relayed`);
    // At most the burst plus the refill while it lasted (+1 s of slack) got past the gate.
    assert.ok(challenged >= 50 && challenged <= 50 + 20 * (floodMs / 1000 + 1), `challenged ${challenged}`);
    assert.ok(refused > 3000, `the rest refused with 508: ${refused}`);
    assert.ok(await metricValue('studyroom_turn_allocations_rate_limited_total') >= refused);
    // Once the flooding address has been quiet, it is served again.
    await new Promise((r) => setTimeout(r, 1000));
    const c2 = await new TurnClient({ ...restCredential(SECRET, 'judy', now() + 600) }).open();
    assert.ok((await c2.allocate()).relayed, 'served again after a quiet second');
    const warnings = server.logs().split('\n').filter((l) => l.includes('turn-allocate-rate'));
    assert.ok(warnings.length >= 1 && warnings.length < 20, `logged once per streak, not per request: ${warnings.length}`);
    for (const x of [a, b, c, c2]) x.close();
    flood.close();
    assert.ok(!server.exited(), 'server still running');
  });
});
