// fave's web page works without this script; with it, a page that shows something still
// running ([data-live]) fetches itself again every two seconds and swaps in its content,
// until nothing on it runs.
(function () {
  "use strict";
  const every = 2000;
  function live() { return document.querySelector("main [data-live]"); }
  async function refresh() {
    try {
      const answer = await fetch(location.href, { credentials: "same-origin", headers: { accept: "text/html" } });
      if (answer.ok) {
        const fresh = new DOMParser().parseFromString(await answer.text(), "text/html").querySelector("main");
        if (fresh) { document.querySelector("main").replaceWith(fresh); }
      }
    } catch (e) { /* the next tick tries again */ }
    if (live()) { setTimeout(refresh, every); }
  }
  if (live()) { setTimeout(refresh, every); }
})();
