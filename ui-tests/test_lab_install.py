"""The wheel carries the prebuilt JupyterLab extension: installed, `jupyter labextension list`
shows it enabled with no node anywhere (and the checkout's editable install has it linked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEST = "share/jupyter/labextensions/conda-store-jupyter"


def labextension_list(env: dict[str, str]) -> str:
    proc = subprocess.run([str(BIN / "jupyter"), "labextension", "list"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # no colours


def test_editable_install_has_the_extension_enabled():
    listing = labextension_list(dict(os.environ))
    assert re.search(r"conda-store-jupyter v\S+ enabled\s+OK", listing), listing


def test_wheel_ships_the_prebuilt_extension(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    [wheel] = (tmp_path / "dist").glob("conda_store_jupyter-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        data = next(n.split("/data/")[0] for n in names if ".data/data/" in n) + "/data/"
        shipped = sorted(n[len(data) + len(DEST) + 1:] for n in names if n.startswith(data + DEST + "/"))
        assert "package.json" in shipped and "install.json" in shipped and "static/style.js" in shipped, shipped
        assert any(re.fullmatch(r"static/remoteEntry\.[0-9a-f]+\.js", n) for n in shipped), shipped
        assert not [n for n in names if n.startswith("conda_store_jupyter/labextension/")]  # once, in share/
        # What pip puts under <prefix>/share/jupyter: Lab finds it there (here through JUPYTER_PATH).
        for name in names:
            if name.startswith(data + "share/jupyter/"):
                target = tmp_path / "prefix" / name[len(data):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path / "prefix" / "share" / "jupyter"),
           "PATH": str(BIN)}  # no node on the PATH: nothing is built at install or list time
    listing = labextension_list(env)
    section = listing.split(str(tmp_path / "prefix" / "share" / "jupyter" / "labextensions"))[1]
    assert re.search(r"conda-store-jupyter v0\.1\.0 enabled\s+OK \(python, conda-store-jupyter\)", section), listing
