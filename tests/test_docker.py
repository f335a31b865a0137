"""The Docker image and the compose file, read statically (no Docker engine runs here): they
must keep what matters, and stay in step with the Makefile's install, the settings and the
app's routes and CLI. The entrypoint script, plain sh, also runs here against fake seeds."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from sqlalchemy.engine import make_url

from server.config import Settings

pytestmark = pytest.mark.one_pass  # nothing here touches a database

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
MAKEFILE = ROOT / "Makefile"
PYPROJECT = ROOT / "pyproject.toml"
README = ROOT / "README.md"
EMBEDDER = ROOT / "server" / "rag" / "embedder.py"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

Instruction = tuple[str, str]  # keyword, arguments on one line


# --- reading the files ------------------------------------------------------------------
def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        found.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return found


def stages(text: str) -> list[list[Instruction]]:
    """Each FROM and what follows it; instructions before the first FROM are left out."""
    result: list[list[Instruction]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def build_stage() -> list[Instruction]:
    return stages(DOCKERFILE.read_text())[0]


def final_stage() -> list[Instruction]:
    return stages(DOCKERFILE.read_text())[-1]


def args_of(stage: list[Instruction]) -> dict[str, str]:
    found = {}
    for keyword, args in stage:
        if keyword == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            found[name] = value
    return found


def global_args() -> dict[str, str]:
    found = {}
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            found[name] = value
    return found


def env_of(stage: list[Instruction]) -> dict[str, str]:
    found = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                found[name] = value
    return found


def runs(stage: list[Instruction]) -> list[str]:
    return [args for keyword, args in stage if keyword == "RUN"]


def make_variable(name: str) -> str:
    text = MAKEFILE.read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\s*:?=\s*(.+)$", text, re.MULTILINE)
    assert match, f"{name} is not set in the Makefile"
    return " ".join(match.group(1).split())


def make_recipe(target: str) -> list[str]:
    """A Makefile target's recipe lines, with the variables the install uses expanded."""
    lines = MAKEFILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    expanded = []
    for line in recipe:
        line = line.replace("$(LLAMA_INSTALL)", make_variable("LLAMA_INSTALL"))
        for name in ("TORCH", "LLAMA"):
            line = line.replace(f"$({name})", make_variable(name))
        expanded.append(line.replace("$(BIN)/pip", "pip").replace("$$(", "$("))
    return expanded


def pip_steps(commands: list[str], values: dict[str, str]) -> list[dict[str, Any]]:
    """Each `pip install` in the commands as its options and requirements, with the llama
    wheel script's folder written WHEELS(version), so the two files compare like for like."""
    steps = []
    for command in commands:
        for name, value in values.items():
            command = command.replace(f'"${name}"', value).replace(f"${name}", value)
        for part in command.split("&&"):
            part = re.sub(
                r'"?\$\(sh\s+\S*scripts/llama_wheel\.sh\s+\S+\s+"?([^")\s]+)"?\)"?',
                r"WHEELS(\1)",
                part.strip(),
            )
            words = shlex.split(part)
            if words[:2] != ["pip", "install"]:
                continue
            options: dict[str, str | None] = {}
            requirements = []
            rest = iter(words[2:])
            for word in rest:
                if word in ("--index-url", "--find-links", "--extra-index-url"):
                    options[word] = next(rest)
                elif word.startswith("-"):
                    options[word] = None
                else:
                    requirements.append(word)
            options.pop("--quiet", None)
            kind = "project"
            if any(r.startswith("torch") for r in requirements):
                kind = "torch"
            elif any(r.startswith("llama-cpp-python") for r in requirements):
                kind = "llama"
            steps.append({"kind": kind, "options": options, "requirements": requirements})
    return steps


def docker_pip_steps() -> list[dict[str, Any]]:
    return pip_steps(runs(build_stage()), args_of(build_stage()))


def make_pip_steps(target: str) -> list[dict[str, Any]]:
    return pip_steps(make_recipe(target), {})


