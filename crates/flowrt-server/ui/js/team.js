// The team (owners and admins): users and roles, compute instances and who they are assigned to,
// identities. Creating a user shows its token once; only its hash is kept.
import { auth, get, post, api } from './api.js';
import { h, clear, fmtAgo, field, button, table, act } from './dom.js';

export async function page({ main }) {
  if (!auth.admin) {
    main.append(h('h1', {}, 'Team'), h('p', {}, 'Only owners and admins manage the team.'));
    return;
  }
  const [users, computes, identities] = await Promise.all([get('/api/v1/users'), get('/api/v1/computes'), get('/api/v1/identities')]);
  const nameOf = new Map(users.map((u) => [u.id, u.name]));
  const uName = h('input', { name: 'user-name', required: true });
  const uRole = h('select', { name: 'user-role' }, ['user', 'viewer', 'admin'].map((r) => h('option', { value: r }, r)));
  const tokenOut = h('p', { role: 'status', class: 'token-out' });
  const cName = h('input', { name: 'compute-name', required: true });
  const cSize = h('select', { name: 'compute-size' }, ['small', 'medium', 'large'].map((s) => h('option', { value: s }, s)));
  const cUser = h('select', { name: 'compute-user' }, users.map((u) => h('option', { value: u.name }, u.name)));
  const reload = () => { main.replaceChildren(); page({ main }); };
  main.append(h('h1', {}, 'Team'),
    h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'u-h' }, h('h2', { id: 'u-h' }, 'Users and roles'),
        table(['Name', 'Role', 'Id', 'Created'], users.map((u) => h('tr', {}, h('td', {}, u.name), h('td', {}, u.role), h('td', {}, h('code', {}, u.id)), h('td', {}, fmtAgo(u.created)))), { id: 'users' }),
        h('form', { class: 'inline', onsubmit: (ev) => { ev.preventDefault(); act(ev.submitter, async () => {
          const r = await post('/api/v1/users', { name: uName.value.trim(), role: uRole.value });
          clear(tokenOut, `Token for ${r.user.name} (shown once): `, h('code', {}, r.token));
        }); } }, h('h3', {}, 'Add a user'), field('Name', uName), field('Role', uRole), h('button', { type: 'submit' }, 'Create user')), tokenOut),
      h('section', { class: 'card', 'aria-labelledby': 'c-h' }, h('h2', { id: 'c-h' }, 'Compute instances'),
        table(['Name', 'Assigned to', 'Size', 'Status', ''], computes.map((c) => h('tr', {}, h('td', {}, c.name), h('td', {}, nameOf.get(c.owner) || c.owner), h('td', {}, c.size), h('td', {}, c.status),
          h('td', {}, button(c.status === 'Running' ? 'Stop' : 'Start', (e) => act(e.target, async () => { await post(`/api/v1/computes/${c.name}/${c.status === 'Running' ? 'stop' : 'start'}`); reload(); })),
            button('Delete', (e) => act(e.target, async () => { await api('DELETE', `/api/v1/computes/${c.name}`); reload(); }), { class: 'danger' })))), { id: 'computes' }),
        h('form', { class: 'inline', onsubmit: (ev) => { ev.preventDefault(); act(ev.submitter, async () => {
          await post('/api/v1/computes', { name: cName.value.trim(), size: cSize.value, user: cUser.value });
          reload();
        }); } }, h('h3', {}, 'Add a compute instance'), field('Name', cName), field('Size', cSize), field('Assign to', cUser), h('button', { type: 'submit' }, 'Create instance'))),
      h('section', { class: 'card', 'aria-labelledby': 'i-h' }, h('h2', { id: 'i-h' }, 'Identities'),
        identities.length ? table(['Name', 'Owner', 'Feed token', 'Entra ID'], identities.map((i) => h('tr', {}, h('td', {}, i.name), h('td', {}, nameOf.get(i.owner) || i.owner), h('td', {}, i.feed_token ? 'stored (hidden)' : 'none'), h('td', {}, i.entra_client_id ? `service principal ${i.entra_client_id}` : 'none'))))
          : h('p', { class: 'muted' }, 'No identities: ', h('code', {}, 'flowrt identity create NAME --feed-token-env VAR'), '.'))));
}
