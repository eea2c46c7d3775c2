// Configuration and logs as an operator meets them: a TOML file (under env and flags),
// a wrong value failing fast with the key named, and JSON log lines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawnLogged, startServer, studyroomBin } from './lib/server.js';

test('a TOML file configures the server; flags win; a bad key stops it naming the key', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'studyroom-config-'));
  try {
    const file = path.join(dir, 'studyroom.toml');
    await writeFile(file, 'dev = true\nhttp = "127.0.0.1:5010"\nmetrics = "127.0.0.1:9110"\nmedia_ports = "41000-41010"\n');
    const server = await startServer({ http: '127.0.0.1:5010', dev: false, args: ['--config', file] });
    try {
      const m = await (await fetch('http://127.0.0.1:9110/metrics')).text();
      assert.match(m, /^studyroom_rooms 0$/m, 'metrics on the port the file named');
    } finally {
      await server.stop();
    }
    await writeFile(file, 'dev = true\nmedia_ports = "41010-41000"\n');
    const bad = spawnLogged('studyroom bad config', studyroomBin(), ['--config', file]);
    const exit = await bad.waitForExit(10000);
    assert.equal(exit.code, 2, bad.logs());
    assert.match(bad.logs(), /key `media_ports`/);
    await writeFile(file, 'dev = true\nmedia_prots = "41000-41010"\n');
    const typo = spawnLogged('studyroom typo config', studyroomBin(), ['--config', file]);
    assert.equal((await typo.waitForExit(10000)).code, 2);
    assert.match(typo.logs(), /unknown key `media_prots`/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('--log-json writes one JSON object per line', async () => {
  const server = await startServer({ http: '127.0.0.1:5011', args: ['--log-json', '--metrics', '127.0.0.1:9111', '--media-ports', '41020-41030'] });
  try {
    const lines = server.logs().split('\n').map((l) => l.replace(/^\[(out|err|stdout|stderr)\] /, '')).filter((l) => l.startsWith('{'));
    assert.ok(lines.length >= 2, server.logs());
    for (const l of lines) {
      const o = JSON.parse(l);
      assert.ok(o.timestamp && o.level && o.fields, l);
    }
    assert.ok(lines.some((l) => JSON.parse(l).fields.message.includes('listening')), 'startup line says where it listens');
  } finally {
    await server.stop();
  }
});
