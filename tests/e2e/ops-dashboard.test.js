// The Grafana dashboard (deploy/grafana/studyroom-dashboard.json) must not drift from the
// server: every studyroom_* name it queries is exported by a running studyroom (with Redis
// and NATS configured, so the *_up gauges exist), with the right type for how it is used
// (rate() over counters, histogram_quantile() over histogram buckets, gauges as they are),
// and every studyroom_* family the server exports has a panel. The JSON's own shape is
// checked too (schemaVersion, a Prometheus data source variable every query uses, unique ids).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, startRedis, startNats } from './lib/server.js';

const DASHBOARD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../deploy/grafana/studyroom-dashboard.json');
const METRICS = 'http://127.0.0.1:9100/metrics';
const NAME_RE = /\bstudyroom_[a-z0-9_]+\b/g;

const procs = {};
let natsDir = null;

before(async () => {
  natsDir = await mkdtemp(path.join(os.tmpdir(), 'studyroom-nats-'));
  procs.redis = await startRedis({ port: 16379 });
  procs.nats = await startNats({ port: 14222, storeDir: natsDir });
  procs.studyroom = await startServer({
    env: { REDIS_URL: 'redis://127.0.0.1:16379', NATS_URL: 'nats://127.0.0.1:14222' },
  });
});

after(async () => {
  for (const name of ['studyroom', 'nats', 'redis']) if (procs[name]) await procs[name].stop();
  if (natsDir) await rm(natsDir, { recursive: true, force: true });
});

/** Every panel, rows' nested panels included. */
function allPanels(dash) {
  const out = [];
  for (const p of dash.panels || []) {
    out.push(p);
    for (const inner of p.panels || []) out.push(inner);
  }
  return out;
}

/** The exposition's families: base name -> type, and every sample name seen. */
async function exported() {
  const res = await fetch(METRICS);
  assert.equal(res.status, 200, `GET ${METRICS}`);
  const text = await res.text();
  const types = new Map();
  const samples = new Set();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) types.set(type[1], type[2]);
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{|\s)/.exec(line);
    if (sample) samples.add(sample[1]);
  }
  // The family a sample name belongs to (`x_total` of counter `x` in OpenMetrics, `x_bucket` of histogram `x`).
  const typeOf = (name) => types.get(name) ?? types.get(name.replace(/_total$/, ''))
    ?? types.get(name.replace(/_(bucket|sum|count)$/, '')) ?? null;
  return { text, types, samples, typeOf };
}

test('the dashboard is a Grafana dashboard on a Prometheus data source variable', async () => {
  const dash = JSON.parse(await readFile(DASHBOARD, 'utf8'));
  assert.equal(typeof dash.uid, 'string');
  assert.equal(typeof dash.title, 'string');
  assert.ok(dash.schemaVersion >= 36 && dash.schemaVersion <= 41, `schemaVersion ${dash.schemaVersion}`);
  const ds = dash.templating.list.find((v) => v.type === 'datasource');
  assert.ok(ds && ds.query === 'prometheus', 'a datasource variable of type prometheus');
  const panels = allPanels(dash);
  const ids = panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, `panel ids are unique: ${ids}`);
  for (const p of panels) {
    assert.ok(p.gridPos && p.gridPos.w > 0 && p.gridPos.h > 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: gridPos ${JSON.stringify(p.gridPos)}`);
    if (p.type === 'row') continue;
    assert.ok(p.targets && p.targets.length > 0, `${p.title}: has queries`);
    for (const target of [p, ...p.targets]) {
      assert.equal(target.datasource?.uid, `\${${ds.name}}`, `${p.title}: uses the $${ds.name} variable`);
    }
    for (const target of p.targets) assert.match(target.expr, /\bstudyroom_[a-z0-9_]+/, `${p.title}: queries a studyroom metric`);
  }
  // No two panels share a grid cell.
  const cells = new Map();
  for (const p of panels) {
    for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        const other = cells.get(`${x},${y}`);
        assert.ok(!other, `panels "${other}" and "${p.title}" overlap at x=${x} y=${y}`);
        cells.set(`${x},${y}`, p.title);
      }
    }
  }
});

test('every metric the dashboard queries is exported by the server, used as its type allows', async () => {
  const dash = JSON.parse(await readFile(DASHBOARD, 'utf8'));
  const exprs = allPanels(dash).flatMap((p) => (p.targets || []).map((tg) => ({ panel: p.title, expr: tg.expr })));
  for (const v of dash.templating.list) {
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    if (v.type === 'query' && q) exprs.push({ panel: `variable $${v.name}`, expr: q });
  }
  const { text, samples, typeOf } = await exported();
  const problems = [];
  const queried = new Set();
  for (const { panel, expr } of exprs) {
    for (const name of expr.match(NAME_RE) || []) {
      queried.add(name.replace(/_(bucket|sum|count)$/, ''));
      if (!samples.has(name)) problems.push(`${panel}: ${name} is not exported`);
    }
    for (const [, fn, name] of expr.matchAll(/\b(rate|irate|increase)\(\s*(studyroom_[a-z0-9_]+)/g)) {
      const type = typeOf(name);
      const ok = type === 'counter' || (type === 'histogram' && /_(bucket|sum|count)$/.test(name));
      if (!ok) problems.push(`${panel}: ${fn}() over ${name}, a ${type}`);
    }
    if (/\bhistogram_quantile\(/.test(expr)) {
      for (const name of expr.match(NAME_RE) || []) {
        if (!(name.endsWith('_bucket') && typeOf(name) === 'histogram')) problems.push(`${panel}: histogram_quantile over ${name}`);
      }
    }
    for (const name of expr.match(NAME_RE) || []) {
      const type = typeOf(name);
      const inRate = new RegExp(`\\b(rate|irate|increase)\\(\\s*${name}\\b`).test(expr);
      if (type === 'counter' && !inRate) problems.push(`${panel}: counter ${name} shown raw (use rate())`);
    }
  }
  assert.deepEqual(problems, [], `the dashboard drifted from /metrics:\n${problems.join('\n')}\n---- /metrics ----\n${text}`);

  // And the other way: nothing the server exports under studyroom_ is missing from the dashboard.
  const families = new Set([...samples].filter((s) => s.startsWith('studyroom_'))
    .map((s) => (typeOf(s) === 'histogram' ? s.replace(/_(bucket|sum|count)$/, '') : s)));
  const missing = [...families].filter((f) => !queried.has(f));
  assert.deepEqual(missing, [], `exported but on no panel: ${missing.join(', ')}`);
});
