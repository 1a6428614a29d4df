"""Stage 5, the output: what a job leaves on disk, and the records people and scripts read.

Owns the job folder (``paths``: the name of every file in it; ``store``: writing inside it;
``durable``: the one atomic writer, the sweep of what a crash left, fsync of folders;
``history``: earlier versions kept), the sidecar next to each item's images (``sidecar``),
the journal a re-run reads (``journal``), the one-run-per-folder lock (``lock``), and the
derived images: what a variant is and its record (``variants``), rendering one (``render``)
and deriving an item's in a worker (``derive``). Imports no other stage: every stage may read it.
"""
