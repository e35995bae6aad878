// Profiles by user id, loaded once and kept fresh by pushes, and avatars
// downloaded once per upload into blob URLs.

import { initial, h } from './dom.js';

export class Users {
  /** @param {import('/sdk/index.js').ImlogClient} client */
  constructor(client) {
    this.client = client;
    /** @type {Map<number, any>} */
    this.profiles = new Map();
    /** @type {Map<number, Promise<any>>} */
    this.loading = new Map();
    /** @type {Map<string, Promise<string>>} avatar upload id → blob URL */
    this.avatars = new Map();
  }

  /** @param {number} id @param {boolean} [fresh] */
  async load(id, fresh = false) {
    if (!fresh && this.profiles.has(id)) return this.profiles.get(id);
    let pending = this.loading.get(id);
    if (!pending) {
      pending = this.client.profile(id).then((p) => {
        this.profiles.set(id, p);
        return p;
      }).finally(() => this.loading.delete(id));
      this.loading.set(id, pending);
    }
    return pending;
  }

  /** @param {number} id @param {object} fields */
  update(id, fields) {
    const known = this.profiles.get(id);
    if (known) Object.assign(known, fields);
  }

  /** The name to show for a user: their nick, else their name. @param {number} id */
  label(id) {
    const p = this.profiles.get(id);
    if (!p) return `#${id}`;
    return p.nick || p.name;
  }

  /** A round avatar: the picture once downloaded, the initial before.
   * @param {any} profile @param {string} [size] */
  avatar(profile, size = 'small') {
    const el = h('span', { class: `avatar ${size}` }, initial(profile?.nick || profile?.name || '?'));
    if (profile?.avatar) {
      this.avatarUrl(profile.avatar).then((url) => {
        el.replaceChildren(h('img', { src: url, alt: '' }));
      }, () => {});
    }
    return el;
  }

  /** @param {string} uploadId @returns {Promise<string>} */
  avatarUrl(uploadId) {
    let url = this.avatars.get(uploadId);
    if (!url) {
      url = this.client.download(uploadId).done.then((blob) => URL.createObjectURL(blob));
      url.catch(() => this.avatars.delete(uploadId));
      this.avatars.set(uploadId, url);
    }
    return url;
  }
}
