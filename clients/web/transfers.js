// File transfer between friends (TeamTalk's): online offers relayed while
// both are here, offline offers fetched later; each with its progress.

import { explain, fill, formatSize, h, toast } from './dom.js';
import { uploadControls } from './media.js';

const FINAL = new Set(['done', 'refused', 'cancelled', 'error']);

export class Transfers {
  /** @param {import('./main.js').App} app */
  constructor(app) {
    this.app = app;
    /** @type {Map<string, {t: any, incoming: boolean, state: string, reason?: string, bytes: number, relay?: any, download?: any, url?: string}>} */
    this.entries = new Map();
    this.list = h('ul', { class: 'transfers', 'data-test': 'transfers' });
  }

  async load() {
    try {
      for (const t of await this.app.client.offlineFiles()) this._add(t, true);
    } catch {
      // shown again on the next load
    }
    this.rerender();
  }

  /** Offers waiting for an answer, and uploads a reload left unfinished. */
  waitingCount() {
    const offers = [...this.entries.values()].filter((e) => offeredToMe(e)).length;
    const unfinished = this.app.client.unfinishedUploads().filter((u) => !this.app.uploads.has(u.upload_id)).length;
    return offers + unfinished;
  }

  /** @param {any} t */
  onOffer(t) {
    this._add(t, true);
    const from = this.app.users.label(t.from);
    toast(`${from} offers you ${t.name} (${formatSize(t.size)})`);
    this.rerender();
  }

  /** @param {{task_id: string, state: string, reason?: string}} s */
  onState(s) {
    const entry = this.entries.get(s.task_id);
    if (!entry) return;
    if (!FINAL.has(entry.state) || s.state === 'done') entry.state = s.state;
    entry.reason = s.reason;
    this.rerender();
  }

  /** @param {any} t @param {boolean} incoming */
  _add(t, incoming) {
    if (!this.entries.has(t.task_id)) this.entries.set(t.task_id, { t, incoming, state: t.state, bytes: 0 });
    this.app.users.load(incoming ? t.from : t.to).then(() => this.rerender(), () => {});
  }

  /** Asks for a file, then how to send it. @param {number} userId */
  pickAndOffer(userId) {
    const input = h('input', { type: 'file', class: 'hidden', 'data-test': 'offer-input' });
    input.addEventListener('change', () => {
      const file = input.files?.[0];
      input.remove();
      if (!file) return;
      const box = h('dialog', { class: 'dialog', 'data-test': 'offer-dialog' },
        h('h2', {}, `Send ${file.name}`),
        h('p', { class: 'muted' }, `${formatSize(file.size)} to ${this.app.users.label(userId)}. Online sends it now, while you both keep the page open; offline uploads it for them to fetch later.`),
        h('div', { class: 'row end' },
          h('button', { class: 'primary', 'data-test': 'offer-online', onclick: () => { box.close(); this.offerOnline(userId, file); } }, 'Online'),
          h('button', { 'data-test': 'offer-offline', onclick: () => { box.close(); this.offerOffline(userId, file); } }, 'Offline'),
          h('button', { onclick: () => box.close() }, 'Cancel')));
      box.addEventListener('close', () => box.remove());
      document.body.append(box);
      box.showModal();
    });
    document.body.append(input);
    input.click();
  }

  /** @param {number} userId @param {File} file */
  async offerOnline(userId, file) {
    try {
      const t = await this.app.client.offerFile(userId, { mode: 'online', name: file.name, size: file.size });
      this._add(t, false);
      const entry = /** @type {any} */ (this.entries.get(t.task_id));
      entry.relay = this.app.client.sendOnline(t, file);
      this._follow(entry);
      this.app.setTab('files');
    } catch (e) {
      toast(explain(e), 'error');
    }
  }

  /** @param {number} userId @param {File} file */
  async offerOffline(userId, file) {
    try {
      toast(`Uploading ${file.name} for ${this.app.users.label(userId)}…`);
      const upload = this.app.client.upload(file, { kind: 'file' });
      const view = await upload.done;
      const t = await this.app.client.offerFile(userId, { mode: 'offline', upload_id: view.upload_id });
      this._add(t, false);
      this.rerender();
      this.app.setTab('files');
    } catch (e) {
      toast(explain(e), 'error');
    }
  }

  /** Progress and the end of a relay. @param {any} entry */
  _follow(entry) {
    entry.relay.on('progress', (/** @type {any} */ p) => { entry.bytes = p.bytes; this.rerender(); });
    entry.relay.on('state', (/** @type {any} */ s) => { entry.state = s.state; entry.reason = s.reason; this.rerender(); });
    entry.relay.done.then((/** @type {Blob | null} */ blob) => {
      entry.state = 'done';
      if (blob) entry.url = URL.createObjectURL(blob);
      this.rerender();
    }, (/** @type {any} */ e) => {
      if (!FINAL.has(entry.state)) entry.state = 'error';
      entry.reason = entry.reason ?? explain(e);
      this.rerender();
    });
  }

  /** @param {any} entry */
  _accept(entry) {
    if (entry.t.mode === 'online') {
      entry.relay = this.app.client.receiveOnline(entry.t);
      entry.state = 'joining';
      this._follow(entry);
    } else {
      entry.download = this.app.client.download(entry.t.upload_id);
      entry.state = 'downloading';
      entry.download.on('progress', (/** @type {any} */ p) => { entry.bytes = p.received; this.rerender(); });
      entry.download.done.then(async (/** @type {Blob} */ blob) => {
        entry.url = URL.createObjectURL(blob);
        await this.app.client.ackOfflineFile(entry.t.task_id);
        entry.state = 'done';
        this.rerender();
      }, (/** @type {any} */ e) => {
        entry.state = 'error';
        entry.reason = explain(e);
        this.rerender();
      });
    }
    this.rerender();
  }

