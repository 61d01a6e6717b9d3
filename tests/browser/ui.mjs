// Browser test of the web page, run by tests/ui.rs against the real binary:
//   node tests/browser/ui.mjs BASE_URL ADMIN_KEY IMAGE_PATH LARGE_PATH SCREENSHOT_DIR USER PASSWORD
// with WEBHOOK_URL set to a loopback receiver that answers 204.
// The journey (sign in, shorten with options, copy, a click arriving live, statistics and
// their range, an upload found after a reload, edit, disable, delete) runs at 1280x900 and
// at 390x844; every view is checked for sideways scrolling and with axe-core (no serious
// or critical violations, light and dark), and saved as a screenshot.
// Exits 0 when every step passed; otherwise prints the failed step and exits 1.
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const [base, adminKey, image, large, shots, userName, userPassword] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run'],
});
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
let step = 'start';
let current = null;
const requests = [];
const shotsTaken = [];

async function newPage(viewport) {
  const context = await browser.newContext({ viewport, permissions: ['clipboard-read', 'clipboard-write'] });
  const page = await context.newPage();
  // Sums layout shifts not caused by the user (the Layout Instability API).
  await page.addInitScript(() => {
    window.__shift = 0;
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.__shift += entry.value;
    }).observe({ type: 'layout-shift', buffered: true });
  });
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => { if (m.type() === 'error') console.log(`console error (${viewport.width} px): ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`page error (${viewport.width} px): ${e.message}`));
  current = page;
  return page;
}

/** No sideways scrolling, no serious or critical axe violations, and a screenshot. */
async function checkView(page, name) {
  await page.waitForTimeout(50);
  const width = page.viewportSize().width;
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) {
    const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && e.getClientRects().length)
      .slice(0, 5).map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`));
    throw new Error(`${name} scrolls sideways at ${width} px by ${overflow} px: ${wide.join(', ')}`);
  }
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
  });
  if (violations.length) throw new Error(`${name} at ${width} px: axe found ${violations.join('; ')}`);
  const file = `${name}-${width}.png`;
  await page.screenshot({ path: `${shots}/${file}`, fullPage: true });
  shotsTaken.push(file);
}

async function signInWithKey(page) {
  await page.goto(`${base}/ui`);
  await page.getByLabel('API key').fill(adminKey);
  await page.getByRole('button', { name: 'Use key' }).click();
  await page.getByRole('heading', { name: 'Shorten a link' }).waitFor({ timeout: 5000 });
}

async function view(page, name) {
  await page.getByRole('navigation', { name: 'Views' }).getByRole('link', { name, exact: true }).click();
}

const clicksOf = (page, code) => page.locator(`li[data-code="${code}"] .clicks`);

