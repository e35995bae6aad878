// The JavaScript SDK (clients/js) against a real `imlog serve`: sessions,
// chat with pushes, catch-up, the outbox through a server crash, uploads,
// downloads and file transfer. Each test starts its own server.
//
//   cd clients && node --experimental-websocket --test --test-concurrency=1 tests/sdk.test.mjs

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';

import { ImlogClient, Sha256, memoryStore } from '../js/src/index.js';
import { startServer } from './server.mjs';

const PASSWORD = 'password123';
const MiB = 1024 * 1024;

// ---- helpers ----------------------------------------------------------------

let counter = 0;
/** A fresh user name: 3–32 of a-z 0-9 _ . - */
function uniqueName(prefix) {
  counter += 1;
  return `${prefix}${counter}_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

/**
 * Runs `body` against a fresh server; every client made with `ctx.client()`
 * is closed and the server stopped afterwards.
 * @param {(ctx: Ctx) => Promise<void>} body
 * @param {{env?: Record<string, string>}} [options]
 */
async function withServer(body, options = {}) {
  const server = await startServer(options);
  /** @type {ImlogClient[]} */
  const clients = [];
  const ctx = {
    server,
    /** @param {Partial<ConstructorParameters<typeof ImlogClient>[0]>} [options] */
    client(options = {}) {
      const client = new ImlogClient({
        url: server.url,
        heartbeatMs: 1000,
        reconnectMinMs: 100,
        reconnectMaxMs: 1000,
        ...options,
      });
      clients.push(client);
      return client;
    },
    /** A registered, logged-in client. */
    async user(prefix = 'u', options = {}) {
      const client = ctx.client(options);
      const name = uniqueName(prefix);
      await client.register(name, PASSWORD);
      await client.login(name, PASSWORD);
      return client;
    },
  };
  try {
    await body(ctx);
  } catch (e) {
    // The server's log helps to tell an SDK bug from a server one.
    if (process.env.SDK_TEST_VERBOSE) console.error(server.output);
    throw e;
  } finally {
    for (const client of clients) client.close();
    if (process.env.SDK_TEST_SERVER_LOG) console.error(server.output);
    await server.stop();
  }
}
/** @typedef {{server: any, client: (o?: object) => ImlogClient, user: (p?: string, o?: object) => Promise<ImlogClient>}} Ctx */

/** Everything `emitter` emits as `event`, from now on (copies: the SDK's
 * outgoing items are live objects that change state). */
function collect(emitter, event) {
  const seen = [];
  emitter.on(event, (data) => seen.push(data && typeof data === 'object' ? { ...data } : data));
  return seen;
}

/** The next `event` (matching `match`) from now on. */
function next(emitter, event, match = () => true, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no "${event}" event within ${ms} ms`));
    }, ms);
    const off = emitter.on(event, (data) => {
      if (!match(data)) return;
      clearTimeout(timer);
      off();
      resolve(data);
    });
  });
}

