"""Stage 5, the output: what a job leaves on disk, and the records people and scripts read.

Owns the job folder (``paths``: the name of every file in it; ``store``: images, history,
atomic writes), the sidecar next to each item's images (``sidecar``), the journal a re-run
reads (``journal``), the one-run-per-folder lock (``lock``) and the thumbnails (``thumbs``).
"""
