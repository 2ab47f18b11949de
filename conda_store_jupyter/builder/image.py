"""Build a Docker/OCI image of a completed build prefix, with one content-addressed layer per package.

The environment is relocated to ``/opt/conda`` with conda-pack (``no-archive`` + ``dest_prefix``), so
the image needs no ``conda-unpack`` at run time and every placeholder already reads ``/opt/conda``.
Each conda package becomes its own layer holding exactly the files its ``conda-meta`` record lists;
layer tars are fully normalised (see :mod:`._oci`), so the same package gives the same layer blob in
every environment and every build, and storage keeps it once. Whatever no package owns (pip/uv
installs, ``conda-meta/``, conda-pack's ``bin/activate``) goes into a last "environment" layer.

Blobs live under :func:`~conda_store_jupyter.storage.base.blob_key` and are written once. Besides the
blobs we keep a tiny record per layer under ``docker/diffids/sha256/<diff_id hex>`` naming the gzip
blob of that uncompressed layer. Hashing a layer tar is ~10x cheaper than gzipping it, so a package
already stored by any earlier build costs one hash, never a compression; it also keeps digests
stable across hosts whose zlib would compress the same tar to different bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import ArtifactError, NotFoundError
from ..storage.base import Storage, blob_key
from . import _oci
from ._oci import (
    CONFIG_V1,
    LAYER_TAR_GZIP,
    MANIFEST_V2,
    OCI_CONFIG,
    OCI_LAYERS,
    OCI_MANIFEST,
    TarEntry,
)
from .image_config import DEST_PREFIX, BaseImage, Layer, image_architecture, runtime_config

log = logging.getLogger(__name__)

DEFAULT_MAX_LAYERS = 100
DEFAULT_COMPRESS_LEVEL = 4
"""gzip level 4 (conda-pack's default too): ~3 % larger than level 6 but twice as fast."""

_DEP_NAME = re.compile(r"[\s=<>!~\[;]")


@dataclass(frozen=True)
class ImageManifest:
    """The stored image. ``manifest`` are the exact bytes to serve; ``digest`` is their sha256."""

    digest: str
    manifest: bytes
    config_digest: str
    config: bytes
    layers: tuple[Layer, ...]
    total_bytes: int  # sum of the compressed layer sizes
    reused_bytes: int  # of those, bytes that storage already had before this build
    media_type: str = MANIFEST_V2
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def reused_share(self) -> float:
        return self.reused_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass
class _PackageFiles:
    """A conda package and the relocated entries it owns."""

    name: str
    dist: str  # name-version-build
    depends: tuple[str, ...]
    entries: list[TarEntry] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(e.size for e in self.entries)


@dataclass
class _PlannedLayer:
    packages: list[_PackageFiles]
    entries: list[TarEntry]
    created_by: str


def diffid_key(diff_id: str) -> str:
    """Storage key of the record mapping an uncompressed layer (diff_id) to its gzip blob."""
    return blob_key(diff_id).replace("docker/blobs/", "docker/diffids/", 1)


def build_image(
    prefix: str | os.PathLike,
    storage: Storage,
    *,
    base_layers: Sequence[Layer] = (),
    base: BaseImage | None = None,
    max_layers: int = DEFAULT_MAX_LAYERS,
    compress_level: int = DEFAULT_COMPRESS_LEVEL,
    threads: int | None = None,
    work_dir: str | os.PathLike | None = None,
    architecture: str | None = None,
) -> ImageManifest:
    """Build the image of ``prefix``, store its blobs and manifest, and describe it.

    ``base_layers`` (blobs already in ``storage``, e.g. pulled from a base image) come first, then
    one layer per package (grouped so the total stays within ``max_layers``), then the environment
    layer. ``base`` (pulled by :func:`.base_image.resolve_base_image` or assembled by
    :func:`.host_base.host_runtime_base`) puts its layers first and its runtime settings (Env,
    WorkingDir, User) under ours. ``work_dir`` should be on the package cache's filesystem:
    conda-pack then hardlinks instead of copying. Raises :class:`ArtifactError` with the reason
    when the image cannot be made.
    """
    prefix = Path(prefix)
    if base is not None:
        base_layers = [*base.layers, *base_layers]
        architecture = architecture or base.architecture or None
    if not (prefix / "conda-meta").is_dir():
        raise ArtifactError(f"cannot build an image: {prefix} is not a conda environment (no conda-meta)")
    budget = max_layers - len(base_layers) - 1  # one layer is kept for the environment files
    if budget < 1:
        raise ArtifactError(f"max_layers={max_layers} leaves no room for packages after "
                            f"{len(base_layers)} base layers")
    timings: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="image-", dir=work_dir))
    try:
        t0 = time.perf_counter()
        root = _relocate(prefix, tmp / "root")
        timings["relocate"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        packages = _read_packages(prefix)
        env_entries = _assign_files(root, packages)
        planned = _plan_layers(packages, env_entries, budget)
        timings["plan"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        workers = threads or os.cpu_count() or 1
        with ThreadPoolExecutor(workers, thread_name_prefix="gzip") as pool:
            layers = [*base_layers]
            for plan in planned:
                layers.append(_store_layer(plan, storage, compress_level, pool if workers > 1 else None,
                                           2 * workers, tmp))
        timings["layers"] = time.perf_counter() - t0

        cmd = [f"{DEST_PREFIX}/bin/python"] if os.path.lexists(root / "bin" / "python") else ["/bin/sh"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    config = _oci.canonical_json({
        "architecture": architecture or image_architecture(),
        "os": "linux",
        "created": _oci.FIXED_CREATED,
        "config": runtime_config(base, cmd),
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": _oci.FIXED_CREATED, "created_by": layer.created_by} for layer in layers],
    })
    config_digest = _put_once(storage, config, CONFIG_V1)
    manifest = _oci.canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": layer.media_type, "size": layer.size, "digest": layer.digest}
                   for layer in layers],
    })
    manifest_digest = _put_once(storage, manifest, MANIFEST_V2)
    result = ImageManifest(
        digest=manifest_digest,
        manifest=manifest,
        config_digest=config_digest,
        config=config,
        layers=tuple(layers),
        total_bytes=sum(layer.size for layer in layers),
        reused_bytes=sum(layer.size for layer in layers if layer.reused),
        timings=timings,
    )
    log.info("image %s: %d layers, %d bytes, %d reused (%.0f%%)", manifest_digest, len(layers),
             result.total_bytes, result.reused_bytes, 100 * result.reused_share)
    return result