def project_pins() -> dict[str, str]:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = {}
    for line in dependencies:
        requirement = Requirement(line)
        pins[requirement.name] = str(requirement.specifier)
    return pins


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR-default}, from `env` else the default."""
    env = env or {}

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) or ""
        return env.get(name, default)

    return re.sub(r"\$\{(\w+)(:?-([^}]*))?\}", one, str(value))


def app_services() -> dict[str, dict[str, Any]]:
    """The services built from docker/Dockerfile: the app and its per-profile variants."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if (service.get("build") or {}).get("dockerfile") == "docker/Dockerfile"
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def setting_names() -> set[str]:
    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    return {prefix + name.upper() for name in Settings.model_fields}


# --- the image --------------------------------------------------------------------------
def test_the_image_runs_as_a_non_root_user() -> None:
    stage = final_stage()
    users = [(i, args) for i, (keyword, args) in enumerate(stage) if keyword == "USER"]
    assert users, "the final stage never switches user: it would run as root"
    position, user = users[-1]
    name = user.split(":")[0]
    assert name not in ("root", "0"), user
    start = next(i for i, (keyword, _) in enumerate(stage) if keyword in ("CMD", "ENTRYPOINT"))
    assert position < start, "USER must come before the command it runs"
    if name.isdigit():  # a numeric uid (for runAsNonRoot) must be one the image creates
        assert any(f"--uid {name}" in run for run in runs(stage)), f"no user with uid {name}"


