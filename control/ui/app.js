// The shortlink web page: plain modern JavaScript on @shortlink/client (served from this
// binary at /ui/lib/), no build step, no third-party code. People sign in with a user name
// and password: the server sets an HttpOnly session cookie this script never sees, and
// every request says X-Requested-With so the server knows it came from this page.
// Alternatively an API key lives in sessionStorage and is sent only in the Authorization
// header of requests to this page's own origin (the server's CSP allows no other).

import { ApiError, EventStream, Shortlink } from './lib/index.js';

const $ = (selector) => document.querySelector(selector);
const KEY_SLOT = 'shortlink.api_key';
const SESSION_SLOT = 'shortlink.signed_in';
const VIEWS = ['links', 'stats', 'uploads', 'activity', 'settings'];
const TRANSPORT_NAMES = { websocket: 'WebSocket', sse: 'stream', polling: 'polling' };

let apiKey = sessionStorage.getItem(KEY_SLOT);
let signedIn = sessionStorage.getItem(SESSION_SLOT) === '1';
let client = new Shortlink({ apiKey: apiKey || undefined });
let stream = null;
let links = [];
let linksLoaded = false;
let nextCursor = null;
let uploadsCursor = null;
let statsTimer = null;
const clicksCells = new Map();

// Errors in words a person understands; the API's own message is the fallback.
const MESSAGES = {
  unauthorized: 'That API key was not accepted. Check it and sign in again.',
  invalid_credentials: 'That user name and password do not match.',
  forbidden: 'Your key is not allowed to do that.',
  network: 'The server cannot be reached. Check your connection.',
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
  quota_exceeded: 'Your storage is full. Delete some files first.',
  payload_too_large: 'That is more data than this server accepts at once.',
  not_found: 'That no longer exists.',
  internal: 'Something went wrong on the server. Try again shortly.',
  storage_unavailable: 'The database did not answer in time. Try again in a moment.',
};

