"""A run's pipeline: the stages a job goes through, one room (module) per stage (issue 20: the
scheduler is being split into them).

* ``pace``     — ``poll_delay`` and ``PaceBook``: when to poll, learnt per model (pure: no I/O).
"""
