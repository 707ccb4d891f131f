"""deploy/Dockerfile, read statically (no Docker engine here): stages, user, health check, what it copies."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|clang|apt-get install)\b")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def _stages() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in _instructions():
        if keyword == "FROM":
            base, _, name = args.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip()))
        elif stages:
            stages[-1].instructions.append((keyword, args))
        elif keyword == "ARG":
            key, _, default = args.partition("=")
            global_args[key] = default
    return global_args, stages


def _base_image(stage: Stage, global_args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], stage.base)


def test_multi_stage_build_on_a_slim_python_base() -> None:
    """A build and a runtime stage, both on the slim Python 3.11 image; the runtime copies only the venv."""
    global_args, stages = _stages()
    assert [stage.name for stage in stages] == ["build", "runtime"]
    assert {_base_image(stage, global_args) for stage in stages} == {"python:3.11-slim-bookworm"}
    assert stages[-1].args("COPY") == ["--from=build /opt/venv /opt/venv"]


def test_final_image_has_no_build_tools() -> None:
    """Compilers are installed in the build stage only; the runtime stage installs no package."""
    build, runtime = _stages()[1]
    assert any(BUILD_TOOLS.search(args) for args in build.args("RUN"))
    assert [args for args in runtime.args("RUN") if BUILD_TOOLS.search(args)] == []


def test_runs_as_a_non_root_user() -> None:
    """The runtime stage creates a system user and switches to its numeric uid."""
    runtime = _stages()[1][-1]
    assert runtime.args("USER") == ["10001:10001"]
    assert any("useradd --system --uid 10001" in args for args in runtime.args("RUN"))


def test_healthcheck_is_the_compose_one_and_needs_only_python() -> None:
    """HEALTHCHECK runs the same python -c command as docker-compose.yml, and that code compiles."""
    runtime = _stages()[1][-1]
    [healthcheck] = runtime.args("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    compose_test = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-healthcheck"]["test"]
    assert ["CMD", *command] == compose_test
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")
    assert "HEALTHCHECK_URL=http://127.0.0.1:8000/healthz" in " ".join(runtime.args("ENV"))


def test_default_command_is_the_gateway() -> None:
    """Without a compose `command:`, the image serves the gateway."""
    runtime = _stages()[1][-1]
    assert runtime.args("CMD") == ['["python", "-m", "gateway"]']


def _copied_sources() -> list[str]:
    build = _stages()[1][0]
    return [src for args in build.args("COPY") for src in args.split()[:-1] if not src.startswith("--")]


def test_copied_paths_exist_and_are_not_docker_ignored() -> None:
    """Every COPY source exists in the repository and .dockerignore does not drop it from the context."""
    ignored = {
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")
    }
    sources = _copied_sources()
    assert sources == [
        "pyproject.toml",
        "README.md",
        "shared",
        "adapters",
        "gateway",
        "token_service",
        "upstream_worker",
    ]
    assert [s for s in sources if not (ROOT / s).exists() or s in ignored] == []


def _imported_top_levels(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_image_holds_every_project_package_the_services_import() -> None:
    """The copied packages import no project package left out of the image (tests/, deploy/)."""
    copied = {s for s in _copied_sources() if (ROOT / s).is_dir()}
    project = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    imported = set().union(*(_imported_top_levels(ROOT / package) for package in copied))
    assert (imported & project) - copied == set()
