"""breakers: a breaker per model, shared by a fleet's workers (issue 30)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 17:00:00

A new table, nothing else changes: a model whose tasks keep failing upstream has a row here
while its breaker is open (``closed_at`` NULL); every worker reads it before claiming, and
``batchgen status`` shows it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('breakers',
                    sa.Column('model', sa.String(length=100), nullable=False),
                    sa.Column('why', sa.Text(), nullable=False),
                    sa.Column('opened_at', sa.Float(), nullable=False),
                    sa.Column('reopens_at', sa.Float(), nullable=False),
                    sa.Column('closed_at', sa.Float(), nullable=True),
                    sa.PrimaryKeyConstraint('model', name=op.f('pk_breakers')))


def downgrade() -> None:
    op.drop_table('breakers')
