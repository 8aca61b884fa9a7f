"""The command-line registry: every command has help; errors become one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

from awm_lib.cli import COMMANDS, build_parser, main


def test_every_registered_command_has_a_module_and_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = sorted(set(COMMANDS) - set(sub.choices))
    assert not missing, f"commands without a module: {missing}"


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert main(["inspect", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m awm_lib inspect: error: ") and "empty.dcm" in err[0]


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "awm_lib", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "inspect" in out.stdout
