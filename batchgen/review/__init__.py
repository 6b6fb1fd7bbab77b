"""The morning review (issue 29): reviewers' decisions on last night's clips — approve, retake,
reject, a note, the take picked for a shot — recorded in the ledger (``ledger/decisions.py``).

* ``decide`` — deciding without a browser: by job reference (``batchgen review --set``) or from
  a CSV with the columns ``batchgen export`` writes (``--from``).
"""

from __future__ import annotations

from .decide import DecisionSummary, default_reviewer, from_csv, parse_verdict, pick, set_verdict

__all__ = ["DecisionSummary", "default_reviewer", "from_csv", "parse_verdict", "pick", "set_verdict"]
