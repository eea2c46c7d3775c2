// The client package (signaling/web): package.json is an ES module package with no runtime
// dependencies whose files exist, the changelog names the protocol revision the client
// speaks, and studyroom.d.ts declares every public method of StudyRoom and every event
// studyroom.js emits (so the types cannot silently fall behind the library). The
// declarations themselves are type-checked against the examples by `tsc --noEmit` in
// tests/types (scripts/test.sh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, access } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../signaling/web');
const read = (f) => readFile(path.join(WEB, f), 'utf8');

test('package.json describes an ES module package without runtime dependencies', async () => {
  const pkg = JSON.parse(await read('package.json'));
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.exports['.'].default, './studyroom.js');
  assert.equal(pkg.exports['.'].types, './studyroom.d.ts');
  assert.equal(pkg.dependencies, undefined, 'no runtime dependencies');
  for (const f of pkg.files) await access(path.join(WEB, f));
  const src = await read('studyroom.js');
  const imports = [...src.matchAll(/^import .* from '([^']+)'/gm)].map((m) => m[1]);
  assert.deepEqual(imports, ['./sio.js'], 'studyroom.js imports only its own sio.js');
  const spoken = src.match(/PROTOCOL_VERSIONS = Object\.freeze\(\[([\d, ]+)\]\)/)[1].split(',').map(Number);
  assert.deepEqual([pkg.studyroom.protocol], spoken.slice(-1), 'package.json names the protocol studyroom.js speaks');
  assert.equal(Number(pkg.version.split('.')[0]), pkg.studyroom.protocol, 'major version = protocol revision');
  const changelog = await read('CHANGELOG.md');
  assert.match(changelog, new RegExp(`## ${pkg.version.replace(/\./g, '\\.')} — protocol ${pkg.studyroom.protocol}`));
});

test('studyroom.d.ts declares every public method and every emitted event of studyroom.js', async () => {
  const src = await read('studyroom.js');
  const dts = await read('studyroom.d.ts');
  const cls = src.slice(src.indexOf('export class StudyRoom {'));
  const methods = [...cls.matchAll(/^ {2}(?:async |static )?([a-zA-Z][A-Za-z0-9]*)\(/gm)].map((m) => m[1])
    .filter((m) => m !== 'constructor');
  assert.ok(methods.includes('join') && methods.includes('publish'), `methods found: ${methods}`);
  const missingMethods = methods.filter((m) => !new RegExp(`^ {2}${m}[<(]`, 'm').test(dts));
  assert.deepEqual(missingMethods, [], 'public methods missing from studyroom.d.ts');
  const emitted = new Set([...src.matchAll(/_emit\('([A-Za-z]+)'/g)].map((m) => m[1]));
  for (const m of src.matchAll(/_sentAway\('([A-Za-z]+)'/g)) emitted.add(m[1]);
  const eventsBlock = dts.slice(dts.indexOf('export interface StudyRoomEvents {'));
  const declared = new Set([...eventsBlock.slice(0, eventsBlock.indexOf('\n}')).matchAll(/^ {2}([A-Za-z]+):/gm)].map((m) => m[1]));
  assert.deepEqual([...emitted].filter((e) => !declared.has(e)), [], 'emitted events missing from StudyRoomEvents');
  assert.deepEqual([...declared].filter((e) => !emitted.has(e)), [], 'declared events studyroom.js never emits');
});
