// apikey key console. Plain ES2020, no framework, no build step (README, "Key console").
//
// Rules this file keeps, because the page handles tokens under a strict CSP:
// - every request goes through api(), which sends the key in the X-API-Key header only (never in
//   a URL) and turns every failure into an ApiError whose text is "<message> (<reason>)";
// - the DOM is built with createElement and textContent, so nothing the API returns is ever
//   parsed as markup;
// - looks change through classes and the hidden attribute only (the CSP forbids inline styles);
// - the key lives in memory and sessionStorage, nowhere else, and signing out forgets it.

const STORAGE_KEY = 'apikey.console.key';
const EXPIRING_WITHIN_MS = 7 * 24 * 3600 * 1000;
const MAX_GRACE_SECONDS = 366 * 24 * 3600; // the API's own limit
const PARTNER_PAGE_SIZE = 500;
const PARTNER_PAGES_MAX = 20;
const AUDIT_PAGE_SIZE = 100;
const ENDPOINT_PAGE_SIZE = 16; // a partner's most endpoints: each one loads its deliveries too
const DELIVERY_PAGE_SIZE = 10;
const TEST_POLL_MS = 1000; // after "Send test event", how often its delivery is looked at...
const TEST_POLLS = 20; // ...and for how long, until it is no longer pending

const $ = (selector, root = document) => root.querySelector(selector);

const session = { token: null, role: null, keyId: null, partnerId: null };

const freshView = () => ({
  partners: [], // every partner the key may see
  keys: [], // the keys shown on this page
  scopesInUse: new Set(), // scopes seen in listed keys: the issue dialog's checkboxes
  filters: readFilters(),
  cursor: null, // this page's cursor (null: the first page)
  previousCursors: [], // the cursors of the pages before it, for "Previous"
  nextCursor: null,
  dialogKey: null, // the key the rotate, revoke or audit dialog acts on
  auditCursor: null,
  reminders: { expiring: [], rotation_due: [] },
  endpoints: [], // the webhook endpoints shown
  endpointsCursor: null, // next_cursor of the last page of endpoints
  dialogEndpoint: null, // the endpoint the rotate-secret or delete dialog acts on
});
let view = null;

// ---------------------------------------------------------------- API and errors

class ApiError extends Error {
  constructor(message, reason, { status = 0, field = null, retryAfter = null } = {}) {
    super(message);
    this.reason = reason;
    this.status = status;
    this.field = field;
    this.retryAfter = retryAfter;
  }

  // "<message> (<reason>)", then what a person needs to act on: the field, when to retry.
  get text() {
    let text = `${this.message} (${this.reason})`;
    if (this.field) text += ` - field: ${this.field}`;
    if (this.retryAfter) text += ` - retry in ${this.retryAfter} s`;
    return text;
  }
}

// A mistake found before sending, described like the API's own 422.
const invalid = (field, message) => new ApiError(message, 'invalid_field', { status: 422, field });

async function api(method, path, { query = {}, body } = {}) {
  if (!session.token) throw new ApiError('you are signed out', 'signed_out');
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
  }
  const headers = { 'X-API-Key': session.token, Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(`could not reach the server: ${err.message}`, 'network_error');
  }
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  throw errorFrom(response, data);
}

// The API's JSON error, or a description of an answer without one (405, timeout 503, proxy).
function errorFrom(response, data) {
  const options = { status: response.status, retryAfter: response.headers.get('Retry-After') };
  if (data && typeof data.error === 'string') {
    return new ApiError(data.error, data.reason || `http_${response.status}`, { ...options, field: data.field || null });
  }
  const what = response.status === 503 ? 'the server is unavailable or timed out' : 'the server refused the request';
  return new ApiError(`${what}: HTTP ${response.status} ${response.statusText}`.trim(), `http_${response.status}`, options);
}

const keyPath = (keyId, action = '') => `/v1/keys/${encodeURIComponent(keyId)}${action ? `/${action}` : ''}`;
const endpointPath = (id, action = '') => `/v1/webhooks/${encodeURIComponent(id)}${action ? `/${action}` : ''}`;

// ---------------------------------------------------------------- small DOM helpers

