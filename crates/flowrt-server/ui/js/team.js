// The team: owns the team page (#/team, owners and admins): users and roles, compute instances
// and who they are assigned to, identities. Creating a user shows its token once; only its hash
// is kept. The page loads what it shows, renders it from that data, and acts on its forms and
// buttons (call the API, then draw the page again).
import { auth, get, post, api } from './api.js';
import { h, clear, fmtAgo, field, button, table, act } from './dom.js';

// ---- load ----

async function loadTeam() {
  const [users, computes, identities] = await Promise.all([get('/api/v1/users'), get('/api/v1/computes'), get('/api/v1/identities')]);
  return { users, computes, identities, nameOf: new Map(users.map((u) => [u.id, u.name])) };
}

// ---- render ----

function usersCard({ users }) {
  const name = h('input', { name: 'user-name', required: true });
  const role = h('select', { name: 'user-role' }, ['user', 'viewer', 'admin'].map((r) => h('option', { value: r }, r)));
  const tokenOut = h('p', { role: 'status', class: 'token-out' });
  const onsubmit = (ev) => { ev.preventDefault(); act(ev.submitter, () => createUser(name.value.trim(), role.value, tokenOut)); };
  return h('section', { class: 'card', 'aria-labelledby': 'u-h' }, h('h2', { id: 'u-h' }, 'Users and roles'),
    table(['Name', 'Role', 'Id', 'Created'], users.map((u) => h('tr', {}, h('td', {}, u.name), h('td', {}, u.role), h('td', {}, h('code', {}, u.id)), h('td', {}, fmtAgo(u.created)))), { id: 'users' }),
    h('form', { class: 'inline', onsubmit }, h('h3', {}, 'Add a user'), field('Name', name), field('Role', role), h('button', { type: 'submit' }, 'Create user')), tokenOut);
}

function computeRow(c, nameOf, reload) {
  const running = c.status === 'Running';
  return h('tr', {}, h('td', {}, c.name), h('td', {}, nameOf.get(c.owner) || c.owner), h('td', {}, c.size), h('td', {}, c.status),
    h('td', {}, button(running ? 'Stop' : 'Start', (e) => act(e.target, () => changeCompute(() => post(`/api/v1/computes/${c.name}/${running ? 'stop' : 'start'}`), reload))),
      button('Delete', (e) => act(e.target, () => changeCompute(() => api('DELETE', `/api/v1/computes/${c.name}`), reload)), { class: 'danger' })));
}

function computesCard({ users, computes, nameOf }, reload) {
  const name = h('input', { name: 'compute-name', required: true });
  const size = h('select', { name: 'compute-size' }, ['small', 'medium', 'large'].map((s) => h('option', { value: s }, s)));
  const user = h('select', { name: 'compute-user' }, users.map((u) => h('option', { value: u.name }, u.name)));
  const onsubmit = (ev) => {
    ev.preventDefault();
    act(ev.submitter, () => changeCompute(() => post('/api/v1/computes', { name: name.value.trim(), size: size.value, user: user.value }), reload));
  };
  return h('section', { class: 'card', 'aria-labelledby': 'c-h' }, h('h2', { id: 'c-h' }, 'Compute instances'),
    table(['Name', 'Assigned to', 'Size', 'Status', ''], computes.map((c) => computeRow(c, nameOf, reload)), { id: 'computes' }),
    h('form', { class: 'inline', onsubmit }, h('h3', {}, 'Add a compute instance'), field('Name', name), field('Size', size), field('Assign to', user), h('button', { type: 'submit' }, 'Create instance')));
}

function identitiesCard({ identities, nameOf }) {
  return h('section', { class: 'card', 'aria-labelledby': 'i-h' }, h('h2', { id: 'i-h' }, 'Identities'),
    identities.length ? table(['Name', 'Owner', 'Feed token', 'Entra ID'], identities.map((i) => h('tr', {}, h('td', {}, i.name), h('td', {}, nameOf.get(i.owner) || i.owner), h('td', {}, i.feed_token ? 'stored (hidden)' : 'none'), h('td', {}, i.entra_client_id ? `service principal ${i.entra_client_id}` : 'none'))))
      : h('p', { class: 'muted' }, 'No identities: ', h('code', {}, 'flowrt identity create NAME --feed-token-env VAR'), '.'));
}

// ---- act ----

// The new user's token is shown here, this once.
async function createUser(name, role, out) {
  const r = await post('/api/v1/users', { name, role });
  clear(out, `Token for ${r.user.name} (shown once): `, h('code', {}, r.token));
}

// A compute instance made, started, stopped or deleted: draw the page again.
async function changeCompute(call, reload) {
  await call();
  reload();
}

export async function page({ main }) {
  if (!auth.can('manage_team')) {
    main.append(h('h1', {}, 'Team'), h('p', {}, 'Only owners and admins manage the team.'));
    return;
  }
  const team = await loadTeam();
  const reload = () => { main.replaceChildren(); page({ main }); };
  main.append(h('h1', {}, 'Team'),
    h('div', { class: 'grid' }, usersCard(team), computesCard(team, reload), identitiesCard(team)));
}
