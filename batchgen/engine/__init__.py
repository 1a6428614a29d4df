"""Stage 3, the engine: planned items through the service, under limits, into the output.

Owns bounded fan-out (``scheduler``), requests per minute (``ratelimit``), the retry
policy (``retry``), the budgets that stop a job (``guards``), fetching images answered as
links (``links``) and attempting each item (``runner``).
"""
