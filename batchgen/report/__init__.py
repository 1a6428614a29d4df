"""Stage 6, the report: report.json (``record``) and its summary (``report``), report.html
(``gallery``, its cards from a folder's records in ``cards``), and merging shards (``merge``).

Everything here is built from records (outcomes and the output's journal and sidecars);
nothing here sends a request.
"""
