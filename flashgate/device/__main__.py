from flashgate.device.main import main

raise SystemExit(main())
