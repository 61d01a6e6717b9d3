// The shortlink web page: plain modern JavaScript, no build step, no third-party code.
// People sign in with a user name and password: the server sets an HttpOnly session
// cookie this script never sees, and every request says X-Requested-With so the server
// knows it came from this page. Alternatively an API key lives in sessionStorage and is
// sent only in the Authorization header of requests to this page's own origin (the
// server's CSP allows no other destination).

import { EventStream } from './lib/events.js';

const $ = (selector) => document.querySelector(selector);
const KEY_SLOT = 'shortlink.api_key';
const SESSION_SLOT = 'shortlink.signed_in';
let apiKey = sessionStorage.getItem(KEY_SLOT);
let signedIn = sessionStorage.getItem(SESSION_SLOT) === '1';

// What authenticates a request: the key, or the session cookie (sent by the browser).
function authHeaders() {
  return apiKey ? { Authorization: `Bearer ${apiKey}` } : { 'X-Requested-With': 'shortlink' };
}
let nextCursor = null;
let openStats = null;
let lastEventId = null;
let stream = null;
const clicksCells = new Map();

// Errors in words a person understands; the API's own message is the fallback.
const MESSAGES = {
  unauthorized: 'That API key was not accepted. Check it and sign in again.',
  invalid_credentials: 'That user name and password do not match.',
  forbidden: 'Your key is not allowed to do that.',
  url_empty: 'Enter the address to shorten.',
  url_invalid: 'That does not look like a web address. It should start with https://',
  url_not_absolute: 'Use a full web address, starting with https://',
  url_scheme_not_allowed: 'Only web addresses (http or https) can be shortened.',
  url_no_host: 'That address has no site name in it.',
  url_has_credentials: 'Addresses with a user name or password in them cannot be shortened.',
  url_host_blocked: 'Links to that site are not allowed here.',
  url_too_long: 'That address is too long.',
  url_invalid_characters: 'That address contains characters that are not allowed.',
  alias_taken: 'That alias is already in use. Pick another one.',
  alias_reserved: 'That alias is reserved by the service. Pick another one.',
  alias_invalid: 'Aliases use letters, digits, - and _ only.',
  tags_invalid: 'Tags are at most 16, each up to 32 characters.',
  invalid_expires_at: 'The expiry must be in the future.',
  invalid_max_clicks: 'The click limit must be a positive number.',
  unsupported_option: 'This server does not support that option yet.',
  invalid_password: 'Passwords are 1 to 256 characters.',
  invalid_targeting: 'One of the targeting addresses is not valid.',
  unknown_domain: 'That domain is not registered on this server.',
  rate_limited: 'Too many changes in a short time. Wait a moment and try again.',
  upload_too_large: 'That file is larger than this server accepts.',
  payload_too_large: 'That is more data than this server accepts at once.',
  not_found: 'That no longer exists.',
  internal: 'Something went wrong on the server. Try again shortly.',
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(MESSAGES[code] || message || `The server answered ${status}.`);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const headers = { ...authHeaders(), ...(options.headers || {}) };
  let body = options.body;
  if (body !== undefined && typeof body !== 'string' && !(body instanceof FormData)) {
    body = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  let response;
  try {
    response = await fetch(path, { ...options, headers, body });
  } catch {
    throw new ApiError(0, 'offline', 'The server cannot be reached. Check your connection.');
  }
  const text = await response.text();
  const json = text ? safeJson(text) : null;
  if (!response.ok) {
    const error = json && json.error ? json.error : {};
    if (response.status === 401 && path !== '/api/v1/links?limit=1' && path !== '/api/v1/auth/login') {
      signOut(signedIn ? 'Your session has ended. Sign in again.' : MESSAGES.unauthorized);
    }
    throw new ApiError(response.status, error.code, error.message);
  }
  return json;
}

function safeJson(text) {
  try { return JSON.parse(text); } catch { return null; }
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

// ---- sign in ----

async function signIn(event) {
  event.preventDefault();
  const error = $('#signin-error');
  error.textContent = '';
  apiKey = $('#api-key').value.trim();
  try {
    await api('/api/v1/links?limit=1');
  } catch (e) {
    apiKey = null;
    error.textContent = e.status === 401 ? MESSAGES.unauthorized : e.message;
    $('#api-key').focus();
    return;
  }
  sessionStorage.setItem(KEY_SLOT, apiKey);
  $('#api-key').value = '';
  start();
}

async function logIn(event) {
  event.preventDefault();
  const error = $('#login-error');
  error.textContent = '';
  apiKey = null;
  try {
    await api('/api/v1/auth/login', {
      method: 'POST',
      body: { name: $('#login-name').value.trim(), password: $('#login-password').value },
    });
  } catch (e) {
    error.textContent = e.message;
    $('#login-password').focus();
    return;
  }
  signedIn = true;
  sessionStorage.setItem(SESSION_SLOT, '1');
  $('#login-password').value = '';
  start();
}

function signOut(message) {
  if (signedIn) {
    fetch('/api/v1/auth/logout', { method: 'POST', headers: authHeaders() }).catch(() => {});
  }
  sessionStorage.removeItem(KEY_SLOT);
  sessionStorage.removeItem(SESSION_SLOT);
  apiKey = null;
  signedIn = false;
  stream?.close();
  stream = null;
  $('#app-view').hidden = true;
  $('#signout').hidden = true;
  $('#live').hidden = true;
  $('#signin-view').hidden = false;
  $('#signin-error').textContent = message || '';
  $('#webhook-secret').replaceChildren();
}

// The newest event id: live updates start after it, so counts loaded now are not
// counted again by a replay of older events.
async function eventHead() {
  let after = 0;
  for (;;) {
    const page = await api(`/api/v1/notifications?after=${after}&limit=1000`);
    if (page.items.length) after = page.next;
    if (page.items.length < 1000) return after;
  }
}

async function start() {
  $('#signin-view').hidden = true;
  $('#app-view').hidden = false;
  $('#signout').hidden = false;
  $('#url').focus();
  try { lastEventId = await eventHead(); } catch { lastEventId = null; }
  await loadLinks(true);
  loadWebhooks();
  loadDomains();
  follow();
}

// ---- links ----

function row(link) {
  const cell = el('td', { className: 'num', textContent: String(link.clicks) });
  clicksCells.set(link.code, { cell, count: link.clicks });
  const stats = el('button', { type: 'button', className: 'link', textContent: 'Stats' });
  stats.setAttribute('aria-label', `Statistics of ${link.code}`);
  stats.addEventListener('click', () => showStats(link.code));
  const tr = el('tr', {},
    el('td', {}, el('a', { href: link.short_url, textContent: link.short_url.replace(/^https?:\/\//, '') })),
    el('td', { className: 'url', textContent: link.url }),
    cell,
    el('td', { textContent: link.password_protected ? `${link.state} · password` : link.state }),
    el('td', {}, stats));
  tr.dataset.code = link.code;
  return tr;
}

async function loadLinks(reset) {
  const params = new URLSearchParams({ limit: '20' });
  const q = $('#q').value.trim();
  const tag = $('#tag').value.trim();
  if (q) params.set('q', q);
  if (tag) params.set('tag', tag);
  if (!reset && nextCursor) params.set('cursor', nextCursor);
  try {
    const page = await api(`/api/v1/links?${params}`);
    const body = $('#links tbody');
    if (reset) { body.replaceChildren(); clicksCells.clear(); }
    for (const link of page.items) body.append(row(link));
    nextCursor = page.next_cursor;
    $('#more').hidden = !nextCursor;
  } catch (e) {
    $('#create-error').textContent = e.message;
  }
}

async function createLink(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const request = { url: form.get('url').trim() };
  const alias = form.get('alias').trim();
  if (alias) request.alias = alias;
  const expires = form.get('expires_at');
  if (expires) request.expires_at = new Date(expires).toISOString();
  const max = form.get('max_clicks');
  if (max) request.max_clicks = Number(max);
  const password = form.get('password');
  if (password) request.password = password;
  const tags = form.get('tags').split(',').map((t) => t.trim()).filter(Boolean);
  if (tags.length) request.tags = tags;
  if (form.get('redirect') !== '301') request.redirect = Number(form.get('redirect'));
  $('#create-error').textContent = '';
  $('#created').replaceChildren();
  try {
    const link = await api('/api/v1/links', { method: 'POST', body: request });
    $('#created').append('Short link: ', el('a', { href: link.short_url, textContent: link.short_url }), ' ',
      copyButton(link.short_url, 'Select and copy the link'));
    qrCode(link.code).then((qr) => { if (qr) $('#created').append(qr); });
    event.target.reset();
    loadLinks(true);
  } catch (e) {
    $('#create-error').textContent = e.message;
  }
}

function copyButton(text, fallback) {
  const copy = el('button', { type: 'button', textContent: 'Copy' });
  copy.addEventListener('click', async () => {
    try { await navigator.clipboard.writeText(text); copy.textContent = 'Copied'; }
    catch { copy.textContent = fallback; }
  });
  return copy;
}

// The link's QR code (PNG, fetched with the key in a header) and a download link for it.
async function qrCode(code) {
  const response = await fetch(`/api/v1/links/${encodeURIComponent(code)}/qr?format=png&size=160`,
    { headers: authHeaders() });
  if (!response.ok) return null;
  const url = URL.createObjectURL(await response.blob());
  return el('div', { className: 'qr' },
    el('img', { src: url, alt: `QR code of the short link ${code}`, width: 160, height: 160 }),
    el('a', { href: url, download: `${code}-qr.png`, textContent: 'Download QR code' }));
}

// ---- statistics ----

async function showStats(code) {
  openStats = code;
  const view = $('#stats-view');
  view.hidden = false;
  $('#stats-title').textContent = `Statistics of ${code}`;
  try {
    const stats = await api(`/api/v1/links/${encodeURIComponent(code)}/stats?interval=hour`);
    $('#stats-summary').textContent = `${stats.total} click${stats.total === 1 ? '' : 's'}: `
      + `${stats.humans} by people, ${stats.bots} by bots (last 7 days). The lists count people.`;
    drawChart(stats);
    const tops = $('#tops');
    tops.replaceChildren();
    for (const [title, list] of [['Referrers', stats.referrers], ['Countries', stats.countries],
      ['Browsers', stats.browsers], ['Operating systems', stats.os], ['Devices', stats.devices]]) {
      const items = list.length ? list.map((k) => el('li', { textContent: `${k.key || 'unknown'}: ${k.count}` }))
        : [el('li', { textContent: 'none yet' })];
      tops.append(el('section', {}, el('h3', { textContent: title }), el('ol', {}, ...items)));
    }
  } catch (e) {
    $('#stats-summary').textContent = e.message;
  }
}

// One bar per hour of the queried range, scaled to the busiest hour.
function drawChart(stats) {
  const svg = $('#chart');
  svg.replaceChildren();
  const from = Date.parse(stats.from) / 1000;
  const to = Date.parse(stats.to) / 1000;
  const hours = Math.max((to - from) / 3600, 1);
  if (!stats.series.length) return;
  const max = Math.max(...stats.series.map((p) => p.count));
  const width = 600 / hours;
  for (const point of stats.series) {
    const h = Math.max((point.count / max) * 150, 2);
    const rect = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
    rect.setAttribute('x', String(((point.ts - from) / 3600) * width));
    rect.setAttribute('y', String(160 - h));
    rect.setAttribute('width', String(Math.max(width * 0.8, 2)));
    rect.setAttribute('height', String(h));
    const title = document.createElementNS('http://www.w3.org/2000/svg', 'title');
    title.textContent = `${new Date(point.ts * 1000).toLocaleString()}: ${point.count}`;
    rect.append(title);
    svg.append(rect);
  }
}

// ---- live events ----

function handle(event) {
  if (event.id) lastEventId = event.id;
  const data = event.data || {};
  let text = event.type;
  if (event.type === 'link.clicked') {
    const held = clicksCells.get(data.code);
    if (held) { held.count += data.count; held.cell.textContent = String(held.count); }
    text = `${data.code}: ${data.count} click${data.count === 1 ? '' : 's'}`;
    if (openStats === data.code) showStats(data.code);
  } else if (event.type.startsWith('link.')) {
    text = `${event.type.slice(5)} ${data.code}`;
    loadLinks(true);
  } else if (event.type === 'upload.thumbnails_ready') {
    showThumbnail(data);
    text = `thumbnails ready for ${data.filename}`;
  } else if (event.type === 'upload.completed') {
    text = `uploaded ${data.filename}`;
  } else if (event.type === 'webhook.disabled') {
    text = `webhook disabled ${data.url || data.id || ''}`.trim();
    loadWebhooks();
  }
  // Oldest first in a fixed-height box scrolled to the end: a new line moves nothing else.
  const list = $('#events');
  list.append(el('li', { textContent: `${new Date(event.at).toLocaleTimeString()} ${text}` }));
  while (list.children.length > 50) list.firstChild.remove();
  list.scrollTop = list.scrollHeight;
}

function setLive(on, how) {
  const live = $('#live');
  live.hidden = false;
  live.textContent = on ? `live (${how})` : 'reconnecting…';
}

const TRANSPORT_NAMES = { websocket: 'WebSocket', sse: 'stream', polling: 'polling' };

// Events from @shortlink/client's EventStream: a WebSocket, else Server-Sent Events, else
// long polling, resuming after the last event id whichever carries them.
function follow() {
  stream?.close();
  stream = new EventStream({ apiKey: apiKey || undefined, lastEventId });
  stream.on('event', handle);
  stream.on('status', (status, transport) => {
    if (status !== 'closed') setLive(status === 'open', TRANSPORT_NAMES[transport]);
  });
  stream.on('error', (error) => { if (error.fatal) signOut(MESSAGES.unauthorized); });
}

// ---- uploads ----

// Files up to this size go in one streamed POST; larger ones by a presigned PUT when the
// storage's URL is this origin (the local store), else streamed too (the CSP allows
// requests to this origin only).
const PRESIGN_FROM = 16 * 1024 * 1024;

function send(method, url, headers, body, progress) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener('progress', (e) => { if (e.lengthComputable) progress.value = e.loaded / e.total; });
    xhr.addEventListener('load', () => resolve({ status: xhr.status, body: safeJson(xhr.responseText) || {} }));
    xhr.addEventListener('error', () => resolve({ status: 0, body: {} }));
    xhr.send(body);
  });
}

async function presigned(file, progress) {
  const request = { filename: file.name, size: file.size };
  if (file.type) request.content_type = file.type;
  const grant = await api('/api/v1/uploads/presign', { method: 'POST', body: request });
  if (new URL(grant.upload_url, location.href).origin !== location.origin) return null;
  const put = await send(grant.method, grant.upload_url, grant.headers, file, progress);
  if (put.status < 200 || put.status > 299) return put;
  try {
    const done = await api(`/api/v1/uploads/${encodeURIComponent(grant.id)}/complete`, { method: 'POST' });
    return { status: 201, body: done };
  } catch (e) {
    return { status: e.status, body: { error: { code: e.code, message: e.message } } };
  }
}

async function uploadFile(file) {
  const progress = el('progress', { max: 1, value: 0 });
  progress.setAttribute('aria-label', `Uploading ${file.name}`);
  const status = el('span', { textContent: file.name });
  const item = el('li', {}, progress, status);
  $('#uploads').prepend(item);
  let result = null;
  try {
    if (file.size >= PRESIGN_FROM) result = await presigned(file, progress);
  } catch (e) {
    result = { status: e.status, body: { error: { code: e.code, message: e.message } } };
  }
  if (!result) {
    const form = new FormData();
    form.append('file', file);
    result = await send('POST', '/api/v1/uploads', authHeaders(), form, progress);
  }
  const { status: code, body } = result;
  if (code !== 201) {
    const error = body.error || {};
    status.textContent = code === 0 ? `${file.name}: the upload was interrupted.`
      : `${file.name}: ${new ApiError(code, error.code, error.message).message}`;
    status.className = 'error';
    progress.remove();
    return;
  }
  progress.value = 1;
  item.dataset.upload = body.id;
  item.dataset.state = 'complete';
  status.replaceChildren(el('a', { href: body.short_url || body.url, textContent: file.name }));
  if (body.thumbnails.state === 'pending') waitForThumbnail(body.id);
  else showThumbnail(body);
}

function showThumbnail(upload) {
  const item = document.querySelector(`li[data-upload="${CSS.escape(upload.id)}"]`);
  const thumb = upload.thumbnails && upload.thumbnails.items.find((t) => t.size === 150);
  if (!item || !thumb || item.querySelector('img')) return;
  item.querySelector('progress')?.remove();
  item.prepend(el('img', { src: thumb.url, alt: `Thumbnail of ${upload.filename}`, width: 75, height: 75 }));
}

async function waitForThumbnail(id) {
  for (let i = 0; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    try {
      const upload = await api(`/api/v1/uploads/${encodeURIComponent(id)}`);
      if (upload.thumbnails.state !== 'pending') { showThumbnail(upload); return; }
    } catch { return; }
  }
}

// ---- webhooks ----

let openDeliveries = null;
const OUTCOMES = { delivered: 'delivered', failed: 'failed', given_up: 'given up' };

async function loadWebhooks() {
  try {
    const page = await api('/api/v1/webhooks');
    $('#webhooks').replaceChildren(...(page.items.length ? page.items.map(webhookItem)
      : [el('li', { className: 'hint', textContent: 'No webhooks yet.' })]));
  } catch (e) {
    $('#webhook-error').textContent = e.message;
  }
}

async function addWebhook(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const request = { url: form.get('url').trim() };
  const events = form.getAll('events');
  if (events.length) request.events = events;
  $('#webhook-error').textContent = '';
  $('#webhook-secret').replaceChildren();
  try {
    const hook = await api('/api/v1/webhooks', { method: 'POST', body: request });
    const copy = copyButton(hook.secret, 'Select and copy the secret');
    copy.setAttribute('aria-label', 'Copy the secret');
    $('#webhook-secret').append('Signing secret: ', el('code', { textContent: hook.secret }), ' ', copy,
      el('span', { className: 'hint', textContent: ' Copy this secret now: it is not shown again.' }));
    event.target.reset();
    await loadWebhooks();
  } catch (e) {
    $('#webhook-error').textContent = e.message;
  }
}

function webhookItem(hook) {
  const path = `/api/v1/webhooks/${encodeURIComponent(hook.id)}`;
  const result = $('#webhook-result');
  // A button whose accessible name says which endpoint it acts on; errors show in words.
  const button = (text, label, action) => {
    const b = el('button', { type: 'button', textContent: text });
    b.setAttribute('aria-label', `${label} ${hook.url}`);
    b.addEventListener('click', async () => {
      b.disabled = true;
      $('#webhook-error').textContent = '';
      try { await action(); } catch (e) { $('#webhook-error').textContent = e.message; }
      b.disabled = false;
    });
    return b;
  };
  const remove = button('Delete', 'Delete webhook', async () => {
    await api(path, { method: 'DELETE' });
    result.textContent = `Deleted the webhook to ${hook.url}.`;
    if (openDeliveries === hook.id) { openDeliveries = null; $('#deliveries').hidden = true; }
    await loadWebhooks();
  });
  remove.className = 'danger';
  const state = hook.enabled ? 'enabled'
    : hook.disabled_reason === 'failing' ? 'disabled: deliveries kept failing'
      : hook.disabled_reason ? `disabled: ${hook.disabled_reason}` : 'disabled';
  const item = el('li', {},
    el('span', { className: 'url', textContent: hook.url }),
    el('span', { textContent: hook.events.length ? hook.events.join(', ') : 'all events' }),
    el('span', { className: hook.enabled ? 'state' : 'state off', textContent: state }),
    el('span', { className: 'actions' },
      button('Send test', 'Send test to', async () => {
        result.textContent = `Sending a test to ${hook.url}…`;
        try {
          const d = await api(`${path}/test`, { method: 'POST' });
          result.textContent = d.outcome === 'delivered' ? `Test delivered: HTTP ${d.status} in ${d.latency_ms} ms`
            : `Test failed: ${d.error || (d.status ? `HTTP ${d.status}` : 'no answer')}`;
        } catch (e) {
          result.textContent = `Test failed: ${e.message}`;
        }
        if (openDeliveries === hook.id) await showDeliveries(hook);
      }),
      button('Deliveries', 'Deliveries of', () => showDeliveries(hook)),
      button(hook.enabled ? 'Disable' : 'Enable', hook.enabled ? 'Disable' : 'Enable', async () => {
        await api(path, { method: 'PATCH', body: { enabled: !hook.enabled } });
        result.textContent = `${hook.enabled ? 'Disabled' : 'Enabled'} the webhook to ${hook.url}.`;
        await loadWebhooks();
      }),
      remove));
  item.dataset.webhook = hook.id;
  return item;
}

// ---- domains ----

const CERTIFICATE_STATES = {
  ordering: 'certificate being issued', issued: 'certificate issued',
  failed: 'certificate not issued', stored: 'certificate imported',
};

// A domain's certificate in words: its state, expiry, and after failures when it is tried again.
function certificateText(c) {
  if (!c) return 'no certificate';
  let text = CERTIFICATE_STATES[c.state] || c.state;
  if (c.not_after) text += `, expires ${new Date(c.not_after).toLocaleDateString()}`;
  if (c.state === 'failed') {
    text += ` (${c.failures} failed ${c.failures === 1 ? 'try' : 'tries'}`;
    if (c.next_attempt_at) text += `; next try ${new Date(c.next_attempt_at).toLocaleString()}`;
    text += ')';
  }
  return text;
}

function domainItem(name, certificate) {
  const item = el('li', {},
    el('span', { className: 'url', textContent: name }),
    el('span', {
      className: certificate && certificate.state === 'failed' ? 'state off' : 'state',
      textContent: certificateText(certificate),
    }));
  if (certificate && certificate.detail) item.append(el('span', { className: 'hint', textContent: certificate.detail }));
  item.dataset.domain = name;
  return item;
}

async function loadDomains() {
  try {
    const list = await api('/api/v1/domains');
    $('#domains').replaceChildren(
      domainItem(`${list.default_domain.name} (default)`, list.default_domain.certificate),
      ...list.items.map((d) => domainItem(d.name, d.certificate)));
  } catch (e) {
    $('#domains-error').textContent = e.message;
  }
}

// The endpoint's recent deliveries, newest first.
async function showDeliveries(hook) {
  const page = await api(`/api/v1/webhooks/${encodeURIComponent(hook.id)}/deliveries?limit=20`);
  openDeliveries = hook.id;
  const rows = page.items.map((d) => el('tr', {},
    el('td', { textContent: new Date(d.at).toLocaleString() }),
    el('td', { textContent: d.manual ? `${d.type} (manual)` : d.type }),
    el('td', { className: 'num', textContent: String(d.attempt) }),
    el('td', { className: 'num', textContent: d.status == null ? '—' : String(d.status) }),
    el('td', { textContent: [OUTCOMES[d.outcome] || d.outcome, d.error,
      d.next_try && `retry at ${new Date(d.next_try).toLocaleTimeString()}`].filter(Boolean).join(' · ') }),
    el('td', { className: 'num', textContent: d.latency_ms == null ? '—' : `${d.latency_ms} ms` })));
  if (!rows.length) rows.push(el('tr', {}, el('td', { colSpan: 6, textContent: 'No deliveries yet.' })));
  $('#deliveries-title').textContent = `Recent deliveries to ${hook.url}`;
  $('#deliveries tbody').replaceChildren(...rows);
  $('#deliveries').hidden = false;
}

// ---- wiring ----

$('#signin-form').addEventListener('submit', signIn);
$('#login-form').addEventListener('submit', logIn);
$('#signout').addEventListener('click', () => signOut());
$('#create-form').addEventListener('submit', createLink);
$('#filter-form').addEventListener('submit', (e) => { e.preventDefault(); loadLinks(true); });
$('#more').addEventListener('click', () => loadLinks(false));
$('#webhook-form').addEventListener('submit', addWebhook);
const drop = $('#drop');
drop.addEventListener('click', () => $('#file').click());
drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); $('#file').click(); } });
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  for (const file of e.dataTransfer.files) uploadFile(file);
});
$('#file').addEventListener('change', (e) => { for (const file of e.target.files) uploadFile(file); e.target.value = ''; });

if (apiKey || signedIn) start();
