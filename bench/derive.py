"""The derivation stage, measured (``python bench/bench.py --only derive``).

- Rendering: 2K PNGs with photo-like content (noise over a gradient, so they decode like
  photos, not like flat test cards) into three channel variants and the thumbnail, by
  batchgen's derivation stage (its process pool, its checks and records) against a plain Pillow
  loop doing the same work in one process per core. Both in fresh child processes, alternating.
- The event loop while variants render: a run against the simulator with three variants,
  its heartbeat's lag over the whole command, derivations included.
- Thumbnails keeping pace: L = 2 s, C = 8, no variants: how long the command goes on after its
  last image is written (the thumbnail tail).
- Re-deriving: a finished job whose variant spec changed, run again: requests sent (must be 0),
  and the rate it re-renders at.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
SIDE = 2048
CHANNELS = {
    "amazon": {"size": "2000x2000", "fit": "pad", "background": "#ffffff", "format": "jpeg", "quality": 90},
    "web": {"width": 1200, "format": "webp", "quality": 82},
    "square": {"size": "1080x1080", "fit": "crop", "format": "jpeg", "quality": 90},
}


# --- what runs in the child processes ---------------------------------------------------------


def make_images(folder: Path, count: int) -> list[str]:
    """``count`` photo-like 2K PNGs in ``folder/images``; their paths relative to ``folder``."""
    from PIL import Image, ImageChops

    (folder / "images").mkdir(parents=True, exist_ok=True)
    base = Image.linear_gradient("L").resize((SIDE, SIDE)).convert("RGB")
    made = []
    for k in range(count):
        noise = Image.merge("RGB", [Image.effect_noise((SIDE, SIDE), 24 + 4 * c + k) for c in range(3)])
        picture = ImageChops.add(base, noise, scale=2.0)
        relative = f"images/item-{k:04d}.png"
        picture.save(folder / relative, compress_level=6)
        made.append(relative)
    return made


def batchgen_derive(folder: Path, images: list[str]) -> float:
    """batchgen's derivation stage over ``images``: seconds."""
    from batchgen.job.deriving import Deriving
    from batchgen.manifest import validate as manifest

    path = folder / "bench.yaml"
    path.write_text(json.dumps({"variants": CHANNELS, "items": [{"prompt": "p"}]}))  # JSON is YAML
    job = manifest.load(path)
    stage = Deriving(folder, "bench", job.variants)
    spec = job.items[0]
    started = time.perf_counter()
    for image in images:
        stage.submit(replace(spec, id=Path(image).stem), [image])
    results = stage.close()
    seconds = time.perf_counter() - started
    failed = [r.errors for r in results.values() if r.errors]
    if failed:
        raise SystemExit(f"bench: derivations failed: {failed[:3]}")
    return seconds


def plain_one(args: tuple[str, str]) -> None:
    """What a user's Pillow script does with one image: open it once, four files out."""
    from PIL import Image, ImageOps

    source, out = args
    lanczos = Image.Resampling.LANCZOS
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    stem = Path(source).stem
    ImageOps.pad(image, (2000, 2000), lanczos, color="#ffffff").save(f"{out}/{stem}-a.jpg", quality=90)
    w, h = image.size
    image.resize((1200, round(h * 1200 / w)), lanczos).save(f"{out}/{stem}-w.webp", quality=82)
    ImageOps.fit(image, (1080, 1080), lanczos).save(f"{out}/{stem}-s.jpg", quality=90)
    thumb = image.copy()
    thumb.thumbnail((384, 384), lanczos)
    thumb.save(f"{out}/{stem}-t.webp", quality=80, method=2)


def plain_derive(folder: Path, images: list[str]) -> float:
    """The same work by a plain Pillow loop in a process pool, one process per core: seconds."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    out = folder / "plain"
    out.mkdir(exist_ok=True)
    started = time.perf_counter()
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(os.cpu_count(), context) as pool:
        list(pool.map(plain_one, [(str(folder / i), str(out)) for i in images]))
    return time.perf_counter() - started


def child(which: str, folder: str) -> None:
    """One measurement in this process: prints its seconds as JSON."""
    sys.path.insert(0, str(HERE.parent))
    images = sorted(f"images/{p.name}" for p in (Path(folder) / "images").iterdir())
    run = batchgen_derive if which == "batchgen" else plain_derive
    print(json.dumps({"seconds": run(Path(folder), images), "images": len(images)}))


# --- the scenario, from bench.py --------------------------------------------------------------


def measure(which: str, folder: Path) -> dict[str, Any]:
    done = subprocess.run(
        [PYTHON, __file__, which, str(folder)], capture_output=True, text=True, check=False, timeout=1800
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: {which} derivation failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def rendering(images: int, reps: int) -> dict[str, Any]:
    """Images per second of each, medians over ``reps`` alternating rounds, each on fresh copies."""
    rates: dict[str, list[float]] = {"batchgen": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="bench-derive-") as tmp:
        source = Path(tmp) / "source"
        subprocess.run(
            [
                PYTHON,
                "-c",
                f"import sys; sys.path.insert(0, {str(HERE)!r}); import derive; derive.make_images("
                f"__import__('pathlib').Path({str(source)!r}), {images})",
            ],
            check=True,
        )
        for rep in range(reps):
            order = ["batchgen", "plain"] if rep % 2 == 0 else ["plain", "batchgen"]
            for which in order:
                folder = Path(tmp) / f"{which}-{rep}"
                subprocess.run(["cp", "-r", str(source), str(folder)], check=True)
                found = measure(which, folder)
                rates[which].append(found["images"] / found["seconds"])
                subprocess.run(["rm", "-rf", str(folder)], check=True)
                os.sync()
        png_mb = statistics.mean(p.stat().st_size for p in (source / "images").iterdir()) / 1e6
    return {
        "images": images,
        "png_mb": png_mb,
        "rates": rates,
        "batchgen": statistics.median(rates["batchgen"]),
        "plain": statistics.median(rates["plain"]),
    }


def cpu_per_thumbnail(count: int = 6) -> dict[str, float]:
    """CPU seconds of one thumbnail, by what it is made from: what it costs on this machine."""
    import io

    sys.path.insert(0, str(HERE.parent))
    from PIL import Image

    from batchgen.output.render import Source
    from batchgen.output.variants import THUMB

    out: dict[str, float] = {}
    base = Image.linear_gradient("L").convert("RGB")
    for label, side, fmt in [("2K PNG", 2048, "PNG"), ("4K PNG", 4096, "PNG"), ("2K JPEG", 2048, "JPEG")]:
        noise = Image.merge("RGB", [Image.effect_noise((side, side), 24 + c) for c in range(3)])
        from PIL import ImageChops

        picture = ImageChops.add(base.resize((side, side)), noise, scale=2.0)
        buf = io.BytesIO()
        picture.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        data = buf.getvalue()
        started = time.process_time()
        for _ in range(count):
            Source(data, [THUMB]).render(THUMB, {})
        out[label] = (time.process_time() - started) / count
    return out


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
