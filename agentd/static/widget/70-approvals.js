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