// el('td', { class: 'x', text: 'y', data: { keyId: 'z' } }, child, ...)
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = value;
    else if (name === 'class') node.className = value;
    else if (name === 'data') Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function setText(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

function notify(text) {
  setText($('#notice'), text);
}

const splitList = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// ---------------------------------------------------------------- time

function formatTime(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

// Table cells show the day only, to fit; the tooltip has the exact time.
function formatDay(iso) {
  return new Date(iso).toLocaleDateString(undefined, { dateStyle: 'medium' });
}

const UNITS = [
  [3600, 'min', 60],
  [86400, 'h', 3600],
  [30 * 86400, 'day', 86400],
  [365 * 86400, 'month', 30 * 86400],
  [Infinity, 'year', 365 * 86400],
];

// "3 min ago", "in 5 days", "just now".
function relativeTime(iso, now = Date.now()) {
  const seconds = Math.round((Date.parse(iso) - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 60) return seconds > 0 ? 'in under a minute' : 'just now';
  const [, unit, size] = UNITS.find(([limit]) => abs < limit);
  const n = Math.round(abs / size);
  const label = unit === 'min' || unit === 'h' ? `${n} ${unit}` : `${n} ${unit}${n === 1 ? '' : 's'}`;
  return seconds < 0 ? `${label} ago` : `in ${label}`;
}

function timeNode(iso, { relative = false, day = false, empty = 'never' } = {}) {
  if (!iso) return el('span', { class: 'muted', text: empty });
  let text = formatTime(iso);
  if (relative) text = relativeTime(iso);
  else if (day) text = formatDay(iso);
  return el('time', { datetime: iso, title: formatTime(iso), text });
}

// "1 hour", "2 days 3 h", "90 s": how long a grace period lasts.
function duration(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${+(seconds / 3600).toFixed(1)} h`;
  return `${+(seconds / 86400).toFixed(1)} days`;
}

// ---------------------------------------------------------------- key status and scopes

// The API's status, except that a live key expiring within 7 days is "expiring".
function displayStatus(key, now = Date.now()) {
  if (key.status === 'live' && key.expires_at && Date.parse(key.expires_at) - now <= EXPIRING_WITHIN_MS) {
    return 'expiring';
  }
  return key.status;
}

function statusText(key, status) {
  switch (status) {
    case 'expiring': return `expiring ${relativeTime(key.expires_at)}`;
    case 'not_yet_valid': return key.not_before ? `not yet valid (${relativeTime(key.not_before)})` : 'not yet valid';
    default: return status;
  }
}

// A rotated key in its grace period is still live until its revoked_at.
function rotationNote(key) {
  if (!key.rotated_to) return null;
  const until = key.status === 'live' && key.revoked_at ? `, works until ${formatTime(key.revoked_at)}` : '';
  return el('span', { class: 'note', text: `rotated to ${key.rotated_to}${until}` });
}

// The extension's rule (extension/src/scope.rs): "*", or resource:action where resource is
// [A-Za-z0-9_.-]+ and action is "*" or [A-Za-z0-9_.-]+, at most 128 bytes.
const WORD = /^[A-Za-z0-9_.-]+$/;
function scopeProblem(scope) {
  if (new TextEncoder().encode(scope).length > 128) return 'is longer than 128 characters';
  if (scope === '*') return null;
  const colon = scope.indexOf(':');
  if (colon < 0) return 'expected resource:action, e.g. orders:read';
  const resource = scope.slice(0, colon);
  const action = scope.slice(colon + 1);
  if (!WORD.test(resource)) return "the resource must be letters, digits, '_', '-' or '.'";
  if (action !== '*' && !WORD.test(action)) return "the action must be '*' or letters, digits, '_', '-' or '.'";
  return null;
}

// ---------------------------------------------------------------- running an action

// Runs one user action: clears the previous error, disables the button while it runs, and
// shows a failure in #error and next to the action (slot), marking the named field when the
// form maps it. Returns true when the action succeeded.
async function act({ button = null, slot = null, fields = {} }, work) {
  clearError(slot);
  if (button) button.disabled = true;
  try {
    await work();
    return true;
  } catch (err) {
    const error = asApiError(err);
    showError(slot, error, fields[error.field]);
    return false;
  } finally {
    if (button) button.disabled = false;
  }
}

// A bug of this page (a TypeError, say) is still reported, not swallowed.
function asApiError(err) {
  if (err instanceof ApiError) return err;
  console.error(err);
  return new ApiError(String((err && err.message) || err), 'client_error');
}

function showError(slot, error, fieldId) {
  setText($('#error'), error.text);
  $('#error-bar').hidden = false;
  if (slot) setText(slot, error.text);
  const field = fieldId && document.getElementById(fieldId);
  if (field) {
    field.setAttribute('aria-invalid', 'true');
    field.focus();
  }
}

function clearError(slot) {
  setText($('#error'), '');
  $('#error-bar').hidden = true;
  notify('');
  if (slot) {
    setText(slot, '');
    const scope = slot.closest('form, dialog');
    if (scope) scope.querySelectorAll('[aria-invalid]').forEach((n) => n.removeAttribute('aria-invalid'));
  }
}

// ---------------------------------------------------------------- dialogs

// showModal traps focus and closes on Escape; on close, focus returns to what opened it.
function openDialog(dialog, focusSelector) {
  const opener = document.activeElement;
  dialog.querySelectorAll('.dialog-error').forEach((n) => setText(n, ''));
  dialog.querySelectorAll('[aria-invalid]').forEach((n) => n.removeAttribute('aria-invalid'));
  dialog.addEventListener('close', () => restoreFocus(opener), { once: true });
  dialog.showModal();
  const first = focusSelector && $(focusSelector, dialog);
  if (first) first.focus();
}

// The opener may have been re-rendered meanwhile (row buttons are): then the view's heading.
function restoreFocus(opener) {
  if (opener && opener.isConnected && !opener.disabled) opener.focus();
  else if (session.token) $(currentViewHeading()).focus();
}

function closeDialogs() {
  document.querySelectorAll('dialog[open]').forEach((d) => d.close());
}

const dialogError = (dialog) => $('.dialog-error', dialog);

// The one-time token panel: created on demand, and removed from the page when closed, so the
// token does not linger in the DOM. Webhook signing secrets use it too (what: 'secret', with
// the endpoint as the subject): they are shown once in the same way, and never kept.
function showToken({ title, keyId, token, note, subject = 'Key id', what = 'token' }) {
  const value = el('code', { id: 'token-value', class: 'token', text: token });
  const copyStatus = el('p', { class: 'hint', role: 'status' });
  const copy = el('button', { id: 'token-copy', type: 'button', class: 'primary', text: `Copy ${what}` });
  const close = el('button', { id: 'token-close', type: 'button', text: 'I have stored it, close' });
  const panel = el('dialog', { id: 'token-panel', 'aria-labelledby': 'token-title', class: 'token-panel', data: { what } },
    el('h2', { id: 'token-title', text: title }),
    el('p', {}, `${subject}: `, el('code', { class: 'long-text', text: keyId })),
    el('p', { class: 'warning', text: `This ${what} is shown only once. Copy it now and store it somewhere safe: `
      + 'it cannot be shown again, and closing this panel removes it from the page.' }),
    value,
    note ? el('p', { text: note }) : null,
    copyStatus,
    el('div', { class: 'actions' }, copy, close));
  copy.addEventListener('click', () => copyToken(value, copyStatus));
  close.addEventListener('click', () => panel.close());
  panel.addEventListener('close', () => panel.remove());
  $('#token-panel')?.remove();
  document.body.append(panel);
  openDialog(panel, '#token-copy');
}

// navigator.clipboard needs a secure context (https or localhost); elsewhere, select the text
// so Ctrl+C / Cmd+C copies it.
async function copyToken(node, status) {
  try {
    if (!navigator.clipboard) throw new Error('no clipboard access');
    await navigator.clipboard.writeText(node.textContent);
    status.textContent = 'Copied to the clipboard.';
  } catch {
    const selection = window.getSelection();
    selection.selectAllChildren(node);
    status.textContent = 'The browser does not allow copying here: it is selected, press Ctrl+C (Cmd+C) to copy it.';
  }
}

// ---------------------------------------------------------------- sign-in and sign-out

// The API decides who the key is: admin:* is an operator, keys:manage (without admin:*) a
// partner; any other key cannot use the management API.
async function identify() {
  try {
    const me = await api('GET', '/v1/verify', { query: { scope: 'admin:*' } });
    return { role: 'operator', keyId: me.key_id, partnerId: me.partner_id };
  } catch (err) {
    if (err.reason !== 'insufficient_scope') throw err;
  }
  try {
    const me = await api('GET', '/v1/verify', { query: { scope: 'keys:manage' } });
    return { role: 'partner', keyId: me.key_id, partnerId: me.partner_id };
  } catch (err) {
    if (err.reason !== 'insufficient_scope') throw err;
    throw new ApiError('this key has neither admin:* nor keys:manage, so it cannot manage keys', err.reason, { status: err.status });
  }
}

async function signIn(token) {
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new ApiError('an API key is letters, digits and underscores, with no spaces', 'malformed');
  }
  session.token = token;
  try {
    Object.assign(session, await identify());
  } catch (err) {
    forgetKey();
    throw err;
  }
  sessionStorage.setItem(STORAGE_KEY, token);
  view = freshView();
  showSignedIn();
  // Either list may fail on its own (each says so in its view); #error shows the first.
  const loaded = await Promise.allSettled([loadPartners(), loadKeys(), loadReminders()]);
  renderWhoami();
  const failed = loaded.find((result) => result.status === 'rejected');
  if (failed) showError(null, asApiError(failed.reason));
}

function forgetKey() {
  sessionStorage.removeItem(STORAGE_KEY);
  Object.assign(session, { token: null, role: null, keyId: null, partnerId: null });
}

function signOut() {
  forgetKey();
  view = null;
  closeDialogs();
  $('#token-panel')?.remove();
  for (const selector of ['#keys-table tbody', '#partners-table tbody', '#audit-list', '#issue-scope-list',
    '#expiring-table tbody', '#rotation-table tbody', '#webhooks-list']) {
    $(selector).replaceChildren();
  }
  for (const selector of ['#filter-partner', '#reminders-partner', '#webhooks-partner']) {
    $(selector).replaceChildren(el('option', { value: '', text: 'All partners' }));
  }
  $('#issue-partner').replaceChildren();
  $('#webhook-partner').replaceChildren();
  for (const selector of ['#filters', '#partner-form', '#webhook-form']) $(selector).reset();
  for (const selector of ['#whoami', '#keys-status', '#keys-page', '#partners-status', '#signin-error',
    '#reminders-status', '#reminders-count', '#webhooks-status', '#webhook-form-error']) setText($(selector), '');
  for (const selector of ['#keys-empty', '#partners-empty', '#expiring-empty', '#rotation-empty', '#webhooks-empty']) {
    setText($(selector), '');
  }
  $('#webhooks-more').hidden = true;
  clearError(null);
  showSignedOut();
  notify('Signed out: the key was forgotten and the page cleared.');
}

function showSignedIn() {
  $('#signin-view').hidden = true;
  $('#signin-key').value = '';
  $('#nav').hidden = false;
  $('#session').hidden = false;
  $('#nav-partners').hidden = session.role !== 'operator';
  // A partner's key sees one partner: nothing to choose between.
  for (const selector of ['#reminders-partner-field', '#webhooks-partner-field']) $(selector).hidden = session.role !== 'operator';
  showView('keys');
}

function showSignedOut() {
  for (const selector of ['#nav', '#session', ...VIEWS.map((v) => `#${v}-view`)]) $(selector).hidden = true;
  $('#signin-view').hidden = false;
  $('#signin-key').focus();
}

function renderWhoami() {
  const own = view.partners.find((p) => p.partner_id === session.partnerId);
  const who = session.role === 'operator' ? 'operator' : `partner${own ? ` ${own.name}` : ''}`;
  $('#whoami').replaceChildren('Signed in with ', el('code', { text: session.keyId }), ` as ${who}`);
}

// ---------------------------------------------------------------- views

// Each view is a <section id="NAME-view"> with a heading #NAME-heading and a nav button #nav-NAME.
const VIEWS = ['keys', 'reminders', 'webhooks', 'partners'];

function showView(name) {
  const shown = name === 'partners' && session.role !== 'operator' ? 'keys' : name;
  for (const v of VIEWS) {
    $(`#${v}-view`).hidden = v !== shown;
    if (v === shown) $(`#nav-${v}`).setAttribute('aria-current', 'page');
    else $(`#nav-${v}`).removeAttribute('aria-current');
  }
}

const currentViewHeading = () => `#${VIEWS.find((v) => !$(`#${v}-view`).hidden) || 'keys'}-heading`;

// The nav buttons of views that show server state load it afresh on every visit.
async function openView(name, load) {
  showView(name);
  $(`#${name}-heading`).focus();
  if (load) await act({}, load);
}

// ---------------------------------------------------------------- keys list

function readFilters() {
  return {
    partner: $('#filter-partner').value,
    status: $('#filter-status').value,
    tag: $('#filter-tag').value.trim(),
    q: $('#filter-q').value.trim(),
    limit: $('#filter-limit').value,
  };
}

// "expiring" is not an API status: ask for live keys and keep those expiring within 7 days.
// "live" likewise leaves them out, so every row shows the status that was asked for.
function keysQuery() {
  const f = view.filters;
  const apiStatus = f.status === 'expiring' ? 'live' : f.status;
  return { partner_id: f.partner, status: apiStatus, tag: f.tag, q: f.q, limit: f.limit, cursor: view.cursor };
}

async function loadKeys() {
  setText($('#keys-status'), 'Loading keys…');
  $('#keys-empty').hidden = true;
  try {
    const page = await api('GET', '/v1/keys', { query: keysQuery() });
    page.items.forEach((key) => key.scopes.forEach((s) => view.scopesInUse.add(s)));
    const wanted = view.filters.status;
    view.keys = page.items.filter((key) => !wanted || displayStatus(key) === wanted);
    view.nextCursor = page.next_cursor;
    renderKeys(emptyReason(page.items.length));
    setText($('#keys-status'), '');
  } catch (err) {
    view.keys = [];
    view.nextCursor = null;
    renderKeys(`Keys could not be loaded: ${err.text || err}`);
    setText($('#keys-status'), '');
    throw err;
  }
}

function describeFilters() {
  const f = view.filters;
  const partner = view.partners.find((p) => p.partner_id === f.partner);
  const parts = [
    f.partner && `partner ${partner ? partner.name : f.partner}`,
    f.status && `status ${f.status.replace(/_/g, ' ')}`,
    f.tag && `tag "${f.tag}"`,
    f.q && `search "${f.q}"`,
  ].filter(Boolean);
  return parts.join(', ');
}

// Why the table is empty, in a sentence.
function emptyReason(fetched) {
  if (view.keys.length > 0) return '';
  const filters = describeFilters();
  if (fetched > 0) {
    return `None of the ${fetched} keys on this page is ${view.filters.status.replace(/_/g, ' ')}`
      + (view.nextCursor ? '; try the next page.' : '.');
  }
  if (view.cursor) return 'There are no more keys after the previous page.';
  if (filters) return `No key matches ${filters}. Change or clear the filters to see more.`;
  return session.role === 'operator'
    ? 'No keys yet: use "Issue key" to create the first one.'
    : 'Your partner has no keys this key can see. An operator issues keys for your partner.';
}

function renderKeys(empty) {
  const now = Date.now();
  fillTable($('#keys-table'), view.keys.map((key) => keyRow(key, now)));
  setText($('#keys-empty'), empty);
  $('#keys-prev').disabled = view.previousCursors.length === 0;
  $('#keys-next').disabled = !view.nextCursor;
  const page = view.previousCursors.length + 1;
  setText($('#keys-page'), `Page ${page}${view.keys.length ? `, ${view.keys.length} key${view.keys.length === 1 ? '' : 's'}` : ''}`);
}

// Each cell gets data-label, its column's header text, which the stacked-card layout of
// narrow screens shows in front of it.
function fillTable(table, rows) {
  const labels = [...table.querySelectorAll('thead th')].map((th) => th.textContent);
  for (const row of rows) [...row.cells].forEach((td, i) => td.setAttribute('data-label', labels[i] || ''));
  $('tbody', table).replaceChildren(...rows);
}

const cell = (...content) => el('td', {}, ...content);

const chips = (values, kind) => (values.length
  ? el('ul', { class: `chips ${kind}` }, values.map((v) => el('li', { class: 'chip', text: v })))
  : el('span', { class: 'muted', text: 'none' }));

function keyRow(key, now) {
  const status = displayStatus(key, now);
  return el('tr', { data: { keyId: key.key_id, status } },
    cell(el('code', { class: 'key-id', text: key.key_id })),
    cell(key.name ? el('span', { class: 'long-text', text: key.name }) : el('span', { class: 'muted', text: 'unnamed' })),
    cell(el('span', { class: 'long-text', text: key.partner_name })),
    cell(chips(key.scopes, 'scope-chips')),
    cell(chips(key.tags, 'tag-chips')),
    cell(el('span', { class: `env env-${key.environment}`, text: key.environment })),
    cell(el('span', { class: `status status-${status}`, text: statusText(key, status) }), rotationNote(key)),
    cell(timeNode(key.created_at, { day: true })),
    cell(timeNode(key.expires_at, { day: true })),
    cell(timeNode(key.last_used_at, { relative: true })),
    cell(String(key.rate_per_minute)),
    cell(keyActions(key)));
}

function keyActions(key) {
  const button = (action, label, cls) => el('button', {
    type: 'button', class: cls, data: { action }, 'aria-label': `${label} ${key.key_id}`, text: label,
  });
  return el('div', { class: 'row-actions' },
    button('rotate', 'Rotate'),
    button('revoke', 'Revoke', 'danger'),
    key.enabled ? button('disable', 'Disable') : button('enable', 'Enable'),
    button('audit', 'Audit'),
    button('usage', 'Usage'),
    el('p', { class: 'row-error form-error', role: 'alert', hidden: true }));
}

function onKeyAction(event) {
  const button = event.target.closest('button[data-action]');
  const row = button && button.closest('tr[data-key-id]');
  const key = row && view.keys.find((k) => k.key_id === row.dataset.keyId);
  if (!key) return;
  view.dialogKey = key;
  const slot = $('.row-error', row);
  switch (button.dataset.action) {
    case 'rotate': return openRotate();
    case 'revoke': return openRevoke();
    case 'audit': return openAudit();
    case 'usage': return openUsage({ keyId: key.key_id, title: key.key_id, rate: true });
    case 'enable':
    case 'disable': return setEnabled(key, button.dataset.action, button, slot);
    default: return undefined;
  }
}

async function setEnabled(key, action, button, slot) {
  const ok = await act({ button, slot }, async () => {
    await api('POST', keyPath(key.key_id, action));
    await loadKeys();
  });
  if (ok) notify(`Key ${key.key_id} ${action}d.`);
}

// Filters start again on the first page; the pager keeps a stack of the cursors it went through.
async function applyFilters(event) {
  event.preventDefault();
  view.filters = readFilters();
  view.cursor = null;
  view.previousCursors = [];
  await act({ button: $('#filter-apply') }, loadKeys);
}

async function turnPage(forward) {
  if (forward && view.nextCursor) {
    view.previousCursors.push(view.cursor);
    view.cursor = view.nextCursor;
  } else if (!forward && view.previousCursors.length) {
    view.cursor = view.previousCursors.pop();
  } else {
    return;
  }
  await act({}, loadKeys);
}

// ---------------------------------------------------------------- partners

async function loadPartners() {
  setText($('#partners-status'), 'Loading partners…');
  try {
    view.partners = await fetchAllPartners();
    setText($('#partners-status'), '');
  } catch (err) {
    view.partners = [];
    setText($('#partners-status'), '');
    renderPartners(`Partners could not be loaded: ${err.text || err}`);
    throw err;
  }
  renderPartners(view.partners.length ? '' : 'No partners yet: create the first one above.');
}

// Partners are few next to keys: the console reads all of them, for the filters and the
// issue dialog as well as the table.
async function fetchAllPartners() {
  const partners = [];
  let cursor = null;
  for (let i = 0; i < PARTNER_PAGES_MAX; i += 1) {
    const page = await api('GET', '/v1/partners', { query: { limit: PARTNER_PAGE_SIZE, cursor } });
    partners.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) return partners;
  }
  notify(`Showing the newest ${partners.length} partners only.`);
  return partners;
}

function renderPartners(empty) {
  for (const selector of ['#filter-partner', '#reminders-partner', '#webhooks-partner']) {
    const select = $(selector);
    const selected = select.value;
    select.replaceChildren(el('option', { value: '', text: 'All partners' }), ...partnerOptions());
    select.value = view.partners.some((p) => p.partner_id === selected) ? selected : '';
  }
  choosePartnerIn($('#webhook-partner'), $('#webhook-partner').value);
  fillTable($('#partners-table'), view.partners.map(partnerRow));
  setText($('#partners-empty'), empty);
}

const partnerOptions = () => view.partners.map((p) => el('option', { value: p.partner_id, text: partnerLabel(p) }));

// A select for what a new object belongs to. No silent default among several partners: a
// key or an endpoint given to the wrong one is a leak.
function choosePartnerIn(select, preferred) {
  const options = partnerOptions();
  const choose = el('option', { value: '', text: 'Choose a partner…' });
  select.replaceChildren(...(options.length === 1 ? options : [choose, ...options]));
  if (preferred && view.partners.some((p) => p.partner_id === preferred)) select.value = preferred;
}

const partnerName = (partnerId) => view.partners.find((p) => p.partner_id === partnerId)?.name || partnerId;

const partnerLabel = (p) => (p.active ? p.name : `${p.name} (inactive)`);

function partnerRow(p) {
  const action = p.active ? 'deactivate' : 'activate';
  const label = p.active ? 'Deactivate' : 'Activate';
  return el('tr', { data: { partnerId: p.partner_id } },
    cell(el('span', { class: 'long-text', text: p.name })),
    cell(p.contact_email || el('span', { class: 'muted', text: 'none' })),
    cell(el('span', { class: `status status-${p.active ? 'live' : 'disabled'}`, text: p.active ? 'active' : 'inactive' })),
    cell(String(p.key_count)),
    cell(timeNode(p.created_at, { day: true })),
    cell(el('code', { text: p.partner_id })),
    cell(el('div', { class: 'row-actions' },
      el('button', { type: 'button', class: p.active ? 'danger' : '', data: { action }, 'aria-label': `${label} ${p.name}`, text: label }),
      el('button', { type: 'button', data: { action: 'keys' }, 'aria-label': `Keys of ${p.name}`, text: 'Keys' }),
      el('button', { type: 'button', data: { action: 'usage' }, 'aria-label': `Usage of ${p.name}`, text: 'Usage' }),
      el('p', { class: 'row-error form-error', role: 'alert', hidden: true }))));
}

async function onPartnerAction(event) {
  const button = event.target.closest('button[data-action]');
  const row = button && button.closest('tr[data-partner-id]');
  const partner = row && view.partners.find((p) => p.partner_id === row.dataset.partnerId);
  if (!partner) return;
  const action = button.dataset.action;
  if (action === 'keys') {
    showKeysOf(partner);
    return;
  }
  if (action === 'usage') {
    openUsage({ partnerId: partner.partner_id, title: partner.name, rate: false });
    return;
  }
  const ok = await act({ button, slot: $('.row-error', row) }, async () => {
    await api('POST', `/v1/partners/${encodeURIComponent(partner.partner_id)}/${action}`);
    await loadPartners();
  });
  if (ok) notify(`Partner ${partner.name} ${action}d.`);
}

async function showKeysOf(partner) {
  $('#filters').reset();
  $('#filter-partner').value = partner.partner_id;
  showView('keys');
  $('#keys-heading').focus();
  await applyFilters(new Event('submit'));
}

async function createPartner(event) {
  event.preventDefault();
  const slot = $('#partner-form-error');
  const fields = { name: 'partner-name', contact_email: 'partner-email' };
  const ok = await act({ button: $('#partner-create'), slot, fields }, async () => {
    const name = $('#partner-name').value.trim();
    const email = $('#partner-email').value.trim();
    if (!name) throw invalid('name', 'a partner needs a name');
    await api('POST', '/v1/partners', { body: email ? { name, contact_email: email } : { name } });
    $('#partner-form').reset();
    await loadPartners();
  });
  if (ok) notify('Partner created.');
}

// ---------------------------------------------------------------- issue

function openIssue() {
  $('#issue-form').reset();
  const preferred = view.filters.partner || (session.role === 'partner' ? session.partnerId : '');
  choosePartnerIn($('#issue-partner'), preferred);
  renderScopeChoices();
  $('#issue-partner-note').hidden = session.role !== 'partner';
  openDialog($('#issue-dialog'), '#issue-partner');
}

function renderScopeChoices() {
  const scopes = [...view.scopesInUse].sort();
  $('#issue-scope-list').replaceChildren(...scopes.map((scope, i) => el('div', { class: 'check' },
    el('input', { type: 'checkbox', name: 'issue-scope', id: `issue-scope-${i}`, value: scope }),
    el('label', { for: `issue-scope-${i}`, text: scope }))));
  $('#issue-scope-none').hidden = scopes.length > 0;
}

// datetime-local has no zone: it is the browser's local time, sent as RFC 3339 UTC.
function instant(id, field) {
  const value = $(`#${id}`).value;
  if (!value) return undefined;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) throw invalid(field, `${value} is not a date and time`);
  return date.toISOString();
}

// The request body of POST /v1/keys, or an ApiError naming the field that is wrong.
function issueRequest() {
  const partnerId = $('#issue-partner').value;
  if (!partnerId) throw invalid('partner_id', 'choose a partner (create one first under Partners)');
  const checked = [...document.querySelectorAll('input[name="issue-scope"]:checked')].map((c) => c.value);
  const scopes = [...new Set([...checked, ...splitList($('#issue-scopes-extra').value)])];
  for (const scope of scopes) {
    const problem = scopeProblem(scope);
    if (problem) throw invalid('scopes', `scope "${scope}" ${problem}`);
  }
  const body = { partner_id: partnerId, scopes, environment: $('#issue-environment').value };
  const name = $('#issue-name').value.trim();
  if (name) body.name = name;
  const rate = $('#issue-rate').value.trim();
  if (rate) {
    if (!/^\d+$/.test(rate) || Number(rate) < 1) throw invalid('rate_per_minute', 'the rate per minute must be a whole number of at least 1');
    body.rate_per_minute = Number(rate);
  }
  const notBefore = instant('issue-not-before', 'not_before');
  if (notBefore) body.not_before = notBefore;
  const expires = instant('issue-expires', 'expires_at');
  if (expires) body.expires_at = expires;
  const cidrs = splitList($('#issue-cidrs').value);
  if (cidrs.length) body.allowed_cidrs = cidrs;
  const tags = splitList($('#issue-tags').value);
  if (tags.length) body.tags = tags;
  return body;
}

const ISSUE_FIELDS = {
  partner_id: 'issue-partner', name: 'issue-name', scopes: 'issue-scopes-extra', environment: 'issue-environment',
  rate_per_minute: 'issue-rate', not_before: 'issue-not-before', expires_at: 'issue-expires',
  allowed_cidrs: 'issue-cidrs', tags: 'issue-tags',
};

async function submitIssue(event) {
  event.preventDefault();
  const dialog = $('#issue-dialog');
  let issued = null;
  await act({ button: $('#issue-submit'), slot: dialogError(dialog), fields: ISSUE_FIELDS }, async () => {
    issued = await api('POST', '/v1/keys', { body: issueRequest() });
  });
  if (!issued) return;
  dialog.close();
  showToken({ title: 'Key issued', keyId: issued.key_id, token: issued.token });
  // The new key is the newest: show the first page, where it is (if the filters match it).
  view.cursor = null;
  view.previousCursors = [];
  await act({}, loadKeys);
}

// ---------------------------------------------------------------- rotate, revoke, audit

function openRotate() {
  const dialog = $('#rotate-dialog');
  $('#rotate-form').reset();
  $('#rotate-grace-custom-field').hidden = true;
  $('.dialog-key', dialog).textContent = view.dialogKey.key_id;
  openDialog(dialog, '#rotate-grace');
}

function graceSeconds() {
  const choice = $('#rotate-grace').value;
  if (choice !== 'custom') return Number(choice);
  const text = $('#rotate-grace-custom').value.trim();
  if (!/^\d+$/.test(text) || Number(text) > MAX_GRACE_SECONDS) {
    throw invalid('grace_seconds', `the grace period must be a whole number of seconds from 0 to ${MAX_GRACE_SECONDS}`);
  }
  return Number(text);
}

async function submitRotate(event) {
  event.preventDefault();
  const dialog = $('#rotate-dialog');
  const old = view.dialogKey;
  let rotated = null;
  let grace = 0;
  await act({ button: $('#rotate-submit'), slot: dialogError(dialog), fields: { grace_seconds: 'rotate-grace-custom' } }, async () => {
    grace = graceSeconds();
    rotated = await api('POST', keyPath(old.key_id, 'rotate'), { body: { grace_seconds: grace } });
  });
  if (!rotated) return;
  dialog.close();
  const note = grace === 0
    ? `The old key ${old.key_id} stopped working now.`
    : `The old key ${old.key_id} keeps working for ${duration(grace)} (or until it expires, if sooner).`;
  showToken({ title: 'Key rotated', keyId: rotated.key_id, token: rotated.token, note });
  await act({}, loadKeys);
  // The rotated key leaves the reminders (it has a successor), which may be where it was.
  await act({}, loadReminders);
}

function openRevoke() {
  const dialog = $('#revoke-dialog');
  $('#revoke-form').reset();
  $('.dialog-key', dialog).textContent = view.dialogKey.key_id;
  // Focus the harmless choice first: Enter should not revoke by accident.
  openDialog(dialog, '#revoke-cancel');
}

async function submitRevoke(event) {
  event.preventDefault();
  const dialog = $('#revoke-dialog');
  const key = view.dialogKey;
  let result = null;
  await act({ button: $('#revoke-confirm'), slot: dialogError(dialog), fields: { reason: 'revoke-reason' } }, async () => {
    const reason = $('#revoke-reason').value.trim();
    result = await api('POST', keyPath(key.key_id, 'revoke'), { body: reason ? { reason } : {} });
  });
  if (!result) return;
  dialog.close();
  await act({}, loadKeys);
  notify(result.revoked ? `Key ${key.key_id} revoked.` : `Key ${key.key_id} was not live; it is marked revoked now.`);
}

async function openAudit() {
  const dialog = $('#audit-dialog');
  $('.dialog-key', dialog).textContent = view.dialogKey.key_id;
  $('#audit-list').replaceChildren();
  view.auditCursor = null;
  openDialog(dialog, '#audit-close');
  await loadAudit();
}

async function loadAudit() {
  const dialog = $('#audit-dialog');
  const status = $('#audit-status');
  setText(status, 'Loading the audit history…');
  $('#audit-more').hidden = true;
  await act({ button: $('#audit-more'), slot: dialogError(dialog) }, async () => {
    try {
      const query = { key_id: view.dialogKey.key_id, limit: AUDIT_PAGE_SIZE, cursor: view.auditCursor };
      const page = await api('GET', '/v1/audit', { query });
      $('#audit-list').append(...page.items.map(auditItem));
      view.auditCursor = page.next_cursor;
      $('#audit-more').hidden = !page.next_cursor;
      const count = $('#audit-list').children.length;
      setText(status, count ? `${count} entr${count === 1 ? 'y' : 'ies'}, newest first.` : 'No audit entries for this key that this key may see.');
    } catch (err) {
      setText(status, 'The audit history could not be loaded.');
      throw err;
    }
  });
}

function auditItem(entry) {
  const details = [
    `by ${entry.actor}`,
    entry.reason && `reason: ${entry.reason}`,
    entry.client_ip && `from ${entry.client_ip}`,
    entry.detail && Object.keys(entry.detail).length > 0 && JSON.stringify(entry.detail),
  ].filter(Boolean).join(' · ');
  return el('li', { data: { auditAction: entry.action } },
    el('span', { class: `audit-action audit-${entry.action}`, text: entry.action }),
    ' ', timeNode(entry.at), ' ',
    el('span', { class: 'audit-detail', text: details }));
}

// ---------------------------------------------------------------- usage

const USAGE_HOURS = 24;
const SVG = 'http://www.w3.org/2000/svg';
// Outcomes drawn apart; every other reason is a refusal.
const USAGE_SERIES = [
  { name: 'ok', label: 'ok', test: (reason) => reason === 'ok' },
  { name: 'rate_limited', label: 'rate limited', test: (reason) => reason === 'rate_limited' },
  { name: 'refused', label: 'refused', test: (reason) => reason !== 'ok' && reason !== 'rate_limited' },
];

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

// Counts per hour (oldest first) and per series, from the items of GET /v1/usage.
function usageBuckets(items, now = Date.now()) {
  const hour = 3600 * 1000;
  const first = Math.floor(now / hour) * hour - (USAGE_HOURS - 1) * hour;
  const buckets = Array.from({ length: USAGE_HOURS }, (_, i) => ({
    start: first + i * hour, counts: Object.fromEntries(USAGE_SERIES.map((s) => [s.name, 0])),
  }));
  const totals = Object.fromEntries(USAGE_SERIES.map((s) => [s.name, 0]));
  for (const item of items) {
    const index = Math.floor((Date.parse(item.bucket) - first) / hour);
    const series = USAGE_SERIES.find((s) => s.test(item.reason));
    if (index < 0 || index >= USAGE_HOURS || !series) continue;
    buckets[index].counts[series.name] += item.count;
    totals[series.name] += item.count;
  }
  return { buckets, totals };
}

// Stacked bars, one per hour, drawn with SVG elements (no markup parsed from data).
function usageChart(buckets) {
  const width = 720; const height = 180; const pad = 24;
  const barWidth = (width - pad) / buckets.length;
  const max = Math.max(1, ...buckets.map((b) => USAGE_SERIES.reduce((sum, s) => sum + b.counts[s.name], 0)));
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height + pad}`, role: 'img', class: 'usage-chart',
    'aria-label': `Verifications per hour over the last ${USAGE_HOURS} hours; at most ${max} in an hour`,
  });
  chart.append(svg('text', { x: 0, y: 12, class: 'usage-axis' }, String(max)));
  buckets.forEach((bucket, i) => {
    let y = height;
    for (const series of USAGE_SERIES) {
      const count = bucket.counts[series.name];
      if (!count) continue;
      const h = (count / max) * (height - pad);
      y -= h;
      chart.append(svg('rect', {
        x: pad + i * barWidth + 1, y, width: Math.max(1, barWidth - 2), height: h,
        class: `usage-${series.name}`, 'data-reason': series.name, 'data-count': count,
      }, svg('title', {}, `${formatTime(new Date(bucket.start).toISOString())}: ${count} ${series.label}`)));
    }
  });
  chart.append(svg('line', { x1: pad, y1: height, x2: width, y2: height, class: 'usage-axis' }));
  chart.append(svg('text', { x: pad, y: height + 16, class: 'usage-axis' }, `${buckets.length} h ago`));
  chart.append(svg('text', { x: width, y: height + 16, class: 'usage-axis', 'text-anchor': 'end' }, 'now'));
  return chart;
}

async function openUsage({ keyId = null, partnerId = null, title, rate }) {
  const dialog = $('#usage-dialog');
  $('.dialog-subject', dialog).textContent = title;
  $('#usage-chart').replaceChildren();
  $('#usage-legend').replaceChildren();
  setText($('#usage-rate'), '');
  openDialog(dialog, '#usage-close');
  setText($('#usage-status'), 'Loading usage…');
  const since = new Date(Date.now() - USAGE_HOURS * 3600 * 1000).toISOString();
  await act({ slot: dialogError(dialog) }, async () => {
    try {
      const query = { key_id: keyId, partner_id: partnerId, since, bucket: '1h' };
      const usage = await api('GET', '/v1/usage', { query });
      const { buckets, totals } = usageBuckets(usage.items);
      $('#usage-chart').replaceChildren(usageChart(buckets));
      $('#usage-legend').replaceChildren(...USAGE_SERIES.map((s) => el('li', { data: { reason: s.name } },
        el('span', { class: `swatch usage-${s.name}` }), ` ${s.label}: ${totals[s.name]}`)));
      const total = USAGE_SERIES.reduce((sum, s) => sum + totals[s.name], 0);
      setText($('#usage-status'), `${total} verification${total === 1 ? '' : 's'} in the last ${USAGE_HOURS} hours${usage.truncated ? ' (truncated)' : ''}.`);
      if (rate && usage.rate) {
        const r = usage.rate;
        setText($('#usage-rate'), r.remaining === null
          ? `Rate limit ${r.rate_per_minute} per minute (not enforced: the server runs without shared memory).`
          : `Rate limit ${r.rate_per_minute} per minute: ${r.remaining} left now, the full allowance back in ${duration(r.reset_seconds)}.`);
      }
    } catch (err) {
      setText($('#usage-status'), 'Usage could not be loaded.');
      throw err;
    }
  });
}

// ---------------------------------------------------------------- reminders

// GET /v1/reminders: live keys expiring within 7 days, and keys the database found due for
// rotation (a key.rotation_due event). The nav button counts them, for every partner the key
// may see.
async function loadReminders() {
  const status = $('#reminders-status');
  setText(status, 'Loading reminders…');
  const partnerId = $('#reminders-partner').value;
  try {
    view.reminders = await api('GET', '/v1/reminders', { query: { partner_id: partnerId } });
    renderReminders(view.reminders, '');
    setText(status, view.reminders.truncated
      ? 'A list holds its first 200 keys only: narrow it to a partner, or use the filters of the Keys view.' : '');
    if (!partnerId) renderRemindersCount(view.reminders);
  } catch (err) {
    view.reminders = { expiring: [], rotation_due: [] };
    renderReminders(view.reminders, `Reminders could not be loaded: ${err.text || err}`);
    setText(status, '');
    throw err;
  }
}

function renderRemindersCount(reminders) {
  const count = reminders.expiring.length + reminders.rotation_due.length;
  setText($('#reminders-count'), count ? `${count}${reminders.truncated ? '+' : ''}` : '');
}

function renderReminders(reminders, failure) {
  const now = Date.now();
  fillTable($('#expiring-table'), reminders.expiring.map((key) => expiringRow(key, now)));
  fillTable($('#rotation-table'), reminders.rotation_due.map(rotationDueRow));
  const partnerId = $('#reminders-partner').value;
  const whose = partnerId ? ` of ${partnerName(partnerId)}` : '';
  setText($('#expiring-empty'), failure || (reminders.expiring.length ? '' : `No live key${whose} expires within 7 days.`));
  setText($('#rotation-empty'), failure || (reminders.rotation_due.length ? ''
    : `No key${whose} is due for rotation (or no rotation period is set: apikey.rotation_period).`));
}

function reminderActions(key) {
  return el('div', { class: 'row-actions' },
    el('button', { type: 'button', data: { action: 'rotate' }, 'aria-label': `Rotate ${key.key_id}`, text: 'Rotate' }),
    el('p', { class: 'row-error form-error', role: 'alert', hidden: true }));
}

const keyIdCell = (key) => cell(el('code', { class: 'key-id', text: key.key_id }));
const keyNameCell = (key) => cell(key.name
  ? el('span', { class: 'long-text', text: key.name }) : el('span', { class: 'muted', text: 'unnamed' }));

function expiringRow(key, now) {
  return el('tr', { data: { keyId: key.key_id, reminder: 'expiring' } },
    keyIdCell(key),
    keyNameCell(key),
    cell(el('span', { class: 'long-text', text: key.partner_name })),
    // One child per cell: the stacked cards of narrow screens put each child in a grid cell.
    cell(el('div', {}, el('span', { class: 'status status-expiring', text: statusText(key, displayStatus(key, now)) }),
      el('span', { class: 'note' }, timeNode(key.expires_at)))),
    cell(timeNode(key.last_used_at, { relative: true })),
    cell(reminderActions(key)));
}

function rotationDueRow(key) {
  return el('tr', { data: { keyId: key.key_id, reminder: 'rotation_due' } },
    keyIdCell(key),
    keyNameCell(key),
    cell(el('span', { class: 'long-text', text: key.partner_name })),
    cell(el('div', {}, timeNode(key.created_at, { day: true }), el('span', { class: 'note', text: relativeTime(key.created_at) }))),
    cell(timeNode(key.due_since, { relative: true })),
    cell(timeNode(key.last_used_at, { relative: true })),
    cell(reminderActions(key)));
}

// Rotate reuses the keys view's dialog; submitRotate reloads both lists.
function onReminderAction(event) {
  const button = event.target.closest('button[data-action="rotate"]');
  const row = button && button.closest('tr[data-key-id]');
  const list = row && (row.dataset.reminder === 'expiring' ? view.reminders.expiring : view.reminders.rotation_due);
  const key = list && list.find((k) => k.key_id === row.dataset.keyId);
  if (!key) return;
  view.dialogKey = key;
  openRotate();
}

// ---------------------------------------------------------------- webhooks

// Endpoints, newest first, each with its last deliveries. `more` appends the next page.
async function loadWebhooks({ more = false } = {}) {
  const status = $('#webhooks-status');
  setText(status, 'Loading endpoints…');
  $('#webhooks-empty').hidden = true;
  const cursor = more ? view.endpointsCursor : null;
  let page;
  try {
    page = await api('GET', '/v1/webhooks', {
      query: { partner_id: $('#webhooks-partner').value, limit: ENDPOINT_PAGE_SIZE, cursor },
    });
  } catch (err) {
    if (!more) {
      view.endpoints = [];
      $('#webhooks-list').replaceChildren();
      setText($('#webhooks-empty'), `Endpoints could not be loaded: ${err.text || err}`);
    }
    setText(status, '');
    throw err;
  }
  view.endpoints = more ? [...view.endpoints, ...page.items] : page.items;
  view.endpointsCursor = page.next_cursor;
  const cards = page.items.map(endpointCard);
  if (more) $('#webhooks-list').append(...cards);
  else $('#webhooks-list').replaceChildren(...cards);
  $('#webhooks-more').hidden = !page.next_cursor;
  setText($('#webhooks-empty'), view.endpoints.length ? '' : noEndpointsText());
  setText(status, '');
  // Each card reports its own failure; one endpoint's deliveries do not hold up the others.
  await Promise.allSettled(cards.map((card) => refreshDeliveries(card)));
}

function noEndpointsText() {
  const partnerId = $('#webhooks-partner').value;
  return `No webhook endpoints${partnerId ? ` for ${partnerName(partnerId)}` : ''} yet: create one above.`;
}

function endpointState(endpoint) {
  if (!endpoint.enabled) return { status: 'disabled', text: 'disabled' };
  if (endpoint.failing_since) return { status: 'expiring', text: 'enabled, failing' };
  return { status: 'live', text: 'enabled' };
}

// One definition list entry, left out when there is nothing to say.
const fact = (term, ...value) => (value.some((v) => v !== null && v !== undefined && v !== false)
  ? [el('dt', { text: term }), el('dd', {}, ...value)] : []);

function endpointCard(endpoint) {
  const id = endpoint.endpoint_id;
  const state = endpointState(endpoint);
  const button = (action, label, cls) => el('button', {
    type: 'button', class: cls, data: { action }, 'aria-label': `${label}: ${endpoint.url}`, text: label,
  });
  const headingId = `endpoint-${id}-url`;
  const deliveriesId = `endpoint-${id}-deliveries`;
  return el('article', { class: 'card endpoint', 'aria-labelledby': headingId, data: { endpointId: id, state: state.status } },
    el('div', { class: 'endpoint-head' },
      el('h3', { id: headingId }, el('code', { class: 'long-text', text: endpoint.url })),
      el('span', { class: `status status-${state.status}`, text: state.text })),
    el('dl', { class: 'facts' },
      fact('Partner', el('span', { class: 'long-text', text: partnerName(endpoint.partner_id) })),
      fact('Events', chips(endpoint.events, 'scope-chips')),
      fact('Created', timeNode(endpoint.created_at)),
      fact('Secret rotated', endpoint.secret_rotated_at && timeNode(endpoint.secret_rotated_at)),
      fact('Old secret signs until', endpoint.previous_secret_until && timeNode(endpoint.previous_secret_until)),
      fact('Failing since', endpoint.failing_since && timeNode(endpoint.failing_since)),
      fact('Disabled', endpoint.disabled_reason && el('span', { class: 'disabled-reason', text: endpoint.disabled_reason }),
        endpoint.disabled_at && ' ', endpoint.disabled_at && timeNode(endpoint.disabled_at))),
    el('div', { class: 'endpoint-actions' },
      button('test', 'Send test event', 'primary'),
      button('refresh', 'Refresh deliveries'),
      button('rotate-secret', 'Rotate secret'),
      endpoint.enabled ? button('disable', 'Disable') : button('enable', 'Enable'),
      button('delete', 'Delete', 'danger'),
      el('p', { class: 'row-error form-error', role: 'alert', hidden: true })),
    el('h4', { id: deliveriesId, text: 'Last deliveries' }),
    el('p', { class: 'hint deliveries-status', role: 'status' }),
    el('div', { class: 'table-wrap' },
      el('table', { class: 'data deliveries', 'aria-labelledby': deliveriesId },
        el('thead', {}, el('tr', {},
          ...['Event', 'State', 'Created', 'Attempts'].map((h) => el('th', { scope: 'col', text: h })))),
        el('tbody'))),
    el('p', { class: 'empty deliveries-empty', hidden: true }));
}

const cardOf = (endpointId) => [...$('#webhooks-list').children].find((c) => c.dataset.endpointId === endpointId);

// Reloads a card's deliveries (newest first); returns them.
async function refreshDeliveries(card) {
  const status = $('.deliveries-status', card);
  setText(status, 'Loading deliveries…');
  try {
    const page = await api('GET', endpointPath(card.dataset.endpointId, 'deliveries'), { query: { limit: DELIVERY_PAGE_SIZE } });
    fillTable($('table.deliveries', card), page.items.map(deliveryRow));
    setText($('.deliveries-empty', card), page.items.length ? ''
      : 'Nothing sent yet. Events of the types above are delivered here; "Send test event" sends one now.');
    setText(status, `Updated ${formatTime(new Date().toISOString())}.`);
    return page.items;
  } catch (err) {
    setText(status, `Deliveries could not be loaded: ${err.text || err}`);
    throw err;
  }
}

const DELIVERY_STATUS = { delivered: 'live', pending: 'expiring', failed: 'revoked' };

function deliveryStateText(d) {
  if (d.state === 'pending' && d.attempts.length > 0) return `retrying ${relativeTime(d.next_attempt_at)}`;
  return d.state;
}

function deliveryRow(d) {
  return el('tr', { data: { deliveryId: String(d.delivery_id), eventId: d.event_id, eventType: d.event_type, state: d.state } },
    cell(el('code', { text: d.event_type })),
    cell(el('span', { class: `status status-${DELIVERY_STATUS[d.state] || 'disabled'}`, text: deliveryStateText(d) })),
    cell(timeNode(d.created_at, { relative: true })),
    cell(attemptList(d.attempts)));
}

// "#1 200 · 35 ms · 2 min ago", plus the error of a failed attempt.
function attemptList(attempts) {
  if (!attempts.length) return el('span', { class: 'muted', text: 'no attempt yet' });
  return el('ol', { class: 'attempts' }, attempts.map((a) => el('li', {
    class: a.error ? 'attempt attempt-failed' : 'attempt',
    data: { attempt: String(a.attempt), statusCode: a.status_code === null ? '' : String(a.status_code) },
  },
  el('span', { class: 'attempt-status', text: `#${a.attempt} ${a.status_code === null ? 'no answer' : a.status_code}` }),
  a.latency_ms === null ? null : ` · ${a.latency_ms} ms`,
  ' · ', timeNode(a.at, { relative: true }),
  a.error ? el('span', { class: 'attempt-error', text: a.error }) : null)));
}

