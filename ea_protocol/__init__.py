"""The Veilstop EA protocol's arithmetic, in the standard library only.

The server (``ea_gateway``) and the reference client (``ea_client``) both
import this package; neither imports the other. ``signing`` is the canonical
string and the signature, ``vectors.json`` the test vectors that
``docs/ea-protocol.md`` publishes, as data any implementation can load.
"""
