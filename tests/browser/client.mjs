// Browser test of the JavaScript client (clients/js/dist, as committed), run by
// tests/js_client.rs against the real binary:
//   node tests/browser/client.mjs BASE_URL API_KEY
// Over stdout/stdin it asks the Rust test to upgrade the server in place: it prints
// `@upgrade` and waits for a line `upgraded`. Exits 0 when every step passed.
import { chromium } from 'playwright-core';
import { build } from 'esbuild';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const [base, key] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(here, '../../clients/js/dist');

// The page under test: the client and its hooks with React, bundled from the committed
// build, run on the server's own origin (so cookies and same-origin rules are real).
const harness = await build({
  stdin: {
    contents: `
      import * as client from ${JSON.stringify(path.join(dist, 'index.js'))};
      import * as hooks from ${JSON.stringify(path.join(dist, 'react.js'))};
      import * as React from 'react';
      import { createRoot } from 'react-dom/client';
      window.sl = { ...client, hooks, React, createRoot };`,
    resolveDir: here,
  },
  bundle: true,
  // React comes from these tests' packages, not the client's (a peer dependency there).
  nodePaths: [path.join(here, 'node_modules')],
  format: 'esm',
  write: false,
  define: { 'process.env.NODE_ENV': '"production"' },
});
const harnessJs = harness.outputFiles[0].text;

const lines = createInterface({ input: process.stdin });
const replies = [];
let waiting = null;
lines.on('line', (line) => (waiting ? (waiting(line), (waiting = null)) : replies.push(line)));
async function upgrade() {
  console.log('@upgrade');
  const line = replies.shift() ?? (await new Promise((resolve) => (waiting = resolve)));
  if (line !== 'upgraded') throw new Error(`the server was not upgraded: ${line}`);
}

