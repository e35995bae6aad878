// One open chat: its messages (scrollback on demand), sending → sent →
// read states, recall, images and files, and for groups the member panel.

import { kindOf } from '/sdk/index.js';
import { explain, fill, formatTime, h, toast } from './dom.js';
import { imagePreview, mediaView } from './media.js';

/** How long after sending a message the Recall button is offered (the
 * server's default window; it has the last word). */
const RECALL_WINDOW_MS = 120_000;

export class ChatView {
  /** @param {import('./main.js').App} app @param {any} thread */
  constructor(app, thread) {
    this.app = app;
    this.client = app.client;
    this.thread = thread;
    /** Rows by message id, and by unique id for our own. @type {Map<number, any>} */
    this.byId = new Map();
    /** @type {Map<string, any>} */
    this.byUnique = new Map();
    /** Read markers of the other members. @type {Map<number, number>} */
    this.readers = new Map();
    this.oldest = null;
    this.loadMore = false;
    this.header = h('header', { class: 'chat-head' });
    this.list = h('div', { class: 'messages', 'data-test': 'messages', tabindex: 0 });
    this.older = h('button', { class: 'small older hidden', 'data-test': 'load-older', onclick: () => this.loadOlder() }, 'Load older messages');
    this.list.append(this.older);
    this.list.addEventListener('scroll', () => {
      if (this.list.scrollTop < 40 && this.loadMore && !this.loadingOlder) this.loadOlder();
    });
    this.input = h('textarea', { rows: 1, placeholder: 'Message', 'aria-label': 'Message', 'data-test': 'composer', maxlength: 1024,
      onkeydown: (/** @type {KeyboardEvent} */ e) => {
        if (e.key === 'Enter' && !e.shiftKey) {
          e.preventDefault();
          this.sendText();
        }
      } });
    this.fileInput = h('input', { type: 'file', class: 'hidden', 'data-test': 'attach-input',
      onchange: () => {
        const file = this.fileInput.files?.[0];
        this.fileInput.value = '';
        if (file) this.sendFile(file);
      } });
    this.panel = h('div', { class: 'side-panel hidden' });
    this.element = h('section', { class: 'chat', 'data-test': 'chat', 'data-thread': thread.thread_id },
      this.header,
      h('div', { class: 'chat-body' }, this.list, this.panel),
      h('footer', { class: 'composer' },
        h('button', { class: 'icon attach', title: 'Send a picture or file', 'aria-label': 'Attach a picture or file', 'data-test': 'attach', onclick: () => this.fileInput.click() }, '+'),
        this.fileInput, this.input,
        h('button', { class: 'primary', 'data-test': 'send', onclick: () => this.sendText() }, 'Send')));
    this._onVisible = () => this.markRead();
    document.addEventListener('visibilitychange', this._onVisible);
    this.renderHeader();
  }

  get isGroup() {
    return this.thread.kind === 'group';
  }

  renderHeader() {
    const t = this.thread;
    const peer = t.peer ? this.app.users.profiles.get(t.peer.user_id) : null;
    const sub = this.isGroup ? `${t.members ?? ''} members`
      : peer?.online ? 'online'
      : peer?.last_seen ? `last seen ${formatTime(peer.last_seen)}` : '';
    fill(this.header,
      h('button', { class: 'icon back', 'aria-label': 'Back to chats', onclick: () => this.app.closeChat() }, '←'),
      this.isGroup ? h('span', { class: 'avatar small group' }, '#') : this.app.users.avatar(peer),
      h('div', { class: 'chat-title' },
        h('strong', { 'data-test': 'chat-title' }, this.app.threads.title(t)),
        h('span', { class: 'muted', 'data-test': 'chat-presence' }, sub)),
      this.isGroup
        ? h('button', { class: 'small', 'data-test': 'group-info', onclick: () => this.toggleGroupPanel() }, 'Members')
        : h('button', { class: 'small', 'data-test': 'offer-file', onclick: () => peer && this.app.transfers.pickAndOffer(peer.user_id) }, 'Send file…'));
  }

  async load() {
    const page = await this.client.latest(this.thread.thread_id, 30);
    for (const m of page.items) this._place(m, 'end');
    this.loadMore = page.load_more;
    this.oldest = page.items[0]?.message_id ?? null;
    this.older.classList.toggle('hidden', !this.loadMore);
    // Our own messages still on their way.
    for (const item of this.client.outbox.pending()) if (item.thread_id === this.thread.thread_id) this.onOutgoing(item);
    this.scrollToEnd();
    await this.loadReceipts();
    this.markRead();
    this.input.focus();
  }

