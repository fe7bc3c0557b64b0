// punchgate's page: renders the node's events (server-sent, the same JSON
// as --json) and sends it commands. Text from the network is only ever set
// with textContent, never parsed as HTML.
'use strict';

const ui = {};
const page = {
  me: '',
  name: '',
  rooms: [],
  locked: new Set(),
  peers: [],
  gates: [],
  files: [],
  downloads: [],
  current: null, // a room name, or 'dm:' + peer id
  unread: new Map(),
  convs: new Map(), // key -> { ids: Set, items: [] }
  own: new Map(), // message id -> { status, delivered: Set }
  progress: new Map(), // hash -> { bytes, total, rate, name }
  uploads: [],
};

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Number(n) || 0;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return (unit === 0 ? value : value.toFixed(1)) + ' ' + units[unit];
}

function clock(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function log(text, kind) {
  const item = el('li', kind || '', clock(Date.now()) + ' ' + text);
  ui.log.prepend(item);
  while (ui.log.children.length > 200) ui.log.lastChild.remove();
}

async function post(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return answer(response);
}

async function answer(response) {
  if (response.ok) {
    return response.status === 204 ? null : response.json();
  }
  let message = response.statusText;
  try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
  log(message, 'error');
  throw new Error(message);
}

// ---------------------------------------------------------------- rooms --

function isDm(key) { return key !== null && key.startsWith('dm:'); }

function peerName(id) {
  const peer = page.peers.find((p) => p.peer_id === id);
  return peer ? peer.name : id.slice(0, 8);
}

// The peer of a private room '@<prefix>+<prefix>': the prefix not ours.
function dmPeer(room) {
  const [a, b] = room.slice(1).split('+');
  const other = page.me.startsWith(a) ? b : a;
  const peer = page.peers.find((p) => p.peer_id.startsWith(other));
  return peer ? peer.peer_id : null;
}

function keyOf(room, from) {
  if (!room.startsWith('@')) return room;
  const peer = from && from !== page.me ? from : dmPeer(room);
  return peer ? 'dm:' + peer : null;
}

function conv(key) {
  if (!page.convs.has(key)) page.convs.set(key, { ids: new Set(), items: [], loaded: false });
  return page.convs.get(key);
}

function renderRooms() {
  ui.rooms.replaceChildren();
  for (const room of page.rooms) ui.rooms.append(roomButton(room, '#' + room, page.locked.has(room)));
  ui.dms.replaceChildren();
  for (const key of page.convs.keys()) {
    if (isDm(key)) ui.dms.append(roomButton(key, '@' + peerName(key.slice(3)), false));
  }
  const unread = [...page.unread.values()].reduce((a, b) => a + b, 0);
  document.title = (unread ? '(' + unread + ') ' : '') + 'punchgate';
}

function roomButton(key, label, locked) {
  const item = el('li');
  const button = el('button');
  button.type = 'button';
  button.dataset.room = key;
  button.append(el('span', 'label', label));
  if (locked) button.append(el('span', 'locked', 'locked'));
  const count = page.unread.get(key) || 0;
  if (count) {
    const badge = el('span', 'unread', count);
    badge.setAttribute('aria-label', count + ' unread');
    button.append(badge);
  }
  if (key === page.current) button.setAttribute('aria-current', 'true');
  button.addEventListener('click', () => openConv(key));
  item.append(button);
  return item;
}

async function openConv(key) {
  page.current = key;
  page.unread.delete(key);
  renderRooms();
  renderHead();
  renderMessages();
  renderFiles();
  const c = conv(key);
  if (!c.loaded) {
    c.loaded = true;
    await loadHistory(key);
  }
  ui.message.focus();
}

async function loadHistory(key) {
  const query = isDm(key) ? 'peer=' + encodeURIComponent(key.slice(3)) : 'room=' + encodeURIComponent(key);
  try {
    const response = await fetch('/api/history?' + query + '&count=200');
    const events = await answer(response);
    for (const event of events || []) addMessage(key, event, false);
    if (page.current === key) renderMessages();
  } catch (_) { /* logged */ }
}

function renderHead() {
  const key = page.current;
  ui.roomTitle.textContent = key === null ? 'No room' : isDm(key) ? '@' + peerName(key.slice(3)) : '#' + key;
  const room = key !== null && !isDm(key);
  ui.roomLock.hidden = !(room && page.locked.has(key));
  ui.leave.hidden = !room;
  ui.setPassword.hidden = !room;
}

// ------------------------------------------------------------- messages --

function addMessage(key, m, live) {
  const c = conv(key);
  if (c.ids.has(m.id)) return false;
  c.ids.add(m.id);
  const item = { id: m.id, from: m.from, name: m.from_name, text: m.text, ts: m.ts };
  c.items.push(item);
  c.items.sort((a, b) => a.ts - b.ts);
  if (live && key !== page.current) page.unread.set(key, (page.unread.get(key) || 0) + 1);
  return true;
}

function renderMessages() {
  ui.messages.replaceChildren();
  if (page.current === null) return;
  for (const item of conv(page.current).items) ui.messages.append(messageItem(item));
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function messageItem(item) {
  const own = item.from === page.me;
  const li = el('li', own ? 'own' : '');
  li.dataset.id = item.id;
  const meta = el('div', 'meta');
  meta.append(el('span', 'from', item.name));
  const time = el('time', '', clock(item.ts));
  time.dateTime = new Date(item.ts).toISOString();
  meta.append(time);
  if (own && page.own.has(item.id)) {
    const o = page.own.get(item.id);
    meta.append(el('span', 'state ' + o.status, o.status === 'delivered'
      ? 'delivered' + (o.delivered.size > 1 ? ' to ' + o.delivered.size : '') : o.status));
  }
  li.append(meta);
  li.append(el('div', 'text', item.text));
  return li;
}

function refreshMessage(id) {
  const old = ui.messages.querySelector('li[data-id="' + CSS.escape(id) + '"]');
  if (!old || page.current === null) return;
  const item = conv(page.current).items.find((i) => i.id === id);
  if (item) old.replaceWith(messageItem(item));
}

function showIfCurrent(key, added) {
  if (!added) return;
  if (key === page.current) {
    renderMessages();
  } else {
    renderRooms();
  }
}

async function send(event) {
  event.preventDefault();
  const text = ui.message.value;
  if (!text.trim()) return;
  const key = page.current;
  let line = text;
  if (isDm(key) && !text.startsWith('/')) line = '/msg ' + key.slice(3) + ' ' + text;
  const body = { line };
  if (key !== null && !isDm(key)) body.room = key;
  try {
    await post('/api/command', body);
    ui.message.value = '';
  } catch (_) { /* logged; the text stays to try again */ }
}

// ---------------------------------------------------------------- peers --

function renderPeers() {
  ui.peers.replaceChildren();
  for (const peer of page.peers) {
    const gate = page.gates.find((g) => g.peer_id === peer.peer_id);
    const li = el('li');
    const row = el('div', 'row');
    row.append(el('span', 'name', peer.name));
    row.append(el('span', 'status-' + peer.status, peer.status.replace('_', ' ')));
    const dm = el('button', 'small', 'Message');
    dm.type = 'button';
    dm.addEventListener('click', () => { conv('dm:' + peer.peer_id); openConv('dm:' + peer.peer_id); });
    row.append(dm);
    li.append(row);
    const idRow = el('div', 'row');
    const code = el('code', 'id', peer.peer_id);
    const copy = el('button', 'small', 'Copy id');
    copy.type = 'button';
    copy.setAttribute('aria-label', 'Copy the id of ' + peer.name);
    copy.addEventListener('click', () => copyText(peer.peer_id, code));
    idRow.append(code, copy);
    li.append(idRow);
    const parts = [];
    if (peer.path) parts.push(peer.path);
    if (peer.rtt_ms !== null && peer.rtt_ms !== undefined) parts.push('rtt ' + Number(peer.rtt_ms).toFixed(1) + ' ms');
    if (gate) parts.push(gate.remote, '↓' + bytes(gate.bytes_in) + ' ↑' + bytes(gate.bytes_out));
    if (peer.rooms && peer.rooms.length) parts.push(peer.rooms.map((r) => '#' + r).join(' '));
    li.append(el('div', 'detail', parts.join(' · ')));
    ui.peers.append(li);
  }
  if (!page.peers.length) ui.peers.append(el('li', 'hint', 'No peers yet: join a room others are in.'));
}

async function copyText(text, shown) {
  try {
    await navigator.clipboard.writeText(text);
    log('copied ' + text);
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents(shown);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    log('id selected: copy it with Ctrl+C');
  }
}

// ---------------------------------------------------------------- files --

function renderFiles() {
  ui.offers.replaceChildren();
  const room = page.current !== null && !isDm(page.current) ? page.current : null;
  const offers = page.files.filter((f) => room === null || f.room === room);
  for (const file of offers) {
    const li = el('li');
    li.dataset.hash = file.hash;
    const row = el('div', 'row');
    row.append(el('span', 'name', file.name));
    row.append(el('span', 'detail', bytes(file.bytes) + (file.files > 1 ? ', ' + file.files + ' files' : '')));
    const mine = file.providers.includes('you');
    if (!mine) {
      const get = el('button', 'small', 'Download');
      get.type = 'button';
      get.setAttribute('aria-label', 'Download ' + file.name);
      get.addEventListener('click', () => download(file));
      row.append(get);
    }
    li.append(row);
    li.append(el('div', 'detail', 'from ' + file.providers.join(', ') + ' · #' + file.room));
    const p = page.progress.get(file.hash);
    if (p) li.append(progressOf(p));
    ui.offers.append(li);
  }
  if (!offers.length) ui.offers.append(el('li', 'hint', 'Nothing offered in this room yet.'));
  ui.downloads.replaceChildren();
  for (const d of page.downloads) {
    const li = el('li');
    const row = el('div', 'row');
    if (d.fetchable) {
      const link = el('a', 'name', d.name);
      link.href = '/api/download/' + encodeURIComponent(d.hash);
      link.download = d.name;
      row.append(link);
    } else {
      row.append(el('span', 'name', d.name));
    }
    row.append(el('span', 'detail', bytes(d.bytes)));
    li.append(row);
    li.append(el('div', 'detail', d.path));
    ui.downloads.append(li);
  }
  ui.uploads.replaceChildren();
  for (const u of page.uploads) ui.uploads.append(el('li', 'detail', u.name + ': ' + u.state));
}

function progressOf(p) {
  const box = el('div', 'progress');
  const bar = el('progress');
  bar.max = p.total || 1;
  bar.value = p.bytes;
  bar.setAttribute('aria-label', 'Download of ' + p.name);
  box.append(bar);
  const pct = p.total ? Math.floor((100 * p.bytes) / p.total) : 0;
  box.append(el('div', 'detail', pct + ' % · ' + bytes(p.bytes) + ' of ' + bytes(p.total)
    + (p.rate ? ' · ' + bytes(p.rate) + '/s' : '') + (p.done ? ' · done' : '')));
  return box;
}

async function download(file) {
  page.progress.set(file.hash, { bytes: 0, total: file.bytes, rate: 0, name: file.name });
  renderFiles();
  try { await post('/api/get', { hash: file.hash }); } catch (_) { page.progress.delete(file.hash); renderFiles(); }
}

async function offer(files) {
  const room = page.current;
  if (room === null || isDm(room)) {
    log('open a room to offer files to it', 'error');
    return;
  }
  for (const file of files) {
    const entry = { name: file.name, state: 'uploading…' };
    page.uploads.push(entry);
    renderFiles();
    try {
      const response = await fetch('/api/upload?name=' + encodeURIComponent(file.name)
        + '&room=' + encodeURIComponent(room), { method: 'POST', body: file });
      await answer(response);
      entry.state = 'offered to #' + room;
    } catch (error) {
      entry.state = 'failed: ' + error.message;
    }
    renderFiles();
    scheduleRefresh();
  }
}

// ----------------------------------------------------------------- node --

function renderNode(state) {
  ui.myName.textContent = state.name;
  ui.myId.textContent = state.peer_id;
  const tracker = state.tracker_state;
  ui.trackerState.textContent = 'tracker: ' + (tracker === 'up' ? 'connected' : tracker === 'lost' ? 'lost' : 'none');
  ui.trackerState.className = 'badge ' + (tracker === 'up' ? 'good' : tracker === 'lost' ? 'bad' : '');
  ui.downloadsDir.textContent = state.downloads_dir;
  const rows = [
    ['name', state.name], ['id', state.peer_id], ['socket', state.addr || '–'],
    ['public address', state.reflexive || '–'], ['tracker', state.tracker || 'none'],
    ['connections', String(state.gates.length)],
  ];
  ui.nodeInfo.replaceChildren();
  for (const [name, value] of rows) ui.nodeInfo.append(el('dt', '', name), el('dd', '', value));
}

async function refresh() {
  let state;
  try {
    state = await answer(await fetch('/api/state'));
  } catch (_) { return; }
  page.me = state.peer_id;
  page.name = state.name;
  page.rooms = state.rooms;
  page.locked = new Set(state.password_rooms);
  page.peers = state.peers;
  page.gates = state.gates;
  page.files = state.files;
  page.downloads = state.downloads;
  renderNode(state);
  if (page.current === null || (!isDm(page.current) && !page.rooms.includes(page.current))) {
    const last = page.rooms[page.rooms.length - 1];
    if (last !== undefined) { openConv(last); } else { page.current = null; renderHead(); renderMessages(); }
  }
  renderRooms();
  renderHead();
  renderPeers();
  renderFiles();
}

let refreshTimer = null;
function scheduleRefresh() {
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 150);
}

// --------------------------------------------------------------- events --

function onEvent(e) {
  switch (e.event) {
    case 'message': {
      const key = keyOf(e.room, e.from);
      if (key === null) { scheduleRefresh(); return; }
      showIfCurrent(key, addMessage(key, e, !e.history));
      if (key.startsWith('dm:')) renderRooms();
      return;
    }
    case 'sent': {
      const key = keyOf(e.room, null);
      if (key === null) return;
      const status = e.peers === 0 && e.pending.length ? 'pending' : e.peers === 0 ? 'sent' : 'sending';
      page.own.set(e.id, { status, delivered: new Set() });
      showIfCurrent(key, addMessage(key, { id: e.id, from: page.me, from_name: page.name, text: e.text, ts: Date.now() }, false));
      if (key.startsWith('dm:')) renderRooms();
      return;
    }
    case 'delivered': {
      const o = page.own.get(e.id);
      if (o) { o.status = 'delivered'; o.delivered.add(e.peer_id); refreshMessage(e.id); }
      return;
    }
    case 'transfer_progress':
      page.progress.set(e.hash, { bytes: e.bytes, total: e.total, rate: e.bytes_per_s, name: e.name });
      renderFiles();
      return;
    case 'transfer_done': {
      const p = page.progress.get(e.hash) || { name: e.name, rate: 0 };
      page.progress.set(e.hash, { ...p, bytes: e.bytes, total: e.bytes, done: true });
      log('downloaded ' + e.name + ' to ' + e.path);
      scheduleRefresh();
      return;
    }
    case 'peer':
      // A link the room's gossip let go is no news; the list shows it.
      if (e.status !== 'in_room') log(e.name + ' is ' + e.status + (e.reason ? ' (' + e.reason + ')' : ''));
      scheduleRefresh();
      return;
    case 'connected':
      log('connected to ' + e.name + ' (' + e.path + ', ' + Number(e.rtt_ms).toFixed(1) + ' ms)');
      scheduleRefresh();
      return;
    case 'disconnected':
      log(e.name + ' left: ' + e.reason);
      scheduleRefresh();
      return;
    case 'path':
      log(e.name + ' is now ' + e.path);
      scheduleRefresh();
      return;
    case 'joined':
      log('joined #' + e.room + ' (' + e.members + ' members)');
      scheduleRefresh();
      openConv(e.room);
      return;
    case 'left':
      log('left #' + e.room);
      page.convs.delete(e.room);
      if (page.current === e.room) page.current = null;
      scheduleRefresh();
      return;
    case 'member':
      log(e.name + ' ' + e.change + ' #' + e.room);
      scheduleRefresh();
      return;
    case 'switched':
      log(e.name ? 'lines now go privately to ' + e.name : 'lines go to the room again');
      return;
    case 'trusted':
      log(e.addr + ' trusted on first use, fingerprint ' + e.fingerprint);
      return;
    case 'file_offered':
      log(e.from_name + ' offers ' + e.name + ' (' + bytes(e.bytes) + ') in #' + e.room);
      scheduleRefresh();
      return;
    case 'tracker':
      log('tracker ' + e.state + (e.reason ? ': ' + e.reason : ''), e.state === 'lost' ? 'error' : '');
      scheduleRefresh();
      return;
    case 'help':
      for (const line of e.commands.slice().reverse()) log(line.usage + ' — ' + line.about);
      return;
    case 'peers': case 'gates': case 'rooms': case 'files':
      log('/' + (e.event === 'gates' ? 'show' : e.event) + ': see the panels');
      scheduleRefresh();
      return;
    case 'info':
      log(e.message);
      scheduleRefresh();
      return;
    case 'error':
      log(e.message, 'error');
      return;
    default:
  }
}

let source = null;
function connect() {
  source = new EventSource('/api/events');
  source.addEventListener('hello', () => {
    ui.linkState.textContent = 'live';
    ui.linkState.className = 'badge good';
    // After a reconnect: what was missed comes from the state and history.
    for (const c of page.convs.values()) c.loaded = false;
    refresh().then(() => {
      if (page.current !== null) { conv(page.current).loaded = true; loadHistory(page.current); }
    });
  });
  source.addEventListener('resync', () => refresh());
  source.addEventListener('message', (m) => {
    let event;
    try { event = JSON.parse(m.data); } catch (_) { return; }
    onEvent(event);
  });
  source.addEventListener('error', () => {
    ui.linkState.textContent = 'reconnecting…';
    ui.linkState.className = 'badge bad';
    if (source.readyState === EventSource.CLOSED) {
      source = null;
      setTimeout(connect, 2000);
    }
  });
}

// -------------------------------------------------------------- prompts --

// Asks for a password in the page's dialog; resolves to it, or null.
function askPassword(prompt) {
  return new Promise((resolve) => {
    ui.passwordPrompt.textContent = prompt;
    ui.passwordInput.value = '';
    const finish = (value) => {
      ui.passwordForm.removeEventListener('submit', submit);
      ui.passwordCancel.removeEventListener('click', cancel);
      ui.passwordDialog.removeEventListener('cancel', cancel);
      if (ui.passwordDialog.open) ui.passwordDialog.close();
      resolve(value);
    };
    const submit = (event) => { event.preventDefault(); if (ui.passwordInput.value) finish(ui.passwordInput.value); };
    const cancel = (event) => { event.preventDefault(); finish(null); };
    ui.passwordForm.addEventListener('submit', submit);
    ui.passwordCancel.addEventListener('click', cancel);
    ui.passwordDialog.addEventListener('cancel', cancel);
    ui.passwordDialog.showModal();
    ui.passwordInput.focus();
  });
}

async function join(event) {
  event.preventDefault();
  const room = ui.joinRoom.value.trim().replace(/^#/, '');
  if (!room) return;
  const body = { room };
  if (ui.joinLocked.checked) {
    const password = await askPassword('Password of #' + room);
    if (password === null) return;
    body.password = password;
  }
  try {
    await post('/api/join', body);
    ui.joinRoom.value = '';
    ui.joinLocked.checked = false;
  } catch (_) { /* logged */ }
}

async function setPassword() {
  const room = page.current;
  if (room === null || isDm(room)) return;
  const password = await askPassword('New password of #' + room + ': only peers who know it share the room');
  if (password === null) return;
  try { await post('/api/command', { line: '/password ' + password, room }); } catch (_) { /* logged */ }
  scheduleRefresh();
}

async function leave() {
  const room = page.current;
  if (room === null || isDm(room)) return;
  try { await post('/api/leave', { room }); } catch (_) { /* logged */ }
}

// ---------------------------------------------------------------- start --

function wireDrop() {
  let depth = 0;
  const zone = ui.chat;
  zone.addEventListener('dragenter', (e) => { e.preventDefault(); depth += 1; zone.classList.add('dropping'); ui.dropHint.hidden = false; });
  zone.addEventListener('dragover', (e) => { e.preventDefault(); });
  zone.addEventListener('dragleave', () => {
    depth -= 1;
    if (depth <= 0) { depth = 0; zone.classList.remove('dropping'); ui.dropHint.hidden = true; }
  });
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove('dropping');
    ui.dropHint.hidden = true;
    if (e.dataTransfer && e.dataTransfer.files.length) offer([...e.dataTransfer.files]);
  });
}

