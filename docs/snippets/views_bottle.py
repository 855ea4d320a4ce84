"""Jobs whose progress streams to the pages watching them (Bottle)."""

import itertools
import threading
import time

from bottle import Bottle, HTTPResponse, abort

from wsgi_sse import broadcast, close
from wsgi_sse.contrib.bottle import hold_stream

app = Bottle()
progress = {}  # job id -> percent done
ids = itertools.count(1)


@app.post("/jobs")
def start_job():
    job = next(ids)
    progress[job] = 0
    threading.Thread(target=run, args=(job,), daemon=True).start()
    return HTTPResponse({"job": job, "events": f"/jobs/{job}/events"}, status=202)


@app.get("/jobs/<job:int>/events")
def job_events(job):
    if job not in progress:
        abort(404)
    if progress[job] == 100:
        return HTTPResponse(status=204)  # done: a reconnecting EventSource stops here
    return hold_stream(f"job-{job}", initial={"progress": progress[job]})


def run(job):
    for percent in (25, 50, 75, 100):
        time.sleep(1)  # the work: one step a second
        progress[job] = percent
        broadcast({"progress": percent}, event="progress", channel=f"job-{job}")
    close(f"job-{job}")
