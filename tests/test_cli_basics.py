import subprocess
import sys
import time

from typer.testing import CliRunner

from svdcli.cli.main import app


def test_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "curate" in result.output


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t=time.perf_counter(); from svdcli.cli.main import app; "
            "heavy=[m for m in ('torch','cv2','av','open_clip','deepspeed','pyarrow','easyocr') if m in sys.modules]; "
            "print(heavy); print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", f"heavy modules imported at CLI start-up: {out[0]}"
    assert float(out[1]) < 1.0
