// The live part of the knock page: the public channel and, when logged in,
// the user's own channel, through wsgi-sse's browser client (all tabs of the
// site share one connection).
import { openStream } from "/sse.js";

{
  const script = document.querySelector("script[data-stream]");
  const status = document.getElementById("status");
  const knocks = document.getElementById("knocks");
  const notices = document.getElementById("notices");

  function append(list, text) {
    const item = document.createElement("li");
    item.textContent = text; // text, never HTML: names are user input
    list.appendChild(item);
  }

  const url = new URL(script.dataset.stream, location.href);
  const source = openStream({
    url: url.pathname,
    channels: url.searchParams.getAll("channel"),
  });
  source.addEventListener("statuschange", (e) => {
    status.textContent = e.data === "live" ? "live" : "reconnecting…";
  });
  // First event of a new page: the recent knocks, then every knock since.
  source.addEventListener("init", (e) => {
    knocks.replaceChildren();
    for (const text of JSON.parse(e.data).knocks) append(knocks, text);
  });
  source.addEventListener("message", (e) => append(knocks, e.data));
  source.addEventListener("import", (e) => {
    if (notices) append(notices, JSON.parse(e.data).message);
  });

  // Submit without leaving the page; Django's CSRF token travels in the form.
  for (const form of document.querySelectorAll("#knock-form, #import-form")) {
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) return;
      form.reset();
      if (form.id === "import-form" && notices) {
        // A link to the job's page, where its progress streams.
        const { job, page } = await response.json();
        const item = document.createElement("li");
        const link = document.createElement("a");
        link.href = page;
        link.textContent = `Import #${job}`;
        item.append(link, " running…");
        notices.appendChild(item);
      }
    });
  }
}
