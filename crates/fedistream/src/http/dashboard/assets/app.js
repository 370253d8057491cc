// fedistream dashboard: keeps the live feed current and the charts fresh.
// The server sends each post as HTML it has already sanitised (an allow-list
// of Mastodon's markup, see src/http/dashboard/render.rs); this script only
// places it, parsed inside an inert <template>. It never builds markup from
// the raw post. The page works without it (a reload shows the same).
'use strict';
(function () {
  var feed = document.getElementById('feed');
  var state = document.getElementById('feed-state');
  var MAX = 50;

  function say(text) {
    if (state) state.textContent = text;
  }

  function parse(html) {
    var t = document.createElement('template');
    t.innerHTML = html;
    return t.content;
  }

  // Charts: fetch them again a moment after posts change (the server caches
  // its figures for two seconds).
  var pending = null;
  function refreshCharts() {
    if (pending) return;
    pending = setTimeout(function () {
      pending = null;
      var imgs = document.querySelectorAll('img[data-chart]');
      for (var i = 0; i < imgs.length; i++) {
        var u = new URL(imgs[i].src, location.href);
        u.searchParams.set('t', Date.now().toString());
        imgs[i].src = u.pathname + u.search;
      }
    }, 2500);
  }

  if (!feed || !window.EventSource) return;
  var url = feed.getAttribute('data-src');
  var after = feed.getAttribute('data-after');
  if (after) url += '&after=' + encodeURIComponent(after);
  var es = new EventSource(url);
  es.addEventListener('open', function () {
    say('Live: new posts appear here, edits replace them, deletions remove them.');
  });
  es.addEventListener('error', function () {
    say('Reconnecting to the live feed…');
  });
  es.addEventListener('post', function (e) {
    var m;
    try {
      m = JSON.parse(e.data);
    } catch (err) {
      return;
    }
    if (typeof m.id !== 'string') return;
    var old = document.getElementById(m.id);
    if (m.kind === 'deleted' || typeof m.html !== 'string') {
      if (old) old.remove();
    } else {
      var frag = parse(m.html);
      if (old) old.replaceWith(frag);
      else feed.prepend(frag);
      while (feed.children.length > MAX) feed.lastElementChild.remove();
    }
    refreshCharts();
  });
})();
