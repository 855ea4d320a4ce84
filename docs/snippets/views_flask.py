"""Jobs whose progress streams to the pages watching them (Flask)."""

import itertools
import threading
import time

from flask import Flask, abort

from wsgi_sse import broadcast, close
from wsgi_sse.contrib.flask import hold_stream

app = Flask(__name__)
progress = {}  # job id -> percent done
ids = itertools.count(1)


@app.post("/jobs")
def start_job():
    job = next(ids)
    progress[job] = 0
    threading.Thread(target=run, args=(job,), daemon=True).start()
    return {"job": job, "events": f"/jobs/{job}/events"}, 202


@app.get("/jobs/<int:job>/events")
def job_events(job):
    if job not in progress:
        abort(404)
    if progress[job] == 100:
        return "", 204  # done: a reconnecting EventSource stops here
    return hold_stream(f"job-{job}", initial={"progress": progress[job]})


def run(job):
    for percent in (25, 50, 75, 100):
        time.sleep(1)  # the work: one step a second
        progress[job] = percent
        broadcast({"progress": percent}, event="progress", channel=f"job-{job}")
    close(f"job-{job}")
