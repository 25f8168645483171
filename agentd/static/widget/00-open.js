/*! agentd chat widget. Embed with
 *    <script src="https://agents.example.com/widget.js" data-agent="support" async></script>
 *  One self-contained script: no framework, no CDN, no build step. The server
 *  serves the parts in agentd/static/widget/ joined in name order, inside this
 *  one function. Options and the server protocol are described in docs/widget.md.
 *
 *  Safety rule for every part: model text only ever reaches the page through
 *  text nodes and createElement. There is no innerHTML anywhere, so nothing the
 *  model writes can run script, load an image or restyle the host page.
 */
(function () {
  'use strict';