async function api(method, p, body) {
  const response = await fetch(`${base}${p}`, {
    method,
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${p} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run'],
});
const page = await browser.newPage();
page.on('pageerror', (e) => console.log('page error:', e.message));
// Blocking transports: requests by Chromium's own URL blocking (which does not cover
// WebSockets), WebSockets by Playwright's WebSocket routing (closed at once when blocked,
// else passed through to the server).
const cdp = await page.context().newCDPSession(page);
await cdp.send('Network.enable');
const PATTERNS = { sse: '*/api/v1/events*', polling: '*/api/v1/notifications*' };
let socketsAllowed = true;
await page.routeWebSocket(/\/api\/v1\/ws/, (ws) => {
  if (socketsAllowed) ws.connectToServer();
  else ws.close({ code: 1011, reason: 'blocked by the test' });
});
/** Lets only the named transports through (new connections; open ones stay). */
async function allow(...transports) {
  socketsAllowed = transports.includes('websocket');
  const urls = Object.entries(PATTERNS).filter(([t]) => !transports.includes(t)).map(([, u]) => u);
  await cdp.send('Network.setBlockedURLs', { urls });
}

let step = 'start';
try {
  step = 'the harness loads';
  // A document the server itself answered (a page Playwright made up would not count as
  // this origin for Chromium's local network checks, which then refuse WebSockets).
  await page.goto(`${base}/healthz`);
  await page.setContent('<!doctype html><meta charset="utf-8"><title>client</title><div id="root"></div>');
  await page.addScriptTag({ content: harnessJs, type: 'module' });
  await page.waitForFunction(() => window.sl !== undefined, null, { timeout: 10000 });

  step = 'typed calls: create, get, list, update, stats, QR, export, errors, delete';
  const typed = await page.evaluate(async (key) => {
    const client = new window.sl.Shortlink({ apiKey: key });
    const created = await client.links.create({ url: 'https://example.com/typed', alias: 'jsclient', tags: ['js'] });
    const got = await client.links.get('jsclient');
    const listed = await client.links.list({ tag: 'js' });
    const updated = await client.links.update('jsclient', { tags: ['js', 'typed'] });
    const stats = await client.links.stats('jsclient', { interval: 'day' });
    const qr = await client.links.qr('jsclient', { format: 'png', size: 128 });
    const csv = await client.links.export();
    let invalid = null;
    try {
      await client.links.create({ url: 'ftp://example.com/x' });
    } catch (e) {
      invalid = { name: e.name, status: e.status, code: e.code, message: e.message };
    }
    let everyLink = 0;
    for await (const link of client.links.all({ limit: 1 })) everyLink += link.code ? 1 : 0;
    await client.links.delete('jsclient');
    let gone = null;
    try {
      await client.links.get('jsclient');
    } catch (e) {
      gone = { status: e.status, code: e.code };
    }
    return {
      code: created.code, short: created.short_url, got: got.url, listed: listed.items.map((l) => l.code),
      tags: updated.tags, total: stats.total, qr: qr.type, qrSize: qr.size, csv: csv.includes('jsclient'),
      invalid, everyLink, gone,
    };
  }, key);
  console.log('typed calls:', JSON.stringify(typed));
  if (typed.code !== 'jsclient' || !typed.short.endsWith('/jsclient')) throw new Error('create');
  if (typed.got !== 'https://example.com/typed') throw new Error('get');
  if (!typed.listed.includes('jsclient')) throw new Error('list by tag');
  if (typed.tags.join() !== 'js,typed') throw new Error('update');
  if (typed.total !== 0) throw new Error('stats');
  if (typed.qr !== 'image/png' || typed.qrSize < 100) throw new Error('qr');
  if (!typed.csv) throw new Error('export');
  if (!typed.invalid || typed.invalid.name !== 'ApiError' || typed.invalid.status !== 422 ||
      typed.invalid.code !== 'url_scheme_not_allowed') throw new Error(`error answer: ${JSON.stringify(typed.invalid)}`);
  if (typed.everyLink < 1) throw new Error('paging through every link');
  if (!typed.gone || typed.gone.status !== 404) throw new Error('delete');

  step = 'events arrive over a WebSocket';
  await allow('websocket', 'sse', 'polling');
  await page.evaluate((key) => {
    window.received = [];
    window.statuses = [];
    const client = new window.sl.Shortlink({ apiKey: key });
    window.stream = client.events({ types: ['link.created'], retryDelayMs: 100, maxDelayMs: 500, openTimeoutMs: 3000 });
    window.stream.on('event', (e) => window.received.push({ id: e.id, code: e.data.code, transport: window.stream.transport }));
    window.stream.on('status', (s, t) => window.statuses.push(`${s}:${t}`));
    window.stream.on('error', (e) => window.statuses.push(`error:${e.transport}:${e.message}`));
  }, key);
  await page.waitForFunction(() => window.statuses.includes('open:websocket'), null, { timeout: 10000 });
  const codes = [];
  const createLink = async (alias) => {
    codes.push((await api('POST', '/api/v1/links', { url: `https://example.com/${alias}`, alias })).code);
  };
  const arrived = (n, timeout = 15000) =>
    page.waitForFunction((n) => window.received.length >= n, n, { timeout });
  await createLink('ev-a');
  await arrived(1);

  step = 'with WebSockets blocked, the stream falls back to SSE and resumes after the last id';
  await allow();
  const statusesBefore = await page.evaluate(() => window.statuses.length);
  await upgrade();
  // The old process closed the stream; nothing can reconnect until a transport is allowed.
  await page.waitForFunction((n) => window.statuses.slice(n).some((s) => s.startsWith('connecting')),
    statusesBefore, { timeout: 15000 });
  await createLink('ev-b');
  await createLink('ev-c');
  await allow('sse');
  await arrived(3);

  step = 'with SSE blocked too, the stream falls back to long polling and resumes';
  await allow();
  await upgrade();
  await createLink('ev-d');
  await allow('polling');
  await arrived(4);

  step = 'a new stream resumes over a WebSocket from a kept id';
  await allow('websocket', 'sse', 'polling');
  const resumed = await page.evaluate(async ({ key, after }) => {
    const client = new window.sl.Shortlink({ apiKey: key });
    const stream = client.events({ lastEventId: after, transports: ['websocket'] });
    const got = [];
    await new Promise((resolve, reject) => {
      setTimeout(() => reject(new Error(`only ${JSON.stringify(got)}`)), 10000);
      stream.on('event', (e) => {
        if (e.type === 'link.created') got.push({ id: e.id, code: e.data.code, transport: stream.transport });
        if (got.length === 2) resolve();
      });
    });
    stream.close();
    return got;
  }, { key, after: (await page.evaluate(() => window.received[1].id)) });
  const received = await page.evaluate(() => window.received);
  const statuses = await page.evaluate(() => window.statuses);
  console.log('received:', JSON.stringify(received));
  console.log('statuses:', statuses.join(' '));
  console.log('resumed:', JSON.stringify(resumed));
  if (received.map((r) => r.code).join() !== codes.join()) throw new Error('each event exactly once, in order');
  for (let i = 1; i < received.length; i++) {
    if (!(received[i].id > received[i - 1].id)) throw new Error('event ids increase');
  }
  const via = received.map((r) => r.transport).join();
  if (via !== 'websocket,sse,sse,polling') throw new Error(`transports: ${via}`);
  if (resumed.map((r) => r.id).join() !== received.slice(2).map((r) => r.id).join() ||
      resumed.some((r) => r.transport !== 'websocket')) throw new Error('resume over a WebSocket');
  await page.evaluate(() => window.stream.close());

  step = 'a refused key stops the stream with an error instead of retrying';
  const refused = await page.evaluate(async () => {
    const client = new window.sl.Shortlink({ apiKey: 'sl_not_a_key_at_all_0000000000000' });
    const stream = client.events({ retryDelayMs: 50 });
    return await new Promise((resolve) => {
      const errors = [];
      stream.on('error', (e) => errors.push(`${e.transport}:${e.fatal}`));
      stream.on('status', (s) => s === 'closed' && resolve(errors));
      setTimeout(() => resolve(['still running', ...errors]), 10000);
    });
  });
  console.log('refused key:', refused.join(' '));
  if (refused.length !== 1 || refused[0] !== 'websocket:true') throw new Error(`refused: ${refused}`);

  step = 'an event stream that goes quiet past the idle timeout is reconnected';
  const quiet = await page.evaluate(async (key) => {
    const client = new window.sl.Shortlink({ apiKey: key });
    const stream = client.events({ transports: ['sse'], idleTimeoutMs: 400, retryDelayMs: 50 });
    const seen = [];
    stream.on('status', (s) => seen.push(s));
    stream.on('error', (e) => seen.push(`error:${e.message}`));
    await new Promise((resolve) => {
      const check = setInterval(() => {
        if (seen.filter((s) => s === 'open').length >= 2) { clearInterval(check); resolve(); }
      }, 50);
      setTimeout(() => { clearInterval(check); resolve(); }, 10000);
    });
    stream.close();
    return seen;
  }, key);
  console.log('idle stream:', quiet.join(' '));
  if (!quiet.includes('error:the event stream went quiet') || quiet.filter((s) => s === 'open').length < 2)
    throw new Error(`a quiet stream: ${quiet.join(' ')}`);

  step = 'the React hooks: useLinks, useEvents, useLinkStats, useUpload';
  await page.evaluate((key) => {
    const { React, createRoot, hooks, Shortlink } = window.sl;
    const client = new Shortlink({ apiKey: key });
    window.hookState = {};
    function App() {
      const links = hooks.useLinks(client, { limit: 100 });
      const events = hooks.useEvents(client, { types: ['link.created', 'link.deleted'] });
      const stats = hooks.useLinkStats(client, window.statsCode ?? null, { interval: 'hour' });
      const upload = hooks.useUpload(client);
      window.hookState = { links, events, stats, upload };
      return React.createElement('ul', null,
        links.links.map((l) => React.createElement('li', { key: l.code, 'data-code': l.code }, l.code)));
    }
    window.rerender = () => window.root.render(React.createElement(App));
    window.root = createRoot(document.getElementById('root'));
    window.rerender();
  }, key);
  await page.waitForFunction(() => !window.hookState.links.loading && window.hookState.events.status === 'open',
    null, { timeout: 10000 });
  for (const code of codes) await page.locator(`li[data-code="${code}"]`).waitFor({ timeout: 5000 });
  await page.evaluate(() => window.hookState.links.create({ url: 'https://example.com/hooked', alias: 'hooked' }));
  await page.locator('li[data-code="hooked"]').waitFor({ timeout: 5000 });
  await page.waitForFunction(() => window.hookState.events.events.some((e) => e.data.code === 'hooked'), null,
    { timeout: 10000 });
  const followed = await fetch(`${base}/hooked`, { redirect: 'manual' });
  if (followed.status !== 301) throw new Error(`the short link answered ${followed.status}`);
  await page.evaluate(() => { window.statsCode = 'hooked'; window.rerender(); });
  await page.waitForFunction(async () => {
    const s = window.hookState.stats;
    if (s.stats && s.stats.total >= 1) return true;
    if (!s.loading) await s.refresh();
    return false;
  }, null, { timeout: 15000, polling: 300 });
  const uploaded = await page.evaluate(async () => {
    const seen = [];
    const bytes = new Uint8Array(3 * 1024 * 1024).fill(7);
    const file = new File([bytes], 'hooked.bin', { type: 'application/octet-stream' });
    const result = await window.hookState.upload.upload(file);
    await new Promise((r) => setTimeout(r, 0));
    seen.push(window.hookState.upload.progress);
    return { id: result.id, size: result.size, progress: window.hookState.upload.progress, uploading: window.hookState.upload.uploading };
  });
  console.log('upload:', JSON.stringify(uploaded));
  if (uploaded.size !== 3 * 1024 * 1024 || uploaded.progress.loaded !== uploaded.size || uploaded.uploading)
    throw new Error('useUpload');
  const listed = await api('GET', '/api/v1/uploads');
  if (!listed.items.some((u) => u.id === uploaded.id)) throw new Error('the upload is listed');
  await page.evaluate(() => window.hookState.links.remove('hooked'));
  await page.waitForFunction(() => !document.querySelector('li[data-code="hooked"]') &&
    window.hookState.events.events.some((e) => e.type === 'link.deleted' && e.data.code === 'hooked'), null,
    { timeout: 10000 });
  console.log('hooks: transport', await page.evaluate(() => window.hookState.events.transport));
  console.log('all steps passed');
} catch (error) {
  console.log(`FAILED at step "${step}": ${error.stack || error}`);
  console.log('stream statuses:', JSON.stringify(await page.evaluate(() => window.statuses).catch(() => null)));
  process.exitCode = 1;
} finally {
  await browser.close();
  lines.close();
}