/** Waits until `check()` is truthy. */
async function until(check, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Makes `a` and `b` friends; returns their private thread's id. */
async function befriend(a, b) {
  const requested = next(b, 'friend_request', (r) => r.from === a.userId);
  await a.friendApply(b.userId, { greeting: 'hi there' });
  await requested;
  const accepted = await b.friendAccept(a.userId);
  assert.ok(accepted.thread_id, 'friend_accept names the new thread');
  return accepted.thread_id;
}

/** Every message of a thread, read with sync a page at a time. */
async function readAll(client, threadId) {
  const all = [];
  let since = 0;
  for (;;) {
    const page = await client.messages(threadId, { since, limit: 100 });
    all.push(...page.items);
    if (page.items.length) since = page.next_cursor;
    if (!page.load_more) return all;
  }
}

/**
 * `readAll`, again until `check` holds of what it reads: another
 * connection's change reaches reads once projected, moments after its push
 * or ack (PROTOCOL.md, "Pushes").
 */
async function readAllWhen(client, threadId, check, what) {
  return until(async () => {
    const messages = await readAll(client, threadId);
    return check(messages) && messages;
  }, what);
}

/** How many times each value occurs. */
function tally(values) {
  const counts = new Map();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return counts;
}

/** Asserts every one of `expected` occurs exactly once in `values`. */
function assertOnceEach(values, expected, what) {
  const counts = tally(values);
  const wrong = expected.filter((v) => counts.get(v) !== 1).map((v) => `${v}×${counts.get(v) ?? 0}`);
  assert.deepEqual(wrong, [], `${what}: each exactly once`);
}

/** The outgoing item's final state (`sent` or `failed`). */
function settled(client, item, ms = 30_000) {
  if (item.state !== 'sending') return Promise.resolve(item);
  return next(client, 'outgoing', (o) => o.unique_id === item.unique_id && o.state !== 'sending', ms);
}

function sha256(bytes) {
  return createHash('sha256').update(bytes).digest('hex');
}

async function blobSha256(blob) {
  return sha256(new Uint8Array(await blob.arrayBuffer()));
}

/**
 * Records the SDK's HTTP requests (it calls the global `fetch`) until
 * `restore()`: method, path, request headers and response status.
 */
function recordFetches() {
  const original = globalThis.fetch;
  const calls = [];
  globalThis.fetch = async (url, init = {}) => {
    const call = { method: init.method ?? 'GET', path: new URL(String(url)).pathname, headers: init.headers ?? {} };
    calls.push(call);
    const response = await original(url, init);
    call.status = response.status;
    return response;
  };
  return { calls, restore: () => (globalThis.fetch = original) };
}

/** A tiny PNG, as a preview. */
const PREVIEW =
  'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';

// ---- tests ------------------------------------------------------------------

test('sha256: the streaming hash matches node:crypto', { timeout: 90_000 }, () => {
  const data = randomBytes(3 * 64 * 1024 + 77);
  for (const cut of [0, 1, 55, 56, 63, 64, 65, 1000, data.length]) {
    const hash = new Sha256();
    hash.update(data.subarray(0, cut)).update(data.subarray(cut));
    assert.equal(hash.hex(), sha256(data), `split at ${cut}`);
  }
  assert.equal(new Sha256().hex(), sha256(Buffer.alloc(0)));
});

test('session: login, resume after a reload, logout, kick', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const store = memoryStore();
    const a = ctx.client({ store });
    const states = collect(a, 'state');
    const name = uniqueName('ses');
    const { user_id } = await a.register(name, PASSWORD);
    const session = await a.login(name, PASSWORD);
    assert.equal(session.user_id, user_id);
    assert.match(session.token, /^[0-9a-f]{64}$/);
    assert.equal(a.state, 'online');
    assert.equal(a.userId, user_id);
    assert.deepEqual(
      states.map((s) => s.state),
      ['connecting', 'anonymous', 'online'],
    );
    assert.equal(a.saved()?.token, session.token, 'the session is kept in the store');

    // A page reload: the app closes, a new client on the same store resumes
    // with `auth` (no new login, so nobody is kicked: a third client on the
    // same token stays online too).
    a.close();
    assert.equal(a.state, 'ended');
    const reloaded = ctx.client({ store });
    const resumed = await reloaded.resume();
    assert.equal(resumed.token, session.token);
    assert.equal(resumed.session_id, session.session_id);
    assert.equal(reloaded.state, 'online');
    assert.equal(reloaded.userId, user_id);
    const other = ctx.client();
    const otherKicked = collect(other, 'kicked');
    await other.resume(session);
    assert.ok(Array.isArray(await reloaded.threads()));
    assert.ok(Array.isArray(await other.threads()));
    await sleep(300);
    assert.equal(other.state, 'online');
    assert.equal(otherKicked.length, 0, 'auth kicks nobody');

    // Logout ends the session everywhere: the other connection on the same
    // token is closed, and the token is refused afterwards.
    const ended = next(reloaded, 'ended');
    const otherEnded = next(other, 'ended');
    await reloaded.logout();
    assert.equal((await ended).code, 'logged_out');
    assert.equal(reloaded.state, 'ended');
    assert.equal(reloaded.saved(), null, 'logout forgets the session');
    assert.equal((await otherEnded).code, 'session_ended');

    const late = ctx.client();
    const lateEnded = next(late, 'ended');
    await assert.rejects(late.resume(session), (e) => e.code === 'bad_token');
    assert.equal((await lateEnded).code, 'bad_token');
    assert.equal(late.state, 'ended');

    // A second login of the same user kicks the first client for good.
    // (Two tabs of one browser: they share the store.)
    const tabs = memoryStore();
    const first = ctx.client({ store: tabs });
    await first.login(name, PASSWORD);
    const kicked = next(first, 'kicked');
    const firstEnded = next(first, 'ended');
    const firstStates = collect(first, 'state');
    const second = ctx.client({ store: tabs });
    const secondSession = await second.login(name, PASSWORD);
    assert.ok((await kicked).reason);
    assert.equal((await firstEnded).code, 'kicked');
    await sleep(1500);
    assert.equal(first.state, 'ended');
    assert.deepEqual(
      firstStates.map((s) => s.state),
      ['ended'],
      'a kicked client does not reconnect',
    );
    assert.equal(second.state, 'online');
    assert.equal(second.saved()?.token, secondSession.token, "the kicked tab leaves the new session's token alone");
    await assert.rejects(first.threads(), (e) => e.code === 'unauthenticated' || e.code === 'ended');
  });
});