def test_python_of_the_image_is_the_one_the_project_supports() -> None:
    image = global_args()["PYTHON_IMAGE"]
    match = re.match(r"python:(\d+\.\d+)", image)
    assert match, image
    supported = SpecifierSet(tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"])
    assert supported.contains(match.group(1) + ".0"), (image, supported)
    froms = [args for keyword, args in instructions(DOCKERFILE.read_text()) if keyword == "FROM"]
    assert all(args.startswith("${PYTHON_IMAGE}") for args in froms), froms


def test_torch_is_the_makefiles_pin_from_the_cpu_index() -> None:
    pin = make_variable("TORCH")
    assert args_of(build_stage()).get("TORCH") == pin, "the Dockerfile's TORCH drifted"
    torch = [step for step in docker_pip_steps() if step["kind"] == "torch"]
    assert len(torch) == 1, torch
    assert torch[0]["requirements"] == [pin]
    assert torch[0]["options"].get("--index-url") == CPU_INDEX, "torch must come from the CPU index"
    assert "--extra-index-url" not in torch[0]["options"], "PyPI beside it could pick CUDA"
    name, version = pin.split("==")
    assert project_pins()[name] == f"=={version}", "pyproject.toml pins another torch"


def test_llama_cpp_is_the_makefiles_portable_wheel() -> None:
    version = make_variable("LLAMA")
    assert args_of(build_stage()).get("LLAMA") == version, "the Dockerfile's LLAMA drifted"
    docker = [step for step in docker_pip_steps() if step["kind"] == "llama"]
    make = [step for step in make_pip_steps("$(VENV)/.installed-run") if step["kind"] == "llama"]
    assert len(docker) == len(make) == 1, (docker, make)
    assert docker[0]["options"] == make[0]["options"]
    assert docker[0]["options"].get("--find-links") == f"WHEELS({version})"
    assert {"--no-index", "--no-deps"} <= set(docker[0]["options"])
    assert docker[0]["requirements"] == [f"llama-cpp-python=={version}"]
    assert project_pins()["llama-cpp-python"] == f"=={version}"
    copied = [args for keyword, args in build_stage() if keyword == "COPY"]
    assert any(args.startswith("scripts/llama_wheel.sh ") for args in copied), copied


def test_the_install_steps_are_the_ones_ci_runs() -> None:
    docker = docker_pip_steps()
    run = make_pip_steps("$(VENV)/.installed-run")
    dev = make_pip_steps("$(VENV)/.installed-dev")
    # CI (`make setup-dev`) and `make setup` install in the same order as the image.
    assert [s["kind"] for s in docker] == [s["kind"] for s in run] == [s["kind"] for s in dev]
    assert [s["kind"] for s in docker] == ["torch", "llama", "project"]
    assert dev[:2] == run[:2], "CI installs torch or llama.cpp differently from `make setup`"
    for image_step, make_step in zip(docker[:2], run[:2], strict=True):
        assert image_step["requirements"] == make_step["requirements"]
    # The app itself: the same package as `make setup`, never the dev or bench extras.
    (project,) = (step for step in docker if step["kind"] == "project")
    (target,) = project["requirements"]
    assert "[" not in target, f"the runtime image installs extras: {target}"
    assert "-e" not in project["options"] and "--editable" not in project["options"]
    copied = [args.split() for keyword, args in build_stage() if keyword == "COPY"]
    assert any("pyproject.toml" in parts and parts[-1].rstrip("/") == target for parts in copied)
    assert all("[dev" not in command and "[bench" not in command for command in runs(build_stage()))


def test_the_image_is_offline_with_the_flags_the_app_sets() -> None:
    app_flags = dict(
        re.findall(r'os\.environ\["(\w*OFFLINE\w*)"\]\s*=\s*"(\w+)"', EMBEDDER.read_text())
    )
    assert "HF_HUB_OFFLINE" in app_flags, "the embedder no longer forces the Hub offline"
    env = env_of(final_stage())
    assert env.get("HF_HUB_OFFLINE") == "1"
    for flag, value in app_flags.items():
        assert env.get(flag) == value, f"{flag}={value} is set by the app, not by the image"


def test_a_health_check_probes_a_route_the_app_serves() -> None:
    from server.api.health import router

    checks = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1, "no HEALTHCHECK in the final stage"
    assert " CMD " in f" {checks[0]} " and "NONE" not in checks[0].split()
    paths = re.findall(r"127\.0\.0\.1:[^/]*(/\w+)", checks[0])
    assert paths and paths[0] in ("/ready", "/health"), checks[0]
    assert paths[0] in {getattr(route, "path", "") for route in router.routes}


def test_the_starter_knowledge_is_ingested_at_build_time() -> None:
    from server.cli import app

    stage = final_stage()
    env = env_of(stage)
    knowledge = env["RODEOAI_KNOWLEDGE_DIR"]
    seed = re.search(r'SEED="\$\{SEED_DIR:-([^}]+)\}"', ENTRYPOINT.read_text())
    assert seed, "the entrypoint no longer names its seed folder"
    ingests = [(i, a) for i, (kw, a) in enumerate(stage) if kw == "RUN" and " ingest " in a]
    assert ingests, "nothing is ingested at build time: the first start would ingest"
    position, command = ingests[0]
    assert f"RODEOAI_DATA_DIR={seed.group(1)} rodeoai ingest {knowledge}" in command, command
    commands = {c.name or getattr(c.callback, "__name__", "") for c in app.registered_commands}
    assert "ingest" in commands, "the CLI lost its ingest command"
    users = [i for i, (keyword, _) in enumerate(stage) if keyword == "USER"]
    assert users and users[-1] < position, "the seed must belong to the user copying it"
    copies = [args.split() for keyword, args in stage[:position] if keyword == "COPY"]
    assert any(parts[-1] == knowledge for parts in copies), "ingested before it is copied in"
    scripts = [parts[-1] for parts in copies if parts[0] == "docker/entrypoint.sh"]
    entries = [args for keyword, args in stage if keyword == "ENTRYPOINT"]
    assert scripts and entries, "nothing puts the seed into /data at the first start"
    assert scripts[0] in entries[-1], entries
    assert "--fingerprint" in command and f"{seed.group(1)}.knowledge.sha256" in command


def test_the_image_layout_matches_what_compose_pins() -> None:
    image = {k: v for k, v in env_of(final_stage()).items() if k.startswith("RODEOAI_")}
    assert image["RODEOAI_DATA_DIR"] == "/data"
    volumes = [args for keyword, args in final_stage() if keyword == "VOLUME"]
    assert volumes and "/data" in volumes[0]
    for name, service in app_services().items():
        env = environment(service)
        for key, value in image.items():
            # compose's environment beats a .env copied from .env.example (DATA_DIR=., ...)
            assert env.get(key) == value, f"{name}: {key} is {env.get(key)!r}, image {value!r}"
        assert any(str(v).endswith(":/data") for v in service["volumes"]), name


# --- the entrypoint -------------------------------------------------------------------------
def run_entrypoint(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    variables = {
        "PATH": os.environ["PATH"],
        "RODEOAI_DATA_DIR": str(tmp_path / "data"),
        "RODEOAI_KNOWLEDGE_DIR": str(tmp_path / "knowledge"),
        "SEED_DIR": str(tmp_path / "seed"),
        **env,
    }
    return subprocess.run(
        ["sh", str(ENTRYPOINT), "echo", "started"],
        env=variables,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    """A fake seed as the Dockerfile leaves it, for the knowledge folder beside it."""
    (tmp_path / "knowledge").mkdir()
    (tmp_path / "knowledge" / "bull riding.md").write_text("# Bull riding\nEight seconds.\n")
    (tmp_path / "seed" / "index").mkdir(parents=True)
    (tmp_path / "seed" / "rodeoai.db").write_text("seeded")
    (tmp_path / "seed" / "index" / "manifest.json").write_text("{}")
    fingerprint = subprocess.run(
        ["sh", str(ENTRYPOINT), "--fingerprint", str(tmp_path / "knowledge")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.fullmatch(r"[0-9a-f]{64}\n", fingerprint)
    (tmp_path / "seed.knowledge.sha256").write_text(fingerprint)
    return tmp_path


@pytest.mark.e2e  # runs the script with sh
def test_entrypoint_puts_the_seed_into_an_empty_volume(seeded: Path) -> None:
    data = seeded / "data"
    data.mkdir()
    (data / "index").mkdir()
    (data / "index" / "stale.faiss").write_text("old")
    (data / "rodeoai.db-wal").write_text("a log of a deleted database")
    result = run_entrypoint(seeded)
    assert result.stdout == "started\n"  # then it runs the command
    assert (data / "rodeoai.db").read_text() == "seeded"
    assert (data / "index" / "manifest.json").exists()
    assert not (data / "index" / "stale.faiss").exists()
    assert not (data / "rodeoai.db-wal").exists()
    assert sorted(p.name for p in data.iterdir()) == ["index", "rodeoai.db"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "case",
    ["existing database", "postgresql", "autoload off", "other knowledge"],
)
def test_entrypoint_leaves_the_volume_alone_when_the_seed_does_not_apply(
    seeded: Path, case: str
) -> None:
    data = seeded / "data"
    data.mkdir()
    env = {}
    if case == "existing database":
        (data / "rodeoai.db").write_text("mine")
    elif case == "postgresql":
        env["RODEOAI_DATABASE_URL"] = "postgresql+psycopg://u:p@postgres/rodeoai"
    elif case == "autoload off":
        env["RODEOAI_AUTOLOAD_KNOWLEDGE"] = "False"
    else:
        (seeded / "knowledge" / "steer wrestling.md").write_text("# Steer wrestling\n")
    assert run_entrypoint(seeded, **env).stdout == "started\n"
    if case == "existing database":
        assert (data / "rodeoai.db").read_text() == "mine"
    else:
        assert not (data / "rodeoai.db").exists()
    assert not (data / "index").exists()


# --- compose ----------------------------------------------------------------------------------
def test_compose_runs_the_app_alone_by_default() -> None:
    services = compose()["services"]
    default = [name for name, service in services.items() if not service.get("profiles")]
    assert default == ["rodeoai"], default
    env = environment(services["rodeoai"])
    for wired in ("RODEOAI_DATABASE_URL", "RODEOAI_RATE_LIMIT_STORAGE", "RODEOAI_OLLAMA_HOST"):
        assert wired not in env, f"the default app should not need another service ({wired})"


PROFILES = [
    ("postgres", "RODEOAI_DATABASE_URL", "postgresql+psycopg", 5432),
    ("redis", "RODEOAI_RATE_LIMIT_STORAGE", "redis", 6379),
    ("ollama", "RODEOAI_OLLAMA_HOST", "http", 11434),
]


@pytest.mark.parametrize(("profile", "setting", "scheme", "port"), PROFILES)
def test_each_profile_wires_an_app_to_its_service(
    profile: str, setting: str, scheme: str, port: int
) -> None:
    services = compose()["services"]
    backing = services.get(profile)
    assert backing, f"no {profile} service"
    assert backing.get("profiles") == [profile]
    assert backing.get("healthcheck", {}).get("test"), f"{profile} has no health check"
    apps = {name: app for name, app in app_services().items() if profile in app.get("profiles", [])}
    assert len(apps) == 1, f"profile {profile}: {sorted(apps)}"
    (app,) = apps.values()
    assert setting in setting_names(), f"{setting} is not a setting of server.config"
    value = interpolate(environment(app).get(setting, ""), {"POSTGRES_PASSWORD": "pw"})
    address = urlsplit(value)
    assert (address.scheme, address.hostname, address.port) == (scheme, profile, port), value
    assert app["depends_on"][profile]["condition"] == "service_healthy"


def test_the_postgres_profile_uses_pgvector_and_one_password_from_the_environment() -> None:
    services = compose()["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("pgvector/pgvector:"), postgres["image"]
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    db_env = environment(postgres)
    assert re.fullmatch(r"\$\{\w+(:?-)?\}", db_env["POSTGRES_PASSWORD"]), "a literal password"
    secrets = {"POSTGRES_PASSWORD": "s3cret"}
    (app,) = (a for a in app_services().values() if "postgres" in a.get("profiles", []))
    url = make_url(interpolate(environment(app)["RODEOAI_DATABASE_URL"], secrets))
    assert url.password == interpolate(db_env["POSTGRES_PASSWORD"], secrets)
    assert (url.username, url.database) == (db_env["POSTGRES_USER"], db_env["POSTGRES_DB"])
    assert environment(app)["RODEOAI_DATABASE_URL"].count("${") == 1


def test_the_ollama_profile_asks_ollama_first() -> None:
    (app,) = (a for a in app_services().values() if "ollama" in a.get("profiles", []))
    order = interpolate(environment(app)["RODEOAI_BACKENDS"])
    settings = Settings(_env_file=None, backends=order)  # type: ignore[call-arg]
    assert settings.backend_order[0] == "ollama"
    assert settings.backend_order[-1] == "extractive", "no last resort"


def test_compose_sets_only_real_settings_and_no_secrets() -> None:
    known = setting_names()
    for name, service in compose()["services"].items():
        for key, value in environment(service).items():
            if key.startswith("RODEOAI_"):
                assert key in known, f"{name}: {key} is not a setting (renamed?)"
            if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", key):
                assert re.fullmatch(r"\$\{\w+(:?-)?\}", value), f"{name}: {key} is written in"


def test_readme_commands_name_services_of_their_profile() -> None:
    text = README.read_text()
    assert "docker build -f docker/Dockerfile -t rodeoai ." in text
    services = compose()["services"]
    found = re.findall(r"docker compose -f docker/compose\.yaml[^\n`]*", text)
    commands = [command.split(" #")[0] for command in found]
    assert commands, "the README gives no compose command"
    for command in commands:
        profiles = re.findall(r"--profile (\S+)", command)
        named = [w for w in command.split(" up", 1)[-1].split() if not w.startswith("-")]
        for service in named if " up" in command else []:
            assert service in services, command
            wanted = services[service].get("profiles") or []
            assert not wanted or set(wanted) & set(profiles), command
    for profile, _, _, _ in PROFILES:
        assert any(f"--profile {profile}" in command for command in commands), profile
