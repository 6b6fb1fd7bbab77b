"""review decisions: approve / retake / reject, a note, the shot's pick, who and when

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 16:00:00

Issue 29: the morning's decisions are data. One row per decision, never updated: a changed
mind is a new row and the latest (highest id) counts, so the history is the table itself.
A new table only: no job row is touched, the upgrade is instant whatever the ledger's size.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'decisions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('verdict', sa.String(length=16), nullable=True),
        sa.Column('pick', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('reviewer', sa.String(length=255), nullable=False),
        sa.Column('decided_at', sa.Float(), nullable=False),
        sa.CheckConstraint("verdict IN ('approve', 'retake', 'reject')", name=op.f('ck_decisions_verdict')),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_decisions_job_id_jobs')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_decisions')),
    )
    op.create_index('ix_decisions_job_id_id', 'decisions', ['job_id', 'id'], unique=False)


def downgrade() -> None:
    # The decisions go with their table: a downgraded batchgen has nowhere to keep them.
    op.drop_index('ix_decisions_job_id_id', table_name='decisions')
    op.drop_table('decisions')
