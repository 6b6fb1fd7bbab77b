"""finish_by: the deadline a run works to (run --finish-by, issue 30)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 19:00:00

Each run (a worker, on PostgreSQL) records the deadline it works to, as epoch seconds; a worker
of a fleet started without --finish-by joins the earliest deadline a live worker of the same
manifest holds, and `batchgen status` says whether the night is on track for it. A nullable
column: older rows and runs without a deadline leave it empty. Plain ADD COLUMN: instant on
SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('finish_by', sa.Float(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): no rebuild (see 0011).
    op.drop_column('runs', 'finish_by')
