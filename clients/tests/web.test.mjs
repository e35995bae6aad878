// The web app end to end: two people in two browser sessions (Debian's
// Chromium, driven by playwright-core) against a real `imlog serve`, from
// registering to friends, chat both ways, an image, a file paused and
// resumed, file transfers, a group and a recall — asserting what each sees.
//
// Screenshots of the main views go to IMLOG_SCREENSHOT_DIR when it is set
// (`docs/screenshots` holds the last ones taken).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { startServer } from './server.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = process.env.IMLOG_SCREENSHOT_DIR;
const TIMEOUT = 20_000;

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** @type {import('playwright-core').Browser} */
let browser;
const suffix = randomBytes(3).toString('hex');
const alice = { name: `alice_${suffix}`, password: 'correct horse 1' };
const bob = { name: `bob_${suffix}`, password: 'battery staple 2' };

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  server = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic'],
  });
  if (SHOTS) mkdirSync(SHOTS, { recursive: true });
});

let passed = false;
/** Every page opened, to show on a failure. @type {import('playwright-core').Page[]} */
const pages = [];

after(async () => {
  if (!passed && pages.length) {
    // On any failure the last screens explain more than a timeout does.
    const dir = join(tmpdir(), `imlog-web-test-${suffix}`);
    mkdirSync(dir, { recursive: true });
    for (const [i, page] of pages.entries()) await page.screenshot({ path: join(dir, `page-${i}.png`) }).catch(() => {});
    console.error(`last screens of each page: ${dir}`);
  }
  await browser?.close();
  await server?.stop();
});

/** A person's own browser session. @param {{name: string, password: string}} who */
async function open(who, viewport = { width: 1200, height: 760 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => console.error(`[${who.name}] page error:`, e.message));
  page.on('console', (m) => m.type() === 'error' && console.error(`[${who.name}] console:`, m.text()));
  pages.push(page);
  await page.goto(server.url);
  return page;
}

