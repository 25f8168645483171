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

