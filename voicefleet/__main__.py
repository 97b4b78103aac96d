from voicefleet.cli import main

raise SystemExit(main())