function onEndpointAction(event) {
  const button = event.target.closest('button[data-action]');
  const card = button && button.closest('article[data-endpoint-id]');
  const endpoint = card && view.endpoints.find((e) => e.endpoint_id === card.dataset.endpointId);
  if (!endpoint) return undefined;
  const slot = $('.row-error', card);
  view.dialogEndpoint = endpoint;
  switch (button.dataset.action) {
    case 'test': return sendTestEvent(endpoint, card, button, slot);
    case 'refresh': return act({ button, slot }, () => refreshDeliveries(card));
    case 'rotate-secret': return openEndpointDialog('#webhook-rotate-dialog', '#webhook-rotate-grace');
    case 'delete': return openEndpointDialog('#webhook-delete-dialog', '#webhook-delete-cancel');
    case 'enable':
    case 'disable': return setEndpointEnabled(endpoint, button.dataset.action, button, slot);
    default: return undefined;
  }
}

// Queues a webhook.test event, then follows its delivery as a user would with "Refresh":
// until it is no longer pending, for TEST_POLLS seconds at most, while the card is on screen.
async function sendTestEvent(endpoint, card, button, slot) {
  let queued = null;
  const ok = await act({ button, slot }, async () => {
    queued = await api('POST', endpointPath(endpoint.endpoint_id, 'test'));
    await refreshDeliveries(card);
  });
  if (!ok) return;
  notify(`Test event queued for ${endpoint.url}; its delivery shows below.`);
  const shownIn = view;
  for (let i = 0; i < TEST_POLLS; i += 1) {
    await sleep(TEST_POLL_MS);
    if (view !== shownIn || !card.isConnected) return;
    let deliveries;
    try {
      deliveries = await refreshDeliveries(card);
    } catch {
      return; // the card says why
    }
    const delivery = deliveries.find((d) => d.event_id === queued.event_id);
    if (delivery && delivery.state !== 'pending') return;
  }
}

