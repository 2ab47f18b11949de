"""``/api/v1/package/`` and ``/api/v1/channel/``: what the store knows about (public metadata)."""

from __future__ import annotations

from .. import api
from . import serialize
from .base import BaseHandler, serialized


class PackageListHandler(BaseHandler):
    async def get(self) -> None:
        page = self.page()
        filters = dict(search=self.query("search"), exact=self.query_bool("exact"),
                       distinct_on=self.query_list("distinct_on"))

        def work(db):
            return serialized(api.list_packages(db, page, **filters), serialize.package)

        self.ok_page(await self.in_db(work))


class ChannelListHandler(BaseHandler):
    async def get(self) -> None:
        page = self.page()
        self.ok_page(await self.in_db(lambda db: serialized(api.list_channels(db, page), serialize.channel)))


HANDLERS = [
    (r"/api/v1/package/", PackageListHandler),
    (r"/api/v1/channel/", ChannelListHandler),
]