/** Waits until the proxy answers `code` as `want` says (route changes reach it in moments). */
async function proxyAnswers(code, want, what) {
  const deadline = Date.now() + 10000;
  let last = null;
  while (Date.now() < deadline) {
    const r = await fetch(`${base}/${code}`, { redirect: 'manual' });
    last = `${r.status} ${r.headers.get('location') || ''}`;
    if (want(r)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what}: the proxy still answers ${last}`);
}

/** The journey every person takes, at one size. */
async function journey(page, size) {
  const code = `ui${size}`;
  step = `${size}: shortening with options lists the link with its tags and date`;
  await page.getByLabel('Long URL').fill(`https://example.com/from-the-browser/${size}`);
  if (!(await page.getByLabel('Alias').isVisible())) await page.locator('summary').click();
  await page.getByLabel('Alias').fill(code);
  await page.getByLabel('Tags (comma separated)').fill('launch, browser');
  await page.getByLabel('Redirect').selectOption('302');
  await page.getByRole('button', { name: 'Shorten', exact: true }).click();
  await page.getByAltText(`QR code of the short link ${code}`).waitFor({ timeout: 5000 });
  const row = page.locator(`li[data-code="${code}"]`);
  await row.locator('.chip', { hasText: 'launch' }).waitFor({ timeout: 5000 });
  await row.locator('time').waitFor();
  if (await row.locator('.badge').count()) throw new Error('a live link carries a state badge');
  const shortUrl = await row.locator('a.short').getAttribute('href');

  step = `${size}: copying puts the short URL on the clipboard`;
  await row.getByRole('button', { name: `Copy ${code}`, exact: true }).click();
  await row.getByRole('button', { name: `Copied ${code}`, exact: true }).waitFor({ timeout: 2000 });
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  if (copied !== shortUrl) throw new Error(`the clipboard holds "${copied}", not ${shortUrl}`);

  step = `${size}: a QR code opens in the row`;
  await row.getByRole('button', { name: `QR code of ${code}` }).click();
  await row.getByAltText(`QR code of the short link ${code}`).waitFor({ timeout: 5000 });
  await checkView(page, 'links');

  step = `${size}: following the short URL raises the click counter live, with no layout shift`;
  await page.getByText(/^live \(/).waitFor({ timeout: 10000 });
  const before = Number(await clicksOf(page, code).textContent());
  await page.waitForTimeout(300);
  const shiftBefore = await page.evaluate(() => window.__shift);
  const followed = await fetch(`${base}/${code}`, { redirect: 'manual' });
  if (followed.status !== 302) throw new Error(`the short URL answered ${followed.status}`);
  await page.waitForFunction(([c, n]) => Number(document.querySelector(`li[data-code="${c}"] .clicks`).textContent) > n,
    [code, before], { timeout: 15000 });
  await page.waitForTimeout(300);
  const shifted = (await page.evaluate(() => window.__shift)) - shiftBefore;
  if (shifted > 0) throw new Error(`live events shifted the layout (${shifted})`);

  step = `${size}: the statistics view shows the click on a time axis`;
  await row.getByRole('button', { name: `Statistics of ${code}` }).click();
  await page.getByRole('heading', { name: `Statistics of ${code}` }).waitFor({ timeout: 5000 });
  if (!page.url().endsWith(`#stats/${code}`)) throw new Error(`the statistics address is ${page.url()}`);
  await page.locator('.tile', { hasText: 'Clicks' }).locator('.value', { hasText: /^1$/ }).waitFor({ timeout: 10000 });
  await page.locator('#chart rect.bar').first().waitFor({ timeout: 5000 });
  const axis = await page.locator('#chart text').count();
  if (axis < 4) throw new Error(`the chart has ${axis} axis labels`);
  await page.getByText(/1 click per hour from/).waitFor({ timeout: 5000 });
  await page.locator('.tile', { hasText: 'Unique visitors' }).waitFor();
  await checkView(page, 'stats');

  step = `${size}: changing the range to 30 days buckets by day, zero-filled`;
  await page.getByLabel('Range').selectOption('30');
  await page.getByText(/1 click per day from/).waitFor({ timeout: 5000 });
  const buckets = await page.locator('#chart rect.bar').count();
  if (buckets !== 1) throw new Error(`${buckets} bars for one click`);

  step = `${size}: the account overview lists the link among the most clicked`;
  await page.getByLabel('Link', { exact: true }).selectOption('');
  await page.getByRole('heading', { name: 'Statistics of all your links' }).waitFor({ timeout: 5000 });
  await page.getByRole('heading', { name: 'Most clicked links' }).waitFor({ timeout: 5000 });
  await page.locator('.bars li', { hasText: code }).waitFor({ timeout: 5000 });
  await checkView(page, 'overview');

  step = `${size}: an uploaded image gets its thumbnail and is there after a reload`;
  await view(page, 'Uploads');
  await page.getByRole('heading', { name: 'Your files' }).waitFor();
  await page.locator('#file').setInputFiles(image);
  const upload = page.locator('#uploads li[data-state="complete"]', { hasText: 'photo.png' }).first();
  await upload.locator('img').waitFor({ timeout: 30000 });
  const uploadId = await upload.getAttribute('data-upload');
  await page.reload();
  const again = page.locator(`#uploads li[data-upload="${uploadId}"]`);
  await again.locator('img').waitFor({ timeout: 10000 });
  await checkView(page, 'uploads');

  step = `${size}: deleting the upload removes it, also after a reload`;
  await again.getByRole('button', { name: 'Delete photo.png' }).click();
  await again.getByRole('button', { name: 'Confirm: Delete photo.png' }).click();
  await again.waitFor({ state: 'detached', timeout: 5000 });
  await page.reload();
  await page.getByRole('heading', { name: 'Your files' }).waitFor();
  await page.locator('#uploads li').first().waitFor({ timeout: 5000 });
  if (await page.locator(`#uploads li[data-upload="${uploadId}"]`).count()) throw new Error('the deleted upload came back');

  step = `${size}: editing the link changes its target and tags`;
  await view(page, 'Links');
  await row.getByRole('button', { name: `Edit ${code}` }).click();
  const edit = row.getByRole('form', { name: `Edit ${code}` });
  await edit.getByLabel('Long URL').fill(`https://example.com/edited/${size}`);
  await edit.getByLabel('Tags').fill('edited');
  await edit.getByRole('button', { name: 'Save' }).click();
  await row.locator('.target', { hasText: `https://example.com/edited/${size}` }).waitFor({ timeout: 5000 });
  await row.locator('.chip', { hasText: 'edited' }).waitFor();
  await proxyAnswers(code, (r) => r.headers.get('location') === `https://example.com/edited/${size}`, 'the edited target');

  step = `${size}: disabling the link marks it and the short URL stops redirecting`;
  await row.getByRole('button', { name: `Disable ${code}` }).click();
  await row.locator('.badge', { hasText: 'disabled' }).waitFor({ timeout: 5000 });
  await page.getByLabel('Show').selectOption('inactive');
  await row.waitFor();
  await page.getByLabel('Show').selectOption('');
  await proxyAnswers(code, (r) => r.status === 410, 'a disabled link');
  await row.getByRole('button', { name: `Enable ${code}` }).click();
  await row.getByRole('button', { name: `Disable ${code}` }).waitFor({ timeout: 5000 });

  step = `${size}: deleting the link asks once more, removes it, and it answers 404`;
  await row.getByRole('button', { name: `Delete ${code}` }).click();
  await row.getByRole('button', { name: `Confirm: Delete ${code}` }).click();
  await row.waitFor({ state: 'detached', timeout: 5000 });
  await page.getByText(`Deleted ${code}.`).waitFor();
  await proxyAnswers(code, (r) => r.status === 404, 'a deleted link');

  step = `${size}: the activity view lists what happened`;
  await view(page, 'Activity');
  await page.locator('#events li', { hasText: `${code}: 1 click` }).waitFor({ timeout: 5000 });
  await checkView(page, 'activity');

  step = `${size}: the settings view shows webhooks and domains`;
  await view(page, 'Settings');
  await page.locator('#domains li', { hasText: '(default)' }).waitFor({ timeout: 5000 });
  await checkView(page, 'settings');
}

try {
  step = 'the page loads under /ui with its icon';
  const page = await newPage(DESKTOP);
  await page.goto(`${base}/ui`);
  await page.getByLabel('API key').waitFor();
  const icon = await page.evaluate(async () => (await fetch(document.querySelector('link[rel=icon]').href)).status);
  if (icon !== 200) throw new Error(`the icon answered ${icon}`);
  await checkView(page, 'signin');

  step = 'a wrong API key is refused in words';
  await page.getByLabel('API key').fill('sl_this_key_does_not_exist_000000');
  await page.getByRole('button', { name: 'Use key' }).click();
  await page.getByText('That API key was not accepted').waitFor({ timeout: 5000 });

  step = 'signing in with the admin key shows the links view, with empty states';
  await page.getByLabel('API key').fill(adminKey);
  await page.getByRole('button', { name: 'Use key' }).click();
  await page.getByRole('heading', { name: 'Shorten a link' }).waitFor({ timeout: 5000 });
  const stored = await page.evaluate(() => sessionStorage.getItem('shortlink.api_key'));
  if (stored !== adminKey) throw new Error('the key is not in session storage');
  await page.getByText('No links yet. Shorten your first one above.').waitFor({ timeout: 5000 });
  if (await page.locator('#created').isVisible()) throw new Error('an empty result box takes room');
  await checkView(page, 'empty');

  step = "an invalid URL shows the API's error in words";
  await page.getByLabel('Long URL').fill('ftp://files.example.com/x');
  await page.getByRole('button', { name: 'Shorten', exact: true }).click();
  await page.getByText('Only web addresses (http or https) can be shortened.').waitFor({ timeout: 5000 });

  step = "the alias field's pattern is a valid expression that checks as you type";
  await page.locator('summary').click();
  await page.getByLabel('Alias').fill('no spaces');
  if (!(await page.getByLabel('Alias').evaluate((input) => input.validity.patternMismatch)))
    throw new Error('an alias with a space passes the pattern');
  await page.getByLabel('Alias').fill('');

  await journey(page, 'desktop');

  step = 'dark mode follows the system';
  await page.emulateMedia({ colorScheme: 'dark' });
  await view(page, 'Links');
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  if (background !== 'rgb(21, 24, 29)') throw new Error(`the dark background is ${background}`);
  await checkView(page, 'dark');
  await page.emulateMedia({ colorScheme: 'light' });

  step = 'a large file goes by a presigned upload';
  await view(page, 'Uploads');
  const presigns = [];
  page.on('request', (r) => { if (r.url().endsWith('/api/v1/uploads/presign')) presigns.push(r.url()); });
  await page.locator('#file').setInputFiles(large);
  await page.locator('#uploads li[data-state="complete"] a', { hasText: 'large.bin' }).waitFor({ timeout: 30000 });
  if (presigns.length !== 1) throw new Error(`expected one presign request, saw ${presigns.length}`);

  step = 'the phone journey at 390 px';
  const phone = await newPage(PHONE);
  await phone.goto(`${base}/ui`);
  await checkView(phone, 'signin');
  await signInWithKey(phone);
  await journey(phone, 'phone');
  current = page;

  step = 'the pages talked only to their own origin, and no key went into a URL';
  const origin = new URL(base).origin;
  const foreign = requests.filter((u) => !u.startsWith(origin) && !u.startsWith('data:') && !u.startsWith('blob:'));
  if (foreign.length) throw new Error(`requests left the origin: ${foreign.join(', ')}`);
  if (requests.some((u) => u.includes(adminKey))) throw new Error('the key appeared in a URL');

  step = 'a link to follow live on a page whose WebSockets and event stream fail';
  await view(page, 'Links');
  await page.getByLabel('Long URL').fill('https://example.com/polled');
  if (!(await page.getByLabel('Alias').isVisible())) await page.locator('summary').click();
  await page.getByLabel('Alias').fill('polled');
  await page.getByRole('button', { name: 'Shorten', exact: true }).click();
  await page.locator('li[data-code="polled"]').waitFor({ timeout: 5000 });
  const second = await newPage(DESKTOP);
  current = second;
  await second.routeWebSocket(/\/api\/v1\/ws/, (ws) => ws.close({ code: 1011, reason: 'blocked by the test' }));
  await second.route('**/api/v1/events', (route) => route.abort());
  await signInWithKey(second);
  await second.getByText(/live \(polling\)/).waitFor({ timeout: 15000 });
  const count = Number(await clicksOf(second, 'polled').textContent());
  await fetch(`${base}/polled`, { redirect: 'manual' });
  await second.waitForFunction(
    (n) => Number(document.querySelector('li[data-code="polled"] .clicks').textContent) > n,
    count, { timeout: 15000 });
  current = page;

  step = 'a password-protected link is created, listed, and opens after its password';
  await page.getByLabel('Long URL').fill('https://example.com/behind-a-password');
  if (!(await page.getByLabel('Alias').isVisible())) await page.locator('summary').click();
  await page.getByLabel('Alias').fill('lockedui');
  await page.locator('#password').fill('open sesame');
  await page.getByRole('button', { name: 'Shorten', exact: true }).click();
  await page.locator('li[data-code="lockedui"]', { hasText: 'password' }).waitFor({ timeout: 5000 });
  const visitor = await newPage(DESKTOP);
  current = visitor;
  await visitor.goto(`${base}/no-such-link`);
  await visitor.getByRole('heading').first().waitFor();
  await checkView(visitor, 'visitor-404');
  await visitor.goto(`${base}/lockedui`);
  await checkView(visitor, 'visitor-password');
  await visitor.getByLabel('Password').fill('not it');
  await visitor.getByRole('button', { name: 'Continue' }).click();
  await visitor.getByText('That password is not right.').waitFor({ timeout: 5000 });
  await visitor.getByLabel('Password').fill('open sesame');
  // The machine is offline: the target is answered here, so the browser can be seen to
  // follow the redirect (a page's CSP could forbid it: form-action covers redirects).
  await visitor.route('https://example.com/**', (route) => route.fulfill({
    status: 200, contentType: 'text/html', body: '<p>arrived at the target</p>',
  }));
  const [answer] = await Promise.all([
    visitor.waitForResponse((r) => r.url().endsWith('/lockedui') && r.request().method() === 'POST', { timeout: 5000 }),
    visitor.getByRole('button', { name: 'Continue' }).click(),
  ]);
  const target = (await answer.allHeaders()).location;
  if (answer.status() !== 303 || target !== 'https://example.com/behind-a-password') {
    throw new Error(`the right password answered ${answer.status()} to ${target}`);
  }
  await visitor.getByText('arrived at the target').waitFor({ timeout: 5000 });
  current = page;

  step = 'the links list sorts by clicks and by short link, and filters by search';
  const codes = () => page.locator('#links li[data-code]').evaluateAll((items) => items.map((i) => i.dataset.code));
  await page.getByLabel('Sort by').selectOption('clicks');
  const counts = await page.locator('#links li[data-code] .clicks').evaluateAll((cells) =>
    cells.map((c) => Number(c.textContent)));
  if (counts.some((n, i) => i > 0 && n > counts[i - 1]) || !(counts[0] > 0) || counts.at(-1) !== 0) {
    throw new Error(`most clicked first: ${counts}`);
  }
  await page.getByLabel('Sort by').selectOption('code');
  const byCode = await codes();
  if (byCode.join() !== [...byCode].sort((a, b) => a.localeCompare(b)).join() || byCode.length < 3)
    throw new Error(`by short link: ${byCode}`);
  await page.getByLabel('Search').fill('behind-a-password');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForFunction(() => [...document.querySelectorAll('#links li[data-code]')].map((i) => i.dataset.code).join() === 'lockedui',
    null, { timeout: 5000 });
  await page.getByLabel('Search').fill('');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.getByLabel('Sort by').selectOption('newest');

  step = 'a webhook for link.created only is added and its secret is shown once';
  await view(page, 'Settings');
  const hookUrl = process.env.WEBHOOK_URL;
  if (!hookUrl) throw new Error('WEBHOOK_URL is not set: tests/ui.rs must start the webhook receiver and pass its URL');
  const hooks = page.getByRole('region', { name: 'Webhooks', exact: true });
  await hooks.getByLabel('Webhook URL').fill(hookUrl);
  await hooks.getByLabel('link.created', { exact: true }).check();
  await hooks.getByRole('button', { name: 'Add webhook' }).click();
  await hooks.getByText('Copy this secret now: it is not shown again').waitFor({ timeout: 5000 });
  const secret = await hooks.locator('#webhook-secret code').textContent();
  if (!secret.startsWith('whsec_')) throw new Error(`the secret shown is "${secret}"`);
  const hook = hooks.locator('#webhooks li', { hasText: hookUrl });
  await hook.getByText('link.created', { exact: true }).waitFor({ timeout: 5000 });
  await hook.getByText('enabled', { exact: true }).waitFor({ timeout: 5000 });

  step = 'sending a test to the webhook reports it delivered with HTTP 204';
  await hook.getByRole('button', { name: `Send test to ${hookUrl}`, exact: true }).click();
  await hooks.getByText(/^Test delivered: HTTP 204 in \d+ ms$/).waitFor({ timeout: 10000 });

  step = "the webhook's deliveries list the delivered test";
  await hook.getByRole('button', { name: `Deliveries of ${hookUrl}`, exact: true }).click();
  await hooks.locator('#deliveries').getByRole('cell', { name: 'delivered', exact: true }).first()
    .waitFor({ timeout: 5000 });
  await checkView(page, 'webhooks');

  step = 'a disabled webhook is shown disabled';
  await hook.getByRole('button', { name: `Disable ${hookUrl}`, exact: true }).click();
  await hook.getByText('disabled', { exact: true }).waitFor({ timeout: 5000 });
  await hook.getByRole('button', { name: `Enable ${hookUrl}`, exact: true }).waitFor({ timeout: 5000 });

  step = "the domains card lists the default domain with its certificate's state";
  await page.locator('#domains li', { hasText: '(default)' }).getByText('no certificate', { exact: true })
    .waitFor({ timeout: 5000 });

  step = 'a person signs in with a user name and password and gets an HttpOnly cookie';
  const person = await newPage(DESKTOP);
  current = person;
  await person.goto(`${base}/ui`);
  await person.getByLabel('User name').fill(userName);
  await person.locator('#login-password').fill('not the password');
  await person.getByRole('button', { name: 'Sign in', exact: true }).click();
  await person.getByText('That user name and password do not match.').waitFor({ timeout: 5000 });
  await person.locator('#login-password').fill(userPassword);
  await person.getByRole('button', { name: 'Sign in', exact: true }).click();
  await person.getByRole('heading', { name: 'Shorten a link' }).waitFor({ timeout: 5000 });
  const session = (await person.context().cookies()).find((c) => c.name === 'sl_session');
  if (!session || !session.httpOnly || session.sameSite !== 'Strict') {
    throw new Error(`the session cookie is not HttpOnly and SameSite=Strict: ${JSON.stringify(session)}`);
  }
  if (await person.evaluate(() => document.cookie.includes('sl_session'))) {
    throw new Error('the page script can read the session cookie');
  }
  if (await person.evaluate(() => sessionStorage.getItem('shortlink.api_key'))) {
    throw new Error('a key was stored for a password sign-in');
  }

  step = 'signed in with a password, a person shortens a link and sees its click live';
  await person.getByText(/^live \(WebSocket\)/).waitFor({ timeout: 10000 });
  await person.getByLabel('Long URL').fill('https://example.com/by-a-person');
  await person.getByRole('button', { name: 'Shorten', exact: true }).click();
  await person.locator('#created a').first().waitFor({ timeout: 5000 });
  const personCode = (await person.locator('#created a').first().textContent()).split('/').pop();
  await fetch(`${base}/${personCode}`, { redirect: 'manual' });
  await person.waitForFunction((c) => Number(document.querySelector(`li[data-code="${c}"] .clicks`)?.textContent) === 1,
    personCode, { timeout: 15000 });
  await checkView(person, 'signed-in');
  const forged = await person.evaluate(async () => (await fetch('/api/v1/links', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ url: 'https://example.com/forged' }),
  })).status);
  if (forged !== 403) throw new Error(`a write without X-Requested-With answered ${forged}`);

  step = 'signing out ends the session on the server';
  await Promise.all([
    person.waitForResponse((r) => r.url().endsWith('/api/v1/auth/logout'), { timeout: 5000 }),
    person.getByRole('button', { name: 'Sign out' }).click(),
  ]);
  await person.getByLabel('User name').waitFor({ timeout: 5000 });
  const after = await person.evaluate(async () => (await fetch('/api/v1/links', {
    headers: { 'X-Requested-With': 'shortlink' },
  })).status);
  if (after !== 401) throw new Error(`after signing out the API answered ${after}`);
  console.log(`screenshots in ${shots}: ${shotsTaken.join(' ')}`);
  console.log('browser test passed');
} catch (error) {
  console.error(`FAILED at "${step}": ${error.message}`);
  await current?.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
}
await browser.close();
