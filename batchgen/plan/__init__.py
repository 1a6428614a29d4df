"""Stage 2, the plan: item specs in, request records, fingerprints, prices and decisions out.

What each item will send (``plan``), what it may cost (``pricing``, ``estimate``), which
slice of a job a machine runs (``shard``), what a re-run does with an item given what the
job folder holds (``resume``), and that decision made for each item before anything is
scheduled (``triage``, which reads file sizes and reference digests). Sends nothing,
writes nothing.
"""
