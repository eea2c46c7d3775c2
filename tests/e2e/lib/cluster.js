// Helpers for the several-node tests (multinode-*.test.js): a Redis and two `studyroom`
// nodes on loopback sharing it, each with its own HTTP, media and metrics ports, and views
// of what the pages and the deployment's shared state say.
// Why a separate file: the single-node helpers in server.js stay as other tests use them;
// these only compose them.
import { startServer, startRedis } from './server.js';

export const REDIS_PORT = 16390;
export const NODES = {
  a: { id: 'node-a', http: '127.0.0.1:5102', media: '40200-40249', metrics: '127.0.0.1:9110' },
  b: { id: 'node-b', http: '127.0.0.1:5103', media: '40250-40299', metrics: '127.0.0.1:9111' },
};
// Each node runs its embedded TURN relay on its own ports (one machine here).
const TURN_ARGS = {
  a: [],
  b: ['--turn-listen', '0.0.0.0:3479', '--turn-tls-listen', '0.0.0.0:5350', '--turn-relay-ports', '48000-48199'],
};
export const nodeUrl = (n) => `http://${NODES[n].http}`;

/** One node of the deployment (dev mode: both sign dev tokens with the same secret). */
export async function startNode(n, redisUrl, { args = [], env = {} } = {}) {
  const c = NODES[n];
  const server = await startServer({
    http: c.http,
    args: ['--media-ports', c.media, '--metrics', c.metrics, '--node-id', c.id, '--shards', '1', ...TURN_ARGS[n], ...args],
    env: { REDIS_URL: redisUrl, ...env },
  });
  return { ...server, node: c };
}

/** Redis, then nodes a and b. */
export async function startDeployment() {
  const redis = await startRedis({ port: REDIS_PORT });
  const a = await startNode('a', redis.url);
  const b = await startNode('b', redis.url);
  return { redis, a, b };
}

/** `GET /cluster` on a node's metrics listener: { node, redis, nodes, rooms }. */
export async function clusterView(n) {
  const res = await fetch(`http://${NODES[n].metrics}/cluster`);
  return { status: res.status, ...(await res.json()) };
}

/** What a page's client says: node URL, state, own id, live nodes, the others' ids. */
export function pageView(page) {
  return page.evaluate(() => {
    const r = window.studyroom;
    return {
      url: r.url, state: r.state, bodyState: document.body.dataset.state, origin: location.origin,
      id: r.participant && r.participant.id, nodes: r.nodes,
      others: [...r.participants.keys()],
    };
  });
}

/**
 * Closes what a several-node test file opened: its pages, its browser, then every node and
 * Redis last (nodes leave the registry on the way out). For the file's after().
 */
export async function closeDeployment({ pages = [], browser = null, procs = {} }) {
  for (const p of pages) await p.close();
  if (browser) await browser.close().catch(() => {});
  const names = Object.keys(procs).sort((x, y) => (x === 'redis') - (y === 'redis'));
  for (const name of names) if (procs[name]) await procs[name].stop();
}

/** The last lines of every process's log, for a failing test. */
export function processLogs(procs, lines = 150) {
  return Object.entries(procs).filter(([, p]) => p)
    .map(([name, p]) => `==== ${name} (pid ${p.pid}, exit ${JSON.stringify(p.exitInfo())})\n${p.logs().split('\n').slice(-lines).join('\n')}`)
    .join('\n');
}