async function setEndpointEnabled(endpoint, action, button, slot) {
  const ok = await act({ button, slot }, async () => {
    await api('POST', endpointPath(endpoint.endpoint_id, action));
    await loadWebhooks();
  });
  if (ok) notify(`Endpoint ${endpoint.url} ${action}d.`);
}

function openEndpointDialog(selector, focusSelector) {
  const dialog = $(selector);
  $('form', dialog).reset();
  $('.dialog-endpoint', dialog).textContent = view.dialogEndpoint.url;
  openDialog(dialog, focusSelector);
}

async function submitRotateSecret(event) {
  event.preventDefault();
  const dialog = $('#webhook-rotate-dialog');
  const endpoint = view.dialogEndpoint;
  let rotated = null;
  await act({ button: $('#webhook-rotate-submit'), slot: dialogError(dialog) }, async () => {
    const grace = Number($('#webhook-rotate-grace').value);
    rotated = await api('POST', endpointPath(endpoint.endpoint_id, 'rotate-secret'), { body: { grace_seconds: grace } });
  });
  if (!rotated) return;
  dialog.close();
  const note = rotated.previous_secret_until
    ? `The old secret keeps signing too until ${formatTime(rotated.previous_secret_until)}: each webhook carries both signatures until then.`
    : 'The old secret stopped signing now.';
  showToken({ title: 'Signing secret rotated', keyId: endpoint.url, subject: 'Endpoint', what: 'secret', token: rotated.secret, note });
  await act({}, loadWebhooks);
}

