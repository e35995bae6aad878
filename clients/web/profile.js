// Your profile: nick, description, sex and avatar; signing out.

import { explain, fill, h, toast } from './dom.js';

/** @param {import('./main.js').App} app */
export function profileView(app) {
  const me = app.me;
  const nick = h('input', { value: me.nick ?? '', maxlength: 32, 'data-test': 'nick' });
  const description = h('textarea', { rows: 3, maxlength: 256, 'data-test': 'description' });
  description.value = me.description ?? '';
  const sex = h('select', { 'data-test': 'sex' }, ['unspecified', 'female', 'male', 'other'].map((s) =>
    h('option', { value: s, selected: s === me.sex }, s)));
  const avatarBox = h('div', { class: 'avatar-edit' });
  const renderAvatar = () => fill(avatarBox, app.users.avatar(app.me, 'large'));
  renderAvatar();
  const picker = h('input', { type: 'file', accept: 'image/*', class: 'hidden', 'data-test': 'avatar-input', onchange: async () => {
    const file = picker.files?.[0];
    picker.value = '';
    if (!file) return;
    const progress = h('progress', { max: file.size, value: 0 });
    avatarBox.append(progress);
    try {
      const upload = app.client.upload(file, { kind: 'image' });
      upload.on('progress', (p) => (progress.value = p.acked_bytes));
      const done = await upload.done;
      app.me = await app.client.updateProfile({ avatar: done.upload_id });
      app.users.profiles.set(app.me.user_id, app.me);
      renderAvatar();
      toast('Avatar updated');
    } catch (e) {
      progress.remove();
      toast(explain(e), 'error');
    }
  } });
  const save = async () => {
    try {
      app.me = await app.client.updateProfile({ nick: nick.value.trim(), description: description.value, sex: /** @type {any} */ (sex.value) });
      app.users.profiles.set(app.me.user_id, app.me);
      toast('Profile saved');
    } catch (e) {
      toast(explain(e), 'error');
    }
  };
  return [
    h('div', { class: 'panel-head' }, h('h2', {}, 'Me')),
    h('div', { class: 'profile' },
      avatarBox,
      h('button', { class: 'small', 'data-test': 'avatar', onclick: () => picker.click() }, 'Change picture'), picker,
      h('p', { class: 'muted' }, `@${me.name} · id ${me.user_id}`),
      h('label', {}, 'Nick', nick),
      h('label', {}, 'About', description),
      h('label', {}, 'Sex', sex),
      h('div', { class: 'row' },
        h('button', { class: 'primary', 'data-test': 'save-profile', onclick: save }, 'Save'),
        h('button', { 'data-test': 'logout', onclick: () => app.client.logout().catch(() => {}) }, 'Sign out'))),
  ];
}
