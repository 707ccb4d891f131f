// The operator's console: a client of the gateway's JSON admin routes (token_service/admin.py), nothing more.
// Every text from the API reaches the page through textContent; the admin key stays in sessionStorage.
'use strict';

(() => {
  const KEY_STORE = 'kimi-gateway.admin-key';
  const REFRESH_MS = 5000;
  const LOG_PAGE = 50;
  const $ = (selector) => document.querySelector(selector);

  const state = {
    view: 'accounts',
    paused: false, // a 401 stops auto-refresh until the key changes
    busy: false,
    again: false, // a refresh asked for while one runs runs right after it
    usageOf: null, // {id, name} of the key whose usage is open
    log: { filters: {}, before: null, older: [], next: null },
    errors: { refresh: '', action: '' },
  };

  // -- DOM helpers ----------------------------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === 'class') node.className = value;
      else if (name === 'text') node.textContent = value;
      else node.setAttribute(name, value);
    }
    node.append(...children);
    return node;
  }

  function setText(node, text) {
    const value = text === null || text === undefined ? '' : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setAttr(node, name, value) {
    if (value === null || value === undefined) node.removeAttribute(name);
    else if (node.getAttribute(name) !== String(value)) node.setAttribute(name, value);
  }

  // Rows keyed by `keyOf`: existing rows are updated in place (no flicker, focus kept), new ones built once.
  function syncRows(tbody, items, keyOf, build, update) {
    const existing = new Map();
    for (const row of Array.from(tbody.rows)) existing.set(row.dataset.key, row);
    let previous = null;
    for (const item of items) {
      const key = String(keyOf(item));
      let row = existing.get(key);
      if (row) existing.delete(key);
      else {
        row = build(item);
        row.dataset.key = key;
      }
      update(row, item);
      const wanted = previous ? previous.nextSibling : tbody.firstChild;
      if (row !== wanted) tbody.insertBefore(row, wanted);
      previous = row;
    }
    for (const row of existing.values()) row.remove();
  }

  function cells(row) {
    return Array.from(row.cells);
  }

  function dash(value) {
    return value === null || value === undefined || value === '' ? '—' : String(value);
  }

  function utc(ms) {
    return new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
  }

  // Time left until `expSeconds` (unix seconds): "29 d 23 h", "5 h 3 m", "4 m 12 s", "expired", "never".
  function countdown(expSeconds, nowMs = Date.now()) {
    if (expSeconds === null || expSeconds === undefined) return 'never';
    const left = Math.floor(expSeconds - nowMs / 1000);
    if (left <= 0) return 'expired';
    const days = Math.floor(left / 86400);
    const hours = Math.floor((left % 86400) / 3600);
    const minutes = Math.floor((left % 3600) / 60);
    if (days > 0) return `${days} d ${hours} h`;
    if (hours > 0) return `${hours} h ${minutes} m`;
    return `${minutes} m ${left % 60} s`;
  }

  function ago(iso, nowMs = Date.now()) {
    if (!iso) return 'never';
    const seconds = Math.max(0, Math.floor((nowMs - Date.parse(iso)) / 1000));
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} m ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86400)} d ago`;
  }

  // -- the admin API --------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function adminKey() {
    return sessionStorage.getItem(KEY_STORE) || '';
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const key = adminKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    const init = { method, headers, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, `the gateway did not answer (${error.message})`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) throw new ApiError(response.status, errorMessage(data, text, response));
    return data;
  }

  // The admin shape is {error: "…"}; the gateway's own errors (404 …) are OpenAI's {error: {message}}.
  function errorMessage(data, text, response) {
    if (data && typeof data.error === 'string') return data.error;
    if (data && data.error && typeof data.error.message === 'string') return data.error.message;
    return text.trim().slice(0, 300) || response.statusText;
  }

  function describe(error) {
    if (error instanceof ApiError) return error.status ? `HTTP ${error.status}: ${error.message}` : error.message;
    return String(error);
  }

  function showErrors() {
    const box = $('#error');
    const text = [state.errors.action, state.errors.refresh].filter(Boolean).join('\n');
    setText(box, text);
    box.hidden = !text;
  }

  function failed(source, error) {
    state.errors[source] = describe(error);
    if (error instanceof ApiError && error.status === 401) {
      state.paused = true;
      state.errors[source] += ' — enter the admin key above.';
    }
    showErrors();
  }

  // A user's action: its error stays until the next action; the views refresh after it.
  async function act(button, work) {
    state.errors.action = '';
    showErrors();
    if (button) button.disabled = true;
    try {
      await work();
    } catch (error) {
      failed('action', error);
    } finally {
      if (button) button.disabled = false;
    }
    await refresh();
  }

  // -- accounts -------------------------------------------------------------------------------------------

  const ACCOUNT_COLUMNS = ['id', 'kind', 'state', 'region', 'expiry', 'error', 'used', 'actions'];

  function buildAccount() {
    const row = el('tr');
    for (const name of ACCOUNT_COLUMNS) row.append(el('td', { class: `c-${name}` }));
    const [id, , , , , error] = cells(row);
    id.append(el('code'));
    error.classList.add('wrap');
    cells(row)[7].classList.add('actions');
    cells(row)[7].append(
      el('button', { type: 'button', class: 'secondary', 'data-action': 'toggle' }),
      el('button', { type: 'button', class: 'secondary', 'data-action': 'probe', text: 'Probe' }),
      el('button', { type: 'button', class: 'danger', 'data-action': 'remove', text: 'Remove' }),
    );
    return row;
  }

  function updateAccount(row, account) {
    const [id, kind, status, region, expiry, error, used, actions] = cells(row);
    setText(id.firstChild, account.id);
    setAttr(id, 'title', account.preview);
    setText(kind, account.ephemeral ? `${account.kind} (pass-through)` : account.kind);
    setText(status, account.state);
    status.className = `c-state state state-${account.state}`;
    setAttr(status, 'title', account.state_reason || null);
    setText(region, dash(account.region));
    setAttr(region, 'title', account.origin ? `calls go to ${account.origin}` : null);
    expiry.dataset.exp = account.exp === null ? '' : String(account.exp);
    setAttr(expiry, 'title', account.expires_at);
    setText(expiry, countdown(account.exp));
    setText(error, account.last_error ? `${account.last_error}` : '—');
    setAttr(error, 'title', account.last_error_at);
    used.dataset.at = account.last_used_at || '';
    setAttr(used, 'title', account.last_used_at);
    setText(used, ago(account.last_used_at));
    const [toggle, probe, remove] = actions.children;
    const disabled = account.state === 'disabled';
    setText(toggle, disabled ? 'Enable' : 'Disable');
    toggle.dataset.action = disabled ? 'enable' : 'disable';
    for (const button of [toggle, probe, remove]) setAttr(button, 'aria-label', `${button.textContent} ${account.id}`);
  }

  async function loadAccounts() {
    const { accounts } = await api('GET', '/admin/accounts');
    syncRows($('#accounts-table tbody'), accounts, (a) => a.id, buildAccount, updateAccount);
    $('#accounts-empty').hidden = accounts.length > 0;
  }

  async function accountAction(button) {
    const id = button.closest('tr').dataset.key;
    const path = `/admin/accounts/${encodeURIComponent(id)}`;
    const action = button.dataset.action;
    if (action === 'remove') {
      if (!window.confirm(`Remove account ${id}? Its token is deleted from the pool.`)) return;
      await act(button, () => api('DELETE', path));
      return;
    }
    await act(button, async () => {
      const answer = await api('POST', `${path}/${action}`);
      if (action === 'probe') setText($('#probe-result'), `${id}: ${verdict(answer.result)}`);
    });
  }

  function verdict(result) {
    return typeof result === 'string' ? result : JSON.stringify(result);
  }

  async function addAccounts(event) {
    event.preventDefault();
    const area = $('#add-text');
    await act($('#add-submit'), async () => {
      const origin = $('#add-origin').value;
      const answer = await api('POST', '/admin/accounts', origin ? { text: area.value, base_url: origin } : { text: area.value });
      const added = answer.added.map((a) => `${a.kind} ${a.account_id}${a.created ? '' : ' (already there)'}`);
      const errors = answer.errors.map((e) => `line ${e.line}: ${e.error}`);
      setText($('#add-result'), [`Added ${added.length}${added.length ? `: ${added.join(', ')}` : ''}`, ...errors].join('; '));
      if (!errors.length) area.value = ''; // the tokens leave the page once they are stored
    });
  }

  async function probeAll(event) {
    await act(event.currentTarget, async () => {
      const { results } = await api('POST', '/admin/accounts/probe');
      const counts = {};
      for (const result of Object.values(results)) counts[verdict(result)] = (counts[verdict(result)] || 0) + 1;
      const summary = Object.entries(counts).map(([name, n]) => `${name} ${n}`).join(', ');
      setText($('#probe-result'), `Probed ${Object.keys(results).length}${summary ? `: ${summary}` : ''}`);
    });
  }

  // -- client keys ----------------------------------------------------------------------------------------

  const KEY_COLUMNS = ['name', 'id', 'models', 'rpm', 'tpm', 'tpd', 'conc', 'status', 'expires', 'actions'];

  function keyStatus(key) {
    if (key.revoked) return 'revoked';
    if (!key.enabled) return 'disabled';
    if (key.expires_s !== null && key.expires_s * 1000 <= Date.now()) return 'expired';
    return 'enabled';
  }

  function buildKey() {
    const row = el('tr');
    for (const name of KEY_COLUMNS) row.append(el('td', { class: `c-${name}` }));
    cells(row)[1].append(el('code'));
    cells(row)[2].classList.add('wrap');
    cells(row)[9].classList.add('actions');
    cells(row)[9].append(
      el('button', { type: 'button', class: 'secondary', 'data-action': 'usage', text: 'Usage' }),
      el('button', { type: 'button', class: 'secondary', 'data-action': 'disable' }),
      el('button', { type: 'button', class: 'secondary', 'data-action': 'revoke', text: 'Revoke' }),
      el('button', { type: 'button', class: 'danger', 'data-action': 'delete', text: 'Delete' }),
    );
    return row;
  }

  function updateKey(row, key) {
    const [name, id, models, rpm, tpm, tpd, conc, status, expires, actions] = cells(row);
    row.dataset.name = key.name;
    setText(name, key.name);
    setText(id.firstChild, key.id);
    setText(models, key.models ? key.models.join(', ') : 'all');
    setText(rpm, dash(key.requests_per_minute));
    setText(tpm, dash(key.tokens_per_minute));
    setText(tpd, dash(key.tokens_per_day));
    setText(conc, dash(key.concurrent_requests));
    const shown = keyStatus(key);
    setText(status, shown);
    status.className = `c-status state ${shown === 'enabled' ? 'status-ok' : 'status-bad'}`;
    expires.dataset.exp = key.expires_s === null ? '' : String(key.expires_s);
    setAttr(expires, 'title', key.expires_s === null ? null : utc(key.expires_s * 1000));
    setText(expires, countdown(key.expires_s));
    const [usage, toggle, revoke, remove] = actions.children;
    setText(toggle, key.enabled ? 'Disable' : 'Enable');
    toggle.dataset.action = key.enabled ? 'disable' : 'enable';
    toggle.disabled = key.revoked;
    revoke.disabled = key.revoked;
    for (const button of actions.children) setAttr(button, 'aria-label', `${button.textContent} ${key.name}`);
  }

  async function loadKeys() {
    const { keys } = await api('GET', '/admin/keys');
    syncRows($('#keys-table tbody'), keys, (k) => k.id, buildKey, updateKey);
    $('#keys-empty').hidden = keys.length > 0;
    if (state.usageOf) await loadUsage();
  }

  function positive(selector) {
    const raw = $(selector).value.trim();
    return raw === '' ? undefined : Number(raw);
  }

  async function createKey(event) {
    event.preventDefault();
    const body = { name: $('#key-name').value.trim() };
    const models = $('#key-models').value.split(',').map((m) => m.trim()).filter(Boolean);
    if (models.length) body.models = models;
    const limits = {
      requests_per_minute: '#key-rpm',
      tokens_per_minute: '#key-tpm',
      tokens_per_day: '#key-tpd',
      concurrent_requests: '#key-conc',
    };
    for (const [field, selector] of Object.entries(limits)) {
      const value = positive(selector);
      if (value !== undefined) body[field] = value;
    }
    const days = positive('#key-days');
    if (days !== undefined) body.expires_s = Math.round(Date.now() / 1000 + days * 86400); // unix seconds
    await act($('#key-submit'), async () => {
      const answer = await api('POST', '/admin/keys', body);
      setText($('#new-secret-name'), answer.key.name);
      setText($('#new-secret-value'), answer.secret);
      $('#new-secret').hidden = false;
      $('#key-create').reset();
    });
  }

  function hideSecret() {
    setText($('#new-secret-value'), '');
    $('#new-secret').hidden = true;
  }

  async function keyAction(button) {
    const row = button.closest('tr');
    const id = row.dataset.key;
    const path = `/admin/keys/${encodeURIComponent(id)}`;
    const action = button.dataset.action;
    if (action === 'usage') {
      state.usageOf = { id, name: row.dataset.name };
      await act(button, loadUsage);
      $('#usage').hidden = false;
      return;
    }
    if (action === 'delete') {
      if (!window.confirm(`Delete key ${row.dataset.name}? Clients using it are refused at once.`)) return;
      if (state.usageOf && state.usageOf.id === id) closeUsage();
      await act(button, () => api('DELETE', path));
      return;
    }
    if (action === 'enable' || action === 'disable') {
      await act(button, () => api('PATCH', path, { enabled: action === 'enable' }));
      return;
    }
    if (!window.confirm(`Revoke key ${row.dataset.name}? Clients using it are refused at once.`)) return;
    await act(button, () => api('POST', `${path}/revoke`));
  }

  async function loadUsage() {
    const { id, name } = state.usageOf;
    const answer = await api('GET', `/admin/keys/${encodeURIComponent(id)}/usage?days=7`);
    setText($('#usage-name'), name);
    const rows = [];
    for (const [day, models] of Object.entries(answer.days)) {
      for (const [model, c] of Object.entries(models)) rows.push({ day, model, ...c });
    }
    syncRows(
      $('#usage-table tbody'),
      rows,
      (r) => `${r.day}|${r.model}`,
      () => el('tr', {}, ...Array.from({ length: 7 }, () => el('td'))),
      (row, r) => {
        const values = [r.day, r.model, r.requests, r.errors, r.prompt_tokens, r.completion_tokens, dash(r.ttft_ms_avg)];
        cells(row).forEach((cell, i) => setText(cell, values[i]));
      },
    );
    $('#usage-empty').hidden = rows.length > 0;
  }

  function closeUsage() {
    state.usageOf = null;
    $('#usage').hidden = true;
  }

  // -- request log ----------------------------------------------------------------------------------------

  async function loadRequests() {
    const query = new URLSearchParams({ limit: String(LOG_PAGE) });
    for (const [name, value] of Object.entries(state.log.filters)) if (value) query.set(name, value);
    if (state.log.before) query.set('before', state.log.before);
    const answer = await api('GET', `/admin/requests?${query}`);
    state.log.next = answer.next;
    syncRows(
      $('#requests-table tbody'),
      answer.requests,
      (r) => r.id,
      () => el('tr', {}, ...Array.from({ length: 10 }, () => el('td'))),
      updateRequest,
    );
    $('#requests-empty').hidden = answer.requests.length > 0;
    $('#log-next').disabled = !answer.next;
    $('#log-first').disabled = !state.log.before;
  }

  function updateRequest(row, r) {
    const tokens = `${r.prompt_tokens} / ${r.completion_tokens}${r.estimated ? ' (est.)' : ''}`;
    const values = [
      utc(r.t * 1000), r.key, r.dialect, r.model, r.status, Math.round(r.duration_ms),
      r.ttft_ms === null ? '—' : Math.round(r.ttft_ms), tokens, dash(r.account), dash(r.error),
    ];
    cells(row).forEach((cell, i) => setText(cell, values[i]));
    const status = cells(row)[4];
    status.className = r.status < 400 ? 'status-ok' : r.status < 500 ? 'status-warn' : 'status-bad';
    cells(row)[9].className = 'wrap';
    setAttr(row, 'title', r.request_id);
  }

  async function filterRequests(event) {
    event.preventDefault();
    state.log.filters = {
      key: $('#log-key').value.trim(),
      status: $('#log-status').value.trim(),
      model: $('#log-model').value.trim(),
    };
    state.log.before = null;
    state.log.older = [];
    await act(null, async () => {});
  }

  async function olderRequests() {
    if (!state.log.next) return;
    state.log.older.push(state.log.before);
    state.log.before = state.log.next;
    await act(null, async () => {});
  }

  async function newestRequests() {
    state.log.before = null;
    state.log.older = [];
    await act(null, async () => {});
  }

  // -- system ---------------------------------------------------------------------------------------------

  async function loadSystem() {
    const answer = await api('GET', '/admin/system');
    setText($('#sys-stream'), answer.jobs.stream_length);
    setText($('#sys-pending'), answer.jobs.pending);
    setText($('#sys-dead'), answer.jobs.dead_letter);
    setText($('#sys-alive'), answer.workers.filter((w) => w.alive).length);
    setText($('#sys-stale'), `(alive: a heartbeat at most ${answer.stale_after_s} s old)`);
    syncRows(
      $('#workers-table tbody'),
      answer.workers,
      (w) => w.name,
      () => el('tr', {}, el('td', {}, el('code')), el('td'), el('td'), el('td')),
      (row, w) => {
        const [name, beat, age, alive] = cells(row);
        setText(name.firstChild, w.name);
        setText(beat, utc(w.last_heartbeat_ms));
        setText(age, w.age_s.toFixed(1));
        setText(alive, w.alive ? 'yes' : 'no');
        alive.className = w.alive ? 'alive-yes' : 'alive-no';
      },
    );
    $('#workers-empty').hidden = answer.workers.length > 0;
    pairs($('#states-table tbody'), answer.accounts.by_state);
    pairs($('#kinds-table tbody'), answer.accounts.by_kind);
    setText($('#sys-passthrough'), answer.accounts.passthrough);
  }

  function pairs(tbody, counts) {
    syncRows(
      tbody,
      Object.entries(counts),
      ([name]) => name,
      () => el('tr', {}, el('th', { scope: 'row' }), el('td')),
      (row, [name, n]) => {
        setText(row.cells[0], name);
        setText(row.cells[1], n);
      },
    );
  }

  // -- views, refresh, key --------------------------------------------------------------------------------

  const LOADERS = { accounts: loadAccounts, keys: loadKeys, requests: loadRequests, system: loadSystem };

  async function refresh() {
    if (state.busy) {
      state.again = true;
      return;
    }
    state.busy = true;
    try {
      do {
        state.again = false;
        try {
          await LOADERS[state.view]();
          state.errors.refresh = '';
          state.paused = false;
          setText($('#refreshed'), `updated ${new Date().toLocaleTimeString()}`);
        } catch (error) {
          failed('refresh', error);
        }
      } while (state.again);
    } finally {
      state.busy = false;
      showErrors();
    }
  }

  function select(view, focus = false) {
    if (!LOADERS[view]) view = 'accounts';
    state.view = view;
    for (const tab of document.querySelectorAll('[role=tab]')) {
      const on = tab.dataset.view === view;
      tab.setAttribute('aria-selected', String(on));
      tab.tabIndex = on ? 0 : -1;
      if (on && focus) tab.focus();
      $(`#view-${tab.dataset.view}`).hidden = !on;
    }
    if (location.hash !== `#${view}`) history.replaceState(null, '', `#${view}`);
    refresh();
  }

  function tabKeys(event) {
    const tabs = Array.from(document.querySelectorAll('[role=tab]'));
    const at = tabs.findIndex((t) => t.dataset.view === state.view);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step === undefined) return;
    event.preventDefault();
    select(tabs[(at + step + tabs.length) % tabs.length].dataset.view, true);
  }

  function tick() {
    const now = Date.now();
    for (const cell of document.querySelectorAll('[data-exp]')) {
      if (cell.dataset.exp !== '') setText(cell, countdown(Number(cell.dataset.exp), now));
    }
    for (const cell of document.querySelectorAll('td[data-at]')) setText(cell, ago(cell.dataset.at, now));
  }

  function useKey(event) {
    event.preventDefault();
    const value = $('#admin-key').value.trim();
    if (value) sessionStorage.setItem(KEY_STORE, value);
    else sessionStorage.removeItem(KEY_STORE);
    state.paused = false;
    state.errors.action = '';
    refresh();
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY_STORE);
    $('#admin-key').value = '';
    state.paused = false;
    refresh();
  }

  function start() {
    $('#admin-key').value = adminKey();
    $('#key-form').addEventListener('submit', useKey);
    $('#key-forget').addEventListener('click', forgetKey);
    for (const tab of document.querySelectorAll('[role=tab]')) {
      tab.addEventListener('click', () => select(tab.dataset.view));
      tab.addEventListener('keydown', tabKeys);
    }
    $('#add-form').addEventListener('submit', addAccounts);
    $('#probe-all').addEventListener('click', probeAll);
    $('#accounts-table tbody').addEventListener('click', (event) => {
      const button = event.target.closest('button[data-action]');
      if (button) accountAction(button);
    });
    $('#key-create').addEventListener('submit', createKey);
    $('#new-secret-hide').addEventListener('click', hideSecret);
    $('#new-secret-copy').addEventListener('click', () => navigator.clipboard.writeText($('#new-secret-value').textContent));
    $('#keys-table tbody').addEventListener('click', (event) => {
      const button = event.target.closest('button[data-action]');
      if (button) keyAction(button);
    });
    $('#usage-close').addEventListener('click', closeUsage);
    $('#log-filter').addEventListener('submit', filterRequests);
    $('#log-next').addEventListener('click', olderRequests);
    $('#log-first').addEventListener('click', newestRequests);
    select(location.hash.slice(1) || 'accounts');
    setInterval(() => {
      if (!document.hidden && !state.paused) refresh();
    }, REFRESH_MS);
    setInterval(tick, 1000);
  }

  start();
})();