test('chat: friend request, messages both ways, read receipts, recall', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const a = await ctx.user('alice');
    const b = await ctx.user('bob');
    const aMessages = collect(a, 'message');
    const bMessages = collect(b, 'message');

    const request = next(b, 'friend_request');
    assert.equal((await a.friendApply(b.userId, { greeting: 'hello bob' })).status, 'requested');
    assert.deepEqual(await request, { from: a.userId, greeting: 'hello bob' });

    const aAccepted = next(a, 'friend_accepted');
    const bAccepted = next(b, 'friend_accepted');
    const { thread_id: threadId } = await b.friendAccept(a.userId);
    assert.ok(threadId);
    for (const accepted of [await aAccepted, await bAccepted]) {
      assert.deepEqual(accepted, { from: a.userId, to: b.userId });
    }
    // The first messages: the greeting, then the system line, to both.
    for (const [who, seen] of [['alice', aMessages], ['bob', bMessages]]) {
      await until(() => seen.length >= 2, `${who}'s first messages`);
      assert.deepEqual(
        seen.map((m) => [m.thread_id, m.kind, m.body]),
        [
          [threadId, 'text', 'hello bob'],
          [threadId, 'system', 'We are friends now!'],
        ],
      );
    }

    // A sends several; each ends `sent` with an id, B gets each once.
    const texts = ['one', 'two', 'three', 'four', 'five'];
    const outgoing = collect(a, 'outgoing');
    const items = texts.map((t) => a.send(threadId, t));
    assert.ok(items.every((i) => i.state === 'sending'));
    const sent = await Promise.all(items.map((i) => settled(a, i)));
    for (const item of sent) {
      assert.equal(item.state, 'sent');
      assert.ok(Number.isInteger(item.message_id));
    }
    assert.deepEqual(
      outgoing.filter((o) => o.state === 'sent').map((o) => o.body),
      texts,
      'one `outgoing` event per item reaching `sent`, in order',
    );
    await until(() => bMessages.length >= 2 + texts.length, 'bob gets the messages');
    // Longer than the SDK's quiet-moment sync after pushes (2 s): it must
    // not deliver them again.
    await sleep(2500);
    const fromA = bMessages.slice(2);
    assert.deepEqual(fromA.map((m) => m.body), texts);
    assert.deepEqual(fromA.map((m) => m.message_id), sent.map((i) => i.message_id));
    assert.ok(fromA.every((m) => m.sender_id === a.userId && m.thread_id === threadId));
    assert.equal(aMessages.length, 2, 'alice gets no `message` for her own sends');

    // And back: B answers, A gets it.
    const reply = await settled(b, b.send(threadId, 'hi alice'));
    const got = await until(() => aMessages.find((m) => m.body === 'hi alice'), 'alice gets the reply');
    assert.equal(got.message_id, reply.message_id);
    assert.equal(got.sender_id, b.userId);

    // Read receipts.
    const read = next(a, 'read');
    await b.markRead(threadId, sent.at(-1).message_id);
    assert.deepEqual(await read, { thread_id: threadId, user_id: b.userId, up_to: sent.at(-1).message_id });

    // Recall.
    const recalled = next(b, 'recalled');
    await a.recall(threadId, sent[1].message_id);
    assert.deepEqual(await recalled, { thread_id: threadId, message_id: sent[1].message_id, by: a.userId });
    const all = await readAllWhen(
      b,
      threadId,
      (messages) => messages.find((m) => m.message_id === sent[1].message_id)?.recalled,
      'bob reads the recall',
    );
    const two = all.find((m) => m.message_id === sent[1].message_id);
    assert.equal(two.recalled, true);
    assert.equal(two.body, '');
    assert.ok(!all.some((m) => m.body === 'two'));
    assert.deepEqual(
      all.filter((m) => !m.recalled).map((m) => m.body),
      ['hello bob', 'We are friends now!', 'one', 'three', 'four', 'five', 'hi alice'],
    );
  });
});

