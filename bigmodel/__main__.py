from bigmodel.cli import main

raise SystemExit(main())
