"""stop flag and uploads

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 15:18:32.979640
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('uploads',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('file_id', sa.String(length=100), nullable=True),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('uploaded_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_uploads'))
    )
    # Plain ADD COLUMN, not a batch rebuild: rebuilding `runs` on SQLite trips the foreign key
    # from jobs.run_id (PRAGMA foreign_keys=ON cannot be lifted inside the migration's transaction).
    op.add_column('runs', sa.Column('stop_requested', sa.Boolean(), server_default=sa.false(), nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('stop_requested')

    op.drop_table('uploads')
