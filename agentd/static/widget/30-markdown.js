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

