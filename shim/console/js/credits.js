// The credits dialog: a key's balance, or a partner's limits (its rate and balance, shared by
// all its keys); operators set and top them up, partners only read their own.

import { api, invalid, keyPath } from './api.js';
import { $, notify, setText } from './dom.js';
import { session } from './state.js';
import { formatTime } from './time.js';
import { act, dialogError, openDialog } from './ui.js';

// What the open dialog is about: { keyId } or { partnerId }, and its title.
let subject = null;

const pathOf = (s) => (s.keyId ? keyPath(s.keyId, 'credits') : `/v1/partners/${encodeURIComponent(s.partnerId)}/limits`);
const addPathOf = (s) => (s.keyId ? keyPath(s.keyId, 'credits') : `/v1/partners/${encodeURIComponent(s.partnerId)}/credits`);

// The intervals the form offers, as PostgreSQL writes them, and as the page says them.
const INTERVALS = [
  { text: '01:00:00', value: '1 hour', words: 'hour' },
  { text: '1 day', value: '1 day', words: 'day' },
  { text: '7 days', value: '7 days', words: 'week' },
  { text: '1 mon', value: '1 month', words: 'month' },
];

// One sentence for a balance as GET .../credits or .../limits returns it.
export function describeBalance(credits) {
  if (!credits) return 'No balance: verifications are not limited by credits.';
  const left = `${credits.remaining} credit${credits.remaining === 1 ? '' : 's'} left`;
  if (credits.refill_amount === null) return `${left}, no refill.`;
  const every = INTERVALS.find((i) => i.text === credits.refill_interval)?.words || credits.refill_interval;
  const next = credits.next_refill_at ? `, next on ${formatTime(credits.next_refill_at)}` : '';
  return `${left}; set back to ${credits.refill_amount} every ${every}${next}.`;
}

function show(answer) {
  const parts = [describeBalance(answer.credits)];
  if (subject.partnerId) {
    parts.unshift(answer.rate_per_minute === null
      ? 'No partner-wide rate.'
      : `At most ${answer.rate_per_minute} verifications a minute across its keys.`);
    $('#credits-rate').value = answer.rate_per_minute ?? '';
  }
  setText($('#credits-balance'), parts.join(' '));
  const c = answer.credits;
  $('#credits-remaining').value = c ? c.remaining : '';
  $('#credits-refill-amount').value = c && c.refill_amount !== null ? c.refill_amount : '';
  $('#credits-refill-interval').value = (c && INTERVALS.find((i) => i.text === c.refill_interval)?.value) || '';
}

export async function openCredits({ keyId = null, partnerId = null, title }) {
  subject = { keyId, partnerId };
  const dialog = $('#credits-dialog');
  $('.dialog-subject', dialog).textContent = title;
  const operator = session.role === 'operator';
  $('#credits-form').hidden = !operator;
  $('#credits-add-form').hidden = !operator;
  $('#credits-readonly').hidden = operator;
  $('#credits-rate-field').hidden = !partnerId;
  $('#credits-form').reset();
  $('#credits-add-form').reset();
  setText($('#credits-balance'), 'Loading…');
  openDialog(dialog, '#credits-close');
  await act({ slot: dialogError(dialog) }, async () => show(await api('GET', pathOf(subject))));
}

const whole = (id, field, { min = null } = {}) => {
  const text = $(`#${id}`).value.trim();
  if (!text) return null;
  if (!/^-?\d+$/.test(text) || (min !== null && Number(text) < min)) {
    throw invalid(field, `${field.replaceAll('_', ' ')} must be a whole number${min === null ? '' : ` of at least ${min}`}`);
  }
  return Number(text);
};

// The body of PUT .../credits (a key) or PUT .../limits (a partner).
function setRequest() {
  const interval = $('#credits-refill-interval').value || null;
  const prefix = subject.partnerId ? 'credits_' : '';
  const remaining = whole('credits-remaining', subject.partnerId ? 'credits' : 'remaining', { min: 0 });
  const amount = whole('credits-refill-amount', `${prefix}refill_amount`, { min: 0 });
  if (interval && amount === null) throw invalid(`${prefix}refill_amount`, 'a refill needs the amount it sets the balance to');
  const body = subject.partnerId
    ? { rate_per_minute: whole('credits-rate', 'rate_per_minute', { min: 1 }), credits: remaining }
    : { remaining };
  if (interval) {
    body[`${prefix}refill_amount`] = amount;
    body[`${prefix}refill_interval`] = interval;
  }
  return body;
}

const FIELDS = {
  rate_per_minute: 'credits-rate', remaining: 'credits-remaining', credits: 'credits-remaining',
  refill_amount: 'credits-refill-amount', credits_refill_amount: 'credits-refill-amount',
  refill_interval: 'credits-refill-interval', credits_refill_interval: 'credits-refill-interval',
  amount: 'credits-amount',
};

export async function submitCredits(event) {
  event.preventDefault();
  const dialog = $('#credits-dialog');
  const ok = await act({ button: $('#credits-save'), slot: dialogError(dialog), fields: FIELDS }, async () => {
    show(await api('PUT', pathOf(subject), { body: setRequest() }));
  });
  if (ok) notify('Credits saved.');
}

export async function submitAddCredits(event) {
  event.preventDefault();
  const dialog = $('#credits-dialog');
  const ok = await act({ button: $('#credits-add'), slot: dialogError(dialog), fields: FIELDS }, async () => {
    const amount = whole('credits-amount', 'amount');
    if (amount === null) throw invalid('amount', 'enter the credits to add');
    show(await api('POST', addPathOf(subject), { body: { amount } }));
    $('#credits-add-form').reset();
  });
  if (ok) notify('Credits added.');
}
