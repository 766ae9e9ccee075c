"""What the entry points do for the user around Hydra.

- Before Hydra runs: check the command line's keys and config choices against the configs
  (with "did you mean"), and refuse to start a training run in a directory that already
  holds its checkpoints unless ``trainer.resume`` says to continue it.
- Around the task: turn tdsclip's errors (and OmegaConf's config errors) into one or two
  lines on stderr and an exit code (2: a user mistake, 1: a run that failed), and remove the
  run directory of a run that failed before writing anything but Hydra's own files.
  ``--verbose`` (or ``HYDRA_FULL_ERROR=1``) prints the traceback as well.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tdsclip.errors import ConfigError, RunError, TdsclipError, UserError

log = logging.getLogger(__name__)

VERBOSE_ENV = "TDSCLIP_VERBOSE"
# Hydra's flags that print something instead of running; the command line is theirs then.
_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--version",
               "--shell-completion", "-sc", "--resolve"}  # fmt: skip
_VALUE_FLAGS = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd",
                "--experimental-rerun", "--package", "-p"}  # fmt: skip


def take_verbose_flag(argv: list[str]) -> None:
    """Remove ``--verbose`` from ``argv`` (Hydra does not know it) and remember it in the
    environment, so that self-launched workers see it too."""
    if "--verbose" in argv:
        argv.remove("--verbose")
        os.environ[VERBOSE_ENV] = "1"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def report(error: TdsclipError, program: str) -> None:
    """The error as the user sees it: what is wrong, then what to do."""
    sys.stderr.write(f"{program}: error: {error.message}\n")
    if error.hint:
        sys.stderr.write(f"  {error.hint}\n")
    sys.stderr.flush()


def as_tdsclip_error(error: BaseException) -> TdsclipError | None:
    """tdsclip's own errors as they are; OmegaConf's config errors as a ConfigError."""
    if isinstance(error, TdsclipError):
        return error
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None) or "config"
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "Missing mandatory value" in text:
            return ConfigError(key, "is required", hint=f"set it on the command line: {key}=...")
        return ConfigError(key, text)
    return None


@contextlib.contextmanager
def exit_on_error(program: str, on_user_error: Callable[[], None] | None = None) -> Iterator[None]:
    """Report a tdsclip or config error and exit with its code; ``on_user_error`` runs first
    for user errors (e.g. to remove an empty run directory)."""
    try:
        yield
    except Exception as raw:
        error = as_tdsclip_error(raw)
        if error is None:
            raise
        if isinstance(error, UserError) and on_user_error is not None:
            on_user_error()
        if verbose():
            traceback.print_exc()
        if _is_main_rank():
            report(error, program)
        sys.exit(error.exit_code)


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def reported_errors(program: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Hydra task function: errors reported as :func:`exit_on_error` does; a run
    directory that holds only Hydra's files after a user error is removed."""

    def decorate(task: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def wrapper(cfg: DictConfig) -> Any:
            with exit_on_error(program, on_user_error=_remove_empty_run_dir):
                return task(cfg)

        return wrapper

    return decorate


def _remove_empty_run_dir() -> None:
    """Remove the run directory Hydra made for this job if nothing but Hydra's config
    snapshot and the log is in it (a run that failed before it began)."""
    from hydra.core.hydra_config import HydraConfig

    if not _is_main_rank() or not HydraConfig.initialized():
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if not run_dir.is_dir() or run_dir.resolve() == Path.cwd().resolve():
        return
    if not all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    # ... and the folders above it that this run made and left empty (outputs/<task>/).
    cwd = Path.cwd().resolve()
    parent = run_dir.resolve().parent
    while parent != cwd and cwd in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


# ----------------------------------------------------------------- the command line
def check_command_line(config_dir: str, config_name: str, argv: list[str]) -> None:
    """Check the overrides in ``argv`` before Hydra runs (raises a UserError)."""
    if any(a in _INFO_FLAGS for a in argv):
        return
    overrides, config_name, multirun = _split_argv(argv, config_name)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # a syntax error: Hydra's own message says where
        return
    groups, keys, fixed = [], [], []
    # Configs from other folders (hydra.searchpath) are Hydra's to find.
    search = [o.input_line for o in parsed if o.key_or_group == "hydra.searchpath"]
    for o in parsed:
        name = o.key_or_group
        if name.startswith("hydra") or o.is_add() or o.is_delete() or o.is_force_add():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        if Path(config_dir, name).is_dir():
            first = values[0] if search else _check_choices(config_dir, name, values)
            groups.append(f"{name}={first}")
        else:
            keys.append(name)
            if not o.is_sweep_override():
                fixed.append(o.input_line)
    _check_keys(_compose(config_dir, config_name, search + groups), keys, config_dir)
    cfg = _compose(config_dir, config_name, search + groups + fixed)
    _check_required(cfg, set(keys), config_name)
    if config_name == "train":
        _check_run_dir(cfg, multirun)


def _split_argv(argv: list[str], config_name: str) -> tuple[list[str], str, bool]:
    overrides, multirun, skip = [], False, False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in _VALUE_FLAGS:
            skip = True
            if arg in ("--config-name", "-cn") and i + 1 < len(argv):
                config_name = argv[i + 1]
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, config_name, multirun


def _check_choices(config_dir: str, group: str, values: list[Any]) -> str:
    """Every value of a group override names a config file; returns the first one."""
    options = sorted(p.stem for p in Path(config_dir, group).glob("*.yaml"))
    for value in values:
        if value is not None and str(value) != "null" and str(value) not in options:
            close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
            raise ConfigError(
                group,
                f"no config named {value!r} in configs/{group}/",
                hint=(f"did you mean {group}={close[0]}? " if close else "")
                + f"choose one of: {', '.join(options)}",
            )
    return str(values[0])


def _compose(config_dir: str, config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            return compose(config_name, overrides=overrides, return_hydra_config=True)
    except Exception as e:  # composition errors: a broken experiment file, a bad value type
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError("command line", message) from e


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix] if prefix else []
    keys = [prefix] if prefix else []
    for key, value in node.items():
        keys += _all_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def _unset(node: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose value is OmegaConf's "required" marker ``???``."""
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _unset(v, f"{prefix}{key}.")]
    return [prefix[:-1]] if node == "???" else []


def _check_keys(cfg: DictConfig, keys: list[str], config_dir: str) -> None:
    """Every key of the command line is in the composed config; else "did you mean"."""
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)  # type: ignore[union-attr]
    known = _all_keys(container)
    known_set = set(known)
    unknown = [key for key in keys if key not in known_set]
    if not unknown:
        return
    key = unknown[0]
    candidates = known + [p.name for p in Path(config_dir).iterdir() if p.is_dir()]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(
        key,
        "no such config key",
        hint=hint + "`python -m tdsclip.train --cfg job` prints every key and its value",
    )