  view() {
    this.rerender();
    return [h('div', { class: 'panel-head' }, h('h2', {}, 'Files')),
      this.unfinishedView(),
      h('p', { class: 'muted' }, 'Files friends offer you, and yours to them. Send one from a chat or from People.'),
      this.list];
  }

  /** Uploads an earlier page left unfinished: pick the same file to resume. */
  unfinishedView() {
    const client = this.app.client;
    const saved = client.unfinishedUploads().filter((u) => !this.app.uploads.has(u.upload_id));
    const box = h('div', { 'data-test': 'unfinished' });
    if (!saved.length) return box;
    const rows = saved.map((u) => {
      const controls = h('span', { class: 'actions' });
      const input = h('input', { type: 'file', class: 'hidden', 'data-test': 'unfinished-input', onchange: () => {
        const file = input.files?.[0];
        input.value = '';
        if (!file) return;
        if (file.size !== u.size) return toast(`That is not ${u.name}: it has ${formatSize(file.size)}, not ${formatSize(u.size)}`, 'error');
        const upload = client.resumeUpload(u.upload_id, file);
        this.app.uploads.set(u.upload_id, upload);
        fill(controls, uploadControls(upload));
        upload.done.then(() => toast(`${u.name} uploaded`), (e) => toast(`${u.name}: ${explain(e)}`, 'error'));
      } });
      fill(controls,
        h('button', { class: 'small primary', 'data-test': 'unfinished-resume', onclick: () => input.click() }, 'Resume…'),
        h('button', { class: 'small', 'data-test': 'unfinished-discard', onclick: () => client.discardUpload(u.upload_id)
          .then(() => box.replaceWith(this.unfinishedView()), (e) => toast(explain(e), 'error')) }, 'Discard'));
      return h('li', { class: 'transfer', 'data-test': 'unfinished-upload', 'data-upload': u.upload_id },
        h('div', { class: 'grow' }, h('strong', {}, u.name), h('span', { class: 'muted' }, ` ${formatSize(u.size)}`),
          h('div', { class: 'muted' }, 'not finished: pick the same file to go on')),
        input, controls);
    });
    return fill(box, h('h3', {}, 'Unfinished uploads'), h('ul', { class: 'transfers' }, rows));
  }

  rerender() {
    const entries = [...this.entries.values()].reverse();
    fill(this.list, entries.length ? entries.map((e) => this._row(e)) : h('li', { class: 'muted' }, 'No file transfers yet'));
    this.app.refreshBadges();
  }

  /** @param {any} e */
  _row(e) {
    const t = e.t;
    const who = this.app.users.label(e.incoming ? t.from : t.to);
    const busy = e.relay || e.download;
    const actions = [];
    if (offeredToMe(e)) {
      actions.push(h('button', { class: 'small primary', 'data-test': 'transfer-accept', onclick: () => this._accept(e) }, t.mode === 'online' ? 'Receive' : 'Download'));
      actions.push(h('button', { class: 'small', 'data-test': 'transfer-refuse', onclick: () => this.app.client.refuseFile(t.task_id).catch((/** @type {any} */ err) => toast(explain(err), 'error')) }, 'Refuse'));
    }
    if (!FINAL.has(e.state) && (!e.incoming || busy)) {
      actions.push(h('button', { class: 'small', 'data-test': 'transfer-cancel', onclick: () => {
        if (e.relay) e.relay.cancel();
        else this.app.client.cancelFile(t.task_id).catch((/** @type {any} */ err) => toast(explain(err), 'error'));
      } }, 'Cancel'));
    }
    if (e.url) actions.push(h('a', { class: 'button small', href: e.url, download: t.name, 'data-test': 'transfer-save' }, 'Save'));
    const showBar = busy && !FINAL.has(e.state);
    return h('li', { class: 'transfer', 'data-test': 'transfer', 'data-task': t.task_id, 'data-state': e.state },
      h('div', { class: 'grow' },
        h('strong', {}, t.name), h('span', { class: 'muted' }, ` ${formatSize(t.size)} · ${t.mode} · ${e.incoming ? 'from' : 'to'} ${who}`),
        h('div', { class: 'muted', 'data-test': 'transfer-state' }, stateLabel(e)),
        showBar ? h('progress', { max: t.size, value: e.bytes, 'data-test': 'transfer-progress' }) : null),
      h('span', { class: 'actions' }, actions));
  }
}

/** An offer to me that I have not answered: the sender may be waiting on the relay already.
 * @param {any} e */
function offeredToMe(e) {
  return e.incoming && !e.relay && !e.download && (e.state === 'ready' || e.state === 'waiting_receiver');
}

/** @param {any} e */
function stateLabel(e) {
  const pct = e.t.size ? Math.floor((100 * e.bytes) / e.t.size) : 0;
  const labels = {
    ready: e.incoming ? 'offered to you' : 'waiting for them',
    joining: 'connecting…',
    waiting_receiver: e.incoming ? 'offered to you' : 'waiting for them to accept',
    waiting_sender: 'waiting for the sender',
    waiting_transfer: 'starting…',
    transferring: `transferring ${pct}%`,
    downloading: `downloading ${pct}%`,
    done: 'done',
    refused: 'refused',
    cancelled: `cancelled${e.reason ? `: ${e.reason}` : ''}`,
    error: `failed${e.reason ? `: ${e.reason}` : ''}`,
  };
  return /** @type {any} */ (labels)[e.state] ?? e.state;
}