async function submitDeleteEndpoint(event) {
  event.preventDefault();
  const dialog = $('#webhook-delete-dialog');
  const endpoint = view.dialogEndpoint;
  const ok = await act({ button: $('#webhook-delete-confirm'), slot: dialogError(dialog) }, async () => {
    await api('DELETE', endpointPath(endpoint.endpoint_id));
  });
  if (!ok) return;
  dialog.close();
  await act({}, loadWebhooks);
  notify(`Endpoint ${endpoint.url} deleted.`);
}

const WEBHOOK_FIELDS = { partner_id: 'webhook-partner', url: 'webhook-url', events: 'webhook-events' };

async function createEndpoint(event) {
  event.preventDefault();
  let created = null;
  await act({ button: $('#webhook-create'), slot: $('#webhook-form-error'), fields: WEBHOOK_FIELDS }, async () => {
    const partnerId = $('#webhook-partner').value;
    if (!partnerId) throw invalid('partner_id', 'choose a partner');
    const url = $('#webhook-url').value.trim();
    if (!url) throw invalid('url', 'an endpoint needs a URL');
    const events = splitList($('#webhook-events').value);
    const body = events.length ? { partner_id: partnerId, url, events } : { partner_id: partnerId, url };
    created = await api('POST', '/v1/webhooks', { body });
  });
  if (!created) return;
  $('#webhook-url').value = '';
  $('#webhook-events').value = '';
  showToken({
    title: 'Endpoint created', keyId: created.endpoint.url, subject: 'Endpoint', what: 'secret', token: created.secret,
    note: 'The receiver checks each webhook\'s webhook-signature header with this secret (Standard Webhooks).',
  });
  await act({}, loadWebhooks);
}

