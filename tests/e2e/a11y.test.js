// The demo page for WCAG 2.2 AA, in Korean and English (issue 16): axe-core (npm, injected
// into real Chromium pages) finds no serious or critical violation on the join form, a
// room with a muted participant and chat, and the proctor view, in either language; every
// label carries both languages (the page's first, the other marked with its `lang`); the
// language comes from ?lang or Accept-Language and the header link switches it; every
// control is reached and operated by keyboard with a visible focus ring; joins, leaves and a
// proctor's focus alerts are announced by live regions; prefers-reduced-motion stops motion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startServer } from './lib/server.js';
import { launchBrowser, openParticipant, prepareContext } from './lib/browser.js';
import { joinClient, ok } from './lib/sio-client.js';
import { waitFor } from './lib/stats.js';

const require = createRequire(import.meta.url);
const AXE = require.resolve('axe-core/axe.min.js');
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'];

// Serious and critical violations on `page` (moderate/minor ones are listed for the log).
async function axe(page, what) {
  if (!(await page.evaluate(() => !!window.axe))) await page.addScriptTag({ path: AXE });
  const violations = await page.evaluate(async (tags) => {
    const r = await window.axe.run(document, { runOnly: { type: 'tag', values: tags } });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary}`) }));
  }, AXE_TAGS);
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${what}: axe found serious/critical violations:\n${JSON.stringify(bad, null, 1)}`);
  return violations;
}

// Tabs from the top of the page and records what gets focus: id (or text), and whether a
// focus ring is drawn (outline at least 2px, not `none`).
async function tabThrough(page, steps) {
  await page.evaluate(() => { document.activeElement?.blur(); window.scrollTo(0, 0); });
  const seen = [];
  for (let i = 0; i < steps; i++) {
    await page.keyboard.press('Tab');
    seen.push(await page.evaluate(() => {
      const el = document.activeElement;
      const cs = getComputedStyle(el);
      return { id: el.id || el.textContent.trim().slice(0, 20), ring: cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2 };
    }));
  }
  return seen;
}

test('the page picks its language from ?lang, then Accept-Language, Korean by default', async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const lang = async (path, accept) => {
    const res = await fetch(`${server.baseUrl}${path}`, { headers: accept ? { 'accept-language': accept } : {} });
    assert.equal(res.status, 200);
    return (await res.text()).match(/<html lang="(\w+)">/)[1];
  };
  assert.equal(await lang('/', 'en-US,en;q=0.9'), 'en');
  assert.equal(await lang('/', 'ko-KR,ko;q=0.9,en;q=0.8'), 'ko');
  assert.equal(await lang('/', 'fr-FR'), 'ko');
  assert.equal(await lang('/?lang=ko', 'en-US'), 'ko');
  assert.equal(await lang('/?lang=en', 'ko-KR'), 'en');
  for (const f of ['/i18n/ko.js', '/i18n/en.js']) assert.equal((await fetch(`${server.baseUrl}${f}`)).status, 200, f);
  // One file per language, the same keys in both.
  const ko = (await import('../../signaling/web/i18n/ko.js')).default;
  const en = (await import('../../signaling/web/i18n/en.js')).default;
  assert.deepEqual(Object.keys(ko).sort(), Object.keys(en).sort());
});

