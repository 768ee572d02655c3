// The key dialogs: issue, rotate, revoke and audit.

import { api, invalid, keyPath } from './api.js';
import { $, el, notify, setText, splitList } from './dom.js';
import { loadKeys } from './keys.js';
import { limits, scopeProblem } from './limits.js';
import { choosePartnerIn } from './partners.js';
import { loadReminders } from './reminders.js';
import { session, state } from './state.js';
import { duration, timeNode } from './time.js';
import { act, dialogError, openDialog, showToken } from './ui.js';

const AUDIT_PAGE_SIZE = 100;

export function openIssue() {
  $('#issue-form').reset();
  const preferred = state.view.filters.partner || (session.role === 'partner' ? session.partnerId : '');
  choosePartnerIn($('#issue-partner'), preferred);
  renderScopeChoices();
  $('#issue-partner-note').hidden = session.role !== 'partner';
  openDialog($('#issue-dialog'), '#issue-partner');
}

function renderScopeChoices() {
  const scopes = [...state.view.scopesInUse].sort();
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
  if (scopes.length > limits.scopes_max) throw invalid('scopes', `a key holds at most ${limits.scopes_max} scopes`);
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

export async function submitIssue(event) {
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
  state.view.cursor = null;
  state.view.previousCursors = [];
  await act({}, loadKeys);
}

// ---------------------------------------------------------------- rotate, revoke, audit

export function openRotate() {
  const dialog = $('#rotate-dialog');
  $('#rotate-form').reset();
  $('#rotate-grace-custom-field').hidden = true;
  $('.dialog-key', dialog).textContent = state.view.dialogKey.key_id;
  openDialog(dialog, '#rotate-grace');
}

function graceSeconds() {
  const choice = $('#rotate-grace').value;
  if (choice !== 'custom') return Number(choice);
  const text = $('#rotate-grace-custom').value.trim();
  const max = limits.rotation_grace_seconds_max;
  if (!/^\d+$/.test(text) || Number(text) > max) {
    throw invalid('grace_seconds', `the grace period must be a whole number of seconds from 0 to ${max}`);
  }
  return Number(text);
}

export async function submitRotate(event) {
  event.preventDefault();
  const dialog = $('#rotate-dialog');
  const old = state.view.dialogKey;
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

export function openRevoke() {
  const dialog = $('#revoke-dialog');
  $('#revoke-form').reset();
  $('.dialog-key', dialog).textContent = state.view.dialogKey.key_id;
  // Focus the harmless choice first: Enter should not revoke by accident.
  openDialog(dialog, '#revoke-cancel');
}

export async function submitRevoke(event) {
  event.preventDefault();
  const dialog = $('#revoke-dialog');
  const key = state.view.dialogKey;
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

export async function openAudit() {
  const dialog = $('#audit-dialog');
  $('.dialog-key', dialog).textContent = state.view.dialogKey.key_id;
  $('#audit-list').replaceChildren();
  state.view.auditCursor = null;
  openDialog(dialog, '#audit-close');
  await loadAudit();
}

export async function loadAudit() {
  const dialog = $('#audit-dialog');
  const status = $('#audit-status');
  setText(status, 'Loading the audit history…');
  $('#audit-more').hidden = true;
  await act({ button: $('#audit-more'), slot: dialogError(dialog) }, async () => {
    try {
      const query = { key_id: state.view.dialogKey.key_id, limit: AUDIT_PAGE_SIZE, cursor: state.view.auditCursor };
      const page = await api('GET', '/v1/audit', { query });
      $('#audit-list').append(...page.items.map(auditItem));
      state.view.auditCursor = page.next_cursor;
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
