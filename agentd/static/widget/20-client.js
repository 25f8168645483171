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

