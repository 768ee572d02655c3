// The reminders view: keys expiring soon and keys due for rotation.

import { api } from './api.js';
import { $, cell, el, fillTable, setText } from './dom.js';
import { openRotate } from './key-dialogs.js';
import { displayStatus, statusText } from './keys.js';
import { limits } from './limits.js';
import { partnerName } from './partners.js';
import { state } from './state.js';
import { relativeTime, timeNode } from './time.js';

// GET /v1/reminders: live keys expiring soon (GET /v1/limits), and keys the database found due for
// rotation (a key.rotation_due event). The nav button counts them, for every partner the key
// may see.
export async function loadReminders() {
  const status = $('#reminders-status');
  setText(status, 'Loading reminders…');
  const partnerId = $('#reminders-partner').value;
  try {
    state.view.reminders = await api('GET', '/v1/reminders', { query: { partner_id: partnerId } });
    renderReminders(state.view.reminders, '');
    setText(status, state.view.reminders.truncated
      ? 'A list holds its first 200 keys only: narrow it to a partner, or use the filters of the Keys state.view.' : '');
    if (!partnerId) renderRemindersCount(state.view.reminders);
  } catch (err) {
    state.view.reminders = { expiring: [], rotation_due: [] };
    renderReminders(state.view.reminders, `Reminders could not be loaded: ${err.text || err}`);
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
  setText($('#expiring-empty'), failure || (reminders.expiring.length ? '' : `No live key${whose} expires within ${limits.expiring_soon_days} days.`));
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
export function onReminderAction(event) {
  const button = event.target.closest('button[data-action="rotate"]');
  const row = button && button.closest('tr[data-key-id]');
  const list = row && (row.dataset.reminder === 'expiring' ? state.view.reminders.expiring : state.view.reminders.rotation_due);
  const key = list && list.find((k) => k.key_id === row.dataset.keyId);
  if (!key) return;
  state.view.dialogKey = key;
  openRotate();
}
