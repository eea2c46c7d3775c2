// A full node (`--max-participants`, issue 15): the browser library treats a `join` refused
// with `server_full` like `draining`: it tells the page (`reconnecting`, reason
// `server_full`), retries on a fresh socket with a growing delay (behind a load balancer the
// new socket may land on another node), and gets in once there is room. Here one node with
// room for one: a socket.io-client participant holds the place, the page's join is refused,
// the holder leaves, and the page's retry joins.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { startServer } from './lib/server.js';
import { launchBrowser, openParticipant } from './lib/browser.js';
import { devToken, request } from './lib/sio-client.js';

const ROOM = 'e2e-server-full';

async function metricValue(name) {
  const text = await (await fetch('http://127.0.0.1:9100/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : null;
}

test('a join refused with server_full is retried by studyroom.js and succeeds once a place frees', { timeout: 120000 }, async (t) => {
  const server = await startServer({ args: ['--max-participants', '1', '--no-turn'] });
  let browser = null;
  let page = null;
  const holder = io(`${server.baseUrl}/study`, {
    auth: { token: (await devToken(server.baseUrl, { room: ROOM, name: 'Holder' })).token },
    transports: ['websocket'], reconnection: false, forceNew: true,
  });
  t.after(async () => {
    holder.close();
    if (page) await page.close();
    if (browser) await browser.close().catch(() => {});
    await server.stop();
  });
  await new Promise((resolve, reject) => { holder.once('connect', resolve); holder.once('connect_error', reject); });
  assert.ok((await request(holder, 'join', {}))?.participant?.id, 'the holder takes the only place');

  browser = await launchBrowser();
  const opening = openParticipant(browser, server.baseUrl, { room: ROOM, name: 'Late', publish: false, joinTimeoutMs: 30000 });
  // The page's first join is refused: the node counts it.
  const deadline = Date.now() + 20000;
  while ((await metricValue('studyroom_joins_refused_server_full_total')) < 1) {
    assert.ok(Date.now() < deadline, `the page's join was never refused with server_full:\n${server.logs().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const freedAt = Date.now();
  assert.ok((await request(holder, 'leave', {}))?.ok, 'the holder leaves');
  page = await opening;
  console.log(`joined ${Date.now() - freedAt} ms after the place freed; server_full refusals: ${await metricValue('studyroom_joins_refused_server_full_total')}`);
  const reasons = await page.page.evaluate(() => window.studyroom.eventLog
    .filter((e) => e.event === 'reconnecting').map((e) => e.data[0] && e.data[0].reason));
  assert.ok(reasons.includes('server_full'), `the page was told why it retried: ${JSON.stringify(reasons)}`);
  assert.ok(!server.exited());
});
