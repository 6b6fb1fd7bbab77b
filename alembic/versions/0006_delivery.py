"""delivery: where each clip was delivered, the runs' exit codes, a manifest's current jobs

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_JOB_COLUMNS = (
    ('delivered_url', sa.Text()), ('delivered_etag', sa.String(length=100)), ('delivered_at', sa.Float()),
    ('delivery_error', sa.Text()), ('pruned_at', sa.Float()),
)


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild): instant on SQLite even for a ledger of 100k jobs.
    for name, type_ in _JOB_COLUMNS:
        op.add_column('jobs', sa.Column(name, type_, nullable=True))
    op.add_column('runs', sa.Column('exit_code', sa.Integer(), nullable=True))
    op.create_table(
        'manifest_jobs',
        sa.Column('manifest', sa.Text(), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('manifest', 'key', name=op.f('pk_manifest_jobs')),
    )


def downgrade() -> None:
    op.drop_table('manifest_jobs')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('exit_code')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        for name, _ in reversed(_JOB_COLUMNS):
            batch_op.drop_column(name)
