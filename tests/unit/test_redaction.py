"""No credential of the tracking server reaches a stage's output or a file the pipeline keeps.

``redact`` hides the secret of every URI's userinfo in a piece of text; the stage runner passes
everything the stage writes to ``sys.stdout``/``sys.stderr`` through it (and through a literal
replacement of the passwords the environment holds). The real server, stages and ``dvc repro``
are in tests/integration/test_tracking_auth.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import ROOT, child_env

from recommender.core.errors import redact, secrets_of
from recommender.core.redaction import (
    RedactingStream,
    environment_secrets,
    redact_secrets,
    redacted_output,
)
from recommender.core.stage import run_stage
from recommender.core.telemetry import QUIET
from recommender.training.run import write_run_file


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://alice:s3cret@h:5000/x", "http://alice:***@h:5000/x"),
        # An '@' or ':' in the password: the userinfo ends at the last '@' before the host.
        ("http://alice:p@ss@h", "http://alice:***@h"),
        ("http://alice:p@ss:w@rd@h:1/#/x", "http://alice:***@h:1/#/x"),
        ("http://alice:p:w@h", "http://alice:***@h"),
        # A password and no user; a token alone (no colon) is all secret.
        ("https://:token@h", "https://:***@h"),
        ("https://token@h/org/repo.git", "https://***@h/org/repo.git"),
        ("ssh://git@github.com/org/r.git", "ssh://***@github.com/org/r.git"),
        # Percent-encoded.
        ("mysql+pymysql://u:p%40ss%2Fw@db:3306/ml", "mysql+pymysql://u:***@db:3306/ml"),
        # An unencoded '/', '?' or '#' (an invalid URI): the '@' a host follows ends it.
        ("http://alice:pa/ss@host/path", "http://alice:***@host/path"),
        ("http://alice:p/a@ss@host/runs/@x", "http://alice:***@host/runs/@x"),
        ("http://u:p?x#y@h/", "http://u:***@h/"),
        ("http://u:pw@[::1]:5000/a", "http://u:***@[::1]:5000/a"),
        # Several URIs in one log line, in quotes and brackets.
        (
            "failed: postgresql+psycopg2://mlflow:s3cret@127.0.0.1:5432/db and http://u:p@h:1/x",
            "failed: postgresql+psycopg2://mlflow:***@127.0.0.1:5432/db and http://u:***@h:1/x",
        ),
        ('{"a": "http://h1", "b":"http://v:q@h2"}', '{"a": "http://h1", "b":"http://v:***@h2"}'),
        ("(at 'http://u:p@h') ", "(at 'http://u:***@h') "),
        (
            "🏃 View run two_tower at: http://alice:pw@127.0.0.1:5000/#/experiments/1/runs/ab",
            "🏃 View run two_tower at: http://alice:***@127.0.0.1:5000/#/experiments/1/runs/ab",
        ),
    ],
)
def test_redact_hides_every_form_of_userinfo(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "write to user@example.com or alice:secret@host",  # no '://': not a URI
        "https://medium.com/@user and https://www.npmjs.com/package/@scope/name",
        "http://host:5000/x?mail=a@b.com#@c",
        "http://[::1]:5000/a@b",
        "http://user:@h http://@h http://h",  # nothing secret
        "sqlite:////home/me/mlflow.db",
        "",
    ],
)
def test_redact_leaves_text_without_secrets_alone(text: str) -> None:
    assert redact(text) == text


def test_what_redact_cannot_tell_from_a_host() -> None:
    # "alice:12" reads as host:port and "tok/en" as host and path: an unencoded '/' there is
    # indistinguishable from a path, which may hold an '@'. Documented in redact's docstring.
    assert redact("http://alice:12/34@host") == "http://alice:12/34@host"
    assert redact("http://tok/en@host") == "http://tok/en@host"


def test_secrets_of_a_uri() -> None:
    assert secrets_of("http://alice:p%40ss@h") == ["p%40ss", "p@ss"]
    assert secrets_of("http://alice:p@ss@h/x") == ["p@ss"]
    assert secrets_of("https://tok@h") == ["tok"]
    assert secrets_of("https://:tok@h") == ["tok"]
    assert secrets_of("http://alice:***@h") == secrets_of("http://h") == secrets_of("") == []


def test_environment_secrets() -> None:
    env = {
        "MLFLOW_TRACKING_URI": "http://alice:p%40ss@h",
        "MLFLOW_REGISTRY_URI": "http://alice:p%40ss@h",
        "MLFLOW_TRACKING_PASSWORD": "other-password",
        "MLFLOW_TRACKING_TOKEN": "",
    }
    assert environment_secrets(env) == ["other-password", "p%40ss", "p@ss"]
    assert environment_secrets({"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}) == []


@pytest.mark.parametrize(
    ("uri", "stored"),
    [
        ("http://alice:p@ss@127.0.0.1:5000", "http://alice:***@127.0.0.1:5000"),
        ("https://:token@mlflow.example.org", "https://:***@mlflow.example.org"),
        ("https://token@mlflow.example.org/", "https://***@mlflow.example.org/"),
        ("http://alice:pa/ss@host:5000", "http://alice:***@host:5000"),
    ],
)
def test_run_json_keeps_no_token_or_password(tmp_path: Path, uri: str, stored: str) -> None:
    record = {"run_id": "r", "experiment_id": "1", "model_uri": "models:/m-1", "tracking_uri": uri}
    write_run_file(tmp_path, record, project_dir=tmp_path)
    text = (tmp_path / "run.json").read_text()
    assert json.loads(text)["tracking_uri"] == stored
    for secret in ("p@ss", "token", "pa/ss"):
        assert secret not in text


def test_the_url_switch_is_set_with_the_telemetry_switches() -> None:
    assert QUIET["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
    makefile = (ROOT / "Makefile").read_text()
    assert "export MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT := true" in makefile


def test_redact_secrets_replaces_literal_passwords_longest_first() -> None:
    text = "login alice/hunter2-long failed; http://bob:x@h; hunter2"
    assert redact_secrets(text, ["hunter2-long", "hunter2"]) == (
        "login alice/*** failed; http://bob:***@h; ***"
    )
    # A password too short to replace everywhere is still hidden inside URIs.
    assert redact_secrets("x at http://bob:x@h", ["x"]) == "x at http://bob:***@h"


def test_the_stream_is_the_wrapped_one_but_for_what_is_written() -> None:
    raw = io.BytesIO()
    inner = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    stream = RedactingStream(inner, ["hunter2"])
    assert stream.write("pw hunter2 at http://a:b@h\n") == len("pw hunter2 at http://a:b@h\n")
    stream.writelines(["x hunter2\n"])
    stream.buffer.write(b"bytes hunter2 http://a:b@h\n")
    stream.flush()
    assert raw.getvalue() == b"pw *** at http://a:***@h\nx ***\nbytes *** http://a:***@h\n"
    assert stream.isatty() is False and stream.encoding == "utf-8" and stream.writable()
    assert RedactingStream(sys.__stdout__, []).fileno() == sys.__stdout__.fileno()
    with pytest.raises(io.UnsupportedOperation):
        RedactingStream(io.StringIO(), []).fileno()


def test_run_stage_redacts_every_python_stream_and_gives_them_back(tmp_path: Path) -> None:
    uri = "http://alice:s3cret-pw@127.0.0.1:1"
    early = logging.StreamHandler(sys.stderr)  # made before the stage: holds the stream itself
    lib = logging.getLogger("test_redaction.lib")
    lib.addHandler(early)
    lib.propagate = False

    def body(params, args) -> None:  # noqa: ANN001
        print(f"🏃 View run x at: {uri}/#/experiments/1/runs/ab")
        sys.stderr.write("MLFLOW_TRACKING_PASSWORD=other-pw-1\n")
        logging.getLogger("recommender").info("store %s", uri)
        lib.warning("lib: %s", uri)

    stdout, stderr = io.StringIO(), io.StringIO()
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_PASSWORD": "other-pw-1"}
    saved_stream = early.stream
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                early.setStream(sys.stderr)
                code = run_stage("demo", body, argv=["--params", str(ROOT / "params.yaml")])
                assert sys.stdout is stdout and sys.stderr is stderr  # given back
                assert early.stream is stderr
    finally:
        lib.removeHandler(early)
        early.setStream(saved_stream)
    assert code == 0
    out, err = stdout.getvalue(), stderr.getvalue()
    assert "s3cret-pw" not in out + err and "other-pw-1" not in out + err
    assert "View run x at: http://alice:***@127.0.0.1:1/#/experiments/1/runs/ab" in out
    assert "MLFLOW_TRACKING_PASSWORD=***" in err and "lib: http://alice:***@127.0.0.1:1" in err


def test_redacted_output_nests() -> None:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        with redacted_output(["aaa-secret"]):
            outer = sys.stdout
            with redacted_output(["bbb-secret"]):
                print("aaa-secret bbb-secret")
            assert sys.stdout is outer
            print("bbb-secret")
        assert sys.stdout is buffer
    assert buffer.getvalue() == "*** ***\nbbb-secret\n"


STAGE = textwrap.dedent(
    """
    import logging, os, subprocess, sys, warnings
    from recommender.core.stage import run_stage

    uri = os.environ["MLFLOW_TRACKING_URI"]
    early = logging.getLogger("early")  # a library's handler, made before the stage runs
    early.addHandler(logging.StreamHandler())
    early.propagate = False

    def body(params, args):
        import keras
        sys.path.insert(0, {pipeline!r})
        from train import keras_verbosity

        print("verbosity", keras_verbosity(), "fileno", sys.stdout.fileno(), flush=True)
        bar = keras.utils.Progbar(3, verbose=keras_verbosity())
        for step in range(3):
            bar.update(step + 1, values=[("loss", 0.5)])
        sys.stdout.write(f"View run x at: {{uri}}/#/experiments/1\\n")
        early.warning("early handler: %s", uri)
        warnings.warn(f"warned about {{uri}}")
        raise RuntimeError(f"cannot reach {{uri}}")

    sys.exit(run_stage("demo", body, argv=["--params", {params!r}]))
    """
)


@pytest.mark.slow  # imports Keras
def test_a_stage_in_a_terminal_keeps_its_progress_bar_and_hides_the_password(
    tmp_path: Path,
) -> None:
    """In a pseudo-terminal, as a person running a stage sees it: Keras still finds a terminal
    (a dynamic progress bar) and the real file descriptor; the traceback of an error the stage
    does not expect is redacted too."""
    script = tmp_path / "stage.py"
    script.write_text(
        STAGE.format(pipeline=str(ROOT / "pipeline"), params=str(ROOT / "params.yaml"))
    )
    env = child_env(MLFLOW_TRACKING_URI="http://alice:p@ss:w0rd@127.0.0.1:1")
    env.pop("CI", None)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=secondary, stderr=secondary, env=env, cwd=tmp_path
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: every holder of the terminal has closed it
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert proc.wait(timeout=120) == 1
    output = b"".join(chunks).decode("utf-8", "replace")
    assert "p@ss" not in output and "w0rd" not in output, output
    assert "verbosity 1 fileno 1" in output  # a terminal, through the filter
    assert "3/3" in output and ("\r" in output or "\b" in output)  # the dynamic bar
    for shown in (
        "View run x at: http://alice:***@127.0.0.1:1/#/experiments/1",
        "early handler: http://alice:***@127.0.0.1:1",
        "warned about http://alice:***@127.0.0.1:1",
        "RuntimeError: cannot reach http://alice:***@127.0.0.1:1",
    ):
        assert shown in output, output
