// Signing in and out, and which view is shown.

import { api, ApiError } from './api.js';
import { $, el, notify, setText } from './dom.js';
import { loadKeys } from './keys.js';
import { loadLimits } from './limits.js';
import { loadPartners } from './partners.js';
import { loadReminders } from './reminders.js';
import { freshView, session, state, STORAGE_KEY } from './state.js';
import { act, asApiError, clearError, closeDialogs, showError } from './ui.js';

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
  await loadLimits();
  session.token = token;
  try {
    Object.assign(session, await identify());
  } catch (err) {
    forgetKey();
    throw err;
  }
  sessionStorage.setItem(STORAGE_KEY, token);
  state.view = freshView();
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

export function signOut() {
  forgetKey();
  state.view = null;
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
  const own = state.view.partners.find((p) => p.partner_id === session.partnerId);
  const who = session.role === 'operator' ? 'operator' : `partner${own ? ` ${own.name}` : ''}`;
  $('#whoami').replaceChildren('Signed in with ', el('code', { text: session.keyId }), ` as ${who}`);
}

// Each view is a <section id="NAME-view"> with a heading #NAME-heading and a nav button #nav-NAME.
const VIEWS = ['keys', 'reminders', 'webhooks', 'partners'];

export function showView(name) {
  const shown = name === 'partners' && session.role !== 'operator' ? 'keys' : name;
  for (const v of VIEWS) {
    $(`#${v}-view`).hidden = v !== shown;
    if (v === shown) $(`#nav-${v}`).setAttribute('aria-current', 'page');
    else $(`#nav-${v}`).removeAttribute('aria-current');
  }
}

export const currentViewHeading = () => `#${VIEWS.find((v) => !$(`#${v}-view`).hidden) || 'keys'}-heading`;

// The nav buttons of views that show server state load it afresh on every visit.
export async function openView(name, load) {
  showView(name);
  $(`#${name}-heading`).focus();
  if (load) await act({}, load);
}

export async function submitSignIn(event) {
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
  try {
    await signInSaying(token, 'Checking the key…');
  } finally {
    $('#signin-submit').disabled = false;
  }
}

// Signs in with `token`, saying `status` meanwhile; a failure is reported, never thrown.
async function signInSaying(token, status) {
  setText($('#signin-status'), status);
  try {
    await signIn(token);
  } catch (err) {
    reportSignInFailure(err);
  } finally {
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

export async function resumeSession() {
  const saved = sessionStorage.getItem(STORAGE_KEY);
  if (!saved) {
    showSignedOut();
    return;
  }
  await signInSaying(saved, 'Signing in with the key saved in this tab…');
}