test('catch-up: missed messages arrive once after a dropped socket and after a reload', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const a = await ctx.user('alice');
    const store = memoryStore();
    // A slow first reconnect, so that A's messages are sent while B is away.
    const b = await ctx.user('bob', { store, reconnectMinMs: 1500, reconnectMaxMs: 2000 });
    const bMessages = collect(b, 'message');
    const threadId = await befriend(a, b);
    await until(() => bMessages.length === 2, 'the first messages');

    // 1. The socket drops; B reconnects by itself and catches up.
    const offline = next(b, 'state', (s) => s.state === 'offline');
    /** @type {WebSocket} */ (b._socket).close();
    await offline;
    const backOnline = next(b, 'state', (s) => s.state === 'online', 10_000);
    const missed = ['while away 1', 'while away 2', 'while away 3', 'while away 4'];
    for (const text of missed) assert.equal((await settled(a, a.send(threadId, text))).state, 'sent');
    assert.notEqual(b.state, 'online', 'the messages were sent while B was away');
    await backOnline;
    await until(() => bMessages.length >= 2 + missed.length, 'B catches up');
    const live = await settled(a, a.send(threadId, 'back again'));
    await until(() => bMessages.some((m) => m.body === 'back again'), 'B gets the next push');
    await sleep(2500);
    assertOnceEach(bMessages.map((m) => m.body), [...missed, 'back again'], 'after a dropped socket');
    assert.equal(bMessages.at(-1).message_id, live.message_id);

    // 2. B's page goes away; A sends; a new page on the same store resumes
    // and catches up.
    b.close();
    const offlineTexts = ['while closed 1', 'while closed 2', 'while closed 3'];
    for (const text of offlineTexts) await settled(a, a.send(threadId, text));
    const b2 = ctx.client({ store });
    const b2Messages = collect(b2, 'message');
    const synced = next(b2, 'synced');
    await b2.resume();
    await synced;
    await until(() => b2Messages.length >= offlineTexts.length, 'the reloaded B catches up');
    await sleep(2500);
    assert.deepEqual(
      b2Messages.map((m) => m.body),
      offlineTexts,
      'the reloaded page gets what it missed, once, and nothing it had',
    );

    // 3. A reload right after a push (before any sync moved B's cursor past
    // it): the new page must not deliver it again.
    const pushed = next(b2, 'message', (m) => m.body === 'just pushed');
    await settled(a, a.send(threadId, 'just pushed'));
    await pushed;
    b2.close();
    await settled(a, a.send(threadId, 'after the reload'));
    const b3 = ctx.client({ store });
    const b3Messages = collect(b3, 'message');
    const b3Synced = next(b3, 'synced');
    await b3.resume();
    await b3Synced;
    await until(() => b3Messages.some((m) => m.body === 'after the reload'), 'the third page catches up');
    await sleep(300);
    assert.deepEqual(b3Messages.map((m) => m.body), ['after the reload'], 'nothing delivered twice across a reload');
  });
});