def _check_required(cfg: DictConfig, given: set[str], config_name: str) -> None:
    """Values the config leaves to the user (``???``) that the command line does not set."""
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)  # type: ignore[union-attr]
    missing = [k for k in _unset(container) if k not in given]
    if missing:
        raise ConfigError(
            missing[0],
            "is required",
            hint=f"python -m tdsclip.{config_name} {' '.join(f'{k}=...' for k in missing)}",
        )


def starts_fresh(resume: str | None) -> bool:
    """Whether ``trainer.resume`` says to start a new run (not to continue one)."""
    return resume in (None, "", "none")


def _check_run_dir(cfg: DictConfig, multirun: bool) -> None:
    """Refuse to train into a directory whose checkpoints a new run would overwrite."""
    if not starts_fresh(cfg.trainer.resume):
        return
    run_dir = Path(str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir))
    pattern = "*/checkpoints/*.pt" if multirun else "checkpoints/*.pt"
    found = sorted(run_dir.glob(pattern))
    if found:
        raise UserError(
            f"{run_dir} already holds a run's checkpoints ({found[0].relative_to(run_dir)})",
            hint="resume with trainer.resume=auto, or choose another run_id",
        )


def check_not_overwriting(ckpt_dir: Path, resume: str | None) -> None:
    """The same refusal inside a run (workers, sweeps): nothing is written before it."""
    if starts_fresh(resume) and any((ckpt_dir / name).is_file() for name in ("last.pt", "best.pt")):
        raise UserError(
            f"{ckpt_dir.parent} already holds a run's checkpoints",
            hint="resume with trainer.resume=auto, or choose another run_id",
        )


def worker_error(error: TdsclipError) -> dict[str, Any]:
    """A worker's tdsclip error as a plain value (worker results are pickled back)."""
    kind = "user" if isinstance(error, UserError) else "run"
    return {"status": "error", "kind": kind, "message": error.message, "hint": error.hint}


def raise_worker_error(result: dict[str, Any]) -> dict[str, Any]:
    """Raise the error a worker returned with :func:`worker_error`; else return ``result``."""
    if result.get("status") != "error":
        return result
    cls = UserError if result["kind"] == "user" else RunError
    raise cls(result["message"], hint=result["hint"])
