// The keys view: a key's status, the filtered and paged table, a row's actions.

import { api, keyPath } from './api.js';
import { $, cell, chips, el, fillTable, notify, setText } from './dom.js';
import { openAudit, openRevoke, openRotate } from './key-dialogs.js';
import { expiringSoonMs } from './limits.js';
import { session, state } from './state.js';
import { formatTime, relativeTime, timeNode } from './time.js';
import { act } from './ui.js';
import { openCredits } from './credits.js';
import { openUsage } from './usage.js';

// The API's status, except that a live key expiring soon (GET /v1/limits) is "expiring".
export function displayStatus(key, now = Date.now()) {
  if (key.status === 'live' && key.expires_at && Date.parse(key.expires_at) - now <= expiringSoonMs()) {
    return 'expiring';
  }
  return key.status;
}

export function statusText(key, status) {
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

// A key imported from another system keeps its holder's token; the note says from what.
function importNote(key) {
  if (!key.imported_from) return null;
  return el('span', { class: 'note imported', data: { importedFrom: key.imported_from }, text: `imported (${key.imported_from})` });
}

export function readFilters() {
  return {
    partner: $('#filter-partner').value,
    status: $('#filter-status').value,
    tag: $('#filter-tag').value.trim(),
    q: $('#filter-q').value.trim(),
    limit: $('#filter-limit').value,
  };
}

// "expiring" is not an API status: ask for live keys and keep those expiring soon.
// "live" likewise leaves them out, so every row shows the status that was asked for.
function keysQuery() {
  const f = state.view.filters;
  const apiStatus = f.status === 'expiring' ? 'live' : f.status;
  return { partner_id: f.partner, status: apiStatus, tag: f.tag, q: f.q, limit: f.limit, cursor: state.view.cursor };
}

export async function loadKeys() {
  setText($('#keys-status'), 'Loading keys…');
  $('#keys-empty').hidden = true;
  try {
    const page = await api('GET', '/v1/keys', { query: keysQuery() });
    page.items.forEach((key) => key.scopes.forEach((s) => state.view.scopesInUse.add(s)));
    const wanted = state.view.filters.status;
    state.view.keys = page.items.filter((key) => !wanted || displayStatus(key) === wanted);
    state.view.nextCursor = page.next_cursor;
    renderKeys(emptyReason(page.items.length));
    setText($('#keys-status'), '');
  } catch (err) {
    state.view.keys = [];
    state.view.nextCursor = null;
    renderKeys(`Keys could not be loaded: ${err.text || err}`);
    setText($('#keys-status'), '');
    throw err;
  }
}

function describeFilters() {
  const f = state.view.filters;
  const partner = state.view.partners.find((p) => p.partner_id === f.partner);
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
  if (state.view.keys.length > 0) return '';
  const filters = describeFilters();
  if (fetched > 0) {
    return `None of the ${fetched} keys on this page is ${state.view.filters.status.replace(/_/g, ' ')}`
      + (state.view.nextCursor ? '; try the next page.' : '.');
  }
  if (state.view.cursor) return 'There are no more keys after the previous page.';
  if (filters) return `No key matches ${filters}. Change or clear the filters to see more.`;
  return session.role === 'operator'
    ? 'No keys yet: use "Issue key" to create the first one.'
    : 'Your partner has no keys this key can see. An operator issues keys for your partner.';
}

function renderKeys(empty) {
  const now = Date.now();
  fillTable($('#keys-table'), state.view.keys.map((key) => keyRow(key, now)));
  setText($('#keys-empty'), empty);
  $('#keys-prev').disabled = state.view.previousCursors.length === 0;
  $('#keys-next').disabled = !state.view.nextCursor;
  const page = state.view.previousCursors.length + 1;
  setText($('#keys-page'), `Page ${page}${state.view.keys.length ? `, ${state.view.keys.length} key${state.view.keys.length === 1 ? '' : 's'}` : ''}`);
}

function keyRow(key, now) {
  const status = displayStatus(key, now);
  return el('tr', { data: { keyId: key.key_id, status } },
    cell(el('code', { class: 'key-id', text: key.key_id })),
    cell(key.name ? el('span', { class: 'long-text', text: key.name }) : el('span', { class: 'muted', text: 'unnamed' })),
    cell(el('span', { class: 'long-text', text: key.partner_name })),
    cell(chips(key.scopes, 'scope-chips')),
    cell(chips(key.tags, 'tag-chips')),
    cell(el('span', { class: `env env-${key.environment}`, text: key.environment })),
    cell(el('span', { class: `status status-${status}`, text: statusText(key, status) }), rotationNote(key), importNote(key)),
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
    button('credits', 'Credits'),
    el('p', { class: 'row-error form-error', role: 'alert', hidden: true }));
}

export function onKeyAction(event) {
  const button = event.target.closest('button[data-action]');
  const row = button && button.closest('tr[data-key-id]');
  const key = row && state.view.keys.find((k) => k.key_id === row.dataset.keyId);
  if (!key) return;
  state.view.dialogKey = key;
  const slot = $('.row-error', row);
  switch (button.dataset.action) {
    case 'rotate': return openRotate();
    case 'revoke': return openRevoke();
    case 'audit': return openAudit();
    case 'usage': return openUsage({ keyId: key.key_id, title: key.key_id, rate: true });
    case 'credits': return openCredits({ keyId: key.key_id, title: key.key_id });
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
export async function applyFilters(event) {
  event.preventDefault();
  state.view.filters = readFilters();
  state.view.cursor = null;
  state.view.previousCursors = [];
  await act({ button: $('#filter-apply') }, loadKeys);
}

export async function turnPage(forward) {
  if (forward && state.view.nextCursor) {
    state.view.previousCursors.push(state.view.cursor);
    state.view.cursor = state.view.nextCursor;
  } else if (!forward && state.view.previousCursors.length) {
    state.view.cursor = state.view.previousCursors.pop();
  } else {
    return;
  }
  await act({}, loadKeys);
}
