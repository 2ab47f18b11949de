"""The service page: the browser user interface that ``conda-store-server`` serves itself.

The views are one React bundle (``labextension/``, built by rspack into ``static/`` next to
this module; see ``labextension/build-page.mjs``). Here:

- **The HTML shell** (:class:`PageHandler`) for every page path under the URL prefix (``/``
  standalone, ``/services/conda-store/`` under JupyterHub). It carries the prefix, the XSRF token,
  how users log in and the registry's host in data attributes of ``#conda-store-root``: the
  Content-Security-Policy forbids inline scripts, so there is no inline configuration script.
  The shell itself is never cached (it holds the XSRF token and names the current bundle).
- **The bundle** (:class:`BundleHandler`): file names carry a content hash, so they are cached
  for a year and never revalidated; a new build has new names.
- **Paste-a-token login** (``POST /login/token/``): trades an API token for a browser session,
  one of our ordinary hashed, revocable tokens in the ``conda-store-auth`` cookie, exactly like
  the password login (``login.py``). Logging out revokes the session, not the pasted token.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tornado import web

from ..exceptions import AuthenticationError, ValidationError
from .base import BaseHandler
from .login import LoginHandler, start_browser_session

STATIC_DIR = Path(__file__).parent / "static"
"""Where ``npm run build`` puts the page bundle (not in git; in the wheel)."""

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'self'",
])
"""Only our own files run; nothing inline, nothing from elsewhere (the API is same-origin)."""

_HASHED = re.compile(r"^[\w-]+\.[0-9a-f]{8,}\.(?:js|css)$")
"""Bundle file names with a content hash: safe to cache forever."""

IMMUTABLE_SECONDS = 365 * 24 * 3600


@dataclass(frozen=True)
class Bundle:
    scripts: tuple[str, ...]
    styles: tuple[str, ...]


@lru_cache(maxsize=4)
def _load_bundle(manifest: Path, mtime_ns: int) -> Bundle:
    data = json.loads(manifest.read_text())
    return Bundle(tuple(data["scripts"]), tuple(data["styles"]))


def load_bundle(static_dir: Path | None = None) -> Bundle | None:
    """The built bundle's files (re-read when the manifest changes), or None if not built."""
    manifest = (static_dir or STATIC_DIR) / "manifest.json"
    try:
        return _load_bundle(manifest, manifest.stat().st_mtime_ns)
    except (OSError, ValueError, KeyError):
        return None


def login_mode(handler: BaseHandler) -> str:
    """``hub`` (JupyterHub OAuth), ``password`` (``POST /login/``) or ``token`` (paste one)."""
    from .hub_login import hub_oauth_configured

    if hub_oauth_configured(handler.auth):
        return "hub"
    return "password" if handler.auth.authenticator.login_enabled else "token"


def _security_headers(handler: web.RequestHandler) -> None:
    handler.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "same-origin")


class PageHandler(BaseHandler):
    """The HTML shell of every page; the bundle's router picks the view from the path."""

    invalid_credentials_ok = True  # a dead session still gets the page (its cookie is cleared): it shows the login

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        _security_headers(self)

    def get(self, *_path: str) -> None:
        bundle = load_bundle()
        if bundle is None:
            # A checkout without `npm run build`: say how to fix it (the API works regardless).
            self.set_status(503)
            self.finish("<!doctype html><title>conda-store</title><p>The conda-store page bundle is not built. "
                        "Run <code>npm ci &amp;&amp; npm run build</code> in the source tree "
                        "(<code>scripts/bootstrap</code> does), or install a wheel. The REST API at "
                        f"<code>{html.escape(self.server.base_url)}api/v1/</code> works without it.</p>")
            return
        prefix = self.server.base_url
        attr = lambda value: html.escape(value, quote=True)  # noqa: E731
        static = f"{prefix}static/"
        styles = "".join(f'<link rel="stylesheet" href="{attr(static + s)}">' for s in bundle.styles)
        scripts = "".join(f'<script defer src="{attr(static + s)}"></script>' for s in bundle.scripts)
        # Under JupyterHub the request's host is the hub's proxy, which does not route /v2/.
        registry_host = (self.server.registry_host or self.request.host) if self.server.enable_registry else ""
        self.finish(
            "<!doctype html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="color-scheme" content="light dark">'
            f"<title>conda-store</title>{styles}{scripts}</head>"
            f'<body><div id="conda-store-root" data-prefix="{attr(prefix)}" '
            f'data-xsrf="{attr(self.xsrf_token.decode("ascii"))}" data-login-mode="{attr(login_mode(self))}" '
            f'data-registry-host="{attr(registry_host)}"></div>'
            "<noscript>conda-store needs JavaScript. Its REST API is at "
            f"{html.escape(prefix)}api/v1/.</noscript></body></html>\n"
        )


class LoginPageHandler(LoginHandler, PageHandler):
    """``/login/``: the page on GET; ``POST`` is the password login of ``login.py``."""

    def set_default_headers(self) -> None:
        BaseHandler.set_default_headers(self)  # POST answers JSON; get() switches to HTML

    def get(self, *_path: str) -> None:
        PageHandler.set_default_headers(self)
        PageHandler.get(self)


class TokenLoginHandler(BaseHandler):
    """``POST /login/token/`` with ``{"token": "..."}``: a browser session for a pasted token."""

    invalid_credentials_ok = True  # logging in again is the way out of an expired session

    def check_xsrf_cookie(self) -> None:
        """Like the password login: there is no cookie session to protect yet."""

    async def post(self) -> None:
        token = self.json_body().get("token")
        if not isinstance(token, str) or not token.strip():
            raise ValidationError("'token' is required: paste an API token")
        identity = await self.auth.authenticate_request_async(cookie=None, authorization=f"Bearer {token.strip()}")
        if not identity.authenticated or getattr(identity, "anonymous_grant", False):
            raise AuthenticationError("this token is not valid here (unknown, expired, revoked, "
                                      "or issued without credentials)")
        issued = await start_browser_session(self, identity)
        self.ok({"username": identity.username, "primary_namespace": identity.primary_namespace,
                 "expiration": issued})


class BundleHandler(web.StaticFileHandler):
    """The bundle's files: hashed names cached for a year, the rest (none today) revalidated."""

    def set_default_headers(self) -> None:
        _security_headers(self)

    def get_cache_time(self, path: str, modified, mime_type: str) -> int:
        return IMMUTABLE_SECONDS if _HASHED.match(Path(path).name) else 0

    def set_extra_headers(self, path: str) -> None:
        if _HASHED.match(Path(path).name):
            self.set_header("Cache-Control", f"public, max-age={IMMUTABLE_SECONDS}, immutable")

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if Path(absolute_path).name == "manifest.json":
            raise web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)

    def write_error(self, status_code: int, **kwargs) -> None:
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(f"{status_code} {self._reason}\n")


PAGE_PATHS = (
    r"/",
    r"/environment/[^/]+/[^/]+/",
    r"/environment/[^/]+/[^/]+/edit/",
    r"/build/[^/]+/",
    r"/create/",
    r"/namespaces/",
    r"/user/",
)

HANDLERS = [
    *((path, PageHandler) for path in PAGE_PATHS),
    (r"/login/", LoginPageHandler),
    (r"/login/token/", TokenLoginHandler),
]


def bundle_handlers(prefix: str) -> list[tuple[str, type, dict]]:
    """The static route (needs its ``path`` setting, so it is not in ``HANDLERS``)."""
    return [(prefix.rstrip("/") + r"/static/([^/]+)", BundleHandler, {"path": str(STATIC_DIR)})]
