from awm_lib.cli import main

raise SystemExit(main())
