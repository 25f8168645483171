  /* ------------------------------------------------------------------ turns */

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

