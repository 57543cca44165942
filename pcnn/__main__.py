from pcnn.cli import main

raise SystemExit(main())
