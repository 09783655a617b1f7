// Manage Webhooks: a small page over the caddy-webhooks JSON admin API.
// No framework and no build step: state lives in `state`, each render*
// function rebuilds its part of the DOM from it, and everything that comes
// from the API is inserted as text (response bodies are untrusted).
'use strict';

(() => {
  const REFRESH_MS = 3000;
  const FAILURE_LIMIT = 100;
  // The API sits beside the page: /webhooks/ui/ -> /webhooks/.
  const API = location.pathname.replace(/ui\/[^/]*$/, '');

  const state = {
    subs: [],
    types: [],
    failures: [], // the newest page, refreshed
    older: [], // pages fetched with "Load older", kept until the filter changes
    olderFull: false, // the last older page was full: there may be more
    tab: 'subscriptions',
    filter: '',
    tests: new Map(), // subscription id -> {pending} | test result
    busy: new Set(), // subscription ids with an action in flight
    subsKey: '',
    failuresKey: '',
    errorFrom: '', // 'refresh' errors clear themselves on the next good refresh
    refreshing: null,
    pressedAt: 0, // performance.now() of a press not yet released, else 0
  };

  const $ = (id) => document.getElementById(id);

  // h builds an element: props are attributes, except class, testid, text.
  function h(tag, props, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') n.className = v;
      else if (k === 'testid') n.dataset.testid = v;
      else if (k === 'text') n.textContent = v;
      else n.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of kids.flat()) {
      if (c === null || c === undefined || c === false) continue;
      n.append(c instanceof Node ? c : String(c));
    }
    return n;
  }

  // ---- API ---------------------------------------------------------------

  async function api(method, path, body) {
    const init = { method, headers: { Accept: 'application/json' }, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(API + path, init);
    } catch (err) {
      throw new Error(`${method} ${API + path}: the admin endpoint did not answer (${err.message})`);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!res.ok) {
      const msg = (data && typeof data.error === 'string' && data.error) || text.trim() || res.statusText;
      throw new Error(`${method} ${API + path} failed with ${res.status}: ${msg}`);
    }
    return data;
  }

  const subPath = (id, action) => `subscriptions/${encodeURIComponent(id)}${action ? '/' + action : ''}`;

  // ---- errors ------------------------------------------------------------

  function showError(message, from) {
    state.errorFrom = from;
    $('error-text').textContent = message;
    $('error-banner').hidden = false;
  }

  function clearError(from) {
    if (from && state.errorFrom !== from) return;
    state.errorFrom = '';
    $('error-banner').hidden = true;
    $('error-text').textContent = '';
  }

  // ---- formatting --------------------------------------------------------

  function localTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toLocaleString(undefined, {
      year: 'numeric', month: 'short', day: 'numeric',
      hour: '2-digit', minute: '2-digit', second: '2-digit',
    });
  }

  function timeEl(iso, testid) {
    return h('time', { datetime: iso, title: iso, testid }, localTime(iso));
  }

  // ms shows a duration_ms: whole milliseconds, rounded up by the API.
  function ms(v) {
    if (typeof v !== 'number' || !Number.isFinite(v)) return '';
    return `${Math.round(v)} ms`;
  }

  // The API's error for a non-2xx answer just repeats the status line;
  // show it only when it says more than the badge and the body do.
  function extraError(code, error) {
    if (!error) return '';
    if (code && error.startsWith(`HTTP ${code}`)) return '';
    return error;
  }

  function statusBadge(code, testid) {
    const ok = code >= 200 && code < 300;
    return h('span', { class: `badge ${ok ? 'badge-ok' : 'badge-bad'}`, testid }, `HTTP ${code}`);
  }

  // ---- subscriptions -----------------------------------------------------

  function renderSummary() {
    const subs = state.subs;
    const paused = subs.filter((s) => s.state === 'paused').length;
    const pending = subs.reduce((n, s) => n + (Number(s.pending) || 0), 0);
    const failing = subs.filter((s) => s.state !== 'paused' && s.consecutive_failures > 0).length;
    const tile = (label, value, testid, tone) =>
      h('div', { class: `tile ${tone || ''}` },
        h('div', { class: 'tile-value', testid }, String(value)),
        h('div', { class: 'tile-label' }, label));
    $('summary').replaceChildren(
      tile('Subscriptions', subs.length, 'summary-total'),
      tile('Active', subs.length - paused, 'summary-active', 'tone-ok'),
      tile('Paused', paused, 'summary-paused', paused ? 'tone-warn' : ''),
      tile('Failing', failing, 'summary-failing', failing ? 'tone-bad' : ''),
      tile('Pending deliveries', pending, 'summary-pending'),
    );
  }

  function eventChips(events) {
    const list = Array.isArray(events) ? events : [];
    return h('div', { class: 'chips' }, list.map((e) =>
      e === '*' ? h('span', { class: 'chip chip-all', title: 'Every event type' }, 'all events')
        : h('span', { class: 'chip' }, e)));
  }

  function actionButton(action, id, label, cls, extra) {
    return h('button', {
      type: 'button', class: `btn btn-small ${cls || ''}`, 'data-action': action, 'data-id': id,
      testid: `btn-${action}-${id}`, disabled: state.busy.has(id), ...extra,
    }, label);
  }

  function subRow(s) {
    const id = s.id;
    const paused = s.state === 'paused';
    const failures = Number(s.consecutive_failures) || 0;
    const fromConfig = s.source && s.source !== 'api';

    const endpoint = h('td', { class: 'endpoint' },
      h('div', { class: 'url', title: s.url, testid: `sub-url-${id}` }, s.url),
      s.description ? h('div', { class: 'desc' }, s.description) : null,
      h('div', { class: 'meta' },
        h('code', { testid: `sub-id-${id}` }, id),
        fromConfig ? h('span', { class: 'badge badge-muted', title: 'Declared in the Caddyfile, which owns it' }, s.source) : null));

    const stateCell = h('td', {},
      h('span', {
        class: `badge ${paused ? 'badge-paused' : 'badge-active'}`, testid: `sub-state-${id}`,
        title: paused && s.paused_at ? `Paused since ${localTime(s.paused_at)}` : null,
      }, s.state || 'unknown'),
      paused && s.paused_at ? h('div', { class: 'small muted' }, 'since ', timeEl(s.paused_at)) : null);

    const lastError = h('td', { class: 'last-error' },
      s.last_error ? h('div', { class: 'error-text clamp', title: s.last_error, testid: `sub-last-error-${id}` }, s.last_error)
        : h('span', { class: 'muted', testid: `sub-last-error-${id}` }, '—'),
      s.last_error_at ? h('div', { class: 'small muted' }, timeEl(s.last_error_at)) : null,
      s.last_error ? h('button', { type: 'button', class: 'link small', 'data-action': 'log', 'data-id': id, testid: `btn-log-${id}` }, 'Failure log →') : null);

    const actions = h('td', { class: 'actions' },
      actionButton('test', id, 'Test', '', { title: 'Send a signed webhook.test now' }),
      paused ? actionButton('activate', id, 'Activate', 'btn-primary', { title: 'Resume deliveries and send the held ones' })
        : actionButton('pause', id, 'Pause', ''),
      actionButton('unsubscribe', id, 'Unsubscribe', 'btn-danger-outline', fromConfig ? { disabled: true, title: 'Declared in the Caddyfile: remove it there' } : {}));

    return h('tr', { testid: `sub-row-${id}`, 'data-id': id, 'data-state': s.state, class: paused ? 'row-paused' : '' },
      endpoint,
      h('td', {}, eventChips(s.events)),
      stateCell,
      h('td', { class: `num ${failures > 0 ? 'bad' : ''}`, testid: `sub-failures-${id}` }, String(failures)),
      lastError,
      h('td', { class: 'num', testid: `sub-pending-${id}` }, String(Number(s.pending) || 0)),
      actions);
  }

  function testRow(id, t) {
    let body;
    if (t.pending) {
      body = h('span', { class: 'muted', testid: `test-pending-${id}` }, 'Sending webhook.test…');
    } else {
      const parts = [];
      if (t.status_code) parts.push(statusBadge(t.status_code, `test-status-${id}`));
      else parts.push(h('span', { class: 'badge badge-bad', testid: `test-status-${id}` }, 'no response'));
      parts.push(h('span', { class: 'muted', testid: `test-duration-${id}` }, ` in ${ms(t.duration_ms)}`));
      const err = extraError(t.status_code, t.error);
      if (err) parts.push(h('div', { class: 'error-text', testid: `test-error-${id}` }, err));
      if (t.response_body) parts.push(h('pre', { class: 'body', testid: `test-body-${id}` }, t.response_body));
      else if (!err) parts.push(h('div', { class: 'small muted' }, 'Empty response body.'));
      body = h('div', { class: 'test-result' }, parts);
    }
    return h('tr', { class: 'test-row', testid: `test-result-${id}` },
      h('td', { colspan: 7 },
        h('div', { class: 'test-head' },
          h('strong', {}, 'Test send'),
          h('button', { type: 'button', class: 'link small', 'data-action': 'dismiss-test', 'data-id': id, 'aria-label': 'Close test result' }, 'Close')),
        body));
  }

  function renderSubs() {
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.testid : '';
    const rows = [];
    for (const s of state.subs) {
      rows.push(subRow(s));
      const t = state.tests.get(s.id);
      if (t) rows.push(testRow(s.id, t));
    }
    $('subscriptions-body').replaceChildren(...rows);
    $('subscriptions-empty').hidden = state.subs.length > 0;
    renderSummary();
    renderFilterOptions();
    if (focused) {
      const again = document.querySelector(`[data-testid="${CSS.escape(focused)}"]`);
      if (again && again !== document.activeElement) again.focus();
    }
  }

  // ---- event types and the subscribe form --------------------------------

  function renderTypes() {
    const box = $('subscribe-events');
    const checked = new Set([...box.querySelectorAll('input:checked')].map((i) => i.value));
    box.replaceChildren(...state.types.filter((t) => t.name !== 'webhook.test').map((t) => {
      const inputId = `ev-${t.name}`;
      return h('label', { class: 'check', for: inputId, title: t.description || t.name },
        h('input', { type: 'checkbox', id: inputId, value: t.name, testid: `subscribe-event-${t.name}`, checked: checked.has(t.name) }),
        h('span', {}, h('span', { class: 'ev-name' }, t.name),
          t.description ? h('span', { class: 'ev-desc' }, t.description) : null));
    }));
    syncAllEvents();
  }

  function syncAllEvents() {
    const all = $('subscribe-all').checked;
    for (const i of $('subscribe-events').querySelectorAll('input')) i.disabled = all;
    $('subscribe-events').classList.toggle('disabled', all);
  }

  function parseHeaders(text) {
    const out = {};
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (!line) continue;
      const i = line.indexOf(':');
      if (i <= 0) throw new Error(`Custom header "${line}" is not in the form Name: value.`);
      out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    return out;
  }

  async function subscribe(ev) {
    ev.preventDefault();
    const url = $('subscribe-url').value.trim();
    const description = $('subscribe-description').value.trim();
    const events = $('subscribe-all').checked ? ['*']
      : [...$('subscribe-events').querySelectorAll('input:checked')].map((i) => i.value);
    try {
      if (!url) throw new Error('Enter the endpoint URL the webhooks are sent to.');
      if (events.length === 0) throw new Error('Pick at least one event type, or all events (*).');
      const body = { url, events };
      if (description) body.description = description;
      const headers = parseHeaders($('subscribe-headers').value);
      if (Object.keys(headers).length) body.headers = headers;
      $('subscribe-submit').disabled = true;
      const created = await api('POST', 'subscriptions', body);
      clearError('action');
      showSecret(created.id, created.secret);
      $('subscribe-form').reset();
      syncAllEvents();
      await refresh();
    } catch (err) {
      showError(`Subscribe: ${err.message}`, 'action');
    } finally {
      $('subscribe-submit').disabled = false;
    }
  }

  function showSecret(id, secret) {
    $('secret-sub').textContent = id || '';
    $('new-secret').textContent = secret || '(the API returned no secret)';
    $('copy-status').textContent = '';
    $('secret-box').hidden = false;
    $('secret-box').scrollIntoView({ block: 'nearest' });
  }

  async function copySecret() {
    const secret = $('new-secret').textContent;
    try {
      await navigator.clipboard.writeText(secret);
      $('copy-status').textContent = 'Copied to the clipboard.';
    } catch {
      // Clipboard API refused (permissions): select it for Ctrl+C instead.
      const range = document.createRange();
      range.selectNodeContents($('new-secret'));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      $('copy-status').textContent = 'Selected: press Ctrl+C to copy.';
    }
  }

  // ---- actions on a subscription -----------------------------------------

  // confirmDialog asks text in the modal dialog and resolves to whether the
  // user confirmed. The dialog's close event comes after the closing (in
  // Chromium with a later frame), so it can arrive when the dialog is already
  // open again for a new question: one resolver at a time, and a close event
  // seen while the dialog is open is a late one that answers nothing.
  let answerConfirm = null;

  function onConfirmClose() {
    const d = $('confirm');
    if (d.open || !answerConfirm) return;
    const answer = answerConfirm;
    answerConfirm = null;
    answer(d.returnValue === 'yes');
  }

  function confirmDialog(text) {
    const d = $('confirm');
    if (answerConfirm) {
      // A question whose answer never came (its close event is still on
      // its way): the new one replaces it, as a Cancel.
      answerConfirm(false);
      answerConfirm = null;
    }
    $('confirm-text').textContent = text;
    d.returnValue = '';
    d.showModal();
    return new Promise((resolve) => { answerConfirm = resolve; });
  }

  async function runAction(id, label, fn) {
    state.busy.add(id);
    renderSubs();
    try {
      await fn();
      clearError('action');
    } catch (err) {
      showError(`${label} ${id}: ${err.message}`, 'action');
    } finally {
      state.busy.delete(id);
      await refresh();
      renderSubs();
    }
  }

  async function testSend(id) {
    state.tests.set(id, { pending: true });
    renderSubs();
    try {
      const r = await api('POST', subPath(id, 'test'));
      state.tests.set(id, r || {});
      clearError('action');
    } catch (err) {
      state.tests.delete(id);
      showError(`Test ${id}: ${err.message}`, 'action');
    }
    renderSubs();
  }

  async function onSubsClick(ev) {
    const btn = ev.target.closest('button[data-action]');
    if (!btn || btn.disabled) return;
    const id = btn.dataset.id;
    const sub = state.subs.find((s) => s.id === id);
    switch (btn.dataset.action) {
      case 'test':
        await testSend(id);
        break;
      case 'dismiss-test':
        state.tests.delete(id);
        renderSubs();
        break;
      case 'activate':
        await runAction(id, 'Activate', () => api('POST', subPath(id, 'activate')));
        break;
      case 'pause':
        await runAction(id, 'Pause', () => api('POST', subPath(id, 'pause')));
        break;
      case 'unsubscribe': {
        const what = sub ? sub.url : id;
        const pending = sub && sub.pending ? ` Its ${sub.pending} pending deliveries will be dropped.` : '';
        if (!(await confirmDialog(`Stop sending webhooks to ${what} (${id})?${pending}`))) return;
        state.tests.delete(id);
        await runAction(id, 'Unsubscribe', () => api('DELETE', subPath(id)));
        break;
      }
      case 'log':
        setFilter(id);
        renderFilterOptions();
        showTab('failures');
        break;
    }
  }

  // ---- failure log -------------------------------------------------------

  function renderFilterOptions() {
    const sel = $('failure-filter');
    const ids = state.subs.map((s) => s.id);
    if (state.filter && !ids.includes(state.filter)) ids.push(state.filter);
    const byId = new Map(state.subs.map((s) => [s.id, s]));
    sel.replaceChildren(h('option', { value: '' }, 'All subscriptions'), ...ids.map((id) => {
      const s = byId.get(id);
      return h('option', { value: id }, s ? `${id} — ${s.url}` : `${id} (removed)`);
    }));
    sel.value = state.filter;
  }

  function failureRow(f) {
    const result = [];
    if (f.status_code) result.push(statusBadge(f.status_code, 'failure-status'));
    const err = extraError(f.status_code, f.error);
    if (f.response_body) result.push(h('pre', { class: 'body', testid: 'failure-body' }, f.response_body));
    else if (f.status_code && !err) result.push(h('div', { class: 'small muted' }, 'Empty response body.'));
    if (err) result.push(h('div', { class: 'error-text', testid: 'failure-error' }, err));
    return h('tr', { testid: 'failure-row', 'data-subscription': f.subscription_id, 'data-event': f.event_id },
      h('td', { class: 'nowrap' }, timeEl(f.time, 'failure-time')),
      h('td', {},
        h('code', { testid: 'failure-subscription' }, f.subscription_id),
        f.url ? h('div', { class: 'small muted sub-url', title: f.url }, f.url) : null),
      h('td', {},
        h('div', { testid: 'failure-event-type' }, f.event_type),
        h('code', { class: 'small muted' }, f.event_id)),
      h('td', { class: 'num', testid: 'failure-attempt' }, String(f.attempt ?? '')),
      h('td', { class: 'result' }, result),
      h('td', { class: 'num nowrap' }, ms(f.duration_ms)),
      h('td', {}, f.trace_id ? h('code', { class: 'trace', testid: 'failure-trace', title: 'OpenTelemetry trace id' }, f.trace_id) : h('span', { class: 'muted' }, '—')));
  }

  const failureKey = (f) => `${f.time}|${f.subscription_id}|${f.event_id}|${f.attempt}`;

  function shownFailures() {
    const seen = new Set();
    return state.failures.concat(state.older).filter((f) => {
      const k = failureKey(f);
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
  }

  function renderFailures() {
    const list = shownFailures();
    $('failure-body').replaceChildren(...list.map(failureRow));
    const empty = $('failure-empty');
    empty.hidden = list.length > 0;
    empty.textContent = state.filter ? `No failed attempts recorded for ${state.filter}.` : 'No failed attempts recorded.';
    $('failure-more').hidden = !(state.older.length ? state.olderFull : state.failures.length >= FAILURE_LIMIT);
  }

  function failuresPath(before) {
    let path = `failures?limit=${FAILURE_LIMIT}`;
    if (state.filter) path += `&subscription=${encodeURIComponent(state.filter)}`;
    if (before) path += `&before=${encodeURIComponent(before)}`;
    return path;
  }

  async function loadOlder() {
    const list = shownFailures();
    if (list.length === 0) return;
    $('failure-more').disabled = true;
    try {
      const page = await api('GET', failuresPath(list[list.length - 1].time));
      const got = Array.isArray(page) ? page : [];
      state.older = state.older.concat(got);
      state.olderFull = got.length >= FAILURE_LIMIT;
      clearError('action');
      renderFailures();
    } catch (err) {
      showError(`Failure log: ${err.message}`, 'action');
    } finally {
      $('failure-more').disabled = false;
    }
  }

  function setFilter(id) {
    state.filter = id;
    state.older = [];
    state.olderFull = false;
    refresh();
  }

  // ---- refresh -----------------------------------------------------------

  async function load() {
    if (state.types.length === 0) {
      const types = await api('GET', 'event-types');
      state.types = Array.isArray(types) ? types : [];
      renderTypes();
    }
    const filter = state.filter;
    const [subs, failures] = await Promise.all([api('GET', 'subscriptions'), api('GET', failuresPath())]);
    if (filter !== state.filter) return; // the filter changed meanwhile: the next refresh has it
    state.subs = Array.isArray(subs) ? subs : [];
    state.failures = Array.isArray(failures) ? failures : [];
    for (const id of state.tests.keys()) {
      if (!state.subs.some((s) => s.id === id)) state.tests.delete(id);
    }
    // Redraw only what changed, so a refresh does not disturb the user; and
    // not between a press and its release, or the click would be lost (its
    // button replaced under the pointer): the next refresh redraws.
    const subsKey = JSON.stringify(state.subs);
    if (subsKey !== state.subsKey && !pressing()) {
      state.subsKey = subsKey;
      renderSubs();
    }
    const failuresKey = state.filter + JSON.stringify(state.failures);
    if (failuresKey !== state.failuresKey) {
      state.failuresKey = failuresKey;
      renderFailures();
    }
  }

  // pressing reports a press not yet released; one held for 10 s (or whose
  // release went elsewhere) no longer holds redraws back.
  function pressing() {
    return state.pressedAt > 0 && performance.now() - state.pressedAt < 10000;
  }

  function refresh() {
    // One refresh at a time; callers arriving meanwhile share the next one.
    if (state.refreshing) return state.refreshing.then(refresh);
    state.refreshing = (async () => {
      try {
        await load();
        clearError('refresh');
        $('refresh').dataset.loaded = 'true';
        document.querySelector('[data-testid="last-refresh"]').textContent = `Updated ${new Date().toLocaleTimeString()}`;
      } catch (err) {
        showError(`Refresh: ${err.message}`, 'refresh');
      } finally {
        state.refreshing = null;
      }
    })();
    return state.refreshing;
  }

  function autoRefresh() {
    setTimeout(async () => {
      if ($('auto-refresh').checked && !document.hidden) await refresh();
      autoRefresh();
    }, REFRESH_MS);
  }

  // ---- tabs --------------------------------------------------------------

  function showTab(name) {
    state.tab = name === 'failures' ? 'failures' : 'subscriptions';
    for (const b of document.querySelectorAll('.tab')) {
      const on = b.dataset.tab === state.tab;
      b.setAttribute('aria-selected', String(on));
      b.classList.toggle('active', on);
    }
    $('panel-subscriptions').hidden = state.tab !== 'subscriptions';
    $('panel-failures').hidden = state.tab !== 'failures';
    const hash = state.tab === 'failures' ? '#failures' : '#subscriptions';
    if (location.hash !== hash) history.replaceState(null, '', hash);
  }

  // ---- wiring ------------------------------------------------------------

  function init() {
    for (const b of document.querySelectorAll('.tab')) {
      b.addEventListener('click', () => { showTab(b.dataset.tab); refresh(); });
    }
    window.addEventListener('hashchange', () => showTab(location.hash.slice(1)));
    $('refresh').addEventListener('click', () => refresh());
    $('error-dismiss').addEventListener('click', () => clearError());
    $('subscriptions-body').addEventListener('click', onSubsClick);
    $('subscribe-form').addEventListener('submit', subscribe);
    $('subscribe-all').addEventListener('change', syncAllEvents);
    $('copy-secret').addEventListener('click', copySecret);
    $('secret-dismiss').addEventListener('click', () => {
      $('secret-box').hidden = true;
      $('new-secret').textContent = '';
      $('secret-sub').textContent = '';
    });
    $('failure-filter').addEventListener('change', (ev) => setFilter(ev.target.value));
    $('failure-more').addEventListener('click', loadOlder);
    $('confirm').addEventListener('close', onConfirmClose);
    document.addEventListener('pointerdown', () => { state.pressedAt = performance.now(); }, true);
    for (const type of ['pointerup', 'pointercancel']) {
      document.addEventListener(type, () => { state.pressedAt = 0; }, true);
    }
    window.addEventListener('blur', () => { state.pressedAt = 0; });
    showTab(location.hash.slice(1));
    refresh();
    autoRefresh();
  }

  init();
})();
