"""System shared memory for request inputs: the client writes a clip into a ``/dev/shm`` region that
the server registered, and the request carries only the region's name instead of ~10 MB of tensor
bytes over HTTP/gRPC.  Works only when client and server share a host (the server opens the same
``/dev/shm`` key).

One :class:`InputRegions` per connection: one region per input name, created and registered at first
use, reused by later requests of the same or a smaller size (registration is a round trip), replaced
by a bigger one when a request outgrows it.  :meth:`InputRegions.release` unregisters and destroys
every region, each step attempted even when an earlier one fails (a dead server must not leave
``/dev/shm`` files behind).  Names are unique per process and connection, so two clients on one
host, or two connections in one process, never share a region.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import numpy as np

SAME_HOST = "--shared-memory works only when the Triton server runs on this host (it opens the client's /dev/shm region); drop --shared-memory for a remote server"

_connection_numbers = itertools.count()


@dataclass
class _Region:
    name: str  # the server's name for it
    key: str  # the /dev/shm key, "/name"
    byte_size: int
    handle: object


class InputRegions:
    """The shared-memory regions of one connection's inputs; ``register``/``unregister`` are the client's
    (HTTP and gRPC take the same arguments, gRPC gets ``extra`` = its timeout)."""

    def __init__(self, client, call, extra: dict):
        import tritonclient.utils.shared_memory as shm  # the serve extra; Linux only

        self.shm, self.client, self.call, self.extra = shm, client, call, extra
        self.prefix = f"sta_deploy_{os.getpid()}_{next(_connection_numbers)}"
        self.regions: dict[str, _Region] = {}
        self.counter = itertools.count()

    def region_for(self, input_name: str, value: np.ndarray) -> _Region:
        """The region holding ``value`` (written now), registered with the server."""
        value = np.ascontiguousarray(value)
        region = self.regions.get(input_name)
        if region is None or region.byte_size < value.nbytes:
            if region is not None:
                self._drop(input_name)
            region = self._create(input_name, value.nbytes)
        self.shm.set_shared_memory_region(region.handle, [value])
        return region

    def _create(self, input_name: str, byte_size: int) -> _Region:
        name = f"{self.prefix}_{next(self.counter)}"
        handle = self.shm.create_shared_memory_region(name, f"/{name}", byte_size)
        region = _Region(name, f"/{name}", byte_size, handle)
        try:
            self.call(f"registering shared memory '{name}' ({SAME_HOST})", self.client.register_system_shared_memory, name, region.key, byte_size, **self.extra)
        except BaseException:
            self.shm.destroy_shared_memory_region(handle)
            raise
        self.regions[input_name] = region
        return region

    def _drop(self, input_name: str) -> list[str]:
        region = self.regions.pop(input_name)
        problems = []
        try:
            self.client.unregister_system_shared_memory(region.name, **self.extra)
        except Exception as error:  # a dead server: the local file must still go
            problems.append(f"unregistering {region.name}: {' '.join(str(error).split())[:200]}")
        finally:
            self.shm.destroy_shared_memory_region(region.handle)
        return problems

    def release(self) -> list[str]:
        """Unregister and destroy every region; the problems met (the files are gone regardless)."""
        problems = []
        for input_name in list(self.regions):
            problems += self._drop(input_name)
        return problems

    @property
    def names(self) -> list[str]:
        return [region.name for region in self.regions.values()]
