// Small DOM helpers: building elements from text, tables, notices.

export const $ = (selector, root = document) => root.querySelector(selector);

// el('td', { class: 'x', text: 'y', data: { keyId: 'z' } }, child, ...)
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = value;
    else if (name === 'class') node.className = value;
    else if (name === 'data') Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function setText(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

export function notify(text) {
  setText($('#notice'), text);
}

export const splitList = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);

export const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// Each cell gets data-label, its column's header text, which the stacked-card layout of
// narrow screens shows in front of it.
export function fillTable(table, rows) {
  const labels = [...table.querySelectorAll('thead th')].map((th) => th.textContent);
  for (const row of rows) [...row.cells].forEach((td, i) => td.setAttribute('data-label', labels[i] || ''));
  $('tbody', table).replaceChildren(...rows);
}

export const cell = (...content) => el('td', {}, ...content);

export const chips = (values, kind) => (values.length
  ? el('ul', { class: `chips ${kind}` }, values.map((v) => el('li', { class: 'chip', text: v })))
  : el('span', { class: 'muted', text: 'none' }));
