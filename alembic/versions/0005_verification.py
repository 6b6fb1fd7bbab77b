"""verification: what each delivered clip measured, its outcome, its pictures

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_COLUMNS = (
    ('verify', sa.String(length=16)), ('verify_detail', sa.Text()), ('m_duration', sa.Float()),
    ('m_width', sa.Integer()), ('m_height', sa.Integer()), ('m_fps', sa.Float()), ('m_codec', sa.String(length=32)),
    ('m_audio', sa.Boolean()), ('poster', sa.Text()), ('sheet', sa.Text()), ('verified_at', sa.Float()),
)


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild): instant on SQLite even for a ledger of 100k jobs.
    for name, type_ in _COLUMNS:
        op.add_column('jobs', sa.Column(name, type_, nullable=True))
    # Clips delivered before verification existed are "unchecked" (`batchgen verify` reads
    # them), not "never verified": a run after the upgrade must not re-read a 100k-clip archive.
    op.execute("UPDATE jobs SET verify = 'unchecked' WHERE state = 'done'")


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        for name, _ in reversed(_COLUMNS):
            batch_op.drop_column(name)
