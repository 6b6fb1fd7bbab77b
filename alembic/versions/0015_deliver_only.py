"""deliver_only: a destination owed only the clips a reviewer approved

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 16:55:00

Issue 29: `--deliver-only approved` (or `deliver: {to: ..., only: approved}`) records, with
where a clip is owed, that it is owed only once approved (and, where its shot has a pick, only
the pick). Kept per clip like ``deliver_to``, so `batchgen deliver` and the next run deliver a
clip approved later and nothing else. Plain ADD COLUMN: instant on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('deliver_only', sa.String(length=16), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): no rebuild (see 0009, 0011).
    op.drop_column('jobs', 'deliver_only')
