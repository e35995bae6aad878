// People: search by name or id, friend requests in and out, and friends.

import { explain, fill, h, toast } from './dom.js';

/** @param {import('./main.js').App} app */
export function peopleView(app) {
  const results = h('ul', { class: 'people', 'data-test': 'search-results' });
  const query = h('input', { type: 'search', placeholder: 'Search by name or id', 'aria-label': 'Search people', 'data-test': 'search' });
  const search = async () => {
    const q = query.value.trim();
    if (!q) return fill(results);
    try {
      const page = await app.client.searchUsers(q, { limit: 20 });
      fill(results, page.items.filter((p) => p.user_id !== app.client.userId).map((p) => personRow(app, p,
        h('button', { class: 'small', 'data-test': 'add-friend', onclick: async (/** @type {Event} */ e) => {
          const button = /** @type {HTMLButtonElement} */ (e.currentTarget);
          try {
            const res = await app.client.friendApply(p.user_id, { greeting: `Hi ${p.name}, it's ${app.me.name}!` });
            button.textContent = res.status === 'accepted' ? 'Friends' : 'Requested';
            button.disabled = true;
            refresh();
          } catch (err) {
            toast(explain(err), 'error');
          }
        } }, 'Add friend'))));
      if (!page.items.length) fill(results, h('li', { class: 'muted' }, 'Nobody by that name'));
    } catch (e) {
      toast(explain(e), 'error');
    }
  };
  query.addEventListener('keydown', (e) => { if (e.key === 'Enter') search(); });
  const incoming = h('ul', { class: 'people', 'data-test': 'incoming' });
  const outgoing = h('ul', { class: 'people', 'data-test': 'outgoing' });
  const friends = h('ul', { class: 'people', 'data-test': 'friends' });

  const refresh = async () => {
    try {
      const [inc, out, fr] = await Promise.all([
        app.client.friendRequests('incoming'),
        app.client.friendRequests('outgoing'),
        app.client.friends({ limit: 100 }),
      ]);
      app.incomingRequests = inc.items.length;
      app.refreshBadges();
      fill(incoming, inc.items.length ? inc.items.map((r) => h('li', { class: 'person', 'data-test': 'request', 'data-user': r.from.user_id },
        h('div', {}, h('strong', {}, r.from.name), r.greeting ? h('div', { class: 'muted' }, `“${r.greeting}”`) : null),
        h('span', { class: 'actions' },
          h('button', { class: 'small primary', 'data-test': 'accept', onclick: async () => {
            try {
              const res = await app.client.friendAccept(r.from.user_id);
              await app.threads.load();
              refresh();
              if (res.thread_id) app.openThread(res.thread_id);
            } catch (e) {
              toast(explain(e), 'error');
            }
          } }, 'Accept'),
          h('button', { class: 'small', 'data-test': 'reject', onclick: async () => {
            try {
              await app.client.friendReject(r.from.user_id);
              refresh();
            } catch (e) {
              toast(explain(e), 'error');
            }
          } }, 'Reject'))))
        : h('li', { class: 'muted' }, 'None'));
      fill(outgoing, out.items.length ? out.items.map((r) => h('li', { class: 'person' }, h('strong', {}, r.to.name), h('span', { class: 'muted' }, 'waiting')))
        : h('li', { class: 'muted' }, 'None'));
      fill(friends, fr.items.length ? fr.items.map((f) => h('li', { class: 'person', 'data-test': 'friend' },
        h('strong', {}, f.alias || f.user.name),
        h('span', { class: 'actions' },
          f.thread_id ? h('button', { class: 'small', onclick: () => app.openThread(/** @type {number} */ (f.thread_id)) }, 'Chat') : null,
          h('button', { class: 'small', onclick: () => app.transfers.pickAndOffer(f.user.user_id) }, 'Send file…'))))
        : h('li', { class: 'muted' }, 'No friends yet: search above'));
    } catch (e) {
      toast(explain(e), 'error');
    }
  };
  refresh();
  return [
    h('div', { class: 'panel-head' }, h('h2', {}, 'People')),
    h('div', { class: 'row' }, query, h('button', { class: 'small', 'data-test': 'search-go', onclick: search }, 'Search')),
    results,
    h('h3', {}, 'Friend requests to you'), incoming,
    h('h3', {}, 'Your requests'), outgoing,
    h('h3', {}, 'Friends'), friends,
  ];
}

/** @param {import('./main.js').App} app @param {any} p @param {any} action */
function personRow(app, p, action) {
  return h('li', { class: 'person', 'data-test': 'person', 'data-user': p.user_id },
    app.users.avatar(p),
    h('div', { class: 'grow' }, h('strong', {}, p.nick || p.name), h('div', { class: 'muted' }, `@${p.name} · ${p.online ? 'online' : 'offline'}`)),
    action);
}