test('reconnect: every outgoing message is sent exactly once through a server crash', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const a = await ctx.user('alice');
    const b = await ctx.user('bob');
    const threadId = await befriend(a, b);
    const bMessages = collect(b, 'message');
    const aMessages = collect(a, 'message');
    const aStates = collect(a, 'state');

    // Kill -9 the server right after the batch holding message 60 went out
    // (so its reply is lost) and bring it back; the client is left alone.
    // The requests are recorded to see the resend.
    const total = 200;
    const bodies = Array.from({ length: total }, (_, i) => `message ${i}`);
    /** @type {Array<{bodies: string[], retry: boolean}>} */
    const batches = [];
    let crashed = null;
    const send = a._send.bind(a);
    a._send = (op, fields) => {
      const reply = send(op, fields);
      if (op === 'send_messages') {
        batches.push({ bodies: fields.items.map((item) => item.body), retry: fields.retry });
        if (!crashed && fields.items.some((item) => item.body === 'message 60')) {
          crashed = ctx.server.crash().then(() => ctx.server.start());
        }
      }
      return reply;
    };
    const items = [];
    for (const body of bodies) {
      items.push(a.send(threadId, body));
      await sleep(4);
    }
    await until(() => crashed, 'the crash');
    await crashed;
    const results = await Promise.all(items.map((item) => settled(a, item, 60_000)));
    assert.deepEqual(
      results.filter((r) => r.state !== 'sent').map((r) => [r.body, r.error]),
      [],
      'every item ends `sent`',
    );
    assert.ok(aStates.some((s) => s.state === 'offline'), 'the crash was noticed');
    const resent = batches.filter((b) => b.retry && b.bodies.includes('message 60'));
    assert.ok(resent.length >= 1, 'the batch whose reply was lost was resent, as a retry');
    assert.equal(a.outbox.pending().length, 0);

    // Sync is the truth: every body once, under the id its item was acked
    // with. B's connection sees A's writes moments later: wait for the last.
    const isMine = (m) => m.sender_id === a.userId && m.kind === 'text' && m.body.startsWith('message ');
    const lastId = Math.max(...results.map((r) => r.message_id));
    const all = await readAllWhen(
      b,
      threadId,
      (messages) => messages.some((m) => m.message_id >= lastId),
      'B to sync up to the last message',
    );
    const mine = all.filter(isMine);
    assertOnceEach(mine.map((m) => m.body), bodies, 'sync');
    assert.equal(mine.length, total);
    const idOf = new Map(mine.map((m) => [m.body, m.message_id]));
    assert.deepEqual(
      results.filter((r) => idOf.get(r.body) !== r.message_id).map((r) => [r.body, r.message_id, idOf.get(r.body)]),
      [],
      "each item's acked id is the one sync shows",
    );
    assert.deepEqual(mine.map((m) => m.body), bodies, 'in the order sent');

    // B, reconnected by itself, got every message once (pushes + catch-up).
    await until(() => bodies.every((body) => bMessages.some((m) => m.body === body)), 'B gets all 200', 20_000);
    await sleep(2500);
    assertOnceEach(bMessages.map((m) => m.body), bodies, "B's `message` events");
    assert.deepEqual(
      aMessages.filter((m) => m.sender_id === a.userId && m.kind === 'text').map((m) => m.body),
      [],
      'no `message` events for your own sends, even through catch-up',
    );

    // The outbox survives a page reload while the server is down.
    const aStore = a.store;
    await ctx.server.crash();
    await until(() => a.state !== 'online', 'A sees the crash');
    const queued = ['queued 1', 'queued 2', 'queued 3'].map((text) => a.send(threadId, text));
    await sleep(100);
    assert.ok(queued.every((q) => q.state === 'sending'));
    a.close();
    const a2 = ctx.client({ store: aStore });
    const a2Outgoing = collect(a2, 'outgoing');
    const resumed = a2.resume();
    await sleep(300);
    await ctx.server.start();
    await resumed;
    await until(() => a2Outgoing.filter((o) => o.state !== 'sending').length >= 3, 'the reloaded outbox is sent', 20_000);
    const final = a2Outgoing.filter((o) => o.state !== 'sending');
    assert.deepEqual(final.map((o) => [o.body, o.state]), [
      ['queued 1', 'sent'],
      ['queued 2', 'sent'],
      ['queued 3', 'sent'],
    ]);
    assert.deepEqual(
      final.map((o) => o.unique_id),
      queued.map((q) => q.unique_id),
      'the same unique ids as queued',
    );
    const after = await readAllWhen(
      b,
      threadId,
      (messages) => final.every((o) => messages.some((m) => m.message_id === o.message_id)),
      'B to sync the queued messages',
    );
    assertOnceEach(after.map((m) => m.body), ['queued 1', 'queued 2', 'queued 3'], 'sync after the reload');
    for (const o of final) assert.equal(after.find((m) => m.body === o.body).message_id, o.message_id);
  });
});

