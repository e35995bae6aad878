// Small DOM helpers: an element builder and formatting.

/**
 * `h('button', {class: 'x', onclick: f, 'data-test': 'send'}, 'Send')`.
 * Attributes starting with `on` become listeners; `null`/`false` are left out.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any>} [attrs]
 * @param {...any} children strings, nodes, arrays of them, or null
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'value') {
      /** @type {any} */ (el).value = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/** @param {Element} el @param {any[]} children */
function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's children. @param {Element} el @param {...any} children */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** @param {number} bytes */
export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1024;
    unit++;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A short time for a message: today's as HH:MM, older with the date. @param {string} iso */
export function formatTime(iso) {
  const at = new Date(iso);
  const now = new Date();
  const time = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (at.toDateString() === now.toDateString()) return time;
  return `${at.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
}

/** A notice at the bottom of the page for a few seconds. @param {string} text @param {'info' | 'error'} [kind] */
export function toast(text, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const note = h('div', { class: `toast ${kind}` }, text);
  box.append(note);
  setTimeout(() => note.remove(), kind === 'error' ? 6000 : 3500);
}

/** What an SDK error says to a person. @param {any} e */
export function explain(e) {
  return e?.message ?? String(e);
}

/** The first letter of a name, for an avatar without a picture. @param {string} name */
export function initial(name) {
  return (name || '?').slice(0, 1).toUpperCase();
}
