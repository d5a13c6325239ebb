"""What the five command-line tools share: every problem with their inputs as one line.

``run(main)`` replaces ``absl.app.run``: a bad flag (out of its bounds, malformed, an
unknown ``--config.*`` field) ends in one ``error: ...`` line and exit status 1 instead
of absl's usage dump or a traceback. ``require_writable`` and ``require_workdir`` check
outputs before any work, by trying rather than by reading permission bits.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator

import ml_collections
from absl import app, flags, logging

from vae_jax import configuration, data, loop, reporting, workdir_files

# The largest value an integer flag takes: beyond it jax's int32 counts and indices overflow,
# and no sensible count of samples, steps or examples is near it.
MAX_INT = 2**31 - 1
# Mistakes in the command or its inputs, and a diverged run: one line, no traceback.
REPORTED = (
    configuration.ConfigError,
    data.DataError,
    workdir_files.WorkdirConflictError,
    reporting.NonFiniteError,
)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parser, with every parsing error as one ``error:`` line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f'error: {e}')
    except (OSError, SyntaxError, ImportError, NameError) as e:  # A config file that fails.
        sys.exit(f'error: --config: {_root_cause(e)}')
    except (AttributeError, KeyError) as e:
        if isinstance(e, AttributeError) and "no attribute 'get_config'" in str(e):
            sys.exit('error: --config: the file defines no get_config()')
        # ml_collections reports a field that the locked config lacks as an AttributeError
        # from inside the flag parser.
        name = configuration.absent_field(e)
        given = [a.split('=')[0] for a in argv[1:] if a.startswith('--') and name in a]
        sys.exit(
            f'error: {given[0] if given else name}: no such config field; every field is '
            'listed, with what it does, in configs/default.py.'
        )


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)`` with :func:`parse_flags`; positional arguments are refused."""

    def checked(argv: list[str]) -> None:
        if len(argv) > 1:
            sys.exit(
                f'error: unexpected arguments {argv[1:]}: every input is a --flag=value '
                '(a flag and its value may also be separated by a space)'
            )
        main(argv)

    app.run(checked, flags_parser=parse_flags)


def run_script(main: Callable[[], object]) -> None:
    """For the experiments' argparse scripts what ``run`` and ``vae_jax.main`` give the tools:
    INFO logs shown (absl prints them only under app.run), a SIGTERM'd or SIGINT'd training
    as its one ``interrupted:`` line and exit status, and ``REPORTED`` mistakes as one
    ``error:`` line."""
    logging.set_verbosity(logging.INFO)
    with outcomes_in_one_line():
        main()


@contextlib.contextmanager
def outcomes_in_one_line() -> Iterator[None]:
    """A stopped training as its one ``interrupted:`` line and exit status (143 for SIGTERM,
    130 for SIGINT), a ``REPORTED`` mistake as one ``error:`` line; each once, not also
    through absl's log."""
    try:
        yield
    except loop.TrainingInterrupted as e:
        print(f'interrupted: {e}', file=sys.stderr)
        sys.exit(e.exit_code)
    except REPORTED as e:
        sys.exit(f'error: {e}')


def config_value(flag) -> ml_collections.ConfigDict:
    """A ``config_flags`` flag's config; a file that is missing or fails to load -> error."""
    config = None
    try:
        config = flag.value
        config.keys()  # A file that failed to load gives a stand-in that raises on use.
    except (OSError, ImportError, SyntaxError, AttributeError, TypeError) as e:
        # ml_collections' stand-in (a missing file) raises on use; any other object is what
        # the file's get_config() returned.
        if config is not None and not type(config).__module__.startswith('ml_collections'):
            sys.exit(
                f'error: --config: get_config() returned a {type(config).__name__}, not an '
                'ml_collections.ConfigDict'
            )
        sys.exit(f'error: --config: {_root_cause(e)}')
    return config


def _root_cause(e: BaseException) -> str:
    """The first cause of a chain of exceptions, as one line."""
    while e.__cause__ is not None:
        e = e.__cause__
    if isinstance(e, SyntaxError):
        return f'{e.filename}, line {e.lineno}: {e.msg}'
    return ' '.join(str(e).split())


def require_writable(folder: str, what: str) -> None:
    """Raises ValueError unless a file can be created in ``folder`` (tried, not guessed:
    permission bits say nothing about read-only mounts or, for root, anything)."""
    if not os.path.isdir(folder):
        raise ValueError(f'cannot write {what}: folder {folder!r} does not exist')
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.vae_jax_write_test_'):
            pass
    except OSError as e:
        raise ValueError(f'cannot write {what} into {folder!r}: {e.strerror or e}') from e


def require_workdir(workdir: str) -> None:
    """Raises ValueError unless ``workdir`` is, or can become, a writable folder."""
    if not workdir:
        raise ValueError('--workdir is empty: name a folder')
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f'--workdir={workdir} is a file, not a folder')
    existing = os.path.abspath(workdir)
    while not os.path.exists(existing):  # The nearest folder that exists must take it.
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f'--workdir={workdir}: {existing} is a file, not a folder')
    require_writable(existing, f'--workdir={workdir}')


def require_png(path: str, flag: str) -> None:
    """Raises ValueError unless ``path`` names a PNG in a writable folder."""
    if not path.lower().endswith('.png'):
        raise ValueError(f'{flag}={path!r} must name a .png file')
    require_writable(os.path.dirname(os.path.abspath(path)), f'{flag}={path}')
