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

