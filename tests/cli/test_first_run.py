"""The quick start's options: ``hope train --minutes`` is checked like every other option."""

import pytest

from hope.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--minutes", "0"], "train.minutes must be a finite number > 0, got 0.0"),
        (["--minutes", "-1"], "train.minutes must be a finite number > 0"),
        (["--minutes", "soon"], "--minutes: invalid float value: 'soon'"),
        (["--minutes", "1", "--steps", "10"], "train.steps and train.minutes are alternatives"),
        (["--minutes", "1", "--tokens", "1000"], "train.tokens and train.minutes are alternatives"),
        (["--resume", "runs/x", "--minutes", "1"], "it cannot change minutes"),
    ],
)
def test_bad_minutes_exit_2_naming_the_field(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
