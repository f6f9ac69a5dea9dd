"""``python -m seg2med_core``: checks that the third-party packages can be imported, then runs the CLI."""

from seg2med_core.requirements import check_imports

check_imports()

from seg2med_core.cli import main  # noqa: E402  (after the check, on purpose)

raise SystemExit(main())
