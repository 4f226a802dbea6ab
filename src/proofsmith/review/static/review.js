/* proofsmith review: math rendering, keyboard labeling, span annotation, resolutions.
   No data is ever inserted as HTML: text goes through textContent, math through
   katex.render with trust off. */
(function () {
  'use strict';
  var csrf = document.querySelector('meta[name="csrf-token"]').getAttribute('content');

  function flash(msg, bad) {
    var el = document.getElementById('flash');
    el.textContent = msg;
    el.className = 'flash show' + (bad ? ' bad' : '');
    clearTimeout(flash.t);
    flash.t = setTimeout(function () { el.className = 'flash'; }, bad ? 6000 : 1800);
  }

  function post(url, body) {
    return fetch(url, {
      method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {error: 'HTTP ' + r.status}; }).then(function (d) {
        if (!r.ok || d.error) { throw new Error(d.error || ('HTTP ' + r.status)); }
        return d;
      });
    });
  }

  function renderMath() {
    if (!window.katex) { return; }
    document.querySelectorAll('.rich .m').forEach(function (el) {
      var tex = el.getAttribute('data-tex');
      try {
        katex.render(tex, el, {displayMode: el.getAttribute('data-display') === '1', throwOnError: false,
          trust: false, strict: 'ignore', maxExpand: 500, maxSize: 20, output: 'htmlAndMathml'});
      } catch (e) { el.textContent = el.textContent; }
    });
    document.body.setAttribute('data-math', 'done');
  }

  /* annotator name */
  var form = document.getElementById('annotator-form');
  if (form) {
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      post('/api/annotator', {name: document.getElementById('annotator').value})
        .then(function () { location.reload(); })
        .catch(function (e) { flash(e.message, true); });
    });
  }

  /* ---------------------------------------------------------------- labeling page */
  var dataEl = document.getElementById('item-data');
  var item = dataEl ? JSON.parse(dataEl.textContent) : null;

  function cpLen(s) { return Array.from(s).length; }

  /* offset (code points) in the proof text of a DOM position inside #proof-text */
  function offsetOf(root, node, off, isEnd) {
    var el = node.nodeType === 3 ? node.parentNode : node;
    if (el === root) {
      var kids = root.children;
      if (off >= kids.length) { return isEnd ? cpLen(item.proof) : null; }
      return parseInt(kids[off].getAttribute('data-start'), 10);
    }
    var seg = el.closest ? el.closest('[data-start]') : null;
    if (!seg || !root.contains(seg)) { return null; }
    var start = parseInt(seg.getAttribute('data-start'), 10);
    var end = parseInt(seg.getAttribute('data-end'), 10);
    if (seg.classList.contains('m')) { return isEnd ? end : start; }
    if (node.nodeType === 3) {
      /* the end of a piece maps to its end offset (a CR piece is shorter in the page) */
      return off >= node.data.length ? end : start + cpLen(node.data.slice(0, off));
    }
    return off > 0 ? end : start;
  }

  function selectionSpan() {
    var root = document.getElementById('proof-text');
    var sel = window.getSelection();
    if (!root || !sel || sel.rangeCount === 0 || sel.isCollapsed) { return null; }
    var r = sel.getRangeAt(0);
    if (!root.contains(r.commonAncestorContainer)) { return null; }
    var a = offsetOf(root, r.startContainer, r.startOffset, false);
    var b = offsetOf(root, r.endContainer, r.endOffset, true);
    if (a === null || b === null || b <= a) { return null; }
    return {start: a, end: b};
  }

  /* saves run one after another, each with the state at the time it is sent, so a comment
     saved on blur can never land after (and undo) the score pressed just after it */
  var chain = Promise.resolve();
  function save() {
    var p = chain.then(function () {
      var body = {run: item.run, proof_id: item.proof_id, score: item.score,
        comment: document.getElementById('comment').value, spans: item.spans};
      return post('/api/decision', body).then(function (d) {
        item.comment = body.comment;
        document.getElementById('saved').textContent = 'saved ' + new Date().toLocaleTimeString();
        return d;
      });
    });
    chain = p.catch(function () {});
    return p.catch(function (e) { flash('not saved: ' + e.message, true); throw e; });
  }

  function setScore(v) {
    item.score = v;
    document.querySelectorAll('button.score').forEach(function (b) {
      b.classList.toggle('on', parseFloat(b.getAttribute('data-score')) === v);
    });
    save().then(function () {
      flash('saved ' + v);
      if (item.next) { location.href = item.next; } else { location.reload(); }
    }, function () {});
  }

  var pending = null;
  function startIssue() {
    var span = selectionSpan();
    if (!span) { flash('select part of the proof text first', true); return; }
    pending = span;
    var f = document.getElementById('issue-form');
    document.getElementById('issue-quote').textContent = Array.from(item.proof).slice(span.start, span.end).join('');
    f.hidden = false;
    var inp = document.getElementById('issue-comment');
    inp.value = '';
    inp.focus();
  }

  function commitIssue() {
    if (!pending) { return; }
    item.spans.push({start: pending.start, end: pending.end, comment: document.getElementById('issue-comment').value});
    pending = null;
    save().then(function () { location.reload(); }, function () { item.spans.pop(); });
  }

  function cancelIssue() {
    pending = null;
    document.getElementById('issue-form').hidden = true;
  }

  function undo() {
    post('/api/undo', {}).then(function (d) {
      if (!d.undone) { flash('nothing to undo', true); return; }
      flash('undone');
      var params = new URLSearchParams(item.base);
      params.set('run', d.undone.run);
      params.set('proof', d.undone.proof_id);
      location.href = '/label?' + params.toString();
    }).catch(function (e) { flash(e.message, true); });
  }

  if (item) {
    document.querySelectorAll('button.score').forEach(function (b) {
      b.addEventListener('click', function () { setScore(parseFloat(b.getAttribute('data-score'))); });
    });
    document.getElementById('comment').addEventListener('change', function () { save().catch(function () {}); });
    document.getElementById('attach').addEventListener('mousedown', function (ev) { ev.preventDefault(); });
    document.getElementById('attach').addEventListener('click', startIssue);
    document.getElementById('undo').addEventListener('click', undo);
    document.getElementById('issue-comment').addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter') { ev.preventDefault(); commitIssue(); }
      if (ev.key === 'Escape') { ev.preventDefault(); cancelIssue(); }
    });
    document.querySelectorAll('.del-span').forEach(function (b) {
      b.addEventListener('click', function () {
        item.spans.splice(parseInt(b.getAttribute('data-i'), 10), 1);
        save().then(function () { location.reload(); }, function () {});
      });
    });
    document.addEventListener('keydown', function (ev) {
      var t = ev.target;
      if (t && (t.tagName === 'TEXTAREA' || t.tagName === 'INPUT')) {
        if (ev.key === 'Escape') { t.blur(); }
        return;
      }
      if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      var k = ev.key;
      if (k === '0') { setScore(0); }
      else if (k === 'h' || k === '5') { setScore(0.5); }
      else if (k === '1') { setScore(1); }
      else if ((k === 'j' || k === 'ArrowRight') && item.next) { location.href = item.next; }
      else if ((k === 'k' || k === 'ArrowLeft') && item.prev) { location.href = item.prev; }
      else if (k === 'u') { undo(); }
      else if (k === 'i') { startIssue(); }
      else if (k === 'c') { document.getElementById('comment').focus(); }
      else { return; }
      ev.preventDefault();
    });
  }

  /* ---------------------------------------------------------------- agreement page */
  document.querySelectorAll('.conflict').forEach(function (box) {
    box.querySelectorAll('.resolve-btn').forEach(function (b) {
      b.addEventListener('click', function () {
        post('/api/resolve', {run: parseInt(box.getAttribute('data-run'), 10), proof_id: box.getAttribute('data-proof'),
          score: parseFloat(b.getAttribute('data-score')), comment: box.querySelector('.resolve-comment').value})
          .then(function () { location.reload(); })
          .catch(function (e) { flash(e.message, true); });
      });
    });
  });

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', renderMath);
  } else { renderMath(); }
})();