/** @param {import('playwright-core').Page} page @param {string} name */
async function shot(page, name) {
  if (!SHOTS) return;
  await page.evaluate(() => document.getElementById('toasts')?.replaceChildren());
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

/** The message rows of the open chat whose text contains `text`.
 * @param {import('playwright-core').Page} page @param {string} text */
function message(page, text) {
  return page.locator('[data-test=chat] [data-test=message]', { hasText: text });
}

/** The thread-list row titled `title`. @param {import('playwright-core').Page} page @param {string} title */
function thread(page, title) {
  return page.locator('[data-test=thread]').filter({ has: page.locator('[data-test=thread-title]', { hasText: new RegExp(`^${title}$`) }) });
}

/** What the browser saves when the link is clicked.
 * @param {import('playwright-core').Page} page @param {import('playwright-core').Locator} link */
async function saved(page, link) {
  const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
  const path = await download.path();
  return readFileSync(path);
}

/** A PNG to send: a screenshot of a small page. */
async function somePicture() {
  const page = await browser.newPage({ viewport: { width: 480, height: 320 } });
  await page.setContent('<body style="margin:0;background:linear-gradient(135deg,#2563eb,#16a34a);font:48px sans-serif;color:#fff;display:flex;align-items:center;justify-content:center;height:100vh">Hiking trip</body>');
  const png = await page.screenshot();
  await page.close();
  return png;
}

test('two people chat in the web app, with pictures, files, groups and recall', async () => {
  const a = await open(alice);
  const b = await open(bob);

  // Register → signed in.
  for (const [page, who] of [[a, alice], [b, bob]]) {
    await page.fill('input[name=name]', who.name);
    await page.fill('input[name=password]', who.password);
    await page.click('[data-test=register]');
    await page.locator('[data-test=me]', { hasText: who.name }).waitFor();
    await page.locator('[data-test=connection]', { hasText: 'online' }).waitFor();
  }

  // Alice finds Bob and asks to be friends; Bob is told at once and accepts.
  await a.click('[data-tab=people]');
  await a.fill('[data-test=search]', bob.name);
  await a.press('[data-test=search]', 'Enter');
  await a.locator('[data-test=person]', { hasText: bob.name }).locator('[data-test=add-friend]').click();
  await a.locator('[data-test=outgoing]', { hasText: bob.name }).waitFor();
  await b.locator('[data-badge=people]', { hasText: '1' }).waitFor();
  await b.click('[data-tab=people]');
  const request = b.locator('[data-test=request]', { hasText: alice.name });
  await request.locator('text=it\'s ' + alice.name).waitFor();
  await request.locator('[data-test=accept]').click();
  // Bob's chat with Alice opens with her greeting and the system line.
  await b.locator('[data-test=chat-title]', { hasText: alice.name }).waitFor();
  await message(b, `Hi ${bob.name}`).waitFor();
  await message(b, 'We are friends now!').waitFor();

  // Alice has the new thread, with an unread count, and opens it.
  await a.click('[data-tab=chats]');
  const aliceThread = thread(a, bob.name);
  await aliceThread.locator('[data-test=unread]').waitFor();
  await aliceThread.click();
  await message(a, 'We are friends now!').waitFor();

  // Chat both ways: sending → sent → read.
  await a.fill('[data-test=composer]', 'Hello Bob! Up for a hike on Saturday?');
  await a.press('[data-test=composer]', 'Enter');
  await message(b, 'Up for a hike on Saturday?').waitFor();
  await message(a, 'Up for a hike').locator('[data-test=status]', { hasText: 'read' }).waitFor();
  await b.fill('[data-test=composer]', 'Sure! Send me the map.');
  await b.click('[data-test=send]');
  await message(a, 'Send me the map.').waitFor();
  await message(b, 'Send me the map.').locator('[data-test=status]', { hasText: /sent|read/ }).waitFor();

  // A picture: the preview shows at once, the full image once downloaded.
  const png = await somePicture();
  await a.setInputFiles('[data-test=attach-input]', { name: 'map.png', mimeType: 'image/png', buffer: png });
  const bobImage = b.locator('[data-test=chat] [data-test=media]').last();
  await bobImage.locator('img[src^="data:image/jpeg"], img[src^="blob:"]').waitFor();
  await b.locator('[data-test=chat] img[data-test=image-full]').last().waitFor();
  const size = await b.locator('[data-test=chat] img[data-test=image-full]').last()
    .evaluate((img) => [/** @type {HTMLImageElement} */ (img).naturalWidth, /** @type {HTMLImageElement} */ (img).naturalHeight]);
  assert.deepEqual(size, [480, 320], 'Bob sees the whole picture');

  // A file of 12 MiB sent slowly (throttled to 2 MiB/s): pause, resume.
  const cdp = await a.context().newCDPSession(a);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 5, downloadThroughput: -1, uploadThroughput: 2 * 1024 * 1024 });
  const file = randomBytes(12 * 1024 * 1024);
  await a.setInputFiles('[data-test=attach-input]', { name: 'trail-map.pdf', mimeType: 'application/pdf', buffer: file });
  const upload = a.locator('[data-test=chat] [data-test=message]', { hasText: 'trail-map.pdf' });
  await upload.locator('[data-test=upload-state]', { hasText: '%' }).waitFor();
  await a.waitForFunction(() => Number(document.querySelector('[data-test=upload-progress]')?.getAttribute('value') ?? 0) > 0
    || /** @type {HTMLProgressElement | null} */ (document.querySelector('[data-test=upload-progress]'))?.value > 0);
  await upload.locator('[data-test=upload-pause]').click();
  await upload.locator('[data-test=upload-state]', { hasText: 'paused at' }).waitFor();
  await shot(a, 'chat-with-image-and-paused-upload');
  const pausedAt = await upload.locator('[data-test=upload-state]').textContent();
  assert.match(pausedAt ?? '', /paused at (\d+)%/);
  assert.ok(Number(/(\d+)%/.exec(pausedAt ?? '')?.[1]) < 100, 'paused before the end');
  // Bob sees the file coming, not yet downloadable.
  await message(b, 'trail-map.pdf').waitFor();
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await upload.locator('[data-test=upload-resume]').click();
  await upload.locator('[data-test=media][data-state=uploaded], [data-test=upload-state]:text("uploaded")').first().waitFor({ timeout: 60_000 });
  // Bob downloads it (throttled, so the progress shows) and saves it.
  const bcdp = await b.context().newCDPSession(b);
  await bcdp.send('Network.enable');
  await bcdp.send('Network.emulateNetworkConditions', { offline: false, latency: 5, downloadThroughput: 3 * 1024 * 1024, uploadThroughput: -1 });
  const bobFile = b.locator('[data-test=chat] [data-test=message]', { hasText: 'trail-map.pdf' });
  await bobFile.locator('[data-test=download]').click();
  await bobFile.locator('[data-test=download-state]', { hasText: '%' }).waitFor();
  await bobFile.locator('[data-test=download-pause]').click();
  await bobFile.locator('[data-test=download-state]', { hasText: 'paused at' }).waitFor();
  await shot(b, 'chat-download-paused');
  await bcdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await bobFile.locator('[data-test=download-resume]').click();
  const save = bobFile.locator('[data-test=save]');
  await save.waitFor({ timeout: 60_000 });
  const downloaded = await saved(b, save);
  const { createHash } = await import('node:crypto');
  assert.equal(createHash('sha256').update(downloaded).digest('hex'), createHash('sha256').update(file).digest('hex'), 'Bob gets the same bytes');

  // An upload paused, then the page reloaded: the Files tab offers to go
  // on with the same file, and only the missing chunks are sent.
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 5, downloadThroughput: -1, uploadThroughput: 2 * 1024 * 1024 });
  const big = randomBytes(11 * 1024 * 1024);
  await a.setInputFiles('[data-test=attach-input]', { name: 'route.gpx', mimeType: 'application/gpx+xml', buffer: big });
  const route = a.locator('[data-test=chat] [data-test=message]', { hasText: 'route.gpx' });
  await route.locator('[data-test=upload-state]', { hasText: '%' }).waitFor();
  await a.waitForFunction(() => [...document.querySelectorAll('[data-test=upload-progress]')]
    .some((p) => /** @type {HTMLProgressElement} */ (p).value > 0 && /** @type {HTMLProgressElement} */ (p).value < /** @type {HTMLProgressElement} */ (p).max));
  await route.locator('[data-test=upload-pause]').click();
  await route.locator('[data-test=upload-state]', { hasText: 'paused at' }).waitFor();
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await a.reload();
  await a.locator('[data-test=connection]', { hasText: 'online' }).waitFor();
  await a.locator('[data-badge=files]', { hasText: '1' }).waitFor();
  await a.click('[data-tab=files]');
  const unfinished = a.locator('[data-test=unfinished-upload]', { hasText: 'route.gpx' });
  await unfinished.locator('[data-test=unfinished-input]').setInputFiles({ name: 'route.gpx', mimeType: 'application/gpx+xml', buffer: big });
  await unfinished.locator('[data-test=upload-state]', { hasText: 'uploaded' }).waitFor({ timeout: 60_000 });
  // Bob can now fetch it whole.
  const bobRoute = b.locator('[data-test=chat] [data-test=message]', { hasText: 'route.gpx' });
  await bobRoute.locator('[data-test=download]').click();
  assert.deepEqual(await saved(b, bobRoute.locator('[data-test=save]')), big, 'the resumed upload is whole');
  await a.click('[data-tab=chats]');
  await aliceThread.click();

  // Online transfer from Bob to Alice: offered, received, the same bytes.
  const notes = Buffer.from('Saturday: meet at 8, bring water.\n'.repeat(40_000));
  const chooser = b.waitForEvent('filechooser');
  await b.click('[data-test=offer-file]');
  await (await chooser).setFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: notes });
  await b.click('[data-test=offer-online]');
  await a.locator('[data-badge=files]', { hasText: '1' }).waitFor();
  await a.click('[data-tab=files]');
  const offer = a.locator('[data-test=transfer]', { hasText: 'notes.txt' });
  await offer.locator('[data-test=transfer-state]', { hasText: 'offered to you' }).waitFor();
  await offer.locator('[data-test=transfer-accept]').click();
  await offer.locator('[data-test=transfer-save]').waitFor();
  await b.locator('[data-test=transfer][data-state=done]', { hasText: 'notes.txt' }).waitFor();
  assert.deepEqual(await saved(a, offer.locator('[data-test=transfer-save]')), notes);

  // Offline transfer from Alice to Bob.
  await a.click('[data-tab=chats]');
  await aliceThread.click();
  const chooser2 = a.waitForEvent('filechooser');
  await a.click('[data-test=offer-file]');
  await (await chooser2).setFiles({ name: 'permit.txt', mimeType: 'text/plain', buffer: Buffer.from('permit #42') });
  await a.click('[data-test=offer-offline]');
  await b.click('[data-tab=files]');
  const offline = b.locator('[data-test=transfer]', { hasText: 'permit.txt' });
  await offline.locator('[data-test=transfer-accept]').click();
  await offline.locator('[data-test=transfer-state]', { hasText: 'done' }).waitFor();
  await shot(b, 'files');
  await a.click('[data-tab=files]');
  await a.locator('[data-test=transfer][data-state=done]', { hasText: 'permit.txt' }).waitFor();

  // A group: Alice creates it with Bob, makes him admin, mutes him.
  await a.click('[data-tab=chats]');
  await a.click('[data-test=new-group]');
  await a.fill('[data-test=group-name]', 'hikers');
  await a.locator('[data-test=dialog] label', { hasText: bob.name }).locator('input').check();
  await a.click('[data-test=group-create]');
  await a.locator('[data-test=chat-title]', { hasText: 'hikers' }).waitFor();
  await message(a, 'created the group').waitFor();
  await b.click('[data-tab=chats]');
  await thread(b, 'hikers').click();
  await message(b, 'created the group').waitFor();
  await b.fill('[data-test=composer]', 'Glad to be here');
  await b.press('[data-test=composer]', 'Enter');
  await message(a, 'Glad to be here').waitFor();
  await a.click('[data-test=group-info]');
  const bobRow = a.locator('[data-test=member]', { hasText: bob.name });
  await bobRow.locator('[data-test=role]', { hasText: 'member' }).waitFor();
  await bobRow.locator('[data-test=promote]').click();
  await a.locator('[data-test=member]', { hasText: bob.name }).locator('[data-test=role]', { hasText: 'admin' }).waitFor();
  await a.locator('[data-test=member]', { hasText: bob.name }).locator('[data-test=mute]').click();
  await a.locator('[data-test=member]', { hasText: bob.name }).locator('[data-test=muted]').waitFor();
  await message(b, 'muted').waitFor();
  await shot(a, 'group');
  await b.fill('[data-test=composer]', 'can I still talk?');
  await b.press('[data-test=composer]', 'Enter');
  await message(b, 'can I still talk?').locator('[data-test=status]', { hasText: 'failed' }).waitFor();
  await a.locator('[data-test=member]', { hasText: bob.name }).locator('[data-test=unmute]').click();
  await message(b, 'unmuted').waitFor();

  // Recall: Alice takes a message back; Bob sees it go.
  await a.click('[data-tab=chats]');
  await aliceThread.click();
  await thread(b, alice.name).click();
  await a.fill('[data-test=composer]', 'my card PIN is 1234');
  await a.press('[data-test=composer]', 'Enter');
  await message(b, 'my card PIN is 1234').waitFor();
  await message(a, 'my card PIN is 1234').locator('[data-test=recall]').click();
  await b.locator('[data-test=chat] [data-test=recalled]').last().waitFor();
  assert.equal(await message(b, 'my card PIN').count(), 0, 'the text is gone from Bob\'s screen');
  await a.locator('[data-test=chat] [data-test=recalled]').last().waitFor();

  // Alice picks a profile picture; Bob's thread list shows it.
  await a.click('[data-tab=me]');
  await a.setInputFiles('[data-test=avatar-input]', { name: 'me.png', mimeType: 'image/png', buffer: png });
  await a.locator('.avatar.large img').waitFor();
  await b.click('[data-tab=chats]');
  await thread(b, alice.name).locator('.avatar img').waitFor();
  await shot(a, 'profile');

  // After a reload Alice is still signed in and her chat is all there.
  await a.reload();
  await a.locator('[data-test=connection]', { hasText: 'online' }).waitFor();
  await thread(a, bob.name).click();
  await message(a, 'Send me the map.').waitFor();
  await a.locator('[data-test=chat] img[data-test=image-full]').last().waitFor();
  await shot(a, 'chat');

  // A phone-width window shows one pane at a time.
  await b.setViewportSize({ width: 390, height: 780 });
  await b.click('[data-test=chat] .back');
  await b.locator('[data-test=threads]').waitFor();
  assert.equal(await b.locator('[data-test=chat]').count(), 0);
  await shot(b, 'phone-threads');
  await thread(b, alice.name).click();
  await message(b, 'Send me the map.').waitFor();
  assert.equal(await b.locator('aside.sidebar').isVisible(), false, 'the chat fills the narrow window');
  await shot(b, 'phone-chat');
  passed = true;
});
