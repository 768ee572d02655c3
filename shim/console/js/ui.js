// Running a user action, showing its errors, dialogs and the one-time token panel.

import { ApiError } from './api.js';
import { $, el, notify, setText } from './dom.js';
import { currentViewHeading } from './session.js';
import { session } from './state.js';

// Runs one user action: clears the previous error, disables the button while it runs, and
// shows a failure in #error and next to the action (slot), marking the named field when the
// form maps it. Returns true when the action succeeded.
export async function act({ button = null, slot = null, fields = {} }, work) {
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
export function asApiError(err) {
  if (err instanceof ApiError) return err;
  console.error(err);
  return new ApiError(String((err && err.message) || err), 'client_error');
}

export function showError(slot, error, fieldId) {
  setText($('#error'), error.text);
  $('#error-bar').hidden = false;
  if (slot) setText(slot, error.text);
  const field = fieldId && document.getElementById(fieldId);
  if (field) {
    field.setAttribute('aria-invalid', 'true');
    field.focus();
  }
}

export function clearError(slot) {
  setText($('#error'), '');
  $('#error-bar').hidden = true;
  notify('');
  if (slot) {
    setText(slot, '');
    const scope = slot.closest('form, dialog');
    if (scope) scope.querySelectorAll('[aria-invalid]').forEach((n) => n.removeAttribute('aria-invalid'));
  }
}

// showModal traps focus and closes on Escape; on close, focus returns to what opened it.
export function openDialog(dialog, focusSelector) {
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

export function closeDialogs() {
  document.querySelectorAll('dialog[open]').forEach((d) => d.close());
}

export const dialogError = (dialog) => $('.dialog-error', dialog);

// The one-time token panel: created on demand, and removed from the page when closed, so the
// token does not linger in the DOM. Webhook signing secrets use it too (what: 'secret', with
// the endpoint as the subject): they are shown once in the same way, and never kept.
export function showToken({ title, keyId, token, note, subject = 'Key id', what = 'token' }) {
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
