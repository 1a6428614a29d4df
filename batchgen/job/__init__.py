"""One job end to end: the stages in order, under a lock, with signals and budgets.

``jobs`` runs a manifest from load to report; ``unchanged`` decides a finished job has
nothing left without planning it again; ``memory`` tunes the allocator for the large
buffers a run handles.
"""
