// The webhooks view: endpoints, their deliveries, and their actions.

import { api, endpointPath, invalid } from './api.js';
import { $, cell, chips, el, fillTable, notify, setText, sleep, splitList } from './dom.js';
import { limits } from './limits.js';
import { partnerName } from './partners.js';
import { state } from './state.js';
import { formatTime, relativeTime, timeNode } from './time.js';
import { act, dialogError, openDialog, showToken } from './ui.js';

const DELIVERY_PAGE_SIZE = 10;
const TEST_POLL_MS = 1000; // after "Send test event", how often its delivery is looked at...
const TEST_POLLS = 20; // ...and for how long, until it is no longer pending

// Endpoints, newest first, each with its last deliveries. `more` appends the next page; a page
// holds as many as a partner may have, and each loads its deliveries too.
export async function loadWebhooks({ more = false } = {}) {
  const status = $('#webhooks-status');
  setText(status, 'Loading endpoints…');
  $('#webhooks-empty').hidden = true;
  const cursor = more ? state.view.endpointsCursor : null;
  let page;
  try {
    page = await api('GET', '/v1/webhooks', {
      query: { partner_id: $('#webhooks-partner').value, limit: limits.webhook_endpoints_per_partner_max, cursor },
    });
  } catch (err) {
    if (!more) {
      state.view.endpoints = [];
      $('#webhooks-list').replaceChildren();
      setText($('#webhooks-empty'), `Endpoints could not be loaded: ${err.text || err}`);
    }
    setText(status, '');
    throw err;
  }
  state.view.endpoints = more ? [...state.view.endpoints, ...page.items] : page.items;
  state.view.endpointsCursor = page.next_cursor;
  const cards = page.items.map(endpointCard);
  if (more) $('#webhooks-list').append(...cards);
  else $('#webhooks-list').replaceChildren(...cards);
  $('#webhooks-more').hidden = !page.next_cursor;
  setText($('#webhooks-empty'), state.view.endpoints.length ? '' : noEndpointsText());
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

export function onEndpointAction(event) {
  const button = event.target.closest('button[data-action]');
  const card = button && button.closest('article[data-endpoint-id]');
  const endpoint = card && state.view.endpoints.find((e) => e.endpoint_id === card.dataset.endpointId);
  if (!endpoint) return undefined;
  const slot = $('.row-error', card);
  state.view.dialogEndpoint = endpoint;
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
  const shownIn = state.view;
  for (let i = 0; i < TEST_POLLS; i += 1) {
    await sleep(TEST_POLL_MS);
    if (state.view !== shownIn || !card.isConnected) return;
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
  $('.dialog-endpoint', dialog).textContent = state.view.dialogEndpoint.url;
  openDialog(dialog, focusSelector);
}

export async function submitRotateSecret(event) {
  event.preventDefault();
  const dialog = $('#webhook-rotate-dialog');
  const endpoint = state.view.dialogEndpoint;
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

export async function submitDeleteEndpoint(event) {
  event.preventDefault();
  const dialog = $('#webhook-delete-dialog');
  const endpoint = state.view.dialogEndpoint;
  const ok = await act({ button: $('#webhook-delete-confirm'), slot: dialogError(dialog) }, async () => {
    await api('DELETE', endpointPath(endpoint.endpoint_id));
  });
  if (!ok) return;
  dialog.close();
  await act({}, loadWebhooks);
  notify(`Endpoint ${endpoint.url} deleted.`);
}

const WEBHOOK_FIELDS = { partner_id: 'webhook-partner', url: 'webhook-url', events: 'webhook-events' };

export async function createEndpoint(event) {
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
