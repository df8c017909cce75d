"""The command line run inside the test process."""

from hapruned.cli import main


def cli(argv, capsys):
    """Run ``hapruned ARGV`` in-process: (exit code, stdout, stderr); an exception escaping is a failure."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err
