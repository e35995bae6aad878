// The web app's shell: log in (or resume the saved session), then a
// sidebar (chats, people, files, me) and the open chat. Every view talks to
// the server only through the SDK (/sdk/index.js).

import { ImlogClient, localStorageStore } from '/sdk/index.js';
import { authView } from './auth.js';
import { ChatView } from './chat.js';
import { explain, fill, h, toast } from './dom.js';
import { peopleView } from './people.js';
import { profileView } from './profile.js';
import { Threads } from './threads.js';
import { Transfers } from './transfers.js';
import { Users } from './users.js';

const STATE_LABELS = {
  idle: 'not connected',
  connecting: 'connecting…',
  anonymous: 'connected',
  online: 'online',
  offline: 'reconnecting…',
  ended: 'signed out',
};

export class App {
  constructor() {
    this.root = /** @type {HTMLElement} */ (document.getElementById('app'));
    this.client = new ImlogClient({ store: localStorageStore(), device: 'web' });
    this.users = new Users(this.client);
    this.threads = new Threads(this);
    this.transfers = new Transfers(this);
    /** @type {ChatView | null} */
    this.chat = null;
    this.tab = 'chats';
    /** Uploads started on this page, by upload id (chat bubbles show them). */
    this.uploads = new Map();
    this._wire();
  }

  async start() {
    const saved = this.client.saved();
    if (!saved) return this.showAuth();
    fill(this.root, h('p', { class: 'splash' }, 'Connecting…'));
    try {
      await this.client.resume();
      await this.showMain();
    } catch (e) {
      this.showAuth(explain(e));
    }
  }

  /** @param {string} [notice] */
  showAuth(notice) {
    this.chat?.close();
    this.chat = null;
    fill(this.root, authView(this, notice));
  }

  async showMain() {
    this.me = await this.users.load(/** @type {number} */ (this.client.userId), true);
    this.sidebarPanel = h('div', { class: 'panel' });
    this.stateBadge = h('span', { class: `conn ${this.client.state}`, 'data-test': 'connection' }, STATE_LABELS[this.client.state]);
    this.tabs = h('nav', { class: 'tabs', role: 'tablist' },
      ['chats', 'people', 'files', 'me'].map((name) =>
        h('button', { role: 'tab', 'data-tab': name, onclick: () => this.setTab(name) },
          { chats: 'Chats', people: 'People', files: 'Files', me: 'Me' }[name],
          h('span', { class: 'badge hidden', 'data-badge': name }))));
    this.main = h('main', { class: 'main' }, h('div', { class: 'empty' }, 'Pick a chat, or find people to talk to.'));
    this.layout = h('div', { class: 'layout' },
      h('aside', { class: 'sidebar' },
        h('header', { class: 'me' },
          h('strong', { 'data-test': 'me' }, this.me.nick || this.me.name),
          this.stateBadge),
        this.tabs,
        this.sidebarPanel),
      this.main);
    fill(this.root, this.layout);
    await Promise.all([this.threads.load(), this.transfers.load()]);
    this.setTab(this.tab);
    this.refreshBadges();
  }

  /** @param {string} name */
  setTab(name) {
    this.tab = name;
    for (const button of this.tabs.querySelectorAll('button')) {
      button.setAttribute('aria-selected', String(button.dataset.tab === name));
    }
    const panel = /** @type {HTMLElement} */ (this.sidebarPanel);
    if (name === 'chats') fill(panel, this.threads.view());
    if (name === 'people') fill(panel, peopleView(this));
    if (name === 'files') fill(panel, this.transfers.view());
    if (name === 'me') fill(panel, profileView(this));
  }

  /** Opens a thread in the main pane. @param {number} threadId */
  async openThread(threadId) {
    let thread = this.threads.get(threadId);
    if (!thread) {
      await this.threads.load();
      thread = this.threads.get(threadId);
    }
    if (!thread) return toast('That chat is not available', 'error');
    this.chat?.close();
    this.chat = new ChatView(this, thread);
    fill(this.main, this.chat.element);
    this.layout.classList.add('chat-open');
    this.threads.markOpen(threadId);
    await this.chat.load();
  }

  closeChat() {
    this.chat?.close();
    this.chat = null;
    this.layout.classList.remove('chat-open');
    fill(this.main, h('div', { class: 'empty' }, 'Pick a chat.'));
    this.threads.markOpen(null);
  }

  refreshBadges() {
    if (!this.tabs) return;
    const counts = {
      chats: this.threads.unreadTotal(),
      people: this.incomingRequests ?? 0,
      files: this.transfers.waitingCount(),
    };
    for (const [name, count] of Object.entries(counts)) {
      const badge = this.tabs.querySelector(`[data-badge="${name}"]`);
      if (!badge) continue;
      badge.textContent = count ? String(count) : '';
      badge.classList.toggle('hidden', !count);
    }
  }

  _wire() {
    const c = this.client;
    c.on('state', ({ state }) => {
      if (!this.stateBadge) return;
      this.stateBadge.className = `conn ${state}`;
      this.stateBadge.textContent = STATE_LABELS[state];
    });
    c.on('ended', ({ code, reason }) => {
      const why = {
        kicked: 'You signed in somewhere else, so this page was signed out.',
        session_ended: 'Your session ended.',
        bad_token: 'Your session expired: sign in again.',
      }[code] ?? reason;
      this.showAuth(code === 'logged_out' ? undefined : why);
    });
    c.on('message', (m) => {
      this.threads.onMessage(m);
      this.chat?.onMessage(m);
      this.refreshBadges();
    });
    c.on('outgoing', (item) => {
      this.chat?.onOutgoing(item);
      if (item.state === 'sent') this.threads.onOwnMessage(item);
      if (item.state === 'failed') toast(`Not sent: ${item.error?.message}`, 'error');
    });
    c.on('synced', ({ threads }) => {
      this.threads.replace(threads);
      this.refreshBadges();
    });
    c.on('thread', async () => {
      await this.threads.load();
      this.refreshBadges();
    });
    c.on('read', (r) => this.chat?.onRead(r));
    c.on('recalled', (r) => {
      this.chat?.onRecalled(r);
      this.threads.onRecalled(r);
    });
    c.on('media_settled', (m) => this.chat?.onMediaSettled(m));
    c.on('presence', (p) => {
      this.users.update(p.user_id, { online: p.online, last_seen: p.last_seen });
      this.threads.rerender();
      this.chat?.renderHeader();
    });
    c.on('profile_updated', (p) => {
      this.users.update(p.user_id, p);
      this.threads.rerender();
    });
    c.on('friend_request', async (r) => {
      const from = await this.users.load(r.from);
      toast(`${from.name} wants to be friends`);
      this.incomingRequests = (this.incomingRequests ?? 0) + 1;
      this.refreshBadges();
      if (this.tab === 'people') this.setTab('people');
    });
    c.on('friend_accepted', async () => {
      if (this.tab === 'people') this.setTab('people');
      await this.threads.load();
    });
    c.on('file_offer', (t) => this.transfers.onOffer(t));
    c.on('transfer', (t) => this.transfers.onState(t));
  }
}

const app = new App();
// For tests and the console: the app and its client.
Object.assign(globalThis, { imlogApp: app });
app.start();
