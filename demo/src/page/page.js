// The demo page's script: signs in, sends single requests and parallel batches with the
// devise headers, replays a retired token after the batch window, signs out, and draws
// every answer. How it tells a rotation from a batched answer is in `src/page.rs`.
// Tokens are kept in memory only, shown by their first characters, never logged.
'use strict';

(function () {
  const config = JSON.parse(document.getElementById('baton-config').textContent);
  const WINDOW_MS = Math.max(0, Number(config.batchWindowMs) || 0);
  // The window runs from the server's rotation, which happened before the first answer
  // carrying the successor arrived; this margin covers the store clock's granularity.
  const MARGIN_MS = 250;
  const SHOWN = 6;
  const POLL_MS = 2000;
  const MAX_N = 32;

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $('sign-in'), email: $('email'), password: $('password'), signInHint: $('sign-in-hint'),
    path: $('path'), n: $('n'), nLabel: $('n-label'),
    one: $('send-one'), batch: $('send-batch'), replay: $('replay'), replayBar: $('replay-bar'),
    replayNote: $('replay-note'), signOut: $('sign-out'), clear: $('clear'),
    timeline: $('timeline'), empty: $('empty'),
    pill: $('status-pill'), client: $('status-client'), token: $('status-token'),
    windowLabel: $('status-window'),
    countersNote: $('counters-note'), rejections: $('c-rejections'),
  };

  const state = {
    creds: null, // { token, client, uid, expiry } the page sends next
    retired: null, // { token, at }: the token the last rotation retired, and when its successor arrived
    known: new Set(), // every token an answer has carried: an answer with one of these minted nothing
    busy: false,
    entries: 0,
    counters: null, // the last scrape, or null
  };

  // ---- small helpers ---------------------------------------------------------------

  function h(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function short(t) {
    return t ? t.slice(0, SHOWN) + '…' : '—';
  }

  // A colour from the shown characters only: it reveals nothing the text does not.
  function hue(t) {
    let x = 2166136261;
    for (const c of t.slice(0, SHOWN)) {
      x ^= c.charCodeAt(0);
      x = Math.imul(x, 16777619) >>> 0;
    }
    return x % 360;
  }

  function paintToken(node, t) {
    node.textContent = short(t);
    node.classList.toggle('none', !t);
    if (t) node.style.setProperty('--hue', String(hue(t)));
    else node.style.removeProperty('--hue');
  }

  function tokenChip(t, cls) {
    const c = h('code', 'tok' + (cls ? ' ' + cls : ''));
    paintToken(c, t);
    return c;
  }

  function seconds(ms) {
    return (ms / 1000).toFixed(1) + ' s';
  }

  function clock() {
    return new Date().toLocaleTimeString([], { hour12: false });
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function plural(n, one, many) {
    return n + ' ' + (n === 1 ? one : many);
  }

  // ---- talking to the API ----------------------------------------------------------

  function credsFrom(res) {
    const token = res.headers.get('access-token');
    const client = res.headers.get('client');
    const uid = res.headers.get('uid');
    const expiry = Number(res.headers.get('expiry'));
    return token && client && uid ? { token, client, uid, expiry } : null;
  }

  async function call(method, path, creds, body) {
    const headers = { accept: 'application/json' };
    if (creds) {
      headers['access-token'] = creds.token;
      headers['token-type'] = 'Bearer';
      headers.client = creds.client;
      headers.uid = creds.uid;
    }
    if (body) headers['content-type'] = 'application/json';
    const started = performance.now();
    try {
      const res = await fetch(path, {
        method,
        headers,
        body: body ? JSON.stringify(body) : undefined,
        cache: 'no-store',
        credentials: 'omit',
        redirect: 'error',
      });
      const creds2 = credsFrom(res);
      const at = performance.now();
      let json = null;
      try {
        json = await res.json();
      } catch (_) {
        json = null;
      }
      return { status: res.status, creds: creds2, json, ms: at - started, at, retryAfter: res.headers.get('retry-after') };
    } catch (e) {
      const at = performance.now();
      return { status: 0, creds: null, json: null, ms: at - started, at, error: 'network error' };
    }
  }

  // The newest credentials among answers: devise clients keep the one with the latest
  // expiry, so an answer that arrives late cannot roll the session back.
  function adopt(results) {
    for (const r of results) {
      if (!r.creds) continue;
      state.known.add(r.creds.token);
      if (!state.creds || r.creds.expiry >= state.creds.expiry) state.creds = r.creds;
    }
  }

  // ---- the timeline ----------------------------------------------------------------

  const OUTCOME = {
    pending: '… waiting',
    rotated: '↻ rotated',
    batched: '⇉ batched',
    shared: '⇶ shared',
    fresh: '• new token',
    refused: '✕ refused',
    signedin: '✓ signed in',
    signedout: '✓ signed out',
    error: '! error',
  };

  function entry(kind, title) {
    state.entries += 1;
    const li = h('li', 'entry ' + kind);
    li.dataset.kind = kind;
    li.dataset.seq = String(state.entries);
    const head = h('div', 'entry-head');
    head.append(h('span', 'kind', kind === 'batch' ? 'batch' : kind.replace('-', ' ')), h('h3', null, title), h('time', null, clock()));
    const summary = h('div', 'summary');
    const note = h('p', 'note');
    const rows = h('ol', 'rows');
    li.append(head, summary, note, rows);
    ui.timeline.prepend(li);
    ui.empty.hidden = true;
    return { li, summary, note, rows };
  }

  function row(e, label, presented) {
    const r = h('li', 'row');
    r.dataset.outcome = 'pending';
    const idx = h('span', 'idx', label);
    const sent = tokenChip(presented, 'presented');
    const got = tokenChip(null, 'got');
    got.textContent = '…';
    const status = h('span', 'status', '…');
    const outcome = h('span', 'tag pending', OUTCOME.pending);
    const ms = h('span', 'ms');
    r.append(idx, sent, h('span', 'arrow', '→'), got, status, outcome, ms);
    e.rows.append(r);
    return {
      el: r,
      done(result) {
        paintToken(got, result.creds ? result.creds.token : null);
        if (!result.creds) got.textContent = 'no token';
        status.textContent = result.status ? String(result.status) : '—';
        r.dataset.status = String(result.status);
        ms.textContent = Math.round(result.ms) + ' ms';
      },
      label(kind, text) {
        r.dataset.outcome = kind;
        outcome.className = 'tag ' + kind;
        outcome.textContent = text || OUTCOME[kind];
      },
    };
  }

  function chip(kind, text) {
    return h('span', 'tag ' + kind, text);
  }

  function refusedOrError(result) {
    return result.status === 401 ? 'refused' : 'error';
  }

  // ---- counters --------------------------------------------------------------------

  function parseMetrics(text) {
    const out = new Map();
    for (const line of text.split('\n')) {
      if (!line || line[0] === '#') continue;
      const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const value = Number(m[3]);
      if (!Number.isFinite(value)) continue;
      const labels = {};
      if (m[2]) {
        for (const l of m[2].matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
      }
      if (!out.has(m[1])) out.set(m[1], []);
      out.get(m[1]).push({ labels, value });
    }
    return out;
  }

  function summarize(map) {
    const one = (name) => (map.has(name) ? map.get(name)[0].value : null);
    const rotations = one('baton_rotations_total');
    const batched = one('baton_batched_total');
    if (rotations === null || batched === null) return null;
    const rejections = {};
    for (const s of map.get('baton_rejections_total') || []) rejections[s.labels.reason || 'other'] = s.value;
    return {
      sessions: one('baton_sessions'),
      signIns: one('baton_sign_ins_total'),
      rotations,
      batched,
      rejections,
      storeUp: one('baton_store_up'),
    };
  }

  async function scrape() {
    if (!config.metricsUrl) return { off: true };
    try {
      const res = await fetch(config.metricsUrl, { cache: 'no-store', credentials: 'omit', mode: 'cors', redirect: 'error' });
      if (!res.ok) return { error: 'HTTP ' + res.status };
      const counters = summarize(parseMetrics(await res.text()));
      return counters ? { counters } : { error: 'not baton\'s counters' };
    } catch (_) {
      return { error: 'not reachable' };
    }
  }

  function setCount(id, value, previous) {
    const node = $(id);
    const text = value === null || value === undefined ? '—' : String(value);
    if (node.textContent !== text && previous) {
      node.classList.remove('moved');
      void node.offsetWidth; // restart the highlight
      node.classList.add('moved');
    }
    node.textContent = text;
  }

  function showCounters(result) {
    const c = result.counters || null;
    const before = state.counters;
    state.counters = c;
    document.body.dataset.counters = c ? 'on' : 'off';
    setCount('c-sessions', c && c.sessions, before);
    setCount('c-sign-ins', c && c.signIns, before);
    setCount('c-rotations', c && c.rotations, before);
    setCount('c-batched', c && c.batched, before);
    if (c) {
      for (const [reason, value] of Object.entries(c.rejections)) {
        const id = 'c-rej-' + reason.replace(/[^A-Za-z0-9_-]/g, '_');
        if (!$(id)) {
          const d = h('div');
          d.append(h('dt', null, reason.replace(/_/g, ' ')), h('dd', null, '—'));
          d.lastChild.id = id;
          ui.rejections.append(d);
        }
        setCount(id, value, before);
      }
      const store = c.storeUp === 0 ? ' The store did not answer this scrape.' : '';
      ui.countersNote.textContent = 'Updated ' + clock() + ', every ' + POLL_MS / 1000 + ' s.' + store;
      ui.countersNote.className = 'hint';
    } else {
      for (const dd of ui.rejections.querySelectorAll('dd')) dd.textContent = '—';
      ui.countersNote.textContent = result.off
        ? 'Counters are off on this server.'
        : 'Counters unavailable (' + result.error + '); trying again every ' + POLL_MS / 1000 + ' s.';
      ui.countersNote.className = 'hint warn';
    }
  }

  async function poll() {
    if (!document.hidden) showCounters(await scrape());
  }

  // How the server's counters moved across one action, as text, or null.
  function moved(before, after) {
    if (!before.counters || !after.counters) return null;
    const a = after.counters;
    const b = before.counters;
    const parts = ['rotations +' + (a.rotations - b.rotations), 'batched +' + (a.batched - b.batched)];
    for (const [reason, value] of Object.entries(a.rejections)) {
      const d = value - (b.rejections[reason] || 0);
      if (d > 0) parts.push(reason.replace(/_/g, ' ') + ' +' + d);
    }
    return parts;
  }

  function countersLine(e, before, after) {
    const parts = moved(before, after);
    const p = h('p', 'counters-moved');
    if (parts) {
      p.append(h('b', null, 'Server counters moved: '), parts.join(', '), h('span', 'muted', ' (every client of this server counts)'));
    } else {
      p.append(h('span', 'muted', 'Server counters unavailable: no cross-check.'));
    }
    e.li.append(p);
    return parts;
  }

  // ---- actions ---------------------------------------------------------------------

  function render() {
    const signedIn = !!state.creds;
    ui.pill.textContent = signedIn ? 'signed in as ' + state.creds.uid : 'signed out';
    ui.pill.className = 'pill ' + (signedIn ? 'on' : 'off');
    paintToken(ui.client, signedIn ? state.creds.client : null);
    paintToken(ui.token, signedIn ? state.creds.token : null);
    ui.windowLabel.textContent = seconds(WINDOW_MS);
    ui.one.disabled = ui.batch.disabled = ui.signOut.disabled = !signedIn || state.busy;
    ui.replay.disabled = !signedIn || !state.retired || state.busy;
    ui.path.disabled = ui.n.disabled = state.busy;
    for (const input of ui.form.querySelectorAll('input, button')) input.disabled = state.busy;
    if (!state.busy) {
      ui.replayNote.textContent = !signedIn
        ? 'Sign in first.'
        : state.retired
          ? 'Will present ' + short(state.retired.token) + ', waiting out the ' + seconds(WINDOW_MS) + ' window if needed.'
          : 'Send a request first: it retires a token to replay.';
    }
    document.body.dataset.busy = state.busy ? 'yes' : 'no';
  }

  async function exclusive(action) {
    if (state.busy) return;
    state.busy = true;
    render();
    try {
      await action();
    } finally {
      state.busy = false;
      render();
    }
  }

  function batchSize() {
    const n = Math.round(Number(ui.n.value));
    return Number.isFinite(n) ? Math.min(MAX_N, Math.max(1, n)) : 8;
  }

  async function signIn() {
    const email = ui.email.value.trim();
    const e = entry('sign-in', 'POST /auth/sign_in as ' + email);
    const r = row(e, '#1', null);
    const result = await call('POST', '/auth/sign_in', null, { email, password: ui.password.value });
    r.done(result);
    if (result.status === 200 && result.creds) {
      r.label('signedin');
      state.creds = null;
      state.retired = null;
      adopt([result]);
      e.summary.append(chip('signedin', '✓ signed in'), ' first token ', tokenChip(result.creds.token));
      e.note.textContent = 'A new session (client ' + short(result.creds.client) + '). Every request from here on presents its current token and gets the next one back.';
    } else {
      r.label(refusedOrError(result));
      e.summary.append(chip(refusedOrError(result), result.status === 401 ? '✕ refused' : '! failed'));
      e.note.textContent = result.status === 401
        ? 'Wrong email or password.'
        : result.status === 429 || result.status === 503
          ? 'The server asks to try again in ' + (result.retryAfter || 'a few') + ' s.'
          : 'Sign-in failed (' + (result.error || 'HTTP ' + result.status) + ').';
    }
    e.li.dataset.done = 'yes';
    poll();
  }

  async function send(n) {
    const path = ui.path.value;
    const presented = state.creds;
    const knownBefore = new Set(state.known);
    const e = entry(n === 1 ? 'request' : 'batch', (n === 1 ? '1 request' : n + ' parallel requests') + ' · GET ' + path);
    e.summary.append('presented ', tokenChip(presented.token));
    const before = await scrape();
    const rows = [];
    for (let i = 0; i < n; i++) rows.push(row(e, '#' + (i + 1), presented.token));
    const results = await Promise.all(rows.map((r) => call('GET', path, presented).then((result) => {
      r.done(result);
      // Final now if it minted nothing; a new token waits for the whole batch.
      if (!result.creds) r.label(refusedOrError(result));
      else if (result.creds.token === presented.token || knownBefore.has(result.creds.token)) r.label('batched');
      else r.label('fresh');
      return result;
    })));

    // Each token first seen in these answers was minted by one rotation.
    const minted = new Map();
    results.forEach((result, i) => {
      const t = result.creds && result.creds.token;
      if (t && t !== presented.token && !knownBefore.has(t)) {
        if (!minted.has(t)) minted.set(t, []);
        minted.get(t).push(i);
      }
    });
    for (const members of minted.values()) {
      for (const i of members) rows[i].label(members.length === 1 ? 'rotated' : 'shared');
    }
    const accepted = results.filter((r) => r.creds).length;
    const refused = results.filter((r) => r.status === 401).length;
    const failed = n - accepted - refused;
    const rotations = minted.size;
    const batched = accepted - rotations;
    Object.assign(e.li.dataset, {
      rotations: String(rotations), batched: String(batched), refused: String(refused),
      failed: String(failed), successors: String(new Set(results.filter((r) => r.creds).map((r) => r.creds.token)).size),
    });

    e.summary.textContent = '';
    e.summary.append(
      'presented ', tokenChip(presented.token), ' ',
      chip('rotated', '↻ ' + plural(rotations, 'rotation', 'rotations')), ' ',
      chip('batched', '⇉ ' + batched + ' batched'), ' ',
      chip('refused', '✕ ' + refused + ' refused'),
    );
    if (failed) e.summary.append(' ', chip('error', '! ' + failed + ' failed'));
    const successors = Number(e.li.dataset.successors);
    if (accepted && successors === 1) {
      const t = results.find((r) => r.creds).creds.token;
      const what = rotations === 1
        ? (accepted > 1 ? 'one shared successor ' : 'successor ')
        : t === presented.token ? 'token kept ' : 'answered with the current token ';
      e.summary.append(' ', h('span', 'successor', what), tokenChip(t));
    }
    e.note.textContent = explain(n, rotations, batched, refused, accepted, successors);

    const retiredBy = [...minted.keys()];
    if (rotations >= 1) {
      const newest = results.filter((r) => r.creds && retiredBy.includes(r.creds.token));
      state.retired = { token: presented.token, at: Math.min(...newest.map((r) => r.at)) };
    }
    adopt(results);
    if (accepted === 0 && refused === n && state.creds === presented) {
      // Nothing accepted the page's own current token: the session is gone (revoked
      // by a replay under --replay-policy revoke, expired, or the server restarted).
      state.creds = null;
      state.retired = null;
      e.note.textContent += ' The session is gone: sign in again.';
    }
    e.li.dataset.done = 'yes';
    const after = await scrape();
    countersLine(e, before, after);
    showCounters(after);
  }

  function explain(n, rotations, batched, refused, accepted, successors) {
    if (n === 1) {
      if (rotations === 1) return 'The token it presented is retired; the answer carries its successor.';
      if (batched === 1) return 'No new token: the answer carries one that already existed (inside the minimum rotation interval, or a retired token inside the batch window).';
      return refused ? 'Refused: that token is no longer accepted.' : 'The request failed.';
    }
    if (rotations === 1 && accepted === n && successors === 1) {
      return 'All ' + n + ' presented the same token at once. The server rotated it once; the other ' + (n - 1) + ' were answered with that same successor. Which request won is not on the wire: every member gets the same answer.';
    }
    if (rotations === 0 && accepted === n) return 'No new token: every answer carries one that already existed.';
    if (accepted === 0 && refused === n) return 'All ' + n + ' refused: that token is no longer accepted.';
    if (rotations > 1) return plural(rotations, 'new token', 'new tokens') + ' from one presented token: more than one rotation in one batch.';
    return accepted + ' of ' + n + ' accepted, ' + refused + ' refused: some requests came too late for the batch window.';
  }

  async function replay() {
    const retired = state.retired;
    const current = state.creds;
    const path = ui.path.value;
    const e = entry('replay', 'Replay the retired token · GET ' + path);
    e.summary.append('presents ', tokenChip(retired.token), ' · current token ', tokenChip(current.token));
    const r = row(e, '#1', retired.token);
    const due = retired.at + WINDOW_MS + MARGIN_MS;
    ui.replayBar.parentElement.classList.add('running');
    while (performance.now() < due) {
      const left = due - performance.now();
      const text = 'Waiting out the ' + seconds(WINDOW_MS) + ' batch window: ' + seconds(left) + ' left';
      ui.replayNote.textContent = text;
      e.note.textContent = text + '…';
      ui.replayBar.style.width = (100 * (1 - left / (WINDOW_MS + MARGIN_MS))).toFixed(1) + '%';
      await sleep(Math.min(100, left));
    }
    ui.replayBar.style.width = '100%';
    const before = await scrape();
    const result = await call('GET', path, { ...current, token: retired.token });
    r.done(result);
    r.label(result.creds ? 'batched' : refusedOrError(result));
    e.li.dataset.status = String(result.status);
    e.summary.append(' ', result.status === 401 ? chip('refused', '✕ refused (401)') : chip(result.creds ? 'batched' : 'error', result.creds ? '⇉ accepted' : '! failed'));
    const waited = seconds(performance.now() - retired.at);
    e.note.textContent = result.status === 401
      ? 'Presented ' + waited + ' after its successor arrived, past the ' + seconds(WINDOW_MS) + ' window: refused. (With --replay-policy revoke the session ends too.)'
      : result.creds
        ? 'Still accepted: the server has a recovery window, and the successor was never presented.'
        : 'The replay failed (' + (result.error || 'HTTP ' + result.status) + ').';
    if (result.creds) adopt([result]);
    e.li.dataset.done = 'yes';
    ui.replayBar.parentElement.classList.remove('running');
    ui.replayBar.style.width = '0%';
    const after = await scrape();
    countersLine(e, before, after);
    showCounters(after);
  }

  async function signOut() {
    const last = state.creds;
    const path = ui.path.value;
    const e = entry('sign-out', 'DELETE /auth/sign_out, then GET ' + path);
    const first = row(e, 'out', last.token);
    const before = await scrape();
    const out = await call('DELETE', '/auth/sign_out', last);
    first.done(out);
    first.label(out.status === 200 ? 'signedout' : refusedOrError(out));
    if (out.status === 200 || out.status === 404) {
      state.creds = null;
      state.retired = null;
    }
    const probe = row(e, 'then', last.token);
    const result = await call('GET', path, last);
    probe.done(result);
    probe.label(result.creds ? 'batched' : refusedOrError(result));
    e.li.dataset.signOut = String(out.status);
    e.li.dataset.probe = String(result.status);
    e.summary.append(
      out.status === 200 ? chip('signedout', '✓ session ended') : chip('error', '! sign-out answered ' + out.status), ' ',
      result.status === 401 ? chip('refused', '✕ last token refused') : chip('error', '! last token answered ' + result.status),
    );
    e.note.textContent = result.status === 401
      ? 'After sign-out the token the page still holds, ' + short(last.token) + ', is refused like any unknown one.'
      : 'Unexpected: the token still answered after sign-out.';
    e.li.dataset.done = 'yes';
    const after = await scrape();
    countersLine(e, before, after);
    showCounters(after);
  }

  // ---- wiring ----------------------------------------------------------------------

  ui.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    exclusive(signIn);
  });
  ui.one.addEventListener('click', () => exclusive(() => send(1)));
  ui.batch.addEventListener('click', () => exclusive(() => send(batchSize())));
  ui.replay.addEventListener('click', () => exclusive(replay));
  ui.signOut.addEventListener('click', () => exclusive(signOut));
  ui.clear.addEventListener('click', () => {
    ui.timeline.textContent = '';
    ui.empty.hidden = false;
  });
  ui.n.addEventListener('input', () => {
    ui.nLabel.textContent = String(batchSize());
  });
  ui.n.addEventListener('change', () => {
    ui.n.value = String(batchSize());
  });
  document.addEventListener('visibilitychange', poll);

  if (!config.demoUser) {
    ui.signInHint.textContent = 'This server has no demo user: sign in as a user given with --user or --users-file.';
  }
  ui.nLabel.textContent = String(batchSize());
  render();
  poll();
  setInterval(poll, POLL_MS);
})();
