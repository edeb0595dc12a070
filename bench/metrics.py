"""What a /metrics scrape's request counts cost on PostgreSQL at scale: a count over every
request (what genq did before) against the job counters it reads now, side by side.

    python bench/metrics.py [--requests 400000] [--jobs 40]

Starts a throwaway PostgreSQL (as the tests do); jobs are three quarters done. Prints the
median of 10 reads of each, twice in alternating order; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select, text, update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from genq.params import GenerationParams  # noqa: E402
from genq.store import NewRequest, create_job, session_factory, upgrade  # noqa: E402
from genq.store.db import make_engine  # noqa: E402
from genq.store.tables import Request  # noqa: E402
from genq.store.views import queue_depths, request_counts  # noqa: E402


def over_requests(session: Session) -> None:
    session.execute(select(Request.status, func.count()).group_by(Request.status)).all()
    session.execute(
        select(Request.model, func.count())
        .where(Request.status == "queued")
        .group_by(Request.model)
    ).all()


def from_counters(session: Session) -> None:
    request_counts(session)
    queue_depths(session)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400_000)
    parser.add_argument("--jobs", type=int, default=40)
    args = parser.parse_args()
    from tests.conftest import running_pg_server

    per_job = args.requests // args.jobs
    with running_pg_server() as pg:
        with pg.admin() as conn:
            conn.execute("CREATE DATABASE bench")
        url = pg.url("bench")
        upgrade(url)
        sessions = session_factory(make_engine(url))
        for _ in range(args.jobs):
            with sessions.begin() as session:
                create_job(
                    session,
                    tenant="t",
                    model="m",
                    params=GenerationParams(),
                    requests=[NewRequest(prompt=f"p{i}") for i in range(per_job)],
                )
        with sessions.begin() as session:  # the timing is the point, not the counters
            session.execute(
                update(Request).where(Request.idx < per_job * 3 // 4).values(status="succeeded")
            )
        with sessions.begin() as session:
            session.execute(text("ANALYZE"))
        reads = [("count over requests", over_requests), ("job counters", from_counters)]
        for name, read in reads + reads[::-1]:
            times = []
            for _ in range(10):
                start = time.perf_counter()
                with sessions.begin() as session:
                    read(session)
                times.append(time.perf_counter() - start)
            print(
                f"{name:20s} median {statistics.median(times) * 1000:8.2f} ms "
                f"({per_job * args.jobs} requests in {args.jobs} jobs)"
            )


if __name__ == "__main__":
    main()