test('uploads: chunks, progress, pause/resume, resume after a reload, cancel, media messages', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const store = memoryStore();
    const a = await ctx.user('alice', { store });
    const b = await ctx.user('bob');
    const threadId = await befriend(a, b);
    const bytes = randomBytes(12 * MiB + 12345);
    const blob = new Blob([bytes], { type: 'application/octet-stream' });

    // 1. Straight through.
    const plain = a.upload(blob, { name: 'big.bin' });
    const progress = collect(plain, 'progress');
    const view = await plain.done;
    assert.equal(view.state, 'completed');
    assert.equal(view.size, blob.size);
    assert.equal(view.chunks, 3);
    assert.equal(view.sha256, sha256(bytes));
    assert.equal(plain.state, 'completed');
    assert.deepEqual(progress.at(-1), { acked_bytes: blob.size, size: blob.size, acked_chunks: 3, chunks: 3 });
    assert.ok(progress.some((p) => p.acked_bytes > 0 && p.acked_bytes < blob.size), 'intermediate progress');
    assert.deepEqual(a.unfinishedUploads(), []);
    const served = await a.http('GET', `/v1/uploads/${view.upload_id}`);
    assert.equal(served.state, 'completed');
    assert.deepEqual(served.acked, [0, 1, 2]);

    // 2. Paused at its first progress (declared, nothing sent yet) and
    // resumed at once: each chunk is sent once.
    const puts = recordFetches();
    try {
      const paused = a.upload(blob, { name: 'paused.bin' });
      const pausedStates = collect(paused, 'state');
      await next(paused, 'progress');
      paused.pause();
      assert.equal(paused.state, 'paused');
      paused.resume();
      assert.equal((await paused.done).state, 'completed');
      assert.equal(paused.state, 'completed');
      assert.deepEqual(pausedStates.filter((s) => s.state === 'failed'), []);
      assert.deepEqual(
        puts.calls.filter((c) => c.method === 'PUT').map((c) => c.path.split('/').at(-1)).sort(),
        ['0', '1', '2'],
      );
    } finally {
      puts.restore();
    }

    // Paused while hashing (not declared yet), resumed later.
    const early = a.upload(blob, { name: 'early.bin' });
    early.pause();
    assert.equal(early.state, 'paused');
    await sleep(200);
    assert.equal(early.uploadId, null, 'nothing declared while paused');
    early.resume();
    assert.equal((await early.done).state, 'completed');

    // Paused after a chunk, resumed a moment later.
    const paused2 = a.upload(blob, { name: 'paused2.bin' });
    await next(paused2, 'progress', (p) => p.acked_chunks >= 1);
    paused2.pause();
    await sleep(300);
    assert.equal(paused2.state, 'paused');
    paused2.resume();
    assert.equal((await paused2.done).state, 'completed');

    // 3. A reload between chunks: the new page lists the upload and sends
    // only the missing chunks.
    const first = a.upload(blob, { name: 'reload.bin', window: 1 });
    await next(first, 'progress', (p) => p.acked_chunks === 1);
    first.pause();
    const uploadId = /** @type {string} */ (first.uploadId);
    a.close();
    const a2 = ctx.client({ store });
    await a2.resume();
    assert.deepEqual(
      a2.unfinishedUploads().map((u) => [u.upload_id, u.name, u.size]),
      [[uploadId, 'reload.bin', blob.size]],
    );
    const before = await a2.http('GET', `/v1/uploads/${uploadId}`);
    assert.equal(before.state, 'uploading');
    assert.deepEqual(before.acked, [0]);
    const fetches = recordFetches();
    let resumedView;
    try {
      const resumed = a2.resumeUpload(uploadId, blob);
      resumedView = await resumed.done;
    } finally {
      fetches.restore();
    }
    assert.equal(resumedView.state, 'completed');
    assert.deepEqual(
      fetches.calls
        .filter((c) => c.method === 'PUT')
        .map((c) => [c.path.split('/').at(-1), c.status])
        .sort(),
      [
        ['1', 200],
        ['2', 200],
      ],
      'only the missing chunks were sent',
    );
    assert.deepEqual(a2.unfinishedUploads(), []);

    // 4. Cancel.
    const doomed = a2.upload(blob, { name: 'doomed.bin', window: 1 });
    await next(doomed, 'progress', (p) => p.acked_chunks === 1);
    await doomed.cancel();
    assert.equal(doomed.state, 'cancelled');
    await assert.rejects(doomed.done, (e) => e.code === 'aborted');
    const cancelled = await a2.http('GET', `/v1/uploads/${doomed.uploadId}`);
    assert.equal(cancelled.state, 'failed');
    assert.match(cancelled.failure, /^cancelled/);
    assert.deepEqual(a2.unfinishedUploads(), []);

    // 5. An image sent as a media message while it uploads.
    const image = new Blob([randomBytes(6 * MiB)], { type: 'image/png' });
    const upload = a2.upload(image, { name: 'photo.png', window: 1 });
    await next(upload, 'state', (s) => s.state === 'uploading');
    assert.ok(upload.uploadId);
    const aSettled = next(a2, 'media_settled');
    const bSettled = next(b, 'media_settled');
    const bMedia = next(b, 'message', (m) => m.kind === 'image');
    const item = await settled(
      a2,
      a2.send(threadId, { kind: 'image', upload_id: upload.uploadId, body: 'caption', preview: PREVIEW }),
    );
    assert.equal(item.state, 'sent', JSON.stringify(item.error));
    const message = await bMedia;
    assert.equal(message.message_id, item.message_id);
    assert.equal(message.body, 'caption');
    assert.equal(message.media.upload_id, upload.uploadId);
    assert.equal(message.media.name, 'photo.png');
    assert.equal(message.media.size, image.size);
    assert.equal(message.media.content_type, 'image/png');
    assert.equal(message.media.preview, PREVIEW);
    assert.ok(['uploading', 'uploaded'].includes(message.media.state));
    assert.equal((await upload.done).state, 'completed');
    for (const pushed of [await aSettled, await bSettled]) {
      assert.deepEqual(pushed, {
        thread_id: threadId,
        message_id: item.message_id,
        upload_id: upload.uploadId,
        state: 'uploaded',
      });
    }
    const isItem = (m) => m.message_id === item.message_id;
    const synced = (
      await readAllWhen(
        b,
        threadId,
        (messages) => messages.find(isItem)?.media.state === 'uploaded',
        "B to sync the message's settled state",
      )
    ).find(isItem);
    assert.equal(synced.media.state, 'uploaded');
  });
});

