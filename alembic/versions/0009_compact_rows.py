"""compact job rows: each request shape once, membership by manifest id, the job key and
the file's sha256 as 32 raw bytes, no events task-id index, the worker-id index partial

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 02:00:00

Issue 21: a million-job ledger at ≤ 1 KB a job.

- A job's key was 64 hex characters in its row and again in the key's unique index, its
  sha256 64 more: as raw bytes (BLOB, bytea; ``schema.Digest`` gives callers the same hex)
  they are half that.
- What the requests share (all but the prompt: model, resolution, defaults) is kept once per
  distinct shape in ``request_shapes``; a row keeps its prompt's JSON text and the shape's id
  (``batchgen/ledger/shapes.py``; the request read back is the very bytes recorded).
- Membership names its manifest by an id (``manifests``), not by its path in every row.
- ``ix_events_task_id`` served no query (the one reader of events' task ids, the audit,
  reads them all); ``ix_jobs_worker_id`` indexed every job although only leased jobs
  (PostgreSQL workers) have a worker: now only those.

SQLite cannot change a column's type in place: the jobs table is rebuilt (batch mode). Its
rebuild drops the old table, which the events' foreign key refuses while events refer to it
(the ledger's connections enforce foreign keys, and a migration runs inside one transaction,
where that cannot be switched off): the events are set aside in a plain copy, their table is
dropped and made again once jobs is back, with every id. SQLite 3.40 (Debian 12) has no
``unhex()``: the driver connection lends Python's for the conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import json

import sqlalchemy as sa
from alembic import op

from batchgen.errors import LedgerError
from batchgen.ledger.shapes import MAX_SHAPES, split, whole


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_PAGE = 5000
_EVENT_COLUMNS = 'id, job_id, at, from_state, to_state, task_id, detail'


def _unhex(value: object) -> object:
    return bytes.fromhex(value) if isinstance(value, str) else value


def _hex(value: object) -> object:
    return bytes(value).hex() if isinstance(value, (bytes, memoryview)) else value


def _sqlite_function(name: str, fn: Callable[[object], object]) -> None:
    driver = op.get_bind().connection.driver_connection
    assert driver is not None  # an open connection: the migration runs in its transaction
    driver.create_function(name, 1, fn, deterministic=True)


def _set_events_aside() -> None:
    op.execute(f"CREATE TABLE _events_0009 AS SELECT {_EVENT_COLUMNS} FROM events")
    op.drop_table('events')


def _events_back() -> None:
    op.create_table(
        'events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('at', sa.Float(), nullable=False),
        sa.Column('from_state', sa.String(length=16), nullable=True),
        sa.Column('to_state', sa.String(length=16), nullable=False),
        sa.Column('task_id', sa.String(length=100), nullable=True),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name='fk_events_job_id_jobs'),
        sa.PrimaryKeyConstraint('id', name='pk_events'),
    )
    op.execute(f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM _events_0009 ORDER BY id")
    op.drop_table('_events_0009')
    op.create_index('ix_events_job_id', 'events', ['job_id'], unique=False)


def _task_index() -> None:
    op.create_index('ix_events_task_id', 'events', ['task_id'], unique=False,
                    sqlite_where=sa.text('task_id IS NOT NULL'), postgresql_where=sa.text('task_id IS NOT NULL'))


def _rebuild_jobs(to: sa.types.TypeEngine[Any], was: sa.types.TypeEngine[Any], pg_using: str,
                  shape_id: bool) -> None:
    """The digest columns retyped, and the shape_id column added (or dropped)."""
    if op.get_context().dialect.name == 'postgresql':
        op.alter_column('jobs', 'key', type_=to, existing_type=was, existing_nullable=False,
                        postgresql_using=pg_using.format(col='key'))
        op.alter_column('jobs', 'sha256', type_=to, existing_type=was, existing_nullable=True,
                        postgresql_using=pg_using.format(col='sha256'))
        if shape_id:
            op.add_column('jobs', sa.Column('shape_id', sa.Integer(), nullable=True))
        else:
            op.drop_column('jobs', 'shape_id')
        return
    _set_events_aside()
    with op.batch_alter_table('jobs', recreate='always') as batch_op:
        batch_op.alter_column('key', type_=to, existing_type=was, existing_nullable=False)
        batch_op.alter_column('sha256', type_=to, existing_type=was, existing_nullable=True)
        if shape_id:
            batch_op.add_column(sa.Column('shape_id', sa.Integer(), nullable=True), insert_after='request')
        else:
            batch_op.drop_column('shape_id')
    _events_back()


def _pages(sql: str) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of ``sql`` (selecting id first, with ``id > :after``) a page at a time, by id."""
    c = op.get_bind()
    after = 0
    while True:
        rows = [tuple(r) for r in c.execute(sa.text(sql + " ORDER BY id LIMIT :n"), {"after": after, "n": _PAGE})]
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _shape_requests() -> None:
    """Every request with a shared shape stored as its part and the shape's id (shapes.split:
    the part is the recorded text between the shape's halves, so nothing is re-encoded)."""
    c = op.get_bind()
    ids: dict[str, int] = {}
    for rows in _pages("SELECT id, request FROM jobs WHERE id > :after"):
        updates = []
        for job_id, text in rows:
            try:
                request = json.loads(text)
            except ValueError:
                continue
            part = split(request, text) if isinstance(request, dict) else None
            if part is None:
                continue
            if part[0] not in ids:
                if len(ids) >= MAX_SHAPES:
                    continue
                c.execute(sa.text("INSERT INTO request_shapes (body) VALUES (:b)"), {"b": part[0]})
                ids[part[0]] = c.execute(sa.text("SELECT id FROM request_shapes WHERE body = :b"),
                                         {"b": part[0]}).scalar_one()
            updates.append({"i": job_id, "r": part[1], "s": ids[part[0]]})
        if updates:
            c.execute(sa.text("UPDATE jobs SET request = :r, shape_id = :s WHERE id = :i"), updates)


