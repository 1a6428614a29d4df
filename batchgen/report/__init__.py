"""Stage 6, the report: report.json and its summary, report.html, and merging shards.

Everything here is built from records (outcomes and the output's journal and sidecars);
nothing here sends a request.
"""
