// Where the client keeps what must outlive a page: the session's token, the
// per-thread cursors, unacknowledged messages and unfinished uploads.

/**
 * @typedef {object} Store
 * @property {(key: string) => string | null} get
 * @property {(key: string, value: string) => void} set
 * @property {(key: string) => void} remove
 */

/** A store that lives as long as the process (Node.js, tests).
 * @returns {Store} */
export function memoryStore() {
  /** @type {Map<string, string>} */
  const map = new Map();
  return {
    get: (key) => map.get(key) ?? null,
    set: (key, value) => void map.set(key, value),
    remove: (key) => void map.delete(key),
  };
}

/** A store over the browser's `localStorage`, namespaced by `prefix` (one
 * per account a page may hold).
 * @param {string} [prefix]
 * @returns {Store} */
export function localStorageStore(prefix = 'imlog.') {
  const storage = globalThis.localStorage;
  return {
    get: (key) => storage.getItem(prefix + key),
    set: (key, value) => {
      try {
        storage.setItem(prefix + key, value);
      } catch (e) {
        // Full or disabled storage: the client still works, it only
        // forgets more on a reload.
        console.warn('imlog: cannot save to localStorage', e);
      }
    },
    remove: (key) => storage.removeItem(prefix + key),
  };
}

/**
 * Reads a JSON value, or `fallback` when absent or unreadable.
 * @template T
 * @param {Store} store
 * @param {string} key
 * @param {T} fallback
 * @returns {T}
 */
export function readJson(store, key, fallback) {
  const text = store.get(key);
  if (text == null) return fallback;
  try {
    return JSON.parse(text);
  } catch {
    return fallback;
  }
}
