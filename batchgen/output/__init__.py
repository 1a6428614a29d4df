"""Stage 5, the output: what a job leaves on disk, and the records people and scripts read.

Owns the job folder (``paths``: the name of every file in it; ``store``: images and atomic
writes; ``history``: earlier versions kept; ``durable``: fsync of folders), the sidecar
next to each item's images (``sidecar``), the journal a re-run reads (``journal``), the
one-run-per-folder lock (``lock``), and the derived images: what a variant is and its record
(``variants``), rendering one (``render``) and deriving an item's in a worker (``derive``).
Imports no other stage: every stage may read it.
"""
