"""The README quickstart and .ci/run agree: CI runs exactly the README's test command."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _last_command(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return lines[-1]


def test_ci_runs_the_readme_test_command():
    ci_command = _last_command((REPO / ".ci" / "run").read_text())
    readme = (REPO / "README.md").read_text()
    assert ci_command in readme, ci_command


def test_readme_quickstart_trains_a_demo_config_that_exists():
    readme = (REPO / "README.md").read_text()
    demo = [w for w in readme.split() if w.startswith("configs/demo/") and w.endswith(".yaml")]
    assert demo, "README quickstart names no demo config"
    for path in demo:
        assert (REPO / path).is_file(), path
