"""faultprint: fault fingerprints of telecom network nodes, served over gRPC.

The installed packages: ``faultprint.v1`` (the API's generated messages and stubs),
``faultprint.client`` (the base install), and with the ``server`` and ``trainer`` extras
``faultprint.server``, ``faultprint.trainer``, ``faultprint.encoder``, ``faultprint.registry``
and ``faultprint.traffic``.
"""

from importlib import metadata

try:
    __version__ = metadata.version("faultprint")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