  async loadOlder() {
    if (!this.oldest) return;
    this.loadingOlder = true;
    try {
      const before = this.list.scrollHeight;
      const page = await this.client.messages(this.thread.thread_id, { before: this.oldest, limit: 30 });
      for (const m of [...page.items].reverse()) this._place(m, 'start');
      this.loadMore = page.load_more;
      this.oldest = page.items[0]?.message_id ?? this.oldest;
      this.older.classList.toggle('hidden', !this.loadMore);
      this.list.scrollTop += this.list.scrollHeight - before;
    } catch (e) {
      toast(explain(e), 'error');
    } finally {
      this.loadingOlder = false;
    }
  }

  async loadReceipts() {
    try {
      let after = 0;
      for (;;) {
        const page = await this.client.readReceipts(this.thread.thread_id, { after, limit: 100 });
        for (const r of page.items) if (r.user_id !== this.client.userId) this.readers.set(r.user_id, r.up_to);
        if (!page.load_more) break;
        after = page.next_cursor;
      }
      this._refreshStatuses();
    } catch {
      // receipts are a nicety
    }
  }

  sendText() {
    const body = this.input.value.trim();
    if (!body) return;
    this.input.value = '';
    this.client.send(this.thread.thread_id, body);
  }

  /** @param {File} file */
  async sendFile(file) {
    const kind = /** @type {'image' | 'file' | 'video'} */ (kindOf(file.type || 'application/octet-stream'));
    const preview = kind === 'image' ? await imagePreview(file) : undefined;
    const upload = this.client.upload(file, { kind });
    const threadId = this.thread.thread_id;
    const declared = () => {
      if (!upload.uploadId || this.app.uploads.has(upload.uploadId)) return;
      this.app.uploads.set(upload.uploadId, upload);
      this.client.send(threadId, { kind, upload_id: upload.uploadId, body: '', preview });
    };
    upload.on('state', ({ state, error }) => {
      if (state === 'failed') toast(`Upload of ${file.name} failed: ${explain(error)}`, 'error');
      declared();
    });
    upload.on('progress', declared);
  }

  /** Someone else's message, or one of ours seen through sync. @param {any} m */
  onMessage(m) {
    if (m.thread_id !== this.thread.thread_id) return;
    this._place(m, 'end');
    this.scrollToEnd();
    this.markRead();
  }

  /** @param {any} item an outgoing message in any state */
  onOutgoing(item) {
    if (item.thread_id !== this.thread.thread_id) return;
    const row = this.byUnique.get(item.unique_id);
    const data = { ...item, sender_id: this.client.userId, created_at: item.queued_at };
    if (row) {
      row.data = { ...row.data, ...data };
      if (item.message_id) this.byId.set(item.message_id, row);
      this._render(row);
    } else {
      this._place(data, 'end');
      this.scrollToEnd();
    }
  }

  /** @param {{thread_id: number, user_id: number, up_to: number}} r */
  onRead(r) {
    if (r.thread_id !== this.thread.thread_id || r.user_id === this.client.userId) return;
    this.readers.set(r.user_id, Math.max(this.readers.get(r.user_id) ?? 0, r.up_to));
    this._refreshStatuses();
  }

  /** @param {{thread_id: number, message_id: number}} r */
  onRecalled(r) {
    const row = this.byId.get(r.message_id);
    if (r.thread_id !== this.thread.thread_id || !row) return;
    row.data = { ...row.data, recalled: true, body: '', media: undefined };
    this._render(row);
  }

  /** @param {{thread_id: number, message_id: number, upload_id: string, state: string}} m */
  onMediaSettled(m) {
    const row = this.byId.get(m.message_id);
    if (m.thread_id !== this.thread.thread_id || !row) return;
    // Our own message, shown from the outbox, has no `media` yet.
    const upload = this.app.uploads.get(m.upload_id);
    const media = row.data.media ?? { upload_id: m.upload_id, preview: row.data.preview, name: upload?.blob.name ?? '', size: upload?.blob.size ?? 0 };
    row.data = { ...row.data, media: { ...media, state: m.state } };
    this._render(row);
  }

