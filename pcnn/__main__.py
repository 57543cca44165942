from pcnn.commands.cli import main

raise SystemExit(main())
