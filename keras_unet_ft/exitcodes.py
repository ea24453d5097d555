"""Exit codes of ``unet-ft`` and ``run_all.py`` (a module of its own, importing nothing, so
the command line can name them before it imports anything heavy)."""

EXIT_OK = 0           # every run finished ok
EXIT_ERROR = 1        # an unexpected error (a traceback is printed)
EXIT_BAD_INPUT = 2    # a bad config, dataset, folder or option: nothing (more) was trained
EXIT_RUNS_FAILED = 3  # the study finished, but some runs failed or diverged (see REPORT.md)
EXIT_INCOMPLETE = 4   # stopped by --max-minutes (or runs still missing): run again to continue


class UserError(ValueError):
    """A bad input the user can fix (config key or value, dataset, folder, plan, option): the
    command line prints its message alone and exits with :data:`EXIT_BAD_INPUT`. Any other
    exception is a bug: a traceback, a request for a bug report and :data:`EXIT_ERROR`.

    A subclass of ``ValueError``, so code that catches ``ValueError`` still catches it.

    Examples:
        >>> isinstance(UserError("bad"), ValueError)
        True
    """