  /** Adds a message (or updates the row that shows it). @param {any} m @param {'start' | 'end'} where */
  _place(m, where) {
    let row = (m.message_id && this.byId.get(m.message_id)) || (m.sender_id === this.client.userId && this.byUnique.get(m.unique_id));
    if (row) {
      row.data = { ...row.data, ...m, state: m.message_id ? 'sent' : row.data.state };
      if (m.message_id) this.byId.set(m.message_id, row);
      this._render(row);
      return;
    }
    row = { data: m, el: h('div', {}) };
    if (m.message_id) this.byId.set(m.message_id, row);
    if (m.sender_id === this.client.userId) this.byUnique.set(m.unique_id, row);
    this._render(row);
    if (where === 'start') this.older.after(row.el);
    else this.list.append(row.el);
    if (this.isGroup && m.sender_id !== this.client.userId && !this.app.users.profiles.has(m.sender_id)) {
      this.app.users.load(m.sender_id).then(() => this._render(row), () => {});
    }
  }

  /** @param {any} row */
  _render(row) {
    const m = row.data;
    const mine = m.sender_id === this.client.userId;
    const system = m.kind === 'system';
    const el = h('div', {
      class: `msg ${system ? 'system' : mine ? 'mine' : 'theirs'}`,
      'data-test': 'message', 'data-id': m.message_id ?? '', 'data-unique': m.unique_id,
    });
    if (system) {
      el.append(h('div', { class: 'bubble', 'data-test': 'body' }, m.body));
    } else {
      if (this.isGroup && !mine) el.append(h('div', { class: 'sender' }, this.app.users.label(m.sender_id)));
      const bubble = h('div', { class: 'bubble' });
      if (m.recalled) {
        bubble.append(h('em', { class: 'muted', 'data-test': 'recalled' }, mine ? 'You recalled a message' : 'Message recalled'));
      } else {
        if (m.kind !== 'text' && (m.media || m.upload_id)) bubble.append(mediaView(this.app, m));
        if (m.body) bubble.append(h('div', { class: 'body', 'data-test': 'body' }, m.body));
      }
      el.append(bubble);
      const meta = h('div', { class: 'meta' }, h('time', {}, m.created_at ? formatTime(m.created_at) : ''));
      if (mine && !m.recalled) {
        meta.append(h('span', { class: 'status', 'data-test': 'status' }, this._status(m)));
        const age = Date.now() - Date.parse(m.created_at ?? '');
        if (m.message_id && !(age > RECALL_WINDOW_MS)) {
          meta.append(h('button', { class: 'link', 'data-test': 'recall', onclick: () => this.recall(m.message_id) }, 'Recall'));
        }
      }
      el.append(meta);
    }
    row.el.replaceWith(el);
    row.el = el;
  }

  /** @param {any} m */
  _status(m) {
    if (m.state === 'failed') return 'failed';
    if (!m.message_id) return 'sending…';
    const readBy = [...this.readers.values()].filter((upTo) => upTo >= m.message_id).length;
    if (!readBy) return 'sent';
    return this.isGroup ? `read by ${readBy}` : 'read';
  }

  _refreshStatuses() {
    for (const row of this.byUnique.values()) {
      const status = row.el.querySelector('[data-test="status"]');
      if (status) status.textContent = this._status(row.data);
    }
  }

  /** @param {number} messageId */
  async recall(messageId) {
    try {
      await this.client.recall(this.thread.thread_id, messageId);
      this.onRecalled({ thread_id: this.thread.thread_id, message_id: messageId });
    } catch (e) {
      toast(explain(e), 'error');
    }
  }

  /** Tells the others we read up to the newest message, when we can see it. */
  markRead() {
    if (document.visibilityState === 'hidden') return;
    let newest = 0;
    for (const id of this.byId.keys()) newest = Math.max(newest, id);
    if (!newest || newest <= (this.readUpTo ?? 0)) return;
    this.readUpTo = newest;
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(() => this.client.markRead(this.thread.thread_id, newest).catch(() => {}), 250);
  }

  scrollToEnd() {
    this.list.scrollTop = this.list.scrollHeight;
  }

  async toggleGroupPanel() {
    const hidden = this.panel.classList.toggle('hidden');
    if (hidden) return;
    const { groupPanel } = await import('./group.js');
    fill(this.panel, await groupPanel(this.app, this));
  }

  close() {
    document.removeEventListener('visibilitychange', this._onVisible);
    clearTimeout(this.readTimer);
  }
}
