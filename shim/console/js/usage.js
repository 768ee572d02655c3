// The usage dialog: a chart of the last 24 hours by outcome with the credits spent, and the
// key's rate state.

import { api } from './api.js';
import { $, el, setText } from './dom.js';
import { duration, formatTime } from './time.js';
import { act, dialogError, openDialog } from './ui.js';

const USAGE_HOURS = 24;
const SVG = 'http://www.w3.org/2000/svg';
// Outcomes drawn apart; every other reason is a refusal.
const USAGE_SERIES = [
  { name: 'ok', label: 'ok', test: (reason) => reason === 'ok' },
  { name: 'rate_limited', label: 'rate limited', test: (reason) => reason === 'rate_limited' },
  { name: 'refused', label: 'refused', test: (reason) => reason !== 'ok' && reason !== 'rate_limited' },
];

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

// Counts per hour (oldest first) and per series, from the items of GET /v1/usage.
function usageBuckets(items, now = Date.now()) {
  const hour = 3600 * 1000;
  const first = Math.floor(now / hour) * hour - (USAGE_HOURS - 1) * hour;
  const buckets = Array.from({ length: USAGE_HOURS }, (_, i) => ({
    start: first + i * hour, counts: Object.fromEntries(USAGE_SERIES.map((s) => [s.name, 0])), spent: 0,
  }));
  const totals = Object.fromEntries(USAGE_SERIES.map((s) => [s.name, 0]));
  totals.spent = 0;
  for (const item of items) {
    const index = Math.floor((Date.parse(item.bucket) - first) / hour);
    const series = USAGE_SERIES.find((s) => s.test(item.reason));
    if (index < 0 || index >= USAGE_HOURS || !series) continue;
    buckets[index].counts[series.name] += item.count;
    totals[series.name] += item.count;
    buckets[index].spent += item.spent || 0;
    totals.spent += item.spent || 0;
  }
  return { buckets, totals };
}

// Stacked bars, one per hour, drawn with SVG elements (no markup parsed from data).
function usageChart(buckets) {
  const width = 720; const height = 180; const pad = 24;
  const barWidth = (width - pad) / buckets.length;
  const max = Math.max(1, ...buckets.map((b) => USAGE_SERIES.reduce((sum, s) => sum + b.counts[s.name], 0)));
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height + pad}`, role: 'img', class: 'usage-chart',
    'aria-label': `Verifications per hour over the last ${USAGE_HOURS} hours; at most ${max} in an hour`,
  });
  chart.append(svg('text', { x: 0, y: 12, class: 'usage-axis' }, String(max)));
  buckets.forEach((bucket, i) => {
    let y = height;
    for (const series of USAGE_SERIES) {
      const count = bucket.counts[series.name];
      if (!count) continue;
      const h = (count / max) * (height - pad);
      y -= h;
      chart.append(svg('rect', {
        x: pad + i * barWidth + 1, y, width: Math.max(1, barWidth - 2), height: h,
        class: `usage-${series.name}`, 'data-reason': series.name, 'data-count': count,
      }, svg('title', {}, `${formatTime(new Date(bucket.start).toISOString())}: ${count} ${series.label}`)));
    }
  });
  // Credits spent per hour, a line on its own scale over the bars.
  const maxSpent = Math.max(...buckets.map((b) => b.spent));
  if (maxSpent > 0) {
    const points = buckets.map((b, i) => `${pad + (i + 0.5) * barWidth},${height - (b.spent / maxSpent) * (height - pad)}`);
    chart.append(svg('polyline', { points: points.join(' '), class: 'usage-spent', 'data-max-spent': maxSpent },
      svg('title', {}, `Credits spent per hour, at most ${maxSpent}`)));
    chart.append(svg('text', { x: width, y: 12, class: 'usage-axis', 'text-anchor': 'end' }, `${maxSpent} credits`));
  }
  chart.append(svg('line', { x1: pad, y1: height, x2: width, y2: height, class: 'usage-axis' }));
  chart.append(svg('text', { x: pad, y: height + 16, class: 'usage-axis' }, `${buckets.length} h ago`));
  chart.append(svg('text', { x: width, y: height + 16, class: 'usage-axis', 'text-anchor': 'end' }, 'now'));
  return chart;
}

export async function openUsage({ keyId = null, partnerId = null, title, rate }) {
  const dialog = $('#usage-dialog');
  $('.dialog-subject', dialog).textContent = title;
  $('#usage-chart').replaceChildren();
  $('#usage-legend').replaceChildren();
  setText($('#usage-rate'), '');
  openDialog(dialog, '#usage-close');
  setText($('#usage-status'), 'Loading usage…');
  const since = new Date(Date.now() - USAGE_HOURS * 3600 * 1000).toISOString();
  await act({ slot: dialogError(dialog) }, async () => {
    try {
      const query = { key_id: keyId, partner_id: partnerId, since, bucket: '1h' };
      const usage = await api('GET', '/v1/usage', { query });
      const { buckets, totals } = usageBuckets(usage.items);
      $('#usage-chart').replaceChildren(usageChart(buckets));
      $('#usage-legend').replaceChildren(...USAGE_SERIES.map((s) => el('li', { data: { reason: s.name } },
        el('span', { class: `swatch usage-${s.name}` }), ` ${s.label}: ${totals[s.name]}`)),
      el('li', { data: { reason: 'spent' } }, el('span', { class: 'swatch usage-spent' }), ` credits spent: ${totals.spent}`));
      const total = USAGE_SERIES.reduce((sum, s) => sum + totals[s.name], 0);
      setText($('#usage-status'), `${total} verification${total === 1 ? '' : 's'} in the last ${USAGE_HOURS} hours${usage.truncated ? ' (truncated)' : ''}.`);
      if (rate && usage.rate) {
        const r = usage.rate;
        setText($('#usage-rate'), r.remaining === null
          ? `Rate limit ${r.rate_per_minute} per minute (not enforced: the server runs without shared memory).`
          : `Rate limit ${r.rate_per_minute} per minute: ${r.remaining} left now, the full allowance back in ${duration(r.reset_seconds)}.`);
      }
    } catch (err) {
      setText($('#usage-status'), 'Usage could not be loaded.');
      throw err;
    }
  });
}
