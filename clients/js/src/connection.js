// The chat connection: one WebSocket kept alive (heartbeat, reconnect with
// backoff and `auth`), requests matched to replies, pushes turned into
// deduplicated events, and catch-up by cursors after every (re)connect.

import { Emitter } from './emitter.js';
import { ImlogError, backoffMs, envelope } from './errors.js';
import { Outbox } from './outbox.js';
import { memoryStore, readJson } from './store.js';

/** @typedef {import('./types.js').Message} Message */
/** @typedef {import('./types.js').Thread} Thread */
/** @typedef {import('./types.js').Pushes} Pushes */
/** @typedef {import('./store.js').Store} Store */
/** @typedef {import('./outbox.js').OutgoingMessage} OutgoingMessage */

/**
 * `connecting`: opening a socket; `online`: logged in, requests flow;
 * `anonymous`: connected, not logged in (register/login only);
 * `offline`: lost, reconnecting after `retry_in` ms; `ended`: closed for good
 * (logout, kicked, token refused, or `close()`).
 * @typedef {'idle' | 'connecting' | 'anonymous' | 'online' | 'offline' | 'ended'} ConnectionState
 */

/**
 * @typedef {{user_id: number, session_id: string, token: string, name?: string, expires_at?: string}} Session
 */

/**
 * Events: every push of docs/PROTOCOL.md by its name (`message` deduplicated,
 * and also fed by catch-up), plus the client's own.
 * @typedef {Pushes & {
 *   state: {state: ConnectionState, retry_in?: number, reason?: string},
 *   ended: {code: string, reason: string},
 *   synced: {threads: Thread[]},
 *   outgoing: OutgoingMessage,
 * }} ClientEvents
 */

/** Ops that work before `login`/`auth`. */
const ANONYMOUS_OPS = new Set(['register', 'login', 'auth', 'ping']);
/** How long after going online catch-up looks again (see `_goOnline`). */
const RECHECK_MS = 1_500;
/** Close codes after which reconnecting with the same token is wrong. */
const FINAL_CLOSE = new Map([
  [4001, 'kicked'],
  [4002, 'session_ended'],
]);

/**
 * @extends {Emitter<ClientEvents>}
 */
export class Connection extends Emitter {
  /**
   * @param {object} [options]
   * @param {string} [options.url] the server's HTTP address (`http://host:8080`);
   *   in a page, the page's origin
   * @param {string} [options.device] recorded with the session at login
   * @param {Store} [options.store] where tokens, cursors and the outbox are kept
   * @param {typeof WebSocket} [options.WebSocket] a WebSocket class (Node.js
   *   without `--experimental-websocket`: the `ws` package's)
   * @param {number} [options.heartbeatMs] ping interval (10 s)
   * @param {number} [options.requestTimeoutMs] a request without a reply
   *   this long fails with `timeout` and the socket is replaced (20 s)
   * @param {number} [options.reconnectMinMs] first reconnect delay (250 ms)
   * @param {number} [options.reconnectMaxMs] longest reconnect delay (10 s)
   */
  constructor(options = {}) {
    super();
    const origin = options.url ?? globalThis.location?.origin;
    if (!origin) throw new TypeError('imlog: `url` is required outside a page');
    /** The server's HTTP base address, without a trailing slash. */
    this.url = origin.replace(/\/+$/, '');
    this.device = options.device ?? 'js-sdk';
    this.store = options.store ?? memoryStore();
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this._WebSocket) throw new TypeError('imlog: no WebSocket class available');
    this.heartbeatMs = options.heartbeatMs ?? 10_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 20_000;
    this.reconnectMinMs = options.reconnectMinMs ?? 250;
    this.reconnectMaxMs = options.reconnectMaxMs ?? 10_000;

