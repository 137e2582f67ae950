"""`svd curate run`: run a curation recipe (pipelines/*.yaml) stage by stage."""
from __future__ import annotations

from pathlib import Path

import typer

from svdcli.cli.common import check_rank, console, user_errors
from svdcli.cli.curate_cmds.options import ExecutorName, RayAddress, Rank, Verbose, WorldSize
from svdcli.cli.curate_cmds.progress import stage_bars

HELP = """Run a declarative curation recipe, e.g. pipelines/lvd-f.yaml (cuts -> motion -> text -> caption -> clip -> filter), writing WORKDIR/manifests/<stage>.parquet and, if the recipe asks, WORKDIR/report/index.html.

Rerunning is cheap: a stage whose input and settings are unchanged is skipped, and an interrupted stage resumes where it stopped. Change a setting without editing the file with --set STAGE.SETTING=VALUE (e.g. --set motion.margin_frames=3, --set "filter.rules=['motion_score >= 0.5']"). The recipe format is described in docs/recipes.md.

Share a run over machines that see one WORKDIR with --rank R --world-size W: each runs its share of every stage's tasks. A rank that finishes its share while others still work stops there (nothing merged, no later stage started); the rank that finishes last merges the stage and runs the rest of the recipe, as a rerun without --rank does. Relaunch the ranks to share a later stage too.

Exit codes: 0 done; 1 a stage ran and wrote its rows but gave no clip, or more of its inputs failed than --max-error-rate (the recipe's max_error_rate) allows (a rerun with a higher rate goes on from the next stage); 2 a bad recipe, setting, path or disk, or another run holding the workdir; 130 / 143 interrupted (Ctrl-C / SIGTERM): finished work is kept and a rerun resumes.

On a Ray cluster: --executor ray (or `executor: ray` in the recipe), with `resources:` in the recipe setting num_cpus / num_gpus per worker of each stage (docs/scale.md). --executor and --ray-address given here win over the recipe."""


def register(app: typer.Typer) -> None:
    @app.command("run", help=HELP)
    @user_errors
    def run(
        recipe: Path = typer.Argument(..., help="Recipe file, e.g. pipelines/lvd-f.yaml."),
        input: Path = typer.Option(None, "--input", "-i", help="Videos (a folder or one file) for the cuts stage."),
        workdir: Path = typer.Option(..., "--workdir", "-w", help="Folder for the manifests and the report."),
        manifest: Path = typer.Option(None, "--manifest", "-m",
                                      help="Start from this manifest instead of running cuts (with --skip cuts "
                                           "or a recipe without cuts)."),
        overrides: list[str] = typer.Option([], "--set", help="Override a setting: STAGE.SETTING=VALUE (YAML value)."),
        skip: list[str] = typer.Option([], "--skip", help="Leave out a stage of the recipe; repeat for more."),
        workers: int = typer.Option(None, "--workers", "-j", min=1, help="Worker processes (default: the recipe's)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
        rank: Rank = 0,
        world_size: WorldSize = 1,
        executor: ExecutorName = None,
        ray_address: RayAddress = None,
        max_error_rate: float = typer.Option(None, "--max-error-rate", min=0.0, max=1.0,
                                             help="Fail (exit 1) after a stage where more than this share of "
                                                  "the inputs failed (default: the recipe's max_error_rate, "
                                                  "else 1: only a stage where nothing worked fails)."),
        verbose: Verbose = False,
    ) -> None:
        from svdcli.curate.recipe import RunOptions, load_recipe, run_recipe

        from svdcli.curate.executors import executor_for

        check_rank(rank, world_size)
        plan = load_recipe(recipe, overrides)
        if max_error_rate is not None:
            plan.max_error_rate = max_error_rate
        con = console()
        if input is not None and input.is_dir() and "cuts" in plan.stages and "cuts" not in skip:
            from svdcli.cli.curate_cmds.cuts import print_skipped
            from svdcli.curate.stages.cuts import scan_inputs

            print_skipped(scan_inputs([input]).skipped, verbose)
        opts = RunOptions(workers=workers or plan.workers, progress=stage_bars(progress), rank=rank,
                          world_size=world_size,
                          executor=executor_for(executor or plan.executor, ray_address or plan.ray_address,
                                                plan.resources))
        summaries = run_recipe(plan, workdir, videos=input, manifest=manifest, skip=skip, opts=opts,
                               on_step=lambda s: con.print(_line(s)))
        if summaries[-1].action == "partial":
            con.print(f"rank {rank}: its share of {summaries[-1].stage} is done; the rank that finishes "
                      "last merges it and runs the rest (or rerun without --rank)")
            return
        if plan.report:
            from svdcli.curate.report import write_report

            page = write_report(Path(summaries[-1].output), workdir / "report")
            con.print(f"report: {page}")
        con.print(f"recipe {plan.name}: {len(summaries)} stages, "
                  f"{sum(s.seconds for s in summaries):.1f} s -> {summaries[-1].output}")


def _line(s) -> str:
    if s.action == "partial":
        return f"  {s.stage:<8} {s.action:<8} {s.note}  {s.seconds:7.1f} s"
    kept = f", kept {s.kept}" if s.kept is not None else ""
    return (f"  {s.stage:<8} {s.action:<8} {s.rows:>7} rows, {s.errors} errors{kept}  "
            f"{s.seconds:7.1f} s" + (f"  ({s.note})" if s.note else ""))
