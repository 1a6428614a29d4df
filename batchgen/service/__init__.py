"""Stage 4, the service: the HTTP boundary to the image relay.

``client`` is the only module that imports aiohttp's client; every response and every
failure becomes a ``Generation`` or a ``RequestError`` with its class there. ``responses``
holds the pure functions that read a status, headers and body.
"""