// ---------------------------------------------------------------- wiring

async function submitSignIn(event) {
  event.preventDefault();
  const input = $('#signin-key');
  const token = input.value.trim();
  clearError(null);
  setText($('#signin-error'), '');
  if (!token) {
    setText($('#signin-error'), 'Paste an API key first (missing_key)');
    input.focus();
    return;
  }
  $('#signin-submit').disabled = true;
  setText($('#signin-status'), 'Checking the key…');
  try {
    await signIn(token);
  } catch (err) {
    reportSignInFailure(err);
  } finally {
    $('#signin-submit').disabled = false;
    setText($('#signin-status'), '');
  }
}

// Sign-in has not produced a page yet: its error goes next to the form; a failure after the
// key was accepted (loading the lists) goes to #error like any other.
function reportSignInFailure(err) {
  const error = asApiError(err);
  if (session.token) {
    showError(null, error);
    return;
  }
  showSignedOut();
  setText($('#signin-error'), error.text);
}

async function resumeSession() {
  const saved = sessionStorage.getItem(STORAGE_KEY);
  if (!saved) {
    showSignedOut();
    return;
  }
  setText($('#signin-status'), 'Signing in with the key saved in this tab…');
  try {
    await signIn(saved);
  } catch (err) {
    reportSignInFailure(err);
  } finally {
    setText($('#signin-status'), '');
  }
}

