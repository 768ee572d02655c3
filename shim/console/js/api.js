// Requests to the JSON API and the errors they end in.

import { session } from './state.js';

export class ApiError extends Error {
  constructor(message, reason, { status = 0, field = null, retryAfter = null } = {}) {
    super(message);
    this.reason = reason;
    this.status = status;
    this.field = field;
    this.retryAfter = retryAfter;
  }

  // "<message> (<reason>)", then what a person needs to act on: the field, when to retry.
  get text() {
    let text = `${this.message} (${this.reason})`;
    if (this.field) text += ` - field: ${this.field}`;
    if (this.retryAfter) text += ` - retry in ${this.retryAfter} s`;
    return text;
  }
}

// A mistake found before sending, described like the API's own 422.
export const invalid = (field, message) => new ApiError(message, 'invalid_field', { status: 422, field });

export async function api(method, path, { query = {}, body } = {}) {
  if (!session.token) throw new ApiError('you are signed out', 'signed_out');
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
  }
  const headers = { 'X-API-Key': session.token, Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(`could not reach the server: ${err.message}`, 'network_error');
  }
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  throw errorFrom(response, data);
}

// The API's JSON error, or a description of an answer without one (405, timeout 503, proxy).
export function errorFrom(response, data) {
  const options = { status: response.status, retryAfter: response.headers.get('Retry-After') };
  if (data && typeof data.error === 'string') {
    return new ApiError(data.error, data.reason || `http_${response.status}`, { ...options, field: data.field || null });
  }
  const what = response.status === 503 ? 'the server is unavailable or timed out' : 'the server refused the request';
  return new ApiError(`${what}: HTTP ${response.status} ${response.statusText}`.trim(), `http_${response.status}`, options);
}

export const keyPath = (keyId, action = '') => `/v1/keys/${encodeURIComponent(keyId)}${action ? `/${action}` : ''}`;
export const endpointPath = (id, action = '') => `/v1/webhooks/${encodeURIComponent(id)}${action ? `/${action}` : ''}`;
