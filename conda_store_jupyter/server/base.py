"""``BaseHandler``: what every REST handler shares, so resource handlers stay a few lines each.

- **Envelope.** Success is ``{"status": "ok", "data": ..., "message": ...}`` (listings add
  ``page``/``size``/``count``); every error, including unknown routes, 405 and oversized
  bodies, is ``{"status": "error", "data": null, "message": "..."}``. Exceptions from
  :mod:`conda_store_jupyter.exceptions` carry their own HTTP status; anything unexpected is a
  logged 500 with a generic message (never a traceback to the client).
- **Credentials** (``Authorization: Bearer|token``, Basic with the token as password, or the
  ``conda-store-auth`` cookie) are turned into an ``Identity`` by the ``AuthenticationBackend``
  before the method runs. No credential means anonymous (endpoints answer 401 where
  authentication is required); a presented credential that is not valid is a 401 on every
  route, saying what is wrong with it (a dead session cookie is also cleared).
- **XSRF** applies to cookie-authenticated writes only (like JupyterHub's ``APIHandler``): a
  cross-site page can make the browser send the cookie, but it cannot set a header or read our
  xsrf cookie. Token-authenticated clients never need it.
- **Body limit.** Bodies over ``CondaStoreServer.max_body_size`` get an enveloped 413. The
  connection-level cap (``max_buffer_size``, where tornado just closes the socket) is set well
  above it so clients normally see the 413. (Not ``stream_request_body``: an error raised before
  the body is read resets the connection, and the client never sees the answer.)
- **Text is valid Unicode.** JSON may spell lone surrogates (``"\\udfff"``); no database can
  store them, so a body holding one is a 400 naming the field (query strings are decoded strictly
  by tornado, which answers 400 itself).
- **No blocking on the event loop.** Database work runs in :meth:`BaseHandler.in_db`, Redis and
  storage calls in :func:`run_sync`: a slow query or a locked SQLite file delays its own request,
  never every other one. Handlers serialize inside the unit of work (rows stay in the thread).
- **Upstream client quirks**: its URLs get a ``/`` appended after the query string, so one
  trailing ``/`` is stripped from every query value (no valid name, id or enum ends with one).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import re
from typing import Any, Callable, Iterable, Iterator, TypeVar

from tornado import httputil, web
from tornado.ioloop import IOLoop

from .. import api
from ..auth.rbac import Identity, Permission
from ..exceptions import AuthenticationError, CondaStoreError, ValidationError
from ..schema import invalid_unicode_at

E = TypeVar("E", bound=enum.Enum)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ID_RE = re.compile(r"^[0-9]{1,18}$")
_DIGITS_RE = re.compile(r"^[0-9]+$")  # ASCII only: int() would also take "١٢" or "1_000"
MAX_ID = 2**63 - 1
"""Largest id or count a query may name (the databases' 64-bit integers)."""
MAX_PAGE = 10**12
"""Largest page number accepted (page * max_page_size stays far inside int64)."""


def _default(value: Any) -> Any:
    """JSON for the types serializers hand us (datetimes are formatted there; enums here)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_R = TypeVar("_R")


async def run_sync(fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
    """``fn(*args, **kwargs)`` on the default executor: blocking IO (storage, Redis, DB) off the loop."""
    return await IOLoop.current().run_in_executor(None, functools.partial(fn, *args, **kwargs))


class BaseHandler(web.RequestHandler):
    """Base of every ``/api/v1`` handler (see the module docstring for what it guarantees)."""

    identity: Identity
    cookie_authenticated: bool = False

    # -- shared objects (set once on the Application by CondaStoreServer) -----------------------
    @property
    def store(self):
        return self.settings["conda_store"]

    @property
    def auth(self):
        return self.settings["authentication"]

    @property
    def server(self):
        return self.settings["conda_store_server"]

    # -- request lifecycle ------------------------------------------------------------------------
    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    def check_xsrf_cookie(self) -> None:
        """Cookie-authenticated writes a cross-site page could forge must carry the XSRF token.

        A page on another site can only send "simple" requests without our consent: POST with a
        form or text body. JSON bodies and PUT/DELETE need a CORS preflight, which this server
        never grants (no CORS headers), and the cookie is SameSite=Strict on top. So those are
        exempt, which lets cookie clients such as the upstream ``conda-store`` client's basic
        mode write; form and text POSTs are checked (called from :meth:`prepare`).
        """
        if not (self.cookie_authenticated and self.request.method in WRITE_METHODS):
            return
        media_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if self.request.method in ("PUT", "PATCH", "DELETE") or media_type == "application/json":
            return
        super().check_xsrf_cookie()

    invalid_credentials_ok: bool = False
    """Handlers that work without a valid credential whatever the request carries (login, logout)
    set this: an invalid one makes them anonymous instead of a 401."""

    async def prepare(self) -> None:
        if len(self.request.body) > self.server.max_body_size:
            raise web.HTTPError(413, f"request body is larger than {self.server.max_body_size} bytes")
        try:
            self.identity = await self._authenticate_async()
        except AuthenticationError:
            self._rejected = True
            if self._invalid_cookie:
                # A dead session: stop the browser sending it, then answer 401 (or go on anonymous).
                self.clear_cookie(self.auth.cookie_name, path=self.server.base_url)
            if not self.invalid_credentials_ok:
                raise
            self.identity = self.auth.anonymous_identity()
        self.check_xsrf_cookie()

    _invalid_cookie = False  # the request's only credential was a session cookie that is not valid
    _rejected = False  # the request presented a credential that is not valid

    async def _authenticate_async(self) -> Identity:
        """One credential per request: the Authorization header wins over the cookie.

        No credential: anonymous. A presented one that is not valid: AuthenticationError (401),
        never anonymous, so a mistyped or revoked token is reported as such.
        """
        authorization = self.request.headers.get("Authorization")
        if authorization and authorization.strip():
            return await self.auth.authenticate_request_async(cookie=None, authorization=authorization)
        cookie = self.get_cookie(self.auth.cookie_name)
        try:
            identity = await run_sync(self.auth.authenticate_request, cookie=cookie, authorization=None)
        except AuthenticationError:
            self._invalid_cookie = True
            raise
        self.cookie_authenticated = bool(cookie) and identity.authenticated
        return identity

    # -- body -------------------------------------------------------------------------------------
    @property
    def body(self) -> bytes:
        return self.request.body

    def json_body(self, *, required: bool = True) -> dict[str, Any]:
        """The body as a JSON object (empty bodies are ``{}`` unless ``required``)."""
        raw = self.body
        if not raw.strip():
            if required:
                raise ValidationError("request body must be a JSON object")
            return {}
        try:
            data = json.loads(raw)
        except RecursionError:
            raise ValidationError("request body is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValidationError(f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValidationError("request body must be a JSON object")
        where = invalid_unicode_at(data)
        if where is not None:
            raise ValidationError(f"{where}: not valid Unicode (a lone surrogate such as \\udfff); "
                                  "send UTF-8 text")
        return data

    def form_body(self) -> dict[str, str]:
        """``application/x-www-form-urlencoded`` or multipart fields (first value of each)."""
        args: dict[str, list[bytes]] = {}
        files: dict[str, list] = {}
        httputil.parse_body_arguments(self.request.headers.get("Content-Type", ""), self.body, args, files)
        return {k: v[0].decode("utf-8", "replace") for k, v in args.items() if v}

    # -- query ------------------------------------------------------------------------------------
    def query(self, name: str, default: str | None = None) -> str | None:
        values = self.query_list(name)
        return values[-1] if values else default

    def query_list(self, name: str) -> list[str]:
        """All values of ``name``; one trailing ``/`` removed (the upstream client appends it)."""
        out = []
        for value in self.get_query_arguments(name):
            value = value[:-1] if value.endswith("/") else value
            if value:
                out.append(value)
        return out

    def query_int(self, name: str, default: int | None = None, *, minimum: int = 1,
                  maximum: int = MAX_ID) -> int | None:
        value = self.query(name)
        if value is None:
            return default
        digits = value.lstrip("0") or "0"
        if not _DIGITS_RE.match(value) or (len(digits) <= 30 and int(digits) < minimum):
            raise ValidationError(f"query parameter {name!r} must be an integer >= {minimum}, got {value[:40]!r}")
        if len(digits) > 30 or int(digits) > maximum:  # int() of thousands of digits is refused/slow
            raise ValidationError(f"query parameter {name!r} is too large: the maximum is {maximum}, "
                                  f"got {value[:40]!r}{'...' if len(value) > 40 else ''}")
        return int(digits)

    def query_enum(self, name: str, kind: type[E]) -> E | None:
        value = self.query(name)
        if value is None:
            return None
        try:
            return kind(value.upper())
        except ValueError:
            choices = ", ".join(k.value for k in kind)
            raise ValidationError(f"query parameter {name!r} must be one of {choices}") from None

    def query_bool(self, name: str) -> bool:
        """Upstream semantics: any non-empty value except an explicit false means true."""
        value = self.query(name)
        return bool(value) and value.lower() not in ("0", "false", "no", "off")

    def page(self) -> api.Page:
        """v1 paging. With neither ``page`` nor ``size`` everything is returned (see api.paginate)."""
        cap = self.server.max_page_size
        page = self.query_int("page", 1, maximum=MAX_PAGE)  # offsets must fit 64-bit integers
        size = self.query_int("size")
        if size is not None:
            size = min(size, cap)
        elif self.query("page") is not None:
            size = cap
        order = (self.query("order") or "asc").lower()
        return api.Page(page=page, size=size, sort_by=tuple(self.query_list("sort_by")),
                        order=order if order in ("asc", "desc") else "asc", max_size=cap)

    # -- database ---------------------------------------------------------------------------------
    async def in_db(self, fn: Callable[..., _R], *args: Any) -> _R:
        """``fn(db, *args)`` in one transaction on the executor (see the module docstring).

        Committed on success; re-run when it lost a get-or-create race (:func:`api.in_transaction`).
        ``fn`` returns plain data: serialize inside it, since ORM rows would load lazily later.
        """
        return await run_sync(api.in_transaction, self.store, fn, *args)

    # -- authorization ----------------------------------------------------------------------------
    def authorize(self, db, permission: Permission, arn: str) -> None:
        """401 for anonymous callers, 403 for authenticated ones (raised by the backend)."""
        self.auth.authorize(db, self.identity, permission, arn)

    def require_authenticated(self) -> None:
        if not self.identity.authenticated:
            raise AuthenticationError("request not authenticated")
        if getattr(self.identity, "anonymous_grant", False):  # minted without credentials
            raise AuthenticationError("request not authenticated: this token was issued without credentials "
                                      "and can do only what anonymous requests can; log in or use a user's token")

    def bindings(self, db):
        """The caller's effective role bindings (token/user bindings + DB namespace mappings)."""
        return self.auth.bindings_for(db, self.identity)

    # -- responses --------------------------------------------------------------------------------
    def write_json(self, payload: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(payload, default=_default))

    def ok(self, data: Any = None, message: str | None = None, status: int = 200) -> None:
        self.write_json({"status": "ok", "data": data, "message": message}, status)

    def ok_page(self, result: api.PageResult) -> None:
        """A listing whose items are already serialized (see :func:`serialized`)."""
        self.write_json({
            "status": "ok",
            "data": result.items,
            "message": None,
            "page": result.page,
            "size": result.size,
            "count": result.count,
        })

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        data = None
        if isinstance(exc, CondaStoreError) and exc.status_code != 500:
            status_code, message = exc.status_code, str(exc)  # incl. 503 "queue unavailable"
            data = getattr(exc, "data", None)  # e.g. the state of a pending artifact
            for name, value in getattr(exc, "headers", {}).items():  # e.g. Retry-After
                self.set_header(name, value)
        elif isinstance(exc, web.HTTPError):
            message = exc.log_message % exc.args if exc.log_message and exc.args else exc.log_message
            message = message or self._reason or httputil.responses.get(status_code, "error")
            if status_code == 403 and ("_xsrf" in message or "XSRF" in message):
                message = f"{message}: cookie-authenticated writes need the X-XSRFToken header"
        elif status_code >= 500:
            message = "internal server error"
        else:
            message = self._reason
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        if status_code == 401:
            # RFC 6750: a presented credential that is not valid is ``error="invalid_token"``.
            challenge = 'Bearer realm="conda-store"'
            self.set_header("WWW-Authenticate", challenge + (', error="invalid_token"' if self._rejected else ""))
        self.finish(json.dumps({"status": "error", "data": data, "message": message}))

    def log_exception(self, typ, value, tb) -> None:
        # Answers to bad requests are not server failures, and the access log already has their
        # line (status, method, URL): only debug detail here, never a second warning per request.
        if isinstance(value, CondaStoreError) and value.status_code != 500:
            self.log.debug("%s %s -> %d %s", self.request.method, self.request.path, value.status_code, value)
            self.set_status(value.status_code)  # so the access log shows the real status
            return
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            self.log.debug("%s %s -> %d %s", self.request.method, self.request.path, value.status_code,
                           value.log_message % value.args if value.log_message and value.args else value.log_message)
            return
        super().log_exception(typ, value, tb)

    @property
    def log(self):
        return self.server.log


def serialized(result: api.PageResult, serialize: Callable[[Any], Any]) -> api.PageResult:
    """``result`` with its rows serialized (inside the unit of work, where rows may still load)."""
    return dataclasses.replace(result, items=[serialize(item) for item in result.items])


def parse_id(value: str, what: str = "build id") -> int:
    """Path ids are matched as ``[^/]+`` so junk reaches us and gets a 400, not a 404 page."""
    if not _ID_RE.match(value or ""):
        raise ValidationError(f"{what} must be a positive integer, got {value[:40]!r}")
    return int(value)


class NotFoundHandler(BaseHandler):
    """Unknown routes (the Application's ``default_handler_class``): an enveloped 404."""

    async def prepare(self) -> None:
        await super().prepare()
        raise web.HTTPError(404, f"no such endpoint: {self.request.method} {self.request.path}")


def routes(prefix: str, table: Iterable[tuple[str, type]]) -> Iterator[tuple[str, type]]:
    """``(path, handler)`` with ``prefix`` applied and the trailing slash optional.

    Upstream declares every route with a trailing slash and 307-redirects the other form; we
    simply serve both, which also fixes the upstream client (it drops the slash before queries).
    """
    for path, handler in table:
        yield prefix.rstrip("/") + path.rstrip("/") + "/?", handler
