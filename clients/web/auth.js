// Sign in and create an account.

import { explain, h } from './dom.js';

/** @param {import('./main.js').App} app @param {string} [notice] */
export function authView(app, notice) {
  const name = h('input', { name: 'name', autocomplete: 'username', required: true, minlength: 3, maxlength: 32, autofocus: true, 'aria-label': 'Name' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true, minlength: 8, 'aria-label': 'Password' });
  const message = h('p', { class: notice ? 'notice' : 'notice hidden', 'data-test': 'auth-message' }, notice ?? '');
  const busy = (/** @type {boolean} */ on) => form.querySelectorAll('button').forEach((b) => (b.disabled = on));

  /** @param {boolean} register */
  const submit = async (register) => {
    if (!form.reportValidity()) return;
    busy(true);
    message.className = 'notice hidden';
    try {
      if (register) await app.client.register(name.value, password.value);
      await app.client.login(name.value, password.value);
      await app.showMain();
    } catch (e) {
      message.textContent = explain(e);
      message.className = 'notice error';
      busy(false);
    }
  };

  const form = h('form', { class: 'auth', onsubmit: (/** @type {Event} */ e) => { e.preventDefault(); submit(false); } },
    h('h1', {}, 'imlog'),
    h('p', { class: 'muted' }, 'Sign in, or pick a name and password to create an account.'),
    h('label', {}, 'Name', name),
    h('label', {}, 'Password', password),
    message,
    h('div', { class: 'row' },
      h('button', { type: 'submit', class: 'primary', 'data-test': 'login' }, 'Sign in'),
      h('button', { type: 'button', 'data-test': 'register', onclick: () => submit(true) }, 'Create account')));
  return h('div', { class: 'auth-page' }, form);
}
