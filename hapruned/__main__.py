from hapruned.cli import main

raise SystemExit(main())