    /** @type {ConnectionState} */
    this.state = 'idle';
    /** @type {Session | null} */
    this.session = null;
    /** @type {WebSocket | null} */
    this._socket = null;
    /** @type {Promise<void> | null} resolves when the current socket is open */
    this._opening = null;
    this._nextReq = 1;
    /** @type {Map<number, {resolve: (data: any) => void, reject: (e: ImlogError) => void, timer: any}>} */
    this._pending = new Map();
    /** @type {Array<{resolve: (value?: any) => void, reject: (e: ImlogError) => void}>} */
    this._onlineWaiters = [];
    this._reconnectAttempt = 0;
    /** @type {any} */
    this._reconnectTimer = null;
    /** @type {any} */
    this._heartbeat = null;
    /** @type {any} the second catch-up after going online */
    this._recheckTimer = null;
    this._lastFrameAt = 0;
    /** Last message id synced, per thread. @type {Record<string, number>} */
    this._cursors = {};
    /** Ids of messages pushed past their thread's cursor, per thread; kept
     * in the store so that catch-up after a reload does not deliver them
     * again. @type {Record<string, number[]>} */
    this._ahead = {};
    /** Recently delivered messages, `thread:sender:unique_id`, oldest first. @type {Set<string>} */
    this._seen = new Set();
    /** Threads whose pushes arrived since their cursor moved. @type {Map<number, any>} */
    this._cursorTimers = new Map();
    this.outbox = new Outbox(this);
  }

  /** The logged-in user's id, or null. */
  get userId() {
    return this.session?.user_id ?? null;
  }

  // ---- session ---------------------------------------------------------

  /** Creates an account (no login). @param {string} name @param {string} password
   * @returns {Promise<{user_id: number}>} */
  async register(name, password) {
    return this.request('register', { name, password });
  }

  /** Logs in on this client's connection; a newer login elsewhere kicks this one.
   * @param {string} name @param {string} password @returns {Promise<Session>} */
  async login(name, password) {
    if (this.session) throw new ImlogError('bad_request', 'already logged in: logout() first');
    /** @type {Session} */
    const session = await this.request('login', { name, password, device: this.device });
    session.name = name.trim().toLowerCase();
    this._begin(session);
    this._goOnline();
    return session;
  }

  /**
   * Resumes a saved session (`auth`): after a page reload, or with a token
   * from `saved()`. Rejects with `bad_token` (and ends) if it is over.
   * @param {Session} [session] defaults to the one kept in the store
   * @returns {Promise<Session>}
   */
  async resume(session = readJson(this.store, 'session', undefined)) {
    if (!session) throw new ImlogError('ended', 'no saved session');
    this._begin(session);
    // A server that is down now is retried with backoff until it is up.
    this._connect().catch(() => {});
    await this.whenOnline();
    return session;
  }

  /** The session kept in the store, if any. @returns {Session | null} */
  saved() {
    return readJson(this.store, 'session', null);
  }

  /** Ends the session everywhere and closes the connection. */
  async logout() {
    try {
      if (this.state === 'online') await this.request('logout', {});
    } finally {
      this._end('logged_out', 'you logged out');
    }
  }

  /** Closes the connection without ending the session (it can be resumed). */
  close() {
    this._end('closed', 'closed by the app', { keepSession: true });
  }

  /** Resolves once logged in and connected; rejects if the session ends. */
  whenOnline() {
    if (this.state === 'online') return Promise.resolve();
    if (this.state === 'ended') return Promise.reject(new ImlogError('ended', 'the session is over'));
    return new Promise((resolve, reject) => this._onlineWaiters.push({ resolve, reject }));
  }

  /** @param {Session} session */
  _begin(session) {
    this.session = session;
    this.store.set('session', JSON.stringify(session));
    this._cursors = readJson(this.store, this._key('cursors'), {});
    this._ahead = readJson(this.store, this._key('ahead'), {});
    this.outbox.load();
  }

  /** @param {string} what */
  _key(what) {
    return `${what}.${this.session?.user_id ?? 0}`;
  }

  // ---- requests --------------------------------------------------------

  /**
   * Sends one request and resolves with its `data`, or rejects with an
   * `ImlogError`. Ops that need a login wait until the client is online
   * (through reconnects); a reply lost to a dropped connection rejects with
   * `disconnected`.
   * @param {string} op
   * @param {Record<string, unknown>} [fields]
   * @returns {Promise<any>}
   */
  async request(op, fields = {}) {
    if (ANONYMOUS_OPS.has(op)) {
      await this._connect();
    } else {
      if (!this.session) throw new ImlogError('unauthenticated', `${op} needs login() first`);
      await this.whenOnline();
    }
    return this._send(op, fields);
  }

  /** @param {string} op @param {Record<string, unknown>} fields @returns {Promise<any>} */
  _send(op, fields) {
    const socket = this._socket;
    if (!socket || socket.readyState !== 1) {
      return Promise.reject(new ImlogError('disconnected', 'not connected'));
    }
    const req = this._nextReq++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(req);
        reject(new ImlogError('timeout', `no reply to ${op} within ${this.requestTimeoutMs} ms`));
        // A silent server: replace the socket rather than wait on it.
        if (this._socket === socket) socket.close(4100, 'request timeout');
      }, this.requestTimeoutMs);
      this._pending.set(req, { resolve, reject, timer });
      socket.send(JSON.stringify({ ...fields, req, op }));
    });
  }

  /**
   * Calls an HTTP endpoint of the server with the session's token.
   * @param {string} method
   * @param {string} path
   * @param {{json?: unknown, body?: BodyInit, headers?: Record<string, string>, signal?: AbortSignal}} [init]
   * @returns {Promise<any>} the reply's `data`
   */
  async http(method, path, init = {}) {
    const response = await this.fetch(method, path, init);
    return envelope(response);
  }

  /**
   * The raw `fetch` of an HTTP endpoint with the session's token.
   * @param {string} method
   * @param {string} path
   * @param {{json?: unknown, body?: BodyInit, headers?: Record<string, string>, signal?: AbortSignal}} [init]
   * @returns {Promise<Response>}
   */
  async fetch(method, path, init = {}) {
    if (!this.session) throw new ImlogError('unauthenticated', 'log in first');
    /** @type {Record<string, string>} */
    const headers = { authorization: `Bearer ${this.session.token}`, ...init.headers };
    let body = init.body;
    if (init.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(init.json);
    }
    try {
      return await fetch(this.url + path, { method, headers, body, signal: init.signal });
    } catch (e) {
      if (init.signal?.aborted) throw new ImlogError('aborted', 'aborted');
      throw new ImlogError('disconnected', `cannot reach the server: ${/** @type {Error} */ (e).message}`);
    }
  }

  // ---- the connection --------------------------------------------------

  /** Opens a socket unless one is open or opening. @returns {Promise<void>} */
  _connect() {
    if (this.state === 'ended') this.state = 'idle';
    if (this._socket && this._socket.readyState === 1) return Promise.resolve();
    if (this._opening) return this._opening;
    clearTimeout(this._reconnectTimer);
    this._setState('connecting');
    const wsUrl = this.url.replace(/^http/, 'ws') + '/ws';
    const socket = new this._WebSocket(wsUrl);
    this._socket = socket;
    let opened = false;
    let gone = false;
    /** @type {Promise<void>} */
    const opening = new Promise((resolve, reject) => {
      /** Once per socket, whatever reports it first. @param {number} code @param {string} reason */
      const closed = (code, reason) => {
        if (gone) return;
        gone = true;
        clearTimeout(connectTimer);
        if (!opened) {
          if (this._opening === opening) this._opening = null;
          reject(new ImlogError('disconnected', `cannot connect to ${wsUrl}`));
        }
        this._onClose(socket, code, reason);
      };
      // A connect that hangs (a silent address) is given up like a request.
      const connectTimer = setTimeout(() => {
        closed(1006, 'connect timeout');
        socket.close();
      }, this.requestTimeoutMs);
      socket.onopen = () => {
        opened = true;
        clearTimeout(connectTimer);
        if (this._opening === opening) this._opening = null;
        if (this._socket !== socket) return;
        this._lastFrameAt = Date.now();
        this._startHeartbeat();
        if (this.session) {
          this._authenticate(socket);
        } else {
          this._setState('anonymous');
        }
        resolve();
      };
      socket.onmessage = (event) => this._onFrame(event.data);
      socket.onclose = (event) => closed(event.code, event.reason);
      socket.onerror = () => {
        // Browsers follow a failed connect with `close`; some WebSocket
        // classes do not (Node 20's undici, nodejs/undici#3546): without
        // this the client would wait for a `close` that never comes.
        if (!opened) closed(1006, 'cannot connect');
      };
    });
    this._opening = opening;
    // A failed first connect is reported to whoever awaited it; reconnects
    // are driven by `_onClose`.
    opening.catch(() => {});
    return opening;
  }

  /** @param {WebSocket} socket */
  async _authenticate(socket) {
    const session = /** @type {Session} */ (this.session);
    try {
      await this._send('auth', { token: session.token });
    } catch (e) {
      const error = /** @type {ImlogError} */ (e);
      if (error.code === 'bad_token') {
        // Whoever waits to be online (`resume`) learns why: `bad_token`.
        this._end('bad_token', 'the session is over: log in again', { error });
      } else if (this._socket === socket) {
        socket.close(4100, 'auth failed');
      }
      return;
    }
    if (this._socket !== socket) return;
    this._goOnline();
  }

  _goOnline() {
    this._reconnectAttempt = 0;
    this._setState('online');
    for (const waiter of this._onlineWaiters.splice(0)) waiter.resolve();
    const catchUp = () =>
      this._catchUp().catch((e) => {
        // A dropped connection catches up again when back; an ended one never.
        const expected = e instanceof ImlogError && (e.retryable || e.code === 'ended');
        if (!expected) console.warn('imlog: catch-up failed', e);
      });
    catchUp();
    // A message posted just before we came back may not be readable on this
    // connection yet (others' writes show "moments later"), and its push
    // went to nobody: look once more, shortly.
    clearTimeout(this._recheckTimer);
    this._recheckTimer = setTimeout(() => {
      if (this.state === 'online') catchUp();
    }, RECHECK_MS);
    this.outbox.flush();
  }

  /** @param {WebSocket} socket @param {number} code @param {string} reason */
  _onClose(socket, code, reason) {
    if (this._socket !== socket) return;
    this._socket = null;
    this._stopHeartbeat();
    for (const [req, pending] of this._pending) {
      clearTimeout(pending.timer);
      pending.reject(new ImlogError('disconnected', 'the connection closed before the reply'));
      this._pending.delete(req);
    }
    this.outbox.disconnected();
    if (this.state === 'ended') return;
    const final = FINAL_CLOSE.get(code);
    if (final) {
      this._end(final, reason || final);
      return;
    }
    if (!this.session) {
      // Nothing to resume: the next request reconnects.
      this._setState('idle');
      return;
    }
    const delay = backoffMs(this._reconnectAttempt++, this.reconnectMinMs, this.reconnectMaxMs);
    this._setState('offline', { retry_in: delay, reason: `closed (${code}${reason ? `: ${reason}` : ''})` });
    this._reconnectTimer = setTimeout(() => {
      this._connect().catch(() => {});
    }, delay);
  }

  /**
   * @param {string} code @param {string} reason
   * @param {{keepSession?: boolean, error?: ImlogError}} [options] `error`:
   *   what `whenOnline` waiters reject with (default `ended`)
   */
  _end(code, reason, options = {}) {
    const wasEnded = this.state === 'ended';
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._recheckTimer);
    this._stopHeartbeat();
    for (const timer of this._cursorTimers.values()) clearTimeout(timer);
    this._cursorTimers.clear();
    this.outbox.stop();
    const socket = this._socket;
    this._socket = null;
    this._opening = null;
    if (socket && socket.readyState <= 1) socket.close(1000, reason);
    for (const pending of this._pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new ImlogError('ended', reason));
    }
    this._pending.clear();
    if (!options.keepSession) {
      // A tab sharing the store may have logged in since (that is what
      // kicks this one): its session stays.
      if (this.saved()?.token === this.session?.token) this.store.remove('session');
      this.session = null;
    }
    this._setState('ended', { reason });
    const error = options.error ?? new ImlogError('ended', reason);
    for (const waiter of this._onlineWaiters.splice(0)) waiter.reject(error);
    if (!wasEnded) this.emit('ended', { code, reason });
  }

  /** @param {ConnectionState} state @param {{retry_in?: number, reason?: string}} [detail] */
  _setState(state, detail = {}) {
    this.state = state;
    this.emit('state', { state, ...detail });
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    this._heartbeat = setInterval(() => {
      const socket = this._socket;
      if (!socket || socket.readyState !== 1) return;
      if (Date.now() - this._lastFrameAt > 3 * this.heartbeatMs) {
        // Nothing heard, not even ping replies: the path is dead.
        socket.close(4100, 'heartbeat lost');
        return;
      }
      this._send('ping', {}).catch(() => {});
    }, this.heartbeatMs);
  }

  _stopHeartbeat() {
    clearInterval(this._heartbeat);
    this._heartbeat = null;
  }

  /** @param {unknown} data */
  _onFrame(data) {
    this._lastFrameAt = Date.now();
    if (typeof data !== 'string') return;
    /** @type {any} */
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame && typeof frame.push === 'string') {
      this._onPush(frame.push, frame.data);
      return;
    }
    const pending = this._pending.get(frame?.req);
    if (!pending) return;
    this._pending.delete(frame.req);
    clearTimeout(pending.timer);
    if (frame.ok) {
      pending.resolve(frame.data);
    } else {
      const error = frame.error ?? {};
      pending.reject(new ImlogError(error.code ?? 'internal', error.message ?? 'request failed'));
    }
  }

  /** @param {string} name @param {any} data */
  _onPush(name, data) {
    switch (name) {
      case 'message':
        if (this._deliver(data)) {
          this._noteAhead(data);
          this._touchCursor(data.thread_id);
        }
        return;
      case 'thread':
        // A new thread: everything in it is news, from its first message.
        if (!(data.thread_id in this._cursors)) this._setCursor(data.thread_id, 0);
        break;
      case 'kicked':
        this.emit('kicked', data);
        return;
    }
    this.emit(/** @type {keyof Pushes} */ (name), data);
  }

  /** Emits a message unless it was delivered already. @param {Message} message */
  _deliver(message) {
    const key = `${message.thread_id}:${message.sender_id}:${message.unique_id}`;
    if (this._seen.has(key)) return false;
    this._remember(key);
    // One of ours still waiting for its reply (sync may show it first, e.g.
    // a resend after a lost reply): the outbox reports it, as `outgoing`.
    if (message.sender_id === this.userId && this.outbox.items.has(message.unique_id)) return false;
    this.emit('message', message);
    return true;
  }

  /** @param {string} key */
  _remember(key) {
    this._seen.add(key);
    if (this._seen.size > 20_000) {
      const oldest = this._seen.values().next().value;
      if (oldest !== undefined) this._seen.delete(oldest);
    }
  }

  // ---- catch-up by cursors ---------------------------------------------

  /** All threads, then every known thread's messages after its cursor. */
  async _catchUp() {
    const threads = await this.threads();
    for (const thread of threads) {
      if (thread.thread_id in this._cursors) {
        const last = thread.last_message?.message_id ?? 0;
        if (last > this._cursors[thread.thread_id]) await this._syncThread(thread.thread_id);
      } else {
        // First sight on this device: history is for scrollback, not news.
        this._setCursor(thread.thread_id, thread.last_message?.message_id ?? 0);
      }
    }
    this.emit('synced', { threads });
  }

  /** Delivers a thread's messages after its cursor and moves the cursor. @param {number} threadId */
  async _syncThread(threadId) {
    let since = this._cursors[threadId] ?? 0;
    for (;;) {
      /** @type {import('./types.js').Page<Message>} */
      const page = await this.request('sync_messages', { thread_id: threadId, since, limit: 100 });
      const ahead = this._ahead[threadId] ?? [];
      for (const message of page.items) {
        if (!ahead.includes(message.message_id)) this._deliver(message);
      }
      if (page.items.length) since = page.next_cursor;
      this._setCursor(threadId, since);
      if (!page.load_more) return;
    }
  }

  /** Pushes do not move a cursor (they may skip); a sync 2 s after the
   * first of them does. @param {number} threadId */
  _touchCursor(threadId) {
    // One sync at most every 2 s while pushes keep coming (a timer that
    // every push reset would never fire in a busy thread).
    if (!(threadId in this._cursors) || this._cursorTimers.has(threadId)) return;
    this._cursorTimers.set(
      threadId,
      setTimeout(() => {
        this._cursorTimers.delete(threadId);
        if (this.state === 'online') this._syncThread(threadId).catch(() => {});
      }, 2_000),
    );
  }

  /** Moves a thread's cursor forward (never back: syncs may overlap).
   * @param {number} threadId @param {number} messageId */
  _setCursor(threadId, messageId) {
    const cursor = this._cursors[threadId];
    if (cursor !== undefined && messageId <= cursor) return;
    this._cursors[threadId] = messageId;
    this.store.set(this._key('cursors'), JSON.stringify(this._cursors));
    const ahead = this._ahead[threadId];
    if (ahead) {
      const rest = ahead.filter((id) => id > messageId);
      if (rest.length) this._ahead[threadId] = rest;
      else delete this._ahead[threadId];
      this.store.set(this._key('ahead'), JSON.stringify(this._ahead));
    }
  }

  /** Notes a pushed message past its thread's cursor. @param {Message} message */
  _noteAhead(message) {
    const cursor = this._cursors[message.thread_id];
    if (cursor === undefined || message.message_id <= cursor) return;
    (this._ahead[message.thread_id] ??= []).push(message.message_id);
    this.store.set(this._key('ahead'), JSON.stringify(this._ahead));
  }

  // ---- reads -----------------------------------------------------------

  /** Every thread you are in, with unread counts and last messages.
   * @returns {Promise<Thread[]>} */
  async threads() {
    /** @type {Thread[]} */
    const all = [];
    let after = 0;
    for (;;) {
      /** @type {import('./types.js').Page<Thread>} */
      const page = await this.request('sync_threads', { after, limit: 100 });
      all.push(...page.items);
      if (!page.load_more) return all;
      after = page.next_cursor;
    }
  }

  /**
   * One page of a thread's messages, ascending: after `since` (default 0,
   * the oldest), or with `before` the page just before that message.
   * @param {number} threadId
   * @param {{since?: number, before?: number, limit?: number}} [page]
   * @returns {Promise<import('./types.js').Page<Message>>}
   */
  messages(threadId, page = {}) {
    return this.request('sync_messages', { thread_id: threadId, ...page });
  }

  /**
   * The newest `limit` messages of a thread (to open a chat view); scroll
   * back with `messages(id, {before: page.next_cursor})` while `load_more`.
   * @param {number} threadId @param {number} [limit]
   * @returns {Promise<import('./types.js').Page<Message>>}
   */
  latest(threadId, limit = 30) {
    return this.messages(threadId, { before: Number.MAX_SAFE_INTEGER, limit });
  }

  // ---- writes ----------------------------------------------------------

  /**
   * Queues a message for a thread and returns it at once (state `sending`);
   * it is sent when online, resent with the same `unique_id` after a lost
   * reply, and ends `sent` (with `message_id`) or `failed` — see the
   * `outgoing` event and `outbox`.
   * @param {number} threadId
   * @param {string | {body?: string, kind?: 'image' | 'file' | 'video', upload_id?: string, preview?: string}} content
   * @returns {OutgoingMessage}
   */
  send(threadId, content) {
    const item = typeof content === 'string' ? { body: content } : content;
    return this.outbox.add(threadId, item);
  }

  /** Marks a thread read up to a message. @param {number} threadId @param {number} upTo */
  markRead(threadId, upTo) {
    return this.request('mark_read', { thread_id: threadId, up_to: upTo });
  }

  /** @param {number} threadId @param {number} messageId */
  recall(threadId, messageId) {
    return this.request('recall', { thread_id: threadId, message_id: messageId });
  }
}

