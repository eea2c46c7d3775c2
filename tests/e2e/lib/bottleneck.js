// A downlink bottleneck for one participant inside the test's network namespace, with tc:
// an htb class of `kbps` with a short drop-tail queue (pfifo), selected by a u32 filter on
// the participant's UDP ports as destination (what the SFU sends it). Everything else on lo
// passes. Why htb + pfifo: netem, fq_codel and cake do not exist on these kernels (see the
// testing notes); a token bucket with a short queue is what a home router's downlink is.
import { execFileSync } from 'node:child_process';
import { assertInTestNamespace, clearTc } from './blackout.js';
import { waitForVideoFrom } from './stats.js';

const DEV = 'lo';

function tc(...args) {
  return execFileSync('tc', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Caps UDP to `ports` at `kbps` (queue: `queuePackets` datagrams). Returns a handle:
 * set(kbps) changes the rate in place, counters() returns {sentPackets, droppedPackets},
 * lift() removes it.
 */
export function downlinkCap(ports, kbps, { queuePackets = 20 } = {}) {
  assertInTestNamespace();
  if (ports.length === 0) throw new Error('downlinkCap: no ports');
  clearTc();
  tc('qdisc', 'add', 'dev', DEV, 'root', 'handle', '1:', 'htb');
  const rate = (k) => ['rate', `${k}kbit`, 'ceil', `${k}kbit`, 'burst', '6k', 'cburst', '6k'];
  tc('class', 'add', 'dev', DEV, 'parent', '1:', 'classid', '1:20', 'htb', ...rate(kbps));
  tc('qdisc', 'add', 'dev', DEV, 'parent', '1:20', 'handle', '20:', 'pfifo', 'limit', String(queuePackets));
  for (const port of new Set(ports)) {
    tc('filter', 'add', 'dev', DEV, 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32',
      'match', 'ip', 'protocol', '17', '0xff', 'match', 'ip', 'dport', String(port), '0xffff', 'flowid', '1:20');
  }
  const counters = () => {
    const out = tc('-s', 'class', 'show', 'dev', DEV, 'classid', '1:20');
    const m = out.match(/Sent (\d+) bytes (\d+) pkt \(dropped (\d+)/);
    return m ? { sentBytes: Number(m[1]), sentPackets: Number(m[2]), droppedPackets: Number(m[3]) } : {};
  };
  return {
    set(k) { tc('class', 'change', 'dev', DEV, 'parent', '1:', 'classid', '1:20', 'htb', ...rate(k)); },
    counters,
    lift() { const c = counters(); clearTc(); return c; },
  };
}

/**
 * The bandwidth tests' room `room` in harness `h`: a simulcast camera `a` and two listeners,
 * `b` (the one a test caps) and `c` (left open), both decoding `a` on return. Each listener
 * records the server's `videoPaused`/`videoResumed` in `window.__bw` ({ev, ..., at}).
 */
export async function cappedRoom(h, room) {
  const a = await h.join({ room, name: 'Camera', query: { simulcast: 1 } });
  const b = await h.join({ room, name: 'Capped', publish: false });
  const c = await h.join({ room, name: 'Open', publish: false });
  for (const v of [b, c]) {
    await v.page.evaluate(() => {
      window.__bw = [];
      for (const ev of ['videoPaused', 'videoResumed']) {
        window.studyroom.on(ev, (m) => window.__bw.push({ ev, ...m, at: Date.now() }));
      }
    });
  }
  await waitForVideoFrom(b, a.id);
  await waitForVideoFrom(c, a.id);
  return { a, b, c };
}
