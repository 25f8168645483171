  /* ------------------------------------------------------------------- boot */

  function boot(script) {
    script.dataset[INIT] = '1';
    var w = new Widget(readConfig(script));
    var go = function () { w.mount(); };
    if (document.body) go(); else document.addEventListener('DOMContentLoaded', go);
  }

  findScripts().forEach(boot);
