"""Stage 5, the output: what a job leaves on disk, and the records people and scripts read.

Owns the job folder (``store``: images, sidecars, history, atomic writes), the journal a
re-run reads (``journal``), the one-run-per-folder lock (``lock``) and the thumbnails
(``thumbs``).
"""
