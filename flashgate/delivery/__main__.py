import sys

from flashgate.delivery.server import main

sys.exit(main())