# -- relocation -------------------------------------------------------------------------------------

def _relocate(prefix: Path, out: Path) -> Path:
    """conda-pack the prefix into ``out`` with every prefix rewritten to ``/opt/conda``."""
    import conda_pack

    try:
        conda_pack.pack(prefix=str(prefix), output=str(out), format="no-archive",
                        dest_prefix=DEST_PREFIX, verbose=False, force=True)
    except conda_pack.CondaPackException as err:
        raise ArtifactError(f"cannot relocate {prefix} to {DEST_PREFIX} with conda-pack: {err}") from err
    # conda-pack 0.9.2 moves the (empty) temporary archive file it always creates into the output
    # directory in no-archive mode; it is the only top-level name the prefix does not have.
    expected = set(os.listdir(prefix))
    for name in os.listdir(out):
        if name not in expected and (out / name).is_file() and (out / name).stat().st_size == 0:
            (out / name).unlink()
    _refresh_conda_meta(out)
    return out


def _refresh_conda_meta(root: Path) -> None:
    """Make ``sha256_in_prefix``/``size_in_bytes`` describe the relocated files.

    rattler recorded them for the build prefix; after relocation they are stale, which would make
    conda report the files as modified and, worse, make the environment layer depend on the path the
    build happened to use. Only prefix-rewritten files carry these fields, so this reads few files.
    """
    for path in sorted((root / "conda-meta").glob("*.json")):
        record = json.loads(path.read_text())
        changed = False
        for item in (record.get("paths_data") or {}).get("paths", []):
            target = root / item.get("_path", "")
            if "sha256_in_prefix" not in item or not target.is_file() or target.is_symlink():
                continue
            data = target.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if item["sha256_in_prefix"] != digest or item.get("size_in_bytes") != len(data):
                item["sha256_in_prefix"], item["size_in_bytes"] = digest, len(data)
                changed = True
        if changed:  # same serialisation as conda-pack's own rewrite of these files
            path.unlink()  # never write through a hardlink into someone else's file
            path.write_text(json.dumps(record, indent=True, sort_keys=True))


# -- which file goes into which layer ------------------------------------------------------------------

def _read_packages(prefix: Path) -> list[_PackageFiles]:
    """Packages of the prefix from ``conda-meta/*.json``, sorted by name; file lists stay in records."""
    packages = []
    for path in sorted((prefix / "conda-meta").glob("*.json")):
        try:
            record = json.loads(path.read_text())
            name, version, build = record["name"], record["version"], record["build"]
        except (OSError, ValueError, KeyError) as err:
            raise ArtifactError(f"unreadable package record {path.name}: {err}") from err
        pkg = _PackageFiles(str(name), f"{name}-{version}-{build}",
                            tuple(_DEP_NAME.split(d.strip(), maxsplit=1)[0] for d in record.get("depends", ())))
        pkg.entries = record.get("files") or []  # type: ignore[assignment]  # paths until _assign_files
        packages.append(pkg)
    packages.sort(key=lambda p: (p.name, p.dist))
    return packages


