"""One job end to end: the stages in order, under a lock, with signals and budgets.

``jobs`` runs a manifest from load to report; ``reopen`` finds what a job folder was made
from (``retry``, ``redo``); ``reporting`` writes report.json, report.html and the stamp;
``unchanged`` decides a finished job has nothing left without planning it again;
``signals`` turns Ctrl-C and SIGTERM into a graceful stop; ``memory`` tunes the allocator
for the large buffers a run handles; ``stale`` counts the dependents a parent made again left
behind (what ``validate`` says).
"""
