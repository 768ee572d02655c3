// The partners view, and the partner choices of other views' forms.

import { api, invalid } from './api.js';
import { $, cell, el, fillTable, notify, setText } from './dom.js';
import { applyFilters } from './keys.js';
import { showView } from './session.js';
import { state } from './state.js';
import { timeNode } from './time.js';
import { act } from './ui.js';
import { openCredits } from './credits.js';
import { openUsage } from './usage.js';

const PARTNER_PAGE_SIZE = 500;
const PARTNER_PAGES_MAX = 20;

export async function loadPartners() {
  setText($('#partners-status'), 'Loading partners…');
  try {
    state.view.partners = await fetchAllPartners();
    setText($('#partners-status'), '');
  } catch (err) {
    state.view.partners = [];
    setText($('#partners-status'), '');
    renderPartners(`Partners could not be loaded: ${err.text || err}`);
    throw err;
  }
  renderPartners(state.view.partners.length ? '' : 'No partners yet: create the first one above.');
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
    select.value = state.view.partners.some((p) => p.partner_id === selected) ? selected : '';
  }
  choosePartnerIn($('#webhook-partner'), $('#webhook-partner').value);
  fillTable($('#partners-table'), state.view.partners.map(partnerRow));
  setText($('#partners-empty'), empty);
}

const partnerOptions = () => state.view.partners.map((p) => el('option', { value: p.partner_id, text: partnerLabel(p) }));

// A select for what a new object belongs to. No silent default among several partners: a
// key or an endpoint given to the wrong one is a leak.
export function choosePartnerIn(select, preferred) {
  const options = partnerOptions();
  const choose = el('option', { value: '', text: 'Choose a partner…' });
  select.replaceChildren(...(options.length === 1 ? options : [choose, ...options]));
  if (preferred && state.view.partners.some((p) => p.partner_id === preferred)) select.value = preferred;
}

export const partnerName = (partnerId) => state.view.partners.find((p) => p.partner_id === partnerId)?.name || partnerId;

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
      el('button', { type: 'button', data: { action: 'limits' }, 'aria-label': `Limits of ${p.name}`, text: 'Limits' }),
      el('p', { class: 'row-error form-error', role: 'alert', hidden: true }))));
}

export async function onPartnerAction(event) {
  const button = event.target.closest('button[data-action]');
  const row = button && button.closest('tr[data-partner-id]');
  const partner = row && state.view.partners.find((p) => p.partner_id === row.dataset.partnerId);
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
  if (action === 'limits') {
    openCredits({ partnerId: partner.partner_id, title: partner.name });
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

export async function createPartner(event) {
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
