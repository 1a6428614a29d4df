"""The shape of the package: what each command loads, and how big its parts may grow."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_only_the_commands_that_run_the_simulator_load_it() -> None:
    loaded = _loaded_after(
        "import contextlib, io\n"
        "from batchgen.cli.main import main\n"
        "from batchgen.job import jobs\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['run', '--help'])"
    )
    assert "batchgen.job.jobs" in loaded
    assert "batchgen.sim.simulator" not in loaded
    assert "aiohttp.web" not in loaded
