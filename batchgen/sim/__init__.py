"""The built-in simulator: a real HTTP server on 127.0.0.1 that behaves like the relay.

Imported only by the commands that start it (``batchgen simulator`` and ``--simulate``),
so no other command loads aiohttp's server.
"""
