// The thread list: every chat with its unread count, last message and, for
// a private chat, the other person's presence. Newest activity first.

import { formatTime, h } from './dom.js';

export class Threads {
  /** @param {import('./main.js').App} app */
  constructor(app) {
    this.app = app;
    /** @type {Map<number, any>} */
    this.map = new Map();
    /** @type {number | null} */
    this.openId = null;
    this.list = h('ul', { class: 'threads', 'data-test': 'threads' });
  }

  async load() {
    this.replace(await this.app.client.threads());
  }

  /** @param {any[]} threads */
  replace(threads) {
    this.map = new Map(threads.map((t) => [t.thread_id, t]));
    if (this.openId != null) {
      const open = this.map.get(this.openId);
      if (open) open.unread = 0;
    }
    // Peers' profiles for names and presence.
    for (const t of threads) {
      if (t.peer) this.app.users.load(t.peer.user_id).then(() => this.rerender(), () => {});
    }
    this.rerender();
  }

  /** @param {number} id */
  get(id) {
    return this.map.get(id);
  }

  /** @param {any} thread */
  title(thread) {
    if (thread.kind === 'group') return thread.name ?? `Group ${thread.thread_id}`;
    return thread.peer ? this.app.users.label(thread.peer.user_id) : 'Chat';
  }

  unreadTotal() {
    let n = 0;
    for (const t of this.map.values()) if (t.thread_id !== this.openId) n += t.unread || 0;
    return n;
  }

  /** @param {number | null} id */
  markOpen(id) {
    this.openId = id;
    const thread = id == null ? null : this.map.get(id);
    if (thread) thread.unread = 0;
    this.rerender();
    this.app.refreshBadges();
  }

  /** Someone else's message (a push, or catch-up). @param {any} m */
  onMessage(m) {
    const thread = this.map.get(m.thread_id);
    if (!thread) {
      this.load();
      return;
    }
    if (!thread.last_message || m.message_id >= thread.last_message.message_id) thread.last_message = m;
    if (m.thread_id !== this.openId && m.sender_id !== this.app.client.userId) thread.unread = (thread.unread || 0) + 1;
    this.rerender();
  }

  /** @param {any} item an outgoing message now sent */
  onOwnMessage(item) {
    const thread = this.map.get(item.thread_id);
    if (!thread) return;
    thread.last_message = {
      message_id: item.message_id, thread_id: item.thread_id, sender_id: this.app.client.userId,
      unique_id: item.unique_id, kind: item.kind, body: item.body, created_at: new Date().toISOString(),
    };
    this.rerender();
  }

  /** @param {{thread_id: number, message_id: number}} r */
  onRecalled(r) {
    const last = this.map.get(r.thread_id)?.last_message;
    if (last?.message_id === r.message_id) {
      last.recalled = true;
      last.body = '';
      this.rerender();
    }
  }

  view() {
    const newGroup = h('button', { class: 'small', 'data-test': 'new-group', onclick: () => import('./group.js').then((g) => g.createGroupDialog(this.app)) }, 'New group');
    this.rerender();
    return [h('div', { class: 'panel-head' }, h('h2', {}, 'Chats'), newGroup), this.list];
  }

  rerender() {
    const threads = [...this.map.values()].sort((a, b) => activity(b) - activity(a));
    this.list.replaceChildren(
      ...threads.map((t) => this._item(t)),
      ...(threads.length ? [] : [h('li', { class: 'muted' }, 'No chats yet: find people under People.')]),
    );
    this.app.refreshBadges();
  }

  /** @param {any} t */
  _item(t) {
    const peer = t.peer ? this.app.users.profiles.get(t.peer.user_id) : null;
    const last = t.last_message;
    const preview = !last ? (t.kind === 'group' ? `${t.members ?? ''} members` : 'No messages yet')
      : last.recalled ? 'Message recalled'
      : last.kind === 'image' ? `Picture${last.body ? `: ${last.body}` : ''}`
      : last.kind === 'file' || last.kind === 'video' ? `File: ${last.media?.name || last.body || ''}`
      : last.body;
    const unread = t.thread_id === this.openId ? 0 : t.unread;
    return h('li', {
      class: `thread${t.thread_id === this.openId ? ' open' : ''}`,
      'data-test': 'thread', 'data-thread': t.thread_id, tabindex: 0, role: 'button',
      onclick: () => this.app.openThread(t.thread_id),
      onkeydown: (/** @type {KeyboardEvent} */ e) => { if (e.key === 'Enter') this.app.openThread(t.thread_id); },
    },
      t.kind === 'group' ? h('span', { class: 'avatar small group' }, '#') : this.app.users.avatar(peer),
      h('div', { class: 'thread-text' },
        h('div', { class: 'thread-title' },
          peer ? h('span', { class: `dot ${peer.online ? 'on' : 'off'}`, title: peer.online ? 'online' : 'offline' }) : null,
          h('span', { 'data-test': 'thread-title' }, this.title(t)),
          last ? h('time', {}, formatTime(last.created_at)) : null),
        h('div', { class: 'thread-last' },
          h('span', { class: 'preview' }, preview),
          unread ? h('span', { class: 'badge', 'data-test': 'unread' }, String(unread)) : null)));
  }
}

/** When a thread last moved (ids of different threads are not in time order). @param {any} t */
function activity(t) {
  return Date.parse(t.last_message?.created_at ?? t.created_at) || 0;
}
