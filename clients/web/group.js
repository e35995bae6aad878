// Groups: creating one from friends, and the member panel of an open group
// with the actions the permission table gives your role.

import { explain, fill, h, toast } from './dom.js';

/** Every friend, for picking members. @param {import('./main.js').App} app */
async function allFriends(app) {
  const all = [];
  let after = 0;
  for (;;) {
    const page = await app.client.friends({ after, limit: 100 });
    all.push(...page.items);
    if (!page.load_more) return all;
    after = page.next_cursor;
  }
}

/** A modal dialog; resolves when closed. @param {string} title @param {any[]} body @param {any[]} actions */
function dialog(title, body, actions) {
  const box = h('dialog', { class: 'dialog', 'data-test': 'dialog' },
    h('h2', {}, title), ...body, h('div', { class: 'row end' }, ...actions,
      h('button', { type: 'button', onclick: () => box.close() }, 'Close')));
  box.addEventListener('close', () => box.remove());
  document.body.append(box);
  box.showModal();
  return box;
}

/** @param {import('./main.js').App} app */
export async function createGroupDialog(app) {
  const friends = await allFriends(app);
  const name = h('input', { 'aria-label': 'Group name', placeholder: 'Group name', maxlength: 64, 'data-test': 'group-name' });
  const picks = friends.map((f) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', value: f.user.user_id, 'data-test': 'group-member' }), f.alias || f.user.name));
  const create = h('button', { class: 'primary', 'data-test': 'group-create', onclick: async () => {
    const members = picks.map((p) => p.querySelector('input')).filter((i) => i?.checked).map((i) => Number(i?.value));
    try {
      const { thread_id } = await app.client.createGroup(name.value.trim(), members);
      box.close();
      await app.threads.load();
      await app.openThread(thread_id);
    } catch (e) {
      toast(explain(e), 'error');
    }
  } }, 'Create');
  const box = dialog('New group', [name, h('p', { class: 'muted' }, friends.length ? 'Members:' : 'Add friends first to invite them.'), h('div', { class: 'checks' }, picks)], [create]);
  name.focus();
}

/** What each role may do to whom (docs/PROTOCOL.md, Permission table).
 * @param {string} me @param {string} them */
function may(me, them) {
  return {
    remove: (me === 'owner' && them !== 'owner') || (me === 'admin' && them === 'member'),
    mute: (me === 'owner' && them !== 'owner') || (me === 'admin' && them === 'member'),
    role: me === 'owner' && them !== 'owner',
    transfer: me === 'owner' && them !== 'owner',
  };
}

/**
 * The members of an open group and what you may do with them.
 * @param {import('./main.js').App} app @param {import('./chat.js').ChatView} chat
 */
export async function groupPanel(app, chat) {
  const threadId = chat.thread.thread_id;
  const members = [];
  let after = 0;
  for (;;) {
    const page = await app.client.members(threadId, { after, limit: 100 });
    members.push(...page.items);
    if (!page.load_more || members.length >= 500) break;
    after = page.next_cursor;
  }
  const myRole = members.find((m) => m.user.user_id === app.client.userId)?.role ?? 'member';
  const refresh = async () => {
    await app.threads.load();
    chat.thread = app.threads.get(threadId) ?? chat.thread;
    chat.renderHeader();
    fill(chat.panel, await groupPanel(app, chat));
  };
  /** @param {() => Promise<any>} action */
  const run = (action) => async () => {
    try {
      await action();
      await refresh();
    } catch (e) {
      toast(explain(e), 'error');
    }
  };

  const rows = members.map((m) => {
    const can = may(myRole, m.role);
    const self = m.user.user_id === app.client.userId;
    const muted = m.muted_until && Date.parse(m.muted_until) > Date.now();
    return h('li', { class: 'member', 'data-test': 'member', 'data-user': m.user.user_id },
      h('span', { class: 'member-name' }, m.user.name, self ? ' (you)' : ''),
      h('span', { class: `role ${m.role}`, 'data-test': 'role' }, m.role),
      muted ? h('span', { class: 'muted', 'data-test': 'muted' }, 'muted') : null,
      self ? null : h('span', { class: 'member-actions' },
        can.mute ? h('button', { class: 'small', 'data-test': muted ? 'unmute' : 'mute',
          onclick: run(() => app.client.muteMember(threadId, m.user.user_id, muted ? null : new Date(Date.now() + 10 * 60_000))) }, muted ? 'Unmute' : 'Mute 10 min') : null,
        can.role ? h('button', { class: 'small', 'data-test': m.role === 'admin' ? 'demote' : 'promote',
          onclick: run(() => app.client.setRole(threadId, m.user.user_id, m.role === 'admin' ? 'member' : 'admin')) }, m.role === 'admin' ? 'Make member' : 'Make admin') : null,
        can.transfer ? h('button', { class: 'small', 'data-test': 'make-owner',
          onclick: run(() => app.client.transferOwnership(threadId, m.user.user_id)) }, 'Make owner') : null,
        can.remove ? h('button', { class: 'small danger', 'data-test': 'remove',
          onclick: run(() => app.client.removeMember(threadId, m.user.user_id)) }, 'Remove') : null));
  });

  const manage = [];
  if (myRole !== 'member') {
    const rename = h('input', { value: chat.thread.name ?? '', 'aria-label': 'Group name', maxlength: 64, 'data-test': 'rename-input' });
    manage.push(h('div', { class: 'row' }, rename,
      h('button', { class: 'small', 'data-test': 'rename', onclick: run(() => app.client.renameGroup(threadId, rename.value.trim())) }, 'Rename')));
    const friends = await allFriends(app);
    const inGroup = new Set(members.map((m) => m.user.user_id));
    const candidates = friends.filter((f) => !inGroup.has(f.user.user_id));
    if (candidates.length) {
      const pick = h('select', { 'aria-label': 'Friend to add', 'data-test': 'add-member-select' },
        candidates.map((f) => h('option', { value: f.user.user_id }, f.alias || f.user.name)));
      manage.push(h('div', { class: 'row' }, pick,
        h('button', { class: 'small', 'data-test': 'add-member', onclick: run(() => app.client.addMembers(threadId, [Number(pick.value)])) }, 'Add')));
    }
  }
  const leave = h('button', { class: 'small danger', 'data-test': 'leave', onclick: async () => {
    try {
      await app.client.leaveGroup(threadId);
      app.closeChat();
      await app.threads.load();
    } catch (e) {
      toast(explain(e), 'error');
    }
  } }, 'Leave group');
  return [
    h('h3', {}, `Members (${members.length})`, h('span', { class: 'muted' }, ` · you are ${myRole}`)),
    h('ul', { class: 'members', 'data-test': 'members' }, rows),
    ...manage,
    leave,
  ];
}
