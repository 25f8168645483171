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

