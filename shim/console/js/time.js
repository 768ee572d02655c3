// Times and durations as people read them.

import { el } from './dom.js';

export function formatTime(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

// Table cells show the day only, to fit; the tooltip has the exact time.
function formatDay(iso) {
  return new Date(iso).toLocaleDateString(undefined, { dateStyle: 'medium' });
}

const UNITS = [
  [3600, 'min', 60],
  [86400, 'h', 3600],
  [30 * 86400, 'day', 86400],
  [365 * 86400, 'month', 30 * 86400],
  [Infinity, 'year', 365 * 86400],
];

// "3 min ago", "in 5 days", "just now".
export function relativeTime(iso, now = Date.now()) {
  const seconds = Math.round((Date.parse(iso) - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 60) return seconds > 0 ? 'in under a minute' : 'just now';
  const [, unit, size] = UNITS.find(([limit]) => abs < limit);
  const n = Math.round(abs / size);
  const label = unit === 'min' || unit === 'h' ? `${n} ${unit}` : `${n} ${unit}${n === 1 ? '' : 's'}`;
  return seconds < 0 ? `${label} ago` : `in ${label}`;
}

export function timeNode(iso, { relative = false, day = false, empty = 'never' } = {}) {
  if (!iso) return el('span', { class: 'muted', text: empty });
  let text = formatTime(iso);
  if (relative) text = relativeTime(iso);
  else if (day) text = formatDay(iso);
  return el('time', { datetime: iso, title: formatTime(iso), text });
}

// "1 hour", "2 days 3 h", "90 s": how long a grace period lasts.
export function duration(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${+(seconds / 3600).toFixed(1)} h`;
  return `${+(seconds / 86400).toFixed(1)} days`;
}
