// The page's state, all of it: who is signed in (session) and what the views show
// (state.view). Modules read and change it here; nothing else is kept between events.

import { readFilters } from './keys.js';

// Where the key is kept (sessionStorage), for as long as the tab lives and no longer.
export const STORAGE_KEY = 'apikey.console.key';

// Who is signed in: set by signIn, emptied by forgetKey.
export const session = { token: null, role: null, keyId: null, partnerId: null };

// What is on screen for the signed-in key; a new one at every sign-in, none when signed out.
export const state = { view: null };

export const freshView = () => ({
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
