// batchgen review: the dailies page. Every value from the ledger (names, prompts, notes) is
// inserted as text (textContent / attribute values), never as markup. The token comes from the
// URL's fragment (never sent to a server) and rides on every request of the API.
(function(){
  'use strict';
  const token = new URLSearchParams(location.hash.slice(1)).get('token') || '';
  const $ = id => document.getElementById(id);
  const PAGE = 20;
  let offset = 0, data = null, clips = [], cur = 0, loop = false, undo = [];
  // `loads` numbers the page loads (a late answer to an older one is dropped); `held` keeps the
  // keys pressed while a load is on its way, replayed in order once its clips are on the page, so
  // a key never acts on a list about to be replaced.
  let loads = 0, loading = 0, held = [];

  function el(tag, attrs, text){
    const e = document.createElement(tag);
    for (const k in (attrs || {})) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function say(text, error){ const s = $('status'); s.textContent = text || ''; s.className = error ? 'error' : 'muted'; }
  async function api(path, body){
    const opts = {headers: {'X-Review-Token': token}};
    if (body) { opts.method = 'POST'; opts.headers['Content-Type'] = 'application/json'; opts.body = JSON.stringify(body); }
    const r = await fetch(path, opts);
    const doc = await r.json().catch(() => ({error: 'HTTP ' + r.status}));
    if (!r.ok) throw new Error(doc.error || ('HTTP ' + r.status));
    return doc;
  }
  function filters(){
    const p = new URLSearchParams();
    p.set('verdict', $('f-verdict').value); p.set('verify', $('f-verify').value);
    p.set('model', $('f-model').value); p.set('q', $('f-q').value);
    return p;
  }
  function options(select, values){
    const keep = select.value;
    while (select.options.length > 1) select.remove(1);
    for (const v of values) select.append(el('option', {value: v}, v));
    select.value = values.includes(keep) ? keep : '';
  }
  function counts(c){
    const box = $('counts'); box.textContent = '';
    for (const [k, label] of [['pending', 'pending'], ['approve', 'approved'], ['retake', 'retake'], ['reject', 'rejected'], ['clips', 'clips']]) {
      const s = el('span', {'data-count': k}); s.append(el('b', {}, c[k] || 0)); s.append(document.createTextNode(' ' + label)); box.append(s);
    }
  }
  async function load(keepCurrent, after){
    const p = filters(); p.set('offset', offset); p.set('limit', PAGE);
    const wanted = keepCurrent && clips[cur] ? clips[cur].id : null;
    const mine = ++loads; loading++;
    let doc = null;
    try { doc = await api('/api/clips?' + p.toString()); }
    catch (e) { if (mine === loads) say(e.message, true); }
    finally { loading--; }
    // a newer load (another filter, another page) answers for the page; a failed one leaves it as it was
    if (mine === loads && doc) show(doc, wanted, after);
    if (!loading) replay();
  }
  function show(doc, wanted, after){
    data = doc; epoch++;
    options($('f-verify'), data.verify); options($('f-model'), data.models);
    counts(data.counts);
    render();
    const pages = Math.max(1, Math.ceil(data.total_shots / PAGE));
    $('page').textContent = 'shots ' + (data.total_shots ? offset + 1 : 0) + '–' + Math.min(offset + PAGE, data.total_shots)
      + ' of ' + data.total_shots + ' · page ' + (Math.floor(offset / PAGE) + 1) + ' of ' + pages;
    $('prev').disabled = offset === 0; $('next').disabled = offset + PAGE >= data.total_shots;
    const i = wanted === null ? -1 : clips.findIndex(c => c.id === wanted);
    select(i >= 0 ? i : Math.max(0, clips.findIndex(c => c.match)));
    say(data.total_shots ? '' : 'Nothing here: no clip matches (the default view shows clips waiting for review from the last run).');
    if (after) after();
    document.body.setAttribute('data-loaded', String(Date.now()));
  }
  function replay(){
    while (held.length && !loading) onKey(held.shift());
  }
  function badge(text, cls){ return el('span', {class: 'badge ' + (cls || '')}, text); }
  function decorate(c){
    const b = c.node.querySelector('.badges'); b.textContent = '';
    b.append(badge('take ' + c.n + (c.take && c.take !== String(c.n) ? ' (' + c.take + ')' : '')));
    if (c.review) b.append(badge(c.review, 'v-' + c.review)); else b.append(badge('pending'));
    if (c.pick) b.append(badge('★ pick', 'pick'));
    if (c.verify) b.append(badge(c.verify, c.verify === 'ok' ? 'vf-ok' : 'vf-bad'));
    if (loop && c === clips[cur]) b.append(badge('loop', 'loop'));
    const n = c.node.querySelector('.note'); n.textContent = c.note ? '“' + c.note + '” — ' + (c.reviewer || '') : '';
    c.node.setAttribute('data-review', c.review || 'pending'); c.node.setAttribute('data-pick', c.pick ? '1' : '0');
  }
  function media(c){
    const q = '?t=' + encodeURIComponent(token);
    if (c.where === 'nowhere') return el('div', {class: 'nowhere'}, 'This clip is nowhere: not in the output folder and not delivered.');
    // Poster frame until played: nothing of the clip loads before it is asked for.
    const v = el('video', {preload: 'none', playsinline: '', 'data-src': '/media/' + c.id + '/clip' + q});
    v.setAttribute('poster', '/media/' + c.id + '/poster' + q);
    v.addEventListener('click', ev => { ev.stopPropagation(); select(clips.indexOf(c)); play(); });
    return v;
  }
  // The contact sheet: asked for only when opened (S, or a click). One a run left undrawn is
  // drawn by the server then (a fraction of a second): "drawing…" until the image comes.
  function sheetBox(c){
    const d = el('details', {class: 'sheet'}); d.append(el('summary', {}, 'contact sheet (S)'));
    d.addEventListener('click', ev => ev.stopPropagation());
    d.addEventListener('toggle', () => {
      if (!d.open || d.querySelector('img')) return;
      const wait = el('div', {class: 'muted'}, 'drawing…');
      const img = el('img', {alt: 'contact sheet of ' + c.name});
      img.addEventListener('load', () => { wait.remove(); d.setAttribute('data-sheet', 'shown'); });
      img.addEventListener('error', () => { wait.textContent = 'no contact sheet: the clip cannot be read here'; img.remove();
        d.setAttribute('data-sheet', 'none'); });
      d.append(wait); d.append(img);
      img.setAttribute('src', '/media/' + c.id + '/sheet?t=' + encodeURIComponent(token));
    });
    return d;
  }
  function toggleSheet(){
    const c = clips[cur], d = c && c.node.querySelector('details.sheet');
    if (d) d.open = !d.open; else if (c) say('no contact sheet for this clip');
  }
  function render(){
    const main = $('shots'); main.textContent = ''; clips = [];
    for (const s of data.shots) {
      const first = s.takes[0], box = el('section', {class: 'shot', 'data-shot': s.shot});
      box.append(el('h2', {}, first.name));
      box.append(el('div', {class: 'prompt'}, first.prompt));
      const row = el('div', {class: 'takes'});
      for (const t of s.takes) {
        const card = el('div', {class: 'take' + (t.match ? '' : ' dim'), 'data-job': t.id, tabindex: '-1'});
        card.append(media(t));
        card.append(el('div', {class: 'badges'}));
        card.append(el('div', {class: 'name'}, t.name));
        const spec = [t.model, t.width ? t.width + '×' + t.height : '', t.duration ? t.duration.toFixed(1) + ' s' : '', t.key].filter(Boolean);
        card.append(el('div', {class: 'muted'}, spec.join(' · ')));
        card.append(el('div', {class: 'note'}));
        if (t.sheet && t.where === 'local') card.append(sheetBox(t));
        const actions = el('div', {class: 'actions'});
        for (const [label, fn] of [['Approve (A)', () => decide('approve')], ['Retake (R)', () => decide('retake')],
                                   ['Reject (X)', () => decide('reject')], ['Note (N)', () => openNote()], ['Edit retake (E)', () => openEdit()],
                                   ['Pick (' + t.n + ')', () => pick(t.n)]]) {
          const btn = el('button', {type: 'button'}, label);
          btn.addEventListener('click', ev => { ev.stopPropagation(); select(clips.indexOf(t)); fn(); });
          actions.append(btn);
        }
        card.append(actions);
        card.addEventListener('click', () => select(clips.indexOf(t)));
        t.node = card; t.shotTakes = s.takes;
        row.append(card); clips.push(t); decorate(t);
      }
      box.append(row); main.append(box);
    }
  }
  function video(){ const c = clips[cur]; return c && c.node.querySelector('video'); }
  function select(i){
    if (!clips.length) return;
    const was = video(); if (was && !was.paused) was.pause();
    if (clips[cur] && clips[cur].node) clips[cur].node.classList.remove('current');
    cur = Math.max(0, Math.min(clips.length - 1, i));
    const c = clips[cur]; c.node.classList.add('current');
    c.node.scrollIntoView({block: 'nearest', inline: 'nearest'});
    clips.forEach(decorate);
    document.body.setAttribute('data-current', String(c.id));
  }
  function play(){
    const v = video(); if (!v) return;
    if (!v.getAttribute('src')) v.setAttribute('src', v.getAttribute('data-src'));
    v.loop = loop;
    if (v.paused) v.play().catch(e => say('cannot play: ' + e.message, true)); else v.pause();
  }
  // Decisions go out one after another, in the order they were made: a key pressed while the
  // last one is on its way is queued, never dropped. Each names its clip by job id, taken when
  // the key was pressed. `data-decided` is "settled:pending": how many decisions have had their
  // answer (recorded, refused, or nothing to undo) and how many are still on their way, so a
  // test (or anyone) can wait for exactly the decisions it made.
  // `epoch` changes whenever a decision is made or the clips are loaded: a refresh that read the
  // ledger before that is stale and dropped, never patched over a newer verdict.
  let queue = Promise.resolve(), pending = 0, settled = 0, epoch = 0;
  function decided(){ settled++; document.body.setAttribute('data-decided', settled + ':' + pending); }
  // `at`: the clip the cursor was on when the decision was made; its undo brings the cursor
  // back there, so the clip can be decided again at once (the verdict had moved it on).
  function send(changes, label, before, at){
    pending++; epoch++;
    queue = queue.then(async () => {
      try {
        const doc = await api('/api/decide', {changes: changes});
        patch(doc.clips); counts(doc.counts);
        // Its undo puts back what each changed clip was, on condition that the decision just
        // recorded is still the clip's latest: never over another reviewer's later decision.
        if (before) {
          const back = before.filter(b => doc.clips[String(b.job)])
                             .map(b => Object.assign({}, b, {expect: doc.clips[String(b.job)].decision}));
          if (back.length) undo.push({label: label, before: back, at: at});
        }
        say(label);
      } catch (e) { say(e.message, true); }
      finally { pending--; epoch++; decided(); }
    });
    return queue;
  }
  function patch(states){
    for (const id in states) {
      const c = clips.find(x => String(x.id) === id);
      if (c) { Object.assign(c, states[id]); decorate(c); }
    }
  }
  // Other reviewers' decisions show up without a reload: the decisions of the clips on the page
  // are read again every few seconds and patched in place (nothing is re-rendered, so a playing
  // clip keeps playing).
  async function refresh(){
    if (pending || loading || !clips.length || document.hidden) return;
    const at = epoch;
    try {
      const doc = await api('/api/states?ids=' + clips.map(c => c.id).join(','));
      if (pending || loading || at !== epoch) return;  // read before a decision or a load: stale
      patch(doc.clips); counts(doc.counts);
      document.body.setAttribute('data-refreshed', String(Date.now()));
    } catch (e) { /* the next refresh tries again */ }
  }
  setInterval(refresh, 4000);
  function state(c){ return {job: c.id, verdict: c.review || null, pick: !!c.pick, note: c.note || null}; }
  function decide(verdict){
    const c = clips[cur]; if (!c) return;
    const before = [state(c)];
    if (cur < clips.length - 1) select(cur + 1);  // on to the next clip at once, as dailies tools do
    return send([{job: c.id, verdict: verdict}], c.name + ': ' + verdict, before, c.id);
  }
  async function pick(n){
    const c = clips[cur]; if (!c) return;
    const t = c.shotTakes.find(x => x.n === n);
    if (!t) { say('this shot has no take ' + n, true); return; }
    await send([{job: t.id, pick: true}], t.name + ': take ' + n + ' is the pick', c.shotTakes.map(state), c.id);
  }
  async function doUndo(){
    await queue;  // the decision to undo is recorded (and on the stack) first
    const last = undo.pop();
    if (!last) { say('nothing to undo'); decided(); return; }
    const back = clips.findIndex(c => c.id === last.at);
    if (back >= 0) select(back);
    await send(last.before, 'undone: ' + last.label, null);
  }
  // A closed box gives the keys back to the page: its text field must not keep the focus.
  function closeBox(id){ $(id).hidden = true; if (document.activeElement) document.activeElement.blur(); }
  // A box acts on the clip it was opened for, whatever happens to the cursor meanwhile.
  let noteFor = null, editFor = null;
  function openNote(){
    const c = clips[cur]; if (!c) return;
    noteFor = c;
    $('note-title').textContent = 'Note on ' + c.name;
    $('note-text').value = c.note || '';
    $('note').hidden = false; $('note-text').focus();
  }
  async function saveNote(){
    const c = noteFor; closeBox('note'); if (!c) return;
    await send([{job: c.id, note: $('note-text').value.trim() || null}], c.name + ': note saved', [state(c)], c.id);
  }
  $('note-text').addEventListener('keydown', ev => {
    if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); saveNote(); }
    else if (ev.key === 'Escape') { ev.preventDefault(); closeBox('note'); }
    ev.stopPropagation();
  });
  // Retake with a change: the prompt (or any request field) edited, checked by the server like a
  // manifest row and shown as a diff before it is recorded with the retake verdict.
  let checked = null;
  function openEdit(){
    const c = clips[cur]; if (!c) return;
    editFor = c;
    $('edit-title').textContent = 'Retake ' + c.name + ' with a change';
    $('edit-prompt').value = typeof c.prompt === 'string' ? c.prompt : '';
    $('edit-fields').value = '{}'; $('edit-diff').textContent = ''; checked = null;
    $('edit').hidden = false; $('edit-prompt').focus();
  }
  function editChanges(){
    const c = editFor, changes = JSON.parse($('edit-fields').value || '{}');
    if (typeof changes !== 'object' || changes === null || Array.isArray(changes)) throw new Error('other fields: a JSON object');
    if ($('edit-prompt').value !== (c.prompt || '')) changes.prompt = $('edit-prompt').value;
    return changes;
  }
  async function checkEdit(){
    const c = editFor, box = $('edit-diff'); if (!c) return;
    let changes;
    try { changes = editChanges(); } catch (e) { box.textContent = e.message; box.className = 'diff error'; return; }
    const key = JSON.stringify(changes);
    if (checked === key) {  // checked and shown: record it
      closeBox('edit');
      await send([{job: c.id, changes: changes}], c.name + ': retake with a change', [state(c)]);
      return;
    }
    try {
      const doc = await api('/api/decide', {changes: [{job: c.id, changes: changes}], dry: true});
      box.textContent = ''; box.className = 'diff';
      const diff = doc.diffs[String(c.id)] || [];
      if (!diff.length) box.append(el('div', {}, 'no change: the same request again'));
      for (const d of diff) {
        box.append(el('div', {}, d.field + ':'));
        box.append(el('div', {class: 'was'}, '- ' + JSON.stringify(d.was)));
        box.append(el('div', {class: 'now'}, '+ ' + JSON.stringify(d.now)));
      }
      box.append(el('div', {class: 'muted'}, 'Enter again to mark it retake with this change.'));
      checked = key;
      document.body.setAttribute('data-edit-checked', String(Date.now()));
    } catch (e) { box.textContent = e.message; box.className = 'diff error'; checked = null;
      document.body.setAttribute('data-edit-checked', 'error'); }
  }
  for (const id of ['edit-prompt', 'edit-fields']) $(id).addEventListener('keydown', ev => {
    if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); checkEdit(); }
    else if (ev.key === 'Escape') { ev.preventDefault(); closeBox('edit'); }
    ev.stopPropagation();
  });
  function help(show){ $('help').hidden = show === undefined ? !$('help').hidden : !show; }
  $('help-button').addEventListener('click', () => help());
  $('help').addEventListener('click', () => help(false));
  document.addEventListener('keydown', ev => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT')) {
      if (ev.key === 'Escape') t.blur();
      return;
    }
    if (!handles(ev.key)) return;
    if (ev.key !== 'Escape') ev.preventDefault();
    // Pressed while a page of clips is loading (the next page, a filter): kept until it is shown.
    if (loading || held.length) { held.push(ev.key); return; }
    onKey(ev.key);
  });
  function handles(k){
    return k === '?' || k === 'Escape' || /^[1-9]$/.test(k) || (k.length === 1 ? 'jklarxnues/ '.includes(k.toLowerCase())
      : ['ArrowDown', 'ArrowUp', 'ArrowLeft', 'ArrowRight'].includes(k));
  }
  function onKey(k){
    if (k === '?') { help(); return; }
    if (k === 'Escape') { help(false); return; }
    if (!$('help').hidden) return;
    const lower = k.length === 1 ? k.toLowerCase() : k;
    const keys = {
      j: () => next(1), ArrowDown: () => next(1), ArrowRight: () => next(1),
      k: () => next(-1), ArrowUp: () => next(-1), ArrowLeft: () => next(-1),
      ' ': play, l: () => { loop = !loop; const v = video(); if (v) v.loop = loop; decorate(clips[cur]); say('loop ' + (loop ? 'on' : 'off')); },
      a: () => decide('approve'), r: () => decide('retake'), x: () => decide('reject'), n: openNote, u: doUndo,
      e: openEdit, s: toggleSheet,
      '/': () => $('f-q').focus(),
    };
    if (keys[lower]) { keys[lower](); return; }
    if (/^[1-9]$/.test(k)) pick(Number(k));
  }
  async function next(step){
    const i = cur + step;
    if (i >= clips.length && !$('next').disabled) { offset += PAGE; await load(false); return; }
    if (i < 0 && offset > 0) { offset = Math.max(0, offset - PAGE); await load(false, () => select(clips.length - 1)); return; }
    select(i);
  }
  let timer = null;
  $('f-q').addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(() => { offset = 0; load(false); }, 200); });
  for (const id of ['f-verdict', 'f-verify', 'f-model']) $(id).addEventListener('change', () => { offset = 0; load(false); $(id).blur(); });
  $('prev').addEventListener('click', () => { offset = Math.max(0, offset - PAGE); load(false); });
  $('next').addEventListener('click', () => { offset += PAGE; load(false); });
  if (!token) say('No token in this URL: open the URL `batchgen review` printed.', true);
  load(false);
})();