def _assign_files(root: Path, packages: list[_PackageFiles]) -> list[TarEntry]:
    """Give every relocated path to its first owning package; return what no package owns.

    Files listed by a record but missing on disk (deleted by pip, say) are skipped: conda-pack has
    already refused environments whose managed files are missing, so this only drops leftovers.
    """
    base = DEST_PREFIX.strip("/")
    on_disk: dict[str, TarEntry] = {}
    empty_dirs: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        names = list(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        if not dirnames and not filenames and rel_dir:
            empty_dirs.append(rel_dir[:-1])
        for name in names:
            rel = rel_dir + name
            entry = _oci.entry_for(Path(dirpath, name), f"{base}/{rel}")
            if entry is not None:
                on_disk[rel] = entry
    for pkg in packages:
        paths = pkg.entries
        pkg.entries = []
        for rel in paths:
            entry = on_disk.pop(os.path.normpath(rel), None)  # type: ignore[arg-type]
            if entry is not None:
                pkg.entries.append(entry)
    rest = list(on_disk.values()) + [_oci.dir_entry(f"{base}/{d}") for d in empty_dirs]
    return rest


def with_parents(entries: list[TarEntry]) -> list[TarEntry]:
    """Entries plus every parent directory (so each layer unpacks on an empty filesystem), sorted."""
    names = {e.name for e in entries}
    dirs = set()
    for entry in entries:
        parts = entry.name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in names:
                dirs.add(d)
    return sorted([*entries, *(_oci.dir_entry(d) for d in dirs)], key=_oci.sort_key)


def _plan_layers(packages: list[_PackageFiles], env_entries: list[TarEntry], budget: int) -> list[_PlannedLayer]:
    """Decide the package layers (at most ``budget``) and their order, then the environment layer.

    With more packages than ``budget``, the largest packages keep their own layer and the rest go
    into a fixed number of buckets chosen by a hash of the package *name*: bucket membership then
    depends on nothing else in the environment, so a change to one small package changes one bucket,
    and the big layers (most of the bytes) stay shared exactly as without grouping.
    """
    present = [p for p in packages if p.entries]
    if len(present) <= budget:
        singles, buckets = present, []
    else:
        n_buckets = max(1, budget // 5)
        by_size = sorted(present, key=lambda p: (-p.nbytes, p.name))
        singles = by_size[: budget - n_buckets]
        grouped: dict[int, list[_PackageFiles]] = {}
        for pkg in by_size[budget - n_buckets:]:
            index = int.from_bytes(hashlib.sha256(pkg.name.encode()).digest()[:8], "big") % n_buckets
            grouped.setdefault(index, []).append(pkg)
        buckets = [sorted(grouped[i], key=lambda p: p.name) for i in sorted(grouped)]
    layers = [_PlannedLayer([p], with_parents(p.entries), f"conda package {p.dist}")
              for p in _dependency_order(singles)]
    for group in buckets:
        entries = [e for p in group for e in p.entries]
        layers.append(_PlannedLayer(group, with_parents(entries),
                                    "conda packages " + " ".join(p.dist for p in group)))
    if env_entries:
        layers.append(_PlannedLayer([], with_parents(env_entries),
                                    "environment files not owned by a conda package (pip, conda-meta, activate)"))
    return layers


def _dependency_order(packages: list[_PackageFiles]) -> list[_PackageFiles]:
    """Dependencies before dependants, ties by name (deterministic; cycles broken by name).

    Layer order never changes a layer's blob, but pullers that key unpacked layers by their chain
    (containerd snapshots) reuse more when common foundations like python come first.
    """
    by_name = {p.name: p for p in packages}
    remaining = dict(by_name)
    order: list[_PackageFiles] = []
    while remaining:
        ready = sorted(n for n, p in remaining.items() if not any(d in remaining and d != n for d in p.depends))
        if not ready:  # a dependency cycle: take the alphabetically first and go on
            ready = [min(remaining)]
        for name in ready:
            order.append(remaining.pop(name))
    return order


# -- storing blobs --------------------------------------------------------------------------------------

def _put_once(storage: Storage, data: bytes, content_type: str) -> str:
    digest = _oci.sha256_digest(data)
    if not storage.exists(blob_key(digest)):
        storage.put_bytes(blob_key(digest), data, content_type)
    return digest


def _known_blob(storage: Storage, diff_id: str) -> tuple[str, int] | None:
    """(digest, size) of a stored gzip blob of this uncompressed layer, if any build made one."""
    try:
        record = json.loads(storage.get_bytes(diffid_key(diff_id)))
        digest, size = record["digest"], int(record["size"])
    except (NotFoundError, FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return (digest, size) if storage.exists(blob_key(digest)) else None


def _store_layer(plan: _PlannedLayer, storage: Storage, level: int, pool, in_flight: int,
                 tmp: Path) -> Layer:
    return store_layer(plan.entries, storage, plan.created_by, tuple(p.dist for p in plan.packages),
                       level=level, pool=pool, in_flight=in_flight, tmp=tmp)


def store_layer(entries: list[TarEntry], storage: Storage, created_by: str, packages: tuple[str, ...] = (),
                *, level: int = DEFAULT_COMPRESS_LEVEL, pool=None, in_flight: int = 4,
                tmp: Path) -> Layer:
    """The layer of ``entries`` (sorted, parents included) with its gzip blob in ``storage``.

    A layer whose diff_id some earlier build already stored costs one hash: its blob is found
    through the diff_id record and nothing is compressed or uploaded. ``tmp`` holds the gzip file
    while it is written.
    """
    try:
        diff_id, _ = _oci.hash_stream(_oci.iter_tar(entries))
        known = _known_blob(storage, diff_id)
        if known is not None:
            return Layer(known[0], diff_id, known[1], packages, created_by, reused=True)
        path = tmp / "layer.tar.gz"
        with open(path, "wb") as out:
            gz = _oci.gzip_stream(_oci.iter_tar(entries), out, level, pool, in_flight)
    except OSError as err:
        raise ArtifactError(f"cannot write the image layer of {created_by}: {err}") from err
    if gz.diff_id != diff_id:
        raise ArtifactError(f"files of {created_by} changed while the image was built")
    reused = storage.exists(blob_key(gz.digest))
    if not reused:
        storage.put_file(blob_key(gz.digest), path, LAYER_TAR_GZIP)
    if not storage.exists(diffid_key(diff_id)):
        storage.put_bytes(diffid_key(diff_id), _oci.canonical_json({"digest": gz.digest, "size": gz.size}),
                          "application/json")
    path.unlink()
    return Layer(gz.digest, diff_id, gz.size, packages, created_by, reused=reused)


# -- OCI image layout -----------------------------------------------------------------------------------

def oci_manifest(manifest: bytes) -> bytes:
    """The OCI image manifest equivalent to one of our Docker v2 schema 2 manifests.

    Same config and layer blobs (so the same diff_ids and layer digests); only media types differ,
    hence the manifest digest differs, exactly as ``skopeo copy`` to an ``oci:`` destination does.
    Deterministic, so it can be served for clients that accept only OCI manifests.
    """
    parsed = json.loads(manifest)
    return _oci.canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {**parsed["config"], "mediaType": OCI_CONFIG},
        "layers": [{**layer, "mediaType": OCI_LAYERS.get(layer["mediaType"], layer["mediaType"])}
                   for layer in parsed["layers"]],
    })


def write_oci_layout(storage: Storage, manifest_digest: str, dest_dir: str | os.PathLike,
                     ref: str = "latest") -> str:
    """Write an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/*``) of a stored image.

    umoci and skopeo's ``oci:`` transport accept only OCI media types in a layout, so the layout holds
    :func:`oci_manifest` of the stored manifest (same config and layer blobs). Returns that OCI
    manifest's digest. Writing another ``ref`` into the same directory adds to ``index.json``.
    """
    dest = Path(dest_dir)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    docker_manifest = storage.get_bytes(blob_key(manifest_digest))
    manifest = oci_manifest(docker_manifest)
    digest = _oci.sha256_digest(manifest)
    parsed = json.loads(manifest)
    for descriptor in [parsed["config"], *parsed["layers"]]:
        target = blobs / descriptor["digest"].split(":", 1)[1]
        if target.exists():
            continue
        partial = target.with_name(target.name + ".partial")
        with open(partial, "wb") as f:
            for chunk in storage.iter_chunks(blob_key(descriptor["digest"])):
                f.write(chunk)
        partial.replace(target)
    (blobs / digest.split(":", 1)[1]).write_bytes(manifest)
    (dest / "oci-layout").write_bytes(_oci.canonical_json({"imageLayoutVersion": "1.0.0"}))
    index_path = dest / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    index["mediaType"] = _oci.OCI_INDEX
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != ref]
    index["manifests"].append({
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": ref},
    })
    index_path.write_bytes(_oci.canonical_json(index))
    return digest
