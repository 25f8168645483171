/*! agentd chat widget. Embed with
 *    <script src="https://agents.example.com/widget.js" data-agent="support" async></script>
 *  One self-contained file: no framework, no CDN, no build step. Options and the
 *  server protocol are described in docs/widget.md.
 *
 *  Safety rule for this file: model text only ever reaches the page through
 *  text nodes and createElement. There is no innerHTML anywhere, so nothing the
 *  model writes can run script, load an image or restyle the host page.
 */
(function () {
  'use strict';

  var INIT = 'agentdWidgetInit';          // dataset flag on a claimed <script> tag
  var instancesAt = {};                   // position -> widgets already placed there

  /* ---------------------------------------------------------------- options */

  var LABELS = {
    open: 'Open chat', close: 'Close chat', send: 'Send', reset: 'New conversation',
    retry: 'Retry', input: 'Type your message…', title: 'Chat', thinking: 'Thinking…',
    tool: 'Using {name}…', error: 'Something went wrong.', forbidden: 'This chat is not available on this site.',
    ratelimited: 'Too many messages. Please wait a moment.', network: 'The connection was lost.',
    you: 'You', assistant: 'Assistant', approve: 'Approve', deny: 'Deny', approved: 'Approved',
    denied: 'Denied', approval: 'Needs your approval'
  };

  function isWidgetTag(s) {
    return !!(s && s.tagName === 'SCRIPT' && s.src && /\/widget\.js(?:[?#]|$)/.test(s.src) && s.dataset.agent);
  }

  /** Our own tag: currentScript (works for async too), else unclaimed widget tags. */
  function findScripts() {
    var cur = document.currentScript;
    if (isWidgetTag(cur) && !cur.dataset[INIT]) return [cur];
    return Array.prototype.filter.call(document.querySelectorAll('script[src][data-agent]'),
      function (s) { return isWidgetTag(s) && !s.dataset[INIT]; });
  }

  function flag(value) {
    return value !== undefined && !/^(false|0|no|off)$/i.test(value);
  }

  function readConfig(script) {
    var d = script.dataset, labels = {};
    Object.keys(LABELS).forEach(function (k) {
      var key = k.charAt(0).toUpperCase() + k.slice(1);
      labels[k] = d['label' + key] || d['lang' + key] || LABELS[k];
    });
    if (d.title) labels.title = d.title;
    if (d.placeholder) labels.input = d.placeholder;
    return {
      agent: d.agent,
      // The server is wherever this file came from (a path prefix is kept for proxies).
      base: new URL(script.src, location.href).href.replace(/\/widget\.js(?:[?#].*)?$/, ''),
      greeting: d.greeting || '',
      accent: d.accent && window.CSS && CSS.supports('color', d.accent) ? d.accent : '#2563eb',
      position: d.position === 'bottom-left' ? 'bottom-left' : 'bottom-right',
      open: flag(d.open),
      starters: (d.starters || '').split('|').map(function (s) { return s.trim(); }).filter(Boolean),
      userToken: d.userToken || null,
      labels: labels
    };
  }

  /* ---------------------------------------------------------------- storage */

  // localStorage throws in sandboxed frames and some private modes: keep going in memory.
  var memory = {};
  var store = {
    get: function (k) { try { return localStorage.getItem(k); } catch (e) { return memory[k] || null; } },
    set: function (k, v) { try { localStorage.setItem(k, v); } catch (e) { memory[k] = v; } },
    del: function (k) { try { localStorage.removeItem(k); } catch (e) { /* ignore */ } delete memory[k]; }
  };

  function randomId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return 'v_' + Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join('');
  }

  /* ----------------------------------------------------------------- client */

  function ApiError(status, code, message) {
    this.status = status; this.code = code || 'ERROR'; this.message = message || '';
  }

  async function apiError(res) {
    var body = null;
    try { body = await res.json(); } catch (e) { /* not JSON */ }
    var err = (body && body.error) || {};
    return new ApiError(res.status, err.code, err.message);
  }

  /** Talks to agentd: a short-lived widget token, renewed before expiry or on 401. */
  function Client(cfg) {
    this.cfg = cfg;
    this.token = null;
    this.expiresAt = 0;
    this.visitorKey = 'agentd:visitor:' + cfg.base;
  }

  Client.prototype.visitorId = function () {
    var id = store.get(this.visitorKey);
    if (!id) { id = randomId(); store.set(this.visitorKey, id); }
    return id;
  };

  Client.prototype.session = function (force) {
    var self = this;
    if (!force && this.token && Date.now() < this.expiresAt - 60000) return Promise.resolve(this.token);
    if (!this.pending) {
      this.pending = (async function () {
        var res = await fetch(self.cfg.base + '/api/widget/session', {
          method: 'POST', mode: 'cors', credentials: 'omit',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ agent_id: self.cfg.agent, visitor_id: self.visitorId(), user_token: self.cfg.userToken })
        });
        if (!res.ok) throw await apiError(res);
        var data = await res.json();
        self.token = data.token;
        self.expiresAt = Date.now() + (data.expires_in || 3600) * 1000;
        if (data.visitor_id) store.set(self.visitorKey, data.visitor_id);
        return self.token;
      })();
      this.pending.then(function () { self.pending = null; }, function () { self.pending = null; });
    }
    return this.pending;
  };

  Client.prototype.request = async function (method, path, body, signal, renewed) {
    var token = await this.session(renewed);
    var res = await fetch(this.cfg.base + path, {
      method: method, mode: 'cors', credentials: 'omit', signal: signal,
      headers: { 'Authorization': 'Widget ' + token, 'Content-Type': 'application/json' },
      body: body ? JSON.stringify(body) : undefined
    });
    if (res.status === 401 && !renewed) return this.request(method, path, body, signal, true);
    return res;
  };

  /** Reads a text/event-stream body and calls onEvent with each JSON `data:` payload. */
  async function readSSE(res, onEvent) {
    var reader = res.body.getReader(), decoder = new TextDecoder(), buf = '', m;
    function dispatch(block) {
      var data = block.split(/\r?\n/).filter(function (l) { return l.indexOf('data:') === 0; })
        .map(function (l) { return l.slice(5).replace(/^ /, ''); }).join('\n');
      if (!data) return;                  // comments (": ping") and bare event: lines
      var ev;
      try { ev = JSON.parse(data); } catch (e) { return; }
      if (ev && typeof ev === 'object') onEvent(ev);
    }
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buf += decoder.decode(chunk.value, { stream: true });
      while ((m = /\r?\n\r?\n/.exec(buf))) {
        dispatch(buf.slice(0, m.index));
        buf = buf.slice(m.index + m[0].length);
      }
    }
    buf += decoder.decode();
    if (buf.trim()) dispatch(buf);
  }

  /* --------------------------------------------------------------- markdown */

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  }

  /** An absolute http(s)/mailto URL, normalised, or null: javascript:, data:, relative… are refused. */
  function safeUrl(raw) {
    try {
      var u = new URL(String(raw).trim());
      return ['http:', 'https:', 'mailto:'].indexOf(u.protocol) >= 0 ? u.href : null;
    } catch (e) { return null; }
  }

  function link(url, label) {
    var href = safeUrl(url);
    if (!href) return document.createTextNode(label);
    var a = el('a', null, label);
    a.href = href;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    return a;
  }

  // One pass over inline syntax. Groups: 2 code, 3/4 image alt/url, 5/6 link text/url,
  // 7/8 bold, 9/10 italic, 11 bare URL.
  var INLINE = new RegExp([
    '(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)',
    '!\\[([^\\]]*)\\]\\(\\s*<?([^)\\s>]*)>?(?:\\s+["\'][^"\']*["\'])?\\s*\\)',
    '\\[([^\\]]+)\\]\\(\\s*<?([^)\\s>]*)>?(?:\\s+["\'][^"\']*["\'])?\\s*\\)',
    '\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*',
    '\\b__(?=\\S)([\\s\\S]*?\\S)__\\b',
    '\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*',
    '\\b_(?=[^\\s_])([\\s\\S]*?[^\\s_])_\\b',
    '(https?:\\/\\/[^\\s<>"\']*[^\\s<>"\'.,;:!?)\\]])'
  ].join('|'), 'g');

  function renderInline(text, parent) {
    var re = new RegExp(INLINE.source, 'g'), last = 0, m, node;
    while ((m = re.exec(text))) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      if (m[2] !== undefined) node = el('code', 'md-code', m[2]);
      // Images are never loaded (no tracking pixels): they become a plain link.
      else if (m[4] !== undefined) node = link(m[4], m[3] || m[4] || 'image');
      else if (m[6] !== undefined) node = link(m[6], m[5]);
      else if (m[7] !== undefined || m[8] !== undefined) { node = el('strong'); renderInline(m[7] || m[8], node); }
      else if (m[9] !== undefined || m[10] !== undefined) { node = el('em'); renderInline(m[9] || m[10], node); }
      else node = link(m[11], m[11]);
      parent.appendChild(node);
      last = re.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function listItem(line) {
    var m = /^\s*(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/.exec(line);
    return m && { ordered: !m[1], start: m[2] ? parseInt(m[2], 10) : 1, text: m[3] };
  }

  /** Markdown subset: paragraphs, line breaks, fences, lists, headings (as bold), inline. */
  function renderMarkdown(src, root) {
    var lines = String(src).replace(/\r\n?/g, '\n').split('\n'), i = 0, para = [];
    function flush() {
      if (!para.length) return;
      var p = el('p', 'md-p');
      para.forEach(function (line, n) { if (n) p.appendChild(el('br')); renderInline(line, p); });
      root.appendChild(p);
      para = [];
    }
    while (i < lines.length) {
      var line = lines[i], fence = /^\s*(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/.exec(line), item, h;
      if (fence) {
        // An unclosed fence (mid-stream) runs to the end: still just text in <code>.
        flush();
        var body = [], close = new RegExp('^\\s*' + fence[1].charAt(0) + '{' + fence[1].length + ',}\\s*$');
        for (i++; i < lines.length && !close.test(lines[i]); i++) body.push(lines[i]);
        i++;
        var pre = el('pre', 'md-pre');
        pre.appendChild(el('code', null, body.join('\n')));
        root.appendChild(pre);
      } else if (!line.trim()) {
        flush(); i++;
      } else if ((item = listItem(line))) {
        flush();
        var list = el(item.ordered ? 'ol' : 'ul', 'md-list');
        if (item.ordered && item.start !== 1) list.start = item.start;
        for (; i < lines.length; i++) {
          var it = listItem(lines[i]);
          if (it && it.ordered === item.ordered) {
            var li = el('li', 'md-li');
            renderInline(it.text, li);
            list.appendChild(li);
          } else if (!it && /^\s{2,}\S/.test(lines[i]) && list.lastChild) {
            list.lastChild.appendChild(el('br'));   // an indented continuation line
            renderInline(lines[i].trim(), list.lastChild);
          } else break;
        }
        root.appendChild(list);
      } else if ((h = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line))) {
        flush();
        var hp = el('p', 'md-p md-h'), strong = el('strong');
        renderInline(h[1], strong);
        hp.appendChild(strong);
        root.appendChild(hp);
        i++;
      } else {
        para.push(line.replace(/^\s{0,3}>\s?/, '')); i++;
      }
    }
    flush();
  }

  /* ----------------------------------------------------------------- styles */

  // Everything is explicit: `all: initial` on :host and .root stops the host page's
  // inherited values (color, font, letter-spacing…) at the shadow boundary.
  var CSS_TEXT = [
    ':host{all:initial !important;display:block !important;position:fixed !important;width:0 !important;',
    'height:0 !important;bottom:0 !important;right:0 !important;z-index:2147483000 !important;visibility:visible !important}',
    '.root{all:initial;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;',
    'font-size:14px;line-height:1.45;color:#1f2328;font-weight:400;text-align:left;direction:ltr}',
    '*,*::before,*::after{box-sizing:border-box}',
    'button,textarea{font:inherit;color:inherit;letter-spacing:normal;text-transform:none;margin:0}',
    'button{cursor:pointer;background:none;border:0;padding:0}',
    ':focus-visible{outline:2px solid var(--accent);outline-offset:2px}',
    '.launcher{position:fixed;bottom:20px;width:56px;height:56px;border-radius:50%;background:var(--accent);',
    'color:var(--on-accent);display:flex;align-items:center;justify-content:center;',
    'box-shadow:0 4px 14px rgba(0,0,0,.25);transition:transform .15s}',
    '.launcher:hover{transform:scale(1.05)}',
    '.launcher svg{width:26px;height:26px;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round}',
    '.panel{position:fixed;bottom:88px;width:370px;max-width:calc(100vw - 40px);height:560px;',
    'max-height:calc(100vh - 108px);display:flex;flex-direction:column;background:#fff;border-radius:14px;',
    'overflow:hidden;box-shadow:0 10px 40px rgba(0,0,0,.25);border:1px solid rgba(0,0,0,.08)}',
    '.panel[hidden]{display:none}',
    '.header{display:flex;align-items:center;gap:6px;padding:12px 12px 12px 16px;background:var(--accent);color:var(--on-accent)}',
    '.title{flex:1;font-size:15px;font-weight:600;margin:0;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}',
    '.icon{width:32px;height:32px;border-radius:8px;display:flex;align-items:center;justify-content:center;color:inherit}',
    '.icon:hover{background:rgba(255,255,255,.18)}',
    '.icon svg{width:18px;height:18px;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round}',
    '.log{flex:1;overflow-y:auto;padding:14px;display:flex;flex-direction:column;gap:10px;background:#fafafa}',
    '.msg{max-width:85%;padding:8px 12px;border-radius:12px;overflow-wrap:anywhere;word-break:break-word}',
    '.user{align-self:flex-end;background:var(--accent);color:var(--on-accent);white-space:pre-wrap;border-bottom-right-radius:4px}',
    '.assistant{align-self:flex-start;background:#eef0f3;color:#1f2328;border-bottom-left-radius:4px}',
    '.md-p{margin:0 0 6px}.md-p:last-child{margin-bottom:0}',
    '.md-list{margin:0 0 6px;padding-left:20px}.md-li{margin:2px 0;display:list-item}',
    'ul.md-list{list-style:disc outside}ol.md-list{list-style:decimal outside}',
    '.md-code,.md-pre code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}',
    '.md-code{background:rgba(0,0,0,.07);padding:1px 4px;border-radius:4px}',
    '.md-pre{margin:0 0 6px;padding:8px 10px;background:#1f2328;color:#f0f3f6;border-radius:8px;overflow-x:auto;white-space:pre}',
    'a{color:#0b57d0;text-decoration:underline;cursor:pointer}.user a{color:inherit}',
    'strong{font-weight:700}em{font-style:italic}',
    '.error{align-self:stretch;display:flex;align-items:center;gap:8px;color:#b42318;background:#fef3f2;',
    'border:1px solid #fecdca;border-radius:8px;padding:8px 10px;font-size:13px}',
    '.error span{flex:1}',
    '.approval{align-self:stretch;border:1px solid #d0d7de;border-left:4px solid var(--accent);border-radius:8px;',
    'background:#fff;padding:8px 10px;display:flex;flex-direction:column;gap:6px}',
    '.approval-tool{font-size:12px;color:#57606a}.approval-text{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}',
    '.approval-actions{display:flex;gap:8px}.approval-actions .btn{color:var(--accent)}',
    '.approval-state{font-size:12px;font-weight:600;color:#57606a}',
    '.btn{padding:4px 10px;border-radius:6px;border:1px solid currentColor;font-size:13px;color:inherit;background:#fff}',
    '.starters{display:flex;flex-wrap:wrap;gap:6px;padding:0 14px 8px;background:#fafafa}',
    '.starters[hidden]{display:none}',
    '.starter{padding:6px 10px;border-radius:16px;border:1px solid var(--accent);color:var(--accent);background:#fff;font-size:13px}',
    '.status{min-height:20px;padding:0 14px;font-size:12px;font-style:italic;color:#57606a;background:#fafafa;',
    'white-space:nowrap;overflow:hidden;text-overflow:ellipsis}',
    '.form{display:flex;align-items:flex-end;gap:8px;padding:10px;border-top:1px solid #e5e7eb;background:#fff}',
    '.input{flex:1;resize:none;min-height:38px;max-height:120px;padding:8px 10px;border:1px solid #d0d7de;',
    'border-radius:8px;background:#fff;color:#1f2328;font-size:14px;line-height:1.45;outline:none;display:block}',
    '.input:focus{border-color:var(--accent);box-shadow:0 0 0 2px color-mix(in srgb,var(--accent) 25%,transparent)}',
    '.send{height:38px;padding:0 14px;border-radius:8px;background:var(--accent);color:var(--on-accent);font-weight:600}',
    '.send:disabled{opacity:.55;cursor:default}',
    '.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;margin:-1px}',
    // Phones: the panel takes the whole screen; its header has the close button.
    '@media (max-width:480px){.panel{top:0;left:0;right:0;bottom:0;width:100%;max-width:none;height:100%;',
    'max-height:none;border-radius:0;border:0}.launcher[aria-expanded="true"]{display:none}}'
  ].join('\n');

  var ICONS = {
    chat: ['M21 12a8 8 0 0 1-11.6 7.1L4 20.5l1.4-4.9A8 8 0 1 1 21 12z'],
    close: ['M18 6 6 18', 'M6 6l12 12'],
    reset: ['M3 12a9 9 0 1 0 3-6.7', 'M3 4v5h5']
  };

  function icon(name) {
    var ns = 'http://www.w3.org/2000/svg', svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    ICONS[name].forEach(function (d) {
      var path = document.createElementNS(ns, 'path');
      path.setAttribute('d', d);
      svg.appendChild(path);
    });
    return svg;
  }

  /** Black or white, whichever reads better on the accent colour. */
  function textOn(color) {
    var ctx = document.createElement('canvas').getContext('2d');
    if (!ctx) return '#fff';
    ctx.fillStyle = color;
    var m = /^#(..)(..)(..)/.exec(ctx.fillStyle) || /(\d+),\s*(\d+),\s*(\d+)/.exec(ctx.fillStyle);
    if (!m) return '#fff';
    var rgb = m.slice(1, 4).map(function (v) { return m[0].charAt(0) === '#' ? parseInt(v, 16) : +v; });
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 160 ? '#111' : '#fff';
  }

  /* --------------------------------------------------------------------- ui */

  function Widget(cfg) {
    this.cfg = cfg;
    this.L = cfg.labels;
    this.client = new Client(cfg);
    this.convKey = 'agentd:conversation:' + cfg.base + ':' + cfg.agent;
    this.convId = store.get(this.convKey);
    this.busy = false;
    this.started = false;
  }

  Widget.prototype.mount = function () {
    var cfg = this.cfg, L = this.L, self = this;
    var host = document.createElement('agentd-widget');
    host.setAttribute('data-agent', cfg.agent);
    this.host = host;
    this.shadow = host.attachShadow({ mode: 'open' });
    var style = el('style');
    style.textContent = CSS_TEXT;
    var root = this.root = el('div', 'root');
    root.style.setProperty('--accent', cfg.accent);
    root.style.setProperty('--on-accent', textOn(cfg.accent));

    // Several widgets in one corner sit side by side instead of on top of each other.
    var slot = instancesAt[cfg.position] = (instancesAt[cfg.position] || 0) + 1;
    var side = cfg.position === 'bottom-left' ? 'left' : 'right', offset = 20 + (slot - 1) * 68;

    var launcher = this.launcher = el('button', 'launcher');
    launcher.type = 'button';
    launcher.style[side] = offset + 'px';
    launcher.setAttribute('aria-haspopup', 'dialog');
    launcher.setAttribute('aria-controls', 'panel');
    launcher.addEventListener('click', function () { self.toggle(); });

    var panel = this.panel = el('div', 'panel');
    panel.id = 'panel';
    panel.hidden = true;
    panel.style[side] = offset + 'px';
    panel.setAttribute('role', 'dialog');
    panel.setAttribute('aria-modal', 'false');
    panel.setAttribute('aria-label', L.title);
    panel.addEventListener('keydown', function (e) {
      if (e.key === 'Escape') { e.stopPropagation(); self.close(); }
    });

    var header = el('div', 'header');
    header.appendChild(el('h2', 'title', L.title));
    header.appendChild(this.iconButton('reset', L.reset, function () { self.reset(); }));
    header.appendChild(this.iconButton('close', L.close, function () { self.close(); }));

    var log = this.log = el('div', 'log');
    log.setAttribute('role', 'log');
    log.setAttribute('aria-live', 'polite');
    log.setAttribute('aria-label', L.title);
    log.tabIndex = 0;                            // a scrollable region must be reachable by keyboard

    this.starters = el('div', 'starters');
    this.starters.hidden = true;                  // shown only for an empty conversation
    cfg.starters.forEach(function (text) {
      var b = el('button', 'starter', text);
      b.type = 'button';
      b.addEventListener('click', function () { self.send(text); });
      self.starters.appendChild(b);
    });

    this.status = el('div', 'status');
    this.status.setAttribute('role', 'status');
    this.status.setAttribute('aria-live', 'polite');

    var form = el('form', 'form');
    var input = this.input = el('textarea', 'input');
    input.rows = 1;
    input.placeholder = L.input;
    input.setAttribute('aria-label', L.input);
    input.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); self.submit(); }
    });
    input.addEventListener('input', function () {
      input.style.height = 'auto';
      input.style.height = Math.min(input.scrollHeight + 2, 120) + 'px';
    });
    var send = this.sendButton = el('button', 'send', L.send);
    send.type = 'submit';
    form.addEventListener('submit', function (e) { e.preventDefault(); self.submit(); });
    form.appendChild(input);
    form.appendChild(send);

    [header, log, this.starters, this.status, form].forEach(function (n) { panel.appendChild(n); });
    root.appendChild(launcher);
    root.appendChild(panel);
    this.shadow.appendChild(style);
    this.shadow.appendChild(root);
    this.setLauncher(false);
    document.body.appendChild(host);
    if (cfg.open) this.open(false);
  };

  Widget.prototype.iconButton = function (name, label, onClick) {
    var b = el('button', 'icon');
    b.type = 'button';
    b.title = label;
    b.setAttribute('aria-label', label);
    b.appendChild(icon(name));
    b.addEventListener('click', onClick);
    return b;
  };

  Widget.prototype.setLauncher = function (open) {
    var b = this.launcher;
    b.setAttribute('aria-expanded', String(open));
    b.setAttribute('aria-label', open ? this.L.close : this.L.open);
    b.title = open ? this.L.close : this.L.open;
    b.replaceChildren(icon(open ? 'close' : 'chat'));
  };

  /* ----------------------------------------------------------- open / close */

  Widget.prototype.toggle = function () { this.panel.hidden ? this.open(true) : this.close(); };

  Widget.prototype.open = function (focus) {
    this.panel.hidden = false;
    this.setLauncher(true);
    if (focus !== false) this.input.focus();
    if (!this.started) { this.started = true; this.restore(); }
  };

  Widget.prototype.close = function () {
    if (this.panel.hidden) return;
    this.panel.hidden = true;
    this.setLauncher(false);
    this.launcher.focus();
  };

  /* ---------------------------------------------------------------- messages */

  Widget.prototype.scroll = function () { this.log.scrollTop = this.log.scrollHeight; };

  Widget.prototype.addMessage = function (role, text, id) {
    var bubble = el('div', 'msg ' + role);
    if (id != null) bubble.dataset.id = String(id);   // a stored message: a re-attached run may replace it
    var who = el('span', 'sr', (role === 'user' ? this.L.you : this.L.assistant) + ': ');
    var body = el('div', 'body');
    bubble.appendChild(who);
    bubble.appendChild(body);
    if (role === 'user') body.textContent = text;   // shown exactly as typed
    else renderMarkdown(text, body);
    this.log.appendChild(bubble);
    this.scroll();
    return body;
  };

  Widget.prototype.setStatus = function (text) { this.status.textContent = text || ''; };

  Widget.prototype.showIntro = function () {
    if (this.cfg.greeting) this.addMessage('assistant', this.cfg.greeting);
    this.starters.hidden = !this.cfg.starters.length;
  };

  Widget.prototype.clearError = function () {
    if (this.errorRow) { this.errorRow.remove(); this.errorRow = null; }
  };

  Widget.prototype.showError = function (err, retry) {
    this.clearError();
    var L = this.L, text = err.status === 403 || err.code === 'FORBIDDEN' ? L.forbidden
      : err.status === 429 || err.code === 'RATE_LIMITED' ? L.ratelimited
      : err.code === 'NETWORK' ? L.network : L.error;
    var row = this.errorRow = el('div', 'error');
    row.setAttribute('role', 'alert');
    row.appendChild(el('span', null, text));
    if (retry) {
      var b = el('button', 'btn', L.retry);
      b.type = 'button';
      b.addEventListener('click', retry);
      row.appendChild(b);
    }
    this.log.appendChild(row);
    this.scroll();
  };

  Widget.prototype.setConversation = function (id) {
    this.convId = id || null;
    if (id) store.set(this.convKey, id); else store.del(this.convKey);
  };

  /** History after a reload: the visitor's own conversation, read back from the API. */
  Widget.prototype.restore = async function () {
    var self = this;
    this.clearError();
    if (!this.convId) return this.showIntro();
    try {
      var res = await this.client.request('GET', '/api/agents/' + encodeURIComponent(this.cfg.agent) +
        '/chat?conversation_id=' + encodeURIComponent(this.convId) + '&limit=50');
      // Gone, or not this visitor's (a new visitor id): start afresh rather than fail.
      if (res.status === 404 || res.status === 403) { this.setConversation(null); return this.showIntro(); }
      if (!res.ok) throw await apiError(res);
      var shown = 0, data = await res.json();
      if (this.cfg.greeting) this.addMessage('assistant', this.cfg.greeting);
      (data.messages || []).forEach(function (m) {
        // Tool messages and tool-call-only assistant turns are internals, not conversation.
        if ((m.role === 'user' || m.role === 'assistant') && typeof m.content === 'string' && m.content) {
          self.addMessage(m.role, m.content, m.id);
          shown++;
        }
      });
      if (!shown) this.starters.hidden = !this.cfg.starters.length;
      this.attach();   // an answer still running (a reload mid-stream) continues here
      this.loadApprovals().catch(function () { /* the cards come back with the next answer */ });
    } catch (e) {
      this.started = false;
      this.showError(e, function () { self.started = true; self.restore(); });
    }
  };

  Widget.prototype.submit = function () {
    var text = this.input.value;
    if (this.send(text)) { this.input.value = ''; this.input.style.height = ''; }
  };

  Widget.prototype.send = function (text) {
    text = String(text || '').trim();
    if (!text || this.busy) return false;
    this.starters.hidden = true;
    this.addMessage('user', text);
    this.turn(text);
    return true;
  };

  Widget.prototype.setBusy = function (busy) {
    this.busy = busy;
    this.sendButton.disabled = busy;
    this.log.setAttribute('aria-busy', String(busy));  // announce the answer once, complete
  };

  /** One streamed turn. A failure leaves a retry button that sends the same text again. */
  Widget.prototype.turn = function (text) {
    var self = this;
    return this.follow(function (signal) {
      return self.client.request('POST', '/api/agents/' + encodeURIComponent(self.cfg.agent) + '/chat',
        { message: text, conversation_id: self.convId || null, stream: true }, signal);
    }, function (bubble) {
      if (bubble && bubble.parentNode) bubble.parentNode.remove();   // the retry writes a fresh answer
      if (!self.busy) self.turn(text);
    });
  };

  /** The conversation's running turn, if any (the server answers 204 when none runs): its
   *  events are replayed from the start, so the answer so far replaces what the history showed. */
  Widget.prototype.attach = function () {
    var self = this, id = this.convId;
    if (!id || this.busy) return;
    return this.follow(function (signal) {
      return self.client.request('GET', '/api/conversations/' + encodeURIComponent(id) + '/stream', null, signal);
    }, null, function (start) {
      // Stored rows of this run (its answer so far) give way to the replay; its question stays.
      Array.prototype.forEach.call(self.log.querySelectorAll('.msg[data-id]'), function (b) {
        if (Number(b.dataset.id) > Number(start.user_message_id)) b.remove();
      });
    });
  };

  /** Read one run's stream (`open(signal)` makes the request) into an answer bubble. */
  Widget.prototype.follow = async function (open, retry, onStart) {
    var self = this, ctrl = new AbortController(), bubble = null, acc = '', frame = 0, ended = null, held = [];
    this.clearError();
    this.setBusy(true);
    this.setStatus(this.L.thinking);
    this.abort = ctrl;
    function paint() {
      frame = 0;
      if (ctrl.signal.aborted) return;
      if (!bubble) bubble = self.addMessage('assistant', '');
      bubble.replaceChildren();
      renderMarkdown(acc, bubble);
      self.scroll();
    }
    function toolLine(name) { return self.L.tool.replace('{name}', name.replace(/_/g, ' ')); }
    function onEvent(ev) {
      if (ev.type === 'start' && ev.conversation_id) {
        self.setConversation(ev.conversation_id);
        if (onStart) onStart(ev);
      } else if (ev.type === 'status') {
        // A status naming a tool is shown in the page's language; others as the server wrote them.
        if (typeof ev.tool === 'string' && ev.tool) self.setStatus(toolLine(ev.tool));
        else if (typeof ev.message === 'string') self.setStatus(ev.message);
      } else if (ev.type === 'tool_call') {
        // Only the tool's name: arguments may hold anything and are never shown.
        var name = ev.tool_call && ev.tool_call.function && ev.tool_call.function.name;
        if (typeof name === 'string' && name) self.setStatus(toolLine(name));
      } else if (ev.type === 'delta' && typeof ev.content === 'string') {
        acc += ev.content;
        self.setStatus('');
        if (!frame) frame = requestAnimationFrame(paint);
      } else if (ev.type === 'approval_required' && ev.approval) {
        held.push(ev.approval);
      } else if (ev.type === 'done') {
        var c = ev.message && ev.message.content;
        if (typeof c === 'string') acc = c;
        ended = { ok: true };
      } else if (ev.type === 'error') {
        var e = ev.error || {};
        ended = new ApiError(200, e.code, e.message);
      }
    }
    try {
      var res = await open(ctrl.signal);
      if (res.status === 204 || res.status === 202) ended = { ok: true };   // nothing runs (yet)
      else if (!res.ok) throw await apiError(res);
      else await readSSE(res, onEvent);
      if (!ended) ended = new ApiError(0, 'NETWORK');
    } catch (e) {
      if (ctrl.signal.aborted) return;          // reset() abandoned this turn on purpose
      ended = e instanceof ApiError ? e : new ApiError(0, 'NETWORK', String(e && e.message));
    } finally {
      if (this.abort === ctrl) { this.abort = null; this.setBusy(false); this.setStatus(''); }
    }
    if (frame) { cancelAnimationFrame(frame); frame = 0; }
    if (acc) paint();
    if (held.length) this.showApprovals(held);
    if (ended.ok) return;
    if (ended.code === 'CONVERSATION_NOT_FOUND') this.setConversation(null);
    this.showError(ended, retry && function () { retry(bubble); });
  };

  /* --------------------------------------------------------------- approvals */

  /** The conversation's tool calls waiting for the visitor (after a reload). */
  Widget.prototype.loadApprovals = async function () {
    var res = await this.client.request('GET', '/api/conversations/' + encodeURIComponent(this.convId) + '/approvals');
    if (!res.ok) return;
    var data = await res.json();
    this.showApprovals(data.approvals || []);
  };

  /** A card per held call: its question and the tool's name as text, Approve / Deny. */
  Widget.prototype.showApprovals = function (list) {
    var self = this, L = this.L;
    list.forEach(function (a) {
      if (!a || typeof a.id !== 'string' || self.log.querySelector('[data-approval="' + CSS.escape(a.id) + '"]')) return;
      var card = el('div', 'approval');
      card.dataset.approval = a.id;
      card.setAttribute('role', 'group');
      card.setAttribute('aria-label', L.approval);
      if (typeof a.tool === 'string') card.appendChild(el('span', 'approval-tool', a.tool.replace(/_/g, ' ')));
      card.appendChild(el('p', 'approval-text', typeof a.message === 'string' ? a.message : L.approval));
      var actions = el('div', 'approval-actions');
      [['approve', L.approve], ['deny', L.deny]].forEach(function (pair) {
        var b = el('button', 'btn', pair[1]);
        b.type = 'button';
        b.dataset.decision = pair[0];
        b.addEventListener('click', function () { self.decide(card, a.id, pair[0]); });
        actions.appendChild(b);
      });
      card.appendChild(actions);
      self.log.appendChild(card);
    });
    this.scroll();
  };

  /** Send the visitor's decision; the last one of a step resumes the answer, streamed here. */
  Widget.prototype.decide = function (card, id, decision) {
    var self = this, conv = this.convId;
    if (this.busy || !conv) return;
    card.querySelector('.approval-actions').remove();
    card.appendChild(el('span', 'approval-state', decision === 'approve' ? this.L.approved : this.L.denied));
    return this.follow(function (signal) {
      return self.client.request('POST', '/api/conversations/' + encodeURIComponent(conv) + '/approvals/' +
        encodeURIComponent(id), { decision: decision, stream: true }, signal);
    });
  };

  /** A new conversation: forget the id here; the old one stays on the server. */
  Widget.prototype.reset = function () {
    if (this.abort) { this.abort.abort(); this.abort = null; this.setBusy(false); }
    this.setConversation(null);
    this.errorRow = null;
    this.log.replaceChildren();
    this.setStatus('');
    this.started = true;
    this.showIntro();
    this.input.focus();
  };

  /* ------------------------------------------------------------------- boot */

  function boot(script) {
    script.dataset[INIT] = '1';
    var w = new Widget(readConfig(script));
    var go = function () { w.mount(); };
    if (document.body) go(); else document.addEventListener('DOMContentLoaded', go);
  }

  findScripts().forEach(boot);
})();
