"""``/api/v1/package/`` and ``/api/v1/channel/``: what the store knows about (public metadata)."""

from __future__ import annotations

from .. import api
from . import serialize
from .base import BaseHandler


class PackageListHandler(BaseHandler):
    def get(self) -> None:
        with self.store.session() as db:
            result = api.list_packages(db, self.page(), search=self.query("search"),
                                       exact=self.query_bool("exact"), distinct_on=self.query_list("distinct_on"))
            self.ok_page(result, serialize.package)


class ChannelListHandler(BaseHandler):
    def get(self) -> None:
        with self.store.session() as db:
            self.ok_page(api.list_channels(db, self.page()), serialize.channel)


HANDLERS = [
    (r"/api/v1/package/", PackageListHandler),
    (r"/api/v1/channel/", ChannelListHandler),
]
