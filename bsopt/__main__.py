from bsopt._cli import main

raise SystemExit(main())
