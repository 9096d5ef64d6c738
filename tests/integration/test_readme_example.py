"""The README's ``session_core`` example runs as printed, without Flask."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_library_example_runs_without_importing_a_web_framework(tmp_path):
    code = re.search(r"```python\n(from session_core.*?)```", README.read_text(), re.S).group(1)
    framework_check = "\nassert not {'flask', 'gevent'} & set(sys.modules), 'a web framework was imported'\n"
    guarded = "import sys\n" + code + framework_check

    result = subprocess.run(
        [sys.executable, "-c", guarded],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(README.parent), "PATH": "/usr/bin:/bin"},
    )

    assert result.returncode == 0, result.stderr
    friendly_id, run_id, is_cached = result.stdout.splitlines()[0].split()
    assert friendly_id.startswith("session_") and run_id.startswith("run_") and is_cached == "False"
    assert result.stdout.splitlines()[1].endswith(" done")
