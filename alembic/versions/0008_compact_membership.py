"""compact ledger rows: manifest membership by job id (WITHOUT ROWID on SQLite), task-id index
on the events that carry one

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 23:00:00

A job's `manifest_jobs` row held the 64-character key twice on SQLite (the table and its
primary-key index, ~200 bytes a job); it is now the job's id inside the primary key's own
B-tree. `ix_events_task_id` indexed every event, three in four without a task id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def _pk(suffix: str) -> str:
    """The new table's primary-key name: final on SQLite (names are per table there); on
    PostgreSQL it names an index, unique per schema, so it is renamed once the old one is gone."""
    return 'pk_manifest_jobs' if op.get_context().dialect.name == 'sqlite' else f'pk_manifest_jobs_{suffix}'


def upgrade() -> None:
    op.create_table(
        'manifest_jobs_new',
        sa.Column('manifest', sa.Text(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('manifest', 'job_id', name=_pk('new')),
        sqlite_with_rowid=False,
    )
    # Members whose job is gone cannot exist (jobs are never deleted); the join drops nothing.
    op.execute("INSERT INTO manifest_jobs_new (manifest, job_id) "
               "SELECT m.manifest, j.id FROM manifest_jobs m JOIN jobs j ON j.key = m.key")
    op.drop_table('manifest_jobs')
    op.rename_table('manifest_jobs_new', 'manifest_jobs')
    if op.get_context().dialect.name == 'postgresql':  # SQLite keeps the name it was created with
        op.execute("ALTER TABLE manifest_jobs RENAME CONSTRAINT pk_manifest_jobs_new TO pk_manifest_jobs")
    op.drop_index('ix_events_task_id', table_name='events')
    op.create_index('ix_events_task_id', 'events', ['task_id'], unique=False,
                    sqlite_where=sa.text('task_id IS NOT NULL'), postgresql_where=sa.text('task_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_events_task_id', table_name='events')
    op.create_index('ix_events_task_id', 'events', ['task_id'], unique=False)
    op.create_table(
        'manifest_jobs_old',
        sa.Column('manifest', sa.Text(), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('manifest', 'key', name=_pk('old')),
    )
    op.execute("INSERT INTO manifest_jobs_old (manifest, key) "
               "SELECT m.manifest, j.key FROM manifest_jobs m JOIN jobs j ON j.id = m.job_id")
    op.drop_table('manifest_jobs')
    op.rename_table('manifest_jobs_old', 'manifest_jobs')
    if op.get_context().dialect.name == 'postgresql':
        op.execute("ALTER TABLE manifest_jobs RENAME CONSTRAINT pk_manifest_jobs_old TO pk_manifest_jobs")
