"""Stage 2, the plan: item specs in, request records, fingerprints, prices and decisions out.

Pure: what each item will send (``plan``), what it may cost (``pricing``, ``estimate``),
which slice of a job a machine runs (``shard``) and what a re-run does with an item given
what the job folder already holds (``resume``). Sends nothing, writes nothing.
"""
