import sys

if sys.argv[1:2] == ["train"]:  # a preemption while the CLI itself imports is a stop as well (runtime.note_early_stop_requests)
    from bigmodel import runtime

    runtime.note_early_stop_requests()

from bigmodel.cli import main  # noqa: E402 — after the SIGTERM latch, on purpose

raise SystemExit(main())
