"""retakes: the job a retake replaces, and the request fields a retake decision changes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 16:30:00

Issue 29: `batchgen retake` gives every clip marked retake a new take of the same request
(``jobs.retake_of``: the job it replaces); a reviewer may change request fields of the retake
(``decisions.changes``). Plain ADD COLUMNs: no table rebuild, instant on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('retake_of', sa.Integer(), nullable=True))
    op.add_column('decisions', sa.Column('changes', sa.Text(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite ≥ 3.35): no rebuild (see 0009, 0011).
    op.drop_column('decisions', 'changes')
    op.drop_column('jobs', 'retake_of')
