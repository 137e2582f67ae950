import subprocess
import sys

from typer.testing import CliRunner

from svdcli.cli.main import app


def test_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "curate" in result.output


def test_help_imports_nothing_heavy():
    """What keeps `svd --help` instant; its start-up time is measured by benchmarks/bench_startup.py
    (a wall-clock bound here would fail on any loaded machine)."""
    code = ("import sys; from svdcli.cli.main import app; "
            "print([m for m in ('torch','cv2','av','open_clip','deepspeed','pyarrow','easyocr') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"heavy modules imported at CLI start-up: {out}"


EXIT_FREEZE = """
import atexit, gc, sys
atexit.register(lambda: print('at exit', gc.get_freeze_count() > 0))  # runs last
import svdcli.cli.main as cli
print('running', gc.get_freeze_count() > 0)
app = cli.app

def command(*args, **kwargs):  # the app, adding an exit handler as it runs (as Ray does)
    atexit.register(lambda: print('added', gc.get_freeze_count() > 0))
    return app(*args, **kwargs)

cli.app = command
sys.argv = ['svd', '--version']
cli.run() if MODE == 'run' else command(['--version'])
"""


def test_the_svd_executable_leaves_the_heap_out_of_the_collections_at_exit():
    """Python's exit collects the whole heap several times (~0.07 s of a curation command's wall
    time); the `svd` executable freezes it at exit, after the exit handlers the command added,
    and not before (a command's garbage is collected as usual while it runs). A process that
    only imports the app (tests, notebooks) exits as it would."""
    for mode, frozen in (("run", "True"), ("app", "False")):
        code = f"MODE = {mode!r}" + EXIT_FREEZE
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        lines = [line for line in out.splitlines() if not line.startswith("svdcli")]  # the version
        assert lines == ["running False", "added False", f"at exit {frozen}"], (mode, out)


def test_the_svd_executable_builds_only_the_command_it_runs():
    """Building every command of the tree costs ~30 ms of each command's start-up: `run` builds
    the path its arguments name, that command exactly as the whole app has it, and keeps a
    level whole where it names nothing registered (help, options, lazily declared stages, typos)."""
    import typer.main

    from svdcli.cli.main import only_the_named

    def tree(command) -> dict:
        return {name: tree(sub) for name, sub in getattr(command, "commands", {}).items()}

    def described(param) -> tuple:
        return (param.name, param.opts, param.secondary_opts, repr(param.default), getattr(param, "help", None),
                param.required, param.multiple, type(param.type).__name__, getattr(param.type, "name", None))

    built = typer.main.get_command(only_the_named(app, ["curate", "cuts", "in.mp4", "--out", "o.parquet"]))
    assert tree(built) == {"curate": {"cuts": {}}}
    whole = typer.main.get_command(app)
    ours, theirs = built.commands["curate"].commands["cuts"], whole.commands["curate"].commands["cuts"]
    assert [described(p) for p in ours.params] == [described(p) for p in theirs.params]
    assert ours.help == theirs.help
    for args in ([], ["--help"], ["--version"], ["nope"]):
        assert only_the_named(app, args) is app, args
    curate = app.registered_groups[0].typer_instance
    for args in (["curate"], ["curate", "--help"], ["curate", "motion"], ["curate", "cutz"]):
        group = only_the_named(app, args).registered_groups
        assert [g.name for g in group] == ["curate"] and group[0].typer_instance is curate, args
    counted = ("import sys, typer.main as tm; built = []; make = tm.get_command_from_info\n"
               "tm.get_command_from_info = lambda *a, **k: built.append(1) or make(*a, **k)\n"
               "import svdcli.cli.main as cli; sys.argv = ['svd', 'curate', 'cuts', '--help']\n"
               "try:\n    cli.run()\nexcept SystemExit:\n    print('built', len(built))")
    out = subprocess.run([sys.executable, "-c", counted], capture_output=True, text=True, check=True).stdout
    assert "--motion-out" in out and out.splitlines()[-1] == "built 1", out
    typo = subprocess.run([sys.executable, "-m", "svdcli", "curate", "cutz"], capture_output=True, text=True)
    assert typo.returncode == 2 and "Did you mean 'cuts'" in typo.stderr


def test_an_error_is_one_line_however_long_its_path(tmp_path):
    """Logs and scripts read the error line: a long path is never wrapped onto the next line."""
    image = tmp_path / ("x" * 150) / "cond.png"
    result = CliRunner().invoke(app, ["sample", "--image", str(image), "--checkpoint", str(tmp_path / "c.safetensors"),
                                      "--out", str(tmp_path / "o.mp4")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(image) in lines[0], result.output


def test_curate_help_lists_the_stages_without_importing_them():
    """Per-clip stage commands are built from their declarations only when one runs or shows its help."""
    code = ("import sys; from typer.testing import CliRunner; from svdcli.cli.main import app; "
            "out = CliRunner().invoke(app, ['curate', '--help']).output; "
            "print(all(s in out for s in ('motion', 'text', 'clip', 'caption')), "
            "[m for m in sys.modules if m.startswith('svdcli.curate.stages.') or m == 'pyarrow'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True []", out


def test_curation_commands_never_import_pandas(tmp_path):
    """pyarrow imports pandas (~0.15 s of start-up) at its first conversion unless told it is not
    needed (`pyarrow_without_pandas`) and every conversion names its types; yet a command's
    process still gets pandas from pyarrow when it asks (`to_pandas`). Without a progress bar
    their summary lines print without loading rich either (`say`: ~25 ms of the command's end)."""
    from svdcli.video.synth import Shot, write_video

    video = tmp_path / "v.mp4"
    write_video(video, [Shot(24, seed=0), Shot(24, seed=1, speed=(2.0, 0.0))], size=(96, 64))
    code = f"""
import sys
from svdcli.cli.main import app

def run(*args):
    assert not app([*args, '--no-progress'], standalone_mode=False)

run('curate', 'cuts', {str(video)!r}, '--out', {str(tmp_path / 'c.parquet')!r}, '--motion-out', {str(tmp_path / 'm.parquet')!r})
run('curate', 'motion', '-m', {str(tmp_path / 'c.parquet')!r}, '--out', {str(tmp_path / 'm2.parquet')!r}, '-j', '1')
print('pandas' in sys.modules, 'rich' in sys.modules)
import pyarrow.parquet as pq
print(len(pq.ParquetFile({str(tmp_path / 'm2.parquet')!r}).read().to_pandas()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "2"], out.stdout + out.stderr
    assert "cuts: 1 videos, 2 clips" in out.stderr and "motion: 2 clips scored" in out.stderr, out.stderr


def test_a_plain_line_prints_as_rich_prints_it(capsys):
    """`say` writes what `console().print` would, and leaves to rich what rich changes."""
    from svdcli.cli.common import console, say

    for line in ("cuts: 3 videos -> /data/[raw]/c.parquet", ":smile: [bold]x[/]", "ünï 漢字 🎬", "x" * 300,
                 "  spaced  ", "", "a\tb", "bell\x07", "cr\rx", "two\nlines"):
        console().print(line)
        theirs = capsys.readouterr().err
        say(line)
        assert capsys.readouterr().err == theirs, repr(line)


def test_a_curation_command_imports_only_its_stages_and_starts_blas_on_one_thread(tmp_path):
    """A lookup of a clip column loads the column declarations only up to the stage declaring it
    (no other stage module: ~15 ms of start-up); numpy's BLAS starts with one thread, the one the
    stages run it on (an idle OpenBLAS pool spins beside the decoder), unless the user set one."""
    import os

    from svdcli.video.synth import Shot, write_video

    video = tmp_path / "v.mp4"
    write_video(video, [Shot(24, seed=0)], size=(96, 64))
    assert CliRunner().invoke(app, ["curate", "cuts", str(video), "--out", str(tmp_path / "c.parquet")]).exit_code == 0
    code = f"""
import os, sys
from svdcli.cli.main import app
assert not app(['curate', 'motion', '-m', {str(tmp_path / 'c.parquet')!r}, '--out', {str(tmp_path / 'm.parquet')!r},
                '-j', '1', '--no-progress'], standalone_mode=False)
from threadpoolctl import threadpool_info
print(sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('svdcli.curate.stages.')),
      os.environ.get('OPENBLAS_NUM_THREADS'),
      sorted({{i['num_threads'] for i in threadpool_info() if i['internal_api'] == 'openblas'}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['cuts', 'motion'] 1 [1]", out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env | {"OPENBLAS_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['cuts', 'motion'] 2 [2]", out.stdout + out.stderr


def test_printed_lines_are_never_wrapped_nor_emojified(capsys):
    """Summary lines name their output: a long path stays on its line in a log (not a terminal)."""
    from svdcli.cli.common import console

    line = "motion: 3 clips scored :thumbs_up: -> /" + "d" * 200 + "/m.parquet"
    console().print(line, markup=False)
    assert capsys.readouterr().err == line + "\n"
