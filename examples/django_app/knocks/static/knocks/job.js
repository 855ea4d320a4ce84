// A job's page: its progress, from the job's own stream.  The stream is
// served by a Django view (knocks.views.job_events) that checks the job is
// the user's, then holds the job's channel.
(() => {
  const script = document.currentScript;
  const bar = document.getElementById("progress");
  const status = document.getElementById("job-status");
  let received = 0;

  const source = new EventSource(script.dataset.events);
  source.addEventListener("progress", (e) => {
    const { imported, total } = JSON.parse(e.data);
    bar.max = total;
    bar.value = imported;
    status.textContent = `Imported ${imported} of ${total}`;
    bar.dataset.events = String(++received);
  });
  // The job's last event.  Close the EventSource here: when the server ends
  // the stream, a browser would otherwise reconnect (and be answered 204).
  source.addEventListener("done", (e) => {
    const { contacts } = JSON.parse(e.data);
    bar.value = bar.max;
    status.textContent = `Done: ${contacts} contacts`;
    source.close();
    document.body.dataset.stream = "closed";
  });
  // Closed by the server (204: the job ended before this page listened):
  // the page as the server renders it now shows the result.
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) location.reload();
  };
})();
