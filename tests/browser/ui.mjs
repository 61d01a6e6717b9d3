// Browser test of the web page, run by tests/ui.rs against the real binary:
//   node tests/browser/ui.mjs BASE_URL ADMIN_KEY IMAGE_PATH LARGE_PATH SCREENSHOT_DIR USER PASSWORD
// with WEBHOOK_URL set to a loopback receiver that answers 204.
// Exits 0 when every step passed; otherwise prints the failed step and exits 1.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const [base, adminKey, image, large, shots, userName, userPassword] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run'],
});
let step = 'start';
// Tall enough that every view is on screen: shifts outside the viewport are not measured.
const page = await browser.newPage({ viewport: { width: 1200, height: 1800 } });
// Sums layout shifts not caused by the user (the Layout Instability API).
await page.addInitScript(() => {
  window.__shift = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.__shift += entry.value;
  }).observe({ type: 'layout-shift', buffered: true });
});
const requests = [];
page.on('request', (r) => requests.push(r.url()));
try {
  step = 'the page loads under /ui';
  await page.goto(`${base}/ui`);
  await page.getByLabel('API key').waitFor();
  await page.screenshot({ path: `${shots}/signin.png`, fullPage: true });

  step = 'a wrong API key is refused in words';
  await page.getByLabel('API key').fill('sl_this_key_does_not_exist_000000');
  await page.getByRole('button', { name: 'Use key' }).click();
  await page.getByText('That API key was not accepted').waitFor({ timeout: 5000 });

  step = 'signing in with the admin key shows the app';
  await page.getByLabel('API key').fill(adminKey);
  await page.getByRole('button', { name: 'Use key' }).click();
  await page.getByRole('heading', { name: 'Shorten a link' }).waitFor({ timeout: 5000 });
  const stored = await page.evaluate(() => sessionStorage.getItem('shortlink.api_key'));
  if (stored !== adminKey) throw new Error('the key is not in session storage');

  step = "an invalid URL shows the API's error in words";
  await page.getByLabel('Long URL').fill('ftp://files.example.com/x');
  await page.getByRole('button', { name: 'Shorten' }).click();
  await page.getByText('Only web addresses (http or https) can be shortened.').waitFor({ timeout: 5000 });

  step = "the alias field's pattern is a valid expression that checks as you type";
  await page.locator('summary').click();
  await page.getByLabel('Alias').fill('no spaces');
  if (!(await page.getByLabel('Alias').evaluate((input) => input.validity.patternMismatch)))
    throw new Error('an alias with a space passes the pattern');
  await page.getByLabel('Alias').fill('');
  await page.locator('summary').click();

  step = 'creating a link lists it';
  await page.getByLabel('Long URL').fill('https://example.com/from-the-browser');
  await page.locator('summary').click();
  await page.getByLabel('Alias').fill('fromui');
  await page.getByRole('button', { name: 'Shorten' }).click();
  await page.locator('#created a').first().waitFor({ timeout: 5000 });
  await page.getByAltText('QR code of the short link fromui').waitFor({ timeout: 5000 });
  const row = page.locator('tr[data-code="fromui"]');
  await row.waitFor({ timeout: 5000 });
  await page.screenshot({ path: `${shots}/links.png`, fullPage: true });

  step = 'following the short URL raises the click counter live';
  await page.getByText(/live \(WebSocket\)/).waitFor({ timeout: 5000 });
  const before = Number(await row.locator('td.num').textContent());
  await page.waitForTimeout(500);
  const shiftBefore = await page.evaluate(() => window.__shift);
  const followed = await fetch(`${base}/fromui`, { redirect: 'manual' });
  if (followed.status !== 301) throw new Error(`the short URL answered ${followed.status}`);
  await page.waitForFunction(
    (n) => Number(document.querySelector('tr[data-code="fromui"] td.num').textContent) > n,
    before, { timeout: 15000 });
  await page.waitForTimeout(300);
  const shifted = (await page.evaluate(() => window.__shift)) - shiftBefore;
  console.log('layout shift while live events arrived:', shifted);
  if (shifted > 0) throw new Error(`live events shifted the layout (${shifted})`);

  step = 'the statistics view shows the click';
  await row.getByRole('button', { name: 'Statistics of fromui' }).click();
  await page.getByText(/^1 clicks?: /).waitFor({ timeout: 5000 });
  await page.locator('#chart rect').first().waitFor({ timeout: 5000 });
  await page.screenshot({ path: `${shots}/stats.png`, fullPage: true });

  step = 'an uploaded image gets its thumbnail';
  await page.locator('#file').setInputFiles(image);
  await page.locator('#uploads li img').waitFor({ timeout: 30000 });
  await page.screenshot({ path: `${shots}/upload.png`, fullPage: true });

  step = 'a large file goes by a presigned upload';
  const presigns = [];
  page.on('request', (r) => { if (r.url().endsWith('/api/v1/uploads/presign')) presigns.push(r.url()); });
  await page.locator('#file').setInputFiles(large);
  await page.locator('#uploads li[data-state="complete"] a', { hasText: 'large.bin' }).waitFor({ timeout: 30000 });
  if (presigns.length !== 1) throw new Error(`expected one presign request, saw ${presigns.length}`);

  step = 'the page fits a phone';
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  if (overflow) throw new Error('the page scrolls sideways at 390 px');
  await page.screenshot({ path: `${shots}/phone.png`, fullPage: true });

  step = 'the page talked only to its own origin';
  const origin = new URL(base).origin;
  const foreign = requests.filter((u) => !u.startsWith(origin) && !u.startsWith('data:') && !u.startsWith('blob:'));
  if (foreign.length) throw new Error(`requests left the origin: ${foreign.join(', ')}`);
  if (requests.some((u) => u.includes(adminKey))) throw new Error('the key appeared in a URL');
  step = 'when WebSockets and the event stream fail, the page falls back to polling and stays live';
  const second = await browser.newPage();
  await second.routeWebSocket(/\/api\/v1\/ws/, (ws) => ws.close({ code: 1011, reason: 'blocked by the test' }));
  await second.route('**/api/v1/events', (route) => route.abort());
  await second.goto(`${base}/ui`);
  await second.getByLabel('API key').fill(adminKey);
  await second.getByRole('button', { name: 'Use key' }).click();
  await second.getByText(/live \(polling\)/).waitFor({ timeout: 10000 });
  const polled = second.locator('tr[data-code="fromui"] td.num');
  const count = Number(await polled.textContent());
  await fetch(`${base}/fromui`, { redirect: 'manual' });
  await second.waitForFunction(
    (n) => Number(document.querySelector('tr[data-code="fromui"] td.num').textContent) > n,
    count, { timeout: 15000 });

  step = 'a password-protected link is created, listed, and opens after its password';
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.getByLabel('Long URL').fill('https://example.com/behind-a-password');
  if (!(await page.getByLabel('Alias').isVisible())) await page.locator('summary').click();
  await page.getByLabel('Alias').fill('lockedui');
  await page.locator('#password').fill('open sesame');
  await page.getByRole('button', { name: 'Shorten' }).click();
  await page.locator('tr[data-code="lockedui"]', { hasText: 'password' }).waitFor({ timeout: 5000 });
  const visitor = await browser.newPage();
  await visitor.goto(`${base}/lockedui`);
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

  step = 'a webhook for link.created only is added and its secret is shown once';
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
  await page.screenshot({ path: `${shots}/webhooks.png`, fullPage: true });

  step = 'a disabled webhook is shown disabled';
  await hook.getByRole('button', { name: `Disable ${hookUrl}`, exact: true }).click();
  await hook.getByText('disabled', { exact: true }).waitFor({ timeout: 5000 });
  await hook.getByRole('button', { name: `Enable ${hookUrl}`, exact: true }).waitFor({ timeout: 5000 });

  step = "the domains card lists the default domain with its certificate's state";
  const domains = page.locator('#domains');
  await domains.locator('li', { hasText: '(default)' }).getByText('no certificate', { exact: true })
    .waitFor({ timeout: 5000 });

  step = 'a person signs in with a user name and password and gets an HttpOnly cookie';
  const person = await browser.newPage();
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

  step = 'signed in, a person shortens a link (the cookie and X-Requested-With carry it)';
  await person.getByLabel('Long URL').fill('https://example.com/by-a-person');
  await person.getByRole('button', { name: 'Shorten' }).click();
  await person.locator('#created a').first().waitFor({ timeout: 5000 });
  await person.screenshot({ path: `${shots}/signed-in.png`, fullPage: true });
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
  console.log('browser test passed; screenshots in', shots);
} catch (error) {
  console.error(`FAILED at "${step}": ${error.message}`);
  await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
}
await browser.close();
