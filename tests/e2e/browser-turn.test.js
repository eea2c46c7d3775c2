// Learners whose network only lets TURN through: headless Chromium with
// iceTransportPolicy 'relay' reaches our SFU only through the embedded TURN relay, over UDP,
// TCP and TLS (turns:, self-signed certificate from --dev: Chromium accepts it with
// --ignore-certificate-errors). Two participants per run; each one's remote camera must
// decode and every PC's selected candidate pair must be a relay pair of that transport.
// The UDP run is repeated with --turn-no-handover: the relay then reaches the SFU through
// real sockets instead of the in-process hand-over, and media must flow the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startServer } from './lib/server.js';
import { CHROMIUM_FLAGS, CHROMIUM_PATH, openParticipant, prepareContext } from './lib/browser.js';
import { waitFor, waitForMediaFrom, pcStats } from './lib/stats.js';

// Runs in the page before its scripts: every PC is relay-only, through one TURN transport.
function forceRelay({ transport }) {
  const Base = window.RTCPeerConnection;
  const keep = (url) => (transport === 'tls' ? url.startsWith('turns:') : url.startsWith('turn:') && url.includes(`transport=${transport}`));
  class RelayOnly extends Base {
    constructor(config = {}, ...rest) {
      const iceServers = (config.iceServers || [])
        .map((s) => ({ ...s, urls: [].concat(s.urls).filter(keep) }))
        .filter((s) => s.urls.length > 0);
      window.__relayServers = iceServers;
      super({ ...config, iceServers, iceTransportPolicy: 'relay' }, ...rest);
    }
  }
  window.RTCPeerConnection = RelayOnly;
}

/** Every PC's selected pair: local candidate must be `relay` over `transport`. */
async function relayPairs(p) {
  const out = [];
  for (const pc of await pcStats(p.page)) {
    const ids = new Map(pc.stats.map((s) => [s.id, s]));
    const tr = pc.stats.find((s) => s.type === 'transport');
    const pair = tr && ids.get(tr.selectedCandidatePairId);
    const local = pair && ids.get(pair.localCandidateId);
    const remote = pair && ids.get(pair.remoteCandidateId);
    out.push({ role: pc.role, state: pair?.state, local: local && { type: local.candidateType, relayProtocol: local.relayProtocol, address: `${local.address}:${local.port}` },
      remote: remote && { type: remote.candidateType, address: `${remote.address}:${remote.port}` } });
  }
  return out;
}

const RUNS = [
  { transport: 'udp', args: [] },
  { transport: 'tcp', args: [] },
  { transport: 'tls', args: [] },
  { transport: 'udp', args: ['--turn-no-handover'], label: 'udp without hand-over' },
];

for (const run of RUNS) {
  const label = run.label || run.transport;
  test(`relay-only Chromium reaches the SFU through our TURN over ${label}`, { timeout: 180000 }, async () => {
    const server = await startServer({ args: run.args });
    const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true,
      args: [...CHROMIUM_FLAGS, '--ignore-certificate-errors'] });
    const people = [];
    try {
      for (const name of ['Relay-A', 'Relay-B']) {
        const context = await browser.newContext();
        await prepareContext(context, server.baseUrl);
        await context.addInitScript(forceRelay, { transport: run.transport });
        people.push(await openParticipant(browser, server.baseUrl, { room: `e2e-turn-${label.replace(/\W/g, '')}`, name, context }));
      }
      const [a, b] = people;
      const servers = await a.page.evaluate(() => window.__relayServers);
      assert.equal(servers.length, 1, `join handed out our TURN: ${JSON.stringify(servers)}`);
      assert.ok(servers[0].username && servers[0].credential, 'with REST credentials');
      await waitForMediaFrom(b, [a.id]);
      await waitForMediaFrom(a, [b.id]);
      const want = run.transport === 'tls' ? 'tls' : run.transport;
      for (const p of people) {
        let last;
        await waitFor(async () => {
          last = await relayPairs(p);
          return last.length >= 2 && last.every((x) => x.state === 'succeeded');
        }, { what: `${p.name}: selected pairs succeeded`, progress: () => last });
        for (const pair of last) {
          assert.equal(pair.local.type, 'relay', `${p.name} ${pair.role}: local candidate is relay: ${JSON.stringify(last)}`);
          assert.equal(pair.local.relayProtocol, want, `${p.name} ${pair.role}: relayed over ${want}: ${JSON.stringify(last)}`);
          assert.match(pair.remote.address, /^127\.0\.0\.1:400\d\d$/, `${p.name} ${pair.role}: the peer is the SFU: ${JSON.stringify(last)}`);
        }
      }
      const metrics = await (await fetch('http://127.0.0.1:9100/metrics')).text();
      const allocations = Number(metrics.match(/studyroom_turn_allocations (\d+)/)?.[1]);
      assert.ok(allocations >= 2, `allocations on our relay: ${allocations}`);
      // Media to and from the SFU took the in-process hand-over, unless it was turned off.
      const toSfu = Number(metrics.match(/studyroom_turn_handover_to_sfu_total (\d+)/)?.[1]);
      const fromSfu = Number(metrics.match(/studyroom_turn_handover_from_sfu_total (\d+)/)?.[1]);
      if (run.args.includes('--turn-no-handover')) {
        assert.equal(toSfu + fromSfu, 0, 'no hand-over when disabled');
      } else {
        assert.ok(toSfu > 100 && fromSfu > 100, `hand-over carried the media: to SFU ${toSfu}, from SFU ${fromSfu}`);
      }
    } catch (e) {
      console.error(`--- server log ---\n${server.logs().split('\n').slice(-150).join('\n')}`);
      for (const p of people) console.error(p.consoleLines.slice(-60).join('\n'));
      throw e;
    } finally {
      for (const p of people) await p.close();
      await browser.close().catch(() => {});
      await server.stop();
    }
  });
}
