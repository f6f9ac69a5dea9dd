from seg2med_core.cli import main

raise SystemExit(main())