document.addEventListener('DOMContentLoaded', () => {
  const ids = {
    rooms: 'rooms', dms: 'dms', messages: 'messages', message: 'message', roomTitle: 'room-title',
    roomLock: 'room-lock', leave: 'leave-room', setPassword: 'set-password', peers: 'peers',
    offers: 'offers', downloads: 'downloads', uploads: 'uploads', downloadsDir: 'downloads-dir',
    nodeInfo: 'node-info', log: 'log', myName: 'my-name', myId: 'my-id', trackerState: 'tracker-state',
    linkState: 'link-state', chat: 'chat', dropHint: 'drop-hint', joinRoom: 'join-room',
    joinLocked: 'join-locked', passwordDialog: 'password-dialog', passwordForm: 'password-form',
    passwordPrompt: 'password-prompt', passwordInput: 'password-input', passwordCancel: 'password-cancel',
    fileInput: 'file-input',
  };
  for (const [name, id] of Object.entries(ids)) ui[name] = document.getElementById(id);
  document.getElementById('message-form').addEventListener('submit', send);
  document.getElementById('join-form').addEventListener('submit', join);
  document.getElementById('copy-my-id').addEventListener('click', () => copyText(page.me, ui.myId));
  ui.setPassword.addEventListener('click', setPassword);
  ui.leave.addEventListener('click', leave);
  ui.fileInput.addEventListener('change', () => { offer([...ui.fileInput.files]); ui.fileInput.value = ''; });
  wireDrop();
  setInterval(() => { if (!document.hidden) refresh(); }, 5000);
  connect();
});
