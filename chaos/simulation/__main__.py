from chaos.simulation.cli import main

raise SystemExit(main())
