"""When each periodic task last ran and how it ended, so `status` can show that beat and workers are alive.

Kept in the store (table `task_runs`, revision 0003) rather than in Redis so it works the same in the
embedded mode, and survives a broker restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from monitor.store import Store, TaskRunRow


@dataclass(frozen=True)
class TaskRun:
    name: str
    task: str
    started_at: datetime
    finished_at: datetime
    outcome: str
    detail: str | None = None


_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def record_run(store: Store, run: TaskRun) -> None:
    """An upsert, because two workers may finish runs of the same entry at the same moment."""
    insert = _INSERTS[store.engine.dialect.name]
    values = {"task": run.task, "last_started_at": run.started_at, "last_finished_at": run.finished_at,
              "last_outcome": run.outcome, "last_detail": run.detail}
    statement = insert(TaskRunRow).values(name=run.name, runs=1, **values)
    statement = statement.on_conflict_do_update(index_elements=[TaskRunRow.name],
                                                set_={**values, "runs": TaskRunRow.runs + 1})
    with store.transaction() as session:
        session.execute(statement)


def last_runs(store: Store) -> dict[str, TaskRunRow]:
    with store.transaction() as session:
        return {row.name: row for row in session.scalars(select(TaskRunRow))}
