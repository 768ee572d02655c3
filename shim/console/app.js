// apikey key console: plain ES2020 modules, no framework, no build step (docs/src/console.md).
// This file wires the page's controls to the modules in js/ and starts.
//
// Rules every module keeps, because the page handles tokens under a strict CSP:
// - every request goes through api() (js/api.js), which sends the key in the X-API-Key header
//   only (never in a URL) and turns every failure into an ApiError whose text is
//   "<message> (<reason>)";
// - the DOM is built with createElement and textContent, so nothing the API returns is ever
//   parsed as markup;
// - looks change through classes and the hidden attribute only (the CSP forbids inline styles);
// - the key lives in memory and sessionStorage, nowhere else, and signing out forgets it;
// - the page's state lives in js/state.js, and the server's limits come from GET /v1/limits.

import { submitAddCredits, submitCredits } from './js/credits.js';
import { $ } from './js/dom.js';
import { loadAudit, openIssue, submitIssue, submitRevoke, submitRotate } from './js/key-dialogs.js';
import { applyFilters, onKeyAction, turnPage } from './js/keys.js';
import { createPartner, onPartnerAction } from './js/partners.js';
import { loadReminders, onReminderAction } from './js/reminders.js';
import { openView, resumeSession, showView, signOut, submitSignIn } from './js/session.js';
import { act, clearError } from './js/ui.js';
import { createEndpoint, loadWebhooks, onEndpointAction, submitDeleteEndpoint, submitRotateSecret } from './js/webhooks.js';

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
  $('#credits-form').addEventListener('submit', submitCredits);
  $('#credits-add-form').addEventListener('submit', submitAddCredits);
  for (const [button, dialog] of [['#issue-cancel', '#issue-dialog'], ['#rotate-cancel', '#rotate-dialog'],
    ['#revoke-cancel', '#revoke-dialog'], ['#audit-close', '#audit-dialog'], ['#usage-close', '#usage-dialog'],
    ['#credits-close', '#credits-dialog'],
    ['#webhook-rotate-cancel', '#webhook-rotate-dialog'], ['#webhook-delete-cancel', '#webhook-delete-dialog']]) {
    $(button).addEventListener('click', () => $(dialog).close());
  }
}

wire();
resumeSession();
