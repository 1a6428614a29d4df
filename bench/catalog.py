"""A catalog job at the scale batchgen is for, made for real and kept for later benchmarks.

``rows`` CSV rows x 5 views (20,000 x 5 = 100,000 items), run once against the simulator with
``batchgen run``; later ``make bench`` runs reuse the finished job folder, since making 100,000
images takes minutes. ``--references`` gives every row its own product photo (tiny PNGs, each
with content of its own): closer to a real catalog, but the simulator then draws every picture
anew and the first run takes far longer.

    python bench/catalog.py --rows 20000    # make (or reuse) it, then time the no-op
    python bench/catalog.py --rows 20000 --chains   # the same, each row a hero and four views from it
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PYTHON = sys.executable
VIEWS = ("front", "back", "side", "detail", "lifestyle")
FORMAT = 1  # bump when the job below changes: an old kept folder is then made again


@dataclass(frozen=True)
class Measured:
    seconds: float
    rss_mb: float
    code: int
    stderr: str


def write_catalog(folder: Path, rows: int, references: bool = False, chains: bool = False) -> Path:
    """The manifest, its CSV and (``references``) one reference photo per row; the manifest's path.
    ``chains``: each row's front view is its hero, and its other four views are made from it."""
    refs = folder / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    lines = ["sku,name,material"]
    for k in range(rows):
        sku = f"sku-{k:06d}"
        lines.append(f"{sku},product {k} in colour {k % 97},material {k % 13}")
        if references:
            (refs / f"{sku}.png").write_bytes(_tiny_png(sku))
    (folder / "products.csv").write_text("\n".join(lines) + "\n")
    manifest = folder / "catalog.yaml"

    def block(views: Sequence[str], refs: Sequence[str]) -> str:
        return (
            f"  - rows: products.csv\n    matrix: {{view: [{', '.join(views)}]}}\n    template:\n"
            '      id: "{sku}-{view}"\n'
            '      prompt: "Studio product photo of the {name} ({material}), {view} view, soft shadow on a'
            ' seamless white background, e-commerce catalog style"\n'
            + (f"      references: [{', '.join(json.dumps(r) for r in refs)}]\n" if refs else "")
        )

    photo = ["refs/{sku}.png"] if references else []
    if chains:  # the front view is the hero; the others are made from it
        blocks = block(VIEWS[:1], photo) + block(VIEWS[1:], [f"@{{sku}}-{VIEWS[0]}", *photo])
    else:
        blocks = block(VIEWS, photo)
    manifest.write_text(
        "version: 1\njob: catalog\n"
        "defaults: {model: nano-banana-2, image_size: '512'}\n"
        "limits: {concurrency: 64, timeout_s: 600, max_consecutive_failures: 100000}\n"
        "generate:\n" + blocks
    )
    return manifest


def _tiny_png(seed: str) -> bytes:
    """An 8x8 PNG of one colour drawn from ``seed``: a different file for every product."""
    r, g, b = hashlib.sha256(seed.encode()).digest()[:3]
    raw = b"".join(b"\x00" + bytes((r, g, b)) * 8 for _ in range(8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def batchgen(args: Sequence[str], env: dict[str, str] | None = None) -> Measured:
    """``python -m batchgen ARGS`` in a child process: its wall time, peak RSS and exit status."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [PYTHON, "-m", "batchgen", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BATCHGEN_API_KEY": "bench", **(env or {})},
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    return Measured(
        time.perf_counter() - started, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), err
    )


def finished_catalog(
    root: Path, rows: int, base_url: str, references: bool = False, chains: bool = False
) -> tuple[Path, Path, Measured | None]:
    """(manifest, output folder, the first run if this call made it): the job, run to the end."""
    kind = ("-refs" if references else "") + ("-chains" if chains else "")
    folder = root / f"catalog-{rows}{kind}-v{FORMAT}"
    manifest, output = folder / "catalog.yaml", folder / "output"
    done = folder / "finished.json"
    if done.is_file():
        return manifest, output, None
    manifest = write_catalog(folder, rows, references, chains)
    first = batchgen(["run", str(manifest), "--base-url", base_url, "--output", str(output), "-q"])
    if first.code != 0:
        raise SystemExit(f"bench: the {rows * len(VIEWS)}-item catalog run failed: {first.stderr[-2000:]}")
    done.write_text(json.dumps(first.__dict__))
    return manifest, output, first


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--root", type=Path, default=Path("output/bench"))
    parser.add_argument("--references", action="store_true", help="a product photo per row")
    parser.add_argument("--chains", action="store_true", help="each row's front view the hero of the others")
    args = parser.parse_args()
    manifest, output, first = finished_catalog(
        args.root, args.rows, args.base_url, args.references, args.chains
    )
    if first:
        print(f"first run: {first.seconds:.1f} s, {first.rss_mb:.0f} MB")
    again = batchgen(["run", str(manifest), "--base-url", args.base_url, "--output", str(output), "-q"])
    print(f"no-op: {again.seconds:.2f} s, {again.rss_mb:.0f} MB, exit {again.code}")
    return again.code


if __name__ == "__main__":
    sys.exit(main())