test('WCAG 2.2 AA in Chromium: axe clean, bilingual labels, keyboard, live regions, reduced motion', { timeout: 180000 }, async (t) => {
  const server = await startServer();
  const browser = await launchBrowser();
  const extra = [];
  t.after(async () => {
    for (const c of extra) c.close();
    await browser.close();
    await server.stop();
  });
  try {
    // 1. The join form, in each language; the switch link flips it by keyboard.
    const ctx = await browser.newContext({ locale: 'en-US' });
    await prepareContext(ctx, server.baseUrl);
    const form = await ctx.newPage();
    await form.goto(`${server.baseUrl}/`);
    await form.waitForSelector('#join-form:not([hidden])');
    assert.equal(await form.getAttribute('html', 'lang'), 'en', 'Accept-Language en-US');
    assert.equal((await form.textContent('label[for="join-room"]')).trim(), 'Room / 방 이름');
    assert.equal(await form.getAttribute('label[for="join-room"] span', 'lang'), 'ko');
    assert.equal(await form.title(), 'Study room / 스터디룸');
    await axe(form, 'join form (en)');
    await form.focus('#lang-switch');
    await Promise.all([form.waitForURL(/lang=ko/), form.keyboard.press('Enter')]);
    await form.waitForSelector('#join-form:not([hidden])');
    assert.equal(await form.getAttribute('html', 'lang'), 'ko');
    assert.equal((await form.textContent('label[for="join-room"]')).trim(), '방 이름 / Room');
    assert.equal(await form.getAttribute('label[for="join-room"] span', 'lang'), 'en');
    assert.equal(await form.textContent('#lang-switch'), 'English');
    await axe(form, 'join form (ko)');
    const formStops = await tabThrough(form, 7); // skip link, language, room, name, role, publish, join
    for (const id of ['lang-switch', 'join-room', 'join-name', 'join-role', 'join-publish']) {
      assert.ok(formStops.some((s) => s.id === id), `Tab reaches #${id}: ${JSON.stringify(formStops)}`);
    }
    assert.deepEqual(formStops.filter((s) => !s.ring), [], 'every stop shows a focus ring');
    await form.close();

    // 2. A room in Korean: Ann (reduced motion) and Bob; Bob mutes his mic, they chat.
    const reduced = await browser.newContext({ reducedMotion: 'reduce', locale: 'ko-KR' });
    await prepareContext(reduced, server.baseUrl);
    const ann = await openParticipant(browser, server.baseUrl, { room: 'a11y', name: 'Ann', context: reduced, query: { lang: 'ko' } });
    const bob = await openParticipant(browser, server.baseUrl, { room: 'a11y', name: 'Bob', query: { lang: 'en' } });
    await waitFor(() => ann.page.evaluate((id) => !!document.querySelector(`.tile[data-participant-id="${id}"]`), bob.id), { what: "Bob's tile on Ann's page" });
    const announced = () => ann.page.textContent('#announcer');
    await waitFor(async () => /Bob 님이 입장했습니다 \/ Bob joined/.test(await announced()), { what: 'Bob announced', progress: announced });
    assert.equal(await ann.page.getAttribute('#announcer', 'aria-live'), 'polite');
    assert.equal((await ann.page.textContent('#btn-mic')).trim(), '마이크 끄기 / Mute mic');
    assert.equal((await bob.page.textContent('#btn-mic')).trim(), 'Mute mic / 마이크 끄기');
    assert.equal(await bob.page.getAttribute('html', 'lang'), 'en');

    // Keyboard: Bob reaches every control, each with a ring, and mutes with Space.
    const stops = await tabThrough(bob.page, 9); // skip link, language, chat log, input, send, 4 controls
    for (const id of ['lang-switch', 'chat-log', 'chat-input', 'btn-mic', 'btn-cam', 'btn-screen', 'btn-leave']) {
      assert.ok(stops.some((s) => s.id === id), `Tab reaches #${id}: ${JSON.stringify(stops)}`);
    }
    assert.deepEqual(stops.filter((s) => !s.ring), [], 'every stop shows a focus ring');
    await bob.page.focus('#btn-mic');
    await bob.page.keyboard.press('Space');
    await waitFor(async () => (await bob.page.getAttribute('#btn-mic', 'aria-pressed')) === 'true', { what: 'Space mutes' });
    await waitFor(() => ann.page.evaluate((id) => document.querySelector(`.tile[data-participant-id="${id}"] .mic-off`)?.hidden === false, bob.id),
      { what: "Bob's mic-off badge on Ann's page" });
    // Chat by keyboard: type, Enter; both logs show it (escaped text shown as typed).
    await bob.page.focus('#chat-input');
    await bob.page.keyboard.type('<hello> & 안녕');
    await bob.page.keyboard.press('Enter');
    for (const p of [bob.page, ann.page]) {
      await waitFor(async () => (await p.textContent('#chat-log')).includes('Bob: <hello> & 안녕'), { what: 'the message in the chat log' });
    }
    assert.equal(await bob.page.inputValue('#chat-input'), '', 'the input is cleared');
    assert.equal(await ann.page.getAttribute('#chat-log', 'aria-live'), 'polite');
    assert.equal(await ann.page.evaluate(() => document.querySelector('#chat-log b, #chat-log hello')), null, 'no markup from a message');
    await axe(ann.page, 'room (ko, muted badge, chat)');
    await axe(bob.page, 'room (en)');

    // Reduced motion: Ann's tiles do not animate; Bob's do.
    const transition = (p) => p.evaluate(() => getComputedStyle(document.querySelector('.tile')).transitionDuration);
    assert.equal(await transition(ann.page), '0s');
    assert.notEqual(await transition(bob.page), '0s');

    // 3. A proctor: the focus feed and the announcer tell of a learner's focus loss.
    const pat = await openParticipant(browser, server.baseUrl, { room: 'a11y', name: 'Pat', role: 'proctor', query: { lang: 'ko' } });
    const cy = await joinClient(server.baseUrl, { room: 'a11y', name: 'Cy' });
    extra.push(cy);
    await ok(cy.socket, 'focus', { state: 'lost', reason: 'hidden', at: Date.now() });
    const patAnnounced = () => pat.page.textContent('#announcer');
    await waitFor(async () => /Cy 이탈: 탭 숨김 \/ Cy left the exam: Tab hidden/.test(await patAnnounced()), { what: 'the focus loss announced', progress: patAnnounced });
    assert.equal(await pat.page.getAttribute('#focus-feed', 'aria-live'), 'polite');
    await waitFor(() => pat.page.evaluate(() => document.querySelectorAll('#focus-feed li').length === 1), { what: 'the feed entry' });
    await axe(pat.page, 'proctor view with a focus alert');

    // 4. Bob leaves: announced on Ann's page.
    await bob.page.click('#btn-leave');
    await waitFor(async () => /Bob 님이 나갔습니다 \/ Bob left/.test(await announced()), { what: 'Bob leaving announced', progress: announced });
    await pat.close();
    await ann.close();
    await bob.close();
  } catch (e) {
    console.error(`==== studyroom log (tail)\n${server.logs().split('\n').slice(-60).join('\n')}`);
    throw e;
  }
});
