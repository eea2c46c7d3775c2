// Network loss for one participant inside the test's network namespace, with tc.
// Why: the namespace has only `lo`, and netem does not exist on these kernels, but htb
// classes and u32 filters do (docs in the testing notes). A class with a rate of a few bits
// per second and a one-packet queue is a blackout that we lift at will.
// Which packets: an ICE restart makes Chromium gather new candidates on NEW UDP ports, so a
// filter on the learner's current ports would stop matching as soon as its client restarts
// ICE (which is exactly what it does during the outage). So the rule is the other way round:
// UDP to or from the other participants' ports (as source and as destination) passes, every
// other UDP datagram goes to the blackout class: the learner's current ports and any port it
// opens during the outage. TCP (signaling) is untouched; run the server with --no-turn so no
// relay path can bypass it. Inside the namespace no other UDP flows exist.
import { execFileSync } from 'node:child_process';

const DEV = 'lo';

function tc(...args) {
  return execFileSync('tc', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Refuses to touch tc unless we are in a loopback-only namespace (scripts/netns_run.sh). */
export function assertInTestNamespace() {
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n').filter(Boolean).map((l) => l.split(':')[1].trim().split('@')[0]);
  const foreign = links.filter((l) => !['lo', 'sr0', 'sr1'].includes(l));
  if (foreign.length) {
    throw new Error(`refusing to change tc on ${DEV}: not in the test's loopback-only namespace (links: ${links.join(', ')}); run under scripts/netns_run.sh`);
  }
}

/**
 * The local UDP ports of the selected candidate pairs of every open PC on the page
 * (publisher and subscriber), and every local host candidate's port.
 */
export async function udpPortsOf(page) {
  return page.evaluate(async () => {
    const selected = new Set();
    const all = new Set();
    for (const pc of window.__pcs || []) {
      if (pc.signalingState === 'closed') continue;
      const report = await pc.getStats();
      const byId = new Map();
      report.forEach((r) => byId.set(r.id, r));
      report.forEach((r) => {
        if (r.type === 'local-candidate' && r.protocol === 'udp') all.add(r.port);
        if (r.type === 'transport' && r.selectedCandidatePairId) {
          const pair = byId.get(r.selectedCandidatePairId);
          const local = pair && byId.get(pair.localCandidateId);
          if (local && local.port) selected.add(local.port);
        }
      });
    }
    return { selected: [...selected], all: [...all] };
  });
}

/**
 * Drops every UDP datagram on lo except those from or to `keepPorts` (the other
 * participants' ports). Returns a handle: lift() removes it and returns the blackout
 * class's counters ({sentPackets, droppedPackets}).
 */
export function startBlackout(keepPorts) {
  assertInTestNamespace();
  const ports = [...new Set(keepPorts)];
  if (ports.length === 0) throw new Error('startBlackout: no ports to keep');
  addBlackoutClass();
  tc('class', 'add', 'dev', DEV, 'parent', '1:', 'classid', '1:1', 'htb', 'rate', '10gbit', 'ceil', '10gbit', 'quantum', '200000');
  for (const port of ports) addPortFilter(port, '1:1');
  tc('filter', 'add', 'dev', DEV, 'parent', '1:', 'protocol', 'ip', 'prio', '2', 'u32',
    'match', 'ip', 'protocol', '17', '0xff', 'flowid', '1:10');
  return liftable();
}

/**
 * Drops UDP from or to `ports` only (a network that one participant's current sockets lose,
 * while any new socket it opens works: a network switch when combined with an ICE restart).
 * Same handle as startBlackout.
 */
export function blockPorts(ports) {
  assertInTestNamespace();
  if (ports.length === 0) throw new Error('blockPorts: no ports');
  addBlackoutClass();
  for (const port of new Set(ports)) addPortFilter(port, '1:10');
  return liftable();
}

/** A fresh htb root on lo with the blackout class 1:10 (8 bit/s, one-packet queue). */
function addBlackoutClass() {
  try { tc('qdisc', 'del', 'dev', DEV, 'root'); } catch { /* none yet */ }
  tc('qdisc', 'add', 'dev', DEV, 'root', 'handle', '1:', 'htb');
  tc('class', 'add', 'dev', DEV, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '8bit', 'ceil', '8bit', 'burst', '1', 'cburst', '1');
  tc('qdisc', 'add', 'dev', DEV, 'parent', '1:10', 'handle', '10:', 'pfifo', 'limit', '1');
}

/** UDP from or to `port` goes to class `flowid` (prio 1: before any catch-all). */
function addPortFilter(port, flowid) {
  for (const dir of ['sport', 'dport']) {
    tc('filter', 'add', 'dev', DEV, 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32',
      'match', 'ip', 'protocol', '17', '0xff', 'match', 'ip', dir, String(port), '0xffff', 'flowid', flowid);
  }
}

/** The handle of a loss rule just installed: counters so far, and lift() (once). */
function liftable() {
  const startedAt = Date.now();
  let lifted = null;
  return {
    startedAt,
    counters: () => blackoutCounters(),
    lift() {
      if (lifted) return lifted;
      const counters = blackoutCounters();
      tc('qdisc', 'del', 'dev', DEV, 'root');
      lifted = { ...counters, liftedAt: Date.now(), startedAt };
      return lifted;
    },
  };
}

function blackoutCounters() {
  const out = tc('-s', 'class', 'show', 'dev', DEV);
  const counters = {};
  for (const [cls, key] of [['1:10', 'blackout'], ['1:1', 'kept']]) {
    const m = out.match(new RegExp(`class htb ${cls} [\\s\\S]*?Sent (\\d+) bytes (\\d+) pkt \\(dropped (\\d+)`));
    if (m) counters[key] = { sentPackets: Number(m[2]), droppedPackets: Number(m[3]) };
  }
  return counters;
}

/** Removes any qdisc this module left on lo (for cleanup after a failure). */
export function clearTc() {
  try { tc('qdisc', 'del', 'dev', DEV, 'root'); } catch { /* nothing there */ }
}
