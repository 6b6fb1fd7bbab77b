"""fleet rate: the API key's request rate a worker holds under --rpm auto (issue 31)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 16:30:00

On a cooperative (PostgreSQL) ledger the rate limit belongs to the API key, so the fleet learns
one rate: every worker writes the rate it holds with its heartbeat and paces at the lowest a
live worker holds. A nullable column: older rows and told rates leave it empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('rate_rpm', sa.Float(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): no rebuild (see 0011).
    op.drop_column('runs', 'rate_rpm')