/** The error in words; a refused key or ended session signs out. */
function words(error) {
  if (error instanceof ApiError) {
    if (error.status === 401 && (apiKey || signedIn)) {
      signOut(signedIn ? 'Your session has ended. Sign in again.' : MESSAGES.unauthorized);
    }
    return MESSAGES[error.code] || error.message;
  }
  return String(error.message || error);
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/** A button whose accessible name says what it acts on. */
function button(text, label, action, className = 'secondary') {
  const b = el('button', { type: 'button', textContent: text, className });
  if (label) b.setAttribute('aria-label', label);
  b.addEventListener('click', async () => {
    b.disabled = true;
    try { await action(b); } finally { b.disabled = false; }
  });
  return b;
}

/** A delete button that asks once more before acting. */
function confirmButton(label, action) {
  const b = el('button', { type: 'button', textContent: 'Delete', className: 'danger' });
  b.setAttribute('aria-label', label);
  let armed = null;
  b.addEventListener('click', async () => {
    if (!armed) {
      b.textContent = 'Confirm delete';
      b.setAttribute('aria-label', `Confirm: ${label}`);
      armed = setTimeout(() => {
        armed = null;
        b.textContent = 'Delete';
        b.setAttribute('aria-label', label);
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    b.disabled = true;
    try { await action(); } finally {
      b.disabled = false;
      b.textContent = 'Delete';
      b.setAttribute('aria-label', label);
    }
  });
  return b;
}

/** A button that copies `text`; its name says what (`Copy <what>`, then `Copied <what>`). */
function copyButton(text, what) {
  const copy = el('button', { type: 'button', className: 'secondary' });
  const show = (word) => {
    copy.textContent = word;
    copy.setAttribute('aria-label', `${word} ${what}`);
  };
  show('Copy');
  copy.addEventListener('click', async () => {
    try { await navigator.clipboard.writeText(text); show('Copied'); } catch { show('Select and copy'); }
    setTimeout(() => show('Copy'), 2000);
  });
  return copy;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const plural = (n, one, many = `${one}s`) => `${n.toLocaleString()} ${n === 1 ? one : many}`;

function bytes(n) {
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

// ---- sign in and views ----

async function signIn(event) {
  event.preventDefault();
  const error = $('#signin-error');
  error.textContent = '';
  const key = $('#api-key').value.trim();
  const trial = new Shortlink({ apiKey: key });
  try {
    await trial.links.list({ limit: 1 });
  } catch (e) {
    error.textContent = e.status === 401 ? MESSAGES.unauthorized : words(e);
    $('#api-key').focus();
    return;
  }
  apiKey = key;
  client = trial;
  sessionStorage.setItem(KEY_SLOT, apiKey);
  $('#api-key').value = '';
  start();
}

async function logIn(event) {
  event.preventDefault();
  const error = $('#login-error');
  error.textContent = '';
  apiKey = null;
  client = new Shortlink();
  try {
    await client.auth.login($('#login-name').value.trim(), $('#login-password').value);
  } catch (e) {
    error.textContent = words(e);
    $('#login-password').focus();
    return;
  }
  signedIn = true;
  sessionStorage.setItem(SESSION_SLOT, '1');
  $('#login-password').value = '';
  start();
}

function signOut(message) {
  if (signedIn) client.auth.logout().catch(() => {});
  sessionStorage.removeItem(KEY_SLOT);
  sessionStorage.removeItem(SESSION_SLOT);
  apiKey = null;
  signedIn = false;
  client = new Shortlink();
  stream?.close();
  stream = null;
  links = [];
  linksLoaded = false;
  linksGeneration += 1;
  clearTimeout(statsTimer);
  statsTimer = null;
  clicksCells.clear();
  for (const selector of ['#links', '#uploads', '#events', '#tiles', '#tops', '#chart', '#created',
    '#webhooks', '#webhook-result', '#domains', '#deliveries tbody', '#links-status', '#stats-status',
    '#uploads-status', '#usage', '#create-error']) $(selector).replaceChildren();
  $('#created').hidden = true;
  $('#deliveries').hidden = true;
  $('#events-empty').hidden = false;
  for (const view of VIEWS) $(`#view-${view}`).hidden = true;
  $('#nav').hidden = true;
  $('#signout').hidden = true;
  $('#live').hidden = true;
  $('#signin-view').hidden = false;
  $('#signin-error').textContent = message || '';
  $('#webhook-secret').replaceChildren();
}

async function start() {
  $('#signin-view').hidden = true;
  $('#nav').hidden = false;
  $('#signout').hidden = false;
  // The stream starts at the server's newest event; counts come from the API, so an
  // event only says which link to read again.
  follow();
  route();
  await loadLinks(true);
}

/** Shows the view the address names (`#links`, `#stats/CODE`, `#uploads`, ...). */
function route() {
  if (!apiKey && !signedIn) return;
  const [name, ...rest] = location.hash.slice(1).split('/');
  const view = VIEWS.includes(name) ? name : 'links';
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (view === 'stats') {
    let code = null;
    try { code = rest.length ? decodeURIComponent(rest.join('/')) : null; } catch { code = null; }
    openStats(code);
  }
  if (view === 'uploads') loadUploads(true);
  if (view === 'settings') { loadWebhooks(); loadDomains(); }
  if (view === 'links' && !$('#url').matches(':focus')) $('#url').focus({ preventScroll: true });
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// ---- links ----

const STATE_WORDS = { disabled: 'disabled', expired: 'expired', exhausted: 'used up' };

/** `live`, or why the link does not redirect (`disabled`, `expired`, `exhausted`). */
function linkState(link) {
  if (link.disabled) return 'disabled';
  return link.state;
}

function linkRow(link) {
  const code = link.code;
  const cell = el('span', { className: 'num clicks', textContent: String(link.clicks) });
  clicksCells.set(code, { cell, count: link.clicks });
  const state = linkState(link);
  const meta = el('span', { className: 'meta' },
    el('time', { dateTime: link.created_at, textContent: `Created ${dateFormat.format(new Date(link.created_at))}` }));
  if (link.expires_at) meta.append(el('span', { textContent: `expires ${timeFormat.format(new Date(link.expires_at))}` }));
  if (link.max_clicks) meta.append(el('span', { textContent: `limit ${link.max_clicks}` }));
  if (link.password_protected) meta.append(el('span', { textContent: 'password' }));
  for (const tag of link.tags) meta.append(el('span', { className: 'chip', textContent: tag }));
  const short = el('a', { className: 'short', href: link.short_url, textContent: link.short_url.replace(/^https?:\/\//, '') });
  const main = el('div', { className: 'link-main' }, short);
  if (state !== 'live') main.append(el('span', { className: 'badge off', textContent: STATE_WORDS[state] || state }));
  main.append(el('span', { className: 'target', textContent: link.url, title: link.url }), meta);
  const extra = el('div', { className: 'link-extra' });
  const item = el('li', { className: 'link' }, main,
    el('div', { className: 'link-clicks' }, cell, el('span', { className: 'hint', textContent: 'clicks' })),
    el('div', { className: 'link-actions' },
      copyButton(link.short_url, code),
      button('QR', `QR code of ${code}`, async () => {
        const shown = extra.querySelector('.qr img');
        if (shown) { URL.revokeObjectURL(shown.src); extra.replaceChildren(); return; }
        extra.replaceChildren(await qrCode(code));
      }),
      button('Statistics', `Statistics of ${code}`, () => go(`#stats/${encodeURIComponent(code)}`)),
      button('Edit', `Edit ${code}`, () => {
        if (extra.querySelector('form')) { extra.replaceChildren(); return; }
        extra.replaceChildren(editForm(link, extra));
        extra.querySelector('input').focus();
      }),
      button(link.disabled ? 'Enable' : 'Disable', `${link.disabled ? 'Enable' : 'Disable'} ${code}`, async () => {
        await changeLink(link, { disabled: !link.disabled });
      }),
      confirmButton(`Delete ${code}`, async () => {
        try {
          await client.links.delete(code, link.domain ?? undefined);
          links = links.filter((l) => l !== link);
          renderLinks();
          setStatus('#links-status', `Deleted ${code}.`);
        } catch (e) {
          setStatus('#links-status', words(e));
        }
      })),
    extra);
  item.dataset.code = code;
  item.dataset.state = state;
  return item;
}

function setStatus(selector, text) {
  $(selector).textContent = text;
}

/** Saves `change` to `link` and shows the list with it; an error goes to `error` (an
 * element), else to the list's status line. */
async function changeLink(link, change, error = null) {
  try {
    const updated = await client.links.update(link.code, change, link.domain ?? undefined);
    links = links.map((l) => (l === link ? updated : l));
    renderLinks();
    setStatus('#links-status', `Saved ${link.code}.`);
  } catch (e) {
    if (error) error.textContent = words(e);
    else setStatus('#links-status', words(e));
  }
}

function localInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function editForm(link, extra) {
  const id = (name) => `edit-${name}-${link.code}`;
  const field = (name, text, input) => {
    input.id = id(name);
    return el('div', {}, el('label', { htmlFor: id(name), textContent: text }), input);
  };
  const url = el('input', { type: 'url', required: true, value: link.url });
  const tags = el('input', { value: link.tags.join(', ') });
  const expires = el('input', { type: 'datetime-local', value: localInput(link.expires_at) });
  const max = el('input', { type: 'number', min: 1, value: link.max_clicks ?? '' });
  const error = el('p', { className: 'error', role: 'alert' });
  const form = el('form', { className: 'edit-form' },
    field('url', 'Long URL', url), field('tags', 'Tags', tags), field('expires', 'Expires', expires),
    field('max', 'Max clicks', max),
    el('div', { className: 'buttons' },
      el('button', { type: 'submit', textContent: 'Save' }),
      button('Cancel', `Cancel editing ${link.code}`, () => extra.replaceChildren())),
    error);
  form.setAttribute('aria-label', `Edit ${link.code}`);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const change = {};
    if (url.value.trim() !== link.url) change.url = url.value.trim();
    const newTags = tags.value.split(',').map((t) => t.trim()).filter(Boolean);
    if (newTags.join('\n') !== link.tags.join('\n')) change.tags = newTags;
    if (expires.value !== localInput(link.expires_at)) change.expires_at = expires.value ? new Date(expires.value).toISOString() : null;
    const newMax = max.value ? Number(max.value) : null;
    if (newMax !== (link.max_clicks ?? null)) change.max_clicks = newMax;
    if (!Object.keys(change).length) { extra.replaceChildren(); return; }
    await changeLink(link, change, error);
  });
  return form;
}

const SORTS = {
  newest: (a, b) => b.created_at.localeCompare(a.created_at),
  oldest: (a, b) => a.created_at.localeCompare(b.created_at),
  clicks: (a, b) => b.clicks - a.clicks,
  code: (a, b) => a.code.localeCompare(b.code),
};

function renderLinks() {
  const show = $('#state-filter').value;
  const shown = links.filter((l) => !show || (show === 'active') === (linkState(l) === 'live'))
    .sort(SORTS[$('#sort').value] || SORTS.newest);
  clicksCells.clear();
  const list = $('#links');
  if (!shown.length) {
    const filtered = links.length || $('#q').value.trim() || $('#tag').value.trim();
    list.replaceChildren(el('li', { className: 'empty', textContent: filtered
      ? 'No links match. Change the search or the filters.'
      : 'No links yet. Shorten your first one above.' }));
  } else {
    list.replaceChildren(...shown.map(linkRow));
  }
  const select = $('#stats-link');
  const chosen = select.value;
  select.replaceChildren(el('option', { value: '', textContent: 'All links' }),
    ...links.map((l) => el('option', { value: l.code, textContent: l.code })));
  select.value = links.some((l) => l.code === chosen) ? chosen : '';
}

let linksGeneration = 0;
let linksReload = null;

/** Reloads the list soon: one reload for a burst of events (an import, a replay). */
function reloadLinksSoon() {
  clearTimeout(linksReload);
  linksReload = setTimeout(() => { linksReload = null; loadLinks(true); }, 300);
}

const countReads = new Map();

/** Reads a link's click count again soon (once for a burst of its click events). */
function refreshCount(code) {
  if (countReads.has(code)) return;
  countReads.set(code, setTimeout(async () => {
    countReads.delete(code);
    const link = links.find((l) => l.code === code);
    if (!link) return;
    try {
      const fresh = await client.links.get(code, link.domain ?? undefined);
      link.clicks = fresh.clicks;
      const held = clicksCells.get(code);
      if (held) { held.count = fresh.clicks; held.cell.textContent = String(fresh.clicks); }
    } catch {
      // The next event or reload reads it again.
    }
  }, 300));
}

async function loadLinks(reset) {
  const mine = ++linksGeneration;
  const query = { limit: 50 };
  const q = $('#q').value.trim();
  const tag = $('#tag').value.trim();
  if (q) query.q = q;
  if (tag) query.tag = tag;
  if (!reset && nextCursor) query.cursor = nextCursor;
  $('#links').setAttribute('aria-busy', 'true');
  const LOADING = 'Loading your links…';
  if (!linksLoaded) setStatus('#links-status', LOADING);
  try {
    const page = await client.links.list(query);
    // A later load (a reset, another filter, a sign-out) wins over this one.
    if (mine !== linksGeneration) return;
    links = reset ? page.items : [...links, ...page.items];
    linksLoaded = true;
    nextCursor = page.next_cursor;
    $('#more').hidden = !nextCursor;
    // A loading note or an earlier failure goes; what an action just said stays.
    const status = $('#links-status').textContent;
    if (status === LOADING || status.startsWith('Your links could not')) setStatus('#links-status', '');
    renderLinks();
  } catch (e) {
    if (mine === linksGeneration) setStatus('#links-status', `Your links could not be loaded: ${words(e)}`);
  } finally {
    if (mine === linksGeneration) $('#links').removeAttribute('aria-busy');
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
  const created = $('#created');
  try {
    const link = await client.links.create(request);
    created.replaceChildren('Short link: ', el('a', { href: link.short_url, textContent: link.short_url }), ' ',
      copyButton(link.short_url, 'the new short link'));
    created.hidden = false;
    qrCode(link.code).then((qr) => { if (qr) created.append(qr); });
    event.target.reset();
    loadLinks(true);
  } catch (e) {
    $('#create-error').textContent = words(e);
  }
}

// The link's QR code (PNG, fetched with the key in a header) and a download link for it.
async function qrCode(code) {
  try {
    const url = URL.createObjectURL(await client.links.qr(code, { format: 'png', size: 160 }));
    return el('div', { className: 'qr' },
      el('img', { src: url, alt: `QR code of the short link ${code}`, width: 160, height: 160 }),
      el('a', { href: url, download: `${code}-qr.png`, textContent: 'Download QR code' }));
  } catch (e) {
    return el('p', { className: 'error', textContent: words(e) });
  }
}

// ---- statistics ----

let statsCode = null;

function openStats(code) {
  statsCode = code;
  const select = $('#stats-link');
  if (code && !Array.from(select.options).some((o) => o.value === code)) {
    select.append(el('option', { value: code, textContent: code }));
  }
  select.value = code || '';
  showStats();
}

function statsQuery() {
  const days = Number($('#stats-range').value);
  const to = new Date();
  const from = new Date(to.getTime() - days * 86_400_000);
  const interval = days <= 7 ? 'hour' : 'day';
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  return { from: from.toISOString(), to: to.toISOString(), interval, tz, bots: $('#stats-bots').checked ? 'include' : 'exclude' };
}

async function showStats() {
  clearTimeout(statsTimer);
  statsTimer = null;
  const code = statsCode;
  const query = statsQuery();
  $('#stats-title').textContent = code ? `Statistics of ${code}` : 'Statistics of all your links';
  setStatus('#stats-status', 'Loading…');
  try {
    const stats = code ? await client.links.stats(code, query) : await client.stats.account(query);
    if (code !== statsCode) return;
    setStatus('#stats-status', stats.total ? '' : 'No clicks in this range yet.');
    const tiles = [['Clicks', stats.total], ['People', stats.humans], ['Bots', stats.bots]];
    if (code) tiles.push(['Unique visitors', stats.unique_visitors]);
    $('#tiles').replaceChildren(...tiles.map(([label, value]) => el('div', { className: 'tile' },
      el('span', { className: 'value', textContent: value.toLocaleString() }),
      el('span', { className: 'label', textContent: label }))));
    drawChart(stats, query.interval);
    const lists = code
      ? [['Referrers', stats.referrers], ['Countries', stats.countries], ['Browsers', stats.browsers],
        ['Operating systems', stats.os], ['Devices', stats.devices]]
      : [['Most clicked links', stats.links.map((l) => ({ key: l.code, count: l.clicks }))]];
    $('#tops').replaceChildren(...lists.map(([title, list]) => barList(title, list)));
  } catch (e) {
    setStatus('#stats-status', `The statistics could not be loaded: ${words(e)}`);
  }
}

function barList(title, list) {
  const max = Math.max(1, ...list.map((k) => k.count));
  const items = list.length ? list.map((k) => {
    const fill = el('span', { className: 'fill' });
    fill.style.width = `${(k.count / max) * 100}%`;
    const key = k.key || 'unknown';
    return el('li', {}, fill, el('span', { className: 'key', textContent: key, title: key }),
      el('span', { className: 'count', textContent: k.count.toLocaleString() }));
  }) : [el('li', { className: 'hint', textContent: 'None in this range.' })];
  return el('section', { className: 'card' }, el('h2', { textContent: title }), el('ol', { className: 'bars' }, ...items));
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Bucket start times (seconds) from `from` to `to`: hours, or local midnights. */
function buckets(from, to, interval) {
  const out = [];
  if (interval === 'hour') {
    for (let t = Math.floor(from / 3600) * 3600; t < to; t += 3600) out.push(t);
  } else {
    const d = new Date(from * 1000);
    d.setHours(0, 0, 0, 0);
    while (d.getTime() / 1000 < to) { out.push(d.getTime() / 1000); d.setDate(d.getDate() + 1); }
  }
  return out;
}

// Zero-filled bars on a time axis, with the busiest bucket's count on the value axis.
function drawChart(stats, interval) {
  const chart = $('#chart');
  const width = Math.max(chart.clientWidth || 600, 280);
  const height = 220;
  const left = 40, right = 8, top = 12, bottom = 26;
  chart.setAttribute('viewBox', `0 0 ${width} ${height}`);
  chart.replaceChildren();
  const from = Date.parse(stats.from) / 1000;
  const to = Date.parse(stats.to) / 1000;
  const starts = buckets(from, to, interval);
  const counts = new Map(stats.series.map((p) => [p.ts, p.count]));
  // Points not on a computed start (another zone's midnights) go to the bucket they fall in.
  for (const p of stats.series) {
    if (!starts.includes(p.ts)) {
      const i = starts.findLastIndex((s) => s <= p.ts);
      if (i >= 0) counts.set(starts[i], (counts.get(starts[i]) || 0) + p.count);
    }
  }
  const values = starts.map((s) => counts.get(s) || 0);
  const max = Math.max(1, ...values);
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  // Whole-number ticks at their own heights: 0, the middle (when it is a whole number
  // apart from both ends) and the busiest bucket.
  const ticks = max >= 2 ? [0, Math.round(max / 2), max] : [0, max];
  for (const tick of ticks) {
    const y = top + plotH - (tick / max) * plotH;
    chart.append(svg('line', { class: 'grid-line', x1: left, x2: width - right, y1: y, y2: y }));
    chart.append(svg('text', { x: left - 6, y: y + 4, 'text-anchor': 'end' }, tick.toLocaleString()));
  }
  const step = plotW / Math.max(starts.length, 1);
  const label = interval === 'hour'
    ? new Intl.DateTimeFormat(undefined, { weekday: 'short', hour: '2-digit' })
    : new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
  const every = Math.max(1, Math.ceil(starts.length / Math.max(2, Math.floor(plotW / 90))));
  starts.forEach((start, i) => {
    const h = (values[i] / max) * plotH;
    if (values[i] > 0) {
      const bar = svg('rect', { class: 'bar', x: left + i * step + step * 0.1, y: top + plotH - h,
        width: Math.max(step * 0.8, 1), height: Math.max(h, 1) });
      bar.append(svg('title', {}, `${timeFormat.format(new Date(start * 1000))}: ${values[i]}`));
      chart.append(bar);
    }
    if (i % every === 0) {
      chart.append(svg('text', { x: left + i * step, y: height - 8 }, label.format(new Date(start * 1000))));
    }
  });
  const total = values.reduce((a, b) => a + b, 0);
  $('#chart-caption').textContent = `${plural(total, 'click')} per ${interval} from `
    + `${timeFormat.format(new Date(from * 1000))} to ${timeFormat.format(new Date(to * 1000))}.`;
}

// ---- live events ----

function handle(event) {
  const data = event.data || {};
  let text = event.type;
  if (event.type === 'link.clicked') {
    refreshCount(data.code);
    text = `${data.code}: ${plural(data.count, 'click')}`;
    if (!$('#view-stats').hidden && (statsCode === null || statsCode === data.code) && !statsTimer) {
      statsTimer = setTimeout(showStats, 1000);
    }
  } else if (event.type.startsWith('link.')) {
    text = `${event.type.slice(5)} ${data.code}`;
    reloadLinksSoon();
  } else if (event.type === 'upload.thumbnails_ready') {
    showThumbnail(data);
    text = `thumbnails ready for ${data.filename}`;
  } else if (event.type === 'upload.completed') {
    text = `uploaded ${data.filename}`;
  } else if (event.type === 'upload.deleted') {
    text = `deleted ${data.filename}`;
    document.querySelector(`#uploads li[data-upload="${CSS.escape(data.id)}"]`)?.remove();
  } else if (event.type === 'webhook.disabled') {
    text = `webhook disabled ${data.url || data.id || ''}`.trim();
    if (!$('#view-settings').hidden) loadWebhooks();
  }
  // Oldest first in a fixed-height box scrolled to the end: a new line moves nothing else.
  const list = $('#events');
  $('#events-empty').hidden = true;
  list.append(el('li', {}, el('time', { dateTime: event.at, textContent: new Date(event.at).toLocaleTimeString() }), ` ${text}`));
  while (list.children.length > 200) list.firstChild.remove();
  list.scrollTop = list.scrollHeight;
}

function setLive(on, how) {
  const live = $('#live');
  live.hidden = false;
  live.className = on ? 'live' : 'live off';
  live.textContent = on ? `live (${how})` : 'connecting…';
}

// Events from @shortlink/client's EventStream: a WebSocket, else Server-Sent Events, else
// long polling, resuming after the last event id whichever carries them.
function follow() {
  stream?.close();
  stream = new EventStream({ apiKey: apiKey || undefined });
  stream.on('event', handle);
  stream.on('status', (status, transport) => {
    if (status !== 'closed') setLive(status === 'open', TRANSPORT_NAMES[transport]);
  });
  stream.on('error', (error) => {
    if (error.fatal) signOut(signedIn ? 'Your session has ended. Sign in again.' : MESSAGES.unauthorized);
  });
}

// ---- uploads ----

// Files up to this size go in one streamed POST; larger ones by a presigned PUT when the
// storage's URL is this origin (the local store), else streamed too (the CSP allows
// requests to this origin only).
const PRESIGN_FROM = 16 * 1024 * 1024;

function put(method, url, headers, body, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener('progress', (e) => { if (e.lengthComputable) progress.value = e.loaded / e.total; });
    xhr.addEventListener('load', () => (xhr.status >= 200 && xhr.status < 300 ? resolve()
      : reject(new ApiError(xhr.status, `http_${xhr.status}`, `The storage answered ${xhr.status}.`))));
    xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'The upload was interrupted.')));
    xhr.send(body);
  });
}

async function presigned(file, progress) {
  const request = { filename: file.name, size: file.size };
  if (file.type) request.content_type = file.type;
  const grant = await client.request('post', '/api/v1/uploads/presign', { body: request });
  if (new URL(grant.upload_url, location.href).origin !== location.origin) return null;
  await put(grant.method, grant.upload_url, grant.headers, file, progress);
  return client.request('post', '/api/v1/uploads/{id}/complete', { path: { id: grant.id } });
}

async function uploadFile(file) {
  const progress = el('progress', { max: 1, value: 0 });
  progress.setAttribute('aria-label', `Uploading ${file.name}`);
  const item = el('li', {}, el('span', { className: 'thumb', textContent: '…' }),
    el('span', { className: 'name' }, file.name, el('br'), progress));
  item.dataset.pending = '1';
  $('#uploads').prepend(item);
  $('#uploads .empty')?.remove();
  try {
    let upload = file.size >= PRESIGN_FROM ? await presigned(file, progress) : null;
    if (!upload) {
      upload = await client.uploads.upload(file, { onProgress: (p) => { progress.value = p.total ? p.loaded / p.total : 1; } });
    }
    // A list loaded meanwhile may already show it.
    document.querySelector(`#uploads li[data-upload="${CSS.escape(upload.id)}"]`)?.remove();
    if (item.isConnected) item.replaceWith(uploadRow(upload));
    else $('#uploads').prepend(uploadRow(upload));
    if (upload.thumbnails.state === 'pending') waitForThumbnail(upload.id);
    loadUsage();
  } catch (e) {
    delete item.dataset.pending;
    item.replaceChildren(el('span', { className: 'thumb', textContent: '!' }),
      el('span', { className: 'name error', textContent: `${file.name}: ${words(e)}` }));
  }
}

function uploadRow(upload) {
  const thumb = upload.thumbnails && upload.thumbnails.items.find((t) => t.size === 150);
  const href = upload.short_url || upload.url;
  const details = [bytes(upload.size), dateFormat.format(new Date(upload.created_at)), plural(upload.downloads, 'download')];
  if (upload.expires_at) details.push(`deleted ${timeFormat.format(new Date(upload.expires_at))}`);
  const item = el('li', {},
    thumb ? el('img', { className: 'thumb', src: thumb.url, alt: `Thumbnail of ${upload.filename}`, width: 64, height: 64 })
      : el('span', { className: 'thumb', textContent: (upload.filename.split('.').pop() || 'file').slice(0, 4) }),
    el('span', { className: 'name' }, el('a', { href, textContent: upload.filename }), el('br'),
      el('span', { className: 'hint', textContent: upload.state === 'complete' ? details.join(' · ') : upload.state })),
    el('span', { className: 'actions' },
      copyButton(href, `the link to ${upload.filename}`),
      confirmButton(`Delete ${upload.filename}`, async () => {
        try {
          await client.uploads.delete(upload.id);
          item.remove();
          setStatus('#uploads-status', `Deleted ${upload.filename}.`);
          if (!$('#uploads').children.length) renderUploadsEmpty();
          loadUsage();
        } catch (e) {
          setStatus('#uploads-status', words(e));
        }
      })));
  item.dataset.upload = upload.id;
  item.dataset.state = upload.state;
  return item;
}

function renderUploadsEmpty() {
  $('#uploads').replaceChildren(el('li', { className: 'empty', textContent: 'No files yet. Drop one above.' }));
}

function loadUsage(page) {
  const show = (p) => {
    $('#usage').textContent = p.quota_bytes
      ? `${bytes(p.stored_bytes)} of ${bytes(p.quota_bytes)} used.` : `${bytes(p.stored_bytes)} stored.`;
  };
  if (page) show(page);
  else client.uploads.list({ limit: 1 }).then(show, () => {});
}

async function loadUploads(reset) {
  const query = { limit: 50 };
  if (!reset && uploadsCursor) query.cursor = uploadsCursor;
  if (reset) setStatus('#uploads-status', 'Loading your files…');
  try {
    const page = await client.uploads.list(query);
    const rows = page.items.map(uploadRow);
    // Uploads still in progress stay on top.
    const pending = [...document.querySelectorAll('#uploads li[data-pending]')];
    if (reset) $('#uploads').replaceChildren(...pending, ...rows);
    else $('#uploads').append(...rows);
    if (reset && !rows.length && !pending.length) renderUploadsEmpty();
    uploadsCursor = page.next_cursor;
    $('#more-uploads').hidden = !uploadsCursor;
    setStatus('#uploads-status', '');
    loadUsage(page);
  } catch (e) {
    setStatus('#uploads-status', `Your files could not be loaded: ${words(e)}`);
  }
}

function showThumbnail(upload) {
  const item = document.querySelector(`#uploads li[data-upload="${CSS.escape(upload.id)}"]`);
  const thumb = upload.thumbnails && upload.thumbnails.items.find((t) => t.size === 150);
  if (!item || !thumb || item.querySelector('img')) return;
  item.querySelector('.thumb').replaceWith(
    el('img', { className: 'thumb', src: thumb.url, alt: `Thumbnail of ${upload.filename}`, width: 64, height: 64 }));
}

async function waitForThumbnail(id) {
  for (let i = 0; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    try {
      const upload = await client.uploads.get(id);
      if (upload.thumbnails.state !== 'pending') { showThumbnail(upload); return; }
    } catch { return; }
  }
}

// ---- webhooks ----

let openDeliveries = null;
const OUTCOMES = { delivered: 'delivered', failed: 'failed', given_up: 'given up' };

async function loadWebhooks() {
  try {
    const page = await client.webhooks.list();
    $('#webhooks').replaceChildren(...(page.items.length ? page.items.map(webhookItem)
      : [el('li', { className: 'empty', textContent: 'No webhooks yet. Add one to get events at your own URL.' })]));
  } catch (e) {
    $('#webhook-error').textContent = words(e);
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
    const hook = await client.webhooks.create(request);
    $('#webhook-secret').append('Signing secret: ', el('code', { textContent: hook.secret }), ' ',
      copyButton(hook.secret, 'the secret'),
      el('span', { className: 'hint', textContent: ' Copy this secret now: it is not shown again.' }));
    event.target.reset();
    await loadWebhooks();
  } catch (e) {
    $('#webhook-error').textContent = words(e);
  }
}

function webhookItem(hook) {
  const path = { path: { id: hook.id } };
  const result = $('#webhook-result');
  const act = (text, label, action) => button(text, `${label} ${hook.url}`, async () => {
    $('#webhook-error').textContent = '';
    try { await action(); } catch (e) { $('#webhook-error').textContent = words(e); }
  });
  const state = hook.enabled ? 'enabled'
    : hook.disabled_reason === 'failing' ? 'disabled: deliveries kept failing'
      : hook.disabled_reason ? `disabled: ${hook.disabled_reason}` : 'disabled';
  const remove = act('Delete', 'Delete webhook', async () => {
    await client.webhooks.delete(hook.id);
    result.textContent = `Deleted the webhook to ${hook.url}.`;
    if (openDeliveries === hook.id) { openDeliveries = null; $('#deliveries').hidden = true; }
    await loadWebhooks();
  });
  remove.className = 'danger';
  const item = el('li', {},
    el('span', { className: 'url', textContent: hook.url }),
    el('span', { textContent: hook.events.length ? hook.events.join(', ') : 'all events' }),
    el('span', { className: hook.enabled ? 'state' : 'state off', textContent: state }),
    el('span', { className: 'actions' },
      act('Send test', 'Send test to', async () => {
        result.textContent = `Sending a test to ${hook.url}…`;
        try {
          const d = await client.webhooks.test(hook.id);
          result.textContent = d.outcome === 'delivered' ? `Test delivered: HTTP ${d.status} in ${d.latency_ms} ms`
            : `Test failed: ${d.error || (d.status ? `HTTP ${d.status}` : 'no answer')}`;
        } catch (e) {
          result.textContent = `Test failed: ${words(e)}`;
        }
        if (openDeliveries === hook.id) await showDeliveries(hook);
      }),
      act('Deliveries', 'Deliveries of', () => showDeliveries(hook)),
      act(hook.enabled ? 'Disable' : 'Enable', hook.enabled ? 'Disable' : 'Enable', async () => {
        await client.request('patch', '/api/v1/webhooks/{id}', { ...path, body: { enabled: !hook.enabled } });
        result.textContent = `${hook.enabled ? 'Disabled' : 'Enabled'} the webhook to ${hook.url}.`;
        await loadWebhooks();
      }),
      remove));
  item.dataset.webhook = hook.id;
  return item;
}

// The endpoint's recent deliveries, newest first.
async function showDeliveries(hook) {
  const page = await client.request('get', '/api/v1/webhooks/{id}/deliveries', { path: { id: hook.id }, query: { limit: 20 } });
  openDeliveries = hook.id;
  const rows = page.items.map((d) => el('tr', {},
    el('td', { textContent: new Date(d.at).toLocaleString() }),
    el('td', { textContent: d.manual ? `${d.type} (manual)` : d.type }),
    el('td', { textContent: String(d.attempt) }),
    el('td', { textContent: d.status == null ? '—' : String(d.status) }),
    el('td', { textContent: [OUTCOMES[d.outcome] || d.outcome, d.error,
      d.next_try && `retry at ${new Date(d.next_try).toLocaleTimeString()}`].filter(Boolean).join(' · ') }),
    el('td', { textContent: d.latency_ms == null ? '—' : `${d.latency_ms} ms` })));
  if (!rows.length) rows.push(el('tr', {}, el('td', { colSpan: 6, textContent: 'No deliveries yet.' })));
  $('#deliveries-title').textContent = `Recent deliveries to ${hook.url}`;
  $('#deliveries tbody').replaceChildren(...rows);
  $('#deliveries').hidden = false;
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
    const list = await client.domains.list();
    $('#domains').replaceChildren(
      domainItem(`${list.default_domain.name} (default)`, list.default_domain.certificate),
      ...list.items.map((d) => domainItem(d.name, d.certificate)));
  } catch (e) {
    $('#domains-error').textContent = words(e);
  }
}

// ---- wiring ----

$('#signin-form').addEventListener('submit', signIn);
$('#login-form').addEventListener('submit', logIn);
$('#signout').addEventListener('click', () => signOut());
$('#create-form').addEventListener('submit', createLink);
$('#filter-form').addEventListener('submit', (e) => { e.preventDefault(); loadLinks(true); });
$('#state-filter').addEventListener('change', renderLinks);
$('#sort').addEventListener('change', renderLinks);
$('#more').addEventListener('click', () => loadLinks(false));
$('#more-uploads').addEventListener('click', () => loadUploads(false));
$('#stats-link').addEventListener('change', (e) => go(e.target.value ? `#stats/${encodeURIComponent(e.target.value)}` : '#stats'));
$('#stats-range').addEventListener('change', showStats);
$('#stats-bots').addEventListener('change', showStats);
$('#stats-form').addEventListener('submit', (e) => e.preventDefault());
$('#webhook-form').addEventListener('submit', addWebhook);
window.addEventListener('hashchange', route);
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