test('downloads: whole, progress, paused and resumed with a range', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const a = await ctx.user('alice');
    const b = await ctx.user('bob');
    const threadId = await befriend(a, b);
    const bytes = randomBytes(12 * MiB + 777);
    const upload = a.upload(new Blob([bytes]), { name: 'data.bin', kind: 'file' });
    const { upload_id: uploadId } = await upload.done;

    // The owner downloads it whole.
    const whole = a.download(uploadId);
    const progress = collect(whole, 'progress');
    const blob = await whole.done;
    assert.equal(blob.size, bytes.length);
    assert.equal(await blobSha256(blob), sha256(bytes));
    assert.equal(whole.state, 'completed');
    assert.deepEqual(progress.at(-1), { received: bytes.length, size: bytes.length });
    assert.ok(progress.length > 1);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i].received > progress[i - 1].received);

    // B may download it once it is sent to their thread; paused, resumed.
    await assert.rejects(b.download(uploadId).done, (e) => e.code === 'forbidden');
    await settled(a, a.send(threadId, { kind: 'file', upload_id: uploadId, body: '' }));
    const fetches = recordFetches();
    try {
      const download = b.download(uploadId);
      const received = await next(download, 'progress', (p) => p.received > 0);
      assert.ok(received.received < bytes.length);
      download.pause();
      assert.equal(download.state, 'paused');
      await sleep(200);
      const at = download.received;
      assert.ok(at > 0 && at < bytes.length, `paused mid-way (${at})`);
      download.resume();
      const got = await download.done;
      assert.equal(got.size, bytes.length);
      assert.equal(await blobSha256(got), sha256(bytes));
      const gets = fetches.calls.filter((c) => c.path.endsWith('/content'));
      assert.equal(gets.length, 2);
      assert.equal(gets[0].status, 200);
      assert.equal(gets[1].headers.range, `bytes=${at}-`);
      assert.equal(gets[1].status, 206, 'the rest came as a range');
    } finally {
      fetches.restore();
    }

    // Paused and resumed at once.
    const quick = b.download(uploadId);
    await next(quick, 'progress');
    quick.pause();
    quick.resume();
    assert.equal(await blobSha256(await quick.done), sha256(bytes));
  });
});