function wire() {
  $('#signin-form').addEventListener('submit', submitSignIn);
  $('#signout').addEventListener('click', signOut);
  $('#error-dismiss').addEventListener('click', () => clearError(null));
  $('#nav-keys').addEventListener('click', () => showView('keys'));
  $('#nav-partners').addEventListener('click', () => showView('partners'));
  $('#nav-reminders').addEventListener('click', () => openView('reminders', loadReminders));
  $('#nav-webhooks').addEventListener('click', () => openView('webhooks', loadWebhooks));
  $('#reminders-filters').addEventListener('submit', (event) => {
    event.preventDefault();
    act({ button: $('#reminders-refresh') }, loadReminders);
  });
  $('#expiring-table tbody').addEventListener('click', onReminderAction);
  $('#rotation-table tbody').addEventListener('click', onReminderAction);
  $('#webhooks-filters').addEventListener('submit', (event) => {
    event.preventDefault();
    act({ button: $('#webhooks-refresh') }, loadWebhooks);
  });
  $('#webhooks-more').addEventListener('click', () => act({ button: $('#webhooks-more') }, () => loadWebhooks({ more: true })));
  $('#webhooks-list').addEventListener('click', onEndpointAction);
  $('#webhook-form').addEventListener('submit', createEndpoint);
  $('#webhook-rotate-form').addEventListener('submit', submitRotateSecret);
  $('#webhook-delete-form').addEventListener('submit', submitDeleteEndpoint);
  $('#filters').addEventListener('submit', applyFilters);
  $('#filter-clear').addEventListener('click', (event) => {
    $('#filters').reset();
    applyFilters(event);
  });
  $('#keys-prev').addEventListener('click', () => turnPage(false));
  $('#keys-next').addEventListener('click', () => turnPage(true));
  $('#keys-table tbody').addEventListener('click', onKeyAction);
  $('#partners-table tbody').addEventListener('click', onPartnerAction);
  $('#partner-form').addEventListener('submit', createPartner);
  $('#issue-open').addEventListener('click', openIssue);
  $('#issue-form').addEventListener('submit', submitIssue);
  $('#rotate-form').addEventListener('submit', submitRotate);
  $('#revoke-form').addEventListener('submit', submitRevoke);
  $('#rotate-grace').addEventListener('change', () => {
    const custom = $('#rotate-grace').value === 'custom';
    $('#rotate-grace-custom-field').hidden = !custom;
    if (custom) $('#rotate-grace-custom').focus();
  });
  $('#audit-more').addEventListener('click', loadAudit);
  for (const [button, dialog] of [['#issue-cancel', '#issue-dialog'], ['#rotate-cancel', '#rotate-dialog'],
    ['#revoke-cancel', '#revoke-dialog'], ['#audit-close', '#audit-dialog'], ['#usage-close', '#usage-dialog'],
    ['#webhook-rotate-cancel', '#webhook-rotate-dialog'], ['#webhook-delete-cancel', '#webhook-delete-dialog']]) {
    $(button).addEventListener('click', () => $(dialog).close());
  }
}

wire();
resumeSession();
