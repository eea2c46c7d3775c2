// scratch: NOT a test file; removed after use
import { startServer } from './lib/server.js';
import { launchBrowser, openParticipant } from './lib/browser.js';
import { waitFor, waitForMediaFrom, waitForVideoFrom } from './lib/stats.js';
const B = await startServer({ http: '127.0.0.1:5003', args: ['--media-ports', '40050-40100'] });
const A = await startServer({ http: '127.0.0.1:5002', args: ['--media-ports', '40000-40049'] });
const browser = await launchBrowser();
try {
  const a = await openParticipant(browser, A.baseUrl, { room: 'dry', name: 'Ana' });
  const b = await openParticipant(browser, A.baseUrl, { room: 'dry', name: 'Ben' });
  await waitForMediaFrom(b, [a.id]); await waitForMediaFrom(a, [b.id]);
  await a.page.click('#btn-screen');
  await waitForVideoFrom(b, a.id, { source: 'screen' });
  await a.page.click('#btn-mic');
  console.log('before ok');
  const t0 = Date.now();
  for (const p of [a, b]) await p.page.evaluate(() => window.studyroom._onReconnect({ reason: 'draining', url: 'http://127.0.0.1:5003', deadlineMs: 10000 }));
  for (const p of [a, b]) await waitFor(() => p.page.evaluate(() => window.studyroom.state === 'joined' && window.studyroom.url === 'http://127.0.0.1:5003' && [...window.studyroom.localTracks.values()].every((l) => l.trackId)), { what: p.name + ' migrated', timeoutMs: 20000 });
  console.log('migrated in', Date.now() - t0);
  const ids = {};
  for (const p of [a, b]) ids[p.name] = await p.page.evaluate(() => window.studyroom.participant.id);
  await waitForVideoFrom({ ...b, id: ids.Ben }, ids.Ana, { source: 'camera' });
  await waitForVideoFrom({ ...b, id: ids.Ben }, ids.Ana, { source: 'screen' });
  await waitForMediaFrom({ ...a, id: ids.Ana }, [ids.Ben]);
  console.log('media after ok', Date.now() - t0);
  console.log(JSON.stringify(await b.page.evaluate(() => [...window.studyroom.participants.values()].map(p => [p.name, p.tracks.map(t => t.source + ':' + t.muted)]))));
  console.log(JSON.stringify(await a.page.evaluate(() => [document.body.dataset.state, document.body.dataset.server, document.querySelector('#status').textContent, window.__pcs.map(pc => pc.signalingState), window.studyroom.eventLog.filter(e => ['reconnecting','migrated','error','disconnected'].includes(e.event)).map(e=>e.event + JSON.stringify(e.data))])));
  console.log(a.consoleLines.filter(l => /error|warn/i.test(l)).slice(-20).join('\n'));
} finally {
  await browser.close(); await A.stop(); await B.stop();
}