test('file transfer: online through the relay, offline through an upload', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const a = await ctx.user('alice');
    const b = await ctx.user('bob');
    await befriend(a, b);
    const aTransfers = collect(a, 'transfer');
    const bTransfers = collect(b, 'transfer');

    // Online.
    const bytes = randomBytes(3 * MiB + 4321);
    const offered = next(b, 'file_offer');
    const offer = await a.offerFile(b.userId, { mode: 'online', name: 'notes.bin', size: bytes.length });
    assert.equal(offer.mode, 'online');
    assert.equal(offer.state, 'ready');
    assert.ok(offer.relay_url);
    const seen = await offered;
    assert.equal(seen.task_id, offer.task_id);
    assert.equal(seen.from, a.userId);
    assert.equal(seen.to, b.userId);
    assert.equal(seen.name, 'notes.bin');
    assert.equal(seen.size, bytes.length);

    const sender = a.sendOnline(offer, new Blob([bytes]));
    const receiver = b.receiveOnline(seen);
    const receiverProgress = collect(receiver, 'progress');
    const senderStates = collect(sender, 'state');
    const [sent, got] = await Promise.all([sender.done, receiver.done]);
    assert.equal(sent, null);
    assert.ok(got);
    assert.equal(got.size, bytes.length);
    assert.equal(await blobSha256(got), sha256(bytes));
    assert.equal(sender.state, 'done');
    assert.equal(receiver.state, 'done');
    assert.equal(receiverProgress.at(-1).bytes, bytes.length);
    assert.ok(senderStates.some((s) => s.state === 'transferring' || s.state === 'waiting_transfer'));
    for (const [who, pushes] of [['alice', aTransfers], ['bob', bTransfers]]) {
      await until(() => pushes.some((t) => t.task_id === offer.task_id && t.state === 'done'), `${who}'s done push`);
    }

    // Offline.
    const fileBytes = randomBytes(1 * MiB + 99);
    const { upload_id: uploadId } = await a.upload(new Blob([fileBytes]), { name: 'later.bin', kind: 'file' }).done;
    const offlineOffered = next(b, 'file_offer', (t) => t.mode === 'offline');
    const offline = await a.offerFile(b.userId, { mode: 'offline', upload_id: uploadId });
    assert.equal(offline.mode, 'offline');
    assert.equal(offline.upload_id, uploadId);
    assert.equal(offline.name, 'later.bin');
    assert.equal(offline.size, fileBytes.length);
    assert.equal((await offlineOffered).task_id, offline.task_id);
    const listed = await b.offlineFiles();
    assert.deepEqual(listed.map((t) => [t.task_id, t.upload_id, t.name]), [[offline.task_id, uploadId, 'later.bin']]);
    const file = await b.download(listed[0].upload_id ?? '').done;
    assert.equal(await blobSha256(file), sha256(fileBytes));
    await b.ackOfflineFile(offline.task_id);
    assert.deepEqual(await b.offlineFiles(), []);
    for (const [who, pushes] of [['alice', aTransfers], ['bob', bTransfers]]) {
      await until(() => pushes.some((t) => t.task_id === offline.task_id && t.state === 'done'), `${who}'s offline done push`);
    }
    // The acknowledged file is out of the receiver's reach.
    await assert.rejects(b.download(uploadId).done, (e) => e.code === 'forbidden');
  });
});
