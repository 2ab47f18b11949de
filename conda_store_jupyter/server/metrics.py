"""``/metrics``: Prometheus text format (builds per state, environments, disk of the store).

Unauthenticated like upstream's: the numbers are aggregate counts with no names in them.
"""

from __future__ import annotations

from .. import api
from .base import BaseHandler

_HELP = {
    "environments": "Environments that are not deleted.",
    "disk_total": "Bytes of the filesystem holding the store.",
    "disk_free": "Free bytes on the filesystem holding the store.",
    "disk_usage": "Used bytes on the filesystem holding the store.",
}


class MetricsHandler(BaseHandler):
    async def get(self) -> None:
        values = await self.in_db(api.metrics, self.store)  # also statvfs of the store: off the loop
        lines = []
        for name, value in values.items():
            metric = f"conda_store_{name}"
            help_text = _HELP.get(name) or f"Builds in state {name.removeprefix('build_').upper()}."
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", f"{metric} {value}"]
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish("\n".join(lines) + "\n")


HANDLERS = [(r"/metrics", MetricsHandler)]
