"""`python -m chaos` (with hack/ on PYTHONPATH): see hack/chaos/loop.py."""
import sys

from chaos.loop import main

sys.exit(main())
