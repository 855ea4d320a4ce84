"""
Scale out over PostgreSQL: share broadcasts between processes through the
database the application already has, and publish inside its transactions.

Needs the ``postgres`` extra (``pip install wsgi-sse[postgres]``, psycopg 3).
Servers turn it on with ``make_application(app,
backplane_url="postgresql://...")`` or ``WSGI_SSE_BACKPLANE_URL``.  Code
publishes inside its own transaction with L{publish}: every process
delivers the event once the transaction commits, none if it rolls back::

    from wsgi_sse import postgres

    with psycopg.connect(url) as conn:
        conn.execute("UPDATE jobs SET done = true WHERE id = %s", (job_id,))
        postgres.publish(conn, {"job": job_id}, event="done", channel="jobs")
"""

from ._postgres import DEFAULT_TABLE, PostgresBackplane, django_conninfo, ensure_schema, publish

__all__ = ("DEFAULT_TABLE", "PostgresBackplane", "django_conninfo", "ensure_schema", "publish")
