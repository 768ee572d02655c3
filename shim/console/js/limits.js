// The API's own limits (GET /v1/limits, read once per page load), so that the page checks
// input with the server's rules instead of repeating them, and says them in its texts.

import { errorFrom, ApiError } from './api.js';

export const limits = {};

let loading = null;

// Resolves once the limits are known; a failure is retried at the next call.
export function loadLimits() {
  loading = loading || fetchLimits().catch((err) => {
    loading = null;
    throw err;
  });
  return loading;
}

async function fetchLimits() {
  let response;
  try {
    response = await fetch('/v1/limits', { cache: 'no-store', credentials: 'omit', redirect: 'error' });
  } catch (err) {
    throw new ApiError(`could not reach the server: ${err.message}`, 'network_error');
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw errorFrom(response, data);
  Object.assign(limits, data);
  applyLimits();
}

// Texts and inputs of the page that state a limit: data-limits="... {name} ..." is the
// element's text with each {name} replaced; data-limit-max="name" sets an input's max.
function applyLimits() {
  for (const node of document.querySelectorAll('[data-limits]')) {
    node.textContent = node.dataset.limits.replace(/\{(\w+)\}/g, (_, name) => String(limits[name]));
  }
  for (const node of document.querySelectorAll('[data-limit-max]')) {
    node.setAttribute('max', String(limits[node.dataset.limitMax]));
  }
}

export const expiringSoonMs = () => limits.expiring_soon_days * 24 * 3600 * 1000;

// Why a scope would be refused, or null: "*", or resource:action or resource/instance:action
// where resource, and action unless it is "*", match the server's word pattern and instance
// its instance pattern.
export function scopeProblem(scope) {
  if (new TextEncoder().encode(scope).length > limits.scope_max_bytes) {
    return `is longer than ${limits.scope_max_bytes} bytes`;
  }
  if (scope === '*') return null;
  const word = new RegExp(limits.scope_word_pattern);
  const colon = scope.indexOf(':');
  if (colon < 0) return 'expected resource:action, e.g. orders:read';
  const head = scope.slice(0, colon);
  const action = scope.slice(colon + 1);
  const slash = head.indexOf('/');
  const resource = slash < 0 ? head : head.slice(0, slash);
  if (!word.test(resource)) return "the resource must be letters, digits, '_', '-' or '.'";
  if (slash >= 0) {
    const instance = head.slice(slash + 1);
    if (!new RegExp(limits.scope_instance_pattern).test(instance)) {
      return `the instance after '/' must be 1 to ${limits.scope_instance_max_bytes} letters, digits, '_', '-', '.' or '~'`;
    }
  }
  if (action !== '*' && !word.test(action)) return "the action must be '*' or letters, digits, '_', '-' or '.'";
  return null;
}