def _whole_requests() -> None:
    """Every request back to its whole text (the downgrade)."""
    c = op.get_bind()
    bodies: dict[int, str] = {int(i): str(b) for i, b in c.execute(sa.text("SELECT id, body FROM request_shapes"))}
    for rows in _pages("SELECT id, request, shape_id FROM jobs WHERE shape_id IS NOT NULL AND id > :after"):
        c.execute(sa.text("UPDATE jobs SET request = :r WHERE id = :i"),
                  [{"i": r[0], "r": whole(bodies[r[2]], r[1])} for r in rows])


def _convert_on_sqlite(name: str, fn: Callable[[object], object]) -> None:
    """Each value converted before the rebuild: SQLite keeps a value's own storage class
    whatever the declared type, and the rebuild's CAST to the new type leaves it as it is."""
    if op.get_context().dialect.name == 'sqlite':
        _sqlite_function(name, fn)
        op.execute(f"UPDATE jobs SET key = {name}(key), sha256 = {name}(sha256)")


def _members(new_column: sa.Column[Any], select_sql: str) -> None:
    """manifest_jobs rebuilt with ``new_column`` (the manifest's id, or its path) and the job's."""
    pg = op.get_context().dialect.name == 'postgresql'
    # On PostgreSQL a primary key names an index, unique per schema: renamed once the old is gone.
    op.create_table(
        'manifest_jobs_new',
        new_column,
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(new_column.name, 'job_id', name='pk_manifest_jobs_new' if pg else 'pk_manifest_jobs'),
        sqlite_with_rowid=False,
    )
    op.execute(f"INSERT INTO manifest_jobs_new ({new_column.name}, job_id) {select_sql}")
    op.drop_table('manifest_jobs')
    op.rename_table('manifest_jobs_new', 'manifest_jobs')
    if pg:
        op.execute("ALTER TABLE manifest_jobs RENAME CONSTRAINT pk_manifest_jobs_new TO pk_manifest_jobs")


def _texts_by_id(table: str, column: str) -> None:
    """A table of distinct texts (manifest paths, request shapes) that rows name by id."""
    op.create_table(
        table,
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column(column, sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=f'pk_{table}'),
        sa.UniqueConstraint(column, name=f'uq_{table}_{column}'),
    )


def _members_by_manifest_id() -> None:
    _texts_by_id('manifests', 'path')
    op.execute("INSERT INTO manifests (path) SELECT DISTINCT manifest FROM manifest_jobs ORDER BY manifest")
    _members(sa.Column('manifest_id', sa.Integer(), nullable=False),
             "SELECT m.id, j.job_id FROM manifest_jobs j JOIN manifests m ON m.path = j.manifest")


def _members_by_path() -> None:
    _members(sa.Column('manifest', sa.Text(), nullable=False),
             "SELECT m.path, j.job_id FROM manifest_jobs j JOIN manifests m ON m.id = j.manifest_id")
    op.drop_table('manifests')


def _refuse_other_digests() -> None:
    """Every key and sha256 batchgen wrote is 64 lowercase hex characters; anything else would
    not read back as it was, so the migration stops before changing anything."""
    bad = ("length({col}) <> 64 OR {col} GLOB '*[^0-9a-f]*'" if op.get_context().dialect.name == 'sqlite'
           else "{col} !~ '^[0-9a-f]{{64}}$'")
    for col in ('key', 'sha256'):
        row = op.get_bind().execute(sa.text(f"SELECT id, {col} FROM jobs WHERE {bad.format(col=col)} LIMIT 1")).first()
        if row is not None:
            raise LedgerError(f"ledger: job {row[0]}: its {col} {row[1]!r} is not a sha256 in lowercase hex (this "
                               "ledger holds a row batchgen did not write); nothing was changed")


def upgrade() -> None:
    _refuse_other_digests()
    op.drop_index('ix_events_task_id', table_name='events')
    _texts_by_id('request_shapes', 'body')
    op.drop_index('ix_jobs_worker_id', table_name='jobs')
    _convert_on_sqlite('batchgen_unhex', _unhex)
    _rebuild_jobs(sa.LargeBinary(), sa.String(length=64), "decode({col}, 'hex')", shape_id=True)
    _shape_requests()
    _members_by_manifest_id()
    op.create_index('ix_jobs_worker_id', 'jobs', ['worker_id'], unique=False,
                    sqlite_where=sa.text('worker_id IS NOT NULL'), postgresql_where=sa.text('worker_id IS NOT NULL'))


def downgrade() -> None:
    _members_by_path()
    op.drop_index('ix_jobs_worker_id', table_name='jobs')
    _whole_requests()
    _convert_on_sqlite('batchgen_hex', _hex)
    _rebuild_jobs(sa.String(length=64), sa.LargeBinary(), "encode({col}, 'hex')", shape_id=False)
    op.drop_table('request_shapes')
    _task_index()
    op.create_index('ix_jobs_worker_id', 'jobs', ['worker_id'], unique=False)
